"""Defects found by an outside probe: each test failed before its fix (issue 12)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from shapely.geometry import Polygon, box, mapping

from rsia_geo.errors import InvalidArgumentError, InvalidRegionError
from rsia_geo.query import make_region, parse_geometry, parse_time_range

UTC = dt.UTC


def _utm60_raster_past_180(path: Path, *, metres_past: float = 300.0) -> Path:
    """A UTM zone 60N raster whose west edge lies ``metres_past`` east of 180 degrees."""
    lat = 10.0
    x180, y = Transformer.from_crs("EPSG:4326", "EPSG:32660", always_xy=True).transform(180.0, lat)
    arr = np.random.default_rng(0).integers(1, 255, (3, 300, 300)).astype(np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=300,
        height=300,
        count=3,
        dtype="uint8",
        crs="EPSG:32660",
        photometric="RGB",
        transform=Affine(10, 0, x180 + metres_past, 0, -10, y),
    ) as dst:
        dst.write(arr)
    return path


def test_footprint_just_past_180_is_small_valid_and_east_of_the_antimeridian(tmp_path):
    from rsia_geo.catalog import item_from_raster
    from rsia_geo.tiles import TileSpec, tile_item

    path = _utm60_raster_past_180(tmp_path / "past180_20200101.tif")
    item = item_from_raster(path)
    from shapely.geometry import shape

    g = shape(item.geometry)
    assert g.is_valid
    minx, _, maxx, _ = g.bounds
    # 3 km x 3 km at 10 N: about 0.027 x 0.027 degrees, all just east of 180 (lon ~ -180)
    assert minx >= -180.0 and maxx < -179.9, g.bounds
    assert g.area < 0.002, g.area
    for t in tile_item(item, TileSpec(size=100)).tiles:
        assert t.footprint.is_valid and t.footprint.area < 0.0005
        assert t.footprint.bounds[2] < -179.9 and -180.0 <= t.centre[0] < -179.9


def test_footprint_matches_pointwise_reprojection_across_180(tmp_path):
    from rsia_geo._geo import window_footprint

    lat = -17.0
    x180, y = Transformer.from_crs("EPSG:4326", "EPSG:32760", always_xy=True).transform(180.0, lat)
    t = Affine(100, 0, x180 - 5000, 0, -100, y)
    fp = window_footprint("EPSG:32760", t, 0, 0, 100, 100)  # 10 km straddling 180
    assert fp.geom_type == "MultiPolygon" and fp.is_valid
    to_ll = Transformer.from_crs("EPSG:32760", "EPSG:4326", always_xy=True)
    east = next(p for p in fp.geoms if p.bounds[0] > 0)
    west = next(p for p in fp.geoms if p.bounds[0] < 0)
    assert east.bounds[2] == pytest.approx(180.0) and west.bounds[0] == pytest.approx(-180.0)
    # the outer corners, reprojected one by one, bound the two parts
    west_lons = [to_ll.transform(x180 - 5000, yy)[0] % 360 for yy in (y, y - 10000)]
    east_lons = [to_ll.transform(x180 + 5000, yy)[0] % 360 - 360 for yy in (y, y - 10000)]
    assert east.bounds[0] == pytest.approx(min(west_lons), abs=1e-6)
    assert west.bounds[2] == pytest.approx(max(east_lons), abs=1e-6)
    total = east.area + west.area
    assert 0.005 < total < 0.02  # ~ (10 km)^2 in square degrees, not a globe-wide band


def test_a_search_over_europe_does_not_return_a_tile_near_180(tmp_path, tiny_checkpoint):
    pytest.importorskip("torch")
    from rsia_geo import TileSpec, build_catalog
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import build_index, search

    src = tmp_path / "src"
    src.mkdir()
    _utm60_raster_past_180(src / "past180_20200101.tif")
    ckpt = tiny_checkpoint
    cat = build_catalog([src], tmp_path / "cat", default_datetime=dt.datetime(2020, 1, 1))
    build_index(cat, tmp_path / "idx", ckpt, spec=TileSpec(size=100), progress=False)
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    with TileIndex(tmp_path / "idx") as idx:
        margin = idx.centre_margin()
        assert margin is not None and margin[0] < 0.1  # not inflated to 360 degrees
        everywhere = search(wave, idx, ckpt, sample_rate=16000, k=50)
        assert len(everywhere) == 9
        europe = search(wave, idx, ckpt, sample_rate=16000, bbox=(-10, 35, 30, 60), k=50)
        assert len(europe) == 0
        fiji = search(wave, idx, ckpt, sample_rate=16000, bbox=(179.5, 5, -179.5, 15), k=50)
        assert len(fiji) == 9


def test_bowtie_region_keeps_both_lobes():
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    assert not bowtie.is_valid
    g = parse_geometry(mapping(bowtie))
    assert g.is_valid
    # both triangles, 1 square degree each
    assert g.area == pytest.approx(2.0)
    assert g.intersects(box(0.1, 0.9, 0.2, 1.1)) and g.intersects(box(1.8, 0.9, 1.9, 1.1))


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]},  # collinear
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0], [0, 0]]]},
        {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
        {"type": "FeatureCollection", "features": []},
        {"type": "Feature", "geometry": None, "properties": {}},
        {"type": "Polygon", "coordinates": "nonsense"},
        Polygon(),
    ],
)
def test_degenerate_regions_get_one_clear_error(geometry):
    with pytest.raises(InvalidRegionError, match=r"region|geometry|FeatureCollection|Feature") as e:
        make_region(geometry=geometry)
    assert "Polygon" in str(e.value) or "area" in str(e.value)


def test_feature_collection_is_a_region():
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": mapping(box(0, 0, 1, 1))},
            {"type": "Feature", "properties": {}, "geometry": mapping(box(5, 5, 6, 6))},
        ],
    }
    r = make_region(geometry=fc)
    assert r.geometry.area == pytest.approx(2.0)
    assert len(r.boxes) == 2


def _day(y: int, m: int, d: int) -> float:
    return dt.datetime(y, m, d, tzinfo=UTC).timestamp()


def test_date_only_interval_end_covers_the_whole_day():
    t0, t1 = parse_time_range("2020-06-01/2020-06-30")
    assert t0 == _day(2020, 6, 1)
    assert _day(2020, 6, 30) + 23 * 3600 < t1 < _day(2020, 7, 1)
    t0, t1 = parse_time_range(dt.date(2020, 6, 30))
    assert t0 == _day(2020, 6, 30) and _day(2020, 6, 30) + 86399 < t1 < _day(2020, 7, 1)
    t0, t1 = parse_time_range((dt.date(2020, 6, 1), dt.date(2020, 6, 2)))
    assert t1 > _day(2020, 6, 2) + 86399
    # an end with a time is taken as given
    assert parse_time_range("2020-06-01/2020-06-30T00:00:00Z")[1] == _day(2020, 6, 30)
    with pytest.raises(InvalidArgumentError, match="start is after the end"):
        parse_time_range("2020-07-01/2020-06-01")
    with pytest.raises(InvalidArgumentError, match="ISO"):
        parse_time_range("June 2020")


def test_a_year_or_a_month_covers_the_whole_period():
    assert parse_time_range("2020") == (_day(2020, 1, 1), _day(2021, 1, 1) - 1e-3)
    assert parse_time_range("2020-02") == (_day(2020, 2, 1), _day(2020, 3, 1) - 1e-3)  # leap
    assert parse_time_range("2020-12")[1] == _day(2021, 1, 1) - 1e-3
    assert parse_time_range("2019/2021") == (_day(2019, 1, 1), _day(2022, 1, 1) - 1e-3)
    assert parse_time_range("2020-05/..") == (_day(2020, 5, 1), None)
    with pytest.raises(InvalidArgumentError, match="start is after the end"):
        parse_time_range("2021/2020")
    for bad in ("2020-13", "2020-00", "20201", "202"):
        with pytest.raises(InvalidArgumentError, match=r"whole year or month: 2020, 2020-05"):
            parse_time_range(bad)


def test_stac_item_with_a_date_range_is_found_by_overlap(tmp_path, tiny_checkpoint):
    pytest.importorskip("torch")
    import pystac

    from rsia_geo import TileSpec
    from rsia_geo.catalog import item_from_raster
    from rsia_geo.pipeline import build_index, search

    path = _utm60_raster_past_180(tmp_path / "range.tif")
    item = item_from_raster(path, datetime=dt.datetime(2020, 1, 1, tzinfo=UTC))
    item.datetime = None
    item.properties["datetime"] = None
    item.properties["start_datetime"] = "2020-01-01T00:00:00Z"
    item.properties["end_datetime"] = "2020-12-31T23:59:59Z"
    cat = pystac.Catalog("c", "range item")
    cat.add_item(item)
    cat.normalize_hrefs(str(tmp_path / "cat"))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    ckpt = tiny_checkpoint
    build_index(
        tmp_path / "cat" / "catalog.json",
        tmp_path / "idx",
        ckpt,
        spec=TileSpec(size=100),
        progress=False,
    )
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1

    def hits(when):
        return len(search(wave, tmp_path / "idx", ckpt, sample_rate=16000, datetime=when, k=50))

    assert hits("2020-06-01/2020-06-30") == 9
    assert hits("2020-12-31") == 9
    assert hits("2019-06-01/2019-12-31") == 0
    assert hits("2021-01-01/..") == 0
    assert hits("../2020-01-01") == 9


def test_reindexing_with_another_tiling_or_bands_is_refused(
    tmp_path, samples, tiny_checkpoint, aerial_catalog
):
    pytest.importorskip("torch")
    from rsia_geo import TileSpec
    from rsia_geo.errors import ModelMismatchError, TilingMismatchError
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import build_index

    ckpt = tiny_checkpoint
    cat = aerial_catalog
    build_index(cat, tmp_path / "idx", ckpt, spec=TileSpec(size=256), progress=False)
    with pytest.raises(TilingMismatchError, match="tile_spec"):
        build_index(cat, tmp_path / "idx", ckpt, spec=TileSpec(size=128), progress=False)
    with pytest.raises(TilingMismatchError, match="bands"):
        build_index(
            cat,
            tmp_path / "idx",
            ckpt,
            spec=TileSpec(size=256),
            bands=["green", "red", "blue"],
            progress=False,
        )
    assert issubclass(TilingMismatchError, ModelMismatchError)  # same exit code / status
    # the same settings resume: nothing new, nothing duplicated
    again = build_index(cat, tmp_path / "idx", ckpt, spec=TileSpec(size=256), progress=False)
    assert again.indexed == 0 and again.already_present == 16
    with TileIndex(tmp_path / "idx") as idx:
        assert idx.count() == 16


@pytest.mark.parametrize("point", ["after_create", "in_set_meta", "after_first_points"])
def test_a_kill_at_any_point_of_a_new_index_leaves_a_folder_that_resumes(
    tmp_path, samples, point, tiny_checkpoint, aerial_catalog
):
    """kill -9 at several points of the first seconds of a new index; the rerun completes."""
    import signal
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("torch")
    from rsia_geo import TileSpec
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import build_index

    ckpt = tiny_checkpoint
    cat = aerial_catalog
    kill = "os.kill(os.getpid(), signal.SIGKILL)"
    patch = {
        "after_create": f"""
            orig = EdgeBackend.create
            def create(self, dim):
                orig(self, dim)
                {kill}
            EdgeBackend.create = create""",
        "in_set_meta": f"""
            def set_meta(self, meta):
                self._meta_path().with_suffix(".tmp").write_text("{{")
                {kill}
            EdgeBackend.set_meta = set_meta""",
        "after_first_points": f"""
            orig = EdgeBackend.upsert
            def upsert(self, *a):
                orig(self, *a)
                {kill}
            EdgeBackend.upsert = upsert""",
    }[point]
    script = (
        textwrap.dedent(
            """
        import os, signal
        from rsia_geo import TileSpec
        from rsia_geo.index.backends import EdgeBackend
        from rsia_geo.pipeline import build_index
        """
        )
        + textwrap.dedent(patch)
        + textwrap.dedent(
            f"""
        build_index({str(cat.get_self_href())!r}, {str(tmp_path / "idx")!r}, {str(ckpt)!r},
                    spec=TileSpec(size=128), batch_size=8, progress=False)
        """
        )
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / "idx").exists()
    report = build_index(
        cat.get_self_href(), tmp_path / "idx", ckpt, spec=TileSpec(size=128), progress=False
    )
    assert report.indexed + report.already_present == 64
    with TileIndex(tmp_path / "idx") as idx:
        assert idx.count() == 64


def test_a_kill_in_the_first_second_leaves_a_folder_that_resumes(
    tmp_path, samples, tiny_checkpoint, aerial_catalog
):
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("torch")
    from rsia_geo import TileSpec
    from rsia_geo.index import TileIndex
    from rsia_geo.pipeline import build_index

    ckpt = tiny_checkpoint
    cat = aerial_catalog
    for delay in (0.3, 0.8, 1.5):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rsia_geo",
                "index",
                str(cat.get_self_href()),
                "--location",
                str(tmp_path / "idx"),
                "--checkpoint",
                str(ckpt),
                "--size",
                "128",
                "--units",
                "px",
                "--scales",
                "1",
                "--no-progress",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    report = build_index(
        cat.get_self_href(), tmp_path / "idx", ckpt, spec=TileSpec(size=128), progress=False
    )
    assert report.indexed + report.already_present == 64
    with TileIndex(tmp_path / "idx") as idx:
        assert idx.count() == 64


def test_an_empty_result_keeps_every_column(tmp_path, samples, tiny_checkpoint, aerial_catalog):
    pytest.importorskip("torch")
    from rsia_geo import TileSpec
    from rsia_geo.pipeline import HIT_COLUMNS, build_index, search

    ckpt = tiny_checkpoint
    cat = aerial_catalog
    build_index(cat, tmp_path / "idx", ckpt, spec=TileSpec(size=256), progress=False)
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    full = search(wave, tmp_path / "idx", ckpt, sample_rate=16000, k=3)
    empty = search(wave, tmp_path / "idx", ckpt, sample_rate=16000, bbox=(0, 0, 1, 1))
    assert len(full) == 3 and len(empty) == 0
    assert list(empty.columns) == list(full.columns) == [*HIT_COLUMNS, "geometry"]
    assert empty.crs.to_epsg() == 4326


def test_models_loaded_by_path_are_cached_until_the_file_changes(tmp_path):
    torch = pytest.importorskip("torch")
    import os
    import time

    from rsia_geo.models import build_model, get_config, save_checkpoint
    from rsia_geo.pipeline import load_model

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(get_config("alac-tiny"), pretrained=False), tmp_path / "ck")
    first = load_model(ckpt)
    assert load_model(str(ckpt)) is first  # the simple API does not reload per call
    # a checkpoint written again is loaded again
    torch.manual_seed(1)
    save_checkpoint(build_model(get_config("alac-tiny"), pretrained=False), ckpt)
    os.utime(ckpt / "model.safetensors", (time.time() + 5, time.time() + 5))
    second = load_model(ckpt)
    assert second is not first
    w1 = next(iter(first.state_dict().values()))
    w2 = next(iter(second.state_dict().values()))
    assert not torch.equal(w1, w2)


def test_an_oversized_flac_is_refused_from_its_header():
    import io

    import soundfile as sf

    from rsia_geo.audio import load_audio
    from rsia_geo.errors import InvalidAudioError

    # 120 s of 8-channel 96 kHz silence-with-a-click compresses to ~100 KB of FLAC
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 96000, 8, format="FLAC") as f:
        block = np.zeros((96000, 8), np.float32)
        for _ in range(120):
            f.write(block)
    data = buf.getvalue()
    assert len(data) < 1_000_000
    import soundfile

    calls = []
    real_read = soundfile.SoundFile.read

    def spy(self, *a, **kw):
        calls.append(1)
        return real_read(self, *a, **kw)

    soundfile.SoundFile.read = spy
    try:
        with pytest.raises(InvalidAudioError, match=r"120\.0 s"):
            load_audio(data, max_seconds=30)
        many = io.BytesIO()
        sf.write(many, np.zeros((16000, 10), np.float32), 16000, format="WAV")
        with pytest.raises(InvalidAudioError, match="10 channels"):
            load_audio(many.getvalue())
    finally:
        soundfile.SoundFile.read = real_read
    assert calls == []  # refused before any sample was decoded


def test_serve_reports_a_missing_index_and_reads_its_key_from_a_file_or_env(tmp_path, capsys):
    from rsia_geo.cli import main
    from rsia_geo.service import ServiceSettings

    rc = main(["serve", "--location", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 10 and "no index at" in err and "Traceback" not in err
    assert not (tmp_path / "nope").exists()
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    rc = main(["serve", "--location", str(tmp_path), "--service-key-file", str(short)])
    assert rc == 2 and "16 or more" in capsys.readouterr().err
    import os

    os.environ["RSIA_SERVICE_KEY"] = "a-long-service-key-from-env"
    try:
        assert ServiceSettings.from_env().api_key == "a-long-service-key-from-env"
    finally:
        del os.environ["RSIA_SERVICE_KEY"]
