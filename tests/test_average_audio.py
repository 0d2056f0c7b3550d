"""scripts/average_audio.py: a uniform average of audio branches that share one image side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rsia_geo.models import build_model, get_config, load_checkpoint, save_checkpoint  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "average_audio.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def test_average_audio_keeps_the_image_side_and_refuses_another(tmp_path):
    torch.manual_seed(0)
    base = build_model(get_config("alac-tiny"), pretrained=False)
    members = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        m = build_model(get_config("alac-tiny"), pretrained=False)
        state = {k: v.clone() for k, v in base.state_dict().items()}
        for k, v in m.state_dict().items():
            if k.startswith("audio_encoder."):
                state[k] = v  # only the audio branch differs between members
        m.load_state_dict(state)
        members.append(save_checkpoint(m, tmp_path / f"seed{seed}"))
    done = _run(*map(str, members), "-o", str(tmp_path / "soup"))
    assert done.returncode == 0, done.stderr
    soup = load_checkpoint(tmp_path / "soup")
    loaded = [load_checkpoint(p).state_dict() for p in members]
    averaged = 0
    for k, v in soup.state_dict().items():
        if k.startswith("audio_encoder.") and v.is_floating_point():
            want = torch.stack([s[k].float() for s in loaded]).mean(0)
            torch.testing.assert_close(v.float(), want)
            averaged += int(not torch.equal(loaded[0][k], loaded[1][k]))
        else:
            assert torch.equal(v, loaded[0][k]), k  # the image side (and buffers) untouched
    assert averaged > 0
    assert soup.checkpoint_meta["soup"]["members"] == [str(p) for p in members]

    torch.manual_seed(9)
    other = build_model(get_config("alac-tiny"), pretrained=False)  # another image side
    path = save_checkpoint(other, tmp_path / "other")
    refused = _run(str(members[0]), str(path), "-o", str(tmp_path / "bad"))
    assert refused.returncode != 0 and "image side differs" in refused.stderr
    assert not (tmp_path / "bad").exists()
    alone = _run(str(members[0]), "-o", str(tmp_path / "alone"))
    assert alone.returncode != 0 and "two or more" in alone.stderr
