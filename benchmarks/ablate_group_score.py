"""How to rank places: the best tile's score alone, or with the tiles that agree on the place.

Runs after ``bench_e2e.py`` on the same work folder (its mosaic, catalog and index of one
tiling) and replays its in-region searches (same clips, same random regions), fetching the
ungrouped candidates once per query (``search(..., group=False)`` over the pool a grouped
search scores). Every ranking below groups them exactly as the search does
(:func:`rsia_geo.pipeline.group_places`) and orders the places by:

* ``best``: the best tile's score (the search today);
* ``best+b*log(n)``: plus a bonus for the number of candidate tiles ``n`` that agree;
* ``mean-top-m``: the mean of the place's best ``m`` tile scores (a missing tile counts as
  the pool's lowest score).

It reports the class precision of the top 10 places in the region and the recall@10 of the
target cell (a place covering a quarter of it), per ranking.

Usage (about 3 minutes for 300 clips on 2 cores, once bench_e2e has built the index):
    python benchmarks/ablate_group_score.py --voices runs/v2_val/manifest.jsonl \\
        --workdir runs/bench_e2e --clips 300 --tiling half-shift+L2+ov
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from bench_e2e import region_around  # the same regions (benchmarks/ is on sys.path)

from rsia_geo.index import TileIndex
from rsia_geo.pipeline import GROUP_CANDIDATES, group_places, load_model, search
from rsia_geo.training.dataset import load_split


def _rankings() -> dict:
    out = {"best": lambda s, lo: s[0]}
    for b in (0.002, 0.005, 0.01, 0.02, 0.04):
        out[f"best+{b}*log(n)"] = lambda s, lo, b=b: s[0] + b * np.log(len(s))
    for m in (2, 3, 4):
        out[f"mean-top-{m}"] = lambda s, lo, m=m: float(
            np.mean(list(s[:m]) + [lo] * max(0, m - len(s)))
        )
    return out


def main() -> None:
    import geopandas as gpd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voices", required=True)
    p.add_argument("--workdir", default="runs/bench_e2e")
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--tiling", default="half-shift+L2+ov")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    work = Path(a.workdir)
    cells = gpd.read_file(work / "mosaic" / "cells.geojson")
    clips = load_split(a.voices, "val")
    clips = random.Random(0).sample(clips, a.clips)
    model = load_model(a.checkpoint)
    rng = random.Random(0)  # the region sequence of bench_e2e's _run_tiling
    by_image = {row["image"]: i for i, row in cells.iterrows()}
    k = 10
    rankings = _rankings()
    prec: dict[str, list[float]] = {n: [] for n in rankings}
    found: dict[str, list[bool]] = {n: [] for n in rankings}
    with TileIndex(work / f"index_{a.tiling}", create=False) as idx:
        for clip in clips:
            target = cells.loc[by_image[Path(clip["image"]).name]]
            bounds = region_around(cells, target, rng)
            hits = search(
                clip["clip_path"], idx, model, bbox=bounds, k=GROUP_CANDIDATES * k, group=False
            )
            if not len(hits):
                continue
            fps = list(hits.geometry)
            scores = np.asarray(hits["score"], dtype=np.float64)
            groups = group_places(fps, np.argsort(-scores, kind="stable"), len(fps))
            classes = []
            for g in fps:
                over = cells[cells.intersects(g.centroid.buffer(1e-7))]
                classes.append(over.iloc[0]["class"] if len(over) else None)
            tgeom = target.geometry
            hit_target = [g.intersection(tgeom).area >= 0.25 * tgeom.area * (1 - 1e-6) for g in fps]
            lo = float(scores.min())
            for name, fn in rankings.items():
                value = [fn(scores[g], lo) for g in groups]
                top = [groups[i][0] for i in np.argsort(-np.asarray(value), kind="stable")[:k]]
                prec[name].append(float(np.mean([classes[i] == target["class"] for i in top])))
                found[name].append(any(hit_target[i] for i in top))
    report = {
        "tiling": a.tiling,
        "clips": len(prec["best"]),
        "rankings": {
            n: {
                "class_precision@10_in_region": round(100 * float(np.mean(prec[n])), 2),
                "in_region_R@10": round(100 * float(np.mean(found[n])), 2),
            }
            for n in rankings
        },
    }
    print(json.dumps(report, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
