from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import shape

from rsia_geo.catalog import (
    build_catalog,
    item_from_band_files,
    item_from_raster,
    iter_items,
    open_stac,
    search_stac,
    select_bands,
)
from rsia_geo.errors import (
    AssetSelectionError,
    CatalogError,
    EmptyCatalogError,
    InvalidBBoxError,
    RasterError,
)

UTC = dt.UTC
LANDSAT = "LC08_L2SP_005009_20150710_20200908_02_T2"


def _corners_lonlat(path: Path) -> np.ndarray:
    """Independent reprojection of a raster's corners with pyproj."""
    with rasterio.open(path) as src:
        tr = Transformer.from_crs(src.crs.to_wkt(), "EPSG:4326", always_xy=True)
        xs = [src.bounds.left, src.bounds.right, src.bounds.right, src.bounds.left]
        ys = [src.bounds.top, src.bounds.top, src.bounds.bottom, src.bounds.bottom]
        lon, lat = tr.transform(xs, ys)
    return np.column_stack([lon, lat])


@pytest.mark.parametrize(
    "rel",
    [
        "naip/m_4208701_ne_16_060_20200902.tif",
        "aerial/cogeo.tif",
        "landsat/RGB.byte.tif",
    ],
)
def test_item_geometry_matches_independent_reprojection(samples, rel):
    path = samples / rel
    item = item_from_raster(path, default_datetime=dt.datetime(2020, 1, 1, tzinfo=UTC))
    geom = shape(item.geometry)
    corners = _corners_lonlat(path)
    # every corner of the raster lies on the footprint boundary (within 1e-7 deg)
    for lon, lat in corners:
        assert geom.exterior.distance(shape({"type": "Point", "coordinates": (lon, lat)})) < 1e-7
    minx, miny, maxx, maxy = item.bbox
    assert minx <= corners[:, 0].min() + 1e-9 and maxx >= corners[:, 0].max() - 1e-9
    assert miny <= corners[:, 1].min() + 1e-9 and maxy >= corners[:, 1].max() - 1e-9
    assert geom.is_valid


def test_item_carries_proj_eo_raster_fields(samples):
    path = samples / "naip/m_4208701_ne_16_060_20200902.tif"
    item = item_from_raster(path)
    assert item.datetime == dt.datetime(2020, 9, 2, tzinfo=UTC)  # from the file name
    asset = item.assets["image"]
    with rasterio.open(path) as src:
        assert asset.extra_fields["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert asset.extra_fields["proj:shape"] == [src.height, src.width]
        assert asset.extra_fields["proj:transform"] == list(src.transform)[:6]
    names = [b.get("common_name", None) for b in asset.extra_fields["eo:bands"]]
    assert names[:3] == ["red", "green", "blue"]
    assert [b["data_type"] for b in asset.extra_fields["raster:bands"]] == ["uint8"] * 4
    assert "visual" in asset.roles


def test_landsat_band_files_become_one_multi_asset_item(samples):
    scene = samples / "landsat" / LANDSAT
    files = {
        k: scene / f"{LANDSAT}_SR_{b}.TIF"
        for k, b in [("blue", "B2"), ("green", "B3"), ("red", "B4"), ("nir08", "B5")]
    }
    item = item_from_band_files(files, item_id=LANDSAT)
    assert set(item.assets) == {"blue", "green", "red", "nir08"}
    # datetime from the MTL metadata, not from the processing date in the name
    assert item.datetime.date() == dt.date(2015, 7, 10)
    red = item.assets["red"]
    assert red.extra_fields["eo:bands"][0] == {"name": "B4", "common_name": "red"}
    rb = red.extra_fields["raster:bands"][0]
    assert rb["scale"] == pytest.approx(2.75e-05) and rb["offset"] == pytest.approx(-0.2)
    assert rb["nodata"] == 0
    sel = select_bands(item, ["red", "green", "blue", "nir08"])
    assert sel.sources == (("red", 1), ("green", 1), ("blue", 1), ("nir08", 1))
    # "nir" falls back to the sensor's only NIR band (Landsat 8: nir08)
    assert select_bands(item, ["nir", "red"]).sources == (("nir08", 1), ("red", 1))


def test_build_catalog_groups_band_files_and_uses_relative_hrefs(sample_catalog):
    items = {i.id: i for i in sample_catalog.get_items()}
    assert LANDSAT in items and "cogeo" in items and "RGB.byte" in items
    assert len(items) == 10  # 6 NAIP + cogeo + RGB.byte + one Landsat scene + UCM mosaic
    root = Path(sample_catalog.get_self_href()).parent
    for item in items.values():
        data = json.loads(Path(item.get_self_href()).read_text())
        for asset in data["assets"].values():
            assert not asset["href"].startswith("/"), asset["href"]
    # untagged rasters got the default date; dated ones kept theirs
    assert items["cogeo"].datetime == dt.datetime(2020, 1, 1, tzinfo=UTC)
    assert items["m_4112001_sw_10_060_20220716"].datetime.year == 2022
    reopened = list(iter_items(root / "catalog.json"))
    assert {i.id for i in reopened} == set(items)


def test_copied_catalog_can_be_moved(tmp_path, samples):
    from rsia_geo.tiles import TileSpec, read_tile, tile_item

    src = samples / "aerial"
    build_catalog([src], tmp_path / "a", default_datetime=dt.datetime(2021, 5, 1), copy_assets=True)
    shutil.move(tmp_path / "a", tmp_path / "moved")
    (item,) = list(iter_items(tmp_path / "moved" / "catalog.json"))
    href = item.assets["image"].get_absolute_href()
    assert href.startswith(str(tmp_path / "moved"))
    tiles = tile_item(item, TileSpec(size=256)).tiles
    assert len(tiles) == 16
    assert read_tile(tiles[0]).shape == (3, 256, 256)


def test_build_catalog_without_date_names_the_fix(tmp_path, samples):
    with pytest.raises(CatalogError, match=r"cogeo\.tif.*default_datetime"):
        build_catalog([samples / "aerial"], tmp_path / "c")


def test_build_catalog_empty_and_missing_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyCatalogError, match="no raster files"):
        build_catalog([tmp_path / "empty"], tmp_path / "c")
    with pytest.raises(CatalogError, match="does not exist"):
        build_catalog([tmp_path / "nope"], tmp_path / "c")


def _write(path: Path, *, crs="EPSG:32616", dtype="uint8", count=3, data=None) -> Path:

    arr = data if data is not None else np.full((count, 64, 64), 7, dtype=dtype)
    from affine import Affine

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype,
        crs=crs,
        transform=Affine(1, 0, 500000, 0, -1, 4000000),
    ) as dst:
        dst.write(arr)
    return path


def test_raster_without_crs_and_corrupt_file(tmp_path):
    nocrs = _write(tmp_path / "nocrs_20200101.tif", crs=None)
    with pytest.raises(RasterError, match=r"no CRS.*a_srs"):
        item_from_raster(nocrs)
    corrupt = tmp_path / "corrupt_20200101.tif"
    corrupt.write_bytes(b"II*\x00not really a tiff" * 10)
    with pytest.raises(RasterError, match=r"corrupt_20200101\.tif"):
        item_from_raster(corrupt)
    with pytest.raises(RasterError, match="does not exist"):
        item_from_raster(tmp_path / "missing.tif")


def test_build_catalog_skips_bad_rasters_when_asked(tmp_path):
    (tmp_path / "src").mkdir()
    good = _write(tmp_path / "src" / "good_20200101.tif")
    (tmp_path / "src" / "bad_20200101.tif").write_bytes(b"garbage")
    cat = build_catalog([tmp_path / "src"], tmp_path / "c", on_error="skip")
    assert [i.id for i in cat.get_items()] == [good.stem]
    skipped = cat.extra_fields["rsia:skipped"]
    assert skipped[0]["item"] == "bad_20200101" and "cannot open" in skipped[0]["reason"]
    with pytest.raises(RasterError):
        build_catalog([tmp_path / "src"], tmp_path / "c2")


# ---------------------------------------------------------------- real published items


def test_parse_real_sentinel2_item_and_select_bands(stac_items_dir):
    item = open_stac(stac_items_dir / "example-remote-item-sentinel2-l2a.json")
    assert isinstance(item, pystac.Item)
    # default RGB: the 10 m visual asset (finest of visual, visual_20m, visual_60m)
    sel = select_bands(item)
    assert sel.sources == (("visual", 1), ("visual", 2), ("visual", 3))
    # explicit bands without the visual asset: finest resolution per band (10 m assets)
    sel = select_bands(item, ["nir", "red"])
    assert sel.sources == (("nir", 1), ("red", 1))
    sel = select_bands(item, ["B8A"])  # by band name: only 20/60 m exist -> 20 m
    assert sel.sources == (("nir08", 1),)
    sel = select_bands(item, ["red"], assets=["red_60m"])
    assert sel.sources == (("red_60m", 1),)
    with pytest.raises(AssetSelectionError, match=r"no band 'pan'.*visual\[.*red") as info:
        select_bands(item, ["pan"])
    assert "thumbnail" not in str(info.value)  # only raster data assets are listed


def test_parse_real_landsat_item(stac_items_dir):
    from rsia_geo.tiles import _grid_from_metadata

    item = open_stac(stac_items_dir / "example-remote-item-LC08_L2SP_047027_20201204_02_T1.json")
    sel = select_bands(item)
    assert sel.sources == (("red", 1), ("green", 1), ("blue", 1))
    assert item.assets["red"].extra_fields["raster:bands"][0]["scale"] == pytest.approx(2.75e-05)
    grid = _grid_from_metadata(item.assets["red"], item)
    assert grid is not None
    assert grid.crs == "EPSG:32610" and (grid.width, grid.height) == (7861, 7971)
    assert grid.transform[0] == 30.0
    with pytest.raises(AssetSelectionError, match="no asset"):
        select_bands(item, assets=["visual"])


def test_open_stac_errors(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        open_stac(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CatalogError):
        open_stac(tmp_path / "bad.json")
    with pytest.raises(CatalogError, match=r"no catalog\.json"):
        open_stac(tmp_path)
    with pytest.raises(EmptyCatalogError):
        list(iter_items(pystac.Catalog("empty", "nothing")))


# ---------------------------------------------------------------- STAC API via pystac-client


class _StacApi(BaseHTTPRequestHandler):
    items: ClassVar[list[dict]] = []
    requests: ClassVar[list[dict]] = []

    def log_message(self, *args):  # silence
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        base = f"http://{self.headers['Host']}"
        if self.path.split("?")[0] in ("/", ""):
            self._send(
                {
                    "type": "Catalog",
                    "id": "test-api",
                    "stac_version": "1.0.0",
                    "description": "loopback STAC API",
                    "conformsTo": [
                        "https://api.stacspec.org/v1.0.0/core",
                        "https://api.stacspec.org/v1.0.0/item-search",
                        "https://api.stacspec.org/v1.0.0/item-search#query",
                    ],
                    "links": [
                        {"rel": "self", "href": f"{base}/"},
                        {"rel": "root", "href": f"{base}/"},
                        {
                            "rel": "search",
                            "href": f"{base}/search",
                            "method": "POST",
                            "type": "application/geo+json",
                        },
                    ],
                }
            )
        else:
            self.send_response(404)
            self.end_headers()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        feats = self.items
        if body.get("collections"):
            feats = [f for f in feats if f.get("collection") in body["collections"]]
        if body.get("bbox"):
            bx = body["bbox"]
            feats = [
                f
                for f in feats
                if not (
                    f["bbox"][2] < bx[0]
                    or f["bbox"][0] > bx[2]
                    or f["bbox"][3] < bx[1]
                    or f["bbox"][1] > bx[3]
                )
            ]
        self._send(
            {"type": "FeatureCollection", "features": feats[: body.get("limit", 100)], "links": []}
        )


@pytest.fixture()
def stac_api(stac_items_dir):
    items = [json.loads(p.read_text()) for p in sorted(stac_items_dir.glob("*.json"))]
    for it in items:  # an API answers with absolute links only
        it["links"] = [ln for ln in it["links"] if "://" in ln["href"]]
    _StacApi.items = items
    _StacApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StacApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_search_stac_api_with_pystac_client(stac_api):
    items = search_stac(
        stac_api,
        bbox=(-140.0, -32.0, -139.0, -31.0),
        datetime="2020-01-01/..",
        collections=["sentinel2-l2a-example"],
        query={"eo:cloud_cover": {"lt": 60}},
        max_items=5,
    )
    assert len(items) == 1 and items[0].collection_id == "sentinel2-l2a-example"
    req = _StacApi.requests[-1]
    assert req["bbox"] == [-140.0, -32.0, -139.0, -31.0]
    assert req["collections"] == ["sentinel2-l2a-example"]
    assert req["query"] == {"eo:cloud_cover": {"lt": 60}}
    assert select_bands(items[0]).asset_keys == ("visual",)
    everything = search_stac(stac_api, max_items=None)
    assert len(everything) == 2


def test_search_stac_errors(stac_api):
    with pytest.raises(InvalidBBoxError, match="latitudes"):
        search_stac(stac_api, bbox=(0, 100, 1, 101))
    with pytest.raises(CatalogError, match="max_items"):
        search_stac(stac_api, max_items=0)
    with pytest.raises(CatalogError, match="failed"):
        search_stac("http://127.0.0.1:9/", max_items=1)
