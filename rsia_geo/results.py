"""Presenting search results: an HTML map of hits over their region.

The map is a single self-contained HTML file (Leaflet loaded from its CDN when opened, the hits
and the region embedded as GeoJSON), so it needs no extra Python package; in Jupyter,
``hits.explore(column="score")`` works as well when folium is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["HIT_FORMATS", "check_output_path", "region_geojson", "write_hits", "write_map"]

HIT_FORMATS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".parquet": "parquet"}
"""Suffixes :func:`write_hits` writes, with their format."""

_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>rsia_geo hits</title>
<link rel="stylesheet" href="https://unpkg.com/leaflet@1.9.4/dist/leaflet.css"/>
<script src="https://unpkg.com/leaflet@1.9.4/dist/leaflet.js"></script>
<style>html,body,#map{{height:100%;margin:0}} .legend{{background:#fff;padding:6px}}</style>
</head><body><div id="map"></div><script>
const hits = {hits};
const region = {region};
const map = L.map('map');
L.tileLayer('https://{{s}}.tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png',
  {{maxZoom: 21, attribution: '&copy; OpenStreetMap contributors'}}).addTo(map);
function esc(v) {{ return String(v).replace(/[&<>"']/g, c => ({{'&': '&amp;', '<': '&lt;',
  '>': '&gt;', '"': '&quot;', "'": '&#39;'}})[c]); }}
function colour(t) {{ const r = Math.round(255 * t), b = Math.round(255 * (1 - t));
  return `rgb(${{r}},64,${{b}})`; }}
const scores = hits.features.map(f => f.properties.score);
const lo = Math.min(...scores), hi = Math.max(...scores);
const layer = L.geoJSON(hits, {{
  style: f => ({{color: colour(hi > lo ? (f.properties.score - lo) / (hi - lo) : 1),
                 weight: 2, fillOpacity: 0.35}}),
  onEachFeature: (f, l) => l.bindPopup(
    `#${{esc(f.properties.rank)}} score ${{esc(Number(f.properties.score).toFixed(4))}}<br>` +
    `${{esc(f.properties.item_id)}} level ${{esc(f.properties.level)}}<br>` +
    `window ${{esc(f.properties.window)}}`)
}}).addTo(map);
let bounds = layer.getBounds();
if (region) {{ const r = L.geoJSON(region, {{style: {{color: '#222', weight: 2, dashArray: '6',
  fill: false}}}}).addTo(map); bounds = bounds.isValid() ? bounds.extend(r.getBounds())
  : r.getBounds(); }}
if (bounds.isValid()) map.fitBounds(bounds); else map.setView([0, 0], 2);
</script></body></html>
"""


def region_geojson(bbox: Any = None, geometry: Any = None) -> dict[str, Any] | None:
    """The query region as a GeoJSON geometry in lon/lat, as the search understands it.

    Args:
        bbox: The query bbox (``minx > maxx`` crosses 180).
        geometry: The query geometry (shapely or GeoJSON).

    Returns:
        The GeoJSON geometry, or None when neither is given.
    """
    from shapely.geometry import mapping

    from rsia_geo.index.payload import make_region

    if bbox is None and geometry is None:
        return None
    return dict(mapping(make_region(bbox=bbox, geometry=geometry).geometry))


def check_output_path(path: str | Path, suffixes: dict[str, str] | tuple[str, ...]) -> Path:
    """Check, before any work, that an output file can be written where it is asked.

    Args:
        path: The output file.
        suffixes: Accepted suffixes.

    Returns:
        The path.

    Raises:
        InvalidArgumentError: Unknown suffix, a folder in its place, or a missing parent.
    """
    from rsia_geo.errors import InvalidArgumentError

    out = Path(path)
    if out.is_dir():
        raise InvalidArgumentError(f"{str(path)!r} is a folder; give a file name inside it")
    if out.suffix.lower() not in suffixes:
        raise InvalidArgumentError(
            f"cannot write {str(path)!r}: use a file name ending in {', '.join(suffixes)}"
        )
    if not out.parent.is_dir():
        raise InvalidArgumentError(
            f"cannot write {str(path)!r}: the folder {str(out.parent)!r} does not exist; "
            "create it first"
        )
    return out


def _atomic(out: Path, write: Any) -> Path:
    """Write through a temporary file beside ``out``, then rename: never a partial file."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    os.unlink(tmp)  # some writers refuse to overwrite; they create it
    try:
        write(Path(tmp))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def write_hits(hits: Any, path: str | Path) -> Path:
    """Write search hits as GeoJSON, GeoPackage or GeoParquet (by suffix), atomically.

    Args:
        hits: The GeoDataFrame returned by :func:`rsia_geo.search`.
        path: Output file (``.geojson``, ``.json``, ``.gpkg`` or ``.parquet``).

    Returns:
        The written path.

    Raises:
        InvalidArgumentError: An unusable path (see :func:`check_output_path`).
    """
    out = check_output_path(path, HIT_FORMATS)
    fmt = HIT_FORMATS[out.suffix.lower()]
    cols = [c for c in hits.columns if c != "tile_json"]
    data = hits[cols]

    def write(tmp: Path) -> None:
        if fmt == "parquet":
            data.to_parquet(tmp)
        else:
            data.to_file(tmp, driver=fmt)

    return _atomic(out, write)


def write_map(hits: Any, path: str | Path, *, bbox: Any = None, geometry: Any = None) -> Path:
    """Write an HTML map of search hits coloured by score, with the query region drawn.

    Args:
        hits: The GeoDataFrame returned by :func:`rsia_geo.search`.
        path: Output ``.html`` file.
        bbox: The query bbox, drawn as the region.
        geometry: The query geometry (shapely or GeoJSON), drawn as the region.

    Returns:
        The written path.
    """
    cols = [c for c in hits.columns if c not in ("tile_json",)]
    data = (
        json.loads(hits[cols].to_json())
        if len(hits)
        else {"type": "FeatureCollection", "features": []}
    )
    region = region_geojson(bbox, geometry)
    out = check_output_path(path, (".html", ".htm"))
    # "</" inside embedded JSON would end the script element: escape it
    page = _TEMPLATE.format(
        hits=json.dumps(data).replace("</", "<\\/"), region=json.dumps(region).replace("</", "<\\/")
    )
    return _atomic(out, lambda tmp: tmp.write_text(page))
