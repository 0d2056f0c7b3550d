"""Exceptions raised by rsia_geo.

Every exception the library raises on purpose derives from :class:`RsiaError`, so callers can
catch one root. Most subclasses also derive from the builtin exception that describes the
same failure (``ValueError``, ``FileNotFoundError``, ...), so generic handlers keep working.

This module imports nothing outside the standard library.
"""

from __future__ import annotations

__all__ = [
    "AssetSelectionError",
    "AudioDecodeError",
    "AudioError",
    "CatalogError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "DependencyNotFoundError",
    "EmptyCatalogError",
    "InvalidArgumentError",
    "InvalidAudioError",
    "InvalidBBoxError",
    "InvalidRegionError",
    "InvalidTileSpecError",
    "VectorIndexError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexUnavailableError",
    "ModelConfigError",
    "ModelMismatchError",
    "PayloadTooLargeError",
    "ServiceKeyError",
    "TilingMismatchError",
    "RasterError",
    "RsiaError",
    "TileNotFoundError",
    "TileReadError",
]


class RsiaError(Exception):
    """Root of every exception raised by rsia_geo."""


class DependencyNotFoundError(RsiaError, ModuleNotFoundError):
    """An optional dependency is missing; the message names the extra to install."""


class CatalogError(RsiaError, ValueError):
    """A STAC catalog, collection or item is malformed or cannot be built."""


class EmptyCatalogError(CatalogError):
    """A catalog or search yielded no items."""


class AssetSelectionError(CatalogError, KeyError):
    """The requested assets or bands are not in an item; the message lists what is."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RasterError(RsiaError, OSError):
    """A raster cannot be opened or lacks what tiling needs (CRS, dtype, bands)."""


class TileReadError(RasterError):
    """Reading the pixels of one tile failed."""


class InvalidTileSpecError(RsiaError, ValueError):
    """A tile grid specification (size, overlap, scales) is invalid for the raster."""


class InvalidRegionError(RsiaError, ValueError):
    """A query region (polygon, GeoJSON, bbox) is malformed, empty or has no area."""


class InvalidBBoxError(InvalidRegionError):
    """A bounding box is malformed or outside valid lon/lat ranges."""


class InvalidArgumentError(RsiaError, ValueError):
    """An argument has the wrong type or value (the message names it and the fix)."""


class TileNotFoundError(InvalidArgumentError, KeyError):
    """A tile id (an example, a mark, a hit) is not in the index."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PayloadTooLargeError(InvalidArgumentError):
    """A request or upload is larger than the service accepts (HTTP 413)."""


class ServiceKeyError(RsiaError, PermissionError):
    """A service request lacks the right ``X-API-Key`` (HTTP 401)."""


class AudioError(RsiaError, ValueError):
    """Root of audio input errors."""


class AudioDecodeError(AudioError):
    """Audio bytes or a file cannot be decoded (unknown or corrupt container)."""


class InvalidAudioError(AudioError):
    """Decoded audio is unusable: empty, silent, non-finite, too long, bad sample rate."""


class CheckpointError(RsiaError, ValueError):
    """A model checkpoint is malformed or incompatible."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A model checkpoint or weights file does not exist."""


class VectorIndexError(RsiaError, RuntimeError):
    """The vector index is missing, inconsistent or cannot be written."""


class IndexNotFoundError(VectorIndexError, FileNotFoundError):
    """No index at the given folder (nothing is created when only reading)."""


class IndexLockedError(VectorIndexError):
    """An embedded index folder is in use by another process."""


class IndexUnavailableError(VectorIndexError, ConnectionError):
    """A Qdrant server cannot be reached (after bounded retries)."""


class ModelConfigError(RsiaError, ValueError):
    """A model configuration is unknown or inconsistent."""


class ModelMismatchError(RsiaError, ValueError):
    """An index was built with another model than the one used to query or extend it."""


class TilingMismatchError(ModelMismatchError):
    """An index holds tiles cut or read otherwise (tiling, bands) than a new run asks for."""
