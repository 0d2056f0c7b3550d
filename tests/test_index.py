"""Index and spoken search: one congruence suite over every backend, plus reliability."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import MultiPolygon, Polygon, box

torch = pytest.importorskip("torch")

import rasterio  # noqa: E402

from rsia_geo import TileSpec, build_catalog  # noqa: E402
from rsia_geo.errors import (  # noqa: E402
    AudioError,
    IndexLockedError,
    IndexUnavailableError,
    InvalidArgumentError,
    InvalidBBoxError,
    InvalidRegionError,
    ModelMismatchError,
    VectorIndexError,
)
from rsia_geo.index import TileIndex, make_region  # noqa: E402
from rsia_geo.index.payload import tile_to_payload  # noqa: E402
from rsia_geo.models import build_model, get_config, save_checkpoint  # noqa: E402
from rsia_geo.pipeline import build_index, read_chip, search  # noqa: E402
from rsia_geo.tiles import iter_tiles  # noqa: E402

UTC = dt.UTC
BACKENDS = ["edge", "client-memory", "client-folder"]


def _index(kind: str, tmp_path: Path) -> TileIndex:
    if kind == "edge":
        return TileIndex(tmp_path / "edge")
    if kind == "client-memory":
        return TileIndex(":memory:", engine="client")
    return TileIndex(tmp_path / "local", engine="client")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(get_config("alac-tiny"), pretrained=False)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(model, path, audio_bank=torch.randn(40, 64))
    return path


@pytest.fixture(scope="module")
def world_catalog(tmp_path_factory, samples):
    """Sample rasters plus a raster straddling the antimeridian (Fiji, UTM 60S-like)."""
    root = tmp_path_factory.mktemp("world")
    src = root / "src"
    src.mkdir()
    for rel in (
        "aerial/cogeo.tif",
        "naip/m_4112001_sw_10_060_20220716.tif",
        "naip/m_3211605_ne_11_060_20200415.tif",
    ):
        (src / Path(rel).name).write_bytes((samples / rel).read_bytes())
    arr = (np.random.default_rng(1).integers(0, 255, (3, 256, 384))).astype(np.uint8)
    with rasterio.open(
        src / "fiji_20210101.tif",
        "w",
        driver="GTiff",
        width=384,
        height=256,
        count=3,
        dtype="uint8",
        crs="EPSG:32660",
        photometric="RGB",
        transform=Affine(1000, 0, 700000, 0, -1000, 1200000),
    ) as dst:
        dst.write(arr)
    return build_catalog(
        [src], root / "catalog", default_datetime=dt.datetime(2019, 6, 1, tzinfo=UTC)
    )


SPEC = TileSpec(size=128, scales=(1, 2), min_valid=0.3)


@pytest.fixture(scope="module")
def tiles_and_vectors(world_catalog):
    tiles = list(iter_tiles(world_catalog, SPEC))
    rng = np.random.default_rng(0)
    return tiles, rng.standard_normal((len(tiles), 64)).astype(np.float32)


SIG = {
    "model_id": "synthetic",
    "version": "1",
    "embed_dim": 64,
    "backbone": "none",
    "input_size": 128,
    "in_chans": 3,
    "frontend": "none",
    "weights_sha256": None,
}


# ---------------------------------------------------------------- congruence


def test_backends_agree(tmp_path, tiles_and_vectors):
    """Every backend answers every region with the same ids in the same order."""
    answers = {kind: _congruence(kind, tmp_path / kind, tiles_and_vectors) for kind in BACKENDS}
    first = answers[BACKENDS[0]]
    for kind in BACKENDS[1:]:
        assert answers[kind] == first, kind


def _congruence(kind, tmp_path, tiles_and_vectors):
    tmp_path.mkdir()
    tiles, vecs = tiles_and_vectors
    idx = _index(kind, tmp_path)
    idx.bind_model(SIG)
    idx.add(tiles, vecs)
    idx.add(tiles[:10], vecs[:10])  # idempotent upsert
    assert idx.count() == len(tiles)
    q = np.random.default_rng(5).standard_normal(64)
    results = {}
    regions = {
        "none": None,
        "us_west": make_region(bbox=(-125.0, 30.0, -110.0, 45.0)),
        "antimeridian": make_region(bbox=(179.5, 9.0, -179.0, 12.0)),
        "east_of_180": make_region(bbox=(-179.9, 9.0, -179.0, 12.0)),
        "time": make_region(datetime="2020-01-01/.."),
        "polygon": make_region(geometry=box(128.0, 37.0, 129.0, 38.0)),
    }
    for name, region in regions.items():
        hits = idx.query(q, region, limit=500)
        results[name] = [h.id for h in hits]
        # the coarse filter keeps every tile whose footprint intersects the region
        if region is not None and region.geometry is not None:
            inside = {t.id for t in tiles if t.footprint.intersects(region.geometry)}
            assert inside <= set(results[name]), name
        if name == "time":
            assert {h.payload["item_id"] for h in hits} >= {"m_4112001_sw_10_060_20220716"}
            assert "fiji_20210101" in {h.payload["item_id"] for h in hits}
    assert results["antimeridian"] and results["east_of_180"]
    assert set(results["east_of_180"]) <= set(results["antimeridian"])
    # exact search: the same order as a brute-force cosine over the stored vectors
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    brute = [tiles[i].id for i in np.argsort(-(unit @ (q / np.linalg.norm(q))))]
    assert results["none"] == brute[: len(results["none"])]
    idx.close()
    return results


def test_search_only_open_writes_nothing_and_stored_points_survive(tmp_path, tiles_and_vectors):
    import hashlib

    def files():
        return {
            str(f): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted((tmp_path / "i").rglob("*"))
            if f.is_file() and f.name != ".lock"
        }

    tiles, vecs = tiles_and_vectors
    with TileIndex(tmp_path / "i") as idx:
        idx.bind_model(SIG)
        idx.add(tiles, vecs)
    q = np.random.default_rng(5).standard_normal(64)
    with TileIndex(tmp_path / "i", create=False) as idx:  # (the engine settles its segments
        idx.count()  # on the first load after a write)
    before = files()
    with TileIndex(tmp_path / "i", create=False) as idx:  # what a search does
        first = [h.id for h in idx.query(q, None, limit=10)]
        assert idx.count() == len(tiles)
    assert files() == before  # nothing flushed, nothing rewritten
    with TileIndex(tmp_path / "i", create=False) as idx:
        assert [h.id for h in idx.query(q, None, limit=10)] == first


def test_model_mismatch_is_refused(tmp_path, tiles_and_vectors):
    tiles, vecs = tiles_and_vectors
    with TileIndex(tmp_path / "i") as idx:
        idx.bind_model(SIG)
        idx.add(tiles[:5], vecs[:5])
    with TileIndex(tmp_path / "i") as idx:
        with pytest.raises(ModelMismatchError, match="version: index '1' vs model '2'"):
            idx.bind_model({**SIG, "version": "2"})
        with pytest.raises(ModelMismatchError, match="synthetic"):
            idx.check_model({**SIG, "embed_dim": 32})


def test_a_model_with_the_indexs_image_side_is_accepted(tmp_path, tiles_and_vectors):
    """A new audio branch (trained with image_from) embeds tiles as the index's model did."""
    tiles, vecs = tiles_and_vectors
    with TileIndex(tmp_path / "i") as idx:
        idx.bind_model({**SIG, "weights_sha256": "aaa", "image_side": "aaa"})
        idx.add(tiles[:5], vecs[:5])
    voice = {**SIG, "model_id": "my-voices", "version": "7", "frontend": "whisper"}
    voice.update(weights_sha256="bbb", image_side="aaa")
    with TileIndex(tmp_path / "i") as idx:
        idx.bind_model(voice)  # searches and adds to it
        assert idx.meta["model"]["weights_sha256"] == "aaa"  # the index keeps its model
        with pytest.raises(ModelMismatchError, match="weights_sha256: index 'aaa' vs model 'ccc'"):
            idx.check_model({**voice, "weights_sha256": "ccc", "image_side": "ccc"})
        with pytest.raises(ModelMismatchError, match="embed_dim"):
            idx.check_model({**voice, "embed_dim": 32})
    # an index recorded before image sides were: its model's weights name its image side
    with TileIndex(tmp_path / "old") as idx:
        idx.bind_model({**SIG, "weights_sha256": "aaa"})
        idx.check_model(voice)


def test_second_process_gets_a_clear_error(tmp_path):
    with TileIndex(tmp_path / "i") as idx:
        idx.bind_model(SIG)
        code = textwrap.dedent(f"""
            from rsia_geo.index import TileIndex
            from rsia_geo.errors import IndexLockedError
            try:
                TileIndex({str(tmp_path / "i")!r})
            except IndexLockedError as e:
                print("LOCKED", e)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "LOCKED" in out.stdout and "another process" in out.stdout
        with pytest.raises(IndexLockedError):
            TileIndex(tmp_path / "i")  # and in-process as well
    with TileIndex(tmp_path / "i") as idx:  # released on close
        assert idx.count() == 0


def test_unreachable_server_fails_after_bounded_retries():
    import time

    t0 = time.perf_counter()
    idx = TileIndex(url="http://127.0.0.1:9", retries=2, timeout=1)
    with pytest.raises(IndexUnavailableError, match="did not answer after 2 attempts"):
        idx.count() if idx.backend.exists() else None
    assert time.perf_counter() - t0 < 10


def test_bad_index_arguments(tmp_path):
    with pytest.raises(VectorIndexError, match="or url"):
        TileIndex()
    with pytest.raises(VectorIndexError, match="not both"):
        TileIndex(tmp_path, url="http://x")
    with pytest.raises(VectorIndexError, match="engine"):
        TileIndex(tmp_path / "x", engine="faiss")
    with pytest.raises(VectorIndexError, match="needs a folder"):
        TileIndex(":memory:", engine="edge")


# ---------------------------------------------------------------- region parsing


def test_region_errors():
    with pytest.raises(InvalidBBoxError, match="miny"):
        make_region(bbox=(0, 10, 1, 5))
    with pytest.raises(InvalidBBoxError, match="longitudes"):
        make_region(bbox=(500000, 4000000, 500100, 4000100))
    with pytest.raises(InvalidRegionError, match="do not overlap"):
        make_region(bbox=(0, 0, 1, 1), geometry=box(10, 10, 11, 11))
    with pytest.raises(InvalidRegionError, match="Polygon"):
        make_region(geometry={"type": "Point", "coordinates": [0, 0]})
    with pytest.raises(InvalidRegionError, match="projected"):
        make_region(geometry=box(500000, 4000000, 500100, 4000100))
    with pytest.raises(InvalidArgumentError, match="start is after the end"):
        make_region(datetime="2021-01-01/2020-01-01")
    r = make_region(bbox=(170, -10, -170, 10))
    assert len(r.boxes) == 2 and r.geometry.geom_type == "MultiPolygon"
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(geometry=[box(500000, 4000000, 510000, 4010000)], crs="EPSG:32616")
    r = make_region(geometry=gdf)
    assert -90 < r.geometry.bounds[0] < -86  # reprojected to lon/lat


# ---------------------------------------------------------------- pipeline


def _wave(seed=0):
    return (np.random.default_rng(seed).standard_normal(16000) * 0.1).astype(np.float32)


def test_index_and_search_region_semantics(tmp_path, world_catalog, tiny_ckpt):
    report = build_index(world_catalog, tmp_path / "idx", tiny_ckpt, spec=SPEC, progress=False)
    tiles = list(iter_tiles(world_catalog, SPEC))
    assert report.indexed == len(tiles) == report.tiles_seen and not report.failed
    # a region covering part of the aerial COG; some tiles only touch it
    cog = [t for t in tiles if t.item_id == "cogeo"]
    minx, miny, maxx, maxy = cog[0].footprint.bounds
    region = (minx + (maxx - minx) * 0.9, miny, maxx + (maxx - minx) * 0.5, maxy)
    expected = {
        t.id
        for t in tiles
        if t.footprint.intersects(box(*region)) and not t.footprint.touches(box(*region))
    }
    centre_outside = {
        t.id for t in tiles if t.id in expected and not box(*region).contains(t.footprint.centroid)
    }
    hits = search(
        _wave(), tmp_path / "idx", tiny_ckpt, sample_rate=16000, bbox=region, k=500, group=False
    )
    assert set(hits.tile_id) == expected  # exactly the intersecting footprints
    assert centre_outside  # including tiles whose centre is outside the region
    assert all(g.intersects(box(*region)) for g in hits.geometry)
    assert hits.crs.to_epsg() == 4326
    assert list(hits["rank"]) == list(range(1, len(hits) + 1))
    assert hits["score"].is_monotonic_decreasing
    # stage effects are kept on the hits
    assert {"score_cosine", "score_ia", "rank_cosine", "rank_ia"} <= set(hits.columns)
    # time filter: nothing before 2019-06 except... all items are dated, cogeo is 2019-06-01
    old = search(
        _wave(), tmp_path / "idx", tiny_ckpt, sample_rate=16000, datetime="2022-01-01/..", k=500
    )
    assert set(old.item_id) == {"m_4112001_sw_10_060_20220716"}
    # one hit per place: the two levels' overlapping tiles are grouped, the best kept
    places = search(_wave(), tmp_path / "idx", tiny_ckpt, sample_rate=16000, bbox=region, k=500)
    assert len(places) < len(hits) and places["group_size"].sum() == len(hits)
    assert places.iloc[0]["tile_id"] == hits.iloc[0]["tile_id"]
    from shapely.geometry import shape as _shape

    grouped = set()
    for _, p in places.iterrows():
        members = p["group_tile_ids"].split(",")
        assert members[0] == p["tile_id"] and len(members) == p["group_size"]
        assert _shape(json.loads(p["group_footprint"])).covers(p.geometry)
        grouped |= set(members)
    assert grouped == set(hits.tile_id)  # every candidate tile is in exactly one place
    fps = list(places.geometry)
    for i in range(len(fps)):
        for j in range(i + 1, len(fps)):
            shared = fps[i].intersection(fps[j]).area
            assert shared < 0.5 * min(fps[i].area, fps[j].area)  # distinct places
    # polygon region, antimeridian bbox, rerank, chips
    fiji = search(
        _wave(),
        tmp_path / "idx",
        tiny_ckpt,
        sample_rate=16000,
        bbox=(179.0, 9.0, -179.0, 12.0),
        k=5,
        rerank=True,
        group=False,
    )
    assert set(fiji.item_id) == {"fiji_20210101"} and len(fiji) == 5
    assert fiji["score_bswfr"].notna().all()
    chip = read_chip(fiji.iloc[0])
    assert chip.shape == (3, 128, 128) and chip.dtype == np.float32
    empty = search(
        _wave(), tmp_path / "idx", tiny_ckpt, sample_rate=16000, bbox=(0.0, 0.0, 1.0, 1.0), k=5
    )
    assert len(empty) == 0
    # outputs
    from rsia_geo.results import write_map

    html = write_map(hits, tmp_path / "map.html", bbox=region)
    page = html.read_text()
    assert "unpkg.com" not in page and "leaflet" not in page  # no script from a CDN
    assert hits.iloc[0]["tile_id"] in page and page.count("data:image/png;base64,") == len(hits)


def test_search_errors(tmp_path, world_catalog, tiny_ckpt):
    build_index(
        world_catalog,
        tmp_path / "idx",
        tiny_ckpt,
        spec=SPEC,
        progress=False,
        bbox=(-125.0, 30.0, -110.0, 45.0),
    )
    with pytest.raises(InvalidArgumentError, match="k=0"):
        search(_wave(), tmp_path / "idx", tiny_ckpt, sample_rate=16000, k=0)
    with pytest.raises(InvalidBBoxError, match="miny"):
        search(_wave(), tmp_path / "idx", tiny_ckpt, sample_rate=16000, bbox=(0, 5, 1, 1))
    with pytest.raises(AudioError, match="silent"):
        search(np.zeros(16000, np.float32), tmp_path / "idx", tiny_ckpt, sample_rate=16000)
    with pytest.raises(AudioError, match="cannot decode"):
        search(b"not audio at all" * 10, tmp_path / "idx", tiny_ckpt)
    other = build_model(get_config("alac-tiny"), pretrained=False)
    other_path = save_checkpoint(other, tmp_path / "other")
    with pytest.raises(ModelMismatchError):
        search(_wave(), tmp_path / "idx", other_path, sample_rate=16000)
    with pytest.raises(ModelMismatchError):
        build_index(world_catalog, tmp_path / "idx", other_path, spec=SPEC, progress=False)


def test_corrupt_asset_is_reported_and_the_rest_indexed(tmp_path, samples, tiny_ckpt):
    src = tmp_path / "src"
    src.mkdir()
    (src / "cogeo.tif").write_bytes((samples / "aerial/cogeo.tif").read_bytes())
    (src / "naip_20220716.tif").write_bytes(
        (samples / "naip/m_4112001_sw_10_060_20220716.tif").read_bytes()
    )
    cat = build_catalog([src], tmp_path / "cat", default_datetime=dt.datetime(2020, 1, 1))
    (src / "naip_20220716.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    report = build_index(cat, tmp_path / "idx", tiny_ckpt, spec=TileSpec(size=256), progress=False)
    assert report.indexed == 16
    assert [s.item_id for s in report.skipped if s.kind == "item"] == ["naip_20220716"]


def test_kill_9_during_ingest_then_resume(tmp_path, samples, tiny_ckpt):
    src = tmp_path / "src"
    src.mkdir()
    (src / "cogeo.tif").write_bytes((samples / "aerial/cogeo.tif").read_bytes())
    cat_dir = tmp_path / "cat"
    build_catalog([src], cat_dir, default_datetime=dt.datetime(2020, 1, 1))
    spec = "TileSpec(size=64, scales=(1, 2))"  # 256 + 64 tiles
    script = textwrap.dedent(f"""
        import sys
        from rsia_geo import TileSpec
        from rsia_geo.index import TileIndex
        from rsia_geo.pipeline import build_index
        orig = TileIndex.add
        def add(self, tiles, vecs, **kw):
            orig(self, tiles, vecs, **kw)
            print("WROTE", len(tiles), flush=True)
        TileIndex.add = add
        build_index({str(cat_dir / "catalog.json")!r}, {str(tmp_path / "idx")!r},
                    {str(tiny_ckpt)!r}, spec={spec}, batch_size=32, progress=False)
        print("DONE", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    written = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("WROTE"):
            written += 1
            if written == 3:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    from rsia_geo import TileSpec as TS

    total = len(list(iter_tiles(cat_dir / "catalog.json", TS(size=64, scales=(1, 2)))))
    report = build_index(
        cat_dir / "catalog.json",
        tmp_path / "idx",
        tiny_ckpt,
        spec=TS(size=64, scales=(1, 2)),
        batch_size=64,
        progress=False,
    )
    assert report.already_present >= 96  # what the killed run stored was kept
    assert report.already_present + report.indexed == total
    with TileIndex(tmp_path / "idx") as idx:
        assert idx.count() == total  # nothing lost, nothing duplicated


def test_vectorised_footprints_match_shapely_shape():
    """The batched GeoJSON -> shapely conversion used per candidate page equals shape()."""
    from shapely.geometry import mapping, shape

    from rsia_geo.pipeline import _footprints

    geoms = [
        box(0, 0, 1, 1),
        box(2, 2, 3, 4),
        Polygon([(0, 0), (2, 0), (2, 1), (1, 2), (0, 1)]),  # 6-point ring
        box(0, 0, 4, 4).difference(box(1, 1, 2, 2)),  # with a hole
        MultiPolygon([box(179, 0, 180, 1), box(-180, 0, -179, 1)]),  # cut at 180
    ]
    import json

    as_dicts = [mapping(g) for g in geoms]
    as_text = [json.dumps(d) for d in as_dicts]  # as the index stores them (pack_payload)
    mixed = [as_text[0], *as_dicts[1:]]  # indexes written before packing held dicts
    for inputs in (as_dicts, as_text, mixed):
        out = _footprints(inputs)
        assert len(out) == len(geoms)
        for got, want in zip(out, geoms, strict=True):
            assert got.geom_type == shape(mapping(want)).geom_type
            assert got.equals(want)


def test_geo_index_filter_finds_every_tile_the_range_filter_finds(tmp_path, tiles_and_vectors):
    """The fast filter (geo box on tile centres grown by the recorded margin) loses nothing."""
    import dataclasses

    tiles, vecs = tiles_and_vectors
    with TileIndex(tmp_path / "i") as idx:
        idx.bind_model(SIG)
        idx.add(tiles[:7], vecs[:7])
        idx.add(tiles[7:], vecs[7:])
        margin = idx.centre_margin()
        assert margin is not None
        # the recorded margin bounds every tile's centre-to-bbox distance
        for t in tiles:
            minx, miny, maxx, maxy = t.footprint.bounds
            if maxx - minx < 180:  # tiles cut at 180 are checked through the range path
                assert max(t.centre[0] - minx, maxx - t.centre[0]) <= margin[0] + 1e-9
                assert max(t.centre[1] - miny, maxy - t.centre[1]) <= margin[1] + 1e-9
        rng = np.random.default_rng(3)
        q = rng.standard_normal(64)
        checked = 0
        for t in rng.choice(np.array(tiles, dtype=object), 40, replace=False):
            minx, miny, maxx, maxy = t.footprint.bounds
            w, h = (maxx - minx) % 360, maxy - miny
            sx, sy = rng.uniform(-1.2, 1.2, 2)  # boxes cutting through tiles at their edges
            b = (minx + sx * w, miny + sy * h, minx + sx * w + 0.7 * w, miny + sy * h + 0.6 * h)
            region = make_region(
                bbox=(((b[0] + 180) % 360) - 180, b[1], ((b[2] + 180) % 360) - 180, b[3])
            )
            fast = dataclasses.replace(region, centre_margin=margin)
            plain = dataclasses.replace(region, centre_margin=None)
            got_fast = {h.id for h in idx.backend.query(q, fast, 1000, 0, False)}
            got_plain = {h.id for h in idx.backend.query(q, plain, 1000, 0, False)}
            exact = {
                u.id
                for u in tiles
                if u.footprint.intersects(region.geometry)
                and not u.footprint.touches(region.geometry)
            }
            assert exact <= got_fast and exact <= got_plain
            assert idx.backend.count(fast) == idx.backend.count(plain) == len(got_plain)
            checked += bool(exact)
        assert checked > 20
        # searches through the index use the margin; reopening keeps it
    with TileIndex(tmp_path / "i") as idx:
        assert idx.centre_margin() == margin


def test_index_without_a_recorded_margin_keeps_range_filters(tmp_path, tiles_and_vectors):
    """An index filled before margins existed never gets one from later, smaller tiles."""
    tiles, vecs = tiles_and_vectors
    with TileIndex(tmp_path / "i") as idx:
        idx.bind_model(SIG)
        idx.backend.upsert(  # as an older version stored points: no margin recorded
            [t.id for t in tiles[:5]],
            (vecs[:5] / np.linalg.norm(vecs[:5], axis=1, keepdims=True)).tolist(),
            [tile_to_payload(t, raw_norm=1.0) for t in tiles[:5]],
        )
        idx.add(tiles[5:], vecs[5:])
        assert idx.centre_margin() is None
        region = make_region(bbox=tiles[0].footprint.bounds)
        assert tiles[0].id in {h.id for h in idx.query(vecs[0], region, limit=1000)}


def test_payloads_are_stored_packed_and_read_back_whole(tmp_path, aerial_catalog, tiny_ckpt):
    """Indexed fields as payload keys, the rest in one string (3x faster to store); every
    reader sees the payload tile_to_payload made, and indexes written before packing too."""
    import json

    from rsia_geo.index.payload import (
        STORED_FIELDS,
        pack_payload,
        tile_to_payload,
        unpack_payload,
    )
    from rsia_geo.tiles import iter_tiles

    tile = next(iter(iter_tiles(aerial_catalog, TileSpec(size=256))))
    logical = json.loads(json.dumps(tile_to_payload(tile, raw_norm=2.5, hub=0.61)))
    stored = pack_payload(logical)
    assert set(stored) == {*STORED_FIELDS, "doc"} and stored["hub"] == 0.61
    no_hub = pack_payload(json.loads(json.dumps(tile_to_payload(tile, raw_norm=2.5))))
    assert set(no_hub) == {*STORED_FIELDS, "doc"} - {"hub"}  # a model without a bank
    assert isinstance(stored["footprint"], str) and "tile" not in stored
    assert unpack_payload(stored) == logical
    assert unpack_payload(logical) is logical  # an old, unpacked payload passes through
    with TileIndex(tmp_path / "idx") as idx:
        build_index(aerial_catalog, idx, tiny_ckpt, spec=TileSpec(size=256), progress=False)
        raw = idx.backend.retrieve([tile.id])[0].payload
        assert "doc" in raw and "tile" not in raw  # stored packed
        hit = idx.retrieve([tile.id])[0].payload
        assert hit["tile"]["id"] == tile.id and hit["footprint"]["type"] == "Polygon"
        part = idx.query(np.ones(64), limit=1, fields=["footprint", "href"])[0].payload
        assert part["href"].endswith("cogeo.tif") and part["footprint"]["type"] == "Polygon"
        # an index written before packing: its nested payloads are read as they are, whole
        # or field by field
        idx.backend.upsert([tile.id], [[1.0] + [0.0] * 63], [logical])
        assert idx.retrieve([tile.id])[0].payload == logical
        old = idx.query(np.eye(64)[0], limit=1, fields=["href", "footprint"])[0]
        assert old.id == tile.id and old.payload["href"] == logical["href"]


def test_the_extent_lists_platforms_only_when_it_knows_them_all():
    """Platform names grow with the tiles; a list that would be partial is None (unknown)."""
    from rsia_geo.index.tile_index import MAX_PLATFORMS, _merged_extent

    def tile(platform, x=0.0):
        return {"bbox_minx": x, "bbox_miny": 0.0, "bbox_maxx": x + 1, "bbox_maxy": 1.0,
                "timestamp": 1.0, "platform": platform}  # fmt: skip

    first = _merged_extent({}, [tile("naip"), tile("")])  # a tile without a platform adds none
    assert first["platforms"] == ["naip"]
    grown = _merged_extent(first, [tile("landsat-8", x=5.0)])
    assert grown["platforms"] == ["landsat-8", "naip"] and grown["bbox"] == [0.0, 0.0, 6.0, 1.0]
    # an extent recorded before the names were kept: growing it must not name too few
    legacy = {"bbox": [0.0, 0.0, 1.0, 1.0], "time": [1.0, 1.0]}
    assert _merged_extent(legacy, [tile("landsat-8")])["platforms"] is None
    many = _merged_extent({}, [tile(f"p{i}") for i in range(MAX_PLATFORMS + 1)])
    assert many["platforms"] is None and _merged_extent(many, [tile("naip")])["platforms"] is None
