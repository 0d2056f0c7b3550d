"""``rsia-geo index``: a catalog's tiles encoded into Qdrant; ``rsia-geo info``: what it holds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rsia_geo.cli.options import add_index_args, add_tile_args, index_from_args, tile_spec
from rsia_geo.errors import EmptyCatalogError, RsiaError
from rsia_geo.tiles import IMAGE_VIEWS


def register(sub: Any) -> None:
    """Add ``index`` and ``info``.

    Args:
        sub: The ``rsia-geo`` subcommand group (``add_subparsers`` result).
    """
    ix = sub.add_parser("index", help="index a STAC catalog's tiles into Qdrant")
    ix.add_argument("catalog", help="catalog/collection/item JSON path or URL")
    add_index_args(ix)
    add_tile_args(ix)
    ix.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per encoder batch (default 16 on CPU, 256 on a GPU)",
    )
    ix.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where to encode (default auto: a GPU when torch sees one, in float16)",
    )
    ix.add_argument(
        "--quantization",
        choices=["int8", "binary"],
        default=None,
        help="store compressed vectors too and search them, rescored with the originals "
        "(a new index only; int8: 4x smaller, binary: 32x; see docs/deployment.md)",
    )
    ix.add_argument(
        "--image-views",
        choices=list(IMAGE_VIEWS),
        default=None,
        help="d8: each tile embedded as the mean over its 8 rotations and reflections (the "
        "default for a new index); single: as it is, 8x less encoder work (default: the "
        "index's own setting when it holds tiles)",
    )
    ix.add_argument("--workers", type=int, default=2, help="reader threads")
    ix.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="read and encode on a Dask cluster (tcp://host:8786); this process stores",
    )
    ix.add_argument(
        "--dask-workers",
        type=int,
        default=None,
        metavar="N",
        help="read and encode on a local Dask cluster of N worker processes",
    )
    ix.add_argument("--no-progress", action="store_true")
    ix.set_defaults(func=_cmd_index)
    info = sub.add_parser("info", help="what an index holds: tiles, extent, dates, model, tiling")
    add_index_args(info)
    info.add_argument("--json", action="store_true", help="print it as JSON")
    info.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from rsia_geo._geo import lonlat_text

    with index_from_args(args) as idx:
        where = idx.url or idx.location
        summary = idx.summary()
    if args.json:
        print(json.dumps({"index": str(where), "collection": idx.collection, **summary}))
        return 0
    print(f"index {where} (collection {idx.collection}): {summary['tiles']} tiles")
    ext = summary["extent"]
    if ext:
        print(f"  extent: {lonlat_text(ext['bbox'])}")
        start, end = ext["interval"]
        print(f"  acquired: {start or 'unknown'} to {end or 'unknown'}")
        if ext.get("platforms") is not None:
            print(f"  platforms: {', '.join(ext['platforms']) or 'none named'}")
    model = summary["model"]
    if model:
        print(
            f"  model: {model.get('model_id')} {model.get('version')} "
            f"(weights {str(model.get('weights_sha256'))[:12]}), checkpoint "
            f"{summary['checkpoint']}"
        )
    spec = summary["tile_spec"]
    if spec:
        print(
            f"  tiles: {spec.get('size')} {spec.get('units')}, overlap {spec.get('overlap')}, "
            f"levels {', '.join(str(v) for v in spec.get('scales') or [])}, "
            f"{summary['image_views']} image views, bands "
            f"{', '.join(summary['bands'] or [])}"
        )
    if summary["quantization"]:
        print(f"  stored vectors: {summary['quantization']} (rescored with the originals)")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from rsia_geo.pipeline import build_index

    spec = tile_spec(args)
    # a folder this run creates is removed again if the run fails before storing anything
    fresh = not args.url and not Path(args.location).exists()
    try:
        with index_from_args(args, create=True) as idx:
            report = build_index(
                args.catalog,
                idx,
                args.checkpoint,
                spec=spec,
                bands=args.bands,
                bbox=args.bbox,
                batch_size=args.batch_size,
                workers=args.workers,
                cluster=args.scheduler or args.dask_workers,
                device=args.device,
                progress=not args.no_progress,
                image_views=args.image_views,
            )
            total = idx.count()
            views = idx.image_views
    except BaseException:
        if fresh:
            _remove_empty_index(Path(args.location))
        raise
    if total == 0:
        if fresh:
            _remove_empty_index(Path(args.location))
        reasons: dict[str, int] = {}
        for s in report.skipped:
            reasons[f"{s.kind}: {s.reason}"] = reasons.get(f"{s.kind}: {s.reason}", 0) + 1
        for _tile_id, reason in report.failed:
            reasons[f"read failed: {reason}"] = reasons.get(f"read failed: {reason}", 0) + 1
        why = "; ".join(
            f"{r} (x{n})" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]
        )
        raise EmptyCatalogError(
            f"nothing was indexed from {args.catalog!r}: {why or 'the catalog yielded no tile'}"
            ". Try a tiling the imagery supports (--size/--units, --scales), another --bbox, "
            "or check the rasters"
        )
    print(
        f"indexed {report.indexed} tiles ({report.already_present} already present, "
        f"{len(report.skipped)} skipped by tiling, {len(report.failed)} failed) in "
        f"{report.seconds:.1f} s ({report.tiles_per_second:.1f} tiles/s); index holds {total}"
        f" ({views} image views)"
    )
    for tile_id, reason in report.failed[:10]:
        print(f"  failed {tile_id}: {reason}")
    items = sorted({s.item_id for s in report.skipped if s.kind == "item"})
    for s in report.skipped:
        if s.kind == "item":
            print(f"  skipped item {s.item_id}: {s.reason}")
    if items:
        print(f"  ({len(items)} items could not be tiled)")
    return 0


def _remove_empty_index(folder: Path) -> None:
    """Remove an index folder this run created, if it holds no tile."""
    import shutil

    from rsia_geo.index import TileIndex

    if not folder.is_dir():
        return
    try:
        with TileIndex(folder, create=False) as idx:
            if idx.count() > 0:
                return
    except RsiaError:
        pass  # no index in it (creation never finished): nothing to keep
    shutil.rmtree(folder, ignore_errors=True)
