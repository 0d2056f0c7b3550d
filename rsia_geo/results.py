"""Search results out of Python: files for any GIS, and a map page to share.

* :func:`write_hits`: GeoJSON, GeoPackage or GeoParquet, written atomically, carrying what was
  asked (:func:`hits_metadata`: the query, what was heard, the region, filters, the model) so a
  file found later says where it came from.
* :func:`write_map`: one self-contained HTML page (its own small SVG map code, the hits, the
  region and every hit's image chip embedded): it works shared as one file and offline, only
  the basemap tiles come from the internet.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

__all__ = [
    "HIT_FORMATS",
    "OSM_TILES",
    "also_heard",
    "check_output_path",
    "chip_png",
    "hits_metadata",
    "region_geojson",
    "write_hits",
    "write_map",
]

HIT_FORMATS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".parquet": "parquet"}
"""Suffixes :func:`write_hits` writes, with their format."""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rsia_geo hits</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html, body {{ height: 100%; margin: 0; font: 13px sans-serif; }}
#map {{ position: absolute; inset: 0; width: 100%; height: 100%; background: #e8eef0;
  cursor: grab; touch-action: none; }}
#map.dragging {{ cursor: grabbing; }}
.hit {{ stroke-width: 2px; fill-opacity: 0.35; cursor: pointer; }}
.hit:hover, .hit.selected {{ fill-opacity: 0.6; stroke: #000; }}
.region {{ fill: none; stroke: #222; stroke-width: 2px; stroke-dasharray: 6 4; }}
.box {{ position: absolute; background: #fff; border-radius: 4px; padding: 8px;
  box-shadow: 0 1px 5px rgba(0, 0, 0, 0.4); }}
#popup {{ top: 10px; right: 10px; max-width: 300px; display: none; }}
#popup img {{ display: block; margin: 6px 0; image-rendering: pixelated; }}
#popup button {{ float: right; }}
#legend {{ bottom: 10px; left: 10px; }}
#ramp {{ width: 140px; height: 10px; background: linear-gradient(to right, rgb(0,64,255),
  rgb(255,64,0)); }}
#credit {{ bottom: 0; right: 0; font-size: 11px; padding: 2px 4px; border-radius: 0; }}
</style></head><body>
<svg id="map" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">
<g id="base"></g><g id="region"></g><g id="hits"></g></svg>
<div id="popup" class="box" role="dialog"></div>
<div id="legend" class="box"><div id="title"></div><div id="ramp"></div>
<span id="lo"></span> <span style="float:right" id="hi"></span></div>
<div id="credit" class="box"></div>
<script>
"use strict";
const DATA = {data};
const NS = "http://www.w3.org/2000/svg";
const svg = document.getElementById("map");
function esc(v) {{ return String(v).replace(/[&<>"']/g, c => ({{"&": "&amp;", "<": "&lt;",
  ">": "&gt;", '"': "&quot;", "'": "&#39;"}})[c]); }}
function colour(t) {{ return `rgb(${{Math.round(255 * t)}},64,${{Math.round(255 * (1 - t))}})`; }}
function pathOf(rings) {{ return rings.map(r => "M" + r.map(p => p[0] + " " + p[1]).join("L")
  + "Z").join(""); }}
const scores = DATA.hits.map(h => h.props.score).filter(v => v !== null);
const lo = Math.min(...scores), hi = Math.max(...scores);
document.getElementById("title").textContent = DATA.title;
document.getElementById("lo").textContent = scores.length ? lo.toFixed(3) : "";
document.getElementById("hi").textContent = scores.length ? hi.toFixed(3) : "";
if (DATA.region) {{
  const r = document.createElementNS(NS, "path");
  r.setAttribute("d", pathOf(DATA.region)); r.setAttribute("class", "region");
  r.setAttribute("vector-effect", "non-scaling-stroke");
  document.getElementById("region").appendChild(r);
}}
const popup = document.getElementById("popup");
let selected = null;
function show(h, el) {{
  if (selected) selected.classList.remove("selected");
  selected = el; el.classList.add("selected");
  const p = h.props, rows = [];
  const fmt = v => typeof v === "number" && !Number.isInteger(v) ? v.toFixed(4) : v;
  for (const [k, v] of Object.entries(p)) if (v !== null && v !== "") rows.push(
    `<tr><th style="text-align:left">${{esc(k)}}</th><td>${{esc(fmt(v))}}</td></tr>`);
  popup.innerHTML = `<button type="button" aria-label="close">&times;</button>` +
    `<b>#${{esc(p.rank)}}</b> score ${{esc(Number(p.score).toFixed(4))}}` +
    (h.chip ? `<img alt="tile ${{esc(p.tile_id)}}" width="${{DATA.chip_size}}" ` +
      `height="${{DATA.chip_size}}" src="${{h.chip}}">` : "") +
    `<table>${{rows.join("")}}</table>`;
  popup.querySelector("button").onclick = () => {{ popup.style.display = "none"; }};
  popup.style.display = "block";
}}
DATA.hits.slice().reverse().forEach(h => {{  // the best hit drawn last, on top
  const el = document.createElementNS(NS, "path");
  el.setAttribute("d", pathOf(h.rings)); el.setAttribute("class", "hit");
  el.setAttribute("vector-effect", "non-scaling-stroke");
  const t = hi > lo ? (h.props.score - lo) / (hi - lo) : 1;
  el.setAttribute("fill", colour(t)); el.setAttribute("stroke", colour(t));
  el.setAttribute("data-tile", h.props.tile_id || "");
  const title = document.createElementNS(NS, "title");
  title.textContent = `#${{h.props.rank}} ${{h.props.item_id}}`; el.appendChild(title);
  el.addEventListener("click", ev => {{ ev.stopPropagation(); show(h, el); }});
  document.getElementById("hits").appendChild(el);
}});
// the view: a box in Web Mercator units (the world is the unit square)
let [vx, vy, vw, vh] = DATA.view;
function px() {{ const r = svg.getBoundingClientRect(); return [r.width || 800, r.height || 600]; }}
function fit() {{ const [w, h] = px(); const a = w / h;
  if (vw / vh < a) {{ const nw = vh * a; vx -= (nw - vw) / 2; vw = nw; }}
  else {{ const nh = vw / a; vy -= (nh - vh) / 2; vh = nh; }} }}
let tileTimer = null;
function tiles() {{
  const base = document.getElementById("base");
  base.replaceChildren();
  if (!DATA.basemap) return;
  const [w] = px();
  const z = Math.max(0, Math.min(19, Math.round(Math.log2(w / 256 / vw))));
  const n = 2 ** z, x0 = Math.floor(vx * n), x1 = Math.floor((vx + vw) * n);
  const y0 = Math.max(0, Math.floor(vy * n)), y1 = Math.min(n - 1, Math.floor((vy + vh) * n));
  if ((x1 - x0 + 1) * (y1 - y0 + 1) > 100) return;
  for (let x = x0; x <= x1; x++) for (let y = y0; y <= y1; y++) {{
    const img = document.createElementNS(NS, "image");
    img.addEventListener("error", () => img.remove());  // offline: no broken-image marks
    const wx = ((x % n) + n) % n;
    img.setAttribute("href", DATA.basemap.replace("{{z}}", z).replace("{{x}}", wx)
      .replace("{{y}}", y));
    img.setAttribute("x", x / n); img.setAttribute("y", y / n);
    img.setAttribute("width", 1 / n); img.setAttribute("height", 1 / n);
    base.appendChild(img);
  }}
}}
function render(reload) {{
  svg.setAttribute("viewBox", `${{vx}} ${{vy}} ${{vw}} ${{vh}}`);
  if (reload) {{ clearTimeout(tileTimer); tileTimer = setTimeout(tiles, 120); }}
}}
document.getElementById("credit").innerHTML = DATA.attribution;
fit(); tiles(); render(false);
svg.addEventListener("wheel", ev => {{
  ev.preventDefault();
  const r = svg.getBoundingClientRect(), f = ev.deltaY < 0 ? 1 / 1.25 : 1.25;
  const mx = vx + (ev.clientX - r.left) / r.width * vw;
  const my = vy + (ev.clientY - r.top) / r.height * vh;
  vx = mx - (mx - vx) * f; vy = my - (my - vy) * f; vw *= f; vh *= f; render(true);
}}, {{passive: false}});
let drag = null;
svg.addEventListener("pointerdown", ev => {{ drag = [ev.clientX, ev.clientY, vx, vy];
  svg.classList.add("dragging"); }});
window.addEventListener("pointerup", () => {{ drag = null; svg.classList.remove("dragging"); }});
window.addEventListener("pointermove", ev => {{
  if (!drag) return;
  const r = svg.getBoundingClientRect();
  vx = drag[2] - (ev.clientX - drag[0]) / r.width * vw;
  vy = drag[3] - (ev.clientY - drag[1]) / r.height * vh; render(true);
}});
window.addEventListener("resize", () => {{ fit(); render(true); }});
</script></body></html>
"""

OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
"""The default basemap (the only part of a map page that needs the internet)."""


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    """Web Mercator of a lon/lat point, the world being the unit square (y down)."""
    import math

    lat = max(min(lat, 85.05112878), -85.05112878)
    y = (1.0 - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) / math.pi) / 2.0
    return round((lon + 180.0) / 360.0, 10), round(y, 10)


def _rings(geom: Any) -> list[list[list[float]]]:
    """Exterior and interior rings of a (multi)polygon, in map units."""
    out = []
    for poly in getattr(geom, "geoms", [geom]):
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        for ring in [poly.exterior, *poly.interiors]:
            out.append([list(_mercator(x, y)) for x, y in ring.coords])
    return out


def _png(rgb: Any) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG (zlib only, no imaging library)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def chip_png(hit: Any, *, size: int = 96) -> bytes:
    """A PNG thumbnail of a hit's tile (its first three bands as RGB, or one band as grey).

    Args:
        hit: A row of :func:`rsia_geo.search`'s GeoDataFrame (its ``tile``), or a Tile.
        size: Side of the thumbnail in pixels.

    Returns:
        PNG bytes.
    """
    import numpy as np

    from rsia_geo.errors import InvalidArgumentError
    from rsia_geo.pipeline import read_chip

    if size < 8:
        raise InvalidArgumentError(f"thumbnail size={size!r} is too small; use 8 px or more")
    chip = read_chip(hit, out_size=size)
    bands = chip[:3] if chip.shape[0] >= 3 else np.repeat(chip[:1], 3, axis=0)
    rgb = np.clip(np.round(bands.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    return _png(np.ascontiguousarray(rgb))


def region_geojson(
    bbox: Any = None, geometry: Any = None, hits: Any = None
) -> dict[str, Any] | None:
    """The query region as a GeoJSON geometry in lon/lat, as the search understands it.

    Args:
        bbox: The query bbox (``minx > maxx`` crosses 180).
        geometry: The query geometry (shapely or GeoJSON).
        hits: Search hits: their recorded region is used when neither bbox nor geometry is
            given.

    Returns:
        The GeoJSON geometry, or None when there is no region.
    """
    from rsia_geo._geo import geojson_geometry
    from rsia_geo.query import make_region

    if bbox is not None or geometry is not None:  # the same form as the recorded region
        return geojson_geometry(make_region(bbox=bbox, geometry=geometry).geometry)
    recorded = getattr(hits, "attrs", {}).get("region")  # GeoJSON
    return dict(recorded) if recorded is not None else None


def plain_table(hits: Any) -> Any:
    """The hits as a table of plain values: every column but ``tile``.

    ``tile`` holds each hit's :class:`~rsia_geo.tiles.Tile` (for :func:`rsia_geo.read_chip`),
    a Python object that no file format or JSON response carries; everything written or
    shown goes through this one function.

    Args:
        hits: A GeoDataFrame of :func:`rsia_geo.search` (or ``same_place``).

    Returns:
        The GeoDataFrame without ``tile`` (its attrs kept).
    """
    if "tile" not in hits.columns:
        return hits
    return hits.drop(columns="tile")


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
    data = plain_table(hits)
    meta = json.dumps(hits_metadata(hits))

    def write(tmp: Path) -> None:
        if fmt == "parquet":
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            data.to_parquet(tmp)  # GeoParquet ("geo" metadata), then our key beside it
            table = pq.read_table(tmp)
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), b"rsia_geo": meta.encode()}
            )
            pq.write_table(table, tmp)
        elif fmt == "GeoJSON":
            # a foreign member (RFC 7946 section 6.1) beside "features"
            body = json.loads(data.to_json(na="null", drop_id=True))
            body["rsia_geo"] = json.loads(meta)
            tmp.write_text(json.dumps(body), encoding="utf-8")
        else:  # GeoPackage: the layer's metadata item
            data.to_file(tmp, driver=fmt, layer="hits", metadata={"rsia_geo": meta})

    return _atomic(out, write)


def hits_metadata(hits: Any) -> dict[str, Any]:
    """What a hits table answers: written into every export by :func:`write_hits`.

    Args:
        hits: The GeoDataFrame returned by :func:`rsia_geo.search` (or ``same_place``).

    Returns:
        ``{"rsia_geo": version, "written": UTC time, "query": {...} (kind, typed text or
        what was heard, example, marks), "region": GeoJSON or None, "filters": {...},
        "model": {...}, "timings": {...}, "hits": n}``.
    """
    import datetime as dt

    from rsia_geo import __version__

    return {
        "rsia_geo": __version__,
        "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "query": hits.attrs.get("query") or {},
        "region": region_geojson(hits=hits),
        "filters": hits.attrs.get("filters") or {},
        "model": hits.attrs.get("model") or {},
        "timings": hits.attrs.get("timings") or {},
        "hits": len(hits),
    }


def write_map(
    hits: Any,
    path: str | Path,
    *,
    bbox: Any = None,
    geometry: Any = None,
    chips: bool = True,
    chip_size: int = 128,
    basemap: str | None = OSM_TILES,
    attribution: str = "&copy; OpenStreetMap contributors",
) -> Path:
    """Write a self-contained HTML map of hits: footprints by score, each hit's image chip.

    The page embeds everything (hits, region, chips as PNG data URIs, its own small SVG map
    code), so it works shared as one file and offline; only the basemap tiles come from the
    internet (``basemap=None`` for none). Click a hit for its chip and attributes; the wheel
    zooms and dragging pans.

    Args:
        hits: The GeoDataFrame returned by :func:`rsia_geo.search` (or
            :func:`rsia_geo.similar.same_place`).
        path: Output ``.html`` file.
        bbox: The query bbox, drawn as the region (default: the region the hits record).
        geometry: The query geometry (shapely or GeoJSON), drawn as the region.
        chips: Read each hit's pixels and embed them (one windowed read per hit).
        chip_size: Chip side in pixels.
        basemap: XYZ tile URL template with ``{z}``, ``{x}``, ``{y}``, or None.
        attribution: HTML credit shown for the basemap.

    Returns:
        The written path.

    Raises:
        InvalidArgumentError: An unusable path or chip size.
    """
    from shapely.geometry import shape

    from rsia_geo.errors import InvalidArgumentError

    out = check_output_path(path, (".html", ".htm"))
    if chips and not 8 <= chip_size <= 1024:
        raise InvalidArgumentError(f"chip_size={chip_size!r} must be in [8, 1024]")
    region = region_geojson(bbox, geometry, hits)
    data = {
        "hits": _map_features(hits, chip_size if chips else None),
        "region": _rings(shape(region)) if region is not None else None,
        "view": _map_view(hits, region),
        "basemap": basemap,
        "attribution": attribution if basemap else "",
        "chip_size": chip_size,
        "title": _map_title(hits.attrs.get("query") or {}),
    }
    # "</" inside embedded JSON would end the script element: escape it
    page = _TEMPLATE.format(data=json.dumps(data).replace("</", "<\\/"))
    return _atomic(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


_MAP_COLUMNS = (
    "rank", "score", "item_id", "datetime", "platform", "level", "gsd", "group_size",
    "tile_id", "window", "similarity", "overlap",
)  # fmt: skip


def _map_features(hits: Any, chip_size: int | None) -> list[dict[str, Any]]:
    """Each hit's rings (map units), attributes and chip (a PNG data URI, or None)."""
    import base64

    from rsia_geo.errors import RsiaError

    shown = [c for c in _MAP_COLUMNS if c in hits.columns]
    features = []
    for n, (_, row) in enumerate(hits.iterrows(), start=1):
        props = {c: _json_value(row[c]) for c in shown}
        props.setdefault("rank", n)
        props.setdefault("score", props.get("similarity"))
        chip = None
        if chip_size is not None and "tile" in hits.columns:
            try:
                png = chip_png(row, size=chip_size)
                chip = "data:image/png;base64," + base64.b64encode(png).decode()
            except RsiaError:  # an asset moved since indexing: the hit is drawn, no picture
                chip = None
        features.append({"rings": _rings(row.geometry), "props": props, "chip": chip})
    return features


def _map_view(hits: Any, region: dict[str, Any] | None) -> list[float]:
    """The first view ``[x, y, width, height]`` in map units: hits and region, padded."""
    from shapely import union_all
    from shapely.geometry import shape

    shapes = list(hits.geometry) + ([shape(region)] if region is not None else [])
    minx, miny, maxx, maxy = union_all(shapes).bounds if shapes else (-180.0, -85.0, 180.0, 85.0)
    (x0, y1), (x1, y0) = _mercator(minx, miny), _mercator(maxx, maxy)
    pad = max(x1 - x0, y1 - y0, 1e-7) * 0.08
    return [x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad]


def also_heard(query: dict[str, Any]) -> str | None:
    """The likeliest other transcript of a query the recogniser was unsure of, or None.

    Read from the query's record (``attrs["query"]["heard_alternatives"]``: the distinct
    transcripts heard, the one kept first); what the CLI and the Jupyter panel show as
    ``or "..."``.

    Args:
        query: A search's ``attrs["query"]``.

    Returns:
        The transcript, or None for a query heard surely (or not heard).
    """
    heard = query.get("heard")
    return next((t for t, _ in query.get("heard_alternatives") or () if t != heard), None)


def _map_title(query: dict[str, Any]) -> str:
    """The legend's title: what was typed, heard or given as an example."""
    if query.get("kind") == "typed":
        return f"typed: {query.get('text', '')}"
    if query.get("kind") == "example":
        return f"more like the {query.get('example', '')}"
    return f"heard: {query['heard']}" if query.get("heard") else "score"


def _json_value(value: Any) -> Any:
    """A JSON-safe scalar (numpy numbers as Python numbers, NaN as None)."""
    import math

    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
