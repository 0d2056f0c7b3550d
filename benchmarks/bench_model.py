"""Forward throughput of each model configuration on this machine (images/s, clips/s).

Usage:
    python benchmarks/bench_model.py [--configs alac-crossformer-s ...] [--batch 16]
        [--threads 2] [--seconds 5] [--device cpu] [--out docs/bench_model.json]

Random weights and inputs (throughput does not depend on the values). Images at each
config's input size; clips of 4 s at 16 kHz, front end included. ``tiles_per_s_single`` and
``tiles_per_s_d8``: ``encode_images`` on 256 px tiles as ``build_index`` embeds them (one view,
or the mean of the 8 dihedral views). With ``--device cuda``, the image side runs on the GPU
(the audio columns are left out: the Whisper front end runs on the CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from rsia_geo.models import build_model, get_config, list_configs


def _rate(fn, n_items: int, seconds: float) -> float:
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += n_items
    return done / (time.perf_counter() - start)


def _image_rates(model, images, tiles, seconds: float, sync) -> dict[str, float]:
    """Images/s through ``forward_image``; tiles/s through ``encode_images`` per view policy."""
    n = len(images)
    out = {}
    with torch.inference_mode():
        out["images_per_s"] = round(
            _rate(lambda: (model.forward_image(images), sync()), n, seconds), 1
        )
        for views in ("single", "d8"):
            rate = _rate(lambda v=views: (model.encode_images(tiles, views=v), sync()), n, seconds)
            out[f"tiles_per_s_{views}"] = round(rate, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list_configs())
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    dev = torch.device(args.device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.configs:
        model = build_model(get_config(name), pretrained=False).eval().to(dev)
        s = model.config.backbone.input_size
        chans = model.config.backbone.in_chans
        images = torch.rand(args.batch, chans, s, s, device=dev)
        tiles = torch.rand(args.batch, chans, 256, 256, device=dev)
        waves = torch.randn(args.batch, 4 * 16000) * 0.1
        row: dict = {"config": name, "device": str(dev), "batch": args.batch}
        row.update(_image_rates(model, images, tiles, args.seconds, sync))
        if dev.type == "cpu":
            with torch.inference_mode():
                aud = _rate(lambda m=model, x=waves: m.forward_audio(x), args.batch, args.seconds)
                one = _rate(lambda m=model, x=waves: m.forward_audio(x[:1]), 1, args.seconds)
            row["clips_per_s"] = round(aud, 1)
            row["single_clip_ms"] = round(1000 / one, 1)
        row["params_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "machine": (
            torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
