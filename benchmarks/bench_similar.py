"""Query by example and relevance feedback, measured on the 210 UCM-Captions val images.

The val mosaic (real pixels, invented locations; ``benchmarks/make_mosaic.py``) is indexed with
one 256 px tile per image through the real pipeline (STAC -> tiles -> encoder -> embedded
Qdrant). Then, through :func:`rsia_geo.search`:

* **example**: every tile in turn is the example (``search(example=tile_id)``; the example
  itself is left out). Class precision@10 and mean average precision over the 209 others
  (relevant = the 9 other images of its scene class);
* **spoken**: one val clip per image (voices held out of training) as the starting query;
* **refine**: from either start, three rounds of feedback simulated from the class labels:
  each round marks the 5 best hits not marked yet as relevant (same class) or not, and searches
  again with all marks so far (``relevant=``, ``not_relevant=``), for each refine method.

Reported after each round: precision@10 and AP of the list as returned (marked relevant
tiles stay in it, as the analyst sees them) and of the *residual* list (marked tiles removed:
only what the feedback newly found; queries whose relevant tiles were all marked are left out
of the residual means, their count is reported). Cost: median milliseconds per query (k=10).

Usage (about 10 minutes on 2 cores):
    python benchmarks/bench_similar.py --voices runs/v2_val/manifest.jsonl \
        --workdir runs/bench_similar --out docs/bench_similar.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rsia_geo import TileSpec, build_catalog, open_stac
from rsia_geo.index import TileIndex
from rsia_geo.pipeline import build_index, load_model, search
from rsia_geo.training.dataset import load_split

ROUNDS = 3
MARKS = 5


def _ap(ranked_rel: list[bool], n_rel: int) -> float:
    """Average precision of a ranked list of relevance flags with ``n_rel`` relevant items."""
    if n_rel == 0:
        return float("nan")
    hits, total = 0, 0.0
    for i, r in enumerate(ranked_rel):
        if r:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel


def _index(work: Path, mosaic: Path, model) -> tuple[Path, dict[str, str], dict[str, str]]:
    """Index the mosaic one tile per cell; map tile ids to classes and images to tile ids."""
    import geopandas as gpd
    from shapely.geometry import shape

    cat_dir = work / "catalog"
    if not (cat_dir / "catalog.json").exists():
        build_catalog([], cat_dir, items=[open_stac(mosaic / "item.json")])
    idx_path = work / "index_aligned"
    spec = TileSpec(size=256, overlap=0, scales=(1,), out_size=256)
    cells = gpd.read_file(mosaic / "cells.geojson")
    with TileIndex(idx_path) as idx:
        build_index(cat_dir / "catalog.json", idx, model, spec=spec, progress=False)
        tiles = idx.scroll(None, fields=["footprint"])
    cls_of: dict[str, str] = {}
    tile_of_image: dict[str, str] = {}
    for h in tiles:
        c = shape(h.payload["footprint"]).centroid
        over = cells[cells.contains(c)]
        if len(over):
            cls_of[h.id] = str(over.iloc[0]["class"])
            tile_of_image[str(over.iloc[0]["image"])] = h.id
    return idx_path, cls_of, tile_of_image


def _measure(idx, model, kw: dict, query_tile: str, cls_of: dict, pos, neg) -> tuple:
    """One query: its cost (k=10), its full ranking, and the four metrics."""
    cls = cls_of[query_tile]
    n_rel = sum(1 for t, c in cls_of.items() if c == cls and t != query_tile)
    t = time.perf_counter()
    search(index=idx, model=model, k=10, group=False, **kw)
    ms = 1000 * (time.perf_counter() - t)
    hits = search(index=idx, model=model, k=len(cls_of), group=False, **kw)
    ranked = [t for t in hits["tile_id"] if t != query_tile]
    rel = [cls_of.get(t) == cls for t in ranked]
    marked = set(pos) | set(neg)
    res = [cls_of.get(t) == cls for t in ranked if t not in marked]
    n_res = n_rel - len(pos)
    metrics = {
        "p10": float(np.mean(rel[:10])),
        "ap": _ap(rel, n_rel),
        "p10_res": float(np.mean(res[:10])) if n_res else np.nan,
        "ap_res": _ap(res, n_res) if n_res else np.nan,
    }
    return ms, ranked, metrics


def _run(start: str, queries, idx, model, cls_of, methods) -> dict:
    """Example or spoken start (round 0), then refine rounds, for each method."""
    first = {}
    for query_tile, kw in queries:
        first[query_tile] = _measure(idx, model, kw, query_tile, cls_of, [], [])
    table = {}
    for method in methods:
        per_round = [[(first[q][0], first[q][2]) for q, _ in queries]]
        per_round += [[] for _ in range(ROUNDS)]
        for query_tile, query_kw in queries:
            cls = cls_of[query_tile]
            pos: list[str] = []
            neg: list[str] = []
            ranked = first[query_tile][1]
            for r in range(1, ROUNDS + 1):
                marked = set(pos) | set(neg)
                new = [t for t in ranked if t not in marked][:MARKS]
                pos += [t for t in new if cls_of.get(t) == cls]
                neg += [t for t in new if cls_of.get(t) != cls]
                kw = dict(query_kw, relevant=pos, not_relevant=neg, refine_method=method)
                ms, ranked, metrics = _measure(idx, model, kw, query_tile, cls_of, pos, neg)
                per_round[r].append((ms, metrics))
        rows = []
        for r, entries in enumerate(per_round):

            def mean(key: str, entries=entries) -> float:
                return round(100 * float(np.nanmean([m[key] for _, m in entries])), 2)

            rows.append(
                {
                    "round": r,
                    "marks": r * MARKS,
                    "p10": mean("p10"),
                    "map": mean("ap"),
                    "p10_residual": mean("p10_res"),
                    "map_residual": mean("ap_res"),
                    "queries_all_relevant_marked": int(
                        sum(1 for _, m in entries if np.isnan(m["ap_res"]))
                    ),
                    "ms_p50": round(float(np.median([ms for ms, _ in entries])), 1),
                }
            )
        table[method] = rows
    return {"start": start, "queries": len(queries), "methods": table}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voices", default=None, help="val manifest.jsonl (adds the spoken start)")
    p.add_argument("--workdir", default="runs/bench_similar")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--methods", nargs="+", default=["rocchio", "linear"])
    p.add_argument("--queries", type=int, default=None, help="use only this many queries")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    mosaic = work / "mosaic"
    if not (mosaic / "item.json").exists():
        subprocess.run(
            [sys.executable, str(Path(__file__).parent / "make_mosaic.py"), "--split", "val",
             "--grid", "15", "--out", str(mosaic)],
            check=True,
        )  # fmt: skip
    model = load_model(a.checkpoint)
    idx_path, cls_of, tile_of_image = _index(work, mosaic, model)
    print(f"{len(cls_of)} tiles of {len(set(cls_of.values()))} classes", flush=True)
    results = []
    with TileIndex(idx_path, create=False) as idx:
        example_q = [(t, {"example": t}) for t in sorted(cls_of)][: a.queries]
        results.append(_run("example", example_q, idx, model, cls_of, a.methods))
        print(json.dumps(results[-1]), flush=True)
        if a.voices:
            clips = load_split(a.voices, "val")
            first: dict[str, dict] = {}
            for c in clips:
                first.setdefault(Path(c["image"]).name, c)
            spoken_q = [
                (tile_of_image[img], {"audio": c["clip_path"]})
                for img, c in sorted(first.items())
                if img in tile_of_image
            ][: a.queries]
            results.append(_run("spoken", spoken_q, idx, model, cls_of, a.methods))
            print(json.dumps(results[-1]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"rounds": ROUNDS, "marks_per_round": MARKS,
                                           "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
