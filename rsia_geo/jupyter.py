"""Jupyter helpers: hits as a table with chip thumbnails, a map, and a search panel.

>>> hits = rsia_geo.search("query.wav", "my_index", bbox=(-117.2, 32.6, -117.0, 32.8))
>>> hits_table(hits)          # rank, thumbnail, scores, ids, place and date of every hit
>>> hits_map(hits)            # footprints coloured by score over the query region (folium)
>>> SearchPanel("my_index")   # upload audio, draw or type a region, choose k and rerank

The table needs nothing beyond rsia_geo (thumbnails are PNGs encoded here); the map needs
folium and the panel ipywidgets + ipyleaflet (``pip install 'rsia_geo[notebook]'``).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsia_geo._lazy import has_module, lazy_import
from rsia_geo._types import ModelSource, PathLike
from rsia_geo.errors import InvalidArgumentError, RsiaError
from rsia_geo.pipeline import DISTINCT_PLACES
from rsia_geo.query import parse_bbox
from rsia_geo.results import also_heard, chip_png

__all__ = ["HitsTable", "SearchPanel", "chip_png", "hits_map", "hits_table"]


_COLUMNS = ("score", "score_cosine", "rank_cosine", "item_id", "level", "datetime", "gsd")


@dataclass(repr=False)
class HitsTable:
    """An HTML table of hits that renders in Jupyter (``_repr_html_``) and saves to a file.

    Attributes:
        html: The table's HTML.
        rows: Number of hits shown.
    """

    html: str
    rows: int

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<HitsTable: {self.rows} hits>"

    def save(self, path: PathLike) -> Path:
        """Write the table as a standalone HTML page.

        Args:
            path: Output ``.html`` file.

        Returns:
            The written path.
        """
        out = Path(path)
        out.write_text(
            f'<!DOCTYPE html><html><meta charset="utf-8"><body>{self.html}</body></html>'
        )
        return out


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{float(value):.4f}"
    return html.escape(str(value))


def hits_table(
    hits: Any,
    *,
    thumbnails: bool = True,
    size: int = 96,
    columns: Sequence[str] = _COLUMNS,
    max_rows: int = 50,
) -> HitsTable:
    """A compact HTML table of search hits with chip thumbnails.

    Args:
        hits: The GeoDataFrame returned by :func:`rsia_geo.search` (or by
            :func:`rsia_geo.similar.same_place`: rows without a rank are numbered in order).
        thumbnails: Read each hit's pixels and show them (one windowed read per hit).
        size: Thumbnail side in pixels.
        columns: Columns to show after rank, thumbnail and centre; missing ones are skipped.
        max_rows: Show at most this many hits.

    Returns:
        A :class:`HitsTable` (displays itself in Jupyter).

    Raises:
        InvalidArgumentError: ``hits`` is not a search result.
    """
    if not hasattr(hits, "columns") or "tile_id" not in getattr(hits, "columns", ()):
        raise InvalidArgumentError(
            f"hits_table needs the GeoDataFrame returned by rsia_geo.search, got {type(hits)!r}"
        )
    cols = [c for c in columns if c in hits.columns]
    head = ["rank", *(["tile"] if thumbnails else []), "centre (lon, lat)", *cols]
    style = (
        "border-collapse:collapse;font-size:12px;font-family:sans-serif"
        ";text-align:right;white-space:nowrap"
    )
    out = [f'<table class="rsia-hits" style="{style}"><thead><tr>']
    out += [f'<th style="padding:2px 6px">{html.escape(h)}</th>' for h in head]
    out.append("</tr></thead><tbody>")
    shown = hits.head(max_rows)
    for n, (_, row) in enumerate(shown.iterrows(), start=1):
        out.append('<tr style="border-top:1px solid #ddd">')
        out.append(f'<td style="padding:2px 6px">{int(row.get("rank", n))}</td>')
        if thumbnails:
            try:
                src = "data:image/png;base64," + base64.b64encode(chip_png(row, size=size)).decode()
                img = f'<img src="{src}" width="{size}" height="{size}" alt="tile"/>'
            except RsiaError as exc:  # an asset moved since indexing: say so in the cell
                img = f'<span title="{html.escape(str(exc))}">unreadable</span>'
            out.append(f'<td style="padding:2px">{img}</td>')
        c = row.geometry.centroid
        out.append(f'<td style="padding:2px 6px">{c.x:.5f}, {c.y:.5f}</td>')
        out += [f'<td style="padding:2px 6px">{_cell(row[col])}</td>' for col in cols]
        out.append("</tr>")
    out.append("</tbody></table>")
    if len(hits) > len(shown):
        out.append(f"<p>{len(hits) - len(shown)} more hits not shown (max_rows={max_rows})</p>")
    return HitsTable("".join(out), len(shown))


def hits_map(
    hits: Any,
    *,
    bbox: Any = None,
    geometry: Any = None,
    cmap: str = "viridis",
    tiles: str | None = "OpenStreetMap",
) -> Any:
    """A folium map of the hits' footprints coloured by score, with the query region drawn.

    Args:
        hits: The GeoDataFrame returned by :func:`rsia_geo.search`.
        bbox: The query bbox to draw (default: the region recorded on ``hits``).
        geometry: The query polygon to draw (shapely or GeoJSON).
        cmap: Matplotlib colormap for the score.
        tiles: Basemap tiles (fetched by the browser), or None for none.

    Returns:
        A ``folium.Map`` (displays itself in Jupyter; ``.save("map.html")`` writes it).
    """
    folium = lazy_import("folium")
    from rsia_geo.results import plain_table, region_geojson

    region = region_geojson(bbox, geometry, hits)
    if len(hits):
        table = plain_table(hits)
        cols = list(table.columns)
        fmap = table.explore(
            column="score",
            cmap=cmap,
            tiles=tiles,
            tooltip=[c for c in ("rank", "score", "item_id", "level", "datetime") if c in cols],
            style_kwds={"weight": 1, "fillOpacity": 0.5},
            legend=True,
        )
    else:
        fmap = folium.Map(tiles=tiles)
    if region is not None:
        folium.GeoJson(
            region,
            name="query region",
            style_function=lambda _f: {
                "color": "#d62728",
                "weight": 2,
                "dashArray": "6",
                "fill": False,
            },
        ).add_to(fmap)
    folium.LayerControl(collapsed=True).add_to(fmap)
    bounds = _bounds(hits, region)
    if bounds is not None:
        fmap.fit_bounds(bounds)
    return fmap


def _bounds(hits: Any, region: dict[str, Any] | None) -> list[list[float]] | None:
    from shapely.geometry import shape

    boxes = [tuple(hits.total_bounds)] if len(hits) else []
    if region is not None:
        boxes.append(shape(region).bounds)
    if not boxes:
        return None
    a = np.array(boxes, dtype=float)
    return [
        [float(a[:, 1].min()), float(a[:, 0].min())],
        [float(a[:, 3].max()), float(a[:, 2].max())],
    ]


def _loop_running() -> bool:
    import asyncio

    try:
        return asyncio.get_running_loop().is_running()
    except RuntimeError:
        return False


def _describe(hits: Any) -> str:
    """The panel's one-line summary of a search: what was searched, how many hits, how fast."""
    t = hits.attrs.get("timings", {})
    q = hits.attrs.get("query", {})
    if q.get("kind") == "typed":
        said = (
            f"typed &quot;{html.escape(q['text'])}&quot; "
            f"(spoken by {html.escape(q['voiced_by'])}): "
        )
    elif q.get("kind") == "example":
        said = f"more like the {html.escape(str(q.get('example')))}: "
    elif q.get("heard"):
        sure = q.get("heard_confidence")
        other = also_heard(q)  # when the recogniser was unsure
        maybe = f"; or &quot;{html.escape(other)}&quot;" if other else ""
        said = f"heard &quot;{html.escape(q['heard'])}&quot;" + (
            f" (confidence {sure:.2f}{maybe}): " if sure is not None else ": "
        )
    else:
        said = ""
    if q.get("relevant") or q.get("not_relevant"):
        said += (
            f"refined ({html.escape(str(q.get('refine_method')))}, {q.get('relevant')} "
            f"relevant, {q.get('not_relevant')} not): "
        )
    why = hits.attrs.get("empty")
    return (
        f"{said}{len(hits)} hits in {t.get('total_ms', 0):.0f} ms "
        f"({hits.attrs.get('candidates', 0)} candidates in the region)"
        + (f": {html.escape(why)}" if why else "")
    )


def _index_line(summary: dict[str, Any]) -> str:
    """The panel's first status line: what the index holds (:meth:`TileIndex.summary`)."""
    tiles = summary.get("tiles") or 0
    if not tiles:
        return "<b>the index holds no tiles</b>: index a catalog into it first (rsia-geo index)"
    ext = summary.get("extent") or {}
    start, end = (str(t or "unknown")[:10] for t in ext.get("interval") or (None, None))
    when = f", acquired {start}" + ("" if start == end else f" to {end}")
    names = ext.get("platforms")
    kinds = f" ({html.escape(', '.join(names))})" if names else ""
    return f"index: {tiles} tiles{kinds}{when if ext else ''}; record, upload or type a query"


class SearchPanel:
    """An interactive spoken-search panel for Jupyter (ipywidgets + ipyleaflet).

    Record from the microphone (*Record* / *Stop*, in the browser) or upload a clip (WAV,
    FLAC, OGG, MP3), play it back, or type the query; draw a rectangle or polygon on the
    map or type a bbox, choose ``k`` and the rerank, press *Search*: the hits appear as a table
    with thumbnails and on the map. The latest result is kept in :attr:`hits`.

    Then pick a hit (the list, or a click on the map) and ask for *More like this*, mark hits
    *Relevant* / *Not relevant* and *Refine* the last query with the marks (kept for the
    session in :attr:`relevant` / :attr:`not_relevant` until the next new query), or list the
    hit's *Same place, other dates*. Dates and platforms narrow every search.

    Args:
        index: An embedded index folder or a :class:`~rsia_geo.TileIndex`.
        model: Model or checkpoint folder (default: the starter checkpoint).
        center: Initial map centre ``(lat, lon)``; default the centre of the indexed tiles.
        zoom: Initial map zoom.
        thumbnails: Show chip thumbnails in the table.

    Attributes:
        hits: The latest result (a GeoDataFrame) or None.
        relevant: Tile ids marked relevant for the current query.
        not_relevant: Tile ids marked not relevant for the current query.
        history: The latest "same place, other dates" table, or None.
        widget: The panel's root widget (what Jupyter displays).
    """

    def __init__(
        self,
        index: Any,
        model: ModelSource = None,
        *,
        center: tuple[float, float] | None = None,
        zoom: int = 14,
        thumbnails: bool = True,
    ) -> None:
        w = lazy_import("ipywidgets")
        leaflet = lazy_import("ipyleaflet")
        from rsia_geo.pipeline import _open_index, load_model

        self.model = load_model(model)
        self.index, self._owned = _open_index(index)
        self.thumbnails = thumbnails
        self.hits: Any = None
        self.audio: bytes | None = None
        self.audio_name: str | None = None
        self.geometry: dict[str, Any] | None = None
        self.relevant: list[str] = []
        self.not_relevant: list[str] = []
        self.history: Any = None
        self._query: dict[str, Any] = {}
        self._hits_layer: Any = None
        self._build_inputs(w)
        self._build_map(leaflet, center, zoom)
        self._wire()
        self.widget = self._layout(w)
        self.status.value = _index_line(self.index.summary())

    def _build_inputs(self, w: Any) -> None:
        """The query widgets: audio sources, text, region, filters, options and buttons."""
        self.upload = w.FileUpload(accept=".wav,.flac,.ogg,.mp3,audio/*", multiple=False)
        self.recorder: Any = None
        if has_module("anywidget"):
            from rsia_geo._recorder import MicRecorder

            self.recorder = MicRecorder()
            self.recorder.observe(self._on_record, names="wav")
        self.player = w.Audio(autoplay=False, controls=True, layout=w.Layout(width="260px"))
        self.bbox_text = w.Text(
            placeholder="minx, miny, maxx, maxy (lon/lat) or draw on the map",
            layout=w.Layout(width="340px"),
        )
        self.text = w.Text(
            placeholder="or type the query: boats docked at a harbour",
            layout=w.Layout(width="340px"),
        )
        self.k = w.IntSlider(value=10, min=1, max=100, description="k")
        self.rerank = w.Checkbox(value=False, description="BSWFR rerank")
        self.group = w.Checkbox(value=True, description="one hit per place")
        self.distinct = w.Checkbox(
            value=True,
            description="distinct places",
            tooltip=f"tiles sharing a quarter of their ground are one place too (group_overlap "
            f"{DISTINCT_PLACES}, the default): no two hits show much of the same ground; off: "
            "0.5, diagonal neighbours stay places of their own",
        )
        self.transcribe = w.Checkbox(value=True, description="show what was heard")
        self.dates = w.Text(placeholder="dates: 2019/2021, 2020-05", layout=w.Layout(width="220px"))
        self.platform = w.Text(placeholder="platforms: naip", layout=w.Layout(width="160px"))
        self.button = w.Button(description="Search", button_style="primary", icon="search")
        self.clear = w.Button(description="Clear region")
        self.pick = w.Dropdown(options=[], description="hit", layout=w.Layout(width="300px"))
        self.like_button = w.Button(description="More like this", icon="clone")
        self.yes_button = w.Button(description="Relevant", icon="check")
        self.no_button = w.Button(description="Not relevant", icon="times")
        self.refine_button = w.Button(description="Refine", icon="refresh")
        self.reset_button = w.Button(description="Reset marks")
        self.place_button = w.Button(description="Same place, other dates", icon="history")
        self.marks = w.HTML()
        self.status = w.HTML()
        self.results = w.Output()

    def _build_map(self, leaflet: Any, center: tuple[float, float] | None, zoom: int) -> None:
        """The map with its rectangle/polygon drawing tool (the region)."""
        self.map = leaflet.Map(center=center or self._centre(), zoom=zoom, scroll_wheel_zoom=True)
        self.draw = leaflet.DrawControl(
            rectangle={"shapeOptions": {"color": "#d62728", "fillOpacity": 0.05}},
            polygon={"shapeOptions": {"color": "#d62728", "fillOpacity": 0.05}},
            circlemarker={},
            polyline={},
            marker={},
        )
        self.map.add(self.draw)

    def _wire(self) -> None:
        """Connect the widgets' events to the panel's actions."""
        self.upload.observe(self._on_upload, names="value")
        self.draw.on_draw(self._on_draw)
        self.button.on_click(lambda _b: self.run())
        # distinct places only mean something when hits are grouped into places
        self.group.observe(lambda ch: setattr(self.distinct, "disabled", not ch["new"]), "value")
        self.clear.on_click(lambda _b: self._clear_region())
        self.like_button.on_click(lambda _b: self.more_like())
        self.yes_button.on_click(lambda _b: self.mark(True))
        self.no_button.on_click(lambda _b: self.mark(False))
        self.refine_button.on_click(lambda _b: self.refine())
        self.reset_button.on_click(lambda _b: self.reset_marks())
        self.place_button.on_click(lambda _b: self.same_place())

    def _layout(self, w: Any) -> Any:
        """The panel's root widget."""
        return w.VBox(
            [
                w.HBox([*self._sources(), self.player]),
                self.text,
                w.HBox([self.bbox_text, self.clear]),
                w.HBox([self.dates, self.platform]),
                w.HBox([self.k, self.rerank, self.group, self.distinct, self.transcribe]),
                w.HBox([self.button]),
                w.HBox([self.pick, self.like_button, self.place_button]),
                w.HBox([self.yes_button, self.no_button, self.refine_button, self.reset_button]),
                self.marks,
                self.status,
                self.map,
                self.results,
            ]
        )

    def _centre(self) -> tuple[float, float]:
        """Centre (lat, lon) of the indexed tiles: of their extent, or of one stored point."""
        ext = self.index.extent()
        if ext and ext.get("bbox"):
            minx, miny, maxx, maxy = ext["bbox"]
            lon = (minx + maxx) / 2
            return (miny + maxy) / 2, lon - 360.0 if lon > 180.0 else lon
        dim = int(((self.index.meta or {}).get("model") or {}).get("embed_dim") or 0)
        pts = self.index.query(np.ones(dim), limit=1, fields=["location"]) if dim else []
        if pts and "location" in pts[0].payload:
            loc = pts[0].payload["location"]
            return float(loc["lat"]), float(loc["lon"])
        return 0.0, 0.0

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[no-untyped-call]

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.set_audio(bytes(f["content"]), name=str(f["name"]))

    def _sources(self) -> list[Any]:
        """The audio inputs: the microphone recorder (when anywidget is there), the upload."""
        return [*([self.recorder] if self.recorder is not None else []), self.upload]

    def _on_record(self, change: dict[str, Any]) -> None:
        data = bytes(change["new"] or b"")
        if data:
            self.text.value = ""  # a spoken query replaces a typed one
            self.set_audio(data, name="recording.wav")
            self.status.value += " recorded from the microphone: press Search"

    def set_audio(self, data: bytes, *, name: str = "query.wav") -> None:
        """Use these audio bytes as the query (what an upload does).

        Args:
            data: Encoded audio (WAV, FLAC, OGG or MP3).
            name: File name, whose extension tells the player the format.
        """
        self.audio, self.audio_name = data, name
        self.player.format = Path(name).suffix.lstrip(".").lower() or "wav"
        self.player.value = data
        self.status.value = f"audio: {html.escape(name)} ({len(data) / 1024:.0f} KiB)"

    def _on_draw(self, _control: Any, action: str, geo_json: dict[str, Any]) -> None:
        if action == "deleted":
            self.geometry = None
            return
        self.geometry = dict(geo_json.get("geometry", geo_json))
        self.bbox_text.value = ""
        self.status.value = f"region: drawn {self.geometry.get('type', 'shape').lower()}"

    def set_region(self, geometry: dict[str, Any]) -> None:
        """Use this GeoJSON polygon as the region (what drawing on the map does).

        Args:
            geometry: A GeoJSON Polygon/MultiPolygon (or a Feature) in lon/lat.
        """
        self._on_draw(None, "created", geometry)

    def _clear_region(self) -> None:
        self.geometry = None
        self.bbox_text.value = ""
        self.draw.clear()
        self.status.value = "region cleared: the whole index is searched"

    def run(self) -> Any:
        """Search with the panel's typed query (if any) or audio, region, k, rerank, grouping.

        A new query starts with no marks.

        Returns:
            The hits GeoDataFrame, or None when the search could not run (the reason is shown
            in the panel).
        """
        typed = self.text.value.strip() or None
        if self.audio is None and typed is None:
            self.status.value = (
                "<b>upload a clip or type the query first</b> (WAV, FLAC, OGG or MP3)"
            )
            return None
        self.reset_marks()
        return self._search({"audio": None if typed else self.audio, "text": typed})

    def _selected(self, tile_id: str | None) -> str | None:
        tid = tile_id or self.pick.value
        if not tid:
            self.status.value = "<b>pick a hit first</b> (the hit list, or click it on the map)"
        return tid or None

    def more_like(self, tile_id: str | None = None) -> Any:
        """Search for tiles like a hit (default: the picked one); a new query, no marks.

        Args:
            tile_id: The example tile (default: the hit picked in the list or on the map).

        Returns:
            The hits, or None (the reason is shown in the panel).
        """
        tid = self._selected(tile_id)
        if tid is None:
            return None
        self.reset_marks()
        return self._search({"example": tid})

    def mark(self, relevant: bool, tile_id: str | None = None) -> None:
        """Mark a hit (default: the picked one) relevant or not for the next :meth:`refine`.

        Args:
            relevant: True for relevant, False for not relevant.
            tile_id: The tile (default: the picked hit).
        """
        tid = self._selected(tile_id)
        if tid is None:
            return
        keep, drop = (
            (self.relevant, self.not_relevant) if relevant else (self.not_relevant, self.relevant)
        )
        if tid in drop:
            drop.remove(tid)
        if tid not in keep:
            keep.append(tid)
        self._show_marks()

    def reset_marks(self) -> None:
        """Forget every mark."""
        self.relevant.clear()
        self.not_relevant.clear()
        self._show_marks()

    def _show_marks(self) -> None:
        self.marks.value = (
            f"marks: {len(self.relevant)} relevant, {len(self.not_relevant)} not relevant"
            if self.relevant or self.not_relevant
            else ""
        )

    def refine(self) -> Any:
        """Search the last query again with the marks (the query moves toward the relevant).

        Returns:
            The hits, or None (the reason is shown in the panel).
        """
        if not self.relevant and not self.not_relevant:
            self.status.value = "<b>mark hits relevant or not relevant first</b>"
            return None
        return self._search(self._query or {})

    def same_place(self, tile_id: str | None = None) -> Any:
        """List a hit's place on other dates (default: the picked hit) below the map.

        Args:
            tile_id: The tile (default: the picked hit).

        Returns:
            The table (:func:`rsia_geo.similar.same_place`), or None.
        """
        from rsia_geo.similar import same_place

        tid = self._selected(tile_id)
        if tid is None:
            return None
        try:
            rows = same_place(
                tid, self.index, datetime=self.dates.value.strip() or None,
                platform=self.platform.value.strip() or None,
            )  # fmt: skip
        except RsiaError as exc:
            self.status.value = f"<b>error:</b> {html.escape(str(exc))}"
            return None
        self.history = rows
        self.results.outputs = ()
        self.status.value = f"{len(rows)} other acquisitions of this place"
        if len(rows):
            cols = ("datetime", "platform", "item_id", "similarity", "overlap", "level")
            table = hits_table(rows, thumbnails=self.thumbnails, columns=cols)
            self.results.append_display_data(table)
        return rows

    def _search(self, query: dict[str, Any]) -> Any:
        """Run one search with the panel's region, dates, platforms, k, options and marks."""
        from rsia_geo.pipeline import search

        self.results.outputs = ()
        self._query = dict(query)
        try:
            bbox = parse_bbox(self.bbox_text.value) if self.bbox_text.value.strip() else None
            geometry = None if bbox is not None else self.geometry
            marked = bool(self.relevant or self.not_relevant)
            self.status.value = "searching..."
            hits = search(
                query.get("audio"),
                self.index,
                self.model,
                text=query.get("text"),
                example=query.get("example"),
                relevant=list(self.relevant) or None,
                not_relevant=list(self.not_relevant) or None,
                bbox=bbox,
                geometry=geometry,
                datetime=self.dates.value.strip() or None,
                platform=self.platform.value.strip() or None,
                k=int(self.k.value),
                rerank=bool(self.rerank.value) and "example" not in query and not marked,
                group=bool(self.group.value),
                group_overlap=DISTINCT_PLACES if self.distinct.value else 0.5,
                transcribe=bool(self.transcribe.value),
            )
        except RsiaError as exc:
            self.status.value = f"<b>error:</b> {html.escape(str(exc))}"
            return None
        self.hits = hits
        self.pick.options = [
            (f"#{int(r['rank'])} {r['item_id']} ({r['score']:.3f})", r["tile_id"])
            for _, r in hits.iterrows()
        ]
        self.status.value = _describe(hits)
        self._show_on_map(hits)
        self.results.append_display_data(hits_table(hits, thumbnails=self.thumbnails))
        if len(hits):
            from IPython.display import HTML

            from rsia_geo.similar import acquisitions

            by = acquisitions(hits).to_html(index=False, float_format=lambda v: f"{v:.4f}")
            summary = HTML(f"<p>by acquisition date and platform</p>{by}")  # type: ignore[no-untyped-call]
            self.results.append_display_data(summary)
        return hits

    def _show_on_map(self, hits: Any) -> None:
        leaflet = lazy_import("ipyleaflet")
        if self._hits_layer is not None:
            self.map.remove(self._hits_layer)
            self._hits_layer = None
        if not len(hits):
            return
        wanted = ("rank", "score", "item_id", "level", "tile_id", "geometry")
        cols = [c for c in wanted if c in hits.columns]
        self._hits_layer = leaflet.GeoJSON(
            data=json.loads(hits[cols].to_json()),
            name="hits",
            style={"color": "#1f77b4", "weight": 2, "fillOpacity": 0.3},
        )
        self._hits_layer.on_click(self._on_hit_click)
        self.map.add(self._hits_layer)
        b = _bounds(hits, None)
        if b is not None:
            (south, west), (north, east) = b
            self.map.center = ((south + north) / 2, (west + east) / 2)
            if _loop_running():  # fit_bounds zooms by waiting for the browser's bounds
                self.map.fit_bounds(b)

    def _on_hit_click(self, feature: dict[str, Any] | None = None, **_kw: Any) -> None:
        """A click on a hit's footprint picks it."""
        tid = ((feature or {}).get("properties") or {}).get("tile_id")
        if tid and tid in [v for _, v in self.pick.options]:
            self.pick.value = tid

    def close(self) -> None:
        """Close the index if the panel opened it, and the widgets."""
        if self._owned:
            self.index.close()
        self.widget.close()
