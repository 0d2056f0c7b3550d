"""How fast the embedded engine stores points with real payloads, up to a million.

Every point gets the payload of a real tile moved to its own place on a grid (as in
``bench_index.py``) and a random unit vector; the clock runs only around
``TileIndex._upsert`` (what ``build_index``'s writer thread does per batch), so the rate is the
writer's, not the synthetic payload generation's. Reported per segment of the build, so a
slow-down as the collection grows shows, with the final count and the process's peak RSS.

``--unpacked`` stores payloads as nested dicts (how indexes were written before payload
packing) for comparison.

Usage:
    python benchmarks/bench_writer.py --points 1000000 --out docs/bench_writer.json   # ~15 min
    python benchmarks/bench_writer.py --points 100000 --unpacked
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from shapely.affinity import translate

sys.path.insert(0, str(Path(__file__).parent))
from bench_index import DIM, SIG, _template

from rsia_geo.index import TileIndex
from rsia_geo.index import tile_index as tile_index_module
from rsia_geo.index.payload import tile_to_payload


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=2000, help="points per upsert (build_index's)")
    p.add_argument("--segment", type=int, default=100_000, help="report every this many")
    p.add_argument("--workdir", default="runs/bench_writer")
    p.add_argument("--unpacked", action="store_true", help="store nested payloads (before)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.unpacked:
        tile_index_module.pack_payload = lambda payload: payload  # type: ignore[assignment]
    path = Path(a.workdir) / ("unpacked" if a.unpacked else "packed")
    shutil.rmtree(path, ignore_errors=True)
    tile = _template()
    side = int(np.ceil(np.sqrt(a.points)))
    rng = np.random.default_rng(0)
    minx, miny = tile.footprint.bounds[:2]
    segments: list[dict] = []
    seg_t, seg_n, total_t = 0.0, 0, 0.0
    with TileIndex(path) as idx:
        idx.bind_model(SIG)
        for start in range(0, a.points, a.batch):
            ids, pays = [], []
            for i in range(start, min(a.points, start + a.batch)):
                r, c = divmod(i, side)
                dx, dy = c * 0.001 - minx, r * 0.001 - miny
                t = dataclasses.replace(
                    tile,
                    id=f"{i:08x}-0000-5000-8000-000000000000",
                    footprint=translate(tile.footprint, dx, dy),
                    centre=(tile.centre[0] + dx, tile.centre[1] + dy),
                )
                ids.append(t.id)
                pays.append(tile_to_payload(t, raw_norm=1.0))
            v = rng.standard_normal((len(ids), DIM))
            vecs = (v / np.linalg.norm(v, axis=1, keepdims=True)).tolist()
            t0 = time.perf_counter()
            idx._upsert(ids, vecs, pays)
            dt = time.perf_counter() - t0
            seg_t, seg_n, total_t = seg_t + dt, seg_n + len(ids), total_t + dt
            done = start + len(ids)
            if done % a.segment == 0 or done == a.points:
                segments.append({"points": done, "segment_points_per_s": round(seg_n / seg_t)})
                print(json.dumps(segments[-1]), flush=True)
                seg_t, seg_n = 0.0, 0
        t0 = time.perf_counter()
        count = idx.count()
    flush_s = time.perf_counter() - t0
    row = {
        "points": a.points,
        "stored": count,
        "packed": not a.unpacked,
        "batch": a.batch,
        "writer_points_per_s": round(a.points / total_t),
        "writer_seconds": round(total_t, 1),
        "count_seconds": round(flush_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "segments": segments,
    }
    print(json.dumps({k: v for k, v in row.items() if k != "segments"}))
    if a.out:
        Path(a.out).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
