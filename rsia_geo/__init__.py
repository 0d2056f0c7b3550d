"""rsia_geo: spoken, region-restricted search over your own georeferenced imagery.

The pipeline: STAC catalogs of rasters -> georeferenced tiles (rasterio) -> ALAC image and
speech encoders -> a Qdrant collection with geographic payloads -> spoken queries restricted
to a region. This top-level module only exposes light objects; heavy dependencies (torch,
Qdrant) are imported when first used.
"""

from __future__ import annotations

import logging

from rsia_geo.catalog import build_catalog, open_stac
from rsia_geo.errors import RsiaError
from rsia_geo.index import TileIndex
from rsia_geo.pipeline import build_index, read_chip, search
from rsia_geo.tiles import TileSpec

__version__ = "0.1.0"

# The day's work in nine names: catalog -> index -> search -> pixels. Everything else lives in
# its module: rsia_geo.catalog (Items, bands, STAC search), rsia_geo.tiles (tiling, reading),
# rsia_geo.results (exports, maps), rsia_geo.similar (more like this), rsia_geo.errors.
__all__ = [
    "RsiaError",
    "TileIndex",
    "TileSpec",
    "__version__",
    "build_catalog",
    "build_index",
    "open_stac",
    "read_chip",
    "search",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
