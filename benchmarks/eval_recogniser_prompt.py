"""Word error rate and decoding time of the speech recogniser with and without a domain prompt.

Whisper reads a prompt as text said before the clip (``initial_prompt``). The text route
ships one made of its training captions, one per class
(:func:`rsia_geo.training.transcripts.domain_prompt`); this measures what it does to the
transcripts of held-out voices: the same clips (a seeded sample of each voicing, trimmed as
search trims them), decoded one by one on the served window, with each prompt.

Usage:
    python benchmarks/eval_recogniser_prompt.py runs/v2_val_*/manifest.jsonl \\
        --prompt train:runs/captions_train/manifest.jsonl --clips 100 \
        --out docs/eval_recogniser_prompt.json

The word error rate is against the caption the clip voices (lower case, punctuation dropped);
``ms_per_clip`` is the whole ``recognise`` call (encoder pass included) on this machine.
Clips are decoded as search decodes them: since session 15 a clip heard unsure is decoded
again with beam search (``recognise``'s retry); the session-12 numbers in the docs were greedy.

``--queries benchmarks/data/analyst_queries.json`` measures words outside the captions
instead: each analyst query (63, in words UCM's captions rarely use) is spoken by the voices
of each manifest in turn (the same held-out speakers, speed and pitch) and decoded with each
prompt, so the prompt's cost where an analyst's words differ from its own shows.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import numpy as np


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length (lower case, letters and digits)."""
    ref = re.findall(r"[a-z0-9]+", reference.lower())
    hyp = re.findall(r"[a-z0-9]+", hypothesis.lower())
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        nxt = [i]
        for j, h in enumerate(hyp, 1):
            nxt.append(min(row[j] + 1, nxt[j - 1] + 1, row[j - 1] + (r != h)))
        row = nxt
    return row[-1] / max(1, len(ref))


def _prompts(spec: list[str]) -> dict[str, str]:
    """No prompt, and each of ``none``, ``train:MANIFEST`` or a text (as eval_text_route reads
    ``--prompt``)."""
    from eval_text_route import _prompt_arg  # benchmarks/ is on sys.path

    out = {"none": ""}
    for s in spec:
        if s != "none":
            out["train-captions" if s.startswith("train:") else f"text{len(out)}"] = _prompt_arg(s)
    return out


def _voiced_queries(path: str, voices: list[dict]) -> tuple[list[dict], list[np.ndarray]]:
    """Each query of ``path`` spoken by the manifest rows' voices in turn (as ``caption``)."""
    import tempfile

    from rsia_geo.audio import load_audio
    from rsia_geo.training.synthesis import Voice, synthesize

    queries = [q for group in json.loads(Path(path).read_text())["queries"].values() for q in group]
    rows, waves = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(queries):
            r = voices[i % len(voices)]
            voice = Voice(r["engine"], r["name"], float(r["speed"]), float(r["pitch"]))
            clip = synthesize(text, voice, Path(tmp) / f"{i}.wav")
            rows.append({"caption": text})
            waves.append(load_audio(clip, trim=True).samples)
    return rows, waves


def sampled_clips(
    manifest: str, split: str, n: int, *, seed: int, queries: str | None = None
) -> tuple[list[dict], list[np.ndarray]]:
    """A seeded sample of ``n`` clips of a voicing (rows and trimmed waves, as search trims
    them), or with ``queries`` the analyst queries spoken by the sampled rows' voices."""
    from rsia_geo.audio import load_audio
    from rsia_geo.training.dataset import read_manifest

    rows = [r for r in read_manifest(manifest) if r.get("split", split) == split]
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    if queries:
        return _voiced_queries(queries, rows)
    root = Path(manifest).parent
    return rows, [load_audio(root / r["clip"], trim=True).samples for r in rows]


def main() -> None:
    from rsia_geo.models.frontend import AudioFrontendConfig
    from rsia_geo.models.whisper import get_whisper

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifests", nargs="+", help="voiced manifests (one voicing each)")
    p.add_argument("--prompt", nargs="+", default=["none"], help="none, train:MANIFEST or text")
    p.add_argument("--clips", type=int, default=100, help="clips per voicing (seeded sample)")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--queries", default=None, help="JSON of analyst queries to voice instead")
    p.add_argument("--out", default=None, help="JSON report")
    a = p.parse_args()
    prompts = _prompts(a.prompt)
    enc = get_whisper(threads=a.threads)
    window = AudioFrontendConfig.whisper().max_frames
    report: dict = {"prompts": prompts, "clips": a.clips, "voicings": {}}
    for m in a.manifests:
        rows, waves = sampled_clips(m, a.split, a.clips, seed=7, queries=a.queries)
        name = Path(m).parent.name
        report["voicings"][name] = {}
        for key, prompt in prompts.items():
            enc.recognise([waves[0]], prompt=prompt)  # tokenizer and prompt ready
            start, heard = time.perf_counter(), []
            for w in waves:  # the speech front end's window, as search decodes a query
                heard.append(enc.recognise([w], window=window, prompt=prompt)[0])
            ms = (time.perf_counter() - start) * 1000 / len(waves)
            pairs = zip(rows, heard, strict=True)
            errors = [word_error_rate(r["caption"], h.text) for r, h in pairs]
            wer = float(np.mean(errors))
            report["voicings"][name][key] = {"wer": round(wer, 4), "ms_per_clip": round(ms, 1)}
            print(f"{name:28s} {key:15s} WER {wer:.3f}  {ms:.0f} ms/clip", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
