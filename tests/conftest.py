"""Shared fixtures: paths to the sample rasters and the shared data folder."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from rsia_geo.sample_data import sample_data_dir

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"
UTC = dt.UTC


@pytest.fixture(scope="session")
def samples() -> Path:
    return sample_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("RSIA_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (path / "ucm" / "captions.json").exists():
        pytest.skip(f"shared data not found at {path} (set RSIA_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def stac_items_dir() -> Path:
    return TEST_DATA / "stac"


@pytest.fixture()
def sample_copy(tmp_path: Path, samples: Path) -> Path:
    """A writable copy of the sample rasters."""
    dst = tmp_path / "rasters"
    shutil.copytree(samples, dst, ignore=shutil.ignore_patterns("*.py", "*.md", "__pycache__"))
    return dst


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory: pytest.TempPathFactory, samples: Path):
    """A catalog of all sample rasters (built once per session)."""
    from rsia_geo.catalog import build_catalog

    out = tmp_path_factory.mktemp("catalog")
    return build_catalog([samples], out, default_datetime=dt.datetime(2020, 1, 1, tzinfo=UTC))
