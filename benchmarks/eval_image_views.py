"""How many image views a tile's embedding needs: the audio route's val mR by number of views.

Each val image is embedded once per dihedral view (rotations by 0-3 quarter turns, each also
mirrored); an embedding of ``n`` views is the mean of ``n`` of these raw embeddings. For every
``n`` in 1, 2, 4, 8, every subset of that size is scored (cosine candidates, IA rescoring of
the top 50: the search pipeline's audio route) and the mean, lowest and highest mR reported:
how much averaging gives, and how much one view's score depends on which view it is. ``n = 8``
is ``image_views="d8"`` (what a new index stores); the first single view is ``"single"``.

Usage:
    python benchmarks/eval_image_views.py rsia_geo/weights/alac-efficientnet-lite0-whisper-mix-ucm \
        runs/v2_val/manifest.jsonl --out runs/eval_image_views.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from eval_voices import _rows

from rsia_geo.models import load_checkpoint
from rsia_geo.models.alac import cosine_scores, dihedral_views, ia_scores
from rsia_geo.training.evaluate import _metrics_both, candidates_only, encode_clips
from rsia_geo.training.train import load_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("manifest", help="voiced val manifest (held-out voices)")
    p.add_argument("--split", default="val")
    p.add_argument("--per-image", type=int, default=5)
    p.add_argument("--rescore-k", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint)
    rows = _rows(a.manifest, a.split, a.per_image)
    images = list(dict.fromkeys(r["image"] for r in rows))
    x = torch.stack([model.preprocess_images(load_image(p)[None])[0] for p in images])
    chunks = [x[i : i + 32] for i in range(0, len(x), 32)]
    per_view = torch.cat(  # (8, N, D): view k of every image (dihedral_views' order)
        [
            model.encode_images(dihedral_views(c), normalize=False).view(8, len(c), -1)
            for c in chunks
        ],
        dim=1,
    )
    audio = encode_clips(model, rows)

    def mr(v: torch.Tensor) -> float:
        cos, ia = cosine_scores(v, audio).numpy(), ia_scores(v, audio).numpy()
        first = candidates_only(cos, ia, a.rescore_k)
        second = candidates_only(cos.T, ia.T, a.rescore_k).T
        return float(_metrics_both(first, second, a.per_image)["mR"])

    report: dict = {"checkpoint": a.checkpoint, "manifest": a.manifest, "views": {}}
    for n in (1, 2, 4, 8):
        scores = [mr(per_view[list(c)].mean(0)) for c in itertools.combinations(range(8), n)]
        report["views"][str(n)] = {
            "subsets": len(scores),
            "mean": round(float(np.mean(scores)), 2),
            "min": round(float(np.min(scores)), 2),
            "max": round(float(np.max(scores)), 2),
        }
        if n == 1:
            report["single"] = round(scores[0], 2)  # the image as it is
        print(n, json.dumps(report["views"][str(n)]), flush=True)
    print(json.dumps(report, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
