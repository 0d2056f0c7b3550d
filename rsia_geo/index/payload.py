"""Tile <-> Qdrant payload, and region queries as payload conditions.

Qdrant's geo conditions test points, and a tile is a footprint, so the payload carries:

* ``location``: the footprint centre as a geo point (geo index; radius/box filters on centres);
* ``corners``: the footprint's corner points as an array of geo points;
* ``bbox_minx``, ``bbox_miny``, ``bbox_maxx``, ``bbox_maxy``: the footprint's lon/lat bounding
  box as numbers (float indexes). A footprint crossing the antimeridian is stored unwrapped
  (``bbox_maxx > 180``), so its box stays one interval.

A region is turned into one or more lon/lat boxes (:func:`region_boxes`); a tile is a candidate
when its bbox intersects one of them, which four range conditions per box decide inside Qdrant
(with a second, shifted set for unwrapped tiles). The exact test, footprint polygon against
region geometry, is then applied to the candidates by shapely.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any

from rsia_geo._geo import bbox_to_geometry, validate_bbox
from rsia_geo._types import BBox
from rsia_geo.errors import InvalidBBoxError
from rsia_geo.tiles import Tile

__all__ = [
    "FLOAT_FIELDS",
    "GEO_FIELDS",
    "KEYWORD_FIELDS",
    "Region",
    "make_region",
    "payload_to_tile",
    "region_boxes",
    "tile_to_payload",
]

KEYWORD_FIELDS = ("tile_id", "item_id", "collection_id", "crs")
FLOAT_FIELDS = ("bbox_minx", "bbox_miny", "bbox_maxx", "bbox_maxy", "timestamp", "gsd", "level")
GEO_FIELDS = ("location",)


def _unwrapped_bounds(geom: Any) -> tuple[float, float, float, float]:
    """Lon/lat bounds, with longitudes unwrapped past 180 for antimeridian-crossing shapes."""
    minx, miny, maxx, maxy = geom.bounds
    parts = list(getattr(geom, "geoms", [geom]))
    if len(parts) > 1 and minx <= -180 + 1e-9 and maxx >= 180 - 1e-9:
        east = [p for p in parts if p.bounds[0] >= 0]
        west = [p for p in parts if p.bounds[0] < 0]
        if east and west:
            return (
                min(p.bounds[0] for p in east),
                miny,
                max(p.bounds[2] for p in west) + 360.0,
                maxy,
            )
    return (minx, miny, maxx, maxy)


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


def centre_margin(payload: dict[str, Any]) -> tuple[float, float]:
    """Distance ``(dlon, dlat)`` from a tile's centre to the farthest edges of its bbox.

    A tile whose bbox intersects a box has its centre inside that box grown by this margin.

    Args:
        payload: A payload from :func:`tile_to_payload`.

    Returns:
        ``(dlon, dlat)`` in degrees.
    """
    cx, cy = payload["location"]["lon"], payload["location"]["lat"]
    minx, maxx = payload["bbox_minx"], payload["bbox_maxx"]
    if cx < minx - 1e-9:  # bbox stored unwrapped past 180, centre wrapped to the west
        cx += 360.0
    dx = max(cx - minx, maxx - cx)
    dy = max(cy - payload["bbox_miny"], payload["bbox_maxy"] - cy)
    return float(dx), float(dy)


def tile_to_payload(tile: Tile, *, raw_norm: float | None = None) -> dict[str, Any]:
    """Payload stored with a tile's vector.

    Args:
        tile: The tile.
        raw_norm: Norm of the raw (unnormalised) image embedding, so the raw vector can be
            rebuilt from the stored unit vector for IA rescoring.

    Returns:
        JSON-serialisable payload.
    """
    from shapely.geometry import mapping

    record = tile.to_dict()
    # the footprint is stored once, simplified (densified edges that stay straight after
    # reprojection collapse to their corners; 1e-7 degrees is about 1 cm)
    footprint = tile.footprint.simplify(1e-7, preserve_topology=True)
    record.pop("footprint")
    minx, miny, maxx, maxy = _unwrapped_bounds(tile.footprint)
    corners = []
    for part in getattr(tile.footprint, "geoms", [tile.footprint]):
        for x, y in list(part.exterior.coords)[:-1]:
            corners.append({"lon": float(x), "lat": float(y)})
    # keep the four extreme corners of each part (the outline is densified)
    if len(corners) > 8:
        pts = corners
        corners = [
            min(pts, key=lambda p: p["lon"] + p["lat"]),
            max(pts, key=lambda p: p["lon"] + p["lat"]),
            min(pts, key=lambda p: p["lon"] - p["lat"]),
            max(pts, key=lambda p: p["lon"] - p["lat"]),
        ]
    payload = {
        "tile_id": tile.id,
        "item_id": tile.item_id,
        "collection_id": tile.collection_id or "",
        "assets": list(tile.asset_keys),
        "href": tile.sources[0].href,
        "level": tile.level,
        "window": list(tile.window),
        "crs": tile.crs,
        "native_bounds": list(tile.bounds),
        "datetime": tile.datetime,
        "timestamp": _timestamp(tile.datetime),
        "gsd": tile.gsd,
        "location": {"lon": tile.centre[0], "lat": tile.centre[1]},
        "corners": corners,
        "bbox_minx": minx,
        "bbox_miny": miny,
        "bbox_maxx": maxx,
        "bbox_maxy": maxy,
        "footprint": mapping(footprint),
        "tile": record,
    }
    if raw_norm is not None:
        payload["raw_norm"] = float(raw_norm)
    return payload


def payload_to_tile(payload: dict[str, Any]) -> Tile:
    """Rebuild the :class:`~rsia_geo.tiles.Tile` stored in a payload.

    Args:
        payload: A payload written by :func:`tile_to_payload`.

    Returns:
        The tile (readable with :func:`rsia_geo.tiles.read_tile`).
    """
    return Tile.from_dict({**payload["tile"], "footprint": payload["footprint"]})


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


def _parse_time(value: Any, name: str) -> float | None:
    if value in (None, "", ".."):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        t = value
    else:
        try:
            t = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidBBoxError(
                f"{name}={value!r} is not an ISO date/time (e.g. 2020-01-01 or "
                "2020-01-01T00:00:00Z)"
            ) from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


def make_region(bbox: Any = None, geometry: Any = None, datetime: Any = None) -> Region:
    """Build a query region from a bbox and/or a geometry and/or a time interval.

    Args:
        bbox: ``(minx, miny, maxx, maxy)`` in lon/lat (``minx > maxx`` crosses 180).
        geometry: A shapely geometry, a GeoJSON mapping, or a GeoDataFrame/GeoSeries (its
            union, reprojected to EPSG:4326), all in lon/lat unless they carry a CRS.
        datetime: ``"start/end"`` (either side may be ``..``), a single date, or a
            ``(start, end)`` pair.

    Returns:
        The region.

    Raises:
        InvalidBBoxError: Bad bbox, empty or invalid geometry, bad dates.
    """
    from shapely.geometry import shape
    from shapely.geometry.base import BaseGeometry

    geom = None
    boxes: tuple[BBox, ...] = ()
    if bbox is not None:
        bb = validate_bbox(bbox)
        geom = bbox_to_geometry(bb)
        boxes = region_boxes(bb)
    if geometry is not None:
        if hasattr(geometry, "to_crs") and hasattr(geometry, "crs"):  # GeoDataFrame/Series
            gs = geometry.to_crs("EPSG:4326") if geometry.crs is not None else geometry
            g = gs.union_all() if hasattr(gs, "union_all") else gs.unary_union
        elif isinstance(geometry, BaseGeometry):
            g = geometry
        elif isinstance(geometry, dict):
            gj = (
                geometry.get("geometry", geometry)
                if geometry.get("type") == "Feature"
                else geometry
            )
            try:
                g = shape(gj)
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise InvalidBBoxError(f"geometry is not valid GeoJSON: {exc}") from exc
        else:
            raise InvalidBBoxError(
                f"geometry of type {type(geometry).__name__} is not supported; pass a shapely "
                "geometry, a GeoJSON dict or a GeoDataFrame"
            )
        if g.is_empty:
            raise InvalidBBoxError("geometry is empty; pass a polygon that covers the region")
        if g.geom_type not in ("Polygon", "MultiPolygon"):
            raise InvalidBBoxError(f"geometry is a {g.geom_type}; pass a Polygon or MultiPolygon")
        if not g.is_valid:
            g = g.buffer(0)
        minx, miny, maxx, maxy = g.bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise InvalidBBoxError(
                f"geometry bounds {g.bounds} are outside lon/lat ranges; is it in a projected "
                "CRS? Reproject it to EPSG:4326"
            )
        geom_boxes = tuple(tuple(float(v) for v in p.bounds) for p in getattr(g, "geoms", [g]))
        if geom is not None:
            geom = geom.intersection(g)
            if geom.is_empty:
                raise InvalidBBoxError("bbox and geometry do not overlap: the region is empty")
            boxes = tuple(tuple(float(v) for v in p.bounds) for p in getattr(geom, "geoms", [geom]))  # type: ignore[misc]
        else:
            geom, boxes = g, geom_boxes  # type: ignore[assignment]
    time_range: tuple[float | None, float | None] | None = None
    if datetime is not None:
        if isinstance(datetime, (tuple, list)):
            start, end = datetime
        elif isinstance(datetime, str) and "/" in datetime:
            start, end = datetime.split("/", 1)
        else:
            start = end = datetime
            if isinstance(datetime, str) and len(datetime) == 10:  # a whole day
                s = _parse_time(datetime, "datetime")
                assert s is not None
                time_range = (s, s + 86400 - 1e-3)
        if time_range is None:
            t0, t1 = _parse_time(start, "datetime"), _parse_time(end, "datetime")
            if t0 is not None and t1 is not None and t0 > t1:
                raise InvalidBBoxError(f"datetime={datetime!r}: start is after end")
            time_range = (t0, t1)
    for b in boxes:
        if not all(math.isfinite(v) for v in b):
            raise InvalidBBoxError(f"region box {b} is not finite")
    return Region(boxes, geom, time_range)
