"""Whole spoken-query latency on a real index, per checkpoint (and the simple API's cost).

Builds (once per checkpoint) an embedded index of the bundled UC Merced mosaic with the
default tiling, then times, over the bundled query clips:

* ``encode``: decoding, trimming and encoding the clip (front end + audio encoder);
* ``search (objects)``: ``rsia_geo.search(clip, idx, model)`` with an open index and a loaded
  model, the whole pipeline (encode, cosine candidates in Qdrant, IA rescoring, payloads);
* ``search (paths)``: ``rsia_geo.search("q.wav", "index_folder")`` as the README shows it:
  the model comes from the process-wide cache, the index folder is opened per call;
* with a checkpoint that ships a text route, ``search (audio route only)`` too
  (``text_weight=0``): the text route's cost is the recogniser's decoding and the text encoder;
* ``stages``: the median per-stage milliseconds of ``search(...).attrs["timings"]`` and the
  whole query's p50 over every bundled clip (``--repeats`` rounds);
* with ``--whisper-window``, the checkpoint's Whisper front end served with that window policy;
* with ``--voices MANIFEST ...``, the whole spoken query over ``--voice-clips`` seeded clips of
  each voicing (held-out voices the recogniser is less sure of than the bundled clips), each
  clip searched twice in turn: as served (an unsure transcript decoded again with beam search)
  and with ``RSIA_RECOGNISER_RETRY=off``; p50 / p95 of both, and the share of queries whose
  beam-search transcript was kept; with several voicings, the same over all their queries.

Usage:
    python benchmarks/bench_query.py [--checkpoints CK ...] [--repeats 30] [--threads 2]
        [--whisper-window fixed|fitted] [--voices runs/v2_val*/manifest.jsonl]
        [--out runs/bench_query.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from eval_voices import set_whisper_window

from rsia_geo.pipeline import build_index, load_model, search
from rsia_geo.sample_data import sample_data_dir
from rsia_geo.weights import default_checkpoint


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _time(fn, repeats: int) -> dict:
    fn()  # warm-up
    ms = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ms.append(1000 * (time.perf_counter() - t))
    return {"p50_ms": round(statistics.median(ms), 1), "p95_ms": round(_p(ms, 0.95), 1)}


def _stages(model, idx, clips, repeats: int) -> dict:
    """Median per-stage milliseconds of spoken queries over all the clips."""
    for c in clips:  # warm-up
        search(str(c), idx, model, k=20)
    acc: dict[str, list[float]] = {}
    for _ in range(repeats):
        for c in clips:
            for key, ms in search(str(c), idx, model, k=20).attrs["timings"].items():
                acc.setdefault(key, []).append(ms)
    out = {k.removesuffix("_ms"): round(statistics.median(v), 1) for k, v in acc.items()}
    out["queries"] = len(acc.get("total_ms", []))
    return out


def _percentiles(ms: dict[str, list[float]]) -> dict[str, float]:
    """``{KEY}_p50_ms`` and ``{KEY}_p95_ms`` of each list of query times."""
    return {
        f"{k}_{q}_ms": round(statistics.median(v) if q == "p50" else _p(v, 0.95), 1)
        for k, v in ms.items()
        for q in ("p50", "p95")
    }


def _voices(model, idx, manifests: list[str], n: int) -> dict:
    """Whole-query latency over held-out voicings, retry as served vs off (interleaved)."""
    import os
    import random

    from rsia_geo.training.dataset import read_manifest

    out = {}
    pooled: dict[str, list[float]] = {"served": [], "off": []}
    own = os.environ.get("RSIA_RECOGNISER_RETRY")  # "served": the caller's setting, if any
    for m in manifests:
        rows = [r for r in read_manifest(m) if r.get("split", "val") == "val"]
        rows = random.Random(5).sample(rows, min(n, len(rows)))
        clips = [str(Path(m).parent / r["clip"]) for r in rows]
        search(clips[0], idx, model, k=20)  # warm-up
        ms: dict[str, list[float]] = {"served": [], "off": []}
        kept = 0
        for c in clips:
            for key in ("served", "off"):
                if key == "off":
                    os.environ["RSIA_RECOGNISER_RETRY"] = "off"
                t = time.perf_counter()
                hits = search(c, idx, model, k=20)
                ms[key].append(1000 * (time.perf_counter() - t))
                if own is None:
                    os.environ.pop("RSIA_RECOGNISER_RETRY", None)
                else:
                    os.environ["RSIA_RECOGNISER_RETRY"] = own
                kept += key == "served" and hits.attrs["query"].get("heard_beam", 1) > 1
        out[Path(m).parent.name] = {
            "queries": len(clips),
            "beam_kept": round(kept / len(clips), 3),
            **_percentiles(ms),
        }
        print(Path(m).parent.name, json.dumps(out[Path(m).parent.name]), flush=True)
        for k, v in ms.items():
            pooled[k] += v
    if len(manifests) > 1:  # every voicing's queries together: a steadier median
        out["all voicings"] = {"queries": len(pooled["served"]), **_percentiles(pooled)}
        print("all voicings", json.dumps(out["all voicings"]), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", nargs="+", default=[str(default_checkpoint())])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="runs/bench_query")
    p.add_argument("--whisper-window", choices=["fixed", "fitted"], default=None)
    p.add_argument("--voices", nargs="*", default=[], help="voiced manifests (held-out voices)")
    p.add_argument("--voice-clips", type=int, default=40, help="seeded clips per voicing")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    samples = sample_data_dir()
    clips = sorted((samples / "queries").glob("*.wav"))
    rows = []
    for ck in a.checkpoints:
        model = load_model(ck)
        if a.whisper_window:
            set_whisper_window(model, a.whisper_window)
        name = f"{model.config.model_id}-{model.config.version}"
        from rsia_geo.tiles import DEFAULT_SPEC

        tiling = f"{DEFAULT_SPEC.size:g}{DEFAULT_SPEC.units}-ov{DEFAULT_SPEC.overlap:g}"
        index = Path(a.workdir) / f"{name}-{tiling}"  # an index is bound to its tiling
        report = build_index(samples / "mosaic" / "item.json", index, model, progress=False)
        from rsia_geo.audio import load_audio
        from rsia_geo.index import TileIndex

        clip = load_audio(clips[0], trim=True)
        wave = torch.from_numpy(clip.samples)[None]
        row = {"checkpoint": ck, "model": name, "tiles": report.indexed + report.already_present}
        row["whisper_window"] = getattr(model.config.frontend, "whisper_window", None)
        row["encode"] = _time(lambda m=model, w=wave: m.encode_audio(w), a.repeats)
        with TileIndex(index, create=False) as idx:
            row["search (objects)"] = _time(
                lambda m=model, i=idx: search(str(clips[0]), i, m, k=20), a.repeats
            )
            from rsia_geo.weights import text_encoder

            if text_encoder(model) is not None:
                row["search (audio route only)"] = _time(
                    lambda m=model, i=idx: search(str(clips[0]), i, m, k=20, text_weight=0),
                    a.repeats,
                )
            row["stages"] = _stages(model, idx, clips, max(1, a.repeats // 3))
            if a.voices:
                row["voices"] = _voices(model, idx, a.voices, a.voice_clips)
        row["search (paths)"] = _time(
            lambda c=ck, i=index: search(str(clips[0]), str(i), c, k=20), a.repeats
        )
        ratio = row["search (paths)"]["p50_ms"] / row["search (objects)"]["p50_ms"]
        row["paths_over_objects"] = round(ratio, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"threads": a.threads, "repeats": a.repeats, "clip": clips[0].name, "rows": rows}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
