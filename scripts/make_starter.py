"""Package a training run's best checkpoint as a shipped starter model.

Usage:
    python scripts/make_starter.py runs/v3_mix --name alac-efficientnet-lite0-whisper-mix-ucm \
        [--bank-voices 1] [--version 0.3.1]

Writes ``rsia_geo/weights/<name>/`` (fp16 safetensors + config.json + audio_bank.safetensors):
the bank holds the raw audio embeddings of the training clips of the first voice of every
caption, encoded clean from their files as serving hears them (for the BSWFR rerank's reverse
ranks at search time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from rsia_geo.models import load_checkpoint, save_checkpoint
from rsia_geo.training.dataset import load_split
from rsia_geo.training.evaluate import encode_clips
from rsia_geo.weights import STARTER


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="training run folder (with best/ and train_config.json)")
    p.add_argument("--name", default=STARTER, help="folder name under rsia_geo/weights")
    p.add_argument("--version", default="0.3.1")
    p.add_argument("--bank-voices", type=int, default=1, help="voices per caption in the bank")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    run = Path(a.run)
    model = load_checkpoint(run / "best")
    settings = json.loads((run / "train_config.json").read_text())
    manifests = settings["manifest"]
    manifests = [manifests] if isinstance(manifests, str) else manifests
    rows = [r for m in manifests for r in load_split(m, settings["train_split"])]
    keep = [r for r in rows if r.get("voice_index", 0) < a.bank_voices]
    model.eval()
    bank = encode_clips(model, keep, batch=32, progress=True)
    meta = model.checkpoint_meta
    model.config = dataclasses.replace(model.config, version=a.version)
    out = save_checkpoint(
        model,
        Path("rsia_geo/weights") / a.name,
        half=True,
        audio_bank=bank,
        extra={
            "val_metrics": meta.get("val_metrics"),
            "bank": {
                "clips": len(keep),
                "split": settings["train_split"],
                "voices_per_caption": a.bank_voices,
                "encoded": "clean clips from their files (trimmed), as serving hears them",
            },
        },
    )
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB; bank of {len(keep)} clips)")


if __name__ == "__main__":
    main()
