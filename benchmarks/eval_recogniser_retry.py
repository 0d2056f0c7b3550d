"""Word error rate and decoding time of the recogniser: greedy, beam search, and the retry.

Search decodes a spoken query greedily and, when the recogniser is unsure (confidence under
``RETRY_BELOW``), again with beam search, keeping the likelier transcript
(:meth:`rsia_geo.models.whisper.WhisperEncoder.recognise`). This decodes a seeded sample of
clips of each manifest both ways, with the served prompt and window (``recognise`` with
``retry_beam=0``, and with ``beam_size=3``), and then reports, for each threshold of a sweep,
what the retry would give: the share of clips decoded again, the word error rate, and the
decoding time (p50 / p90 of ``recognise`` calls, the encoder pass included). The threshold was
picked on the training voicing (``--split train``); the held-out voicings show what it does
to voices the model never heard.

``--queries benchmarks/data/analyst_queries.json`` decodes the analyst queries (words UCM's
captions rarely use) spoken by each manifest's voices instead, as
``eval_recogniser_prompt.py --queries`` does: does beam search after the captions' prompt
pull other words toward the captions'?

Usage:
    python benchmarks/eval_recogniser_retry.py runs/v2_train/manifest.jsonl --split train \\
        --clips 300 --out docs/eval_recogniser_retry_train.json
    python benchmarks/eval_recogniser_retry.py runs/v2_val/manifest.jsonl \\
        runs/v2_val_*/manifest.jsonl --clips 80 --out docs/eval_recogniser_retry_val.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from eval_recogniser_prompt import sampled_clips, word_error_rate

THRESHOLDS = [0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 1.0]


def _decode(enc, wave, window: int, prompt: str, beam: int) -> tuple[object, float]:
    t = time.perf_counter()
    heard = enc.recognise([wave], window=window, prompt=prompt, beam_size=beam, retry_beam=0)[0]
    return heard, 1000 * (time.perf_counter() - t)


def sweep(clips: list[dict], beam: int) -> dict[str, dict[str, float]]:
    """What the retry gives at each threshold, from each clip's greedy and beam decodings."""
    out = {}
    for t in THRESHOLDS:
        wer, ms, retried = [], [], 0
        for c in clips:
            if c["greedy"]["confidence"] < t:
                retried += 1
                better = (
                    c["beam"]
                    if c["beam"]["confidence"] > c["greedy"]["confidence"]
                    else c["greedy"]
                )
                wer.append(better["wer"])
                ms.append(c["greedy"]["ms"] + c["beam"]["ms"])
            else:
                wer.append(c["greedy"]["wer"])
                ms.append(c["greedy"]["ms"])
        out[f"{t:g}"] = {
            "retried": round(retried / len(clips), 3),
            "wer": round(float(np.mean(wer)), 4),
            "ms_p50": round(float(np.percentile(ms, 50)), 1),
            "ms_p90": round(float(np.percentile(ms, 90)), 1),
        }
    out["greedy"] = {"wer": round(float(np.mean([c["greedy"]["wer"] for c in clips])), 4)}
    out[f"beam{beam}"] = {"wer": round(float(np.mean([c["beam"]["wer"] for c in clips])), 4)}
    return out


def main() -> None:
    from rsia_geo.models.frontend import AudioFrontendConfig
    from rsia_geo.models.whisper import RETRY_BEAM, get_whisper
    from rsia_geo.weights import default_checkpoint

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifests", nargs="+", help="voiced manifests (one voicing each)")
    p.add_argument("--split", default="val")
    p.add_argument("--clips", type=int, default=80, help="clips per voicing (seeded sample)")
    p.add_argument(
        "--checkpoint", default=str(default_checkpoint()), help="its text route's prompt"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--queries", default=None, help="JSON of analyst queries to voice instead")
    p.add_argument("--out", default=None, help="JSON report")
    a = p.parse_args()
    from rsia_geo.models.text import recogniser_prompt

    prompt = recogniser_prompt(a.checkpoint)
    enc = get_whisper(threads=a.threads)
    window = AudioFrontendConfig.whisper().max_frames
    report: dict = {"split": a.split, "clips": a.clips, "beam": RETRY_BEAM, "voicings": {}}
    report["queries"] = a.queries
    for m in a.manifests:
        rows, waves = sampled_clips(m, a.split, a.clips, seed=11, queries=a.queries)
        clips = []
        for r, wave in zip(rows, waves, strict=True):
            c: dict = {}
            for key, beam in (("greedy", 1), ("beam", RETRY_BEAM)):
                heard, ms = _decode(enc, wave, window, prompt, beam)
                c[key] = {
                    "confidence": heard.confidence,
                    "wer": word_error_rate(r["caption"], heard.text),
                    "ms": ms,
                }
            clips.append(c)
        name = Path(m).parent.name
        report["voicings"][name] = sweep(clips, RETRY_BEAM)
        print(name, json.dumps(report["voicings"][name]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
