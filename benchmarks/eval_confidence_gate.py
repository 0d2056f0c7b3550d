"""A confidence gate on the text route for spoken queries: trust a transcript the recogniser
was unsure of less.

The served fusion weights the text route by ``w = route weight x word coverage``. A misheard
transcript (a voice the recogniser struggles with, noise) is real but wrong words, which the
coverage does not catch; the recogniser's own confidence does (mean 0.41 on espeak-ng
``en-029``, 0.8 on flite). The gate ``w x min(1, confidence / c0)`` leaves confident
transcripts alone and scales down the others; ``c0 = 0`` is the served rule, ``c0 = 1`` the
full confidence weighting measured worse in session 8.

Reads the clips' audio embeddings and transcripts that ``eval_text_route.py`` cached (run it
first with the same ``--cache``), so the gate is scored on the very same queries.

Usage:
    python benchmarks/eval_confidence_gate.py CHECKPOINT --cache runs/text_eval_s11 \\
        --manifests runs/v2_val/manifest.jsonl runs/v2_val_*/manifest.jsonl \\
        --conditions snr20 snr10 snr5 reverb bandlimit --gates 0 0.3 0.4 0.5 0.6 1 \\
        --out docs/eval_confidence_gate.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from eval_text_route import _audio, _heard_under, _pipeline
from eval_voices import _rows

from rsia_geo.models import image_side_sha256, load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.models.text import fused_scores, load_text_encoder
from rsia_geo.training.evaluate import encode_images
from rsia_geo.training.transcripts import read_transcripts, transcripts_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--cache", required=True, help="eval_text_route.py's --cache folder")
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--conditions", nargs="*", default=[])
    p.add_argument("--gates", nargs="+", type=float, default=[0.0, 0.3, 0.4, 0.5, 0.6, 1.0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint)
    encoder = load_text_encoder(a.checkpoint, image_sha256=image_side_sha256(model))
    cache = Path(a.cache)
    v, _ = encode_images(model, _rows(a.manifests[0], "val", 5))
    vn = torch.nn.functional.normalize(v, dim=-1)
    jobs = [(m, "clean") for m in a.manifests] + [(a.manifests[0], c) for c in a.conditions]
    report: dict = {"checkpoint": a.checkpoint, "gates": a.gates, "runs": {}}
    for manifest, cond in jobs:
        rows = _rows(manifest, "val", 5)
        name = Path(manifest).parent.name
        if cond == "clean":
            heard = read_transcripts(transcripts_path(manifest))
        else:
            heard = _heard_under(model, rows, cond, cache, name)
        texts = [heard[r["clip"]]["text"] for r in rows]
        conf = np.array([heard[r["clip"]]["confidence"] for r in rows])
        cover = np.array([encoder.weight_for(t, 1.0) for t in texts])
        au = _audio(model, rows, cache, name, cond)
        cos_a, ia = cosine_scores(v, au).numpy(), ia_scores(v, au).numpy()
        cos_t = (vn @ encoder.encode(texts, heard=True).T).numpy()
        out = {}
        for c0 in a.gates:
            gate = np.ones_like(conf) if c0 <= 0 else np.minimum(1.0, conf / c0)
            first, second = fused_scores(cos_a, ia, cos_t, (cover * gate)[None, :])
            out[str(c0)] = _pipeline(first, second, 5, 50)["mR"]
        key = f"{name}:{cond}"
        report["runs"][key] = {"confidence_mean": float(conf.mean()), "mR": out}
        print(key, f"conf {conf.mean():.2f}", " ".join(f"{g}:{x:.2f}" for g, x in out.items()))
    clean = [k for k in report["runs"] if k.endswith(":clean")]
    families = clean[1:]
    print("\n| gate c0 | " + " | ".join(report["runs"]) + " | six-voicing mean | family spread |")
    print("|---|" + "---:|" * (len(report["runs"]) + 2))
    summary = {}
    for c0 in map(str, a.gates):
        vals = [r["mR"][c0] for r in report["runs"].values()]
        six = float(np.mean([report["runs"][k]["mR"][c0] for k in clean]))
        fam = [report["runs"][k]["mR"][c0] for k in families]
        spread = float(max(fam) - min(fam)) if fam else float("nan")
        summary[c0] = {"six_voicing_mean": six, "family_spread": spread}
        cells = " | ".join(f"{x:.2f}" for x in [*vals, six, spread])
        print(f"| {c0} | {cells} |")
    report["summary"] = summary
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
