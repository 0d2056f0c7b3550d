"""What a wheel of rsia_geo carries: an install that is not editable must still have its models."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_weights_and_the_sample_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("rsia_geo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p for p in (ROOT / "rsia_geo" / "weights").rglob("*") if p.is_file()]
    assert shipped, "no shipped checkpoints in the source tree"
    missing = [
        p.relative_to(ROOT).as_posix() for p in shipped
        if p.relative_to(ROOT).as_posix() not in names
    ]  # fmt: skip
    assert not missing, f"the wheel lacks {missing[:5]}"
    assert any(n.startswith("rsia_geo/sample_data/") for n in names)
