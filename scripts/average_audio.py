"""Average the audio branches of runs that share one image side (a uniform weight "soup").

Runs of one recipe started from the same audio branch (``rsia-geo train --image-from CK
--continue-audio`` with different ``--seed``) can be averaged weight by weight; the image side,
which every member took frozen from ``CK``, is kept as it is, so an index built with ``CK``
stays valid (``CK`` itself may be a member: its audio branch averaged with a fine-tuned one).
Members must share the architecture (their configurations less version and training record)
and the image side. The first member's text route (``text.json`` / ``text.safetensors``) is
copied.

Usage:
    python scripts/average_audio.py runs/s19/cvp50e16/best runs/s20/seed2/best -o runs/s21/soup
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import torch

from rsia_geo.errors import ModelConfigError
from rsia_geo.models import load_checkpoint, save_checkpoint

_SKIP_META = ("format", "format_version", "rsia_geo_version", "dtype", "weights_sha256", "config")


def _architecture(model) -> dict:
    """The configuration less its version and training record (seed, output folder, epoch)."""
    config = dataclasses.asdict(model.config)
    for key in ("training", "version"):
        config.pop(key, None)
    return config


def _same(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal values (an fp16 checkpoint's weights equal their float32 copy in a run)."""
    if x.is_floating_point() and y.is_floating_point():
        return bool(torch.equal(x.float(), y.float()))
    return bool(torch.equal(x, y))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("members", nargs="+", help="checkpoint folders (two or more)")
    p.add_argument("-o", "--out", type=Path, required=True)
    a = p.parse_args()
    if len(a.members) < 2:
        raise SystemExit(f"give two or more checkpoints to average, not {a.members}")
    models = [load_checkpoint(m) for m in a.members]
    first = models[0]
    states = [m.state_dict() for m in models]
    for path, m, state in zip(a.members[1:], models[1:], states[1:], strict=True):
        if _architecture(m) != _architecture(first) or set(state) != set(states[0]):
            raise ModelConfigError(
                f"{path!r} is not {a.members[0]!r}'s architecture (its configuration differs); "
                "average only runs of one recipe"
            )
        other = [
            k
            for k in state
            if not k.startswith("audio_encoder.") and not _same(state[k], states[0][k])
        ]
        if other:
            raise ModelConfigError(
                f"{path!r}'s image side differs from {a.members[0]!r}'s (e.g. {other[0]}); average "
                "only runs trained against one frozen image side (rsia-geo train --image-from)"
            )
    averaged = {
        k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
        if k.startswith("audio_encoder.") and v.is_floating_point()
        else v
        for k, v in states[0].items()
    }
    first.load_state_dict(averaged)
    extra = {k: v for k, v in first.checkpoint_meta.items() if k not in _SKIP_META}
    extra["soup"] = {"members": list(a.members), "weights": "uniform", "averaged": "audio_encoder"}
    save_checkpoint(first, a.out, extra=extra)
    for name in ("text.json", "text.safetensors"):
        if (Path(a.members[0]) / name).exists():
            shutil.copyfile(Path(a.members[0]) / name, a.out / name)
    print(f"averaged {len(models)} audio branches into {a.out}")


if __name__ == "__main__":
    main()
