"""HTTP client for the rsia_geo search service (standard library only)."""

import json
import mimetypes
import os
import urllib.error
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
):
    """POST a spoken (or typed) query; return the GeoJSON FeatureCollection (dict).

    ``group`` asks for one hit per place (overlapping tiles grouped, with how many agreed);
    ``text`` sends a typed query instead of the audio file (``audio_path`` is then ignored).
    """
    if text is None and not os.path.isfile(audio_path or ""):
        raise ServiceError(f"audio file {audio_path!r} does not exist")
    boundary = uuid.uuid4().hex
    fields = {
        "k": str(int(k)),
        "rerank": "true" if rerank else "false",
        "group": "true" if group else "false",
    }
    if bbox is not None:
        fields["bbox"] = ",".join(repr(float(v)) for v in bbox)
    if geometry is not None:
        fields["geometry"] = json.dumps(geometry)
    if text is not None:
        fields["text"] = text
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    if text is None:
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


def chip(url, tile_id, key=None, size=256, timeout=30.0):
    """PNG bytes of an indexed tile."""
    req = urllib.request.Request(
        f"{url.rstrip('/')}/tiles/{tile_id}/chip.png?size={int(size)}", headers=_headers(key)
    )
    body, _ = _request(req, timeout)
    return body
