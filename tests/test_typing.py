"""The public surface is typed: strict mypy catches misuse of the everyday calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

REPO = Path(__file__).resolve().parents[1]

GOOD = """
import numpy as np
import rsia_geo
from rsia_geo.index import TileIndex

with TileIndex("idx") as idx:
    a = rsia_geo.search("q.wav", idx, k=5, bbox=(0.0, 0.0, 1.0, 1.0))
    b = rsia_geo.search(np.zeros(16000, dtype=np.float32), "idx", sample_rate=16000)
    c = rsia_geo.search(None, "idx", "my_checkpoint", text="boats in a harbour")
    chip = rsia_geo.read_chip(a.iloc[0])
"""

BAD = """
import rsia_geo

rsia_geo.search(3.5, "idx")
rsia_geo.search("q.wav", 42)
rsia_geo.search("q.wav", "idx", model=7)
rsia_geo.search("q.wav", "idx", k="ten")
rsia_geo.search("q.wav", "idx", bbox="0,0,1,1")
"""


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "use.py"
    src.write_text(code)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--no-incremental", str(src)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_good_usage_passes_and_misuse_is_caught(tmp_path):
    code = GOOD + BAD.replace("import rsia_geo\n", "", 1)
    r = _mypy(tmp_path, code)
    bad_lines = {
        n for n, line in enumerate(code.splitlines(), start=1) if line.startswith("rsia_geo.search")
    }
    errors = {int(line.split(":")[1]) for line in r.stdout.splitlines() if ": error:" in line}
    # every misuse is an error, and the everyday usage above it type-checks
    assert len(bad_lines) == 5 and errors == bad_lines, r.stdout
