"""Qdrant index of tile embeddings with geographic payloads."""

from __future__ import annotations

from rsia_geo.index.backends import Hit
from rsia_geo.index.tile_index import TileIndex
from rsia_geo.query import Region, make_region

__all__ = ["Hit", "Region", "TileIndex", "make_region"]
