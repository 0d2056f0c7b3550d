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
from typing import Any

from rsia_geo.query import (  # re-exported: the query inputs used to live here
    Region,
    make_region,
    parse_platforms,
    region_boxes,
)
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

# Payload indexes exist only for what a search filters on (the region's boxes and centre, the
# dates, the platform): each index costs every stored point an update, so ids, CRS, GSD and
# level travel in the packed document (readers see them as before; docs/benchmarks.md).
KEYWORD_FIELDS = ("platform",)
FLOAT_FIELDS = (
    "bbox_minx",
    "bbox_miny",
    "bbox_maxx",
    "bbox_maxy",
    "timestamp",
    "timestamp_end",
)
GEO_FIELDS = ("location",)
STORED_FIELDS = (*KEYWORD_FIELDS, *FLOAT_FIELDS, *GEO_FIELDS, "raw_norm", "hub", "footprint")
"""Payload fields stored as their own Qdrant payload keys: the indexed ones (filters), the raw
norm and the hubness (rescoring) and the footprint (the exact region test, as a GeoJSON
string). Everything else (the tile record, hrefs, windows...) travels packed in one JSON
string, ``doc``: the engines convert a payload key by key (about 3 us each in
qdrant-edge-py), so the packed form stores points about 3x faster (docs/benchmarks.md) and
the search reads the same values."""
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


def tile_to_payload(
    tile: Tile, *, raw_norm: float | None = None, hub: float | None = None
) -> dict[str, Any]:
    """Payload stored with a tile's vector.

    Args:
        tile: The tile.
        raw_norm: Norm of the raw (unnormalised) image embedding, so the raw vector can be
            rebuilt from the stored unit vector for IA rescoring.
        hub: The embedding's hubness against the model's reference clips
            (:func:`rsia_geo.rerank.hubness`), which rescoring subtracts in part.

    Returns:
        JSON-serialisable payload.
    """
    from shapely.geometry import mapping

    record = tile.to_dict(footprint=False)
    # the footprint is stored once, simplified (densified edges that stay straight after
    # reprojection collapse to their corners; 1e-7 degrees is about 1 cm)
    footprint = tile.footprint.simplify(1e-7, preserve_topology=True)
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
    if hub is not None:
        payload["hub"] = float(hub)
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
    keys = list(fields)  # by their own names too: indexes written before packing have them
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
