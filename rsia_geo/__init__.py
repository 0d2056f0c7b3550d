"""rsia_geo: spoken, region-restricted search over your own georeferenced imagery.

The pipeline: STAC catalogs of rasters -> georeferenced tiles (rasterio) -> ALAC image and
speech encoders -> a Qdrant collection with geographic payloads -> spoken queries restricted
to a region. This top-level module only exposes light objects; heavy dependencies (torch,
Qdrant) are imported when first used.
"""

from __future__ import annotations

import logging

from rsia_geo.catalog import (
    BandSelection,
    build_catalog,
    item_from_band_files,
    item_from_raster,
    iter_items,
    open_stac,
    search_stac,
    select_bands,
)
from rsia_geo.errors import RsiaError
from rsia_geo.index import TileIndex
from rsia_geo.pipeline import IndexReport, build_index, read_chip, search
from rsia_geo.tiles import Tile, TileSet, TileSpec, iter_tiles, read_tile, tile_item

__version__ = "0.1.0"

__all__ = [
    "BandSelection",
    "IndexReport",
    "RsiaError",
    "Tile",
    "TileSet",
    "TileIndex",
    "TileSpec",
    "__version__",
    "build_catalog",
    "build_index",
    "item_from_band_files",
    "item_from_raster",
    "iter_items",
    "iter_tiles",
    "open_stac",
    "read_chip",
    "read_tile",
    "search",
    "search_stac",
    "select_bands",
    "tile_item",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
