"""The text route's sentence encoder: CTranslate2 against transformers, per query and in batches.

Both backends of :class:`rsia_geo.models.sentence.SentenceEncoder` run the same packaged
all-MiniLM-L6-v2 in float32. Over the sentences of a transcripts file (what the recogniser heard
of held-out clips, e.g. ``eval_text_route.py``'s ``heard_*.json`` cache, or a manifest's
captions), this measures:

* ``load_s``: constructing the encoder (CTranslate2 converts the folder at load);
* ``query_p50_ms`` / ``query_p95_ms``: one sentence at a time, as a spoken query embeds it;
* ``batch_per_s``: sentences a second in batches of 128, as text-route training embeds them;
* ``text_route_p50_ms``: the shipped checkpoint's whole text route on one heard sentence
  (``encoder.encode([s], heard=True)``, the search stage ``encode_text``);
* ``max_abs_diff``: the largest difference between the two backends' unit vectors.

Usage:
    python benchmarks/bench_sentence.py SENTENCES [--sentences 300] [--threads 2] [--out FILE]

``SENTENCES``: a JSON object of ``{clip: {"text": ...}}`` (a ``heard_*.json``), a JSON list of
strings, or a JSONL manifest with ``caption`` fields.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rsia_geo.models.sentence import SentenceEncoder
from rsia_geo.models.text import load_text_encoder
from rsia_geo.weights import default_checkpoint


def _sentences(path: Path, n: int) -> list[str]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        out = [r["caption"] for r in rows if r.get("caption")]
    else:
        data = json.loads(text)
        out = [v["text"] for v in data.values()] if isinstance(data, dict) else list(data)
    return [s for s in out if s][:n]


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _per_call(fn, sentences: list[str]) -> tuple[float, float]:
    for s in sentences[:10]:  # warm-up
        fn(s)
    ms = []
    for s in sentences:
        t = time.perf_counter()
        fn(s)
        ms.append(1000 * (time.perf_counter() - t))
    return round(statistics.median(ms), 2), round(_p(ms, 0.95), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sentences", type=Path)
    p.add_argument("--sentences", dest="n", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sentences = _sentences(args.sentences, args.n)
    checkpoint = default_checkpoint()
    rows, vectors = [], {}
    for backend in ("transformers", "ctranslate2"):
        t = time.perf_counter()
        enc = SentenceEncoder(backend=backend)
        load_s = time.perf_counter() - t
        vectors[backend] = enc.embed(sentences).numpy()
        q50, q95 = _per_call(lambda s, enc=enc: enc.embed([s]), sentences)
        t = time.perf_counter()
        for _ in range(3):
            enc.embed(sentences, batch_size=128)
        per_s = 3 * len(sentences) / (time.perf_counter() - t)
        route = load_text_encoder(checkpoint, sentence=enc)  # the shipped route, this backend
        assert route is not None
        r50, _ = _per_call(lambda s, route=route: route.encode([s], heard=True), sentences)
        rows.append({
            "backend": backend, "load_s": round(load_s, 2), "query_p50_ms": q50,
            "query_p95_ms": q95, "batch_per_s": round(per_s, 1), "text_route_p50_ms": r50,
        })  # fmt: skip
        print(json.dumps(rows[-1]))
    diff = float(np.abs(vectors["transformers"] - vectors["ctranslate2"]).max())
    report = {"sentences": len(sentences), "threads": args.threads, "max_abs_diff": diff}
    report["rows"] = rows
    print(json.dumps({"max_abs_diff": diff}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
