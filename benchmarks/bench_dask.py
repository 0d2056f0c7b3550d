"""Ingest in one process against ingest on Dask workers, on the same catalog and machine.

Indexes one catalog (default: the bundled UCM mosaic, or ``--catalog``) with the shipped
starter and the default tiling, from scratch each time, as:

* ``one process``: ``build_index`` with its reader threads and torch using every core;
* ``dask 1x2``: one Dask worker process with 2 threads;
* ``dask 2x1``: two Dask worker processes with 1 thread each.

Reports tiles per second end to end (tiling, reads, encoding, storing), the ratio to the
one-process rate (the target: at least 0.9 on the same cores), and the writer's share (the
time this process spent storing, which bounds how many workers one writer can feed).

Usage (about 5 minutes on 2 cores):
    python benchmarks/bench_dask.py --out docs/bench_dask.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path


def _run(name: str, catalog: Path, work: Path, cluster=None) -> dict:
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import build_index

    path = work / f"index_{name.replace(' ', '_')}"
    shutil.rmtree(path, ignore_errors=True)
    stored = {"seconds": 0.0}
    with TileIndex(path) as idx:
        add = idx.add

        def timed_add(tiles, vecs):  # the writer's time, in this process
            t = time.perf_counter()
            add(tiles, vecs)
            stored["seconds"] += time.perf_counter() - t

        idx.add = timed_add  # type: ignore[method-assign]
        t0 = time.perf_counter()
        report = build_index(catalog, idx, progress=False, cluster=cluster)
        seconds = time.perf_counter() - t0
        count = idx.count()
    return {
        "run": name,
        "tiles": count,
        "seconds": round(seconds, 1),
        "tiles_per_s": round(report.indexed / seconds, 1),
        "writer_seconds": round(stored["seconds"], 2),
        "writer_share": round(stored["seconds"] / seconds, 3),
    }


def main() -> None:
    import distributed

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", default=None, help="catalog.json (default: the bundled mosaic)")
    p.add_argument("--workdir", default="runs/bench_dask")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if a.catalog is None:
        from rsia_geo import build_catalog, open_stac
        from rsia_geo.sample_data import sample_data_dir

        cat_dir = work / "catalog"
        if not (cat_dir / "catalog.json").exists():
            item = open_stac(sample_data_dir() / "mosaic" / "item.json")
            build_catalog([], cat_dir, items=[item])
        catalog = cat_dir / "catalog.json"
    else:
        catalog = Path(a.catalog)
    from rsia_geo.pipeline import load_model

    load_model(None)  # loaded once per process, before any clock runs (workers: below)
    rows = [_run("one process", catalog, work)]
    print(json.dumps(rows[-1]), flush=True)
    for workers, threads in ((1, 2), (2, 1)):
        with (
            distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address=None,
            ) as local,
            distributed.Client(local) as client,
        ):
            client.run(lambda: __import__("rsia_geo.pipeline").pipeline.load_model(None))  # warm
            rows.append(_run(f"dask {workers}x{threads}", catalog, work, cluster=client))
        rows[-1]["ratio_to_one_process"] = round(
            rows[-1]["tiles_per_s"] / rows[0]["tiles_per_s"], 3
        )
        print(json.dumps(rows[-1]), flush=True)
    out = {"cores": os.cpu_count(), "catalog": str(catalog), "rows": rows}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
