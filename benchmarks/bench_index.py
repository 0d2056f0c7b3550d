"""Query latency of the index at scale, with a bbox filter selecting ~1 % of the tiles.

Synthetic unit vectors (dimension 256) with the real payload structure: every point gets the
payload of a real tile, moved to its own place on a grid of footprints, so filters and payload
sizes are those of production. The index is built once per size (resumable: an existing folder
with the right count is reused) and queried ``--queries`` times.

Usage:
    python benchmarks/bench_index.py --sizes 10000 100000 --out docs/bench_index.json
    python benchmarks/bench_index.py --sizes 1000000 --spoken   # build ~25 min, ~4 GB disk

Reports p50/p95 of the search stage as ``rsia_geo.search`` runs it (Qdrant query for the
default 50 candidates with their vectors, the exact footprint test, and the full payloads of
the final 20; no audio encoding),
with and without the bbox filter, the build time and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
from shapely.affinity import translate

from rsia_geo.index import TileIndex, make_region
from rsia_geo.index.payload import centre_margin, tile_to_payload
from rsia_geo.pipeline import DEFAULT_CANDIDATES, _candidates, _page
from rsia_geo.sample_data import sample_data_dir
from rsia_geo.tiles import TileSpec, tile_item

DIM = 256
SIG = {
    "model_id": "bench",
    "version": "1",
    "embed_dim": DIM,
    "backbone": "none",
    "input_size": 224,
    "in_chans": 3,
    "frontend": "none",
    "weights_sha256": None,
}


def _template():
    from rsia_geo.catalog import item_from_raster

    item = item_from_raster(
        sample_data_dir() / "aerial" / "cogeo.tif",
        default_datetime=__import__("datetime").datetime(2020, 1, 1),
    )
    return tile_item(item, TileSpec(size=256)).tiles[0]


def build(path: Path, n: int, engine: str, batch: int = 2000) -> float:
    """Fill an index with n points on a sqrt(n) x sqrt(n) grid of 0.001-degree cells."""
    import dataclasses

    tile = _template()
    side = int(np.ceil(np.sqrt(n)))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with TileIndex(path, engine=engine) as idx:
        idx.bind_model(SIG)
        have = idx.count()
        if have == n:
            if idx.centre_margin() is None:  # built before margins were recorded: every
                # (every point is a translated copy of the template tile)
                meta = idx.backend.get_meta()
                meta["centre_margin"] = list(centre_margin(tile_to_payload(tile)))
                idx.backend.set_meta(meta)
            return 0.0
        minx, miny = tile.footprint.bounds[:2]
        for start in range(have, n, batch):
            ids, vecs, pays = [], [], []
            for i in range(start, min(n, start + batch)):
                r, c = divmod(i, side)
                dx, dy = c * 0.001 - minx, r * 0.001 - miny
                fp = translate(tile.footprint, dx, dy)
                t = dataclasses.replace(
                    tile,
                    id=f"{i:08x}-0000-5000-8000-000000000000",
                    footprint=fp,
                    centre=(tile.centre[0] + dx, tile.centre[1] + dy),
                )
                ids.append(t.id)
                pays.append(tile_to_payload(t, raw_norm=1.0))
            v = rng.standard_normal((len(ids), DIM))
            vecs = (v / np.linalg.norm(v, axis=1, keepdims=True)).tolist()
            idx._upsert(ids, vecs, pays)  # records the centre margin, then upserts
    return time.perf_counter() - t0


def measure(path: Path, n: int, engine: str, queries: int, spoken: bool = False) -> dict:
    side = int(np.ceil(np.sqrt(n)))
    span = side * 0.001
    frac = 0.1  # a box of 10 % x 10 % of the grid = ~1 % of the tiles
    rng = np.random.default_rng(1)
    out = {}
    with TileIndex(path, engine=engine) as idx:
        for label in ("no filter", "bbox ~1%"):
            times = []
            for _ in range(queries):
                q = rng.standard_normal(DIM)
                region = None
                if label != "no filter":
                    x0, y0 = rng.uniform(0, span * (1 - frac), 2)
                    region = make_region(bbox=(x0, y0, x0 + span * frac, y0 + span * frac))
                t = time.perf_counter()
                cands, _ = _candidates(
                    idx, q, region, DEFAULT_CANDIDATES, True, page=_page(DEFAULT_CANDIDATES)
                )
                idx.retrieve([c.id for c in cands[:20]])  # full payloads of the final k
                times.append(1000 * (time.perf_counter() - t))
            out[label] = {
                "p50_ms": round(float(np.percentile(times, 50)), 2),
                "p95_ms": round(float(np.percentile(times, 95)), 2),
            }
        if region is not None:
            out["tiles_in_bbox"] = idx.count(region)
        if spoken:
            out["spoken bbox ~1%"] = _spoken(idx, span, frac, queries)
    return out


def _spoken(idx: TileIndex, span: float, frac: float, queries: int) -> dict:
    """Whole spoken query as ``rsia_geo.search`` runs it, minus the model check (the synthetic
    index is bound to no real model): decode + encode a real clip with the starter model,
    search stage, IA rescoring of the candidates, full payloads of the final 20."""
    import torch

    from rsia_geo.audio import load_audio
    from rsia_geo.models.alac import ia_scores
    from rsia_geo.pipeline import load_model

    model = load_model(None)
    clips = sorted((sample_data_dir() / "queries").glob("*.wav"))
    rng = np.random.default_rng(2)
    times = []
    for i in range(queries):
        x0, y0 = rng.uniform(0, span * (1 - frac), 2)
        t = time.perf_counter()
        clip = load_audio(clips[i % len(clips)], trim=True)
        a = model.encode_audio(torch.from_numpy(clip.samples)[None], normalize=False)[0].numpy()
        region = make_region(bbox=(x0, y0, x0 + span * frac, y0 + span * frac))
        cands, _ = _candidates(idx, a, region, DEFAULT_CANDIDATES, True, _page(DEFAULT_CANDIDATES))
        raw = np.stack([c.unit * c.raw_norm for c in cands]).astype(np.float32)
        ia = ia_scores(torch.from_numpy(raw), torch.from_numpy(a[None].astype(np.float32)))[:, 0]
        top = np.argsort(-ia.numpy())[:20]
        idx.retrieve([cands[j].id for j in top])
        times.append(1000 * (time.perf_counter() - t))
    return {
        "p50_ms": round(float(np.percentile(times[1:], 50)), 2),
        "p95_ms": round(float(np.percentile(times[1:], 95)), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--engine", default="edge", choices=["edge", "client"])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--workdir", default="runs/bench_index")
    p.add_argument("--out", default=None)
    p.add_argument(
        "--spoken", action="store_true", help="also time whole spoken queries (starter model)"
    )
    a = p.parse_args()
    rows = []
    for n in a.sizes:
        path = Path(a.workdir) / f"{a.engine}_{n}"
        secs = build(path, n, a.engine)
        res = measure(path, n, a.engine, a.queries, a.spoken)
        row = {
            "engine": a.engine,
            "points": n,
            "build_s": round(secs, 1),
            **res,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
