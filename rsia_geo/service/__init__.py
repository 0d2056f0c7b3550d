"""Local HTTP search service (``rsia-geo serve``), used by the QGIS plugin.

An ASGI app (FastAPI) over one index and one model:

* ``POST /search``: multipart ``audio`` file plus form fields ``bbox`` (``minx,miny,maxx,maxy``
  in lon/lat) or ``geometry`` (GeoJSON), ``datetime``, ``k``, ``rerank``; answers a GeoJSON
  FeatureCollection in EPSG:4326 with scores, ranks and ids (and, when it has no features,
  ``empty``: why, as ``rsia_geo.search``'s ``attrs["empty"]``);
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

import hmac
import html
import ipaddress
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rsia_geo._error_codes import code_for
from rsia_geo.errors import (
    AudioError,
    CheckpointError,
    IndexLockedError,
    IndexUnavailableError,
    InvalidArgumentError,
    InvalidRegionError,
    ModelMismatchError,
    PayloadTooLargeError,
    RsiaError,
    ServiceKeyError,
    TileNotFoundError,
    TileReadError,
    VectorIndexError,
)

if TYPE_CHECKING:
    from fastapi.responses import Response

__all__ = ["STATUS_CODES", "ServiceSettings", "create_app", "json_bytes", "serve"]

STATUS_CODES: dict[type[BaseException], int] = {
    ServiceKeyError: 401,
    PayloadTooLargeError: 413,
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

    async def _reply(self, send: Any, exc: RsiaError) -> None:
        status, body = _error_body(exc)  # the same table and body as the app's errors
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
                    send, ServiceKeyError("missing or wrong X-API-Key header (service key)")
                )
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length")
        too_big = f"request body exceeds {self.max_body} bytes; send a shorter audio query"
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._reply(send, PayloadTooLargeError(too_big))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:  # chunked uploads have no length: count them
                await self._reply(send, PayloadTooLargeError(too_big))
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
    timings, query, empty or hit.
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


def _error_body(exc: BaseException) -> tuple[int, bytes]:
    """Status and JSON body of an exception, through the one table :data:`STATUS_CODES`."""
    status = code_for(exc, STATUS_CODES, 500)
    return status, json_bytes({"error": type(exc).__name__, "detail": str(exc)})


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

    from rsia_geo._lazy import lazy_import

    FastAPI = lazy_import("fastapi").FastAPI
    from fastapi.responses import Response

    from rsia_geo import __version__
    from rsia_geo.service.routes import Routes, add_error_handlers

    settings.check()
    routes = Routes(settings, index, model)
    app = FastAPI(
        title="rsia_geo search service",
        version=__version__,
        lifespan=asynccontextmanager(routes.lifespan),
        description="Spoken, region-restricted search over georeferenced tiles.",
        docs_url=None,
        redoc_url=None,
    )
    # the key and the body limit are checked before FastAPI reads anything
    app.add_middleware(_Guard, api_key=settings.api_key, max_body=settings.max_upload_bytes + 65536)

    async def docs() -> Response:
        return Response(_docs_page(app.openapi()), media_type="text/html")

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    add_error_handlers(app)
    routes.register(app)
    return app


def serve(settings: ServiceSettings) -> None:
    """Run the service with uvicorn until interrupted.

    Args:
        settings: Configuration.
    """
    import uvicorn

    settings.check()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
