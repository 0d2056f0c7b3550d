"""What a query is made of: region, dates and platforms, parsed once for every edge.

The API, the CLI, the HTTP service and the Jupyter panel all turn their inputs into a
:class:`Region` here (a bbox, a polygon as shapely, GeoJSON geometry, Feature or
FeatureCollection or a GeoDataFrame, a date interval, platforms), so a region means the same
everywhere and every bad value gets the same message naming it and the fix. Nothing here
imports the index layer: drawing a map needs only this module.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rsia_geo._geo import bbox_to_geometry, validate_bbox
from rsia_geo._types import BBox
from rsia_geo.errors import InvalidArgumentError, InvalidBBoxError, InvalidRegionError

__all__ = [
    "Region",
    "make_region",
    "parse_bbox",
    "parse_geometry",
    "parse_platforms",
    "parse_time_range",
    "region_boxes",
]


def parse_bbox(value: str | Sequence[float]) -> BBox:
    """A lon/lat bbox from text (``"minx, miny, maxx, maxy"``, commas or spaces) or numbers.

    Args:
        value: The text a user typed, or four numbers.

    Returns:
        The validated bbox (``minx > maxx`` crosses 180).

    Raises:
        InvalidBBoxError: Not four numbers, or not a valid lon/lat box.
    """
    if isinstance(value, str):
        parts = [p for p in value.replace(",", " ").split() if p]
        try:
            numbers = tuple(float(p) for p in parts)
        except ValueError:
            numbers = ()
        if len(numbers) != 4:
            raise InvalidBBoxError(
                f"bbox {value!r} is not four numbers; give 'minx, miny, maxx, maxy' in lon/lat, "
                "e.g. '-117.2, 32.6, -117.0, 32.8'"
            )
        value = numbers
    return validate_bbox(value)


@dataclass(frozen=True)
class Region:
    """A query region: boxes for the index filter, geometry for the exact test.

    Attributes:
        boxes: Lon/lat boxes with ``minx <= maxx`` whose union covers the region.
        geometry: The exact region (shapely, EPSG:4326), or None for no spatial restriction.
        time_range: ``(start, end)`` POSIX timestamps (either may be None).
    """

    boxes: tuple[BBox, ...]
    geometry: Any
    time_range: tuple[float | None, float | None] | None = None
    centre_margin: tuple[float, float] | None = None
    """Largest (lon, lat) distance from any indexed tile's centre to its bbox edges, set by the
    index: with it, the filter can use the geo index on tile centres (selective at any scale)
    instead of four range conditions whose conjunction Qdrant cannot estimate well."""
    time_overlap: bool = False
    """Set by the index when its tiles store ``timestamp_end``: tiles match a time range by
    overlap (an item covering 2020 is found for June 2020); older indexes match by start."""
    platforms: tuple[str, ...] | None = None
    """Keep tiles whose STAC ``platform`` (or ``constellation``) is one of these."""


def region_boxes(bbox: BBox) -> tuple[BBox, ...]:
    """Split a lon/lat bbox into boxes with ``minx <= maxx`` (two when crossing 180).

    Args:
        bbox: A validated bbox; ``minx > maxx`` means it crosses the antimeridian.

    Returns:
        One or two boxes.
    """
    minx, miny, maxx, maxy = bbox
    if minx <= maxx:
        return ((minx, miny, maxx, maxy),)
    return ((minx, miny, 180.0, maxy), (-180.0, miny, maxx, maxy))


_DAY = 86400.0


def _is_date_only(value: Any) -> bool:
    """A calendar day without a time: ``datetime.date`` or ``"YYYY-MM-DD"``."""
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        return True
    return isinstance(value, str) and len(value.strip()) == 10 and value.strip()[4] == "-"


def _period(text: str) -> tuple[float, float] | None:
    """A whole year (``YYYY``) or month (``YYYY-MM``) in UTC as ``(start, end)`` seconds."""
    m = re.fullmatch(r"(\d{4})(?:-(\d{2}))?", text)
    if m is None or not 1 <= int(m.group(2) or 1) <= 12:
        return None
    year, month = int(m.group(1)), m.group(2)
    start = _dt.datetime(year, int(month or 1), 1, tzinfo=_dt.UTC)
    if month is None or int(month) == 12:
        stop = _dt.datetime(year + 1, 1, 1, tzinfo=_dt.UTC)
    else:
        stop = _dt.datetime(year, int(month) + 1, 1, tzinfo=_dt.UTC)
    return start.timestamp(), stop.timestamp() - 1e-3


def _parse_time(value: Any, name: str, *, end: bool = False) -> float | None:
    """POSIX seconds of a date/time; a date-only ``end`` means the end of that day (UTC)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "..")):
        return None
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name}={value!r} is not a date/time")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        t = value
    elif isinstance(value, _dt.date):
        t = _dt.datetime(value.year, value.month, value.day)
    elif (period := _period(str(value).strip())) is not None:
        return period[1] if end else period[0]
    else:
        try:
            t = _dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidArgumentError(
                f"{name}={value!r} is not an ISO date/time (e.g. 2020-01-01, "
                "2020-01-01T00:00:00Z, or a whole year or month: 2020, 2020-05)"
            ) from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    stamp = t.timestamp()
    if end and _is_date_only(value):
        stamp += _DAY - 1e-3  # the whole last day
    return stamp


def _iso_utc(t: float | None) -> str | None:
    """A POSIX time as ISO 8601 UTC (``2020-01-01T00:00:00Z``), None for None.

    The inverse of :func:`parse_time_range`'s reading, as indexes report their time extent.
    """
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time_range(value: Any) -> tuple[float | None, float | None]:
    """A time interval from ``"start/end"``, a single date/time, or a ``(start, end)`` pair.

    Either side may be open (``..``, empty or None). A date without a time (a string
    ``YYYY-MM-DD`` or a ``datetime.date``) covers that whole day, as a start or as an end; a
    year (``"2020"``) or a month (``"2020-05"``) covers that whole year or month (UTC).

    Args:
        value: The interval.

    Returns:
        ``(start, end)`` POSIX seconds (UTC when no zone is given).

    Raises:
        InvalidArgumentError: Not a date/time, or the start is after the end.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InvalidArgumentError(
                f"datetime={value!r} must be a (start, end) pair, 'start/end' or one date"
            )
        start, end = value
    elif isinstance(value, str) and "/" in value:
        start, end = value.split("/", 1)
    else:
        start = end = value
    t0 = _parse_time(start, "datetime")
    t1 = _parse_time(end, "datetime", end=True)
    if t0 is not None and t1 is not None and t0 > t1:
        raise InvalidArgumentError(f"datetime={value!r}: the start is after the end")
    return t0, t1


def _polygonal(g: Any) -> Any:
    """The polygonal part of a geometry (drops points and lines ``make_valid`` may leave)."""
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(g, (Polygon, MultiPolygon)):
        return g
    parts = [p for p in getattr(g, "geoms", []) if isinstance(p, (Polygon, MultiPolygon))]
    polys = [q for p in parts for q in getattr(p, "geoms", [p])]
    return MultiPolygon(polys) if len(polys) > 1 else (polys[0] if polys else Polygon())


def parse_geometry(geometry: Any) -> Any:
    """A region polygon from shapely, GeoJSON or a GeoDataFrame/GeoSeries.

    GeoJSON may be a geometry, a Feature or a FeatureCollection (the union of its features);
    a GeoDataFrame/GeoSeries gives its union, reprojected to EPSG:4326.

    Invalid polygons are repaired without losing area (``make_valid``: a self-intersecting
    "bowtie" keeps both lobes); empty, zero-area and non-polygonal regions are refused.

    Args:
        geometry: The region.

    Returns:
        A valid shapely Polygon or MultiPolygon in lon/lat.

    Raises:
        InvalidRegionError: Unsupported type, invalid GeoJSON, no area, outside lon/lat.
    """
    from shapely import make_valid
    from shapely.geometry import shape
    from shapely.geometry.base import BaseGeometry
    from shapely.ops import unary_union

    fix = (
        "pass a Polygon or MultiPolygon in lon/lat (GeoJSON geometry, Feature or "
        "FeatureCollection, shapely, or a GeoDataFrame) that covers an area"
    )
    if hasattr(geometry, "to_crs") and hasattr(geometry, "crs"):  # GeoDataFrame/Series
        gs = geometry.to_crs("EPSG:4326") if geometry.crs is not None else geometry
        g = gs.union_all() if hasattr(gs, "union_all") else gs.unary_union
    elif isinstance(geometry, BaseGeometry):
        g = geometry
    elif isinstance(geometry, dict):
        kind = geometry.get("type")
        try:
            if kind == "FeatureCollection":
                feats = geometry.get("features")
                if not isinstance(feats, list) or not feats:
                    raise InvalidRegionError(f"the FeatureCollection has no features; {fix}")
                geoms = [shape(f["geometry"]) for f in feats if f.get("geometry")]
                if not geoms:
                    raise InvalidRegionError(
                        f"no feature of the FeatureCollection has a geometry; {fix}"
                    )
                g = unary_union([make_valid(x) for x in geoms])
            elif kind == "Feature":
                if not geometry.get("geometry"):
                    raise InvalidRegionError(f"the Feature has no geometry; {fix}")
                g = shape(geometry["geometry"])
            else:
                g = shape(geometry)
        except InvalidRegionError:
            raise
        except Exception as exc:  # shapely raises several types for malformed GeoJSON
            raise InvalidRegionError(f"geometry is not valid GeoJSON ({exc}); {fix}") from exc
    else:
        raise InvalidRegionError(
            f"geometry of type {type(geometry).__name__} is not supported; {fix}"
        )
    if g.is_empty:
        raise InvalidRegionError(f"the region geometry is empty; {fix}")
    if g.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
        raise InvalidRegionError(f"the region geometry is a {g.geom_type}; {fix}")
    if not g.is_valid:
        g = make_valid(g)
    g = _polygonal(g)
    if g.is_empty or g.area <= 0.0:
        raise InvalidRegionError(f"the region polygon has no area (degenerate); {fix}")
    minx, miny, maxx, maxy = g.bounds
    if not all(math.isfinite(v) for v in g.bounds):
        raise InvalidRegionError(f"the region bounds {g.bounds} are not finite; {fix}")
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise InvalidRegionError(
            f"geometry bounds {g.bounds} are outside lon/lat ranges; is it in a projected "
            "CRS? Reproject it to EPSG:4326"
        )
    return g


def parse_platforms(platform: Any) -> tuple[str, ...] | None:
    """Platforms to keep: one name, a comma-separated list, or a sequence of names.

    Args:
        platform: ``"naip"``, ``"landsat-8,landsat-9"``, ``["sentinel-2a", "sentinel-2b"]``
            or None (any platform).

    Returns:
        The names (lower case, as STAC writes them), or None.

    Raises:
        InvalidArgumentError: Not a name or a list of names.
    """
    if platform is None:
        return None
    items = platform.split(",") if isinstance(platform, str) else platform
    try:
        names = tuple(str(p).strip().lower() for p in items if str(p).strip())
    except TypeError:
        names = ()
    if not names or not all(isinstance(p, str) for p in items):
        raise InvalidArgumentError(
            f"platform={platform!r} must name platforms as STAC items do, e.g. 'naip' or "
            "'landsat-8,landsat-9'"
        )
    return names


def make_region(
    bbox: Any = None, geometry: Any = None, datetime: Any = None, platform: Any = None
) -> Region:
    """Build a query region from a bbox and/or a geometry and/or a time interval.

    Args:
        bbox: ``(minx, miny, maxx, maxy)`` in lon/lat (``minx > maxx`` crosses 180).
        geometry: A shapely geometry, a GeoJSON mapping, or a GeoDataFrame/GeoSeries (its
            union, reprojected to EPSG:4326), all in lon/lat unless they carry a CRS.
        datetime: ``"start/end"`` (either side may be ``..``), a single date, or a
            ``(start, end)`` pair; a date without a time covers its whole day
            (:func:`parse_time_range`).
        platform: Keep only tiles of these STAC platforms (:func:`parse_platforms`).

    Returns:
        The region.

    Raises:
        InvalidBBoxError: Bad bbox.
        InvalidRegionError: Empty, degenerate or unsupported geometry.
        InvalidArgumentError: Bad dates.
    """
    geom = None
    boxes: tuple[BBox, ...] = ()
    if bbox is not None:
        bb = validate_bbox(bbox)
        geom = bbox_to_geometry(bb)
        boxes = region_boxes(bb)
    if geometry is not None:
        g = parse_geometry(geometry)
        geom_boxes = tuple(tuple(float(v) for v in p.bounds) for p in getattr(g, "geoms", [g]))
        if geom is not None:
            geom = _polygonal(geom.intersection(g))
            if geom.is_empty or geom.area <= 0.0:
                raise InvalidRegionError("bbox and geometry do not overlap: the region is empty")
            boxes = tuple(tuple(float(v) for v in p.bounds) for p in getattr(geom, "geoms", [geom]))  # type: ignore[misc]
        else:
            geom, boxes = g, geom_boxes  # type: ignore[assignment]
    time_range = parse_time_range(datetime) if datetime is not None else None
    for b in boxes:
        if not all(math.isfinite(v) for v in b):
            raise InvalidBBoxError(f"region box {b} is not finite")
    return Region(boxes, geom, time_range, platforms=parse_platforms(platform))
