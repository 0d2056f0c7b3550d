"""Cost of one hit per place (``group_places``) on a real query's candidates.

Builds (once) an embedded index of the bundled UC Merced mosaic with the default tiling (half
overlap, two levels), takes the candidates a grouped ``search(..., k=20)`` of the first bundled
query clip scores (``GROUP_CANDIDATES * k``, fetched ungrouped with ``group=False``, in the
search's order), and times grouping them.

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

from rsia_geo.pipeline import GROUP_CANDIDATES, build_index, group_places, load_model, search
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
    hits = search(str(clip), a.workdir, model, k=GROUP_CANDIDATES * a.k, group=False)
    footprints = list(hits.geometry)
    order = np.arange(len(footprints))  # the search's order, best first
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
