"""Local HTTP search service (``rsia-geo serve``), used by the QGIS plugin.

An ASGI app (FastAPI) over one index and one model:

* ``POST /search``: multipart ``audio`` file plus form fields ``bbox`` (``minx,miny,maxx,maxy``
  in lon/lat) or ``geometry`` (GeoJSON), ``datetime``, ``k``, ``rerank``; answers a GeoJSON
  FeatureCollection in EPSG:4326 with scores, ranks and ids;
* ``GET /tiles/{tile_id}/chip.png``: the pixels of an indexed tile (only tiles in the index:
  no path is ever taken from the request);
* ``GET /collections``: the index, its model and tile count; ``GET /health``;
* OpenAPI schema at ``/openapi.json``, docs at ``/docs``.

Binds to loopback by default; an API key (``X-API-Key`` header) is required when bound to any
other address. Uploads and audio durations are limited; the model runs in worker threads with
bounded concurrency, never on the event loop. Errors map to status codes in one table,
:data:`STATUS_CODES`, with a JSON body ``{"error": <class>, "detail": <message>}``.

This module is an edge like the CLI: settings are read here (``RSIA_*`` environment variables
via :meth:`ServiceSettings.from_env`), never in the library.
"""

import asyncio
import io
import ipaddress
import json
import os
from dataclasses import dataclass
from typing import Any

from rsia_geo._codes import code_for
from rsia_geo.errors import (
    AudioError,
    CheckpointError,
    IndexLockedError,
    IndexUnavailableError,
    InvalidBBoxError,
    ModelMismatchError,
    RsiaError,
    TileReadError,
    VectorIndexError,
)

__all__ = ["STATUS_CODES", "ServiceSettings", "create_app", "serve"]

STATUS_CODES: dict[type[BaseException], int] = {
    InvalidBBoxError: 400,
    AudioError: 400,
    ModelMismatchError: 409,
    TileReadError: 502,
    IndexLockedError: 503,
    IndexUnavailableError: 503,
    VectorIndexError: 503,
    CheckpointError: 500,
    RsiaError: 500,
}
"""HTTP status per exception class; the most specific match wins."""


class _HTTPProblem(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


@dataclass
class ServiceSettings:
    """Service configuration.

    Attributes:
        location: Embedded index folder (or None with ``url``).
        url: Qdrant server URL.
        qdrant_api_key: Qdrant server API key.
        collection: Collection name.
        checkpoint: Model checkpoint folder (None: the shipped starter).
        host: Bind address.
        port: Port.
        api_key: Key clients must send as ``X-API-Key`` (required off loopback).
        max_upload_bytes: Largest accepted audio upload.
        max_audio_seconds: Longest accepted query.
        concurrency: Searches running at once (others wait).
        max_k: Largest ``k``.
    """

    location: str | None = "rsia_index"
    url: str | None = None
    qdrant_api_key: str | None = None
    collection: str = "tiles"
    checkpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_audio_seconds: float = 30.0
    concurrency: int = 2
    max_k: int = 500

    @classmethod
    def from_env(cls, **overrides: Any) -> "ServiceSettings":
        """Settings from ``RSIA_*`` environment variables, then ``overrides``.

        Args:
            **overrides: Values that win over the environment (None values are ignored).

        Returns:
            The settings.
        """
        env = os.environ
        s = cls(
            location=env.get("RSIA_INDEX", "rsia_index"),
            url=env.get("RSIA_QDRANT_URL"),
            qdrant_api_key=env.get("RSIA_QDRANT_API_KEY"),
            collection=env.get("RSIA_COLLECTION", "tiles"),
            checkpoint=env.get("RSIA_CHECKPOINT"),
            api_key=env.get("RSIA_API_KEY"),
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        if s.url:
            s.location = None
        return s

    def check(self) -> None:
        """Refuse unsafe settings.

        Raises:
            ValueError: Bound off loopback without an API key, or bad limits.
        """
        if not _is_loopback(self.host) and not self.api_key:
            raise ValueError(
                f"host={self.host!r} is not loopback: set an API key (--api-key or "
                "RSIA_API_KEY) so strangers cannot use the service"
            )
        if self.max_upload_bytes <= 0 or self.max_audio_seconds <= 0 or self.concurrency < 1:
            raise ValueError("limits must be positive")


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: ServiceSettings, *, index: Any = None, model: Any = None) -> Any:
    """Build the FastAPI app.

    Args:
        settings: Configuration.
        index: An open :class:`~rsia_geo.index.TileIndex` (default: opened from settings).
        model: A loaded model (default: from ``settings.checkpoint`` or the starter).

    Returns:
        The ASGI app; the index is closed when the app shuts down (if it opened it).
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, File, Form, Header, Request, UploadFile
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from rsia_geo import __version__
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import load_model, read_chip, search

    settings.check()
    state: dict[str, Any] = {"index": index, "model": model, "owned": index is None}
    gate = asyncio.Semaphore(settings.concurrency)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        if state["model"] is None:
            state["model"] = load_model(settings.checkpoint)
        if state["index"] is None:
            state["index"] = (
                TileIndex(
                    url=settings.url,
                    api_key=settings.qdrant_api_key,
                    collection=settings.collection,
                )
                if settings.url
                else TileIndex(settings.location, collection=settings.collection)
            )
        yield
        if state["owned"] and state["index"] is not None:
            state["index"].close()

    app = FastAPI(
        title="rsia_geo search service",
        version=__version__,
        lifespan=lifespan,
        description="Spoken, region-restricted search over georeferenced tiles.",
    )

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        # refuse oversized uploads before reading them (multipart overhead allowed)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes + 65536:
            return JSONResponse(
                {
                    "error": "PayloadTooLarge",
                    "detail": f"request body exceeds {settings.max_upload_bytes} bytes of audio",
                },
                status_code=413,
            )
        return await call_next(request)

    @app.exception_handler(_HTTPProblem)
    async def _problem(request: Request, exc: _HTTPProblem) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RsiaError)
    async def _rsia(request: Request, exc: RsiaError) -> JSONResponse:
        return JSONResponse(
            {"error": type(exc).__name__, "detail": str(exc)},
            status_code=code_for(exc, STATUS_CODES, 500),
        )

    def auth(key: str | None) -> None:
        if settings.api_key and key != settings.api_key:
            raise _HTTPProblem(401, "Unauthorized", "missing or wrong X-API-Key header")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/collections")
    async def collections(x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
        auth(x_api_key)
        idx = state["index"]
        meta = idx.meta or {}
        return {
            "collections": [
                {
                    "name": settings.collection,
                    "tiles": idx.count(),
                    "model": meta.get("model"),
                    "tile_spec": meta.get("tile_spec"),
                }
            ]
        }

    @app.post("/search")
    async def search_endpoint(
        audio: UploadFile = File(..., description="WAV, FLAC, OGG or MP3 query"),
        bbox: str | None = Form(default=None, description="minx,miny,maxx,maxy in lon/lat"),
        geometry: str | None = Form(default=None, description="GeoJSON polygon(s), EPSG:4326"),
        datetime: str | None = Form(default=None, description="start/end, ISO 8601"),
        k: int = Form(default=20),
        rerank: bool = Form(default=False),
        x_api_key: str | None = Header(default=None),
    ) -> Response:
        auth(x_api_key)
        data = await audio.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise _HTTPProblem(
                413, "PayloadTooLarge", f"audio upload exceeds {settings.max_upload_bytes} bytes"
            )
        if not data:
            raise _HTTPProblem(400, "InvalidAudioError", "the audio upload is empty")
        if not 1 <= k <= settings.max_k:
            raise _HTTPProblem(400, "InvalidBBoxError", f"k={k} must be in [1, {settings.max_k}]")
        box: Any = None
        if bbox:
            try:
                box = tuple(float(v) for v in bbox.split(","))
            except ValueError:
                raise _HTTPProblem(
                    400, "InvalidBBoxError", f"bbox={bbox!r} is not four comma-separated numbers"
                ) from None
        geom = None
        if geometry:
            try:
                geom = json.loads(geometry)
            except json.JSONDecodeError as exc:
                raise _HTTPProblem(
                    400, "InvalidBBoxError", f"geometry is not valid JSON: {exc}"
                ) from None

        def run() -> Any:
            from rsia_geo.audio import load_audio

            clip = load_audio(data, max_seconds=settings.max_audio_seconds, trim=True)
            return search(
                clip.samples,
                state["index"],
                state["model"],
                sample_rate=clip.sample_rate,
                bbox=box,
                geometry=geom,
                datetime=datetime,
                k=k,
                rerank=rerank,
            )

        async with gate:
            hits = await run_in_threadpool(run)
        cols = [c for c in hits.columns if c != "tile_json"]
        body = (
            json.loads(hits[cols].to_json())
            if len(hits)
            else {"type": "FeatureCollection", "features": []}
        )
        body["timings"] = hits.attrs.get("timings", {})
        return Response(json.dumps(body), media_type="application/geo+json")

    @app.get("/tiles/{tile_id}/chip.png")
    async def chip(
        tile_id: str, size: int = 256, x_api_key: str | None = Header(default=None)
    ) -> Response:
        auth(x_api_key)
        if not 16 <= size <= 1024:
            raise _HTTPProblem(400, "InvalidSize", f"size={size} must be in [16, 1024]")
        import uuid

        try:
            uuid.UUID(tile_id)
        except ValueError:
            raise _HTTPProblem(404, "NotFound", f"no tile {tile_id!r} in the index") from None
        found = state["index"].retrieve([tile_id])
        if not found:
            raise _HTTPProblem(404, "NotFound", f"no tile {tile_id!r} in the index")
        payload = found[0].payload

        def render() -> bytes:
            import numpy as np
            from PIL import Image

            from rsia_geo.index.payload import payload_to_tile

            arr = read_chip(payload_to_tile(payload), out_size=size)
            rgb = arr[:3] if arr.shape[0] >= 3 else np.repeat(arr[:1], 3, axis=0)
            img = Image.fromarray((rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            return buf.getvalue()

        async with gate:
            png = await run_in_threadpool(render)
        return Response(png, media_type="image/png")

    return app


def serve(settings: ServiceSettings) -> None:
    """Run the service with uvicorn until interrupted.

    Args:
        settings: Configuration.
    """
    import uvicorn

    settings.check()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
