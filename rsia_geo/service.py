"""Local HTTP search service (``rsia-geo serve``), used by the QGIS plugin.

An ASGI app (FastAPI) over one index and one model:

* ``POST /search``: multipart ``audio`` file plus form fields ``bbox`` (``minx,miny,maxx,maxy``
  in lon/lat) or ``geometry`` (GeoJSON), ``datetime``, ``k``, ``rerank``; answers a GeoJSON
  FeatureCollection in EPSG:4326 with scores, ranks and ids;
* ``GET /tiles/{tile_id}/chip.png``: the pixels of an indexed tile (only tiles in the index:
  no path is ever taken from the request);
* ``GET /collections``: the index, its model and tile count; ``GET /health``;
* OpenAPI schema at ``/openapi.json``, a self-contained docs page at ``/docs`` (no CDN).

Binds to loopback by default; a service key (``X-API-Key`` header) is required when bound to
any other address. The key comes from a file (``--service-key-file``) or the
``RSIA_SERVICE_KEY`` environment variable, never from the command line (where ``ps`` shows it).
A guard in front of the app checks the key (in constant time) *before* any body is read, and
reads a body only up to the upload limit, chunked or not; every route but ``/health`` needs
the key when one is set. Audio headers are checked before decoding. Uploads and audio
durations are limited; the model runs in worker threads with bounded concurrency, never on
the event loop. Every response is valid JSON (non-finite numbers become ``null``). Errors map
to status codes in one table, :data:`STATUS_CODES`, with a JSON body
``{"error": <class>, "detail": <message>}``.

This module is an edge like the CLI: settings are read here (``RSIA_*`` environment variables
via :meth:`ServiceSettings.from_env`), never in the library.
"""

import asyncio
import hmac
import html
import ipaddress
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rsia_geo._codes import code_for
from rsia_geo.errors import (
    AudioError,
    CheckpointError,
    IndexLockedError,
    IndexUnavailableError,
    InvalidArgumentError,
    InvalidRegionError,
    ModelMismatchError,
    RsiaError,
    TileNotFoundError,
    TileReadError,
    VectorIndexError,
)
from rsia_geo.query import parse_bbox

if TYPE_CHECKING:
    from fastapi.responses import Response

__all__ = ["STATUS_CODES", "ServiceSettings", "create_app", "json_bytes", "serve"]

STATUS_CODES: dict[type[BaseException], int] = {
    TileNotFoundError: 404,
    InvalidRegionError: 400,
    InvalidArgumentError: 400,
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
        api_key: Service key clients must send as ``X-API-Key`` (required off loopback).
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
            api_key=env.get("RSIA_SERVICE_KEY") or env.get("RSIA_API_KEY") or None,
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
                f"host={self.host!r} is not loopback: set a service key (--service-key-file "
                "FILE, or the RSIA_SERVICE_KEY environment variable) so strangers cannot use "
                "the service"
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


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by None, recursively (JSON has no NaN or Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def json_bytes(obj: Any) -> bytes:
    """Strict JSON (non-finite numbers as null), UTF-8.

    Args:
        obj: JSON-like data.

    Returns:
        The encoded document.
    """
    return json.dumps(_finite(obj), allow_nan=False).encode()


class _Guard:
    """ASGI guard: service key before the body, and a body read only up to the limit.

    Args:
        app: The wrapped ASGI app.
        api_key: Required ``X-API-Key`` (None: no key).
        max_body: Largest request body, bytes.
    """

    def __init__(self, app: Any, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body = max_body

    async def _reply(self, send: Any, status: int, error: str, detail: str) -> None:
        body = json_bytes({"error": error, "detail": detail})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.key is not None and scope["path"] != "/health":
            sent = headers.get(b"x-api-key", b"")
            if not hmac.compare_digest(sent, self.key):
                await self._reply(
                    send, 401, "Unauthorized", "missing or wrong X-API-Key header (service key)"
                )
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length")
        too_big = f"request body exceeds {self.max_body} bytes; send a shorter audio query"
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._reply(send, 413, "PayloadTooLarge", too_big)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:  # chunked uploads have no length: count them
                await self._reply(send, 413, "PayloadTooLarge", too_big)
                return
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _docs_page(schema: dict[str, Any]) -> str:
    """A self-contained HTML page of the API (no scripts, no CDN)."""
    e = html.escape
    rows = []
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            params = [
                f"<li><code>{e(p['name'])}</code> ({e(p.get('in', ''))})"
                f"{' required' if p.get('required') else ''}</li>"
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody", {}).get("content", {})
            for ctype, spec in body.items():
                ref = spec.get("schema", {}).get("$ref", "")
                comp = schema.get("components", {}).get("schemas", {}).get(ref.split("/")[-1], {})
                for name, prop in comp.get("properties", {}).items():
                    desc = prop.get("description", "")
                    params.append(f"<li><code>{e(name)}</code> ({e(ctype)}) {e(desc)}</li>")
            rows.append(
                f"<section><h2><code>{e(method.upper())} {e(path)}</code></h2>"
                f"<p>{e(op.get('summary', ''))}</p><p>{e(op.get('description', ''))}</p>"
                f"<ul>{''.join(params)}</ul></section>"
            )
    info = schema.get("info", {})
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(info.get('title', 'API'))}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "section{border-top:1px solid #ccc}</style></head><body>"
        f"<h1>{e(info.get('title', 'API'))} {e(info.get('version', ''))}</h1>"
        f"<p>{e(info.get('description', ''))}</p>"
        "<p>Machine-readable schema: <a href='openapi.json'>openapi.json</a>. Errors are "
        'JSON <code>{"error": ..., "detail": ...}</code>.</p>'
        f"{''.join(rows)}</body></html>"
    )


def _geojson_response(frame: Any, **members: Any) -> "Response":
    """A GeoJSON FeatureCollection response of a hits table, with extra top-level members.

    The table is :func:`~rsia_geo.results.plain_table`'s, as in every export; members are
    timings, query or hit.
    """
    from fastapi.responses import Response

    from rsia_geo.results import plain_table

    body = (
        json.loads(plain_table(frame).to_json())
        if len(frame)
        else {"type": "FeatureCollection", "features": []}
    )
    body.update(members)
    return Response(json_bytes(body), media_type="application/geo+json")


def _geojson(text: str, name: str) -> Any:
    """Parse a GeoJSON form field, naming the field and the fix when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRegionError(
            f"{name} is not valid JSON ({exc}); send a GeoJSON Polygon, Feature or "
            "FeatureCollection"
        ) from None


# Long (~265 lines): the routes are closures over the app's state; one function per route
# with errors mapped through STATUS_CODES (titiler's core/factory.py) is issue 15.
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
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from rsia_geo import __version__
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import load_model, search

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
                else TileIndex(settings.location, collection=settings.collection, create=False)
            )
        yield
        if state["owned"] and state["index"] is not None:
            state["index"].close()

    app = FastAPI(
        title="rsia_geo search service",
        version=__version__,
        lifespan=lifespan,
        description="Spoken, region-restricted search over georeferenced tiles.",
        docs_url=None,
        redoc_url=None,
    )
    # the key and the body limit are checked before FastAPI reads anything
    app.add_middleware(_Guard, api_key=settings.api_key, max_body=settings.max_upload_bytes + 65536)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return Response(_docs_page(app.openapi()), media_type="text/html")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        names = {404: "NotFound", 405: "MethodNotAllowed"}
        return Response(
            json_bytes({"error": names.get(exc.status_code, "HTTPError"), "detail": exc.detail}),
            status_code=exc.status_code,
            media_type="application/json",
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        return Response(
            json_bytes({"error": "InvalidArgumentError", "detail": "; ".join(parts)}),
            status_code=422,
            media_type="application/json",
        )

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
        # the guard already refused wrong keys before the body was read; this keeps routes
        # safe when the app is mounted without it
        if settings.api_key and not hmac.compare_digest(
            (key or "").encode(), settings.api_key.encode()
        ):
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
                    "bands": meta.get("bands"),
                    "extent": idx.extent(),
                }
            ]
        }

    @app.post("/search")
    async def search_endpoint(
        audio: UploadFile | None = File(default=None, description="WAV, FLAC, OGG or MP3 query"),
        text: str | None = Form(default=None, description="a typed query instead of audio"),
        bbox: str | None = Form(default=None, description="minx,miny,maxx,maxy in lon/lat"),
        geometry: str | None = Form(default=None, description="GeoJSON polygon(s), EPSG:4326"),
        datetime: str | None = Form(default=None, description="start/end, ISO 8601"),
        k: int = Form(default=20),
        rerank: bool = Form(default=False),
        group: bool = Form(default=True, description="one hit per place (overlapping tiles)"),
        like: str | None = Form(
            default=None,
            description="more like this: a tile id, or a GeoJSON polygon (the tiles under it)",
        ),
        relevant: str | None = Form(default=None, description="comma-separated tile ids"),
        not_relevant: str | None = Form(default=None, description="comma-separated tile ids"),
        refine_method: str = Form(default="rocchio", description="rocchio or linear"),
        platform: str | None = Form(default=None, description="comma-separated STAC platforms"),
        transcribe: bool = Form(
            default=True, description="say what the speech recogniser heard (query.heard)"
        ),
        x_api_key: str | None = Header(default=None),
    ) -> Response:
        auth(x_api_key)
        given = [v for v in (audio, text, like) if v is not None]
        if len(given) > 1 or (not given and not relevant):
            raise InvalidArgumentError(
                "send one query: an audio file (multipart field 'audio'), a typed query (field "
                "'text') or an example (field 'like': a tile id or a GeoJSON polygon), or "
                "tiles marked relevant (field 'relevant')"
            )
        data = b""
        if audio is not None:
            data = await audio.read(settings.max_upload_bytes + 1)
            if len(data) > settings.max_upload_bytes:
                raise _HTTPProblem(
                    413,
                    "PayloadTooLarge",
                    f"audio upload exceeds {settings.max_upload_bytes} bytes",
                )
            if not data:
                raise _HTTPProblem(400, "InvalidAudioError", "the audio upload is empty")
        if not 1 <= k <= settings.max_k:
            raise InvalidArgumentError(f"k={k} must be in [1, {settings.max_k}]")
        box = parse_bbox(bbox) if bbox else None
        geom = _geojson(geometry, "geometry") if geometry else None
        example: Any = like.strip() if like else None
        if example and example.startswith("{"):
            example = _geojson(example, "like")

        def run() -> Any:
            from rsia_geo.audio import load_audio

            clip = (
                load_audio(data, max_seconds=settings.max_audio_seconds, trim=True)
                if audio is not None
                else None
            )
            return search(
                clip.samples if clip is not None else None,
                state["index"],
                state["model"],
                sample_rate=clip.sample_rate if clip is not None else None,
                text=text, example=example, relevant=relevant, not_relevant=not_relevant,
                refine_method=refine_method, bbox=box, geometry=geom, datetime=datetime,
                platform=platform, k=k, rerank=rerank, group=group, transcribe=transcribe,
            )  # fmt: skip

        async with gate:
            hits = await run_in_threadpool(run)
        return _geojson_response(
            hits, timings=hits.attrs.get("timings", {}), query=hits.attrs.get("query", {})
        )

    @app.get("/tiles/{tile_id}/same-place")
    async def same_place_endpoint(
        tile_id: str,
        min_overlap: float = 0.5,
        datetime: str | None = None,
        platform: str | None = None,
        x_api_key: str | None = Header(default=None),
    ) -> Response:
        auth(x_api_key)
        from rsia_geo.similar import same_place

        def run() -> Any:
            return same_place(
                tile_id,
                state["index"],
                min_overlap=min_overlap,
                datetime=datetime,
                platform=platform,
            )

        async with gate:
            rows = await run_in_threadpool(run)
        return _geojson_response(rows, hit=rows.attrs.get("hit", {"tile_id": tile_id}))

    @app.get("/tiles/{tile_id}/chip.png")
    async def chip(
        tile_id: str, size: int = 256, x_api_key: str | None = Header(default=None)
    ) -> Response:
        auth(x_api_key)
        if not 16 <= size <= 1024:
            raise InvalidArgumentError(f"size={size} must be in [16, 1024]")
        import uuid

        try:
            uuid.UUID(tile_id)
        except ValueError:
            raise TileNotFoundError(f"no tile {tile_id!r} in the index") from None
        found = state["index"].retrieve([tile_id])
        if not found:
            raise TileNotFoundError(f"no tile {tile_id!r} in the index")
        payload = found[0].payload

        def render() -> bytes:
            from rsia_geo.index.payload import payload_to_tile
            from rsia_geo.results import chip_png

            return chip_png(payload_to_tile(payload), size=size)  # as every map's chips

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
