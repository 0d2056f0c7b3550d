"""Training-step throughput of full fine-tuning (every backbone stage) on this machine.

One step as ``rsia-geo train --full-finetune`` runs it: a batch of 224 px views through the
whole image side (backbone, RELA, head), the audio head on cached front-end features, the
ALAC loss, backward, AdamW. Random weights and inputs (throughput does not depend on the
values). Reports steps/s and views/s, and what one epoch of the UCM training split (1,680
images, one view each per epoch) takes at that rate.

Usage:
    python benchmarks/bench_finetune_step.py [--model alac-efficientnet-lite0-whisper]
        [--device cuda] [--amp] [--batch 60] [--steps 30] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import torch

from rsia_geo.models import build_model, get_config
from rsia_geo.models.losses import ALACLoss

TRAIN_IMAGES = 1680  # UCM-Captions' training split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="alac-efficientnet-lite0-whisper")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (as --amp trains)")
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    config = get_config(a.model)
    model = build_model(config, pretrained=False).to(dev).train()
    loss_fn = ALACLoss().to(dev)
    opt = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=1e-4)
    size = config.backbone.input_size
    images = torch.randn(a.batch, 3, size, size, device=dev)
    fe = config.frontend
    feats = torch.randn(a.batch, 1, fe.frames_out, fe.n_coeffs, device=dev)
    ids = torch.arange(a.batch, device=dev)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.amp):
            v = model.forward_image(images)
            au = model.forward_audio_features(feats)
        loss = loss_fn(v.float(), au.float(), ids)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):  # warm-up (cuDNN autotuning, allocator)
        step()
    sync()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    rate = a.steps / seconds
    row = {
        "model": a.model,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
        "amp": a.amp,
        "batch": a.batch,
        "threads": a.threads,
        "steps_per_s": round(rate, 3),
        "views_per_s": round(rate * a.batch, 1),
        "epoch_s_ucm_train": round(TRAIN_IMAGES / (rate * a.batch), 2),
        "max_memory_mb": (
            torch.cuda.max_memory_allocated(dev) // 2**20 if dev.type == "cuda" else None
        ),
        "config": dataclasses.asdict(config.backbone),
    }
    print(json.dumps(row))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(row, f, indent=2)


if __name__ == "__main__":
    main()
