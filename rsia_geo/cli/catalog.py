"""``rsia-geo catalog build|info`` and ``rsia-geo tiles``: catalogs and their tiles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rsia_geo.cli.options import add_tile_args, parse_datetime, tile_spec
from rsia_geo.errors import RsiaError


def register(sub: Any) -> None:
    """Add ``catalog`` and ``tiles``.

    Args:
        sub: The ``rsia-geo`` subcommand group (``add_subparsers`` result).
    """
    cat = sub.add_parser("catalog", help="build or inspect STAC catalogs")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True)
    b = cat_sub.add_parser("build", help="build a STAC catalog from local rasters")
    b.add_argument("sources", nargs="+", help="raster files or folders")
    b.add_argument("-o", "--out", required=True, help="output folder for catalog.json")
    b.add_argument("--id", default="rsia-catalog", help="catalog id")
    b.add_argument(
        "--datetime",
        type=parse_datetime,
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
    add_tile_args(t)
    t.add_argument("--show", type=int, default=3, help="tiles to print per item")
    t.add_argument("--out", default=None, help="write tile footprints (.geojson or .gpkg)")
    t.set_defaults(func=_cmd_tiles)


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


def _cmd_tiles(args: argparse.Namespace) -> int:
    from rsia_geo.tiles import SkippedTile, TileSet, iter_tiles

    result = TileSet()

    def on_skip(s: SkippedTile) -> None:
        result.skipped.append(s)

    spec = tile_spec(args)
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
