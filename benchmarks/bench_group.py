"""Cost of one hit per place (``group_places``) on a real query's candidates.

Builds (once) an embedded index of the bundled UC Merced mosaic with the default tiling (half
overlap, two levels), takes the cosine candidates of the first bundled query clip as
``search(..., k=20)`` scores them (``GROUP_CANDIDATES * k``), and times grouping them.

Usage:
    python benchmarks/bench_group.py [--k 20] [--repeats 50] [--out runs/bench_group.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rsia_geo.index import TileIndex
from rsia_geo.pipeline import (
    GROUP_CANDIDATES,
    _candidates,
    _make_query,
    build_index,
    group_places,
    load_model,
)
from rsia_geo.sample_data import sample_data_dir
from rsia_geo.weights import default_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--workdir", default="runs/bench_group")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(2)
    samples = sample_data_dir()
    clip = sorted((samples / "queries").glob("*.wav"))[0]
    model = load_model(default_checkpoint())
    build_index(samples / "mosaic" / "item.json", a.workdir, model, progress=False)
    n = GROUP_CANDIDATES * a.k
    with TileIndex(a.workdir, create=False) as idx:
        q = _make_query(
            model, idx, {}, audio=str(clip), text=None, sample_rate=None, example=None,
            relevant=None, not_relevant=None, refine_method="rocchio", group_overlap=0.5,
            transcribe=False, text_weight=None,
        )  # fmt: skip
        cands, _ = _candidates(idx, q.vector, None, n, True, page=n, need_footprints=True)
    footprints = [c.footprint for c in cands]
    order = np.arange(len(footprints))  # the cosine order
    groups = group_places(footprints, order, a.k)
    ms = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        group_places(footprints, order, a.k)
        ms.append(1000 * (time.perf_counter() - t))
    row = {
        "candidates": len(footprints),
        "groups": len(groups),
        "group_sizes": [len(g) for g in groups],
        "p50_ms": round(statistics.median(ms), 2),
    }
    print(json.dumps(row))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
