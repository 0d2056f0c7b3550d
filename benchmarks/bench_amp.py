"""Training-step time of the starter configuration with and without bfloat16 autocast.

Usage:
    python benchmarks/bench_amp.py [--steps 3] [--threads 2]

Frozen backbone (cached tokens, random here), RELA + head + audio encoder trained on a batch of
60 pairs with 5 s log-mel clips, as ``rsia-geo train`` does.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rsia_geo.models import ALACLoss, build_model, get_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = build_model(get_config("alac-efficientnet-lite0"), pretrained=False).train()
    params = [q for n, q in model.named_parameters() if not n.startswith("backbone")]
    opt = torch.optim.Adam(params)
    loss_fn = ALACLoss()
    tokens, feats = torch.randn(60, 49, 1280), torch.randn(60, 1, 500, 64)
    out = {}
    for amp in (False, True):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                v = model.image_head(tokens)
                f = model.forward_audio_features(feats)
            loss = loss_fn(v.float(), f.float())["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        out["bf16_autocast" if amp else "fp32"] = round((time.perf_counter() - t0) / a.steps, 3)
    print(json.dumps({"seconds_per_step": out, "threads": a.threads}))


if __name__ == "__main__":
    main()
