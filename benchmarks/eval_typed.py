"""Typed vs spoken queries on a split: the captions as typed text (spoken by the bundled
synthesis, as ``search(text=...)`` does) against the held-out voices' clips of the same captions.

With a text route (``--text FOLDER``, or ``text.safetensors`` beside the checkpoint), the
typed captions are also scored through it: alone (cosine), and fused with the spoken-by-synthesis
audio route as the search pipeline serves typed queries (weight x the share of known words).

Usage:
    python benchmarks/eval_typed.py CHECKPOINT runs/v2_val/manifest.jsonl [--text FOLDER]
        [--out typed.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from eval_voices import add_image_views_arg

from rsia_geo.models import load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.models.text import fused_scores, load_text_encoder
from rsia_geo.training.dataset import load_split
from rsia_geo.training.evaluate import (
    _metrics_both,
    candidates_only,
    encode_clips,
    encode_images,
    evaluate_scores,
)
from rsia_geo.training.synthesis import speak
from rsia_geo.weights import text_encoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("manifest")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--text", default=None, help="text route folder (default: beside it)")
    add_image_views_arg(p)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint).eval()
    rows = load_split(a.manifest, a.split)
    per: dict[str, list[dict]] = {}
    for r in rows:
        per.setdefault(r["image"], []).append(r)
    rows = [r for rs in per.values() for r in rs[:5]]
    v, _ = encode_images(model, rows, views=a.image_views)
    out = {}
    spoken = encode_clips(model, rows)
    typed = []
    with torch.no_grad():
        for r in rows:
            samples, voice = speak(r["caption"])
            typed.append(model.encode_audio(torch.from_numpy(samples)[None], normalize=False))
    for name, a_raw in (
        ("spoken (held-out voices)", spoken),
        (f"typed ({voice})", torch.cat(typed)),
    ):
        m = evaluate_scores(cosine_scores(v, a_raw).numpy(), ia_scores(v, a_raw).numpy())
        out[name] = m["cosine+ia@50"]
        print(name, json.dumps({k: round(x, 2) for k, x in out[name].items()}), flush=True)
    encoder = (
        load_text_encoder(a.text, image_sha256=model.checkpoint_meta.get("weights_sha256"))
        if a.text
        else text_encoder(model)
    )
    if encoder is not None:
        typed_a = torch.cat(typed)
        captions = [r["caption"] for r in rows]
        t = encoder.encode(captions)
        cos_t = (torch.nn.functional.normalize(v, dim=-1) @ t.T).numpy()
        w = np.array([encoder.weight_for(c) for c in captions])
        first, second = fused_scores(
            cosine_scores(v, typed_a).numpy(), ia_scores(v, typed_a).numpy(), cos_t, w[None, :]
        )
        for name, (i2a, a2i) in (
            ("typed, text route alone", (cos_t, cos_t)),
            (
                f"typed, fused (w={encoder.default_weight})",
                (candidates_only(first, second, 50), candidates_only(first.T, second.T, 50).T),
            ),
        ):
            out[name] = _metrics_both(i2a, a2i, 5)
            print(name, json.dumps({k: round(x, 2) for k, x in out[name].items()}), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
