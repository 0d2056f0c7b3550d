"""Retrieval per held-out voice family and under recording conditions (model card tables).

Images are encoded once; each voice family's clips (one full voicing of the split per family,
``rsia-geo data voice ... --families F``) and each recording condition of the mixed held-out
voicing are then scored with the search pipeline's scoring (cosine candidates rescored by IA).

Usage:
    python benchmarks/eval_voices.py CHECKPOINT --mixed runs/v2_val/manifest.jsonl \
        --families runs/v2_val_*/manifest.jsonl --out runs/eval_v2/voices.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from rsia_geo.models import load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.tiles import DEFAULT_IMAGE_VIEWS, IMAGE_VIEWS
from rsia_geo.training.augment import CONDITIONS
from rsia_geo.training.dataset import load_split
from rsia_geo.training.evaluate import encode_clips, encode_images, evaluate_scores

KEYS = ["i2a_r1", "i2a_r5", "i2a_r10", "a2i_r1", "a2i_r5", "a2i_r10", "mR"]


def _scores(v, a, per_image, rescore_k):
    m = evaluate_scores(
        cosine_scores(v, a).numpy(),
        ia_scores(v, a).numpy(),
        per_image=per_image,
        rescore_k=rescore_k,
    )
    return {"cosine": m["cosine"], "pipeline": m[f"cosine+ia@{rescore_k}"]}


def set_whisper_window(model, window: str) -> None:
    """Serve the model's Whisper front end with this window policy (``fixed`` or ``fitted``)."""
    if model.config.frontend.kind != "whisper":
        raise SystemExit(f"--whisper-window needs a whisper front end, not {model.frontend.kind}")
    fe = dataclasses.replace(model.config.frontend, whisper_window=window)
    model.config = dataclasses.replace(model.config, frontend=fe)
    model.frontend.config = fe


def _rows(manifest: str, split: str, per_image: int) -> list[dict]:
    rows = load_split(manifest, split)
    per: dict[str, list[dict]] = {}
    for r in rows:
        per.setdefault(r["image"], []).append(r)
    return [r for rs in per.values() for r in rs[:per_image]]


def add_image_views_arg(p: argparse.ArgumentParser) -> None:
    """``--image-views``: how val images are embedded (as a new index embeds tiles: d8)."""
    p.add_argument(
        "--image-views",
        choices=list(IMAGE_VIEWS),
        default=DEFAULT_IMAGE_VIEWS,
        help="how val images are embedded (d8: as a new index embeds tiles; sessions <= 13 "
        "measured single)",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--mixed", required=True, help="held-out voicing of the split (mixed)")
    p.add_argument("--families", nargs="*", default=[], help="one voicing per family")
    p.add_argument("--conditions", nargs="*", default=list(CONDITIONS))
    p.add_argument("--split", default="val")
    p.add_argument("--per-image", type=int, default=5)
    p.add_argument("--rescore-k", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--whisper-window",
        choices=["fixed", "fitted"],
        default=None,
        help="override the checkpoint's Whisper window policy",
    )
    add_image_views_arg(p)
    p.add_argument("--out", default=None, help="JSON report")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint)
    if a.whisper_window:
        set_whisper_window(model, a.whisper_window)
    mixed = _rows(a.mixed, a.split, a.per_image)
    t0 = time.time()
    v, _ = encode_images(model, mixed, views=a.image_views)
    images = list(dict.fromkeys(r["image"] for r in mixed))
    report: dict = {
        "checkpoint": str(a.checkpoint),
        "model_id": model.config.model_id,
        "split": a.split,
        "image_views": a.image_views,
        "images": len(images),
        "families": {},
        "conditions": {},
    }
    for manifest in a.families:
        rows = _rows(manifest, a.split, a.per_image)
        if list(dict.fromkeys(r["image"] for r in rows)) != images:
            raise SystemExit(f"{manifest} does not voice the same images in the same order")
        fams = sorted({r.get("family") or r["speaker"] for r in rows})
        name = fams[0] if len(fams) == 1 else Path(manifest).parent.name
        report["families"][name] = _scores(v, encode_clips(model, rows), a.per_image, a.rescore_k)
        report["families"][name]["clips"] = len(rows)
        print(name, f"{report['families'][name]['pipeline']['mR']:.2f}", flush=True)
    for cond in a.conditions:
        res = _scores(v, encode_clips(model, mixed, condition=cond), a.per_image, a.rescore_k)
        report["conditions"][cond] = res
        print(cond, f"{res['pipeline']['mR']:.2f}", flush=True)
    fam_mr = [f["pipeline"]["mR"] for f in report["families"].values()]
    if fam_mr:
        report["families_summary"] = {
            "mean": float(np.mean(fam_mr)),
            "best": float(max(fam_mr)),
            "worst": float(min(fam_mr)),
            "spread": float(max(fam_mr) - min(fam_mr)),
        }
    if "clean" in report["conditions"]:
        clean = report["conditions"]["clean"]["pipeline"]["mR"]
        report["conditions_drop"] = {
            c: clean - r["pipeline"]["mR"] for c, r in report["conditions"].items()
        }
    report["seconds"] = round(time.time() - t0, 1)
    print("\n| voices (held-out family) | " + " | ".join(KEYS) + " |")
    print("|---|" + "---:|" * len(KEYS))
    for name, r in report["families"].items():
        print(f"| {name} | " + " | ".join(f"{r['pipeline'][k]:.2f}" for k in KEYS) + " |")
    print("\n| condition (mixed held-out voices) | " + " | ".join(KEYS) + " |")
    print("|---|" + "---:|" * len(KEYS))
    for name, r in report["conditions"].items():
        print(f"| {name} | " + " | ".join(f"{r['pipeline'][k]:.2f}" for k in KEYS) + " |")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
