"""Lay real UC Merced images out on a grid as one georeferenced Cloud-Optimized GeoTIFF.

Real pixels, invented locations: the placement is synthetic and labelled so in the GeoJSON, the
STAC Item properties (``rsia:synthetic_placement``) and the README written beside the mosaic.

Usage:
    python benchmarks/make_mosaic.py --split val --grid 8 --out rsia_geo/sample_data/mosaic
    python benchmarks/make_mosaic.py --split val --grid 15 --out runs/mosaic_val  # all 210

Writes ``<out>/ucm_mosaic.tif`` (COG: JPEG, 512 px blocks, internal overviews), ``cells.geojson``
(each cell's footprint in EPSG:4326, UCM image, class, pixel window) and ``item.json`` (a STAC
Item). Cells are ``cell`` px (default 256) at 0.3048 m (UCM's 1 ft), in ``--crs`` starting at
``--origin``; images that are not ``cell`` x ``cell`` (UCM has a few 256 x 253) are resized.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.shutil import copy as rio_copy

from rsia_geo._geo import window_footprint

GSD = 0.3048


def build(
    shared: Path,
    out: Path,
    *,
    split: str,
    grid: int,
    cell: int,
    crs: str,
    origin: tuple[float, float],
    seed: int,
) -> dict:
    meta = json.loads((shared / "ucm" / "captions.json").read_text())
    records = [r for r in meta["images"] if r["split"] == split]
    # class-balanced pick: round-robin over classes, shuffled within class
    rng = random.Random(seed)
    by_class: dict[str, list[dict]] = {}
    for r in records:
        by_class.setdefault(r["class"], []).append(r)
    for v in by_class.values():
        rng.shuffle(v)
    picks: list[dict] = []
    classes = sorted(by_class)
    while len(picks) < grid * grid and any(by_class.values()):
        for c in classes:
            if by_class[c] and len(picks) < grid * grid:
                picks.append(by_class[c].pop())
    rng.shuffle(picks)
    n = len(picks)
    rows = (n + grid - 1) // grid
    width, height = grid * cell, rows * cell
    mosaic = np.zeros((3, height, width), dtype=np.uint8)
    transform = Affine(GSD, 0, origin[0], 0, -GSD, origin[1])
    features = []
    for i, rec in enumerate(picks):
        r, c = divmod(i, grid)
        img = Image.open(shared / "ucm" / rec["image"]).convert("RGB")
        if img.size != (cell, cell):
            img = img.resize((cell, cell), Image.BILINEAR)
        mosaic[:, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = np.asarray(img).transpose(
            2, 0, 1
        )
        fp = window_footprint(crs, transform, c * cell, r * cell, cell, cell, densify=2)
        features.append(
            {
                "type": "Feature",
                "geometry": json.loads(json.dumps(fp.__geo_interface__)),
                "properties": {
                    "cell": i,
                    "row": r,
                    "col": c,
                    "image": Path(rec["image"]).name,
                    "class": rec["class"],
                    "split": split,
                    "window": [c * cell, r * cell, cell, cell],
                    "synthetic_placement": True,
                },
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "_mosaic_tmp.tif"
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "photometric": "RGB",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
    }
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(mosaic)
        dst.update_tags(
            TIFFTAG_DATETIME="2010:01:01 00:00:00",
            RSIA_PROVENANCE="UC Merced Land Use images (USGS, public domain) at "
            "synthetic locations",
        )
    cog = out / "ucm_mosaic.tif"
    rio_copy(
        tmp,
        cog,
        driver="COG",
        COMPRESS="JPEG",
        QUALITY="90",
        BLOCKSIZE="512",
        OVERVIEWS="AUTO",
        OVERVIEW_RESAMPLING="AVERAGE",
    )
    os.remove(tmp)
    (out / "cells.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    with rasterio.open(cog) as src:
        fp = window_footprint(src.crs, src.transform, 0, 0, src.width, src.height)
        item = {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": "ucm_mosaic",
            "stac_extensions": ["https://stac-extensions.github.io/projection/v2.0.0/schema.json"],
            "geometry": fp.__geo_interface__,
            "bbox": list(fp.bounds),
            "properties": {
                "datetime": dt.datetime(2010, 1, 1, tzinfo=dt.UTC).isoformat(),
                "rsia:synthetic_placement": True,
                "description": "Real UC Merced aerial images (USGS orthoimagery, public domain) "
                "laid out on a grid at INVENTED locations; for demos and "
                "benchmarks only.",
                "rsia:source_split": split,
                "gsd": GSD,
            },
            "assets": {
                "image": {
                    "href": "./ucm_mosaic.tif",
                    "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "roles": ["data", "visual"],
                    "proj:code": crs,
                    "proj:shape": [src.height, src.width],
                    "proj:transform": list(src.transform)[:6],
                }
            },
            "links": [],
        }
    (out / "item.json").write_text(json.dumps(item, indent=2))
    (out / "README.md").write_text(
        f"# UCM mosaic ({split}, {n} cells)\n\n"
        "**Real pixels, invented locations.** Each cell is a real UC Merced Land Use image "
        "(Yang & Newsam 2010; USGS National Map urban-area orthoimagery, public domain) from "
        f"the UCM-Captions `{split}` split. Their placement on this grid, the CRS ({crs}) and "
        f"the origin {origin} are synthetic: nothing here is where the map says it is.\n\n"
        f"- `ucm_mosaic.tif`: {width}x{height} px COG, {GSD} m, JPEG, internal overviews\n"
        "- `cells.geojson`: cell footprints (EPSG:4326) with the source image and scene class\n"
        "- `item.json`: a STAC Item (`rsia:synthetic_placement: true`)\n\n"
        f"Rebuild: `python benchmarks/make_mosaic.py --split {split} --grid {grid} "
        f"--out {out}`\n"
    )
    return {"cells": n, "width": width, "height": height, "bytes": cog.stat().st_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=os.environ.get("RSIA_SHARED_DATA", "../shared/data"))
    p.add_argument("--split", default="val")
    p.add_argument("--grid", type=int, default=8, help="cells per row")
    p.add_argument("--cell", type=int, default=256)
    p.add_argument("--crs", default="EPSG:32611")
    p.add_argument("--origin", type=float, nargs=2, default=(500000.0, 3760000.0))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    print(
        build(
            Path(a.shared),
            Path(a.out),
            split=a.split,
            grid=a.grid,
            cell=a.cell,
            crs=a.crs,
            origin=tuple(a.origin),
            seed=a.seed,
        )
    )


if __name__ == "__main__":
    main()
