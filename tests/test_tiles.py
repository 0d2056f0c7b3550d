from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.windows import Window
from shapely.geometry import Point, box

from rsia_geo.catalog import build_catalog, item_from_band_files, item_from_raster
from rsia_geo.errors import (
    AssetSelectionError,
    InvalidBBoxError,
    InvalidTileSpecError,
    RasterError,
    TileReadError,
)
from rsia_geo.tiles import Tile, TileSet, TileSpec, iter_tiles, read_tile, tile_item

UTC = dt.UTC
D0 = dt.datetime(2020, 1, 1, tzinfo=UTC)
LANDSAT = "LC08_L2SP_005009_20150710_20200908_02_T2"


def _write(
    path: Path, arr: np.ndarray, *, crs="EPSG:32616", transform=None, nodata=None, **kw
) -> Path:
    transform = transform or Affine(1, 0, 500000, 0, -1, 4000000)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        **kw,
    ) as dst:
        dst.write(arr)
    return path


def _item(path: Path):
    return item_from_raster(path, default_datetime=D0)


# ---------------------------------------------------------------- grid, footprints, ids


@pytest.mark.parametrize(
    ("rel", "size", "expected"),
    [
        ("aerial/cogeo.tif", 256, 16),  # 1024 / 256 = 4 x 4
        ("aerial/cogeo.tif", 300, 15),  # 4 x 4 grid; the corner tile is 17% valid -> skipped
        ("naip/m_4112001_sw_10_060_20220716.tif", 128, 6),  # 262 x 340 px: 2 x 3 kept
    ],
)
def test_tile_counts(samples, rel, size, expected):
    ts = tile_item(_item(samples / rel), TileSpec(size=size, min_valid=0.3))
    with rasterio.open(samples / rel) as src:
        w, h = src.width, src.height
    n_cols = 1 + math.ceil((w - size) / size)
    n_rows = 1 + math.ceil((h - size) / size)
    # every grid position is either a tile or a recorded skip
    level1 = [t for t in ts.tiles if t.level == 1]
    skipped = [s for s in ts.skipped if s.level == 1]
    assert len(level1) + len(skipped) == n_cols * n_rows
    # edge tiles with >= 30% valid pixels are kept
    expected_kept = sum(
        1
        for r in range(n_rows)
        for c in range(n_cols)
        if (min(size, w - c * size) * min(size, h - r * size)) / size**2 >= 0.3
    )
    assert len(level1) == expected_kept == expected


def test_footprints_match_independent_reprojection(samples):
    path = samples / "naip/m_3211605_ne_11_060_20200415.tif"
    ts = tile_item(_item(path), TileSpec(size=100, min_valid=0.1))
    with rasterio.open(path) as src:
        tr = Transformer.from_crs(src.crs.to_wkt(), "EPSG:4326", always_xy=True)
        t = src.transform
        W, H = src.width, src.height
    assert len(ts.tiles) == 6  # 266 x 204 px: 3 columns x 2 rows (the third row is 4% valid)
    for tile in ts.tiles:
        col, row, w, h = tile.window
        cw, ch = min(w, W - col), min(h, H - row)
        xs = [t.c + t.a * c for c in (col, col + cw)]
        ys = [t.f + t.e * r for r in (row, row + ch)]
        lon, lat = tr.transform([xs[0], xs[1], xs[1], xs[0]], [ys[0], ys[0], ys[1], ys[1]])
        minx, miny, maxx, maxy = tile.footprint.bounds
        assert minx == pytest.approx(min(lon), abs=1e-9) and maxx == pytest.approx(
            max(lon), abs=1e-9
        )
        assert miny == pytest.approx(min(lat), abs=1e-9) and maxy == pytest.approx(
            max(lat), abs=1e-9
        )
        clon, clat = tr.transform(t.c + t.a * (col + cw / 2), t.f + t.e * (row + ch / 2))
        assert tile.centre == pytest.approx((clon, clat), abs=1e-9)
        assert tile.footprint.contains(Point(tile.centre))
        assert tile.bounds == pytest.approx((xs[0], ys[1], xs[1], ys[0]))
        assert tile.gsd == pytest.approx(0.6, abs=0.01)


def test_footprint_in_web_mercator_and_gsd(samples):
    path = samples / "aerial/cogeo.tif"
    ts = tile_item(_item(path), TileSpec(size=512))
    tr = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    with rasterio.open(path) as src:
        b = src.bounds
    lon0, lat0 = tr.transform(b.left, b.top)
    tile = next(t for t in ts.tiles if t.window[:2] == (0, 0))
    assert tile.footprint.bounds[0] == pytest.approx(lon0, abs=1e-9)
    assert tile.footprint.bounds[3] == pytest.approx(lat0, abs=1e-9)
    # web mercator pixels of 0.597 m are ~0.597 * cos(lat) on the ground
    assert tile.gsd == pytest.approx(
        0.5971640348 * math.cos(math.radians(tile.centre[1])), rel=1e-3
    )


def test_ids_are_stable_across_runs_and_unique(tmp_path, samples):
    spec = TileSpec(size=128, scales=(1, 2))
    cat1 = build_catalog([samples / "aerial"], tmp_path / "a", default_datetime=D0)
    cat2 = build_catalog([samples / "aerial"], tmp_path / "b", default_datetime=D0)
    ids1 = [t.id for t in iter_tiles(cat1, spec)]
    ids2 = [t.id for t in iter_tiles(cat2, spec)]
    assert ids1 == ids2
    assert len(set(ids1)) == len(ids1) == 64 + 16
    # a different level, window or band set gives a different id
    ids_nir = {t.id for t in iter_tiles(cat1, spec, bands=["red"])}
    assert not ids_nir & set(ids1)


def test_tile_round_trips_through_dict(samples):
    ts = tile_item(_item(samples / "aerial/cogeo.tif"), TileSpec(size=512))
    t = ts.tiles[0]
    again = Tile.from_dict(t.to_dict())
    assert again == t
    assert again.footprint.equals(t.footprint)
    # without the footprint (index payloads store theirs apart): the rest, to the key
    bare = t.to_dict(footprint=False)
    assert bare == {k: v for k, v in t.to_dict().items() if k != "footprint"}
    assert Tile.from_dict({**bare, "footprint": t.footprint}) == t
    json.dumps(bare)  # plain JSON: sources, grid and scaling as dicts
    assert isinstance(bare["grid"], dict) and isinstance(bare["sources"][0], dict)
    gdf = ts.to_geodataframe()
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == len(ts)


# ---------------------------------------------------------------- pixels


def test_pixels_match_direct_rasterio_read(samples):
    path = samples / "aerial/cogeo.tif"
    ts = tile_item(_item(path), TileSpec(size=256))
    tile = next(t for t in ts.tiles if t.window == (256, 512, 256, 256))
    arr = read_tile(tile)
    with rasterio.open(path) as src:
        direct = src.read([1, 2, 3], window=Window(256, 512, 256, 256))
    np.testing.assert_array_equal(arr, (direct / 255.0).astype(np.float32))


def test_coarse_level_matches_decimated_read(samples):
    path = samples / "aerial/cogeo.tif"
    ts = tile_item(_item(path), TileSpec(size=256, scales=(1, 4)))
    coarse = [t for t in ts.tiles if t.level == 4]
    assert len(coarse) == 1 and coarse[0].window == (0, 0, 1024, 1024)
    assert coarse[0].out_size == 256
    assert coarse[0].gsd == pytest.approx(4 * ts.tiles[0].gsd)
    arr = read_tile(coarse[0])
    with rasterio.open(path) as src:
        direct = src.read(out_shape=(3, 256, 256), resampling=Resampling.average)
    np.testing.assert_allclose(arr, direct / 255.0, atol=1e-6)


def test_band_files_read_and_scaled_as_reflectance(samples):
    scene = samples / "landsat" / LANDSAT
    files = {
        k: scene / f"{LANDSAT}_SR_{b}.TIF"
        for k, b in [("blue", "B2"), ("green", "B3"), ("red", "B4"), ("nir08", "B5")]
    }
    item = item_from_band_files(files, item_id=LANDSAT)
    ts = tile_item(item, TileSpec(size=128), bands=["red", "green", "blue", "nir08"])
    tile = next(t for t in ts.tiles if t.valid_fraction == 1.0)
    assert tile.scaling.method == "reflectance"
    assert [s.asset for s in tile.sources] == ["red", "green", "blue", "nir08"]
    arr, valid = read_tile(tile, with_mask=True)
    col, row, w, h = tile.window
    for i, b in enumerate(["B4", "B3", "B2", "B5"]):
        with rasterio.open(scene / f"{LANDSAT}_SR_{b}.TIF") as src:
            dn = src.read(1, window=Window(col, row, w, h)).astype(np.float64)
        refl = dn * 2.75e-05 - 0.2
        expected = np.clip(refl / 0.3, 0, 1)
        np.testing.assert_allclose(arr[i][valid], expected[valid], atol=1e-5)
    # nodata pixels (0) are flagged and zeroed
    assert valid.all()


def test_bands_on_different_grids_are_resampled_onto_the_finest(tmp_path):
    rng = np.random.default_rng(0)
    fine = rng.integers(1, 200, size=(1, 128, 128), dtype=np.uint16)
    coarse = rng.integers(1, 200, size=(1, 64, 64), dtype=np.uint16)
    a = _write(tmp_path / "scene_B04.tif", fine, transform=Affine(10, 0, 500000, 0, -10, 4000000))
    b = _write(tmp_path / "scene_B08.tif", coarse, transform=Affine(20, 0, 500000, 0, -20, 4000000))
    item = item_from_band_files({"red": a, "nir": b}, item_id="scene", default_datetime=D0)
    ts = tile_item(item, TileSpec(size=64, scaling="dtype"), bands=["red", "nir"])
    assert ts.tiles[0].grid.resolution == 10.0  # reference grid is the finest asset
    assert len(ts.tiles) == 4
    arr = read_tile(ts.tiles[0])
    np.testing.assert_allclose(arr[0] * 65535, fine[0, :64, :64], atol=1e-2)
    # the 20 m band warped onto the 10 m grid: each coarse pixel covers 2x2 fine pixels
    assert arr.shape == (2, 64, 64)
    centre = arr[1, 17, 17] * 65535  # inside coarse pixel (8, 8) away from its edges
    assert abs(centre - coarse[0, 8, 8]) <= max(
        abs(int(coarse[0, 8, 9]) - int(coarse[0, 8, 8])),
        abs(int(coarse[0, 9, 8]) - int(coarse[0, 8, 8])),
        1,
    )


def test_percentile_scaling_is_per_item_and_recorded(tmp_path):
    arr = np.linspace(100, 1100, 128 * 128).reshape(1, 128, 128).astype(np.uint16)
    arr = np.repeat(arr, 3, axis=0)
    path = _write(tmp_path / "u16_20200101.tif", arr, photometric="RGB")
    ts = tile_item(_item(path), TileSpec(size=64))
    s = ts.tiles[0].scaling
    assert s.method == "percentile"
    assert s.low[0] == pytest.approx(np.percentile(arr[0], 2), rel=0.02)
    assert s.high[0] == pytest.approx(np.percentile(arr[0], 98), rel=0.02)
    assert all(t.scaling == s for t in ts.tiles)  # one scaling for the whole item


def test_nodata_tiles_are_skipped_with_reason(tmp_path):
    arr = np.full((3, 128, 128), 50, dtype=np.uint8)
    arr[:, :64, :] = 0  # top half nodata
    path = _write(tmp_path / "nd_20200101.tif", arr, nodata=0)
    ts = tile_item(_item(path), TileSpec(size=64))
    assert {t.window[:2] for t in ts.tiles} == {(0, 64), (64, 64)}
    assert sorted((s.window[:2], s.kind) for s in ts.skipped) == [
        ((0, 0), "nodata"),
        ((64, 0), "nodata"),
    ]
    assert "valid fraction 0.00" in ts.skipped[0].reason
    t = ts.tiles[0]
    assert t.valid_fraction == 1.0


def test_edge_tile_padding_is_masked(tmp_path):
    arr = np.full((3, 100, 100), 80, dtype=np.uint8)
    path = _write(tmp_path / "edge_20200101.tif", arr)
    ts = tile_item(_item(path), TileSpec(size=64, min_valid=0.3))
    edge = next(t for t in ts.tiles if t.window[:2] == (64, 64))
    assert edge.valid_fraction == pytest.approx((36 * 36) / 64**2, abs=0.01)
    data, valid = read_tile(edge, with_mask=True)
    assert valid[:36, :36].all() and not valid[36:, :].any() and not valid[:, 36:].any()
    assert (data[:, :36, :36] == pytest.approx(80 / 255)) and (data[:, 40:, :] == 0).all()
    # its footprint covers only the part with data
    assert edge.footprint.area == pytest.approx(
        next(t for t in ts.tiles if t.window[:2] == (0, 0)).footprint.area * (36 * 36) / 64**2,
        rel=0.01,
    )


def test_units_in_metres(samples):
    path = samples / "naip/m_3211605_ne_11_060_20200415.tif"  # ~0.6 m pixels
    ts = tile_item(_item(path), TileSpec(size=60, overlap=6, units="m"))
    t = ts.tiles[0]
    assert t.window[2] == 100  # 60 m / 0.6 m
    second = sorted({x.window[0] for x in ts.tiles})[1]
    assert second == 90  # stride = (60 - 6) m = 90 px


def test_bbox_restricts_tiles(samples):
    item = _item(samples / "aerial/cogeo.tif")
    all_tiles = tile_item(item, TileSpec(size=256)).tiles
    minx, miny, maxx, maxy = item.bbox
    half = (minx, miny, (minx + maxx) / 2 - 1e-6, maxy)
    left = tile_item(item, TileSpec(size=256), bbox=half).tiles
    assert 0 < len(left) < len(all_tiles)
    assert all(t.footprint.intersects(box(*half)) for t in left)
    with pytest.raises(InvalidBBoxError, match="does not intersect"):
        tile_item(item, TileSpec(size=256), bbox=(0.0, 0.0, 1.0, 1.0))
    with pytest.raises(InvalidBBoxError, match="miny"):
        tile_item(item, bbox=(0.0, 5.0, 1.0, 1.0))


def test_antimeridian_footprint_is_split(tmp_path):
    arr = np.full((3, 100, 150), 90, dtype=np.uint8)
    path = _write(
        tmp_path / "fiji_20200101.tif",
        arr,
        crs="EPSG:32660",
        transform=Affine(1000, 0, 750000, 0, -1000, 1200000),
    )
    item = _item(path)
    assert item.geometry["type"] == "MultiPolygon"
    ts = tile_item(item, TileSpec(size=50))
    crossing = [t for t in ts.tiles if t.footprint.geom_type == "MultiPolygon"]
    assert crossing, "a tile straddling 180 degrees must be split"
    for t in ts.tiles:
        minx, _, maxx, _ = t.footprint.bounds
        assert minx >= -180 and maxx <= 180
        assert -180 <= t.centre[0] <= 180
        if t.footprint.geom_type == "Polygon":
            assert maxx - minx < 5  # no polygon wrapping around the globe


# ---------------------------------------------------------------- bad input


def test_tile_larger_than_raster(samples):
    item = _item(samples / "naip/m_4208701_ne_16_060_20200902.tif")  # 175 x 143
    with pytest.raises(InvalidTileSpecError, match=r"256 px is larger.*175x143.*size <= 143"):
        tile_item(item, TileSpec(size=256))
    ts = tile_item(item, TileSpec(size=128, scales=(1, 2)))
    assert any(s.kind == "level" and s.level == 2 for s in ts.skipped)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, "size=0"),
        ({"size": 64, "overlap": 64}, "overlap=64"),
        ({"units": "ft"}, "units='ft'"),
        ({"scales": (0,)}, "scales"),
        ({"scales": ()}, "scales"),
        ({"min_valid": 0}, "min_valid"),
        ({"scaling": "zscore"}, "scaling='zscore'"),
        ({"out_size": 3}, "out_size=3"),
        ({"percentiles": (50, 10)}, "percentiles"),
    ],
)
def test_bad_tile_spec(kwargs, match):
    with pytest.raises(InvalidTileSpecError, match=match):
        TileSpec(**kwargs)


def test_unsupported_dtype(tmp_path):
    arr = (np.ones((3, 64, 64)) * (1 + 1j)).astype(np.complex64)
    path = _write(tmp_path / "cplx_20200101.tif", arr)
    with pytest.raises(RasterError, match=r"unsupported data type.*complex64"):
        tile_item(_item(path), TileSpec(size=32), bands=["b1", "b2", "b3"])


def test_too_few_bands_and_missing_band(tmp_path):
    arr = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64).astype(np.uint8)
    path = _write(tmp_path / "gray_20200101.tif", arr)
    with pytest.raises(AssetSelectionError, match=r"no band 'red'.*image\[.*b1") as err:
        tile_item(_item(path), TileSpec(size=32))
    assert "bands=['b1'] * 3 (CLI: --bands b1 b1 b1)" in str(err.value)  # the grayscale fix
    ts = tile_item(_item(path), TileSpec(size=32), bands=["b1"])
    assert len(ts) == 4
    gray = tile_item(_item(path), TileSpec(size=32), bands=["b1"] * 3)  # as the message says
    px = read_tile(gray.tiles[0])
    assert px.shape[0] == 3 and np.array_equal(px[0], px[1]) and np.array_equal(px[0], px[2])
    rgb = _write(tmp_path / "two_20200101.tif", np.ones((2, 64, 64), dtype=np.uint8))
    with pytest.raises(AssetSelectionError, match="no band 'red'") as err:
        tile_item(_item(rgb), TileSpec(size=32))
    assert "grayscale" not in str(err.value)  # two bands: no single band to repeat


def test_reflectance_scaling_without_scale_is_refused(tmp_path):
    arr = np.ones((3, 64, 64), dtype=np.uint16)
    path = _write(tmp_path / "u16_20200101.tif", arr, photometric="RGB")
    with pytest.raises(InvalidTileSpecError, match="percentile"):
        tile_item(_item(path), TileSpec(size=32, scaling="reflectance"))


def test_missing_and_corrupt_assets_are_skipped_while_walking(tmp_path, samples):
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(samples / "aerial/cogeo.tif", src / "cogeo.tif")
    shutil.copy(samples / "naip/m_4112001_sw_10_060_20220716.tif", src / "naip_20220716.tif")
    cat = build_catalog([src], tmp_path / "cat", default_datetime=D0)
    # corrupt one asset after cataloguing, delete nothing else
    (src / "naip_20220716.tif").write_bytes(b"II*\x00" + b"\x00" * 100)
    skipped = []
    tiles = list(iter_tiles(cat, TileSpec(size=256), on_skip=skipped.append))
    assert {t.item_id for t in tiles} == {"cogeo"} and len(tiles) == 16
    assert len(skipped) == 1 and skipped[0].item_id == "naip_20220716"
    assert skipped[0].kind == "item" and "cannot open" in skipped[0].reason
    # a tile whose file disappears after tiling: clear read error
    (src / "cogeo.tif").unlink()
    with pytest.raises(TileReadError, match=r"cogeo\.tif"):
        read_tile(tiles[0])


def test_iter_tiles_over_a_catalog_with_bbox(sample_catalog):
    spec = TileSpec(size=128)
    everything = TileSet()
    everything.tiles = list(iter_tiles(sample_catalog, spec, on_skip=everything.skipped.append))
    # all 10 items but one NAIP smaller than 128 px
    assert len({t.item_id for t in everything.tiles}) == 9
    assert any(s.kind == "item" and "larger" in s.reason for s in everything.skipped)
    naip = next(t for t in everything.tiles if t.item_id == "m_4208701_ne_16_060_20200902")
    lon, lat = naip.centre
    near = list(
        iter_tiles(sample_catalog, spec, bbox=(lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01))
    )
    assert {t.item_id for t in near} == {"m_4208701_ne_16_060_20200902"}


def test_torch_dataset_batches_tiles(samples):
    torch = pytest.importorskip("torch")
    from rsia_geo.data import TileDataset, collate_tiles

    ts = tile_item(_item(samples / "aerial/cogeo.tif"), TileSpec(size=256, out_size=224))
    ds = TileDataset(ts.tiles)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate_tiles)
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [5, 5, 5, 1]
    assert batches[0]["image"].shape[1:] == (3, 224, 224)
    assert batches[0]["image"].dtype == torch.float32
    assert batches[0]["tile_id"][0] == ts.tiles[0].id
    np.testing.assert_allclose(batches[0]["image"][0].numpy(), read_tile(ts.tiles[0]))


def test_kept_open_datasets_read_the_same_pixels_and_are_closed(samples):
    """Bulk reads through per-thread open datasets equal one-off reads; handles close after."""
    from concurrent.futures import ThreadPoolExecutor

    from rsia_geo import tiles as tiles_mod

    ts = tile_item(_item(samples / "aerial/cogeo.tif"), TileSpec(size=256, scales=(1, 2))).tiles
    expected = [read_tile(t) for t in ts]
    with tiles_mod.keep_datasets_open(), ThreadPoolExecutor(2) as pool:
        got = list(pool.map(read_tile, ts))
        handles = list(tiles_mod._OPEN.all)
        assert 1 <= len(handles) <= 2  # one handle per reader thread, not one per tile
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(h.closed for h in handles) and not tiles_mod._OPEN.all
    assert tiles_mod._OPEN.get(str(samples / "aerial/cogeo.tif")) is None  # inactive again


def test_gdal_env_keeps_a_real_block_cache():
    """GDAL_CACHEMAX reaches GDAL in bytes: at least 64 MB inside gdal_env."""
    from rasterio.env import get_gdal_config

    from rsia_geo.env import gdal_env

    with gdal_env():
        assert int(get_gdal_config("GDAL_CACHEMAX")) >= 64 * 1024 * 1024


def test_grid_windows_enumerate_without_reading():
    from rsia_geo.tiles import grid_windows

    wins = list(grid_windows(1000, 600, 256, 128))
    cols = sorted({w[0] for w in wins})
    rows = sorted({w[1] for w in wins})
    assert cols == [0, 128, 256, 384, 512, 640, 768] and rows == [0, 128, 256, 384]
    assert all(w[2] == w[3] == 256 for w in wins) and len(wins) == len(cols) * len(rows)
    # every pixel is covered; only the last row/column may run past the raster
    assert max(c for c in cols) + 256 >= 1000 and max(rows) + 256 >= 600
    assert list(grid_windows(200, 200, 256, 256)) == [(0, 0, 256, 256)]
