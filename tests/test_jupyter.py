"""Jupyter helpers over a real index: thumbnail table, folium map, and the search panel."""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import shutil

import numpy as np
import pytest
import torch
from shapely.geometry import box, mapping

from rsia_geo import TileSpec, build_index, search
from rsia_geo.catalog import item_from_raster
from rsia_geo.errors import InvalidArgumentError
from rsia_geo.jupyter import SearchPanel, chip_png, hits_map, hits_table
from rsia_geo.models import build_model, get_config, save_checkpoint
from rsia_geo.pipeline import read_chip
from rsia_geo.sample_data import sample_data_dir
from rsia_geo.tiles import iter_tiles

SPEC = TileSpec(size=128, scales=(1, 2))
QUERY = sample_data_dir() / "queries" / "an_airplane_parked_at_the_airport.wav"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("jup")
    ckpt = root / "tiny"
    save_checkpoint(
        build_model(get_config("alac-tiny"), pretrained=False), ckpt, audio_bank=torch.randn(20, 64)
    )
    item = item_from_raster(
        sample_data_dir() / "aerial" / "cogeo.tif", default_datetime=dt.datetime(2019, 6, 1)
    )
    build_index([item], root / "idx", ckpt, spec=SPEC, progress=False)
    tiles = list(iter_tiles([item], SPEC))
    return root / "idx", ckpt, tiles


def _region(tiles):
    minx, miny, maxx, maxy = tiles[0].footprint.bounds
    w, h = maxx - minx, maxy - miny
    return (minx, maxy - 2.5 * h, minx + 3.5 * w, maxy)  # 4 x 3 level-1 tiles from the corner


def test_thumbnails_are_the_tiles_pixels(setup):
    from PIL import Image

    idx, ckpt, _ = setup
    hits = search(QUERY, idx, ckpt, k=5)
    png = chip_png(hits.iloc[0], size=32)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    chip = read_chip(hits.iloc[0], out_size=32)
    assert img.shape == (32, 32, 3)
    np.testing.assert_array_equal(
        img, np.clip(np.round(chip[:3].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    )
    with pytest.raises(InvalidArgumentError, match="size"):
        chip_png(hits.iloc[0], size=2)


def test_hits_table(setup, tmp_path):
    idx, ckpt, tiles = setup
    hits = search(QUERY, idx, ckpt, bbox=_region(tiles), k=7)
    table = hits_table(hits, size=48)
    html = table._repr_html_()
    assert table.rows == len(hits) == 7
    assert html.count("data:image/png;base64,") == 7 and html.count("<tr") == 8
    assert f"{hits.iloc[0]['score']:.4f}" in html and "cogeo" in html
    short = hits_table(hits, thumbnails=False, max_rows=3)._repr_html_()
    assert "<img" not in short and "4 more hits not shown" in short
    assert "rsia-hits" in table.save(tmp_path / "t.html").read_text()
    with pytest.raises(InvalidArgumentError, match=r"GeoDataFrame returned by rsia_geo\.search"):
        hits_table([1, 2, 3])


def test_hits_map_draws_hits_and_region(setup):
    idx, ckpt, tiles = setup
    region = _region(tiles)
    hits = search(QUERY, idx, ckpt, bbox=region, k=6)
    html = hits_map(hits).get_root().render()
    assert html.count('"item_id": "cogeo"') >= 6 or html.count('"cogeo"') >= 6
    assert "query region" in html
    # the region drawn is the query's box (from hits.attrs), its corner coordinates embedded
    assert f"{region[0]}" in html and f"{region[3]}" in html
    empty = search(QUERY, idx, ckpt, bbox=(0.0, 0.0, 0.1, 0.1), k=3)
    assert len(empty) == 0
    assert "query region" in hits_map(empty).get_root().render()


def test_search_panel_end_to_end(setup):
    idx, ckpt, tiles = setup
    panel = SearchPanel(idx, ckpt, thumbnails=False)
    try:
        # the map opens on the indexed tiles (their extent's centre), and says what they are
        lat, lon = panel.map.center
        b = box(*_region(tiles)).buffer(0.05)
        assert b.contains(box(lon, lat, lon, lat).centroid)
        minx, miny, maxx, maxy = panel.index.extent()["bbox"]
        assert (lat, lon) == pytest.approx(((miny + maxy) / 2, (minx + maxx) / 2))
        n = panel.index.count()
        assert panel.status.value == (
            f"index: {n} tiles, acquired 2019-06-01; record, upload or type a query"
        )
        assert panel.run() is None and "upload a clip or type the query" in panel.status.value
        # an upload, as the FileUpload widget delivers it
        panel.upload.value = (
            {
                "name": "airplane.wav",
                "type": "audio/wav",
                "size": QUERY.stat().st_size,
                "content": memoryview(QUERY.read_bytes()),
                "last_modified": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            },
        )
        assert panel.audio == QUERY.read_bytes() and panel.player.format == "wav"
        panel.bbox_text.value = ", ".join(str(v) for v in _region(tiles))
        panel.k.value = 4
        hits = panel.run()
        want = search(QUERY, panel.index, ckpt, bbox=_region(tiles), k=4)
        assert list(hits.tile_id) == list(want.tile_id)
        assert "4 hits" in panel.status.value and panel.hits is hits
        # what the recogniser heard, beside the hits (the "show what was heard" box is on)
        heard = hits.attrs["query"]["heard"]
        sure = hits.attrs["query"]["heard_confidence"]
        others = [t for t, _ in hits.attrs["query"].get("heard_alternatives") or () if t != heard]
        maybe = f"; or &quot;{html.escape(others[0])}&quot;" if others else ""  # when unsure
        said = f"heard &quot;{html.escape(heard)}&quot; (confidence {sure:.2f}{maybe}): "
        assert heard and said in panel.status.value
        outputs = panel.results.outputs
        assert len(outputs) == 2  # the table, then the hits by acquisition date and platform
        assert "rsia-hits" in outputs[0]["data"]["text/html"]
        assert "by acquisition date and platform" in outputs[1]["data"]["text/html"]
        layer = panel._hits_layer
        assert layer is not None and len(layer.data["features"]) == 4
        # a polygon drawn on the map replaces the typed box
        poly = mapping(box(*_region(tiles)))
        panel.bbox_text.value = ""
        panel.draw.data = []
        panel.set_region({"type": "Feature", "geometry": poly, "properties": {}})
        panel.rerank.value = True
        hits2 = panel.run()
        assert len(hits2) == 4 and hits2["score_bswfr"].notna().all()
        assert all(g.intersects(box(*_region(tiles))) for g in hits2.geometry)
        # a bad typed bbox is reported in the panel, not raised
        panel.bbox_text.value = "1, 2, three"
        assert panel.run() is None and "not four numbers" in panel.status.value
        panel.bbox_text.value = "0, 5, 1, 2"  # miny > maxy
        assert panel.run() is None and "error" in panel.status.value
        # a typed query wins over the uploaded clip, and the panel says what it searched
        if shutil.which("espeak-ng"):
            panel.bbox_text.value = ""
            panel.text.value = "an airplane parked at the airport"
            typed = panel.run()
            assert typed is not None and typed.attrs["query"]["kind"] == "typed"
            assert "typed &quot;an airplane parked at the airport&quot;" in panel.status.value
            panel.text.value = ""
        json.dumps(panel.geometry)
    finally:
        panel.close()


def test_the_panel_names_what_else_an_unsure_recogniser_heard():
    import geopandas as gpd

    from rsia_geo.jupyter import _describe

    hits = gpd.GeoDataFrame({"rank": [1]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:4326")
    hits.attrs.update(timings={"total_ms": 180.0}, candidates=80, query={
        "kind": "spoken", "heard": "a piece of family", "heard_confidence": 0.38,
        "heard_alternatives": [["a piece of family", 0.38], ["a piece of <farmland>", 0.31]],
    })  # fmt: skip
    line = _describe(hits)
    assert line.startswith(
        "heard &quot;a piece of family&quot; (confidence 0.38; or "
        "&quot;a piece of &lt;farmland&gt;&quot;): 1 hits in 180 ms"
    )
    hits.attrs["query"].pop("heard_alternatives")
    assert _describe(hits).startswith("heard &quot;a piece of family&quot; (confidence 0.38): ")
    # nothing found: the panel says why (search's attrs["empty"]), escaped
    none = hits.iloc[:0].copy()
    none.attrs.update(hits.attrs, candidates=0, empty="no indexed tile is from platform <x>")
    assert _describe(none).endswith(
        "0 hits in 180 ms (0 candidates in the region): no indexed tile is from platform &lt;x&gt;"
    )
