"""Quantized vs float indexes at scale: recall@10 against exact search, memory and latency.

The embedded engine (Qdrant Edge) holds ``--size`` points (default 1M) of the starter model's
embedding space with production payloads; each variant (``float``: the default exact scan;
``int8``; ``binary``; ``int8-ondisk``: int8 in RAM, the original vectors memory-mapped) is a
folder built once (resumable: a folder with the right count is reused) through
``TileIndex(..., quantization=...)`` and queried in a fresh process, so that its peak RSS is its
own (``rss_open_mb``: resident memory the open index holds after the queries). Recall@10
(and of the pipeline's 50 candidates) is measured against the ``float`` index's answers to
the same queries, unfiltered and inside a box holding ~1 % of the tiles; the float answers
themselves are checked against a NumPy exact search.

**Vectors.** Not random: the embedding space of real imagery. The starter model embeds the
1,890 UC Merced images (and their mirror images); every point is one of these real embeddings,
or a mix of two (a tile straddling two scenes; 30 % of the points), plus isotropic noise whose
size makes a point as far from its source as an image's mirror image is from the image (the
cosine measured on the real pairs). **Queries** are real too: the 1,050 typed val captions
through the shipped text route (the first ``--queries`` of them). Payloads are those of a real
tile, moved onto a grid of 0.001-degree cells (as ``bench_index.py``).

Usage (2 cores; building 1M points takes ~10 min per variant and ~4 GB of disk each):
    python benchmarks/bench_quantization.py --workdir runs/bench_quant --size 1000000 \\
        --out docs/bench_quantization.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_index import SIG  # the same synthetic model signature (benchmarks/ is on sys.path)

DIM = 256
VARIANTS = {
    "float": {},
    "int8": {"quantization": "int8"},
    "binary": {"quantization": "binary"},
    "int8-ondisk": {"quantization": "int8", "on_disk": True},
}
CELL = 0.001  # degrees between neighbouring points
MIXED = 0.3  # share of points that mix two real embeddings


def real_space(work: Path, captions_path: Path) -> tuple[np.ndarray, float, np.ndarray]:
    """Unit embeddings of the UCM images (two views), their view-to-view cosine, query vectors."""
    cache = work / "space.npz"
    if cache.exists():
        z = np.load(cache)
        return z["images"], float(z["cos"]), z["queries"]
    import torch

    from rsia_geo.pipeline import load_model
    from rsia_geo.training.train import load_image
    from rsia_geo.weights import text_encoder

    model = load_model(None)
    data = json.loads(captions_path.read_text())
    images = [captions_path.parent / r["image"] for r in data["images"]]
    views: list[list[np.ndarray]] = [[], []]
    with torch.no_grad():
        for i in range(0, len(images), 32):
            x = torch.stack(
                [model.preprocess_images(load_image(str(p))[None])[0] for p in images[i : i + 32]]
            )
            for v, batch in enumerate((x, x.flip(-1))):
                views[v].append(model.encode_images(batch).numpy())
    a, b = (np.concatenate(v).astype(np.float32) for v in views)
    cos = float(np.mean(np.sum(a * b, axis=1)))
    captions = [c for r in data["images"] if r["split"] == "val" for c in r["captions"]]
    q = np.asarray(text_encoder(model).encode(captions), np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=np.concatenate([a, b]), cos=cos, queries=q)
    return np.concatenate([a, b]), cos, q


def points(images: np.ndarray, cos: float, n: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors around the real embeddings (see the module docstring)."""
    rng = np.random.default_rng(seed)
    tau = float(np.sqrt(max(1.0 / cos**2 - 1.0, 0.0)))
    out = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        base = images[rng.integers(0, len(images), m)].astype(np.float64)
        mix = rng.random(m) < MIXED
        w = rng.uniform(0.5, 0.9, m)[:, None]
        other = images[rng.integers(0, len(images), m)]
        base = np.where(mix[:, None], w * base + (1 - w) * other, base)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        g = rng.standard_normal((m, DIM))
        g *= tau / np.linalg.norm(g, axis=1, keepdims=True)
        v = base + g
        out[s : s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def _template():
    import datetime as dt

    from rsia_geo.catalog import item_from_raster
    from rsia_geo.sample_data import sample_data_dir
    from rsia_geo.tiles import TileSpec, tile_item

    item = item_from_raster(
        sample_data_dir() / "aerial" / "cogeo.tif", default_datetime=dt.datetime(2020, 1, 1)
    )
    return tile_item(item, TileSpec(size=256)).tiles[0]


class _Grid:
    """Payloads of a real tile moved to cell ``i`` of a square grid, packed as stored."""

    def __init__(self, n: int) -> None:
        from rsia_geo.index.payload import pack_payload, tile_to_payload

        self.tile = _template()
        self.side = int(np.ceil(np.sqrt(n)))
        self.base = tile_to_payload(self.tile, raw_norm=1.0)
        self.packed = pack_payload(self.base)
        self.minx, self.miny = self.tile.footprint.bounds[:2]

    def shift(self, i: int) -> tuple[float, float]:
        r, c = divmod(i, self.side)
        return c * CELL - self.minx, r * CELL - self.miny

    def unpacked(self, i: int) -> dict:
        import dataclasses

        from shapely.affinity import translate

        from rsia_geo.index.payload import tile_to_payload

        dx, dy = self.shift(i)
        t = dataclasses.replace(
            self.tile,
            id=_id(i),
            footprint=translate(self.tile.footprint, dx, dy),
            centre=(self.tile.centre[0] + dx, self.tile.centre[1] + dy),
        )
        return tile_to_payload(t, raw_norm=1.0)

    def packed_at(self, i: int) -> dict:
        dx, dy = self.shift(i)
        p = dict(self.packed)
        x0, y0 = p["bbox_minx"] + dx, p["bbox_miny"] + dy
        x1, y1 = p["bbox_maxx"] + dx, p["bbox_maxy"] + dy
        p.update(bbox_minx=x0, bbox_miny=y0, bbox_maxx=x1, bbox_maxy=y1)
        loc = p["location"]
        p["location"] = {"lon": loc["lon"] + dx, "lat": loc["lat"] + dy}
        ring = [[x0, y1], [x1, y1], [x1, y0], [x0, y0], [x0, y1]]
        p["footprint"] = json.dumps({"type": "Polygon", "coordinates": [ring]})
        return p


def _id(i: int) -> str:
    return f"{i:08x}-0000-5000-8000-000000000000"


def build(path: Path, vectors: np.ndarray, options: dict, batch: int = 2000) -> dict:
    """Fill (or finish filling) one variant's index; build its quantized vectors."""
    from rsia_geo.index import TileIndex

    n = len(vectors)
    grid = _Grid(n)
    t0 = time.perf_counter()
    with TileIndex(path, **options) as idx:
        idx.bind_model(SIG)
        have = idx.count()
        if have < n:
            first = [grid.unpacked(0), grid.unpacked(n - 1)]  # margin and extent, as add() would
            idx._upsert([_id(0), _id(n - 1)], vectors[[0, n - 1]].tolist(), first)
        for start in range(have, n, batch):
            ids = [_id(i) for i in range(start, min(n, start + batch))]
            pays = [grid.packed_at(i) for i in range(start, start + len(ids))]
            idx.backend.upsert(ids, vectors[start : start + len(ids)].tolist(), pays)
        upsert_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        idx.optimize()
        optimize_s = time.perf_counter() - t1
        count = idx.count()
    return {"points": count, "upsert_s": round(upsert_s, 1), "optimize_s": round(optimize_s, 1)}


def _disk(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def measure(path: Path, queries: np.ndarray, n: int, oversampling: float | None) -> dict:
    """In this (fresh) process: latency of the search stage, the answers, the peak RSS."""
    from rsia_geo.index import TileIndex, make_region
    from rsia_geo.pipeline import DEFAULT_CANDIDATES, _candidates, _page

    rss0 = _vm("VmRSS")
    side = int(np.ceil(np.sqrt(n)))
    span, frac = side * CELL, 0.1
    rng = np.random.default_rng(1)
    boxes = [rng.uniform(0, span * (1 - frac), 2) for _ in queries]
    out: dict = {"answers": {}}
    t = time.perf_counter()
    with TileIndex(path, create=False, oversampling=oversampling) as idx:
        out["open_s"] = round(time.perf_counter() - t, 2)
        for label in ("no filter", "bbox ~1%"):
            times, answers, top10 = [], [], []
            for qi, q in enumerate(queries):
                region = None
                if label != "no filter":
                    x0, y0 = boxes[qi]  # the grid starts at (0, 0)
                    region = make_region(bbox=(x0, y0, x0 + span * frac, y0 + span * frac))
                t = time.perf_counter()
                cands, _ = _candidates(
                    idx, q, region, DEFAULT_CANDIDATES, True, page=_page(DEFAULT_CANDIDATES)
                )
                times.append(1000 * (time.perf_counter() - t))
                answers.append([c.id for c in cands])
                top10.append([h.id for h in idx.query(q, region, limit=10)])
            out["answers"][label] = {"candidates": answers, "top10": top10}
            out[label] = {
                "p50_ms": round(float(np.percentile(times[2:], 50)), 2),
                "p95_ms": round(float(np.percentile(times[2:], 95)), 2),
            }
        out["rss_open_mb"] = round(_vm("VmRSS") - rss0, 1)  # held by the open index
    out["peak_rss_mb"] = round(_vm("VmHWM"), 1)  # the whole process, imports included
    return out


def _vm(field: str) -> float:
    """A ``/proc/self/status`` memory figure in MB (VmHWM: peak RSS since this exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _recall(got: list[list[str]], truth: list[list[str]], k: int) -> float:
    return float(
        np.mean(
            [
                len(set(g[:k]) & set(t[:k])) / max(1, len(t[:k]))
                for g, t in zip(got, truth, strict=True)
            ]
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/bench_quant")
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--oversampling", nargs="+", type=float, default=[1.0, 2.0, 4.0, 8.0])
    p.add_argument(
        "--captions",
        default=os.environ.get("RSIA_SHARED_DATA", "../shared/data") + "/ucm/captions.json",
    )
    p.add_argument("--out", default=None)
    p.add_argument(
        "--measure", nargs=3, metavar=("FOLDER", "N", "OVERSAMPLING"), help=argparse.SUPPRESS
    )
    a = p.parse_args()
    work = Path(a.workdir)
    if a.measure:  # the child process of one measurement
        folder, n, over = a.measure
        q = np.load(work / "queries.npy")
        res = measure(Path(folder), q, int(n), None if over == "default" else float(over))
        print(json.dumps(res))
        return
    images, cos, queries = real_space(work, Path(a.captions))
    queries = queries[: a.queries]
    np.save(work / "queries.npy", queries)
    vec_path = work / f"vectors_{a.size}.npy"
    if not vec_path.exists():
        np.save(vec_path, points(images, cos, a.size))
    vectors = np.load(vec_path, mmap_mode="r")
    report: dict = {
        "size": a.size,
        "dim": DIM,
        "queries": len(queries),
        "view_cosine": round(cos, 4),
        "variants": {},
    }
    # NumPy exact top 10 (unfiltered) to check the float index's answers
    exact = []
    for s in range(0, len(queries), 50):
        sims = np.asarray(vectors @ queries[s : s + 50].T).T
        exact.extend([[_id(int(i)) for i in np.argsort(-row)[:10]] for row in sims])
    truth: dict = {}
    for name in ["float", *[v for v in a.variants if v != "float"]]:
        folder = work / f"{name}_{a.size}"
        print(f"[{name}] building {folder}", flush=True)
        built = build(folder, np.asarray(vectors), VARIANTS[name])
        entry = {
            "build": built,
            "disk_mb": round(_disk(folder) / 2**20, 1),
            "quantized_mb": round(_disk(folder, "quantized*") / 2**20, 1),
        }
        overs = ["default"] if name == "float" else [str(o) for o in a.oversampling]
        for over in overs:
            cmd = [
                sys.executable,
                __file__,
                "--workdir",
                str(work),
                "--measure",
                str(folder),
                str(a.size),
                over,
            ]
            res = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[
                    -1
                ]
            )
            answers = res.pop("answers")
            if name == "float":
                truth = answers
                res["recall@10_vs_numpy_exact"] = round(
                    _recall(answers["no filter"]["top10"], exact, 10), 4
                )
            for label in ("no filter", "bbox ~1%"):
                res[label]["recall@10"] = round(
                    _recall(answers[label]["top10"], truth[label]["top10"], 10), 4
                )
                res[label]["recall@50_candidates"] = round(
                    _recall(answers[label]["candidates"], truth[label]["candidates"], 50), 4
                )
            entry[f"oversampling={over}"] = res
            print(f"[{name}] oversampling {over}: {json.dumps(res)}", flush=True)
        report["variants"][name] = entry
        if a.out:
            Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
