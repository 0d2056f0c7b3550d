"""Load test of ``rsia-geo serve`` on loopback: N concurrent clients for a fixed time.

Starts the service (a subprocess, loopback only) over an index of the sample data built with
the shipped checkpoint, then runs ``--clients`` threads that POST spoken queries (the demo's
WAV files, with and without a bbox) back to back for ``--seconds``. Reports requests, errors,
throughput and latency percentiles. Bounded: it stops by itself after ``--seconds``.

Usage:
    python benchmarks/bench_service.py --clients 4 --seconds 30 --out runs/bench_service.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
from qgis_rsia import client

from rsia_geo import TileSpec, build_catalog, open_stac
from rsia_geo.pipeline import build_index
from rsia_geo.sample_data import sample_data_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--workdir", default="runs/bench_service")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    work = Path(a.workdir)
    samples = sample_data_dir()
    if not (work / "index").exists():
        cat = build_catalog(
            [samples / "aerial"],
            work / "catalog",
            items=[open_stac(samples / "mosaic" / "item.json")],
            default_datetime=dt.datetime(2020, 1, 1),
        )
        build_index(
            cat, work / "index", spec=TileSpec(size=78.0, units="m", out_size=256), progress=False
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rsia_geo",
            "serve",
            "--location",
            str(work / "index"),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        queries = sorted((samples / "queries").glob("*.wav"))
        cells = json.loads((samples / "mosaic" / "item.json").read_text())["bbox"]
        minx, miny, maxx, maxy = cells
        west = (minx, miny, (minx + maxx) / 2, maxy)
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop = time.perf_counter() + a.seconds

        def worker(i: int) -> None:
            n = 0
            while time.perf_counter() < stop:
                q = str(queries[(i + n) % len(queries)])
                t = time.perf_counter()
                try:
                    client.search(url, q, bbox=west if n % 2 else None, k=10, transcribe=False)
                    with lock:
                        lat.append(1000 * (time.perf_counter() - t))
                except client.ServiceError as exc:
                    with lock:
                        errors.append(str(exc))
                n += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    row = {
        "clients": a.clients,
        "seconds": round(wall, 1),
        "requests": len(lat),
        "errors": len(errors),
        "requests_per_s": round(len(lat) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "first_errors": errors[:3],
    }
    print(json.dumps(row))
    if a.out:
        Path(a.out).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
