"""Forward throughput of each model configuration on this machine (images/s, clips/s).

Usage:
    python benchmarks/bench_model.py [--configs alac-crossformer-s ...] [--batch 16]
        [--threads 2] [--seconds 5] [--out docs/bench_model.json]

Random weights and inputs (throughput does not depend on the values). Images at each
config's input size; clips of 4 s at 16 kHz, front end included.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list_configs())
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.configs:
        model = build_model(get_config(name), pretrained=False).eval()
        s = model.config.backbone.input_size
        images = torch.rand(args.batch, model.config.backbone.in_chans, s, s)
        waves = torch.randn(args.batch, 4 * 16000) * 0.1
        with torch.inference_mode():
            img = _rate(lambda m=model, x=images: m.forward_image(x), args.batch, args.seconds)
            aud = _rate(lambda m=model, x=waves: m.forward_audio(x), args.batch, args.seconds)
            one = _rate(lambda m=model, x=waves: m.forward_audio(x[:1]), 1, args.seconds)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        row = {
            "config": name,
            "params_M": round(params, 2),
            "batch": args.batch,
            "images_per_s": round(img, 1),
            "clips_per_s": round(aud, 1),
            "single_clip_ms": round(1000 / one, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
