"""Trim with a voice-activity detector (Silero VAD) or with the energy trim: which serves better?

Real recordings carry silence and room noise around the words. Each val clip is padded with
``--pad`` seconds of silence on both sides, degraded by a recording condition over its whole
length (seeded per clip, as the model card's robustness table), then trimmed two ways before
the audio route encodes it:

* ``energy``: :func:`rsia_geo.audio.trim_silence` (what serving does: frames within 40 dB of the
  loudest frame);
* ``vad``: Silero VAD's speech timestamps (first start to last end, 100 ms kept on each side),
  from the TorchScript model shipped in the ``silero-vad`` wheel (``--vad-jit PATH``; nothing is
  downloaded).

Reported: the audio route's pipeline mR (cosine + IA@50) per condition and trim, the trimmed
length and the trim's own cost per clip.

Usage:
    python benchmarks/eval_vad.py CHECKPOINT runs/v2_val/manifest.jsonl --vad-jit silero_vad.jit \
        --conditions clean snr10 snr5 --out runs/eval_vad.json
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

from rsia_geo.audio import SAMPLE_RATE, load_audio, trim_silence
from rsia_geo.models import load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.training.augment import apply_condition
from rsia_geo.training.evaluate import encode_images, evaluate_scores


def _vad_trim(model, wave: np.ndarray, pad_s: float = 0.1) -> np.ndarray:
    """Speech span found by Silero VAD (512-sample windows at 16 kHz, threshold 0.5)."""
    model.reset_states()
    x = torch.from_numpy(wave.astype(np.float32))
    n = len(x) // 512
    with torch.no_grad():
        probs = [float(model(x[i * 512 : (i + 1) * 512][None], SAMPLE_RATE)) for i in range(n)]
    speech = np.flatnonzero(np.asarray(probs) > 0.5)
    if speech.size == 0:
        return wave
    pad = int(pad_s * SAMPLE_RATE)
    start = max(0, speech[0] * 512 - pad)
    stop = min(len(wave), (speech[-1] + 1) * 512 + pad)
    return wave[start:stop]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("manifest")
    p.add_argument("--vad-jit", required=True, help="silero_vad.jit from the silero-vad wheel")
    p.add_argument("--conditions", nargs="+", default=["clean", "snr10", "snr5"])
    p.add_argument("--pad", type=float, default=1.0, help="seconds of silence added each side")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint)
    vad = torch.jit.load(a.vad_jit).eval()
    rows = _rows(a.manifest, a.split, 5)
    v, _ = encode_images(model, rows)
    report: dict = {"checkpoint": a.checkpoint, "pad_s": a.pad, "conditions": {}}
    for cond in a.conditions:
        out = {}
        for trim in ("energy", "vad"):
            embs, lengths, cost = [], [], []
            for r in rows:
                wave = load_audio(r["clip_path"], trim=False).samples
                silence = np.zeros(int(a.pad * SAMPLE_RATE), np.float32)
                wave = np.concatenate([silence, wave, silence])
                if cond != "clean":
                    seed = zlib.crc32(Path(r["clip_path"]).name.encode())
                    wave = apply_condition(wave, cond, seed=seed)
                t = time.perf_counter()
                cut = trim_silence(wave, SAMPLE_RATE) if trim == "energy" else _vad_trim(vad, wave)
                cost.append(1000 * (time.perf_counter() - t))
                lengths.append(len(cut) / SAMPLE_RATE)
                w = torch.from_numpy(np.ascontiguousarray(cut, dtype=np.float32))[None]
                embs.append(model.encode_audio(w, normalize=False))
            au = torch.cat(embs)
            m = evaluate_scores(cosine_scores(v, au).numpy(), ia_scores(v, au).numpy())
            out[trim] = {
                "mR": m["cosine+ia@50"]["mR"],
                "seconds_mean": float(np.mean(lengths)),
                "trim_ms_p50": float(np.median(cost)),
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
