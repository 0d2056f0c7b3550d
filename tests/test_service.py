"""The HTTP search service over a small real index (ASGI app driven by httpx)."""

from __future__ import annotations

import datetime as dt
import io
import json
import wave

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from rsia_geo import TileSpec, build_catalog  # noqa: E402
from rsia_geo.index import TileIndex  # noqa: E402
from rsia_geo.models import build_model, get_config, save_checkpoint  # noqa: E402
from rsia_geo.pipeline import build_index, load_model  # noqa: E402
from rsia_geo.service import ServiceSettings, create_app  # noqa: E402


def _wav_bytes(seconds=1.0, rate=16000, seed=0) -> bytes:
    x = (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 3000).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory, samples):
    root = tmp_path_factory.mktemp("svc")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(get_config("alac-tiny"), pretrained=False), root / "ck")
    cat = build_catalog(
        [samples / "aerial"], root / "cat", default_datetime=dt.datetime(2020, 1, 1)
    )
    build_index(cat, root / "idx", ckpt, spec=TileSpec(size=256), progress=False)
    idx = TileIndex(root / "idx")
    model = load_model(ckpt)
    yield idx, model
    idx.close()


def _client(served, **kw) -> TestClient:
    idx, model = served
    settings = ServiceSettings(location=None, **kw)
    return TestClient(create_app(settings, index=idx, model=model))


def test_health_collections_and_openapi(served):
    with _client(served) as c:
        assert c.get("/health").json()["status"] == "ok"
        col = c.get("/collections").json()["collections"][0]
        assert col["tiles"] == 16 and col["model"]["model_id"] == "alac-tiny"
        schema = c.get("/openapi.json").json()
        assert "/search" in schema["paths"] and "/tiles/{tile_id}/chip.png" in schema["paths"]


def test_search_returns_geojson_in_the_region_and_chips(served):
    minx, miny, maxx, maxy = 128.655, 37.668, 128.6575, 37.672
    with _client(served) as c:
        r = c.post(
            "/search",
            files={"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            data={"bbox": f"{minx},{miny},{maxx},{maxy}", "k": "50"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/geo+json")
        fc = r.json()
        from shapely.geometry import box, shape

        assert fc["features"]
        for f in fc["features"]:
            assert shape(f["geometry"]).intersects(box(minx, miny, maxx, maxy))
            assert {"rank", "score", "tile_id", "item_id"} <= set(f["properties"])
        ranks = [f["properties"]["rank"] for f in fc["features"]]
        assert ranks == sorted(ranks)
        tile_id = fc["features"][0]["properties"]["tile_id"]
        png = c.get(f"/tiles/{tile_id}/chip.png?size=64")
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        from PIL import Image

        assert Image.open(io.BytesIO(png.content)).size == (64, 64)
        geo = {
            "type": "Polygon",
            "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]],
        }
        r2 = c.post(
            "/search",
            files={"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            data={"geometry": json.dumps(geo), "k": "50"},
        )
        assert {f["properties"]["tile_id"] for f in r2.json()["features"]} == {
            f["properties"]["tile_id"] for f in fc["features"]
        }


@pytest.mark.parametrize(
    ("files", "data", "status", "error"),
    [
        ({"audio": ("q.wav", b"not audio" * 20, "audio/wav")}, {}, 400, "AudioDecodeError"),
        ({"audio": ("q.wav", b"", "audio/wav")}, {}, 400, "InvalidAudioError"),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"bbox": "1,2,3"},
            400,
            "InvalidBBoxError",
        ),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"bbox": "0,10,1,5"},
            400,
            "InvalidBBoxError",
        ),
        ({"audio": ("q.wav", _wav_bytes(), "audio/wav")}, {"k": "0"}, 400, "InvalidBBoxError"),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"geometry": "{oops"},
            400,
            "InvalidBBoxError",
        ),
        ({"audio": ("q.wav", _wav_bytes(seconds=40), "audio/wav")}, {}, 400, "InvalidAudioError"),
    ],
)
def test_bad_requests_map_to_status_codes(served, files, data, status, error):
    with _client(served) as c:
        r = c.post("/search", files=files, data=data)
        assert r.status_code == status, r.text
        assert r.json()["error"] == error and r.json()["detail"]


def test_limits_auth_and_unknown_tiles(served):
    with _client(served, max_upload_bytes=2000) as c:
        r = c.post("/search", files={"audio": ("q.wav", _wav_bytes(), "audio/wav")})
        assert r.status_code == 413
    with _client(served, api_key="s3cret") as c:
        r = c.post("/search", files={"audio": ("q.wav", _wav_bytes(), "audio/wav")})
        assert r.status_code == 401
        r = c.post(
            "/search",
            files={"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            headers={"X-API-Key": "s3cret"},
        )
        assert r.status_code == 200
        assert (
            c.get("/tiles/../../etc/passwd/chip.png", headers={"X-API-Key": "s3cret"}).status_code
            == 404
        )
        r = c.get(
            "/tiles/00000000-0000-0000-0000-000000000000/chip.png", headers={"X-API-Key": "s3cret"}
        )
        assert r.status_code == 404 and r.json()["error"] == "NotFound"


def test_off_loopback_needs_a_key():
    with pytest.raises(ValueError, match="API key"):
        ServiceSettings(host="0.0.0.0").check()
    ServiceSettings(host="0.0.0.0", api_key="k").check()
    ServiceSettings(host="::1").check()
