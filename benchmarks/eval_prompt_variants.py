"""Shorter recogniser prompts: their word error rate, decoding time and retry share.

The text route's recogniser prompt (:func:`rsia_geo.training.transcripts.domain_prompt`, one
training caption per class, ~223 tokens) is prefilled by Whisper's decoder on every query
(CTranslate2 keeps no decoder state across calls). This measures whether a shorter prompt built
from the same training captions hears as well for less time:

* ``none``: no prompt;
* ``full``: the served prompt (the most frequent caption of each class);
* ``short``: the shortest caption of each class among those said at least twice;
* ``keywords``: the three most distinctive words of each class (tf-idf over the classes).

Each clip is encoded first (as search does, so the decoder reuses the encoder pass) and then
recognised as search recognises it (greedy, an unsure clip decoded again with beam search);
``p50_ms`` / ``mean_ms`` time the ``recognise`` call. Choose on training clips
(``--split train``), not on val.

Usage:
    python benchmarks/eval_prompt_variants.py runs/v2_train/manifest.jsonl --split train \\
        --captions runs/captions_train/manifest.jsonl --clips 300 --out runs/prompt_variants.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
from eval_recogniser_prompt import sampled_clips, word_error_rate

_STOP = {
    "a",
    "an",
    "the",
    "of",
    "is",
    "are",
    "there",
    "and",
    "with",
    "in",
    "on",
    "to",
    "some",
    "many",
    "lots",
    "lot",
    "it",
    "this",
    "its",
    "by",
    "at",
    "next",
    "two",
    "three",
    "four",
    "five",
    "several",
    "near",
    "other",
    "each",
    "which",
    "be",
    "has",
    "have",
    "as",
    "or",
    "beside",
    "around",
    "side",
    "both",
    "for",
    "from",
}


def prompt_variants(captions: str) -> dict[str, str]:
    """The prompts compared, all built from the training captions of ``captions``."""
    from rsia_geo.training.dataset import read_manifest
    from rsia_geo.training.transcripts import domain_prompt

    rows = read_manifest(captions)
    per: dict[str, Counter[str]] = {}
    for r in rows:
        if r.get("split") == "train":
            text = " ".join(r["caption"].replace(" .", ".").split())
            per.setdefault(r["label"], Counter())[text] += 1
    short = " ".join(
        min([t for t, c in cnt.items() if c >= 2] or list(cnt), key=lambda t: len(t.split()))
        for _, cnt in sorted(per.items())
    )
    words = {
        label: Counter(
            w
            for t, c in cnt.items()
            for w in re.findall(r"[a-z]+", t.lower())
            for _ in range(c)
            if w not in _STOP
        )
        for label, cnt in per.items()
    }
    df = Counter(w for c in words.values() for w in c)
    keywords = []
    for label in sorted(words):
        c = words[label]
        keywords.append(" ".join(sorted(c, key=lambda w: -c[w] * math.log(len(words) / df[w]))[:3]))
    return {
        "none": "",
        "full": domain_prompt(rows),
        "short": short,
        "keywords": ", ".join(keywords) + ".",
    }


def main() -> None:
    from rsia_geo.models.frontend import AudioFrontendConfig
    from rsia_geo.models.whisper import get_whisper

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", help="a voiced manifest (e.g. the training voicing)")
    p.add_argument("--captions", required=True, help="captions manifest the prompts come from")
    p.add_argument("--split", default="train")
    p.add_argument("--clips", type=int, default=300, help="seeded sample of clips")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON report")
    a = p.parse_args()
    prompts = prompt_variants(a.captions)
    enc = get_whisper(threads=a.threads)
    window = AudioFrontendConfig.whisper().max_frames
    rows, waves = sampled_clips(a.manifest, a.split, a.clips, seed=7)
    report: dict = {"manifest": a.manifest, "clips": len(rows), "prompts": {}}
    for key, prompt in prompts.items():
        enc.recognise([waves[0]], prompt=prompt)  # tokenizer and prompt ready
        ms, errors, retried = [], [], []
        for r, w in zip(rows, waves, strict=True):
            enc.encode([w], max_frames=window)  # as search: the decoder reuses this pass
            t = time.perf_counter()
            heard = enc.recognise([w], window=window, prompt=prompt)[0]
            ms.append(1000 * (time.perf_counter() - t))
            errors.append(word_error_rate(r["caption"], heard.text))
            retried.append(heard.beam > 1)
        report["prompts"][key] = {
            "prompt": prompt,
            "tokens": len(enc._prompt(prompt)[1]),
            "wer": round(float(np.mean(errors)), 4),
            "p50_ms": round(float(np.median(ms)), 1),
            "mean_ms": round(float(np.mean(ms)), 1),
            "beam_kept": round(float(np.mean(retried)), 3),
        }
        print(key, {k: v for k, v in report["prompts"][key].items() if k != "prompt"}, flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
