"""Alternative weightings of the text route for spoken queries (transcripts), on val.

Compares, per voicing and recording condition of ``eval_text_route.py`` (its cache: run that
first with ``--cache runs/text_eval_cache``), the served fusion ``unit(c h + p)`` at weight 1
with weights scaled by the hashed member's word coverage ``c``. Measured once to decide (model
card: not better); the served rule stays.

Usage:
    python benchmarks/eval_route_weights.py
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from rsia_geo.models import load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.models.text import fused_scores, load_text_encoder
from rsia_geo.training.evaluate import encode_images
from rsia_geo.training.transcripts import read_transcripts, transcripts_path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from eval_text_route import _audio, _pipeline, _rows

    torch.set_num_threads(2)
    F = torch.nn.functional
    CK = "rsia_geo/weights/alac-efficientnet-lite0-whisper-mix-ucm"
    model = load_checkpoint(CK)
    ens = load_text_encoder(CK)
    cache = Path("runs/text_eval_cache")
    V = [
        "v2_val",
        "v2_val_en-gb-scotland",
        "v2_val_en-029",
        "v2_val_slt",
        "v2_val_rms",
        "v2_val_kal_diphone",
    ]
    jobs = [(n, "clean") for n in V] + [
        ("v2_val", c) for c in ("snr20", "snr10", "snr5", "reverb", "bandlimit")
    ]
    first = _rows("runs/v2_val/manifest.jsonl", "val", 5)
    v, _ = encode_images(model, first)
    vn = F.normalize(v, dim=-1)
    res = {}
    for name, cond in jobs:
        m = f"runs/{name}/manifest.jsonl"
        rows = _rows(m, "val", 5)
        heard = (
            read_transcripts(transcripts_path(m))
            if cond == "clean"
            else json.loads((cache / f"heard_{name}_{cond}.json").read_text())
        )
        texts = [heard[r["clip"]]["text"] for r in rows]
        a = _audio(model, rows, cache, name, cond)
        cos_a = cosine_scores(v, a).numpy()
        ia = ia_scores(v, a).numpy()
        with torch.no_grad():
            c = torch.tensor([ens.hashed.coverage(t) for t in texts])
            h = F.normalize(ens.hashed(texts), dim=-1)
            p = F.normalize(ens.pretrained(texts), dim=-1)
        variants = {
            "a: unit(ch+p), w1": (c[:, None] * h + p, torch.ones_like(c)),
            "b: unit(h+p), w=c": (h + p, c),
            "d: unit(ch+p), w=c": (c[:, None] * h + p, c),
            "e: unit(ch+p), w=(1+c)/2": (c[:, None] * h + p, (1 + c) / 2),
        }
        for k, (t, w) in variants.items():
            t = F.normalize(t, dim=-1)
            cos_t = (vn @ t.T).numpy()
            f1, f2 = fused_scores(cos_a, ia, cos_t, w.numpy()[None, :])
            res.setdefault(k, {})[f"{name[7:] or 'mixed'}:{cond}"] = _pipeline(f1, f2, 5, 50)["mR"]
        print(name, cond, "coverage mean", round(float(c.mean()), 3), flush=True)
    for k, d in res.items():
        fam = [d[f"{n[7:]}:clean"] for n in V[1:]]
        six = [d[f"{n[7:] or 'mixed'}:clean"] for n in V]
        print(
            f"{k:24s}",
            " ".join(f"{x:.2f}" for x in d.values()),
            f"| six-mean {np.mean(six):.2f} fam-spread {max(fam) - min(fam):.2f}",
        )
    print(list(res[next(iter(res))].keys()))


if __name__ == "__main__":
    main()
