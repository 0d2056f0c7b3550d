"""The notebooks run top to bottom, match their generator, and the docs build strictly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_match_their_generator():
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_your_own_imagery.ipynb",
        "03_train_and_evaluate.ipynb",
        "04_scaling_out.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    """Execute a copy with a real kernel; any cell error (including its asserts) fails."""
    import nbformat
    from nbclient import NotebookClient

    if path.name.startswith("03_"):
        shared = Path(os.environ.get("RSIA_SHARED_DATA", REPO.parent / "shared" / "data"))
        if not (shared / "ucm" / "captions.json").exists():
            pytest.skip(f"UCM captions not found under {shared} (set RSIA_SHARED_DATA)")
        monkeypatch.setenv("RSIA_SHARED_DATA", str(shared.resolve()))
        if not shutil.which("espeak-ng") and not shutil.which("flite"):
            pytest.skip("no speech engine (apt-get install espeak-ng flite)")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    # every code cell ran and produced what it shows from this execution
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_docs_build_strict(tmp_path):
    """mkdocs (API reference from docstrings included) with warnings as errors."""
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("rsia_geo.pipeline.search", "rsia_geo.jupyter.SearchPanel", "RsiaError"):
        assert name in api


def test_deployment_guide_lists_every_environment_variable():
    """The deployment guide's table names each ``RSIA_*`` variable the library or the QGIS
    plugin reads, and nothing they do not."""
    import re

    root = Path(__file__).resolve().parents[1]
    code = "".join(
        f.read_text(encoding="utf-8")
        for folder in ("rsia_geo", "plugins")
        for f in (root / folder).rglob("*.py")
    )
    read = set(re.findall(r"\bRSIA_[A-Z_]+[A-Z]\b", code))
    guide = (root / "docs" / "deployment.md").read_text(encoding="utf-8")
    table = guide[guide.index("## Environment variables") :]
    table = table[: table.index("\n## ")]
    listed = set(re.findall(r"^\| `(RSIA_[A-Z_]+)` \|", table, flags=re.M))
    assert read and listed == read, (sorted(read - listed), sorted(listed - read))
