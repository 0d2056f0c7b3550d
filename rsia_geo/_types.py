"""Type aliases shared across rsia_geo."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import numpy as np

    from rsia_geo.models.alac import ALACModel

__all__ = ["AudioSource", "BBox", "ModelSource", "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]
"""A filesystem path as a string or path object."""

AudioSource = Union[str, "os.PathLike[str]", bytes, "np.ndarray"]
"""Audio to decode: a file path, the file's bytes, or samples (with their sample rate)."""

ModelSource = Union["ALACModel", str, "os.PathLike[str]", None]
"""A model: loaded, a checkpoint folder, or None for the shipped starter."""

BBox = tuple[float, float, float, float]
"""``(minx, miny, maxx, maxy)``; in EPSG:4326 (lon/lat) unless stated otherwise."""
