"""Image encoding with batch norm folded into the convolutions, against the plain forward.

Usage:
    python benchmarks/bench_fold.py [CHECKPOINT] [--tiles 64] [--rounds 5] [--threads 2]
        [--out docs/bench_fold.json]

``encode_images`` runs the backbone as a batch-norm-folded copy (``rsia_geo.models._fold``);
this script times it against the same model's unfolded backbone, in the same process, the two
interleaved round by round (this machine's speed drifts between runs), on random 256 px tiles
embedded as ``build_index`` embeds them (``encode_images`` both times, one view and the mean
of the 8 dihedral views; only the backbone it runs differs). Reports the median seconds per
round of each, their ratio, and how far the vectors differ.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from rsia_geo.models import load_checkpoint
from rsia_geo.weights import default_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=None, help="default: the starter")
    p.add_argument("--tiles", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint or default_checkpoint())
    g = torch.Generator().manual_seed(0)
    tiles = torch.rand(args.tiles, model.config.backbone.in_chans, 256, 256, generator=g)

    def encode(views: str) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model.encode_images(b, views=views) for b in tiles.split(args.batch)])

    def folded(views: str) -> torch.Tensor:
        model.__dict__.pop("_inference_backbone", None)  # the method: the folded copy
        return encode(views)

    def plain(views: str) -> torch.Tensor:
        """The same ``encode_images`` with the model's own, unfolded backbone."""
        model._inference_backbone = lambda: model.backbone  # an instance attribute over the method
        return encode(views)

    row: dict = {
        "checkpoint": str(args.checkpoint or default_checkpoint().name),
        "tiles": args.tiles,
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "machine": platform.processor() or platform.machine(),
    }
    for views in ("single", "d8"):
        a, b = folded(views), plain(views)  # warm-up, and the vectors compared
        row[f"{views}_max_abs_diff"] = float((a - b).abs().max())
        row[f"{views}_min_cosine"] = float((a * b).sum(-1).min())
        times: dict[str, list[float]] = {"folded": [], "plain": []}
        for _ in range(args.rounds):
            for name, fn in (("folded", folded), ("plain", plain)):
                start = time.perf_counter()
                fn(views)
                times[name].append(time.perf_counter() - start)
        for name, ts in times.items():
            row[f"{views}_{name}_s"] = round(statistics.median(ts), 3)
            row[f"{views}_{name}_tiles_per_s"] = round(args.tiles / statistics.median(ts), 1)
        row[f"{views}_speedup"] = round(
            statistics.median(times["plain"]) / statistics.median(times["folded"]), 2
        )
    print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(row, f, indent=2)


if __name__ == "__main__":
    main()
