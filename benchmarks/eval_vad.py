"""Trim with a voice-activity detector or with the energy trim: which serves better?

Real recordings carry silence and room noise around the words. Each val clip is padded with
``--pad`` seconds of silence on both sides, degraded by a recording condition over its whole
length (seeded per clip, as the model card's robustness table), then trimmed by each method of
:func:`rsia_geo.audio.trim_speech` before the audio route encodes it:

* ``energy``: frames within 40 dB of the loudest frame (what serving did until session 11);
* ``vad``: Silero VAD (:mod:`rsia_geo.vad`, the ONNX model faster-whisper ships), first speech
  run to last, 100 ms kept on each side;
* ``auto``: the energy trim, and the detector only where the energy trim kept >= 90 % of the
  clip (what serving does now).

Reported: the audio route's pipeline mR (cosine + IA@50) per condition and method, the trimmed
length, the trim's own cost per clip and how often ``auto`` called the detector.

Usage:
    python benchmarks/eval_vad.py CHECKPOINT runs/v2_val/manifest.jsonl \
        --conditions clean snr20 snr10 snr5 reverb bandlimit --out docs/eval_vad.json
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from eval_voices import _rows

from rsia_geo.audio import AUTO_VAD_KEPT, SAMPLE_RATE, TRIM_METHODS, load_audio, trim_speech
from rsia_geo.models import load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.training.augment import apply_condition
from rsia_geo.training.evaluate import encode_images, evaluate_scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("manifest")
    p.add_argument("--methods", nargs="+", default=list(TRIM_METHODS), choices=TRIM_METHODS)
    p.add_argument("--conditions", nargs="+", default=["clean", "snr10", "snr5"])
    p.add_argument("--pad", type=float, default=1.0, help="seconds of silence added each side")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint)
    trim_speech(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, "auto")  # load the detector
    rows = _rows(a.manifest, a.split, 5)
    v, _ = encode_images(model, rows)
    report: dict = {
        "checkpoint": a.checkpoint,
        "manifest": a.manifest,
        "clips": len(rows),
        "pad_s": a.pad,
        "conditions": {},
    }
    for cond in a.conditions:
        out = {}
        for trim in a.methods:
            embs, lengths, cost, detector = [], [], [], 0
            for r in rows:
                wave = load_audio(r["clip_path"], trim=False).samples
                silence = np.zeros(int(a.pad * SAMPLE_RATE), np.float32)
                wave = np.concatenate([silence, wave, silence])
                if cond != "clean":
                    seed = zlib.crc32(Path(r["clip_path"]).name.encode())
                    wave = apply_condition(wave, cond, seed=seed)
                t = time.perf_counter()
                try:
                    cut = trim_speech(wave, SAMPLE_RATE, trim)
                except Exception:  # vad heard no speech: the clip as recorded
                    cut = wave
                cost.append(1000 * (time.perf_counter() - t))
                energy = trim_speech(wave, SAMPLE_RATE, "energy")
                detector += int(len(energy) >= AUTO_VAD_KEPT * len(wave))
                lengths.append(len(cut) / SAMPLE_RATE)
                w = torch.from_numpy(np.ascontiguousarray(cut, dtype=np.float32))[None]
                embs.append(model.encode_audio(w, normalize=False))
            au = torch.cat(embs)
            m = evaluate_scores(cosine_scores(v, au).numpy(), ia_scores(v, au).numpy())
            out[trim] = {
                "mR": m["cosine+ia@50"]["mR"],
                "seconds_mean": float(np.mean(lengths)),
                "trim_ms_p50": float(np.median(cost)),
                "detector_share": detector / len(rows),
            }
            shown = {k: round(x, 2) for k, x in out[trim].items()}
            print(cond, trim, json.dumps(shown), flush=True)
        report["conditions"][cond] = out
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
