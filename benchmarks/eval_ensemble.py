"""Whole models as an ensemble: each one's served fused scores averaged, on the val voicings.

Each member is a complete checkpoint (image side, voice side, and its text route beside it).
For every clip, each member scores the val images as search serves them (cosine candidates
of ``unit(audio) + w unit(text)``, ranked by ``IA + w cos(text)``,
:func:`rsia_geo.models.text.fused_scores`); the ensemble averages both stages' scores over
the members and adds search's feedback from the first places on the members' unit image
vectors side by side (what an index storing every member's vector would hold). One member
reproduces ``eval_text_route.py``'s served numbers (``fused`` at weight 1.0).

Each member's clip embeddings and transcripts are cached in its own folder
(``CHECKPOINT:CACHE``; the transcripts depend on the recogniser prompt only, so hard links to
another cache's ``heard_*`` files are reused).

Usage:
    python benchmarks/eval_ensemble.py CK1:CACHE1 CK2:CACHE2 \
        --manifests runs/v2_val/manifest.jsonl runs/v2_val_*/manifest.jsonl \
        --conditions snr10 snr5 reverb --out runs/ensemble.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from eval_text_route import _a2i, _audio, _pipeline, heard_for, route_scores
from eval_voices import _rows

from rsia_geo.models import image_side_sha256, load_checkpoint
from rsia_geo.models.text import fused_scores, load_text_encoder
from rsia_geo.pipeline import DEFAULT_FEEDBACK
from rsia_geo.training.augment import CONDITIONS
from rsia_geo.training.evaluate import encode_images


def _member_scores(member, rows, manifest: str, condition: str) -> tuple[np.ndarray, np.ndarray]:
    """One member's served ``(first, second)`` stage scores, images x clips."""
    model, encoder, v, cache = member
    heard = heard_for(model, encoder, rows, manifest, condition, cache)
    texts = [heard[r["clip"]]["text"] for r in rows]
    cover = np.array([encoder.weight_for(t, 1.0) for t in texts])
    a = _audio(model, rows, cache, Path(manifest).parent.name, condition)
    cos_a, ia, cos_t = route_scores(v, a, encoder.encode(texts, heard=True))
    return fused_scores(cos_a, ia, cos_t, cover[None, :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("members", nargs="+", help="CHECKPOINT:CACHE_FOLDER, each with a text route")
    p.add_argument("--manifests", nargs="+", required=True, help="voicings with transcripts")
    p.add_argument("--conditions", nargs="*", default=[], choices=CONDITIONS[1:])
    p.add_argument("--image-views", default="d8", choices=["single", "d8"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON report")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    first_rows = _rows(a.manifests[0], "val", 5)
    members = []
    for spec in a.members:
        checkpoint, _, cache = spec.rpartition(":")
        if not checkpoint:
            raise SystemExit(f"{spec!r}: give CHECKPOINT:CACHE_FOLDER")
        model = load_checkpoint(checkpoint)
        encoder = load_text_encoder(checkpoint, image_sha256=image_side_sha256(model))
        if encoder is None:
            raise SystemExit(f"{checkpoint} has no text route beside it")
        v, _ = encode_images(model, first_rows, views=a.image_views)
        members.append((model, encoder, v, Path(cache)))
    units = np.concatenate(
        [torch.nn.functional.normalize(m[2].double(), dim=-1).numpy() for m in members], axis=1
    ) / np.sqrt(len(members))
    jobs = [(m, "clean") for m in a.manifests] + [(a.manifests[0], c) for c in a.conditions]
    report: dict = {
        "members": a.members,
        "feedback": DEFAULT_FEEDBACK,
        "voicings": {},
        "conditions": {},
    }
    for manifest, condition in jobs:
        rows = _rows(manifest, "val", 5)
        name = Path(manifest).parent.name
        scores = [_member_scores(m, rows, manifest, condition) for m in members]
        first = np.mean([s[0] for s in scores], axis=0)
        second = np.mean([s[1] for s in scores], axis=0)
        r = _pipeline(first, second, 5, 50, (units, DEFAULT_FEEDBACK))
        r["a2i"] = _a2i(r)
        where = report["voicings"] if condition == "clean" else report["conditions"]
        where[name if condition == "clean" else condition] = r
        print(name, condition, f"mR {r['mR']:.2f} voice->image {r['a2i']:.2f}", flush=True)
    values = [r["mR"] for r in report["voicings"].values()]
    report["summary"] = {
        "mean": float(np.mean(values)),
        "spread": float(max(values) - min(values)),
        "a2i": float(np.mean([r["a2i"] for r in report["voicings"].values()])),
    }
    print(json.dumps(report["summary"], indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
