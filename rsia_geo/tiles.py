"""Georeferenced image tiles cut from STAC Items, and reading their pixels.

A tile is a square pixel window of an Item's *reference grid* (the grid of its finest selected
asset) at one *scale level*: level ``f`` covers ``size * f`` native pixels and is read
(average-resampled, using overviews where present) to ``out_size`` pixels, so coarse levels see
large features and level 1 sees small ones. Bands that live in other assets, at other
resolutions or in another CRS are warped onto the reference grid.

Pixel values are scaled to [0, 1] once per Item, consistently for all its tiles, and the scaling
is recorded on every tile:

* ``dtype``: integer range of the data type (uint8 -> /255);
* ``reflectance``: ``raster:bands`` scale and offset give reflectance, then
  ``[0, reflectance_max]`` maps to [0, 1];
* ``percentile``: per-band robust percentiles of the valid pixels of the whole Item.

Tiles whose valid (non-nodata) fraction is below ``min_valid`` are skipped with a recorded reason.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rsia_geo._types import BBox
from rsia_geo.errors import (
    InvalidArgumentError,
    InvalidBBoxError,
    InvalidTileSpecError,
    RasterError,
    RsiaError,
    TileReadError,
)

if TYPE_CHECKING:
    import pystac

    from rsia_geo.catalog import BandSelection

__all__ = [
    "DEFAULT_IMAGE_VIEWS",
    "DEFAULT_SPEC",
    "IMAGE_VIEWS",
    "Grid",
    "Scaling",
    "SkippedTile",
    "Tile",
    "TileSet",
    "TileSpec",
    "check_views",
    "iter_tiles",
    "read_tile",
    "tile_item",
]

logger = logging.getLogger(__name__)

IMAGE_VIEWS = ("d8", "single")
"""How a tile is embedded: ``"d8"``, the mean of the raw embeddings of its 8 rotations and
reflections (the dihedral group of the square: invariant to the imagery's orientation, 8x the
encoder's work); ``"single"``, the tile as it is (what indexes held before image views)."""

DEFAULT_IMAGE_VIEWS = "d8"
"""The image views of a new index (``docs/benchmarks.md``, "Image views", measures both)."""


def check_views(views: object) -> str:
    """``views`` checked against :data:`IMAGE_VIEWS`.

    Args:
        views: The value given.

    Returns:
        It, when known.

    Raises:
        InvalidArgumentError: It is not one of :data:`IMAGE_VIEWS`.
    """
    if not isinstance(views, str) or views not in IMAGE_VIEWS:
        raise InvalidArgumentError(
            f"image_views={views!r} is not one of {list(IMAGE_VIEWS)}: 'd8' embeds a tile as "
            "the mean over its 8 rotations and reflections (better, 8x the encoder's work), "
            "'single' as it is"
        )
    return views


TILE_NAMESPACE = uuid.UUID("5b0c8f1e-2f55-4c7e-9a43-7f1f3c2a9e10")
_SURVEY_MAX_SIDE = 1024
_SUPPORTED_DTYPES = {"uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"}


# --------------------------------------------------------------------------------------------
# Specification and records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileSpec:
    """How to cut an Item into tiles.

    Attributes:
        size: Tile side at level 1, in ``units``.
        overlap: Overlap between neighbouring tiles at level 1, in ``units``.
        units: ``"px"`` (pixels of the reference grid) or ``"m"`` (ground metres).
        scales: Scale levels; level ``f`` covers ``size * f`` native pixels.
        out_size: Side in pixels of the array :func:`read_tile` returns; defaults to the tile
            side in pixels at level 1.
        min_valid: Tiles with a smaller fraction of valid pixels are skipped.
        scaling: ``"auto"``, ``"dtype"``, ``"reflectance"`` or ``"percentile"``.
        percentiles: Low/high percentiles for ``"percentile"`` scaling.
        reflectance_max: Reflectance mapped to 1.0 for ``"reflectance"`` scaling.
        min_pixels: Smallest tile side in native pixels; with ``units="m"``, an Item too coarse
            for the tile size (e.g. 78 m tiles on 30 m Landsat) is refused instead of being
            cut into a few-pixel tiles upsampled to ``out_size``.
    """

    size: float = 256
    overlap: float = 0
    units: Literal["px", "m"] = "px"
    scales: tuple[int, ...] = (1,)
    out_size: int | None = None
    min_valid: float = 0.5
    scaling: Literal["auto", "dtype", "reflectance", "percentile"] = "auto"
    percentiles: tuple[float, float] = (2.0, 98.0)
    reflectance_max: float = 0.3
    min_pixels: int = 32

    def __post_init__(self) -> None:
        """Validate the fields."""
        if not (isinstance(self.size, (int, float)) and math.isfinite(self.size) and self.size > 0):
            raise InvalidTileSpecError(f"size={self.size!r} must be a positive number")
        if not (0 <= self.overlap < self.size):
            raise InvalidTileSpecError(
                f"overlap={self.overlap!r} must be >= 0 and smaller than size={self.size!r}"
            )
        if self.units not in ("px", "m"):
            raise InvalidTileSpecError(f"units={self.units!r}; use 'px' or 'm'")
        scales = tuple(self.scales)
        if not scales or any(not isinstance(f, int) or f < 1 for f in scales):
            raise InvalidTileSpecError(
                f"scales={self.scales!r} must be positive integers, e.g. (1, 2, 4)"
            )
        object.__setattr__(self, "scales", tuple(sorted(set(scales))))
        if self.out_size is not None and (not isinstance(self.out_size, int) or self.out_size < 8):
            raise InvalidTileSpecError(f"out_size={self.out_size!r} must be an integer >= 8")
        if not (0 < self.min_valid <= 1):
            raise InvalidTileSpecError(f"min_valid={self.min_valid!r} must be in (0, 1]")
        if self.scaling not in ("auto", "dtype", "reflectance", "percentile"):
            raise InvalidTileSpecError(
                f"scaling={self.scaling!r}; use 'auto', 'dtype', 'reflectance' or 'percentile'"
            )
        lo, hi = self.percentiles
        if not (0 <= lo < hi <= 100):
            raise InvalidTileSpecError(
                f"percentiles={self.percentiles!r} must be 0 <= lo < hi <= 100"
            )
        if not self.reflectance_max > 0:
            raise InvalidTileSpecError(f"reflectance_max={self.reflectance_max!r} must be > 0")


DEFAULT_SPEC = TileSpec(size=78.0, overlap=39.0, units="m", scales=(1, 2), out_size=256)
"""The default tiling of every edge (library, CLI, service, demo): 78 m tiles (UCM's 256 px
at 0.3 m, the starter model's training footprint) read at 256 px, at levels 1 and 2, each
overlapping its neighbours by half (a stride of 39 m at level 1): a scene is never cut by
more than a quarter of a tile in each direction, and search groups the overlapping hits into
one per place (``rsia_geo.search(..., group=True)``)."""


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and shape.

    Attributes:
        crs: ``"EPSG:<code>"`` or WKT.
        transform: The six affine coefficients ``(a, b, c, d, e, f)``.
        width: Columns.
        height: Rows.
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def affine(self) -> Any:
        """The transform as an ``affine.Affine``."""
        from affine import Affine

        return Affine(*self.transform)

    @property
    def resolution(self) -> float:
        """Pixel size along x in CRS units."""
        return float(math.hypot(self.transform[0], self.transform[3]))


@dataclass(frozen=True)
class Scaling:
    """Linear map from raw values to [0, 1]: ``clip((x - low) / (high - low), 0, 1)``.

    Attributes:
        method: ``"dtype"``, ``"reflectance"`` or ``"percentile"``.
        low: Raw value mapped to 0, per band.
        high: Raw value mapped to 1, per band.
    """

    method: str
    low: tuple[float, ...]
    high: tuple[float, ...]

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Scale a ``(bands, h, w)`` array to float32 in [0, 1].

        Args:
            data: Raw values, one plane per band.

        Returns:
            The scaled array.
        """
        lo = np.asarray(self.low, dtype=np.float64)[:, None, None]
        hi = np.asarray(self.high, dtype=np.float64)[:, None, None]
        out = (data.astype(np.float64) - lo) / np.maximum(hi - lo, 1e-12)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class BandSource:
    """Where one output band comes from.

    Attributes:
        asset: Asset key in the Item.
        href: Absolute href of the asset.
        index: 1-based band index within the asset.
    """

    asset: str
    href: str
    index: int


@dataclass(frozen=True)
class Tile:
    """One georeferenced tile of an Item.

    Attributes:
        id: Deterministic UUID, stable across runs for the same Item, bands, level and window.
        item_id: STAC Item id.
        collection_id: STAC Collection id, if any.
        bands: Output band names.
        sources: Where each output band is read from.
        level: Scale level (decimation factor).
        window: ``(col_off, row_off, width, height)`` in reference-grid pixels.
        out_size: Output side in pixels.
        grid: The reference grid.
        bounds: Native-CRS bounds of the window clipped to the raster.
        footprint: Footprint in EPSG:4326 (shapely Polygon or MultiPolygon).
        centre: ``(lon, lat)`` of the window centre.
        datetime: ISO 8601 acquisition time, if known.
        gsd: Ground sample distance of an output pixel, metres.
        scaling: The value scaling applied by :func:`read_tile`.
        valid_fraction: Estimated fraction of valid pixels.
        platform: The Item's STAC ``platform`` (or ``constellation``), lower case, if given.
    """

    id: str
    item_id: str
    collection_id: str | None
    bands: tuple[str, ...]
    sources: tuple[BandSource, ...]
    level: int
    window: tuple[int, int, int, int]
    out_size: int
    grid: Grid
    bounds: tuple[float, float, float, float]
    footprint: Any = field(compare=False)
    centre: tuple[float, float]
    datetime: str | None
    gsd: float
    scaling: Scaling
    valid_fraction: float
    platform: str | None = None

    @property
    def crs(self) -> str:
        """Native CRS of the tile."""
        return self.grid.crs

    @property
    def asset_keys(self) -> tuple[str, ...]:
        """Distinct asset keys the tile reads."""
        return tuple(dict.fromkeys(s.asset for s in self.sources))

    def __str__(self) -> str:
        """The record as compact JSON (:meth:`to_dict`).

        Text writers (GeoPackage, GeoJSON) store this for a hit's ``tile``; it reads back with
        ``Tile.from_dict(json.loads(text))``.
        """
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def to_dict(self, *, footprint: bool = True) -> dict[str, Any]:
        """JSON-serialisable record (footprint as GeoJSON).

        Args:
            footprint: False leaves the footprint out (for a caller that stores it in a form of
                its own, as index payloads do): the costly part of the record to build.

        Returns:
            The record; :meth:`from_dict` restores the tile (given a footprint).
        """
        from shapely.geometry import mapping

        # fields read directly (``asdict`` would deep-copy the shapely footprint), nested
        # records (sources, grid, scaling) turned into dicts by the encoder
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if footprint:
            d["footprint"] = mapping(self.footprint)
        else:
            del d["footprint"]
        out: dict[str, Any] = json.loads(json.dumps(d, default=asdict))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tile:
        """Rebuild a tile from :meth:`to_dict` output.

        Args:
            d: The record (its footprint as GeoJSON, or a shapely geometry).

        Returns:
            The tile.
        """
        from shapely.geometry import shape

        return cls(
            id=d["id"],
            item_id=d["item_id"],
            collection_id=d.get("collection_id"),
            bands=tuple(d["bands"]),
            sources=tuple(BandSource(**s) for s in d["sources"]),
            level=int(d["level"]),
            window=tuple(d["window"]),  # type: ignore[arg-type]
            out_size=int(d["out_size"]),
            grid=Grid(
                d["grid"]["crs"],
                tuple(d["grid"]["transform"]),  # type: ignore[arg-type]
                d["grid"]["width"],
                d["grid"]["height"],
            ),
            bounds=tuple(d["bounds"]),  # type: ignore[arg-type]
            # GeoJSON, or a geometry already parsed (search has each hit's footprint)
            footprint=fp if hasattr(fp := d["footprint"], "geom_type") else shape(fp),
            centre=tuple(d["centre"]),  # type: ignore[arg-type]
            datetime=d.get("datetime"),
            gsd=float(d["gsd"]),
            scaling=Scaling(
                d["scaling"]["method"], tuple(d["scaling"]["low"]), tuple(d["scaling"]["high"])
            ),
            valid_fraction=float(d["valid_fraction"]),
            platform=d.get("platform"),
        )


@dataclass(frozen=True)
class SkippedTile:
    """A tile, scale level or Item that was not produced, and why.

    Attributes:
        item_id: The Item.
        reason: Human-readable reason.
        kind: ``"nodata"`` (too few valid pixels inside the raster), ``"edge"`` (mostly
            outside the raster), ``"level"`` (a scale level larger than the raster) or
            ``"item"`` (the whole Item could not be tiled).
        level: Scale level, when one level or tile was skipped.
        window: The tile window, when one tile was skipped.
    """

    item_id: str
    reason: str
    kind: Literal["nodata", "edge", "level", "item"] = "item"
    level: int | None = None
    window: tuple[int, int, int, int] | None = None


@dataclass
class TileSet:
    """Tiles of one or more Items, with what was skipped.

    Attributes:
        tiles: The tiles.
        skipped: Skipped tiles, levels or Items, each with its reason.
    """

    tiles: list[Tile] = field(default_factory=list)
    skipped: list[SkippedTile] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of tiles."""
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        """Iterate over the tiles."""
        return iter(self.tiles)

    def to_geodataframe(self) -> Any:
        """Tiles as a GeoDataFrame of footprints in EPSG:4326.

        Returns:
            A ``geopandas.GeoDataFrame`` with one row per tile.
        """
        import geopandas as gpd

        rows = [
            {
                "tile_id": t.id,
                "item_id": t.item_id,
                "level": t.level,
                "col_off": t.window[0],
                "row_off": t.window[1],
                "width": t.window[2],
                "height": t.window[3],
                "gsd": t.gsd,
                "crs": t.crs,
                "datetime": t.datetime,
                "valid_fraction": t.valid_fraction,
                "geometry": t.footprint,
            }
            for t in self.tiles
        ]
        if not rows:  # the same columns, no rows
            cols = ["tile_id", "item_id", "level", "col_off", "row_off", "width", "height"]
            cols += ["gsd", "crs", "datetime", "valid_fraction"]
            return gpd.GeoDataFrame(
                {c: [] for c in cols}, geometry=gpd.GeoSeries([], crs="EPSG:4326")
            )
        return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")


# --------------------------------------------------------------------------------------------
# Grids and reading
# --------------------------------------------------------------------------------------------


def _crs_string(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else str(crs.to_wkt())


def _grid_from_metadata(asset: pystac.Asset, item: pystac.Item) -> Grid | None:
    """Reference grid from projection-extension fields, without opening the raster."""

    def field_(name: str) -> Any:
        return asset.extra_fields.get(name, item.properties.get(name))

    code = field_("proj:code")
    if code is None and field_("proj:epsg") is not None:
        code = f"EPSG:{int(field_('proj:epsg'))}"
    crs = code or field_("proj:wkt2")
    shape = field_("proj:shape")
    transform = field_("proj:transform")
    if not (crs and shape and transform and len(transform) >= 6):
        return None
    return Grid(
        str(crs),
        tuple(float(v) for v in transform[:6]),  # type: ignore[arg-type]
        int(shape[1]),
        int(shape[0]),
    )


class _OpenDatasets:
    """Datasets kept open per thread while :func:`keep_datasets_open` is active.

    Reading neighbouring tiles through one open dataset lets GDAL's block cache serve the
    compressed blocks they share (a 512 px JPEG block holds four 256 px tiles): measured 4x
    faster windowed reads on the benchmark mosaic than opening the file for every tile.
    """

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.all: list[Any] = []
        self.active = 0

    def get(self, href: str) -> Any | None:
        if not self.active:
            return None
        handles: dict[str, Any] | None = getattr(self.local, "handles", None)
        if handles is None:
            handles = self.local.handles = {}
        ds = handles.get(href)
        if ds is None or ds.closed:
            ds = handles[href] = _open(href)
            with self.lock:
                self.all.append(ds)
        return ds

    def close_all(self) -> None:
        with self.lock:
            for ds in self.all:
                ds.close()
            self.all.clear()
        self.local = threading.local()


_OPEN = _OpenDatasets()


@contextmanager
def keep_datasets_open() -> Iterator[None]:
    """Keep rasters open (one handle per thread and file) for the reads inside the block.

    For bulk reads of many tiles of the same rasters (indexing); the handles are closed when
    the outermost block exits.
    """
    with _OPEN.lock:
        _OPEN.active += 1
    try:
        yield
    finally:
        with _OPEN.lock:
            _OPEN.active -= 1
            last = _OPEN.active == 0
        if last:
            _OPEN.close_all()


def _open(href: str) -> Any:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return rasterio.open(href)
    except RasterioIOError as exc:
        raise RasterError(
            f"cannot open asset {href!r}: {exc}. Check that the file exists and is a raster"
        ) from exc


def _grid_from_raster(href: str) -> tuple[Grid, dict[str, Any]]:
    from rsia_geo.env import gdal_env

    with gdal_env(), _open(href) as src:
        if src.crs is None:
            raise RasterError(
                f"asset {href!r} has no CRS, so tiles cannot be placed on the map; "
                "assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx)"
            )
        info = {"dtypes": src.dtypes, "nodata": src.nodata, "count": src.count}
        return Grid(_crs_string(src.crs), tuple(src.transform)[:6], src.width, src.height), info


@contextmanager
def _on_grid(src: Any, grid: Grid) -> Iterator[Any]:
    """An open raster as seen on the reference grid.

    Itself when it is that grid, else a bilinear WarpedVRT onto it (closed on exit; ``src`` is
    left open).
    """
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    same = (
        src.crs is not None
        and _crs_string(src.crs) == grid.crs
        and tuple(src.transform)[:6] == grid.transform
        and (src.width, src.height) == (grid.width, grid.height)
    )
    if same:
        yield src
        return
    with WarpedVRT(
        src,
        crs=grid.crs,
        transform=grid.affine,
        width=grid.width,
        height=grid.height,
        resampling=Resampling.bilinear,
    ) as vrt:
        yield vrt


def _read_window(
    sources: Sequence[BandSource],
    grid: Grid,
    window: tuple[int, int, int, int],
    out_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Read a reference-grid window of the given bands resampled to ``out_hw``.

    Parts of the window outside the raster are filled with 0 and flagged invalid.

    Returns:
        ``(data, valid)``: raw values ``(bands, h, w)`` as float64 and a boolean mask ``(h, w)``.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from rsia_geo.env import gdal_env

    col, row, w, h = window
    oh, ow = out_hw
    data = np.zeros((len(sources), oh, ow), dtype=np.float64)
    valid = np.ones((oh, ow), dtype=bool)
    # intersection with the grid, in window pixels and output pixels
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + w, grid.width), min(row + h, grid.height)
    if c1 <= c0 or r1 <= r0:
        return data, np.zeros((oh, ow), dtype=bool)
    sx, sy = ow / w, oh / h
    oc0, or0 = round((c0 - col) * sx), round((r0 - row) * sy)
    oc1, or1 = round((c1 - col) * sx), round((r1 - row) * sy)
    if oc1 <= oc0 or or1 <= or0:
        return data, np.zeros((oh, ow), dtype=bool)
    inner = np.zeros((oh, ow), dtype=bool)
    inner[or0:or1, oc0:oc1] = True
    valid &= inner
    sub = Window(c0, r0, c1 - c0, r1 - r0)
    by_href: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        by_href.setdefault(s.href, []).append(i)
    with gdal_env():
        for href, out_idx in by_href.items():
            kept = _OPEN.get(href)
            indexes = [sources[i].index for i in out_idx]
            shape = (len(indexes), or1 - or0, oc1 - oc0)
            with (
                nullcontext(kept) if kept is not None else _open(href) as src,
                _on_grid(src, grid) as ds,
            ):
                try:
                    arr = ds.read(
                        indexes, window=sub, out_shape=shape, resampling=Resampling.average
                    )
                    masks = ds.read_masks(
                        indexes, window=sub, out_shape=shape, resampling=Resampling.nearest
                    )
                except rasterio.errors.RasterioIOError as exc:
                    raise TileReadError(
                        f"reading window {window} of {href!r} failed: {exc}"
                    ) from exc
            for j, i in enumerate(out_idx):
                data[i, or0:or1, oc0:oc1] = arr[j]
            valid[or0:or1, oc0:oc1] &= (masks > 0).all(axis=0)
    return data, valid


def read_tile(
    tile: Tile, *, out_size: int | None = None, with_mask: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Read a tile's pixels, resampled to ``out_size`` and scaled to [0, 1].

    Args:
        tile: The tile.
        out_size: Output side in pixels; defaults to ``tile.out_size``.
        with_mask: Also return the boolean valid-pixel mask.

    Returns:
        A float32 array ``(bands, out_size, out_size)`` with invalid pixels set to 0, or
        ``(array, mask)`` when ``with_mask``.

    Raises:
        TileReadError: The asset cannot be read.
    """
    size = out_size or tile.out_size
    if size < 1:
        raise InvalidTileSpecError(f"out_size={out_size!r} must be positive")
    try:
        raw, valid = _read_window(tile.sources, tile.grid, tile.window, (size, size))
    except RasterError as exc:
        if isinstance(exc, TileReadError):
            raise
        raise TileReadError(str(exc)) from exc
    out = tile.scaling.apply(raw)
    out[:, ~valid] = 0.0
    return (out, valid) if with_mask else out


# --------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------


def _choose_scaling(
    spec: TileSpec,
    dtypes: Sequence[str],
    raster_bands: Sequence[dict[str, Any]],
    survey: np.ndarray,
    survey_valid: np.ndarray,
    item_id: str,
) -> Scaling:
    method = spec.scaling
    scale_offset = [
        (float(rb.get("scale", 1.0) or 1.0), float(rb.get("offset", 0.0) or 0.0))
        for rb in raster_bands
    ]
    has_reflectance = any(so != (1.0, 0.0) for so in scale_offset)
    if method == "auto":
        if all(d == "uint8" for d in dtypes):
            method = "dtype"
        elif has_reflectance:
            method = "reflectance"
        else:
            method = "percentile"
    if method == "dtype":
        highs: list[float] = []
        for d in dtypes:
            if not np.issubdtype(np.dtype(d), np.integer):
                raise InvalidTileSpecError(
                    f"scaling='dtype' needs integer data but item {item_id!r} has {d}; "
                    "use scaling='percentile'"
                )
            highs.append(float(np.iinfo(np.dtype(d)).max))
        return Scaling("dtype", tuple(0.0 for _ in dtypes), tuple(highs))
    if method == "reflectance":
        if not has_reflectance:
            raise InvalidTileSpecError(
                f"scaling='reflectance' needs raster:bands scale/offset, which item {item_id!r} "
                "lacks; use scaling='percentile'"
            )
        lows = tuple((0.0 - o) / s for s, o in scale_offset)
        return Scaling(
            "reflectance", lows, tuple((spec.reflectance_max - o) / s for s, o in scale_offset)
        )
    lo_p, hi_p = spec.percentiles
    lows_l, highs_l = [], []
    for b in range(survey.shape[0]):
        vals = survey[b][survey_valid]
        if vals.size == 0:
            lows_l.append(0.0)
            highs_l.append(1.0)
            continue
        lo, hi = np.percentile(vals, [lo_p, hi_p])
        if hi <= lo:
            hi = lo + 1.0
        lows_l.append(float(lo))
        highs_l.append(float(hi))
    return Scaling("percentile", tuple(lows_l), tuple(highs_l))


def _tile_id(
    item_id: str,
    collection: str | None,
    sources: Sequence[BandSource],
    level: int,
    window: tuple[int, int, int, int],
    out_size: int,
) -> str:
    key = json.dumps(
        [collection, item_id, [(s.asset, s.index) for s in sources], level, list(window), out_size],
        separators=(",", ":"),
    )
    return str(uuid.uuid5(TILE_NAMESPACE, key))


def grid_windows(
    width: int, height: int, size: int, stride: int
) -> Iterator[tuple[int, int, int, int]]:
    """The windows of one tiling level over a raster grid, row by row (no pixels read).

    Windows start every ``stride`` pixels from the top-left corner; the last row and column
    start where the raster still has pixels, so every pixel is covered and edge windows may
    run past the raster (their valid part is what :func:`read_tile` returns). This is the
    enumeration alone, apart from reading, as torchgeo's ``tile_to_chips`` is.

    Args:
        width: Raster width in pixels.
        height: Raster height in pixels.
        size: Window side in pixels.
        stride: Step between window starts (``size`` minus the overlap).

    Returns:
        ``(col, row, size, size)`` windows.
    """
    for row in _starts(height, size, stride):
        for col in _starts(width, size, stride):
            yield (col, row, size, size)


def _starts(extent: int, tile: int, step: int) -> list[int]:
    if extent <= tile:
        return [0]
    n = math.ceil((extent - tile) / step) + 1
    return [i * step for i in range(n)]


def _item_time(item: Any) -> str | None:
    """An item's acquisition time: its ``datetime``, or its ``start/end`` interval (ISO 8601)."""
    if item.datetime:
        return str(item.datetime.isoformat())
    start = item.properties.get("start_datetime")
    end = item.properties.get("end_datetime")
    if start and end:
        return f"{start}/{end}"
    return start or end or None


def _item_platform(item: Any) -> str | None:
    """An item's platform: STAC ``platform``, else ``constellation`` (lower case), or None."""
    value = item.properties.get("platform") or item.properties.get("constellation")
    return str(value).strip().lower() or None if value else None


# Over 80 lines with its signature and docstring (29); the body (54) is one pass over each
# level's grid windows.
def tile_item(
    item: pystac.Item,
    spec: TileSpec | None = None,
    *,
    bands: Sequence[str] | None = None,
    assets: Sequence[str] | None = None,
    bbox: BBox | None = None,
) -> TileSet:
    """Cut one STAC Item into tiles at every scale level of ``spec``.

    Reads the Item once at reduced resolution (at most 1024 px a side, from overviews where
    present) to estimate each tile's valid fraction and the Item's value scaling.

    Args:
        item: The Item.
        spec: Tile specification; defaults to :data:`DEFAULT_SPEC` (78 m, levels 1-2).
        bands: Bands to read (see :func:`rsia_geo.catalog.select_bands`); default RGB.
        assets: Restrict band lookup to these asset keys.
        bbox: Only tiles whose footprint intersects this lon/lat box.

    Returns:
        The tiles and the skipped tiles/levels with reasons.

    Raises:
        AssetSelectionError: The bands are not in the Item.
        InvalidTileSpecError: The tile is larger than the raster, or the scaling cannot apply.
        InvalidBBoxError: ``bbox`` is malformed or does not intersect the Item.
        RasterError: An asset is unreadable, has no CRS or an unsupported data type.
    """
    from shapely.geometry import shape

    from rsia_geo._geo import gsd_metres, window_footprint
    from rsia_geo.catalog import select_bands

    spec = spec or DEFAULT_SPEC
    region = _item_region(item, bbox)
    selection: BandSelection = select_bands(item, bands, assets=assets)
    grid, sources, dtypes, raster_bands = _item_sources(item, selection)
    lat = shape(item.geometry).centroid.y if item.geometry else 0.0
    px_m = gsd_metres(grid.crs, grid.affine, lat)
    size_px, overlap_px = _tile_pixels(spec, grid, item.id, px_m)
    survey = _Survey(sources, grid)
    scaling = _choose_scaling(spec, dtypes, raster_bands, survey.pixels, survey.valid, item.id)
    facts = _ItemFacts(
        item.id, item.collection_id, selection.bands, sources, grid, scaling,
        out_size=spec.out_size or size_px, datetime=_item_time(item),
        platform=_item_platform(item),
    )  # fmt: skip
    out = TileSet()
    for level in spec.scales:
        t, step = size_px * level, (size_px - overlap_px) * level
        if t > grid.width or t > grid.height:
            out.skipped.append(
                SkippedTile(
                    item.id,
                    f"level {level}: tile of {t} px exceeds the raster "
                    f"({grid.width}x{grid.height} px)",
                    kind="level",
                    level=level,
                )
            )
            continue
        for window in grid_windows(grid.width, grid.height, t, step):
            frac = survey.valid_fraction(*window)
            if frac < spec.min_valid:
                col, row = window[0], window[1]
                inside = col + t <= grid.width and row + t <= grid.height
                out.skipped.append(
                    SkippedTile(
                        item.id,
                        f"valid fraction {frac:.2f} < min_valid {spec.min_valid}",
                        kind="nodata" if inside else "edge",
                        level=level,
                        window=window,
                    )
                )
                continue
            footprint = window_footprint(grid.crs, grid.affine, *_clipped(grid, window))
            if region is not None and not footprint.intersects(region):
                continue  # the id and centre are only computed for tiles that are kept
            gsd = px_m * t / facts.out_size
            out.tiles.append(_make_tile(facts, level, window, footprint, gsd, frac))
    return out


def _item_region(item: pystac.Item, bbox: BBox | None) -> Any:
    """The lon/lat region of ``bbox`` (None without one), refused if it misses the Item."""
    from shapely.geometry import shape

    from rsia_geo._geo import bbox_to_geometry, validate_bbox

    if bbox is None:
        return None
    region = bbox_to_geometry(validate_bbox(bbox))
    if item.geometry is not None and not shape(item.geometry).intersects(region):
        raise InvalidBBoxError(
            f"bbox={tuple(bbox)!r} does not intersect item {item.id!r} "
            f"(item bbox {item.bbox!r}); pass a box inside the imagery or bbox=None"
        )
    return region


def _item_sources(
    item: pystac.Item, selection: BandSelection
) -> tuple[Grid, tuple[BandSource, ...], list[str], list[dict[str, Any]]]:
    """Check the selected assets and describe them.

    Returns the reference grid (the finest asset's), the band sources, their data types and
    their STAC ``raster:bands`` entries.
    """
    grids: dict[str, Grid] = {}
    infos: dict[str, dict[str, Any]] = {}
    for key in selection.asset_keys:
        asset = item.assets[key]
        grids[key], infos[key] = _grid_from_raster(asset.get_absolute_href() or asset.href)
    grid = grids[min(selection.asset_keys, key=lambda k: grids[k].resolution)]
    sources = tuple(
        BandSource(k, item.assets[k].get_absolute_href() or item.assets[k].href, i)
        for k, i in selection.sources
    )
    dtypes = []
    for k, i in selection.sources:
        info = infos[k]
        if i > info["count"]:
            raise RasterError(
                f"asset {k!r} of item {item.id!r} has {info['count']} bands; band {i} requested"
            )
        dtypes.append(info["dtypes"][i - 1])
    bad = sorted(set(dtypes) - _SUPPORTED_DTYPES)
    if bad:
        raise RasterError(
            f"item {item.id!r} has unsupported data type(s) {bad}; supported: "
            f"{sorted(_SUPPORTED_DTYPES)}. Convert the raster (e.g. gdal_translate -ot UInt16)"
        )
    raster_bands = []
    for k, i in selection.sources:
        rb = item.assets[k].extra_fields.get("raster:bands") or []
        raster_bands.append(rb[i - 1] if len(rb) >= i else {})
    return grid, sources, dtypes, raster_bands


def _tile_pixels(spec: TileSpec, grid: Grid, item_id: str, px_m: float) -> tuple[int, int]:
    """Tile side and overlap in reference pixels, checked against the raster."""
    if spec.units == "m":
        size_px = max(1, round(spec.size / px_m))
        overlap_px = round(spec.overlap / px_m)
    else:
        size_px, overlap_px = round(spec.size), round(spec.overlap)
    if size_px < spec.min_pixels:
        raise InvalidTileSpecError(
            f"item {item_id!r} is too coarse for {spec.size:g} {spec.units} tiles: they would "
            f"be {size_px} px of {px_m:.2f} m (min_pixels={spec.min_pixels}); use larger tiles "
            "for this imagery"
        )
    if overlap_px >= size_px:
        raise InvalidTileSpecError(
            f"overlap {spec.overlap}{spec.units} is {overlap_px} px, not less than the tile "
            f"({size_px} px) at this item's resolution; lower the overlap"
        )
    if size_px > grid.width or size_px > grid.height:
        raise InvalidTileSpecError(
            f"tile size {spec.size:g} {spec.units}"
            + (f" ({size_px} px)" if spec.units == "m" else "")
            + f" is larger than item {item_id!r} "
            f"({grid.width}x{grid.height} px); use size <= {min(grid.width, grid.height)} px"
        )
    return size_px, overlap_px


class _Survey:
    """One reduced-resolution read of an Item, from overviews where present.

    At most ``_SURVEY_MAX_SIDE`` px a side: the pixels choose the value scaling, and the valid
    mask gives each window's valid fraction (through a summed-area table).
    """

    def __init__(self, sources: tuple[BandSource, ...], grid: Grid) -> None:
        d = max(1, math.ceil(max(grid.width, grid.height) / _SURVEY_MAX_SIDE))
        self.d, self.h, self.w = d, math.ceil(grid.height / d), math.ceil(grid.width / d)
        self.pixels, self.valid = _read_window(
            sources, grid, (0, 0, self.w * d, self.h * d), (self.h, self.w)
        )
        self.integral = np.pad(self.valid.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def valid_fraction(self, col: int, row: int, w: int, h: int) -> float:
        """Estimated fraction of valid pixels in a window of reference pixels."""
        d = self.d
        a0, b0 = max(0, row // d), max(0, col // d)
        a1, b1 = min(self.h, math.ceil((row + h) / d)), min(self.w, math.ceil((col + w) / d))
        if a1 <= a0 or b1 <= b0:
            return 0.0
        ii = self.integral
        n = ii[a1, b1] - ii[a0, b1] - ii[a1, b0] + ii[a0, b0]
        return float(n) / (math.ceil(h / d) * math.ceil(w / d))


@dataclass(frozen=True)
class _ItemFacts:
    """What every tile of one Item shares (computed once per Item, not per window)."""

    item_id: str
    collection_id: str | None
    bands: tuple[str, ...]
    sources: tuple[BandSource, ...]
    grid: Grid
    scaling: Scaling
    out_size: int
    datetime: str | None
    platform: str | None


def _clipped(grid: Grid, window: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A window's ``(col, row, width, height)`` clipped to the raster."""
    col, row, w, h = window
    return col, row, min(w, grid.width - col), min(h, grid.height - row)


def _make_tile(
    facts: _ItemFacts,
    level: int,
    window: tuple[int, int, int, int],
    footprint: Any,
    gsd: float,
    valid_fraction: float,
) -> Tile:
    """The record of one window (its footprint and bounds clipped to the raster)."""
    from rsia_geo._geo import pixel_to_xy, window_centre

    grid = facts.grid
    col, row, cw, ch = _clipped(grid, window)
    x0, y0 = pixel_to_xy(grid.affine, col, row)
    x1, y1 = pixel_to_xy(grid.affine, col + cw, row + ch)
    return Tile(
        id=_tile_id(
            facts.item_id, facts.collection_id, facts.sources, level, window, facts.out_size
        ),
        item_id=facts.item_id,
        collection_id=facts.collection_id,
        bands=facts.bands,
        sources=facts.sources,
        level=level,
        window=window,
        out_size=facts.out_size,
        grid=grid,
        bounds=(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
        footprint=footprint,
        centre=window_centre(grid.crs, grid.affine, col, row, cw, ch),
        datetime=facts.datetime,
        gsd=gsd,
        scaling=facts.scaling,
        valid_fraction=valid_fraction,
        platform=facts.platform,
    )


def iter_tiles(
    source: Any,
    spec: TileSpec | None = None,
    *,
    bands: Sequence[str] | None = None,
    assets: Sequence[str] | None = None,
    bbox: BBox | None = None,
    on_skip: Callable[[SkippedTile], None] | None = None,
) -> Iterator[Tile]:
    """Tile every Item of a catalog, collection, item collection or list of Items.

    An Item that cannot be tiled (unreadable asset, missing band, tile larger than the raster)
    is skipped with its reason passed to ``on_skip`` and logged; the walk goes on.

    Args:
        source: Anything :func:`rsia_geo.catalog.iter_items` accepts.
        spec: Tile specification (default :data:`DEFAULT_SPEC`).
        bands: Bands to read; default RGB.
        assets: Restrict band lookup to these asset keys.
        bbox: Only Items and tiles intersecting this lon/lat box.
        on_skip: Called for every skipped tile, level or Item.

    Yields:
        Tiles, Item by Item.
    """
    from shapely.geometry import shape

    from rsia_geo._geo import bbox_to_geometry, validate_bbox
    from rsia_geo.catalog import iter_items

    region = bbox_to_geometry(validate_bbox(bbox)) if bbox is not None else None

    def skip(s: SkippedTile) -> None:
        logger.info("skipped %s: %s", s.item_id, s.reason)
        if on_skip is not None:
            on_skip(s)

    for item in iter_items(source):
        if region is not None and item.geometry and not shape(item.geometry).intersects(region):
            continue
        try:
            result = tile_item(item, spec, bands=bands, assets=assets, bbox=bbox)
        except RsiaError as exc:
            logger.info("skipping item %s: %s", item.id, exc)
            skip(SkippedTile(item.id, f"{type(exc).__name__}: {exc}"))
            continue
        for s in result.skipped:
            skip(s)
        yield from result.tiles
