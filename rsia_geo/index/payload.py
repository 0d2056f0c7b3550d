"""Tile <-> Qdrant payload, and region queries as payload conditions.

Qdrant's geo conditions test points, and a tile is a footprint, so the payload carries:

* ``location``: the footprint centre as a geo point (geo index; radius/box filters on centres);
* ``footprint``: the footprint polygon as GeoJSON (the exact region test);
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
from rsia_geo.errors import InvalidArgumentError, InvalidBBoxError, InvalidRegionError
from rsia_geo.tiles import Tile

__all__ = [
    "FLOAT_FIELDS",
    "GEO_FIELDS",
    "KEYWORD_FIELDS",
    "Region",
    "make_region",
    "pack_payload",
    "parse_platforms",
    "payload_to_tile",
    "region_boxes",
    "tile_to_payload",
    "unpack_payload",
]

KEYWORD_FIELDS = ("tile_id", "item_id", "collection_id", "crs", "platform")
FLOAT_FIELDS = (
    "bbox_minx",
    "bbox_miny",
    "bbox_maxx",
    "bbox_maxy",
    "timestamp",
    "timestamp_end",
    "gsd",
    "level",
)
GEO_FIELDS = ("location",)
STORED_FIELDS = (*KEYWORD_FIELDS, *FLOAT_FIELDS, *GEO_FIELDS, "raw_norm", "footprint")
"""Payload fields stored as their own Qdrant payload keys: the indexed ones (filters), the raw
norm (rescoring) and the footprint (the exact region test, as a GeoJSON string). Everything
else (the tile record, hrefs, windows...) travels packed in one JSON string, ``doc``: the
engines convert a payload key by key (about 3 us each in qdrant-edge-py), so the packed form
stores points about 3x faster (docs/benchmarks.md) and the search reads the same values."""
PACKED = "doc"


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


def time_span(value: str | None) -> tuple[float | None, float | None]:
    """``(start, end)`` POSIX seconds of a tile's time: an instant, or a ``start/end`` interval.

    Args:
        value: ISO 8601 date/time or ``start/end`` interval (STAC ``start_datetime`` /
            ``end_datetime``).

    Returns:
        The span (both equal for an instant; None where unknown).
    """
    if value and "/" in value:
        a, b = value.split("/", 1)
        return _timestamp(a), _timestamp(b)
    t = _timestamp(value)
    return t, t


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
        "platform": tile.platform or "",
        "timestamp": time_span(tile.datetime)[0],
        "timestamp_end": time_span(tile.datetime)[1],
        "gsd": tile.gsd,
        "location": {"lon": tile.centre[0], "lat": tile.centre[1]},
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


def pack_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The stored form of a payload: :data:`STORED_FIELDS` as keys, the rest in one string.

    Args:
        payload: A payload from :func:`tile_to_payload`.

    Returns:
        The payload to upsert (:func:`unpack_payload` restores the original).
    """
    import json

    stored = {k: payload[k] for k in STORED_FIELDS if k in payload}
    if isinstance(stored.get("footprint"), dict):
        stored["footprint"] = json.dumps(stored["footprint"], separators=(",", ":"))
    rest = {k: v for k, v in payload.items() if k not in STORED_FIELDS}
    if rest:
        stored[PACKED] = json.dumps(rest, separators=(",", ":"))
    return stored


def unpack_payload(stored: dict[str, Any]) -> dict[str, Any]:
    """The payload as :func:`tile_to_payload` made it, from its stored form.

    Payloads of indexes written before packing are returned as they are.

    Args:
        stored: A payload as the engine returns it (all or some of its keys).

    Returns:
        The payload.
    """
    import json

    if PACKED not in stored and not isinstance(stored.get("footprint"), str):
        return stored
    out = {k: v for k, v in stored.items() if k != PACKED}
    if isinstance(out.get("footprint"), str):
        out["footprint"] = json.loads(out["footprint"])
    if PACKED in stored:
        out.update(json.loads(stored[PACKED]))
    return out


def stored_keys(fields: Any) -> list[str] | None:
    """The stored keys to read for these payload fields (None: all of them)."""
    if fields is None:
        return None
    keys = [f for f in fields if f in STORED_FIELDS]
    if any(f not in STORED_FIELDS for f in fields):
        keys.append(PACKED)
    return keys


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
    else:
        try:
            t = _dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidArgumentError(
                f"{name}={value!r} is not an ISO date/time (e.g. 2020-01-01 or "
                "2020-01-01T00:00:00Z)"
            ) from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    stamp = t.timestamp()
    if end and _is_date_only(value):
        stamp += _DAY - 1e-3  # the whole last day
    return stamp


def parse_time_range(value: Any) -> tuple[float | None, float | None]:
    """A time interval from ``"start/end"``, a single date/time, or a ``(start, end)`` pair.

    Either side may be open (``..``, empty or None). A date without a time (a string
    ``YYYY-MM-DD`` or a ``datetime.date``) covers that whole day, as a start or as an end.

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
