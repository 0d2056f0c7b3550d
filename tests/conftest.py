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


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.requires_programs("espeak-ng", ...)``: skip without them, but fail in CI.

    CI installs the speech engines (``.ci/run`` -> ``make test``); if one is missing there, the
    tests that need it must fail loudly rather than skip silently.
    """
    for mark in item.iter_markers("requires_programs"):
        missing = [p for p in mark.args if shutil.which(p) is None]
        if missing:
            msg = f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})"
            if _in_ci():
                pytest.fail(f"CI=true but {msg}", pytrace=False)
            pytest.skip(msg)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ``alac-tiny`` checkpoint (seeded), saved once per session."""
    torch = pytest.importorskip("torch")
    from rsia_geo.models import build_model, get_config, save_checkpoint

    torch.manual_seed(0)
    model = build_model(get_config("alac-tiny"), pretrained=False)
    return save_checkpoint(model, tmp_path_factory.mktemp("tiny") / "ck")


@pytest.fixture(scope="session")
def banked_index(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> tuple[Path, Path]:
    """A seeded ``alac-tiny`` checkpoint with a reference bank of 64 random clips (for the
    bank rerank and the hubness: only the mechanics are tested), and the aerial COG (16
    tiles of 256 px, dated 2020-01-01) indexed with it: ``(root, checkpoint)``, the catalog
    in ``root / "cat"``, the index in ``root / "idx"``."""
    torch = pytest.importorskip("torch")
    from rsia_geo import build_catalog, build_index
    from rsia_geo.models import build_model, get_config, save_checkpoint
    from rsia_geo.tiles import TileSpec

    root = tmp_path_factory.mktemp("banked")
    torch.manual_seed(0)
    model = build_model(get_config("alac-tiny"), pretrained=False)
    ckpt = save_checkpoint(model, root / "ck", audio_bank=torch.randn(64, 64))
    cat = build_catalog(
        [samples / "aerial"], root / "cat", default_datetime=dt.datetime(2020, 1, 1)
    )
    build_index(cat, root / "idx", ckpt, spec=TileSpec(size=256), progress=False)
    return root, ckpt


@pytest.fixture()
def aerial_catalog(tmp_path: Path, samples: Path):
    """A catalog of the aerial sample COG (16 tiles of 256 px), dated 2020-01-01."""
    from rsia_geo.catalog import build_catalog

    return build_catalog(
        [samples / "aerial"], tmp_path / "cat", default_datetime=dt.datetime(2020, 1, 1)
    )
