"""Scoped GDAL configuration for reading rasters and Cloud-Optimized GeoTIFFs."""

from __future__ import annotations

from typing import Any

__all__ = ["COG_READ_OPTIONS", "gdal_env"]

COG_READ_OPTIONS: dict[str, Any] = {
    # Do not list a remote "folder" on open: a COG needs only its own header.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.vrt",
    # Merge neighbouring block requests into one HTTP range request.
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
    # Block cache for decoded tiles. rasterio passes an int straight to GDALSetCacheMax64, so
    # the value is in BYTES: a bare 256 meant a 256-byte cache, which re-decoded every
    # compressed block on every read (7x slower windowed reads; tests/test_tiles.py checks).
    "GDAL_CACHEMAX": 256 * 1024 * 1024,
}
"""GDAL options used for every read, following the usual COG-reading recommendations."""


def gdal_env(**options: Any) -> Any:
    """Return a ``rasterio.Env`` with COG read options, overridable per call.

    GDAL's state is set only inside the ``with`` block, never through ``os.environ``.

    Args:
        **options: GDAL configuration options that override :data:`COG_READ_OPTIONS`.

    Returns:
        A ``rasterio.Env`` context manager.
    """
    import rasterio

    return rasterio.Env(**{**COG_READ_OPTIONS, **options})
