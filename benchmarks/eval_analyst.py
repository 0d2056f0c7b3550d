"""Queries in an analyst's own words: class retrieval over val images, per text route.

UCM's val captions share their vocabulary with the training captions, so val mR cannot tell
whether a text route understands words the captions never use. This probe does:
``benchmarks/data/analyst_queries.json`` holds three queries per UCM class ("yachts moored at
a marina", "an airliner parked on the apron"), written before any route was measured on them.
Each query ranks the 210 val images; the relevant ones are the 10 of its class.

Reported per route (``--text`` folders; the checkpoint's own route by default): mean average
precision, precision@10 and recall@1 hit rate (top image of the right class), and for the
hashed kind the share of query words in its vocabulary (the weight rule's coverage). With
``--audio``, the queries are also spoken by the bundled synthesis and scored through the audio
route alone and fused with the text route as ``search(text=...)`` serves them.

Usage:
    python benchmarks/eval_analyst.py CHECKPOINT [--text FOLDER ...] [--audio] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from rsia_geo.models import image_side_sha256, load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.models.text import fused_scores, load_text_encoder
from rsia_geo.training.train import load_image
from rsia_geo.weights import shipped_checkpoint, shipped_checkpoints

QUERIES = Path(__file__).parent / "data" / "analyst_queries.json"


def _class_metrics(scores: np.ndarray, labels: np.ndarray, wanted: list[str]) -> dict[str, float]:
    """Mean AP, precision@10 and top-1 class hit of queries (columns) over images (rows)."""
    aps, p10, top1 = [], [], []
    for q, cls in enumerate(wanted):
        order = np.argsort(-scores[:, q], kind="stable")
        rel = labels[order] == cls
        hits = np.cumsum(rel)
        aps.append(float(np.sum(hits[rel] / (np.flatnonzero(rel) + 1)) / max(rel.sum(), 1)))
        p10.append(float(rel[:10].mean()))
        top1.append(float(rel[0]))
    return {
        "mAP": round(100 * float(np.mean(aps)), 2),
        "P@10": round(100 * float(np.mean(p10)), 2),
        "top1": round(100 * float(np.mean(top1)), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--text", nargs="*", default=None, help="text route folders (default: beside)")
    p.add_argument("--audio", action="store_true", help="also the spoken queries (synthesis)")
    p.add_argument("--shared", default=os.environ.get("RSIA_SHARED_DATA", "../shared/data"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ckpt = Path(a.checkpoint)
    if not ckpt.exists() and a.checkpoint in shipped_checkpoints():
        ckpt = shipped_checkpoint(a.checkpoint)
    model = load_checkpoint(ckpt).eval()
    sha = image_side_sha256(model)  # a text route serves every model with its image side
    meta = json.loads((Path(a.shared) / "ucm" / "captions.json").read_text())
    val = [r for r in meta["images"] if r["split"] == "val"]
    labels = np.array([r["class"] for r in val])
    with torch.no_grad():
        v = torch.cat([
            model.encode_images(torch.stack([
                model.preprocess_images(load_image(Path(a.shared) / "ucm" / r["image"])[None])[0]
                for r in val[i : i + 32]
            ]))
            for i in range(0, len(val), 32)
        ])  # fmt: skip
    unit_v = torch.nn.functional.normalize(v, dim=-1)
    per_class = json.loads(QUERIES.read_text())["queries"]
    queries = [(c, q) for c, qs in per_class.items() for q in qs]
    wanted, texts = [c for c, _ in queries], [q for _, q in queries]
    out: dict[str, dict[str, float]] = {}
    spoken = None
    if a.audio:
        from rsia_geo.training.synthesis import speak

        with torch.no_grad():
            spoken = torch.cat([
                model.encode_audio(torch.from_numpy(speak(t)[0])[None], normalize=False)
                for t in texts
            ])  # fmt: skip
        out["audio route (spoken by synthesis)"] = _class_metrics(
            ia_scores(v, spoken).numpy(), labels, wanted
        )
    folders = a.text if a.text is not None else [str(ckpt)]
    for folder in folders:
        enc = load_text_encoder(folder, image_sha256=sha)
        if enc is None:
            raise SystemExit(f"{folder} has no text route (text.safetensors)")
        name = f"{Path(folder).name} ({enc.config.kind})"
        cos_t = (unit_v @ enc.encode(texts).T).numpy()
        row = _class_metrics(cos_t, labels, wanted)
        row["coverage"] = round(100 * float(np.mean([enc.coverage(t) for t in texts])), 1)
        out[f"text route: {name}"] = row
        if spoken is not None:
            w = np.array([enc.weight_for(t) for t in texts])[None, :]
            _, second = fused_scores(
                cosine_scores(v, spoken).numpy(), ia_scores(v, spoken).numpy(), cos_t, w
            )
            out[f"fused: {name}"] = _class_metrics(second, labels, wanted)
    for k, row in out.items():
        print(k, json.dumps(row), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"queries": len(texts), "rows": out}, indent=2))


if __name__ == "__main__":
    main()
