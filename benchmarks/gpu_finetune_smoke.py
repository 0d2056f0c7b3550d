"""Fine-tuning on a small real sample, made to travel to a GPU machine without its data.

``prep`` (here, on the CPU): picks one training image per class and 7 val images of the given
voicings (one clip each), copies them under ``--dir``, and caches their audio features with a
one-epoch CPU run, so that the GPU machine needs neither the clips' audio nor the audio
libraries (the clips are left as empty files: the run only checks that they exist).

``run`` (there): trains ``--epochs`` epochs on ``--device`` (full fine-tuning, or partial with
``--partial``), from the cached features, then loads the best checkpoint on the CPU.

Usage:
    python benchmarks/gpu_finetune_smoke.py prep --train runs/v2_train/manifest.jsonl \\
        --val runs/v2_val/manifest.jsonl --dir runs/gpu
    python benchmarks/gpu_finetune_smoke.py run --dir runs/gpu --out /tmp/run --device cuda \\
        --epochs 3 [--partial]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any


def _pick(manifest: str, split: str, dest: Path, classes: int) -> list[dict]:
    """The first clip (voice 0, caption 0) of one image per class, copied under ``dest``."""
    rows: list[dict] = []
    seen: set[str] = set()
    for line in Path(manifest).read_text().splitlines():
        r = json.loads(line)
        if r["split"] != split or r["voice_index"] != 0 or r["caption_index"] != 0:
            continue
        if r["label"] in seen or len(seen) >= classes:
            continue
        seen.add(r["label"])
        image, clip = Path(r["image"]), Path(manifest).parent / r["clip"]
        shutil.copy(image, dest / "images" / image.name)
        shutil.copy(clip, dest / "audio" / clip.name)
        rows.append(dict(r, image=str(dest / "images" / image.name), clip=f"audio/{clip.name}"))
    return rows


def _config(data: Path, out: str, device: str, epochs: int, partial: bool) -> Any:
    """The smoke run's settings: a random EfficientNet-Lite0, short clips, small batches."""
    from rsia_geo.training.train import TrainConfig

    return TrainConfig(
        manifest=str(data / "manifest.jsonl"),
        out_dir=out,
        model="alac-efficientnet-lite0",
        model_overrides={
            "backbone": {"options": {"pretrained": False}},
            "frontend": {"max_frames": 300},
        },
        epochs=epochs,
        batch_size=7,
        views=2,
        mix_views=2,
        freeze_backbone=partial,
        finetune_stages=2 if partial else 0,
        allow_random_backbone=partial,
        device=device,
        amp=device != "cpu",
        workers=2 if device != "cpu" else 0,
        per_image=1,
        audio_augment=False,
        threads=2,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prep")
    prep.add_argument("--train", required=True)
    prep.add_argument("--val", required=True)
    prep.add_argument("--dir", required=True)
    run = sub.add_parser("run")
    run.add_argument("--dir", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--device", default="cuda")
    run.add_argument("--epochs", type=int, default=3)
    run.add_argument("--partial", action="store_true")
    a = p.parse_args()
    from rsia_geo.training.train import train

    root = Path(a.dir)
    data = root / "data"
    if a.cmd == "prep":
        for d in ("images", "audio"):
            (data / d).mkdir(parents=True, exist_ok=True)
        rows = _pick(a.train, "train", data, 21) + _pick(a.val, "val", data, 7)
        (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp = root / "cpu_run"
        train(_config(data, str(tmp), "cpu", 1, False), progress=False)
        shutil.rmtree(root / "cache", ignore_errors=True)
        shutil.move(str(tmp / "cache"), str(root / "cache"))
        shutil.rmtree(tmp)
        for clip in (data / "audio").iterdir():
            clip.write_bytes(b"")  # the features are cached: the run only needs the names
        print(f"{len(rows)} clips; carry {root}")
        return
    out = Path(a.out)
    if not (out / "cache").exists():
        shutil.copytree(root / "cache", out / "cache")
    start = time.time()
    train(_config(data, str(out), a.device, a.epochs, a.partial), progress=False)
    from rsia_geo.models import load_checkpoint

    ck = load_checkpoint(out / "best")
    print("seconds", round(time.time() - start, 1), "best loads on", next(ck.parameters()).device)
    for line in (out / "log.jsonl").read_text().splitlines():
        d = json.loads(line)
        print({k: d[k] for k in ("epoch", "seconds", "loss")})
    import torch

    if torch.cuda.is_available():
        mb = torch.cuda.max_memory_allocated() // 2**20
        print(torch.cuda.get_device_name(0), "max memory MB", mb)


if __name__ == "__main__":
    main()
