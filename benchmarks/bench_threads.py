"""Threads of a spoken query: torch and the Whisper encoder, and the recogniser's decoding.

Whole spoken queries (``rsia_geo.search(clip, index, model)``) over seeded clips of held-out
voicings, in one process, four thread settings swapped query by query (so the machine's
drift touches all four alike):

* ``one thread`` -- torch and Whisper (encoding and decoding) on one thread: what every query
  ran on before session 23, because loading the text route's CTranslate2 sentence encoder set
  the OpenMP thread count torch reads (and a Whisper loaded after it took that count);
* ``served`` -- torch and the Whisper encoder on ``--threads``, decoding on the recogniser's own
  1-thread instance (``WhisperEncoder(decode_threads=1)``, the default), in a second thread
  while the audio head embeds the query;
* ``decode after the head`` -- the same, the decoding started once the head is done;
* ``decode on all threads`` -- after the head, on the encoder's instance.

Each setting's p50 / p95 / mean, median stage timings, and whether its transcripts equal the
first setting's.

Usage:
    python benchmarks/bench_threads.py INDEX_FOLDER runs/v2_val/manifest.jsonl \
        runs/v2_val_*/manifest.jsonl [--clips 40] [--threads 2] [--out runs/bench_threads.json]

``INDEX_FOLDER``: an index built with the checkpoint (``benchmarks/bench_query.py`` leaves one
under ``runs/bench_query/``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch

import rsia_geo.pipeline as pipeline
from rsia_geo.index import TileIndex
from rsia_geo.models.whisper import get_whisper
from rsia_geo.pipeline import load_model, search
from rsia_geo.training.dataset import read_manifest
from rsia_geo.weights import default_checkpoint


class _AfterTheHead:
    """An executor that runs what is submitted at once: the decoding after the head."""

    def submit(self, fn, *args):
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)
        return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("index")
    p.add_argument("manifests", nargs="+", help="voiced manifests (held-out voices)")
    p.add_argument("--checkpoint", default=str(default_checkpoint()))
    p.add_argument("--clips", type=int, default=40, help="seeded clips per voicing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.checkpoint)
    clips = []
    for m in a.manifests:
        rows = [r for r in read_manifest(m) if r.get("split", "val") == "val"]
        picked = random.Random(5).sample(rows, min(a.clips, len(rows)))
        clips += [str(Path(m).parent / r["clip"]) for r in picked]
    # the front end takes the Whisper of torch's thread count (rsia_geo.models.frontend)
    single, many = get_whisper(threads=1), get_whisper(threads=a.threads)
    own = many._decoder  # the recogniser's 1-thread instance
    pool = pipeline._hearing_pool()
    settings = {  # torch threads, the decoding instance, who runs the decoding
        "one thread": (1, own, _AfterTheHead()),
        "served": (a.threads, own, pool),
        "decode after the head": (a.threads, own, _AfterTheHead()),
        "decode on all threads": (a.threads, many._model, _AfterTheHead()),
    }
    with TileIndex(a.index, create=False) as idx:

        def query(name: str, clip: str):
            threads, decoder, runner = settings[name]
            torch.set_num_threads(threads)
            many._decoder = decoder
            pipeline._hearing_pool = lambda r=runner: r
            t = time.perf_counter()
            hits = search(clip, idx, model, k=20)
            return 1000 * (time.perf_counter() - t), hits

        for name in settings:
            query(name, clips[0])  # warm-up (and the 1-thread Whisper's load)
        ms: dict[str, list[float]] = {k: [] for k in settings}
        stages: dict[str, dict[str, list[float]]] = {k: {} for k in settings}
        heard: dict[str, list[str | None]] = {k: [] for k in settings}
        names = list(settings)
        for i, clip in enumerate(clips):
            for name in names[i % 4 :] + names[: i % 4]:  # each setting first in turn
                t, hits = query(name, clip)
                ms[name].append(t)
                heard[name].append(hits.attrs["query"].get("heard"))
                for k, v in hits.attrs["timings"].items():
                    stages[name].setdefault(k, []).append(v)
    many._decoder = own
    torch.set_num_threads(a.threads)
    assert single._decoder is single._model  # one thread: one instance
    report = {
        "checkpoint": a.checkpoint,
        "queries": len(clips),
        "threads": a.threads,
        **{
            name: {
                "p50_ms": round(float(np.median(v)), 1),
                "p95_ms": round(float(np.percentile(v, 95)), 1),
                "mean_ms": round(float(np.mean(v)), 1),
                "stages_p50_ms": {
                    k: round(float(np.median(x)), 1) for k, x in stages[name].items()
                },
                "same_transcripts": sum(
                    x == y for x, y in zip(heard[name], heard[names[0]], strict=True)
                ),
            }
            for name, v in ms.items()
        },
    }
    print(json.dumps(report, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
