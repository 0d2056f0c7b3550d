"""The service's routes and error handlers (imported when an app is built: needs FastAPI).

One method per route on :class:`Routes`, whose object holds the settings, the index, the model
and the concurrency gate; every error is one of our exceptions, answered through
:data:`rsia_geo.service.STATUS_CODES` by :func:`add_error_handlers`.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

from fastapi import File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rsia_geo.errors import (
    InvalidArgumentError,
    InvalidAudioError,
    PayloadTooLargeError,
    RsiaError,
    ServiceKeyError,
    TileNotFoundError,
)
from rsia_geo.pipeline import DISTINCT_PLACES
from rsia_geo.query import parse_bbox
from rsia_geo.service import (
    ServiceSettings,
    _error_body,
    _geojson,
    _geojson_response,
    json_bytes,
)

__all__ = ["Routes", "add_error_handlers"]


def add_error_handlers(app: Any) -> None:
    """Every error answers ``{"error", "detail"}``: ours through :data:`STATUS_CODES`."""

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        names = {404: "NotFound", 405: "MethodNotAllowed"}  # routing, not our exceptions
        return Response(
            json_bytes({"error": names.get(exc.status_code, "HTTPError"), "detail": exc.detail}),
            status_code=exc.status_code,
            media_type="application/json",
        )

    async def invalid_form(request: Request, exc: RequestValidationError) -> Response:
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        detail = "; ".join(parts)
        body = json_bytes({"error": InvalidArgumentError.__name__, "detail": detail})
        # 422 as FastAPI answers a form that does not parse (docs/user-guide.md);
        # the values our code checks answer 400 through STATUS_CODES
        return Response(body, status_code=422, media_type="application/json")

    async def rsia_error(request: Request, exc: RsiaError) -> Response:
        status, body = _error_body(exc)
        return Response(body, status_code=status, media_type="application/json")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_form)
    app.add_exception_handler(RsiaError, rsia_error)


def _search_inputs(
    settings: ServiceSettings,
    *,
    has_audio: bool,
    text: str | None,
    like: str | None,
    relevant: str | None,
    k: int,
    bbox: str | None,
    geometry: str | None,
) -> tuple[Any, Any, Any]:
    """Check a search form before any work: ``(bbox, geometry, example)`` parsed."""
    given = [v for v in (has_audio or None, text, like) if v is not None]
    if len(given) > 1 or (not given and not relevant):
        raise InvalidArgumentError(
            "send one query: an audio file (multipart field 'audio'), a typed query (field "
            "'text') or an example (field 'like': a tile id or a GeoJSON polygon), or "
            "tiles marked relevant (field 'relevant')"
        )
    if not 1 <= k <= settings.max_k:
        raise InvalidArgumentError(f"k={k} must be in [1, {settings.max_k}]")
    box = parse_bbox(bbox) if bbox else None
    geom = _geojson(geometry, "geometry") if geometry else None
    example: Any = like.strip() if like else None
    if example and example.startswith("{"):
        example = _geojson(example, "like")
    return box, geom, example


class Routes:
    """The service's routes, one method each, over one index and one model.

    Like titiler's endpoint factories: the state (settings, index, model, the concurrency
    gate) lives on the object, each route is a method registered by :meth:`register`, and
    errors are raised as our exceptions and answered by :func:`add_error_handlers`.

    Args:
        settings: Configuration.
        index: An open index, or None to open it at startup (and close it at shutdown).
        model: A loaded model, or None to load it at startup.
    """

    def __init__(self, settings: ServiceSettings, index: Any, model: Any) -> None:
        self.settings = settings
        self.index = index
        self.model = model
        self.owned = index is None
        self.gate = asyncio.Semaphore(settings.concurrency)

    def register(self, app: Any) -> None:
        """Add the routes to ``app``.

        Args:
            app: The FastAPI app.
        """
        app.add_api_route("/health", self.health, methods=["GET"])
        app.add_api_route("/collections", self.collections, methods=["GET"])
        app.add_api_route("/search", self.search, methods=["POST"])
        app.add_api_route("/tiles/{tile_id}/same-place", self.same_place, methods=["GET"])
        app.add_api_route("/tiles/{tile_id}/chip.png", self.chip, methods=["GET"])

    async def lifespan(self, app: Any) -> Any:
        """Load the model and open the index at startup; close an index it opened."""
        from rsia_geo.index import TileIndex
        from rsia_geo.pipeline import load_model

        st = self.settings
        if self.model is None:
            self.model = load_model(st.checkpoint)
        if self.index is None:
            self.index = (
                TileIndex(url=st.url, api_key=st.qdrant_api_key, collection=st.collection)
                if st.url
                else TileIndex(st.location, collection=st.collection, create=False)
            )
        yield
        if self.owned and self.index is not None:
            self.index.close()

    def auth(self, key: str | None) -> None:
        """Check the service key.

        The guard already did, before the body was read; this keeps routes safe when the
        app is mounted without it.
        """
        expected = self.settings.api_key
        if expected and not hmac.compare_digest((key or "").encode(), expected.encode()):
            raise ServiceKeyError("missing or wrong X-API-Key header (service key)")

    async def run(self, work: Any) -> Any:
        """Run blocking work in a thread, at most ``concurrency`` at once."""
        from starlette.concurrency import run_in_threadpool

        async with self.gate:
            return await run_in_threadpool(work)

    async def health(self) -> dict[str, Any]:
        """Liveness (never needs the key)."""
        from rsia_geo import __version__

        return {"status": "ok", "version": __version__}

    async def collections(
        self, x_api_key: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        """The index: its tiles, model, tiling, bands, image views and extent."""
        self.auth(x_api_key)
        summary = self.index.summary()
        summary.pop("checkpoint")  # a path on the server's disk is not the client's business
        return {"collections": [{"name": self.settings.collection, **summary}]}

    async def search(
        self,
        audio: Annotated[UploadFile | None, File(description="WAV, FLAC, OGG or MP3 query")] = None,
        text: Annotated[str | None, Form(description="a typed query instead of audio")] = None,
        bbox: Annotated[str | None, Form(description="minx,miny,maxx,maxy in lon/lat")] = None,
        geometry: Annotated[str | None, Form(description="GeoJSON polygon(s), EPSG:4326")] = None,
        datetime: Annotated[str | None, Form(description="start/end, ISO 8601")] = None,
        k: Annotated[int, Form()] = 20,
        rerank: Annotated[bool, Form()] = False,
        group: Annotated[bool, Form(description="one hit per place (overlapping tiles)")] = True,
        group_overlap: Annotated[
            float,
            Form(
                description="shared fraction of the smaller tile that makes two tiles one place "
                "(0.25: distinct places; 0.5: diagonal neighbours stay places of their own)"
            ),
        ] = DISTINCT_PLACES,
        like: Annotated[
            str | None,
            Form(
                description="more like this: a tile id, or a GeoJSON polygon (the tiles under it)"
            ),
        ] = None,
        relevant: Annotated[str | None, Form(description="comma-separated tile ids")] = None,
        not_relevant: Annotated[str | None, Form(description="comma-separated tile ids")] = None,
        refine_method: Annotated[str, Form(description="rocchio or linear")] = "rocchio",
        platform: Annotated[str | None, Form(description="comma-separated STAC platforms")] = None,
        transcribe: Annotated[
            bool, Form(description="say what the speech recogniser heard (query.heard)")
        ] = True,
        text_weight: Annotated[
            float | None,
            Form(description="text route weight (default: the checkpoint's; 0: audio only)"),
        ] = None,
        hubness: Annotated[
            float | None,
            Form(description="weight of the tiles' hubness taken off their scores (0: off)"),
        ] = None,
        feedback: Annotated[
            float | None,
            Form(description="weight of the first places' look (default 0.4; 0: off)"),
        ] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """A spoken, typed or example query, restricted to a region: hits as GeoJSON."""
        from rsia_geo.pipeline import search

        self.auth(x_api_key)
        box, geom, example = _search_inputs(
            self.settings, has_audio=audio is not None, text=text, like=like,
            relevant=relevant, k=k, bbox=bbox, geometry=geometry,
        )  # fmt: skip
        data = await self._upload(audio) if audio is not None else None

        def run() -> Any:
            from rsia_geo.audio import load_audio

            clip = None
            if data is not None:
                clip = load_audio(data, max_seconds=self.settings.max_audio_seconds, trim=True)
            return search(
                clip.samples if clip is not None else None,
                self.index,
                self.model,
                sample_rate=clip.sample_rate if clip is not None else None,
                text=text, example=example, relevant=relevant, not_relevant=not_relevant,
                refine_method=refine_method, bbox=box, geometry=geom, datetime=datetime,
                platform=platform, k=k, rerank=rerank, group=group, group_overlap=group_overlap,
                transcribe=transcribe, text_weight=text_weight, hubness=hubness, feedback=feedback,
            )  # fmt: skip

        hits = await self.run(run)
        why = {"empty": hits.attrs["empty"]} if "empty" in hits.attrs else {}
        return _geojson_response(
            hits, timings=hits.attrs.get("timings", {}), query=hits.attrs.get("query", {}), **why
        )

    async def _upload(self, audio: UploadFile) -> bytes:
        """The uploaded audio, read only up to the limit."""
        limit = self.settings.max_upload_bytes
        data = await audio.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLargeError(f"audio upload exceeds {limit} bytes")
        if not data:
            raise InvalidAudioError("the audio upload is empty (0 bytes)")
        return data

    async def same_place(
        self,
        tile_id: str,
        min_overlap: float = 0.5,
        datetime: str | None = None,
        platform: str | None = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """A tile's place on other acquisitions, one tile each."""
        from rsia_geo.similar import same_place

        self.auth(x_api_key)
        rows = await self.run(
            lambda: same_place(
                tile_id, self.index, min_overlap=min_overlap, datetime=datetime, platform=platform
            )
        )
        return _geojson_response(rows, hit=rows.attrs.get("hit", {"tile_id": tile_id}))

    async def chip(
        self, tile_id: str, size: int = 256, x_api_key: Annotated[str | None, Header()] = None
    ) -> Response:
        """The pixels of an indexed tile as PNG (never a path taken from the request)."""
        import uuid

        from rsia_geo.index.payload import payload_to_tile
        from rsia_geo.results import chip_png

        self.auth(x_api_key)
        if not 16 <= size <= 1024:
            raise InvalidArgumentError(f"size={size} must be in [16, 1024]")
        try:
            uuid.UUID(tile_id)
        except ValueError:
            raise TileNotFoundError(f"no tile {tile_id!r} in the index") from None
        found = self.index.retrieve([tile_id])
        if not found:
            raise TileNotFoundError(f"no tile {tile_id!r} in the index")
        tile = payload_to_tile(found[0].payload)
        png = await self.run(lambda: chip_png(tile, size=size))  # as every map's chips
        return Response(png, media_type="image/png")
