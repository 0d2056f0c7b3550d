"""Geometry helpers: footprints of pixel windows in EPSG:4326, GSD, bbox validation.

Footprints are computed from the densified outline of a pixel window: its points are
reprojected one by one, their longitudes unwrapped along the outline (so the outline stays
continuous across the 180th meridian), and the polygon is split at 180 here. GDAL's own
antimeridian cutting is not trusted: for a window lying just past 180 in a UTM zone it returns
an uncut polygon spanning the globe. A window that straddles the 180th meridian becomes a
MultiPolygon in lon/lat; every footprint is checked valid and of plausible extent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rsia_geo._types import BBox
from rsia_geo.errors import InvalidBBoxError

__all__ = [
    "bbox_to_geometry",
    "geojson_geometry",
    "gsd_metres",
    "pixel_to_xy",
    "validate_bbox",
    "window_footprint",
    "window_centre",
]

_EARTH_RADIUS_M = 6_371_008.8


def pixel_to_xy(transform: Any, col: float, row: float) -> tuple[float, float]:
    """Map pixel coordinates to CRS coordinates with an affine transform.

    Args:
        transform: An ``affine.Affine`` (or anything with ``a``..``f`` coefficients).
        col: Column (x) in pixels.
        row: Row (y) in pixels.

    Returns:
        ``(x, y)`` in the CRS.
    """
    t = transform
    return (t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f)


def _densified_ring(
    transform: Any, col_off: float, row_off: float, width: float, height: float, densify: int
) -> list[tuple[float, float]]:
    """Return the window outline in CRS coordinates, ``densify`` points per edge."""
    corners = [
        (col_off, row_off),
        (col_off + width, row_off),
        (col_off + width, row_off + height),
        (col_off, row_off + height),
    ]
    ring: list[tuple[float, float]] = []
    for (c0, r0), (c1, r1) in zip(corners, corners[1:] + corners[:1], strict=False):
        for k in range(densify):
            t = k / densify
            ring.append(pixel_to_xy(transform, c0 + (c1 - c0) * t, r0 + (r1 - r0) * t))
    ring.append(ring[0])
    return ring


def window_footprint(
    crs: Any,
    transform: Any,
    col_off: float,
    row_off: float,
    width: float,
    height: float,
    *,
    densify: int = 21,
) -> Any:
    """Footprint of a pixel window as a shapely geometry in EPSG:4326.

    Args:
        crs: The raster's CRS (anything ``rasterio.crs.CRS.from_user_input`` takes).
        transform: The raster's affine geotransform.
        col_off: Window column offset in pixels.
        row_off: Window row offset in pixels.
        width: Window width in pixels.
        height: Window height in pixels.
        densify: Points per edge, so curved edges after reprojection are followed.

    Returns:
        A shapely Polygon, or a MultiPolygon when the footprint crosses the antimeridian.
    """
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp_transform
    from shapely import make_valid
    from shapely.geometry import Polygon

    ring = _densified_ring(transform, col_off, row_off, width, height, max(1, densify))
    src = CRS.from_user_input(crs)
    if src == CRS.from_epsg(4326):
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    else:
        lons, lats = warp_transform(src, "EPSG:4326", [p[0] for p in ring], [p[1] for p in ring])
    if not all(math.isfinite(v) for v in (*lons, *lats)):
        raise InvalidBBoxError(
            f"the window at ({col_off}, {row_off}) of a raster in {src} has no lon/lat "
            "footprint (outside the CRS's area of use); check the raster's CRS"
        )
    # unwrap: consecutive outline points are close, so a jump over 180 degrees is a wrap
    unwrapped = [float(lons[0])]
    for lon in lons[1:]:
        prev = unwrapped[-1]
        lon = float(lon)
        lon += 360.0 * round((prev - lon) / 360.0)
        unwrapped.append(lon)
    if abs(unwrapped[-1] - unwrapped[0]) > 1e-6:
        # the outline winds around a pole: no lon/lat polygon follows it; give its band
        raise InvalidBBoxError(
            f"the window at ({col_off}, {row_off}) of a raster in {src} encloses a pole; "
            "tile polar imagery in a polar CRS with smaller tiles"
        )
    shift = -360.0 * math.floor((min(unwrapped) + 180.0) / 360.0)  # west edge into [-180, 180)
    poly = Polygon([(x + shift, float(y)) for x, y in zip(unwrapped, lats, strict=True)])
    if not poly.is_valid:
        poly = make_valid(poly)
    out = _split_lonlat(poly) if poly.bounds[2] > 180.0 else poly
    return out


def _split_lonlat(poly: Any) -> Any:
    """Split a lon/lat polygon whose longitudes run past +-180 into a MultiPolygon in range."""
    from shapely.affinity import translate
    from shapely.geometry import MultiPolygon, Polygon, box

    parts: list[Any] = []
    for shift in (-360.0, 0.0, 360.0):
        piece = translate(poly, xoff=shift).intersection(box(-180, -90, 180, 90))
        for part in getattr(piece, "geoms", [piece]):
            if isinstance(part, Polygon) and not part.is_empty and part.area > 0:
                parts.append(part)
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def window_centre(
    crs: Any, transform: Any, col_off: float, row_off: float, width: float, height: float
) -> tuple[float, float]:
    """Centre of a pixel window as ``(lon, lat)`` with lon in [-180, 180].

    Args:
        crs: The raster's CRS.
        transform: The raster's affine geotransform.
        col_off: Window column offset in pixels.
        row_off: Window row offset in pixels.
        width: Window width in pixels.
        height: Window height in pixels.

    Returns:
        The centre point in EPSG:4326.
    """
    from rasterio.warp import transform as warp_transform

    x, y = pixel_to_xy(transform, col_off + width / 2.0, row_off + height / 2.0)
    xs, ys = warp_transform(crs, "EPSG:4326", [x], [y])
    lon = ((xs[0] + 180.0) % 360.0) - 180.0
    return float(lon), float(ys[0])


def gsd_metres(crs: Any, transform: Any, lat: float) -> float:
    """Ground sample distance in metres of one pixel (mean of x and y sizes).

    Args:
        crs: The raster's CRS.
        transform: The raster's affine geotransform.
        lat: Latitude of the place of interest, used when the CRS is geographic.

    Returns:
        Pixel size in metres.
    """
    from rasterio.crs import CRS

    src = CRS.from_user_input(crs)
    px = (math.hypot(transform.a, transform.d) + math.hypot(transform.b, transform.e)) / 2.0
    if src.is_geographic:
        return (
            px
            * math.pi
            / 180.0
            * _EARTH_RADIUS_M
            * math.sqrt(max(math.cos(math.radians(lat)), 1e-12))
        )
    factor = src.linear_units_factor[1] if src.linear_units_factor else 1.0
    gsd = px * float(factor)
    if src.to_epsg() == 3857:  # web mercator pixels shrink on the ground by cos(lat)
        gsd *= math.cos(math.radians(lat))
    return gsd


def lonlat_text(bbox: Sequence[float]) -> str:
    """A lon/lat bbox in words: ``lon MINX to MAXX, lat MINY to MAXY`` (5 decimals, ~1 m)."""
    minx, miny, maxx, maxy = bbox
    return f"lon {minx:.5f} to {maxx:.5f}, lat {miny:.5f} to {maxy:.5f}"


def validate_bbox(bbox: Any, *, name: str = "bbox") -> BBox:
    """Check a lon/lat bounding box and return it as a tuple of floats.

    ``minx > maxx`` is allowed and means the box crosses the antimeridian (STAC convention).

    Args:
        bbox: Four numbers ``(minx, miny, maxx, maxy)`` in EPSG:4326.
        name: Argument name for error messages.

    Returns:
        The bbox as a tuple of four floats.

    Raises:
        InvalidBBoxError: Wrong length, non-finite values, latitudes or longitudes out of range,
            or ``miny > maxy``.
    """
    try:
        values = tuple(float(v) for v in bbox)
    except (TypeError, ValueError) as exc:
        raise InvalidBBoxError(
            f"{name}={bbox!r} is not four numbers; pass (minx, miny, maxx, maxy) in lon/lat"
        ) from exc
    if len(values) != 4:
        raise InvalidBBoxError(
            f"{name}={bbox!r} has {len(values)} values; pass (minx, miny, maxx, maxy) in lon/lat"
        )
    minx, miny, maxx, maxy = values
    if not all(math.isfinite(v) for v in values):
        raise InvalidBBoxError(f"{name}={bbox!r} contains non-finite values")
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
        raise InvalidBBoxError(
            f"{name}={bbox!r}: longitudes must lie in [-180, 180]; is the box in a projected CRS? "
            "Convert it to EPSG:4326 lon/lat first"
        )
    if not (-90 <= miny <= 90 and -90 <= maxy <= 90):
        raise InvalidBBoxError(
            f"{name}={bbox!r}: latitudes must lie in [-90, 90]; "
            "the order is (minx, miny, maxx, maxy)"
        )
    if miny > maxy:
        raise InvalidBBoxError(f"{name}={bbox!r}: miny {miny} > maxy {maxy}; swap them")
    return (minx, miny, maxx, maxy)


def bbox_to_geometry(bbox: BBox) -> Any:
    """Shapely geometry of a lon/lat bbox; a MultiPolygon when it crosses the antimeridian.

    Args:
        bbox: A validated ``(minx, miny, maxx, maxy)``.

    Returns:
        Polygon or MultiPolygon in EPSG:4326.
    """
    from shapely.geometry import MultiPolygon, box

    minx, miny, maxx, maxy = bbox
    if minx <= maxx:
        return box(minx, miny, maxx, maxy)
    return MultiPolygon([box(minx, miny, 180.0, maxy), box(-180.0, miny, maxx, maxy)])


def geojson_geometry(geom: Any) -> dict[str, Any]:
    """A shapely geometry as a plain GeoJSON dict (lists, not tuples: it round-trips JSON).

    Args:
        geom: The geometry.

    Returns:
        The GeoJSON geometry, as ``json.loads`` would give it back.
    """
    import json

    from shapely.geometry import mapping

    out: dict[str, Any] = json.loads(json.dumps(mapping(geom)))
    return out
