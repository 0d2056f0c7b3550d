"""HTTP client for the rsia_geo search service (standard library only)."""

import json
import mimetypes
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid

DEFAULT_URL = "http://127.0.0.1:8765"


class ServiceError(Exception):
    """The service is unreachable or answered with an error (message ready for users)."""


def _request(req, timeout):
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            info = json.loads(body)
            detail = f"{info.get('error', exc.code)}: {info.get('detail', '')}"
        except ValueError:
            detail = body.decode("utf-8", "replace")[:300] or exc.reason
        raise ServiceError(f"the service refused the request ({exc.code}) - {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceError(
            f"cannot reach the rsia_geo service at {req.full_url.split('/')[2]} ({reason}); "
            "start it with `rsia-geo serve --location <index>`"
        ) from None


def _headers(key):
    return {"X-API-Key": key} if key else {}


def health(url, key=None, timeout=5.0):
    """Return the service's /health answer."""
    body, _ = _request(
        urllib.request.Request(url.rstrip("/") + "/health", headers=_headers(key)), timeout
    )
    return json.loads(body)


def search(
    url,
    audio_path,
    bbox=None,
    geometry=None,
    k=20,
    rerank=False,
    key=None,
    timeout=120.0,
    group=True,
    text=None,
    like=None,
    relevant=None,
    not_relevant=None,
    platform=None,
    refine_method="rocchio",
    datetime=None,
    transcribe=True,
    group_overlap=0.25,
):
    """POST a query; return the GeoJSON FeatureCollection (dict).

    The query is the audio file, or ``text`` (a typed query), or ``like`` (a tile id, or a
    GeoJSON polygon dict: the tiles under it), or only ``relevant`` tile ids. ``relevant`` /
    ``not_relevant`` (lists of tile ids) refine it; ``group`` asks for one hit per place,
    ``group_overlap`` for the shared fraction of the smaller tile that makes two tiles one
    place (0.25, the service's default: distinct places; 0.5: diagonal neighbours apart);
    ``platform`` (comma-separated) and ``datetime`` (``start/end``) narrow it;
    ``transcribe`` asks the service to say what it heard (``query.heard``).
    """
    query_free = text is not None or like is not None or relevant
    if not query_free and not os.path.isfile(audio_path or ""):
        raise ServiceError(f"audio file {audio_path!r} does not exist")
    boundary = uuid.uuid4().hex
    fields = {
        "k": str(int(k)),
        "rerank": "true" if rerank else "false",
        "group": "true" if group else "false",
        "group_overlap": repr(float(group_overlap)),
        "transcribe": "true" if transcribe else "false",
    }
    if bbox is not None:
        fields["bbox"] = ",".join(repr(float(v)) for v in bbox)
    if geometry is not None:
        fields["geometry"] = json.dumps(geometry)
    if text is not None:
        fields["text"] = text
    if like is not None:
        fields["like"] = like if isinstance(like, str) else json.dumps(like)
    if relevant:
        fields["relevant"] = ",".join(relevant)
    if not_relevant:
        fields["not_relevant"] = ",".join(not_relevant)
    if relevant or not_relevant:
        fields["refine_method"] = refine_method
    if platform:
        fields["platform"] = platform
    if datetime:
        fields["datetime"] = datetime
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    if not query_free:
        ctype = mimetypes.guess_type(audio_path)[0] or "application/octet-stream"
        with open(audio_path, "rb") as f:
            data = f.read()
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; '
            f'filename="{os.path.basename(audio_path)}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", **_headers(key)}
    req = urllib.request.Request(
        url.rstrip("/") + "/search", data=b"".join(parts), headers=headers, method="POST"
    )
    body, _ = _request(req, timeout)
    return json.loads(body)


def collections(url, key=None, timeout=10.0):
    """The service's /collections answer: the index's tiles, extent, dates and model."""
    body, _ = _request(
        urllib.request.Request(url.rstrip("/") + "/collections", headers=_headers(key)), timeout
    )
    return json.loads(body)


def chip(url, tile_id, key=None, size=256, timeout=30.0):
    """PNG bytes of an indexed tile."""
    req = urllib.request.Request(
        f"{url.rstrip('/')}/tiles/{tile_id}/chip.png?size={int(size)}", headers=_headers(key)
    )
    body, _ = _request(req, timeout)
    return body


def same_place(url, tile_id, key=None, min_overlap=0.5, timeout=60.0):
    """The hit's place on other dates: a GeoJSON FeatureCollection (one tile per date)."""
    query = urllib.parse.urlencode({"min_overlap": repr(float(min_overlap))})
    req = urllib.request.Request(
        f"{url.rstrip('/')}/tiles/{urllib.parse.quote(tile_id)}/same-place?{query}",
        headers=_headers(key),
    )
    body, _ = _request(req, timeout)
    return json.loads(body)
