"""Type aliases shared across rsia_geo."""

from __future__ import annotations

import os
from typing import Union

__all__ = ["BBox", "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]
"""A filesystem path as a string or path object."""

BBox = tuple[float, float, float, float]
"""``(minx, miny, maxx, maxy)``; in EPSG:4326 (lon/lat) unless stated otherwise."""
