"""Exports carry what was asked: the query, the region, the filters and the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo import TileSpec  # noqa: E402
from rsia_geo.pipeline import DEFAULT_FEEDBACK, build_index, search  # noqa: E402
from rsia_geo.results import hits_metadata, write_hits  # noqa: E402


@pytest.fixture(scope="module")
def hits(tmp_path_factory, tiny_checkpoint, samples):
    import datetime as dt

    from rsia_geo import build_catalog

    root = tmp_path_factory.mktemp("results")
    cat = build_catalog(
        [samples / "aerial"], root / "cat", default_datetime=dt.datetime(2020, 1, 1), platform="x"
    )
    build_index(cat, root / "idx", tiny_checkpoint, spec=TileSpec(size=256), progress=False)
    from rsia_geo.index import TileIndex

    with TileIndex(root / "idx", create=False) as idx:
        lon, lat = idx.scroll(None, limit=1)[0].payload["location"].values()
    bbox = (lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01)
    wave = np.sin(np.linspace(0, 300, 32000)).astype(np.float32)
    return search(
        wave, root / "idx", tiny_checkpoint, sample_rate=16000, k=4, bbox=bbox,
        datetime="2020-01-01/..", platform="x",
    )  # fmt: skip


def test_metadata_names_query_region_filters_model(hits, tiny_checkpoint):
    from rsia_geo.models import load_checkpoint
    from rsia_geo.models.checkpoint import model_signature

    meta = hits_metadata(hits)
    # what was searched for, with the feedback weight search used (its default)
    assert meta["query"] == {"kind": "spoken", "feedback": DEFAULT_FEEDBACK}
    assert meta["hits"] == len(hits) == 4
    assert meta["region"]["type"] == "Polygon"
    assert meta["filters"]["datetime"] == "2020-01-01/.." and meta["filters"]["platform"] == ["x"]
    sig = model_signature(load_checkpoint(tiny_checkpoint))
    assert meta["model"]["weights_sha256"] == sig["weights_sha256"]
    assert set(meta["timings"]) >= {"encode_audio_ms", "search_ms", "total_ms"}


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".parquet"])
def test_every_export_carries_it(hits, tmp_path, suffix):
    import geopandas as gpd

    out = write_hits(hits, tmp_path / f"hits{suffix}")
    if suffix == ".geojson":
        stored = json.loads(out.read_text())["rsia_geo"]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        stored = json.loads(pq.read_schema(out).metadata[b"rsia_geo"])
    else:
        import pyogrio

        stored = json.loads(pyogrio.read_info(out)["layer_metadata"]["rsia_geo"])
    expected = hits_metadata(hits)
    stored.pop("written"), expected.pop("written")
    assert stored == json.loads(json.dumps(expected))
    back = gpd.read_file(out) if suffix != ".parquet" else gpd.read_parquet(out)
    assert list(back.tile_id) == list(hits.tile_id) and "tile" not in back.columns
    assert back.crs.to_epsg() == 4326


def test_geopandas_own_writers_keep_a_readable_tile_record(hits, tmp_path):
    """hits.to_file (GeoPandas, not write_hits) stores each Tile as JSON that reads back."""
    import geopandas as gpd

    from rsia_geo.pipeline import read_chip
    from rsia_geo.tiles import Tile

    hits.to_file(tmp_path / "direct.gpkg")
    back = gpd.read_file(tmp_path / "direct.gpkg")
    tiles = [Tile.from_dict(json.loads(text)) for text in back["tile"]]
    assert [t.id for t in tiles] == list(hits.tile_id)
    assert tiles[0] == hits.iloc[0]["tile"]
    assert np.array_equal(read_chip(tiles[0]), read_chip(hits.iloc[0]))
