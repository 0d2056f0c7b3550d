"""Command-line interface: ``rsia-geo`` (also ``python -m rsia_geo``).

The CLI is an edge: it parses arguments, calls the library, and maps exceptions to exit codes
through one table (:data:`EXIT_CODES`). The library never exits or prints.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rsia_geo._codes import code_for
from rsia_geo.errors import (
    AudioError,
    CatalogError,
    DependencyNotFoundError,
    EmptyCatalogError,
    IndexLockedError,
    IndexNotFoundError,
    IndexUnavailableError,
    InvalidArgumentError,
    InvalidRegionError,
    InvalidTileSpecError,
    ModelMismatchError,
    RasterError,
    RsiaError,
)

__all__ = ["EXIT_CODES", "main"]

EXIT_CODES: dict[type[BaseException], int] = {
    IndexLockedError: 6,
    IndexUnavailableError: 7,
    IndexNotFoundError: 10,
    ModelMismatchError: 8,
    AudioError: 9,
    DependencyNotFoundError: 3,
    InvalidRegionError: 2,
    InvalidArgumentError: 2,
    InvalidTileSpecError: 2,
    CatalogError: 4,
    RasterError: 5,
    RsiaError: 1,
}
"""Exit code per exception class; the most specific match wins."""


def _parse_datetime(text: str) -> _dt.datetime:
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date/time, e.g. 2020-09-02 or 2020-09-02T10:30:00Z"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


def _cmd_catalog_build(args: argparse.Namespace) -> int:
    from rsia_geo.catalog import build_catalog

    cat = build_catalog(
        args.sources,
        args.out,
        catalog_id=args.id,
        default_datetime=args.datetime,
        copy_assets=args.copy_assets,
        on_error="skip" if args.skip_bad else "raise",
        platform=args.platform,
    )
    items = list(cat.get_items())
    print(f"catalog {cat.id!r}: {len(items)} items -> {Path(args.out) / 'catalog.json'}")
    for item in items:
        print(f"  {item.id}  {item.datetime:%Y-%m-%d}  assets={list(item.assets)}")
    for s in cat.extra_fields.get("rsia:skipped", []):
        print(f"  skipped {s['item']}: {s['reason']}")
    return 0


def _cmd_catalog_info(args: argparse.Namespace) -> int:
    from rsia_geo.catalog import iter_items, select_bands

    for item in iter_items(args.catalog):
        try:
            sel = select_bands(item, args.bands)
            chosen = ", ".join(
                f"{b}<-{k}[{i}]" for b, (k, i) in zip(sel.bands, sel.sources, strict=False)
            )
        except RsiaError as exc:
            chosen = f"(bands unavailable: {exc})"
        print(f"{item.id}  {item.datetime}  bbox={[round(v, 5) for v in item.bbox or []]}")
        print(f"  assets: {list(item.assets)}")
        print(f"  bands:  {chosen}")
    return 0


def _tile_spec(args: argparse.Namespace) -> Any:
    from rsia_geo.tiles import DEFAULT_SPEC, TileSpec

    overlap = args.overlap
    if overlap is None:  # the default tiling's fraction of a tile, in the units asked for
        overlap = args.size * DEFAULT_SPEC.overlap / DEFAULT_SPEC.size
    return TileSpec(
        size=args.size,
        overlap=overlap,
        units=args.units,
        scales=tuple(args.scales),
        out_size=args.out_size,
        min_valid=args.min_valid,
        scaling=args.scaling,
    )


def _cmd_tiles(args: argparse.Namespace) -> int:
    from rsia_geo.tiles import SkippedTile, TileSet, iter_tiles

    result = TileSet()

    def on_skip(s: SkippedTile) -> None:
        result.skipped.append(s)

    spec = _tile_spec(args)
    result.tiles.extend(
        iter_tiles(args.catalog, spec, bands=args.bands, bbox=args.bbox, on_skip=on_skip)
    )
    by_item: dict[str, list[Any]] = {}
    for t in result.tiles:
        by_item.setdefault(t.item_id, []).append(t)
    for item_id, tiles in by_item.items():
        levels = sorted({t.level for t in tiles})
        print(
            f"{item_id}: {len(tiles)} tiles, levels {levels}, crs {tiles[0].crs}, "
            f"scaling {tiles[0].scaling.method}"
        )
        for t in tiles[: args.show]:
            lon, lat = t.centre
            print(
                f"  {t.id}  L{t.level} window={t.window}  centre=({lon:.5f}, {lat:.5f})  "
                f"gsd={t.gsd:.2f} m  valid={t.valid_fraction:.2f}"
            )
    groups: dict[tuple[str, str], list[Any]] = {}
    for s in result.skipped:
        groups.setdefault((s.item_id, s.kind), []).append(s)
    print(f"total: {len(result.tiles)} tiles, {len(result.skipped)} skipped")
    labels = {"nodata": "mostly nodata", "edge": "mostly outside the raster"}
    for (item_id, kind), skipped in groups.items():
        reason = labels.get(kind, skipped[0].reason)
        print(f"  skipped {len(skipped):3d} x {item_id}: {reason}")
    if args.out:
        gdf = result.to_geodataframe()
        gdf.to_file(args.out, driver="GeoJSON" if args.out.endswith("json") else None)
        print(f"wrote {len(gdf)} footprints to {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rsia_geo.demo import run_demo

    return run_demo(Path(args.workdir), queries=args.query, k=args.k)


def _print_manifest_summary(manifest: Path) -> None:
    from rsia_geo.training.voicing import read_manifest

    by_split: dict[str, int] = {}
    rows = read_manifest(manifest)
    for r in rows:
        by_split[r["split"]] = by_split.get(r["split"], 0) + 1
    print(f"{len(rows)} clips in {manifest}: {by_split}")


def _cmd_data_voice(args: argparse.Namespace) -> int:
    from rsia_geo.training.voicing import voice_captions

    manifest = voice_captions(
        args.captions,
        args.out,
        splits=args.splits,
        voices_per_caption=args.voices_per_caption,
        engines=args.engines,
        eval_voices=args.eval_voices,
        seed=args.seed,
        workers=args.workers,
        limit=args.limit,
        image_root=args.image_root,
        progress=not args.no_progress,
        holdout=args.holdout,
        families=args.families,
        speed_range=tuple(args.speed_range),
        pitch_range=tuple(args.pitch_range),
    )
    _print_manifest_summary(manifest)
    return 0


def _cmd_data_iv(args: argparse.Namespace) -> int:
    from rsia_geo.training.iv import read_iv_layout

    manifest = read_iv_layout(args.root, args.out)
    _print_manifest_summary(manifest)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from rsia_geo.training.train import TrainConfig, train, train_kfold

    overrides = json.loads(args.model_overrides) if args.model_overrides else {}
    cfg = TrainConfig(
        manifest=args.manifest if len(args.manifest) > 1 else args.manifest[0],
        out_dir=args.out,
        model=args.model,
        model_overrides=overrides,
        train_split=args.train_split,
        val_split=args.val_split,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        akt_adaptive=not args.akt_uniform,
        views=args.views,
        finetune_stages=args.finetune_stages,
        backbone_lr=args.backbone_lr,
        audio_augment=args.audio_augment,
        allow_random_backbone=args.allow_random_backbone,
        spec_augment=not args.no_spec_augment,
        max_train_images=args.max_train_images,
        max_val_images=args.max_val_images,
        seed=args.seed,
        threads=args.threads,
        amp=args.amp,
        mix_views=args.mix_views,
        mix_shift=not args.mix_no_shift,
        mix_scale=(args.mix_scale[0], args.mix_scale[1]),
        mix_rotate=not args.mix_no_rotate,
        mix_same_class=args.mix_same_class,
    )
    if args.k_folds:
        cfg.k_folds = args.k_folds
        summary = train_kfold(cfg, progress=not args.no_progress)
        for i, f in enumerate(summary["folds"]):
            print(f"fold {i}: best epoch {f['epoch']}, val mR {f['mR']:.2f}")
        print(
            f"mean val mR over {args.k_folds} folds: {summary['mean']['mR']:.2f} -> "
            f"{Path(args.out) / 'kfold.json'}"
        )
        return 0
    result = train(cfg, progress=not args.no_progress)
    best = result["best"]
    print(f"best epoch {best['epoch']}: val mR {best['mR']:.2f} -> {result['best_checkpoint']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rsia_geo.training.evaluate import evaluate

    report = evaluate(
        args.checkpoint,
        args.manifest,
        split=args.split,
        rescore_k=args.rescore_k,
        rerank_k=args.rerank_k,
        out_dir=args.out,
        progress=not args.no_progress,
        condition=args.condition,
    )
    print(
        f"{report['model_id']} on {report['split']} ({report['condition']}): "
        f"{report['images']} images, {report['clips']} clips"
    )
    keys = ["i2a_r1", "i2a_r5", "i2a_r10", "a2i_r1", "a2i_r5", "a2i_r10", "mR"]
    print(f"{'variant':44s} " + " ".join(f"{k:>7s}" for k in keys))
    for name, m in report["metrics"].items():
        print(f"{name:44s} " + " ".join(f"{m[k]:7.2f}" for k in keys))
    if report.get("class_map"):
        print(f"per-class mAP (audio->image, pipeline): mean {report['class_map']['mean']:.2f}")
    if args.out:
        print(f"report: {Path(args.out) / 'report.json'}, plot: {Path(args.out) / 'recall.png'}")
    return 0


def _index_from_args(args: argparse.Namespace, *, create: bool = False) -> Any:
    from rsia_geo.index import TileIndex

    if args.url:
        return TileIndex(
            url=args.url,
            api_key=args.api_key or os.environ.get("RSIA_QDRANT_API_KEY"),
            collection=args.collection,
        )
    return TileIndex(args.location, collection=args.collection, create=create)


def _cmd_index(args: argparse.Namespace) -> int:
    from rsia_geo.pipeline import build_index

    spec = _tile_spec(args)
    # a folder this run creates is removed again if the run fails before storing anything
    fresh = not args.url and not Path(args.location).exists()
    try:
        with _index_from_args(args, create=True) as idx:
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
            )
            total = idx.count()
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


def _cmd_search(args: argparse.Namespace) -> int:
    from rsia_geo.pipeline import search
    from rsia_geo.results import HIT_FORMATS, check_output_path

    # outputs are checked before the search, so a typo costs nothing
    if args.out:
        check_output_path(args.out, HIT_FORMATS)
    if args.map:
        check_output_path(args.map, (".html", ".htm"))
    given = [a for a in (args.query, args.text, args.like) if a is not None]
    if len(given) > 1 or (not given and not args.relevant):
        raise InvalidArgumentError(
            "give one query: an audio file, --text 'what to look for', or --like TILE_ID "
            "(or --relevant TILE_IDS), e.g. rsia-geo search query.wav --location my_index"
        )
    region_geom = _read_geometry(args.geometry) if args.geometry else None
    like = args.like
    if like is not None and like.lower().endswith((".geojson", ".json")):
        like = _read_geometry(like)  # a polygon: the tiles under it are the example
    with _index_from_args(args) as idx:
        hits = search(
            args.query,
            idx,
            args.checkpoint,
            text=args.text,
            example=like,
            relevant=args.relevant,
            not_relevant=args.not_relevant,
            refine_method=args.refine_method,
            bbox=args.bbox,
            geometry=region_geom,
            datetime=args.datetime,
            platform=args.platform,
            k=args.k,
            rerank=args.rerank,
            rescore=not args.no_rescore,
            group=not args.no_group,
            transcribe=not args.no_transcript,
        )
    _print_query(hits.attrs.get("query", {}))
    _print_hits(hits)
    if args.out:
        from rsia_geo.results import write_hits

        print(f"wrote {write_hits(hits, args.out)}")
    if args.map:
        from rsia_geo.results import write_map

        write_map(hits, args.map, bbox=args.bbox, geometry=region_geom)
        print(f"map: {args.map}")
    return 0


def _print_query(q: dict[str, Any]) -> None:
    """What was searched for: what was heard or typed, the example, the marks."""
    if "heard" in q:
        print(
            f'heard: "{q["heard"]}"'
            if q["heard"] is not None
            else f"heard: (no speech recogniser: {q.get('heard_unavailable')})"
        )
    if q.get("kind") == "typed":
        print(f'typed query "{q["text"]}" spoken by {q["voiced_by"]}')
    if q.get("kind") == "example":
        print(f"more like the {q['example']} " + (q.get("tile_id") or ""))
    if q.get("relevant") or q.get("not_relevant"):
        print(
            f"refined ({q['refine_method']}) with {q['relevant']} relevant and "
            f"{q['not_relevant']} not relevant tiles"
        )


def _print_hits(hits: Any) -> None:
    """One line per hit, then the hits by acquisition date and platform."""
    t = hits.attrs.get("timings", {})
    print(
        f"{len(hits)} hits ({hits.attrs.get('candidates')} candidates; "
        + ", ".join(f"{k} {v:.0f}" for k, v in t.items())
        + ")"
    )
    for _, h in hits.iterrows():
        c = h.geometry.centroid
        print(
            f"{int(h['rank']):3d}  score {h['score']:.4f}  {h['item_id']}  L{h['level']} "
            f"window=({h['window']})  centre=({c.x:.5f}, {c.y:.5f})  "
            f"tiles agreeing {int(h['group_size'])}  tile {h['tile_id']}"
        )
    if len(hits):
        from rsia_geo.similar import acquisitions

        print("by acquisition:")
        for _, a in acquisitions(hits).iterrows():
            print(
                f"  {a['date']}  {a['platform']}: {a['hits']} hits, best #{a['best_rank']} "
                f"({a['best_score']:.4f})  {a['items']}"
            )


def _cmd_same_place(args: argparse.Namespace) -> int:
    from rsia_geo.results import HIT_FORMATS, check_output_path, write_hits
    from rsia_geo.similar import same_place

    if args.out:
        check_output_path(args.out, HIT_FORMATS)
    with _index_from_args(args) as idx:
        rows = same_place(
            args.tile_id,
            idx,
            min_overlap=args.min_overlap,
            datetime=args.datetime,
            platform=args.platform,
        )
    print(f"{len(rows)} other acquisitions of tile {args.tile_id}'s place")
    for _, r in rows.iterrows():
        print(
            f"  {r['datetime']}  {r['platform'] or '-'}  {r['item_id']}  L{r['level']}  "
            f"overlap {r['overlap']:.2f}  similarity {r['similarity']:.3f}  tile {r['tile_id']}"
        )
    if args.out:
        print(f"wrote {write_hits(rows, args.out)}")
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def _read_geometry(path: str) -> Any:
    """A region from a GeoJSON file (geometry, Feature or FeatureCollection)."""
    from rsia_geo.query import parse_geometry

    p = Path(path)
    if not p.is_file():
        raise InvalidRegionError(
            f"--geometry {path!r} is not a file; give a GeoJSON file of the region polygon(s)"
        )
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRegionError(
            f"--geometry {path!r} is not GeoJSON ({exc}); export the region as GeoJSON"
        ) from exc
    return parse_geometry(data)


def _read_key_file(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(
            f"--service-key-file {path!r} is not a file; write the key into a file (one line)"
        )
    key = p.read_text().strip()
    if len(key) < 16:
        raise InvalidArgumentError(
            f"the service key in {path!r} has {len(key)} characters; use 16 or more "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > key.txt)"
        )
    return key


def _cmd_serve(args: argparse.Namespace) -> int:
    from rsia_geo.service import ServiceSettings, serve

    settings = ServiceSettings.from_env(
        location=args.location,
        url=args.url,
        qdrant_api_key=args.api_key,
        collection=args.collection,
        checkpoint=args.checkpoint,
        host=args.host,
        port=args.port,
        api_key=_read_key_file(args.service_key_file) if args.service_key_file else None,
        concurrency=args.concurrency,
    )
    try:
        settings.check()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings.url:  # a missing index is reported here, not as a server traceback
        from rsia_geo.index import TileIndex

        TileIndex(settings.location, collection=settings.collection, create=False).close()
    serve(settings)
    return 0


def _add_index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--location", default="rsia_index", help="embedded index folder (default ./rsia_index)"
    )
    p.add_argument(
        "--url",
        default=None,
        help="Qdrant server URL instead of a folder "
        "(API key from --api-key or RSIA_QDRANT_API_KEY)",
    )
    p.add_argument("--api-key", default=None)
    p.add_argument("--collection", default="tiles", help="collection name (servers)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="model checkpoint folder (default: the shipped starter model)",
    )


def _add_tile_args(p: argparse.ArgumentParser) -> None:
    from rsia_geo.tiles import DEFAULT_SPEC as D  # the one default tiling of every edge

    p.add_argument("--size", type=float, default=D.size, help=f"tile side (default {D.size:g})")
    p.add_argument(
        "--overlap",
        type=float,
        default=None,
        help=f"overlap between neighbouring tiles, in --units (default {D.overlap / D.size:g} "
        "of a tile: a stride of half a tile)",
    )
    p.add_argument(
        "--units",
        choices=["px", "m"],
        default=D.units,
        help=f"units of size/overlap (default {D.units})",
    )
    p.add_argument(
        "--scales",
        type=int,
        nargs="+",
        default=list(D.scales),
        help="scale levels; level f covers size*f (default "
        + " ".join(str(v) for v in D.scales)
        + ")",
    )
    p.add_argument(
        "--out-size",
        type=int,
        default=D.out_size,
        help=f"output pixels per tile side (default {D.out_size})",
    )
    p.add_argument(
        "--min-valid",
        type=float,
        default=0.5,
        help="skip tiles with a smaller valid-pixel fraction (default 0.5)",
    )
    p.add_argument(
        "--scaling",
        choices=["auto", "dtype", "reflectance", "percentile"],
        default="auto",
        help="how raw values map to [0, 1] (default auto)",
    )
    p.add_argument(
        "--bands",
        nargs="+",
        default=None,
        help="bands by eo common name or band name (default red green blue)",
    )
    p.add_argument(
        "--bbox",
        type=float,
        nargs=4,
        metavar=("MINX", "MINY", "MAXX", "MAXY"),
        default=None,
        help="only tiles intersecting this lon/lat box",
    )


# Long (~225 lines) because every command's options are declared inline; splitting it into
# one module per command group with shared options (rasterio's rio/options.py) is issue 15.
def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser.

    Returns:
        The parser with all subcommands.
    """
    from rsia_geo import __version__

    parser = argparse.ArgumentParser(
        prog="rsia-geo",
        description="Spoken, region-restricted search over your own georeferenced imagery.",
    )
    parser.add_argument("--version", action="version", version=f"rsia_geo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    cat = sub.add_parser("catalog", help="build or inspect STAC catalogs")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True)
    b = cat_sub.add_parser("build", help="build a STAC catalog from local rasters")
    b.add_argument("sources", nargs="+", help="raster files or folders")
    b.add_argument("-o", "--out", required=True, help="output folder for catalog.json")
    b.add_argument("--id", default="rsia-catalog", help="catalog id")
    b.add_argument(
        "--datetime",
        type=_parse_datetime,
        default=None,
        help="acquisition date for rasters that carry none (ISO, e.g. 2020-09-02)",
    )
    b.add_argument(
        "--platform",
        default=None,
        help="STAC platform of rasters whose metadata names none (e.g. naip), for filtering",
    )
    b.add_argument(
        "--copy-assets",
        action="store_true",
        help="copy rasters into the catalog folder (portable catalog)",
    )
    b.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable rasters (listed) instead of stopping",
    )
    b.set_defaults(func=_cmd_catalog_build)
    i = cat_sub.add_parser("info", help="list items, assets and the bands that would be read")
    i.add_argument("catalog", help="catalog/collection/item JSON path or URL")
    i.add_argument("--bands", nargs="+", default=None)
    i.set_defaults(func=_cmd_catalog_info)

    t = sub.add_parser("tiles", help="cut a catalog's items into georeferenced tiles")
    t.add_argument("catalog", help="catalog/collection/item JSON path or URL")
    _add_tile_args(t)
    t.add_argument("--show", type=int, default=3, help="tiles to print per item")
    t.add_argument("--out", default=None, help="write tile footprints (.geojson or .gpkg)")
    t.set_defaults(func=_cmd_tiles)

    data = sub.add_parser("data", help="build training data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    v = data_sub.add_parser("voice", help="speak captions with offline speech synthesis")
    v.add_argument("captions", help="captions JSON (UCM or Karpathy format)")
    v.add_argument("-o", "--out", required=True, help="output folder (audio/, manifest.jsonl)")
    v.add_argument("--splits", nargs="+", default=None, help="splits to voice (default all)")
    v.add_argument("--voices-per-caption", type=int, default=1)
    v.add_argument(
        "--engines",
        nargs="+",
        default=None,
        help="espeak-ng, flite, festival (default: all installed)",
    )
    v.add_argument(
        "--eval-voices",
        choices=["heldout", "train"],
        default="heldout",
        help="voices for val/test splits (default: held-out speakers)",
    )
    v.add_argument(
        "--holdout",
        choices=["families", "variants"],
        default="families",
        help="held-out voices: whole families (default) or the first starter's variants",
    )
    v.add_argument(
        "--families",
        nargs="+",
        default=None,
        help="only these voice families, e.g. espeak-ng:en-029 flite:slt festival:kal_diphone",
    )
    v.add_argument("--speed-range", type=float, nargs=2, default=[0.8, 1.25], metavar=("LO", "HI"))
    v.add_argument("--pitch-range", type=float, nargs=2, default=[0.8, 1.25], metavar=("LO", "HI"))
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--limit", type=int, default=None, help="images per split (smoke runs)")
    v.add_argument("--image-root", default=None, help="folder image paths are relative to")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=_cmd_data_voice)
    iv = data_sub.add_parser("iv", help="index a published image-voice set (UCM IV, ...)")
    iv.add_argument("root", help="folder with images/, audio/ and split lists")
    iv.add_argument("-o", "--out", required=True, help="folder for manifest.jsonl")
    iv.set_defaults(func=_cmd_data_iv)

    tr = sub.add_parser("train", help="train ALAC on voiced image-caption pairs")
    tr.add_argument("manifest", nargs="+", help="manifest.jsonl from `rsia-geo data voice`")
    tr.add_argument("-o", "--out", required=True, help="run folder (resumes if it exists)")
    tr.add_argument("--model", default="alac-efficientnet-lite0", help="registry config")
    tr.add_argument(
        "--model-overrides", default=None, help='JSON, e.g. \'{"audio": {"width": 0.5}}\''
    )
    tr.add_argument("--train-split", default="train")
    tr.add_argument("--val-split", default="val")
    tr.add_argument("--epochs", type=int, default=60)
    tr.add_argument("--batch-size", type=int, default=60)
    tr.add_argument("--lr", type=float, default=2e-4)
    tr.add_argument(
        "--akt-uniform",
        action="store_true",
        help="reproduce the reference code's uniform AKT weights",
    )
    tr.add_argument(
        "--views", type=int, default=4, help="cached views per image: rotations 1-4, mirrored 5-8"
    )
    tr.add_argument(
        "--finetune-stages",
        type=int,
        default=0,
        help="fine-tune the backbone's last N stages on cached trunk activations",
    )
    tr.add_argument("--backbone-lr", type=float, default=0.1, help="lr factor of those stages")
    tr.add_argument(
        "--audio-augment",
        action="store_true",
        help="degrade training clips with random noise, rooms, microphones, clipping, silence",
    )
    tr.add_argument(
        "--allow-random-backbone",
        action="store_true",
        help="train on a frozen backbone without pretrained weights (smoke runs)",
    )
    tr.add_argument("--no-spec-augment", action="store_true")
    tr.add_argument("--max-train-images", type=int, default=None)
    tr.add_argument("--max-val-images", type=int, default=None)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument(
        "--k-folds",
        type=int,
        default=0,
        help="ALAC's protocol: N reshuffled 80/20 folds of the training split",
    )
    tr.add_argument("--amp", action="store_true", help="bfloat16 autocast forward passes")
    tr.add_argument(
        "--mix-views",
        type=int,
        default=0,
        help="scene-mixing views per image: windows of a mosaic of training scenes (0: none)",
    )
    tr.add_argument(
        "--mix-scale",
        type=float,
        nargs=2,
        default=(0.5, 2.0),
        metavar=("LOW", "HIGH"),
        help="window side of mixed views, in scenes (1 1: the scene's own footprint)",
    )
    tr.add_argument("--mix-no-shift", action="store_true", help="mixed windows stay centred")
    tr.add_argument("--mix-no-rotate", action="store_true", help="mixed windows stay upright")
    tr.add_argument(
        "--mix-same-class",
        type=float,
        default=0.5,
        help="probability that a mosaic neighbour shares the scene's class",
    )
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="retrieval metrics of a checkpoint on a voiced split")
    ev.add_argument("checkpoint", help="checkpoint folder (model.safetensors + config.json)")
    ev.add_argument("manifest", help="manifest.jsonl")
    ev.add_argument("--split", default="val")
    ev.add_argument("--rescore-k", type=int, default=50, help="cosine candidates IA-rescored")
    ev.add_argument("--rerank-k", type=int, default=30, help="BSWFR k")
    ev.add_argument("-o", "--out", default=None, help="folder for report.json and recall.png")
    ev.add_argument(
        "--condition",
        choices=["clean", "snr20", "snr10", "snr5", "reverb", "bandlimit"],
        default="clean",
        help="recording condition applied to every clip (seeded per clip)",
    )
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    ix = sub.add_parser("index", help="index a STAC catalog's tiles into Qdrant")
    ix.add_argument("catalog", help="catalog/collection/item JSON path or URL")
    _add_index_args(ix)
    _add_tile_args(ix)
    ix.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per encoder batch (default 16 on CPU, 64 on a GPU)",
    )
    ix.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where to encode (default auto: a GPU when torch sees one, in float16)",
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

    se = sub.add_parser("search", help="spoken (or typed) query -> georeferenced tiles")
    se.add_argument("query", nargs="?", default=None, help="audio file (WAV, FLAC, OGG, MP3)")
    se.add_argument(
        "--text",
        default=None,
        help="a typed query instead of an audio file (spoken by the bundled speech synthesis)",
    )
    _add_index_args(se)
    se.add_argument(
        "--bbox",
        type=float,
        nargs=4,
        metavar=("MINX", "MINY", "MAXX", "MAXY"),
        default=None,
        help="lon/lat region (minx > maxx crosses 180)",
    )
    se.add_argument("--geometry", default=None, help="GeoJSON file of the region polygon(s)")
    se.add_argument("--datetime", default=None, help="acquisition interval, e.g. 2020-01-01/..")
    se.add_argument("-k", type=int, default=20, help="results")
    se.add_argument("--rerank", action="store_true", help="BSWFR mutual-rank rerank")
    se.add_argument("--no-rescore", action="store_true", help="skip IA rescoring")
    se.add_argument(
        "--no-group",
        action="store_true",
        help="one hit per tile instead of one per place (overlapping tiles grouped)",
    )
    se.add_argument(
        "--like",
        default=None,
        metavar="TILE_ID|POLYGON.geojson",
        help="more like this: an indexed tile (a hit's tile id) or the tiles under a polygon",
    )
    se.add_argument(
        "--relevant",
        default=None,
        metavar="TILE_IDS",
        help="comma-separated tiles marked relevant: the query moves toward them",
    )
    se.add_argument(
        "--not-relevant",
        default=None,
        metavar="TILE_IDS",
        help="comma-separated tiles marked not relevant: never returned, the query moves away",
    )
    se.add_argument(
        "--refine-method",
        choices=["rocchio", "linear"],
        default="rocchio",
        help="how marks move the query (default rocchio; see docs/benchmarks.md)",
    )
    se.add_argument("--platform", default=None, help="keep these STAC platforms (e.g. naip)")
    se.add_argument(
        "--no-transcript",
        action="store_true",
        help="do not print what the speech recogniser heard (saves ~0.4 s per query)",
    )
    se.add_argument("--out", default=None, help="write hits (.geojson, .gpkg, .parquet)")
    se.add_argument("--map", default=None, help="write an HTML map of the hits")
    se.set_defaults(func=_cmd_search)

    sp = sub.add_parser("same-place", help="a hit's place on other dates (one tile each)")
    sp.add_argument("tile_id", help="the hit's tile id")
    _add_index_args(sp)
    sp.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="shared fraction of the smaller footprint that makes two tiles one place",
    )
    sp.add_argument("--datetime", default=None, help="acquisition interval, e.g. 2015-01-01/..")
    sp.add_argument("--platform", default=None, help="keep these STAC platforms")
    sp.add_argument("--out", default=None, help="write the rows (.geojson, .gpkg, .parquet)")
    sp.set_defaults(func=_cmd_same_place)

    sv = sub.add_parser("serve", help="HTTP search service (for the QGIS plugin)")
    _add_index_args(sv)
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    sv.add_argument("--port", type=_port, default=8765, help="TCP port 1-65535 (default 8765)")
    sv.add_argument(
        "--service-key-file",
        default=None,
        help="file holding the key clients must send (X-API-Key); required off loopback; "
        "or set RSIA_SERVICE_KEY (a key is never given on the command line, where ps shows it)",
    )
    sv.add_argument("--concurrency", type=int, default=2, help="searches at once")
    sv.set_defaults(func=_cmd_serve)

    d = sub.add_parser("demo", help="run the main job on the bundled sample data")
    d.add_argument("--workdir", default="out/demo", help="where to write outputs")
    d.add_argument(
        "--query",
        action="append",
        default=None,
        help="what to say (repeatable; default: a harbour and an airport query)",
    )
    d.add_argument("-k", type=int, default=5, help="hits to print per search")
    d.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 on success, see :data:`EXIT_CODES` otherwise.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RsiaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return code_for(exc, EXIT_CODES, 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`rsia-geo search ... | head`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
