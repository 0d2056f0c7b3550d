"""Qdrant index of tile embeddings with geographic payloads."""

from __future__ import annotations

from rsia_geo.index.backends import Hit
from rsia_geo.index.payload import Region, make_region
from rsia_geo.index.tile_index import TileIndex

__all__ = ["Hit", "Region", "TileIndex", "make_region"]
