"""The HTTP search service over a small real index (ASGI app driven by httpx)."""

from __future__ import annotations

import io
import json
import wave

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from rsia_geo.index import TileIndex  # noqa: E402
from rsia_geo.pipeline import load_model  # noqa: E402
from rsia_geo.sample_data import sample_data_dir as samples_dir  # noqa: E402
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
def served(banked_index):
    root, ckpt = banked_index  # with a reference bank, so rerank=True works
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
        assert col["image_views"] == "d8"  # how the index embedded its tiles (the default)
        assert "checkpoint" not in col  # no path on the server's disk reaches a client
        assert col["quantization"] is None and col["bands"]
        import rasterio
        from rasterio.warp import transform_bounds

        with rasterio.open(samples_dir() / "aerial" / "cogeo.tif") as src:
            expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        # the 16 tiles of 256 px cover the 1024 px raster exactly
        assert col["extent"]["bbox"] == pytest.approx(list(expected), abs=1e-4)
        assert col["extent"]["interval"] == ["2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z"]
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
        assert "hubness" not in fc["query"]  # off by default
        assert fc["query"]["feedback"] == 0.4  # on by default (search's DEFAULT_FEEDBACK)
        on = c.post(
            "/search",
            files={"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            data={"bbox": f"{minx},{miny},{maxx},{maxy}", "k": "50", "hubness": "0.5"},
        ).json()
        assert on["query"]["hubness"] == 0.5 and on["query"]["hubness_from"] == "index"
        off = c.post(
            "/search",
            files={"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            data={"bbox": f"{minx},{miny},{maxx},{maxy}", "k": "50", "feedback": "0"},
        ).json()
        assert "feedback" not in off["query"]
        assert [f["properties"]["score"] for f in off["features"]] == [
            f["properties"]["score_ia"] for f in off["features"]
        ]
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
        ({"audio": ("q.wav", _wav_bytes(), "audio/wav")}, {"k": "0"}, 400, "InvalidArgumentError"),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"geometry": "{oops"},
            400,
            "InvalidRegionError",
        ),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"geometry": '{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}'},
            400,
            "InvalidRegionError",
        ),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"datetime": "June 2020"},
            400,
            "InvalidArgumentError",
        ),
        ({"audio": ("q.wav", _wav_bytes(seconds=40), "audio/wav")}, {}, 400, "InvalidAudioError"),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"hubness": "-1"},
            400,
            "InvalidArgumentError",
        ),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"feedback": "-0.4"},
            400,
            "InvalidArgumentError",
        ),
        (
            {"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            {"group_overlap": "1.5"},
            400,
            "InvalidArgumentError",
        ),
        ({}, {"text": "   "}, 400, "TypedQueryError"),  # not a 500: the query is at fault
        ({}, {"text": "harbour " * 80}, 400, "TypedQueryError"),
    ],
)
def test_bad_requests_map_to_status_codes(served, files, data, status, error):
    with _client(served) as c:
        r = c.post("/search", files=files, data=data)
        assert r.status_code == status, r.text
        assert r.json()["error"] == error and r.json()["detail"]


def test_a_year_or_a_month_filters_by_acquisition(served):
    """The sample item was acquired on 2020-01-01: found for 2020 and 2020-01, not 2019."""
    with _client(served) as c:
        for when, found in (
            ("2020", True),
            ("2020-01", True),
            ("2019", False),
            ("2020-02/..", False),
        ):
            r = c.post(
                "/search",
                files={"audio": ("q.wav", _wav_bytes(), "audio/wav")},
                data={"datetime": when, "k": "3"},
            )
            assert r.status_code == 200, r.text
            assert (len(r.json()["features"]) > 0) is found, when
            if not found:  # the reason names the dates the index holds
                assert r.json()["empty"] == (
                    f"no indexed tile was acquired in {when} (the tiles span 2020-01-01 to "
                    "2020-01-01): widen the filter, or index imagery that matches"
                )


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
        assert r.status_code == 404 and r.json()["error"] == "TileNotFoundError"


def test_off_loopback_needs_a_key():
    with pytest.raises(ValueError, match="--service-key-file") as err:
        ServiceSettings(host="0.0.0.0").check()
    assert "--api-key" not in str(err.value)  # Qdrant's key is another option
    ServiceSettings(host="0.0.0.0", api_key="k").check()
    ServiceSettings(host="::1").check()


def test_rerank_beyond_its_depth_and_empty_results_are_valid_json(served):
    def strict(text):
        def refuse(name):
            raise AssertionError(f"non-JSON constant {name} in the response")

        return json.loads(text, parse_constant=refuse)

    with _client(served) as c:
        r = c.post(
            "/search",
            files={"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            data={"k": "16", "rerank": "true"},
        )
        assert r.status_code == 200, r.text
        feats = strict(r.text)["features"]
        assert len(feats) == 16
        scores = [f["properties"]["score"] for f in feats]
        assert all(isinstance(v, float) for v in scores)
        assert scores == sorted(scores, reverse=True)
        far = c.post(
            "/search",
            files={"audio": ("q.wav", _wav_bytes(), "audio/wav")},
            data={"bbox": "10,10,11,11"},
        )
        assert far.status_code == 200 and strict(far.text)["features"] == []
        assert strict(far.text)["empty"].startswith("no indexed tile lies in the region (")
        assert "empty" not in strict(r.text)  # only when nothing was found


def test_framework_validation_errors_use_the_documented_shape(served):
    with _client(served) as c:
        r = c.post(
            "/search", files={"audio": ("q.wav", _wav_bytes(), "audio/wav")}, data={"k": "many"}
        )
        assert r.status_code == 422
        body = r.json()
        assert set(body) == {"error", "detail"} and body["error"] == "InvalidArgumentError"
        assert "k" in body["detail"]
        r = c.post("/search", data={"k": "3"})  # neither an audio part nor a typed query
        assert r.status_code == 400 and "audio" in r.json()["detail"]
        assert r.json()["error"] == "InvalidArgumentError"


def test_docs_page_is_self_contained_and_keyed(served):
    with _client(served) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "/search" in page.text
        assert "<script" not in page.text and "cdn" not in page.text.lower()
    with _client(served, api_key="a-long-service-key-0123") as c:
        assert c.get("/docs").status_code == 401
        assert c.get("/openapi.json").status_code == 401
        assert c.get("/health").status_code == 200
        ok = c.get("/openapi.json", headers={"X-API-Key": "a-long-service-key-0123"})
        assert ok.status_code == 200 and "/search" in ok.json()["paths"]


# ---------------------------------------------------------------- a real server on loopback


@pytest.fixture
def live(served):
    """A real uvicorn server on a free loopback port, over the served index and model."""
    import socket
    import threading
    import time

    import uvicorn

    idx, model = served
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def start(**kw):
        settings = ServiceSettings(location=None, port=port, **kw)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, index=idx, model=model),
                host="127.0.0.1",
                port=port,
                log_level="warning",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        servers.append((server, thread))
        return port

    servers: list = []
    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _raw(port, request: bytes, *, body_chunks=(), timeout=10.0) -> tuple[int, bytes, int]:
    """Send raw bytes (no client-side normalisation); return status, body, bytes sent."""
    import socket

    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        sent += len(request)
        try:
            for chunk in body_chunks:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: it stopped reading
        data = b""
        while b"\r\n\r\n" not in data:
            part = s.recv(65536)
            if not part:
                break
            data += part
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = next(
            (
                int(h.split(b":")[1])
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length")
            ),
            None,
        )
        while length is not None and len(rest) < length:
            part = s.recv(65536)
            if not part:
                break
            rest += part
    return status, rest, sent


def test_keyless_client_is_refused_before_any_body_is_read(live):
    port = live(api_key="a-long-service-key-0123", host="127.0.0.1")
    # chunked upload, headers only: a 401 without waiting for the body proves the key is
    # checked before reading (a server that spooled the body would wait for it)
    status, body, _ = _raw(
        port,
        b"POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n",
        timeout=5,
    )
    assert status == 401 and json.loads(body)["error"] == "ServiceKeyError"


def test_chunked_upload_stops_at_the_limit(live):
    port = live(max_upload_bytes=4096)
    chunk = b"x" * 16384
    status, body, _ = _raw(
        port,
        b"POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n",
        body_chunks=[chunk] * 64,  # 1 MiB, never terminated: only a limit ends it
    )
    assert status == 413 and json.loads(body)["error"] == "PayloadTooLargeError"


def test_chip_path_traversal_reaches_the_endpoint_raw(live):
    port = live()
    for path in (b"/tiles/../../etc/passwd/chip.png", b"/tiles/..%2F..%2Fetc%2Fpasswd/chip.png"):
        status, body, _ = _raw(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 404, (path, body)
        assert b"root:" not in body
        assert set(json.loads(body)) == {"error", "detail"}


def test_feature_collection_region_and_escaped_map(served, tmp_path):
    minx, miny, maxx, maxy = 128.655, 37.668, 128.6575, 37.672
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    poly = {"type": "Polygon", "coordinates": [ring]}
    fc = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {}, "geometry": poly}],
    }
    with _client(served) as c:
        args = {"files": {"audio": ("q.wav", _wav_bytes(), "audio/wav")}}
        a = c.post("/search", **args, data={"geometry": json.dumps(poly), "k": "50"})
        b = c.post("/search", **args, data={"geometry": json.dumps(fc), "k": "50"})
        assert a.status_code == b.status_code == 200, b.text
        ids = [f["properties"]["tile_id"] for f in a.json()["features"]]
        assert ids and ids == [f["properties"]["tile_id"] for f in b.json()["features"]]
    # a catalog value that is HTML never reaches the page as markup
    import geopandas as gpd
    from shapely.geometry import box

    from rsia_geo.results import write_map

    hits = gpd.GeoDataFrame(
        {
            "rank": [1],
            "score": [0.5],
            "item_id": ["</script><img src=x onerror=alert(1)>"],
            "level": [1],
            "window": ["0,0,1,1"],
        },
        geometry=[box(0, 0, 1, 1)],
        crs="EPSG:4326",
    )
    page = write_map(hits, tmp_path / "m.html").read_text()
    assert "</script><img" not in page  # "</" is escaped inside the embedded JSON
    assert "function esc(" in page and "esc(fmt(v))" in page  # values shown as text
