"""Small real rasters shipped with rsia_geo for the demo and tests (see README.md here)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["sample_data_dir"]


def sample_data_dir() -> Path:
    """Folder holding the sample rasters (``naip/``, ``aerial/``, ``landsat/``).

    Returns:
        The folder inside the installed package.
    """
    return Path(__file__).resolve().parent
