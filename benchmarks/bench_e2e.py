"""End-to-end benchmark of region-restricted spoken search on a mosaic with known answers.

Builds a mosaic of all 210 UCM-Captions val images (15 x 14 cells; real pixels, invented
locations), catalogs it, indexes it with the shipped checkpoint through the real pipeline
(STAC -> tiles -> encoder -> embedded Qdrant), then, for every val clip (voiced with speakers
held out of training), searches:

A hit "finds" the target when it covers at least a quarter of the target cell.

* everywhere (k = 10): recall@1/5/10 of the target cell, to compare with the model-level
  ``rsia-geo evaluate`` audio->image numbers on the same clips;
* in a random region that contains the target cell (a box of 3-6 x 3-6 cells): recall@1/5/10,
  class precision of the top 10, how many of the 10 share ground with a better hit (repeats:
  with one hit per place, neighbours that overlap the place's best tile by less than
  ``--group-overlap`` stay separate places), the fraction of hits outside the region (must be 0);
* in a random region that does not contain it: the fraction of hits outside the region.

The **oracle** class precision is the ceiling of that metric for the tiling: in the same
regions, the index's tiles ranked by a ranker that knows every cell's class (tiles whose centre
lies on a cell of the query's class first, most of their area on such cells first), grouped
into places exactly as the search groups them, top 10. No model is involved: with one hit per
place, a region holds only so many distinct places of one class.

A hit's class is the class of the cell under its centre; a tile centred on a cell's edge or
corner (half of the tiles of an overlapping tiling) lies on two or four cells, and the metric
takes the first of them in the cells file, a choice no ranker that looks at pixels can see (the
oracle can: it ranks exactly those tiles first). The **split** class precision gives such a hit
the share of those cells that are of the query's class (0, 1/4, 1/2, ...: a fair coin between
them); its oracle ranks tiles by that share. Both are reported.

Tilings compared (names ``GRID[+L2][+ov][+nogroup]``): GRID is ``aligned`` with the cells
(256 px tiles), ``half-shift`` (the grid moved by half a cell: tiles straddle four cells),
``random-offset`` (moved by a seeded random sub-cell offset) or ``384px`` (larger tiles); ``+L2``
adds a coarser level, ``+ov`` overlaps tiles by half (a stride of half a tile: the default
tiling), ``+nogroup`` turns off the one-hit-per-place grouping that the search applies by
default (it only matters with overlapping tiles or several levels).

Usage (about 10 minutes on 2 cores):
    python benchmarks/bench_e2e.py --voices runs/ucm_voices/manifest.jsonl \
        --workdir runs/bench_e2e --out docs/bench_e2e.json
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rsia_geo import TileSpec, build_catalog, open_stac
from rsia_geo.index import TileIndex
from rsia_geo.pipeline import DEFAULT_FEEDBACK, DISTINCT_PLACES, build_index, load_model, search
from rsia_geo.tiles import IMAGE_VIEWS
from rsia_geo.training.dataset import load_split


def _cells(path: Path):
    import geopandas as gpd

    return gpd.read_file(path)


class _OracleTiles:
    """Every tile of an index with the class under its centre and its area per class."""

    def __init__(self, idx, cells) -> None:
        import shapely
        from shapely.geometry import shape

        hits = idx.scroll(fields=["footprint"], limit=10**7)
        fps = [
            shape(json.loads(h.payload["footprint"]) if isinstance(h.payload["footprint"], str)
                  else h.payload["footprint"])
            for h in hits
        ]  # fmt: skip
        self.footprints = np.array(fps, dtype=object)
        self.row = {h.id: i for i, h in enumerate(hits)}  # a tile id's place in these arrays
        geoms = np.array(list(cells.geometry), dtype=object)
        classes = np.array(list(cells["class"]))
        self.centre_class = []
        self.centre_classes = []  # every cell under the centre: 2 on an edge, 4 on a corner
        for fp in fps:
            on = np.flatnonzero(shapely.intersects(geoms, fp.centroid.buffer(1e-7)))
            self.centre_class.append(classes[on[0]] if on.size else None)
            self.centre_classes.append(list(classes[on]))
        self.centre_class = np.array(self.centre_class, dtype=object)
        self.share: dict[str, np.ndarray] = {}
        for c in set(classes):
            union = shapely.union_all(geoms[classes == c])
            self.share[c] = shapely.area(shapely.intersection(self.footprints, union)) / (
                shapely.area(self.footprints)
            )

    def credit(self, i: int, cls) -> float:
        """Share of the cells under tile ``i``'s centre that are of class ``cls``."""
        under = self.centre_classes[i]
        return sum(c == cls for c in under) / len(under) if under else 0.0

    def precision(
        self, region, cls, k: int, group: bool, group_places, overlap: float = 0.5
    ) -> tuple[float, float]:
        """Class precision of the top k places an all-knowing ranker returns in the region.

        Returns:
            The ceiling of the first-listed-cell precision and of the split precision.
        """
        import shapely

        inside = np.flatnonzero(shapely.area(shapely.intersection(self.footprints, region)) > 0)
        if not inside.size:
            return 0.0, 0.0
        on = self.centre_class[inside] == cls
        credit = np.array([self.credit(i, cls) for i in inside])
        ceilings = []
        for first in (~on, -credit):
            order = inside[np.lexsort((-self.share[cls][inside], first))]
            if group:
                picked = [g[0] for g in group_places(self.footprints, order, k, overlap)]
            else:
                picked = list(order[:k])
            ceilings.append(picked)
        first_listed = float(np.mean(self.centre_class[ceilings[0]] == cls))
        split = float(np.mean([self.credit(i, cls) for i in ceilings[1]]))
        return first_listed, split


def _repeats(footprints: list) -> int:
    """How many hits share some area with a better hit (the same ground shown again)."""
    return sum(
        any(fp.intersection(better).area > 1e-9 * fp.area for better in footprints[:i])
        for i, fp in enumerate(footprints)
    )


def region_around(cells, target, rng: random.Random) -> tuple[float, float, float, float]:
    """Bounds of a random region of 3-6 x 3-6 cells that contains the ``target`` cell.

    Draws four numbers from ``rng``: replaying the same sequence gives the same regions
    (``ablate_group_score.py`` does).
    """
    grid_w, grid_h = int(cells["col"].max()) + 1, int(cells["row"].max()) + 1
    w, h = rng.randint(3, 6), rng.randint(3, 6)
    c0 = rng.randint(max(0, target["col"] - w + 1), min(target["col"], grid_w - w))
    r0 = rng.randint(max(0, target["row"] - h + 1), min(target["row"], grid_h - h))
    sel = cells[
        (cells["col"] >= c0)
        & (cells["col"] < c0 + w)
        & (cells["row"] >= r0)
        & (cells["row"] < r0 + h)
    ]
    minx, miny, maxx, maxy = (float(v) for v in sel.total_bounds)
    return minx, miny, maxx, maxy


def _run_tiling(
    name: str,
    spec: TileSpec,
    catalog,
    model,
    clips,
    cells,
    workdir: Path,
    rng: random.Random,
    k: int = 10,
    group: bool = True,
    image_views: str | None = None,
    hubness: float | None = None,
    feedback: float | None = None,
    group_overlap: float = DISTINCT_PLACES,
) -> dict:
    from shapely.geometry import box

    from rsia_geo.pipeline import group_places

    scoring = {
        "group": group, "hubness": hubness, "feedback": feedback, "group_overlap": group_overlap
    }  # fmt: skip
    idx_path = workdir / f"index_{name}"
    t0 = time.perf_counter()
    with TileIndex(idx_path) as idx:
        report = build_index(
            catalog, idx, model, spec=spec, progress=False, image_views=image_views
        )
        n_tiles = idx.count()
        views = idx.image_views
        index_s = time.perf_counter() - t0
        by_image = {row["image"]: i for i, row in cells.iterrows()}
        grid_w = int(cells["col"].max()) + 1
        grid_h = int(cells["row"].max()) + 1
        oracle = _OracleTiles(idx, cells)
        stats = {
            "all": [],
            "in": [],
            "prec": [],
            "prec_split": [],
            "oracle": [],
            "oracle_split": [],
            "repeats": [],
            "out_frac_in": [],
            "out_frac_out": [],
            "latency": [],
        }
        for clip in clips:
            target = cells.loc[by_image[Path(clip["image"]).name]]
            tgeom = target.geometry
            cls = target["class"]

            def rank_of(hits, tgeom=tgeom):
                for r, g in enumerate(hits.geometry):
                    inter = g.intersection(tgeom).area
                    # found: the hit covers at least a quarter of the target cell (a tile
                    # shifted by half a cell covers exactly a quarter of four cells)
                    if inter >= 0.25 * tgeom.area * (1 - 1e-6):
                        return r
                return None

            t = time.perf_counter()
            hits = search(clip["clip_path"], idx, model, k=k, **scoring)
            stats["latency"].append(1000 * (time.perf_counter() - t))
            stats["all"].append(rank_of(hits))
            minx, miny, maxx, maxy = region_around(cells, target, rng)
            region = box(minx, miny, maxx, maxy)
            hits = search(
                clip["clip_path"], idx, model, bbox=(minx, miny, maxx, maxy), k=k, **scoring
            )
            stats["in"].append(rank_of(hits))
            inside = [g.intersection(region).area > 0 for g in hits.geometry]
            stats["out_frac_in"].append(1 - float(np.mean(inside)) if len(hits) else 0.0)
            # each hit's class, as the oracle reads it for the same tile (its centre's cells)
            found = [oracle.row[t] for t in hits.tile_id]
            stats["prec"].append(
                float(np.mean([oracle.centre_class[i] == cls for i in found])) if found else 0.0
            )
            stats["prec_split"].append(
                float(np.mean([oracle.credit(i, cls) for i in found])) if found else 0.0
            )
            ceiling, ceiling_split = oracle.precision(
                region, cls, k, group, group_places, group_overlap
            )
            stats["repeats"].append(_repeats(list(hits.geometry)))
            stats["oracle"].append(ceiling)
            stats["oracle_split"].append(ceiling_split)
            # a region that does not contain the target: the opposite corner block
            oc = 0 if target["col"] >= grid_w / 2 else grid_w - 3
            orr = 0 if target["row"] >= grid_h / 2 else grid_h - 3
            sel = cells[
                (cells["col"] >= oc)
                & (cells["col"] < oc + 3)
                & (cells["row"] >= orr)
                & (cells["row"] < orr + 3)
            ]
            minx, miny, maxx, maxy = sel.total_bounds
            region = box(minx, miny, maxx, maxy)
            hits = search(
                clip["clip_path"], idx, model, bbox=(minx, miny, maxx, maxy), k=k, **scoring
            )
            inside = [g.intersection(region).area > 0 for g in hits.geometry]
            stats["out_frac_out"].append(1 - float(np.mean(inside)) if len(hits) else 0.0)

    def recall(ranks, kk):
        return 100.0 * float(np.mean([r is not None and r < kk for r in ranks]))

    return {
        "tiling": name,
        "spec": {"size": spec.size, "overlap": spec.overlap, "scales": list(spec.scales)},
        "group": group,
        "group_overlap": group_overlap,
        "image_views": views,
        "hubness": hubness or 0.0,
        "feedback": DEFAULT_FEEDBACK if feedback is None else feedback,
        "tiles": n_tiles,
        "index_s": round(index_s, 1),
        "index_tiles_per_s": round(report.indexed / max(report.seconds, 1e-9), 1),
        "everywhere": {f"R@{kk}": round(recall(stats["all"], kk), 2) for kk in (1, 5, 10)},
        "in_region": {f"R@{kk}": round(recall(stats["in"], kk), 2) for kk in (1, 5, 10)},
        "class_precision@10_in_region": round(100 * float(np.mean(stats["prec"])), 2),
        "oracle_class_precision@10_in_region": round(100 * float(np.mean(stats["oracle"])), 2),
        "split_class_precision@10_in_region": round(100 * float(np.mean(stats["prec_split"])), 2),
        "oracle_split_class_precision@10_in_region": round(
            100 * float(np.mean(stats["oracle_split"])), 2
        ),
        "repeats@10_in_region": round(float(np.mean(stats["repeats"])), 2),
        "hits_outside_region": max(stats["out_frac_in"] + stats["out_frac_out"]),
        "latency_ms": {
            "p50": round(float(np.percentile(stats["latency"], 50)), 1),
            "p95": round(float(np.percentile(stats["latency"], 95)), 1),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voices", required=True, help="manifest.jsonl with the val clips")
    p.add_argument("--workdir", default="runs/bench_e2e")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--clips", type=int, default=None, help="use only this many clips")
    p.add_argument(
        "--tilings",
        nargs="+",
        default=[
            "aligned+L2",
            "half-shift+L2",
            "384px+L2",
            "aligned+L2+ov",
            "half-shift+L2+ov",
            "random-offset+L2+ov",
            "384px+L2+ov",
            "half-shift+L2+ov+nogroup",
        ],
    )
    p.add_argument(
        "--image-views",
        choices=list(IMAGE_VIEWS),
        default=None,
        help="how tiles are embedded (default: build_index's, d8 for a new index)",
    )
    p.add_argument(
        "--hubness", type=float, default=None,
        help="search(hubness=...): weight of the tiles' hubness (CSLS: 0.5; default off)",
    )  # fmt: skip
    p.add_argument(
        "--feedback", type=float, default=None,
        help=f"search(feedback=...): weight of the first places' look (default {DEFAULT_FEEDBACK}; "
        "0: off)",
    )  # fmt: skip
    p.add_argument(
        "--group-overlap", type=float, default=DISTINCT_PLACES,
        help="search(group_overlap=...): shared fraction of the smaller tile that makes two "
        f"tiles one place (default {DISTINCT_PLACES}, search's)",
    )  # fmt: skip
    p.add_argument("--out", default=None)
    a = p.parse_args()
    work = Path(a.workdir)
    mosaic = work / "mosaic"
    if not (mosaic / "item.json").exists():
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parent / "make_mosaic.py"),
                "--split",
                "val",
                "--grid",
                "15",
                "--out",
                str(mosaic),
            ],
            check=True,
        )
    cells = _cells(mosaic / "cells.geojson")
    clips = load_split(a.voices, "val")
    if a.clips:
        clips = random.Random(0).sample(clips, a.clips)
    model = load_model(a.checkpoint)
    rng = random.Random(0)
    rows = []
    offsets = {"aligned": (0, 0), "384px": (0, 0), "half-shift": (128, 128)}
    offsets["random-offset"] = (random.Random(7).randint(1, 255), random.Random(8).randint(1, 255))
    for name in a.tilings:
        grid, *opts = name.split("+")
        if grid not in offsets:
            raise SystemExit(f"unknown tiling {name!r}: GRID is one of {sorted(offsets)}")
        dx, dy = offsets[grid]
        size = 384 if grid == "384px" else 256
        cat_dir = work / f"catalog_{dx}_{dy}"
        if not (cat_dir / "catalog.json").exists():
            item = open_stac(mosaic / "item.json")
            if (dx, dy) != (0, 0):  # move the grid origin: tiles straddle up to 4 cells
                item = _shifted(item, mosaic, work, dx, dy)
            build_catalog([], cat_dir, items=[item])
        spec = TileSpec(
            size=size,
            overlap=size / 2 if "ov" in opts else 0,
            scales=(1, 2) if "L2" in opts else (1,),
            out_size=256,
        )
        row = _run_tiling(
            name,
            spec,
            cat_dir / "catalog.json",
            model,
            clips,
            cells,
            work,
            rng,
            group="nogroup" not in opts,
            image_views=a.image_views,
            hubness=a.hubness,
            feedback=a.feedback,
            group_overlap=a.group_overlap,
        )
        row["offset_px"] = [dx, dy]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"clips": len(clips), "rows": rows}, indent=2))


def _shifted(item, mosaic: Path, work: Path, dx: int = 128, dy: int = 128):
    """A copy of the mosaic cropped by ``dx`` / ``dy`` pixels on the left and top edges."""
    import rasterio
    from rasterio.windows import Window

    from rsia_geo.catalog import item_from_raster

    src_path = mosaic / "ucm_mosaic.tif"
    dst_path = work / "shifted" / f"ucm_mosaic_shift_{dx}_{dy}.tif"
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    if not dst_path.exists():
        with rasterio.open(src_path) as src:
            win = Window(dx, dy, src.width - dx, src.height - dy)
            prof = src.profile | {
                "width": win.width,
                "height": win.height,
                "transform": src.window_transform(win),
                "driver": "GTiff",
                "compress": "deflate",
                "photometric": "RGB",
            }
            prof.pop("blockxsize", None), prof.pop("blockysize", None)
            tmp = dst_path.with_suffix(".part.tif")
            with rasterio.open(tmp, "w", **prof) as dst:
                dst.write(src.read(window=win))
            tmp.replace(dst_path)  # never leave a half-written raster behind
    return item_from_raster(dst_path, item_id=f"ucm_mosaic_{dx}_{dy}", datetime=item.datetime)


if __name__ == "__main__":
    main()
