"""Presenting search results: an HTML map of hits over their region.

The map is a single self-contained HTML file (Leaflet loaded from its CDN when opened, the hits
and the region embedded as GeoJSON), so it needs no extra Python package; in Jupyter,
``hits.explore(column="score")`` works as well when folium is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["region_geojson", "write_map"]

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
function colour(t) {{ const r = Math.round(255 * t), b = Math.round(255 * (1 - t));
  return `rgb(${{r}},64,${{b}})`; }}
const scores = hits.features.map(f => f.properties.score);
const lo = Math.min(...scores), hi = Math.max(...scores);
const layer = L.geoJSON(hits, {{
  style: f => ({{color: colour(hi > lo ? (f.properties.score - lo) / (hi - lo) : 1),
                 weight: 2, fillOpacity: 0.35}}),
  onEachFeature: (f, l) => l.bindPopup(
    `#${{f.properties.rank}} score ${{f.properties.score.toFixed(4)}}<br>` +
    `${{f.properties.item_id}} level ${{f.properties.level}}<br>window ${{f.properties.window}}`)
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
    from shapely.geometry import mapping, shape

    from rsia_geo.index.payload import make_region

    if bbox is None and geometry is None:
        return None
    g = shape(geometry) if isinstance(geometry, dict) else geometry
    return dict(mapping(make_region(bbox=bbox, geometry=g).geometry))


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
    out = Path(path)
    out.write_text(_TEMPLATE.format(hits=json.dumps(data), region=json.dumps(region)))
    return out
