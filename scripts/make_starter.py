"""Package a training run's best checkpoint as the shipped starter model.

Usage:
    python scripts/make_starter.py runs/starter [--bank-voices 1] [--version 0.1.0]

Writes ``rsia_geo/weights/alac-efficientnet-lite0-ucm/`` (fp16 safetensors + config.json +
audio_bank.safetensors): the bank holds the raw audio embeddings of the training clips of the
first voice of every caption (for the BSWFR rerank's reverse ranks at search time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from rsia_geo.models import load_checkpoint, save_checkpoint
from rsia_geo.training.voicing import manifest_pairs, read_manifest
from rsia_geo.weights import STARTER


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="training run folder (with best/ and cache/)")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--bank-voices", type=int, default=1, help="voices per caption in the bank")
    p.add_argument("--out", default=str(Path("rsia_geo/weights") / STARTER))
    a = p.parse_args()
    run = Path(a.run)
    model = load_checkpoint(run / "best")
    settings = json.loads((run / "train_config.json").read_text())
    rows = [r for r in manifest_pairs(read_manifest(settings["manifest"]), settings["train_split"])]
    caches = sorted((run / "cache").glob("train_audio_*.safetensors"))
    feats = load_file(str(caches[-1]))["features"]
    if len(feats) != len(rows):
        raise SystemExit(f"cache has {len(feats)} clips, manifest {len(rows)}")
    keep = [i for i, r in enumerate(rows) if r["voice_index"] < a.bank_voices]
    model.eval()
    with torch.no_grad():
        bank = torch.cat(
            [
                model.forward_audio_features(feats[keep[i : i + 256]][:, None].float())
                for i in range(0, len(keep), 256)
            ]
        )
    meta = model.checkpoint_meta
    model.config = dataclasses.replace(model.config, version=a.version)
    out = save_checkpoint(
        model,
        a.out,
        half=True,
        audio_bank=bank,
        extra={
            "val_metrics": meta.get("val_metrics"),
            "bank": {
                "clips": len(keep),
                "split": settings["train_split"],
                "voices_per_caption": a.bank_voices,
            },
        },
    )
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB; bank of {len(keep)} clips)")


if __name__ == "__main__":
    main()
