"""Pick the caption bank's k and temperature on the training split alone (never on val).

A tenth of the training images (seeded) is held out; a bank is built from the other nine
tenths' captions (:meth:`rsia_geo.models.text.CaptionBankTextEncoder.build`) and each held-out
image's captions, typed, rank the held-out images (text route alone, cosine, mR). The image
embeddings are the checkpoint's, which saw these images in training, so the numbers are
optimistic in level; they serve to compare settings. The shipped bank uses the best pair.

Usage:
    python benchmarks/select_bank.py [CHECKPOINT] [--cache runs/bank/cache] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rsia_geo.models import load_checkpoint
from rsia_geo.models.text import CaptionBankTextEncoder, TextConfig, normalise_text
from rsia_geo.training.evaluate import _metrics_both
from rsia_geo.training.text_route import _image_targets
from rsia_geo.weights import default_checkpoint

KS = (1, 5, 10, 20, 50)
TAUS = (0.02, 0.05, 0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=None)
    p.add_argument("--shared", default=os.environ.get("RSIA_SHARED_DATA", "../shared/data"))
    p.add_argument("--cache", default="runs/bank/cache")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ckpt = Path(a.checkpoint) if a.checkpoint else default_checkpoint()
    model = load_checkpoint(ckpt).eval()
    root = Path(a.shared) / "ucm"
    train = [r for r in json.loads((root / "captions.json").read_text())["images"]
             if r["split"] == "train"]  # fmt: skip
    with torch.no_grad():
        v = _image_targets(model, [str(root / r["image"]) for r in train], 2, Path(a.cache))
    v = torch.nn.functional.normalize(v.mean(1), dim=-1)
    held = sorted(np.random.default_rng(0).choice(len(train), len(train) // 10, replace=False))
    kept = sorted(set(range(len(train))) - set(held))
    config = TextConfig(embed_dim=v.shape[1])
    base = CaptionBankTextEncoder.build([train[i]["captions"] for i in kept], v[kept], config)
    queries = [c for i in held for c in train[i]["captions"][:5]]
    vectors = base.sentence.embed([" ".join(normalise_text(q)) for q in queries])
    table = {}
    for k in KS:
        for tau in TAUS:
            base.config = replace(base.config, bank_k=k, bank_tau=tau)
            t = torch.nn.functional.normalize(base.lookup(vectors), dim=-1)
            cos = (v[held] @ t.T).numpy()
            table[f"k={k} tau={tau}"] = round(_metrics_both(cos, cos, 5)["mR"], 2)
            print(f"k={k:3d} tau={tau:<5} held-out train mR {table[f'k={k} tau={tau}']:.2f}")
    best = max(table, key=table.__getitem__)
    print("best:", best, table[best])
    if a.out:
        Path(a.out).write_text(json.dumps({"table": table, "best": best}, indent=2))


if __name__ == "__main__":
    main()
