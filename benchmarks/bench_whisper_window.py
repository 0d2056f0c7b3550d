"""Whisper's short window vs its standard padded 30 s window: retrieval and encoder time.

The speech front end runs Whisper's encoder on a fixed 6 s window. Whisper itself always pads
to 30 s; this measures what the short window costs or gains: the same clips are encoded both
ways, the first 6 s of encoder frames of the padded window are fed to the same trained head,
and retrieval against the images is scored (one clip per image, audio -> image and back).
Also windows fitted to each clip (its length plus a margin, in steps of 0.5 s, at least 2 s,
at most the trained window), whose encoder frames are zero-padded to the trained length: the
encoder's cost grows with the window, and query clips are mostly shorter than 6 s.

Usage:
    python benchmarks/bench_whisper_window.py CHECKPOINT runs/v2_val/manifest.jsonl \
        [--images 105] [--out runs/bench_whisper_window.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rsia_geo.audio import load_audio
from rsia_geo.models import load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.training.dataset import load_split
from rsia_geo.training.evaluate import encode_images
from rsia_geo.training.metrics import retrieval_metrics


def _fitted(samples: int, margin_s: float, longest: int) -> int:
    """A window fitted to a clip: its 10 ms frames plus a margin, in 0.5 s steps, 2 s to longest."""
    frames = samples / 160 + 100 * margin_s
    return int(min(longest, max(200, 50 * np.ceil(frames / 50))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("manifest")
    p.add_argument("--split", default="val")
    p.add_argument("--images", type=int, default=105, help="every n-th image, this many")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint).eval()
    fe = model.config.frontend
    if fe.kind != "whisper":
        raise SystemExit(f"{a.checkpoint} has a {fe.kind!r} front end, not whisper")
    rows = load_split(a.manifest, a.split)
    first = {}
    for r in rows:
        first.setdefault(r["image"], r)
    picked = list(first.values())
    step = max(1, len(picked) // a.images)
    picked = picked[::step][: a.images]
    v, _ = encode_images(model, picked)
    enc = model.frontend.speech_encoder()
    waves = [load_audio(r["clip_path"], trim=True).samples for r in picked]
    out: dict = {"clips": len(picked), "window_s": fe.max_frames / 100}
    policies = [("short", lambda n: fe.max_frames), ("padded 30 s", lambda n: 3000)]
    policies += [
        (f"fit + {m:g} s", lambda n, m=m: _fitted(n, m, fe.max_frames)) for m in (1.0, 0.5)
    ]  # name, window in 10 ms frames for a clip of n samples
    for name, window in policies:
        feats, secs, windows = [], [], []
        for w in waves:
            frames = window(len(w))
            windows.append(frames / 100)
            t = time.perf_counter()
            f = enc.encode([w], max_frames=frames, pool=fe.pool)
            secs.append(time.perf_counter() - t)
            f = f[:, : fe.frames_out]  # the first 6 s of positions, as trained
            pad = np.zeros((1, fe.frames_out - f.shape[1], f.shape[2]), np.float32)
            feats.append(np.concatenate([f, pad], axis=1))  # as the head reads padding
        x = torch.from_numpy(np.concatenate(feats))[:, None]
        with torch.no_grad():
            aud = model.forward_audio_features(x)
        cos = retrieval_metrics(cosine_scores(v, aud).numpy(), 1)
        ia = retrieval_metrics(ia_scores(v, aud).numpy(), 1)
        out[name] = {
            "window_s_mean": round(float(np.mean(windows)), 2),
            "encode_ms_p50": round(1000 * float(np.median(secs)), 1),
            "cosine_mR": round(cos["mR"], 2),
            "ia_mR": round(ia["mR"], 2),
            "ia_a2i_r10": round(ia["a2i_r10"], 2),
        }
        print(name, json.dumps(out[name]), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
