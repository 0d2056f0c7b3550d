"""Query by example, relevance feedback, platform filter and "same place, other dates".

A real index (tiny random-init model, embedded Qdrant) over real rasters: the aerial COG on two
dates (two files with the same pixels, so their tiles have identical embeddings: the strongest
possible "more like this" that must still be left out as the example's own place) and a NAIP
tile of another platform. Expected orders are recomputed by brute force from the stored
vectors, so the tests check the search against arithmetic, not against itself.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shapely.geometry import mapping, shape  # noqa: E402
from shapely.ops import unary_union  # noqa: E402

from rsia_geo import TileSpec, build_catalog  # noqa: E402
from rsia_geo.catalog import item_from_raster  # noqa: E402
from rsia_geo.errors import InvalidArgumentError, InvalidRegionError  # noqa: E402
from rsia_geo.index import TileIndex  # noqa: E402
from rsia_geo.models import build_model, get_config, save_checkpoint  # noqa: E402
from rsia_geo.pipeline import build_index, read_chip, search  # noqa: E402
from rsia_geo.similar import _logistic, refine, same_place, tile_ids  # noqa: E402

NAIP = "naip/m_3008501_ne_16_1_20110815.tif"  # 256 x 256 px: one tile
NAIP_ID = "m_3008501_ne_16_1_20110815"


@pytest.fixture(scope="module")
def world(tmp_path_factory, samples):
    root = tmp_path_factory.mktemp("similar")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(get_config("alac-tiny"), pretrained=False), root / "ck")
    rasters = root / "rasters"
    rasters.mkdir()
    for day in ("20190601", "20210601"):
        shutil.copy(samples / "aerial" / "cogeo.tif", rasters / f"aerial_{day}.tif")
    naip = item_from_raster(samples / NAIP, platform="NAIP")
    cat = build_catalog([rasters], root / "cat", platform="aerial-survey", items=[naip])
    idx = root / "idx"
    build_index(cat, idx, ckpt, spec=TileSpec(size=256), progress=False)
    with TileIndex(idx, create=False) as ti:
        tiles = {h.id: h for h in ti.scroll(None, with_vectors=True)}
    return idx, ckpt, tiles


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _brute(tiles, query, keep):
    """Tile ids by cosine to ``query`` among those ``keep`` accepts, best first."""
    ids = [t for t in tiles if keep(tiles[t])]
    sims = _unit(np.array([tiles[t].vector for t in ids])) @ _unit(query)
    return [ids[i] for i in np.argsort(-sims, kind="stable")], np.sort(sims)[::-1]


def _assert_ranking(hits, tiles, query, keep):
    """Hits are the best tiles ``keep`` accepts by cosine to ``query``, in order (ties aside:
    the two dates' twin tiles have equal vectors)."""
    expected, sims = _brute(tiles, query, keep)
    n = len(hits)
    assert n == min(n, len(expected)) and n > 0
    np.testing.assert_allclose(hits.score, sims[:n], atol=1e-5)
    own = _unit(np.array([tiles[t].vector for t in hits.tile_id])) @ _unit(query)
    np.testing.assert_allclose(hits.score, own, atol=1e-5)
    assert all(keep(tiles[t]) for t in hits.tile_id)


def _aerial(tiles, day):
    return sorted(t for t, h in tiles.items() if h.payload["item_id"] == f"aerial_{day}")


def _twin(tiles, tid):
    """The tile of the other date with the same window (identical pixels)."""
    h = tiles[tid]
    same = [t for t, o in tiles.items() if o.payload["window"] == h.payload["window"]]
    return next(
        t for t in same if tiles[t].payload["item_id"] not in (h.payload["item_id"], NAIP_ID)
    )


def test_index_holds_platforms_and_dates(world):
    _, _, tiles = world
    platforms = {h.payload["item_id"]: h.payload["platform"] for h in tiles.values()}
    assert platforms["aerial_20190601"] == "aerial-survey"
    assert platforms["aerial_20210601"] == "aerial-survey"
    assert platforms[NAIP_ID] == "naip"  # lower case, as STAC writes it
    assert len(_aerial(tiles, "20190601")) == 16 == len(_aerial(tiles, "20210601"))


def test_example_tile_excludes_its_place_and_ranks_by_cosine(world):
    idx, ckpt, tiles = world
    tid = _aerial(tiles, "20190601")[5]
    twin = _twin(tiles, tid)
    np.testing.assert_allclose(tiles[tid].vector, tiles[twin].vector, atol=1e-6)
    hits = search(example=tid, index=idx, model=ckpt, k=40, group=False)
    assert tid not in set(hits.tile_id) and twin not in set(hits.tile_id)
    assert hits.attrs["query"] == {"kind": "example", "example": "tile", "tile_id": tid}
    place = shape(tiles[tid].payload["footprint"])

    def elsewhere(h):
        fp = shape(h.payload["footprint"])
        return fp.intersection(place).area < 0.5 * min(fp.area, place.area)

    _assert_ranking(hits, tiles, tiles[tid].vector, elsewhere)
    assert len(hits) == len(tiles) - 2  # all but the example and its twin
    assert hits.score_ia.isna().all()  # IA scores images against audio, not images


def test_example_by_hit_row_chip_and_polygon(world):
    idx, ckpt, tiles = world
    tid = _aerial(tiles, "20210601")[0]
    first = search(example=tid, index=idx, model=ckpt, k=3, group=False)
    row = first.iloc[0]
    by_row = search(example=row, index=idx, model=ckpt, k=3, group=False)
    assert by_row.attrs["query"]["tile_id"] == row["tile_id"]

    # pixels of an indexed tile, encoded on the fly: that tile and its twin come first, ~1.0
    chip = read_chip(row)
    by_chip = search(example=chip, index=idx, model=ckpt, k=2, group=False)
    assert set(by_chip.tile_id) == {row["tile_id"], _twin(tiles, row["tile_id"])}
    assert by_chip.score.min() > 0.999
    as_uint8 = search(
        example=(np.moveaxis(chip, 0, -1) * 255).round().astype(np.uint8),
        index=idx, model=ckpt, k=2, group=False,
    )  # fmt: skip
    assert set(as_uint8.tile_id) == set(by_chip.tile_id)

    # a polygon over four tiles of one date: the mean of the tiles mostly under it
    four = _aerial(tiles, "20190601")[:4]
    polygon = unary_union([shape(tiles[t].payload["footprint"]) for t in four]).buffer(-1e-7)
    by_poly = search(example=mapping(polygon), index=idx, model=ckpt, k=50, group=False)
    under = [
        t for t, h in tiles.items()
        if shape(h.payload["footprint"]).intersection(polygon).area
        >= 0.5 * shape(h.payload["footprint"]).area
    ]  # fmt: skip
    assert by_poly.attrs["query"]["tiles"] == len(under) >= 4  # both dates lie under it
    mean = _unit(np.mean([_unit(tiles[t].vector) for t in under], axis=0))

    def outside(h):
        fp = shape(h.payload["footprint"])
        return fp.intersection(polygon).area < 0.5 * min(fp.area, polygon.area)

    _assert_ranking(by_poly, tiles, mean, outside)
    assert not set(under) & set(by_poly.tile_id)


def test_refine_moves_the_query_as_rocchio_says(world):
    idx, ckpt, tiles = world
    tid = _aerial(tiles, "20190601")[3]
    base = search(example=tid, index=idx, model=ckpt, k=8, group=False)
    pos, neg = list(base.tile_id[:2]), list(base.tile_id[2:4])
    refined = search(
        example=tid, relevant=base.iloc[:2], not_relevant=neg, index=idx, model=ckpt,
        k=30, group=False,
    )  # fmt: skip
    q = refined.attrs["query"]
    assert (q["relevant"], q["not_relevant"], q["refine_method"]) == (2, 2, "rocchio")
    assert not set(neg) & set(refined.tile_id)  # not relevant never comes back
    vec = refine(
        np.asarray(tiles[tid].vector),
        _unit([tiles[t].vector for t in pos]),
        _unit([tiles[t].vector for t in neg]),
    )
    manual = _unit(
        _unit(tiles[tid].vector)
        + 0.75 * _unit([tiles[t].vector for t in pos]).mean(0)
        - 0.15 * _unit([tiles[t].vector for t in neg]).mean(0)
    )
    np.testing.assert_allclose(vec, manual, atol=1e-9)
    place = shape(tiles[tid].payload["footprint"])

    def allowed(h):
        fp = shape(h.payload["footprint"])
        return h.id not in neg and fp.intersection(place).area < 0.5 * min(fp.area, place.area)

    _assert_ranking(refined, tiles, manual, allowed)
    # the relevant marks alone are a query too
    alone = search(relevant=pos, index=idx, model=ckpt, k=5, group=False)
    assert alone.attrs["query"]["kind"] == "relevant"
    _assert_ranking(alone, tiles, _unit([tiles[t].vector for t in pos]).mean(0), lambda h: True)


def test_refine_from_a_spoken_query_and_linear_method(world):
    idx, ckpt, _ = world
    wave = np.sin(np.linspace(0, 400, 32000)).astype(np.float32)
    spoken = search(wave, idx, ckpt, sample_rate=16000, k=6, group=False)
    assert spoken.score_ia.notna().all()
    pos, neg = list(spoken.tile_id[:2]), list(spoken.tile_id[4:6])
    lin = search(
        wave, idx, ckpt, sample_rate=16000, relevant=pos, not_relevant=neg,
        refine_method="linear", k=6, group=False,
    )  # fmt: skip
    assert lin.attrs["query"]["refine_method"] == "linear"
    assert lin.score_ia.isna().all()  # the refined query mixes images: cosine scores it
    assert not set(neg) & set(lin.tile_id)
    # linear with marks of one kind: Rocchio moves the query, and the answer says so
    one = search(wave, idx, ckpt, sample_rate=16000, relevant=pos, refine_method="linear", k=3)
    assert one.attrs["query"]["refine_method"] == "rocchio"


def test_logistic_separates_and_follows_its_prior():
    rng = np.random.default_rng(0)
    d = 16
    axis = np.eye(d)[0]
    pos = _unit(axis + 0.3 * rng.normal(size=(6, d)))
    neg = _unit(-axis + 0.3 * rng.normal(size=(6, d)))
    x, y = np.vstack([pos, neg]), np.r_[np.ones(6), np.zeros(6)]
    w = _logistic(x, y, prior=np.zeros(d), l2=1.0)
    assert (pos @ w > 0).all() and (neg @ w < 0).all()
    # a strong pull keeps the weights at the prior whatever the labels
    prior = 10 * np.eye(d)[1]
    w = _logistic(x, y, prior=prior, l2=1e6)
    np.testing.assert_allclose(w, prior, atol=1e-3)
    v = refine(None, pos, neg, method="linear")
    assert np.isclose(np.linalg.norm(v), 1.0) and (pos @ v > neg @ v).all()


def test_platform_filter(world):
    idx, ckpt, tiles = world
    tid = _aerial(tiles, "20190601")[0]
    naip = search(example=tid, index=idx, model=ckpt, platform="naip", k=50, group=False)
    n_naip = sum(1 for h in tiles.values() if h.payload["platform"] == "naip")
    assert len(naip) == n_naip > 0 and set(naip.platform) == {"naip"}
    both = search(
        example=tid, index=idx, model=ckpt, platform=["NAIP", "aerial-survey"], k=100, group=False
    )
    assert len(both) == len(tiles) - 2  # all but the example's place on both dates
    with pytest.raises(InvalidArgumentError, match="platform="):
        search(example=tid, index=idx, model=ckpt, platform=[3])
    # the index lists its platforms, and a platform it does not hold is named with them
    with TileIndex(idx, create=False) as ti:
        assert ti.extent()["platforms"] == ["aerial-survey", "naip"]
    none = search(example=tid, index=idx, model=ckpt, platform="landsat-9", k=5)
    assert len(none) == 0 and none.attrs["empty"].startswith(
        "no indexed tile is from platform landsat-9 (the index holds aerial-survey, naip): "
    )


def test_same_place_other_dates(world):
    idx, _, tiles = world
    tid = _aerial(tiles, "20210601")[7]
    other = same_place(tid, idx)
    assert list(other.item_id) == ["aerial_20190601"]  # one per other acquisition, own item out
    assert other.tile_id.iloc[0] == _twin(tiles, tid)
    assert other.similarity.iloc[0] > 0.9999 and other.overlap.iloc[0] > 0.999
    assert other.platform.iloc[0] == "aerial-survey"
    assert same_place(tid, idx, datetime="2020-01-01/..").empty
    assert list(same_place(_twin(tiles, tid), idx).item_id) == ["aerial_20210601"]
    with pytest.raises(InvalidArgumentError, match="no tile"):
        same_place("not-a-tile", idx)


def test_bad_examples_and_marks_are_refused_with_the_fix(world):
    idx, ckpt, tiles = world
    tid = next(iter(tiles))
    with pytest.raises(InvalidArgumentError, match="no tile nope in this index"):
        search(example="nope", index=idx, model=ckpt)
    with pytest.raises(InvalidArgumentError, match="both relevant and not relevant"):
        search(example=tid, relevant=[tid], not_relevant=tid, index=idx, model=ckpt)
    with pytest.raises(InvalidArgumentError, match="rerank=True"):
        search(example=tid, rerank=True, index=idx, model=ckpt)
    with pytest.raises(InvalidArgumentError, match="not audio and example"):
        search(np.zeros(16000), example=tid, sample_rate=16000, index=idx, model=ckpt)
    with pytest.raises(InvalidArgumentError, match="has 4 bands but the model reads 3"):
        search(example=np.zeros((4, 64, 64), np.float32), index=idx, model=ckpt)
    with pytest.raises(InvalidArgumentError, match=r"in \[0, 1\]"):
        search(example=np.full((3, 64, 64), 255.0), index=idx, model=ckpt)
    with pytest.raises(InvalidRegionError, match="no indexed tile lies under"):
        search(example={"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
               index=idx, model=ckpt)  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="names no tile"):
        search(relevant=[{"x": 1}], index=idx, model=ckpt)
    with pytest.raises(InvalidArgumentError, match="refine method="):
        search(example=tid, relevant=[tid], refine_method="svm", index=idx, model=ckpt)


def test_tile_ids_accepts_every_form():
    import geopandas as gpd
    from shapely.geometry import Point

    gdf = gpd.GeoDataFrame({"tile_id": ["a", "b"]}, geometry=[Point(0, 0), Point(1, 1)])
    assert tile_ids(gdf) == ["a", "b"]
    assert tile_ids(gdf.iloc[0]) == ["a"]
    assert tile_ids("a, b,a") == ["a", "b"]
    assert tile_ids([{"tile_id": "c"}, "d"]) == ["c", "d"]
    assert tile_ids(None) == []


@pytest.mark.parametrize("engine", ["edge", "client"])
def test_scroll_pages_over_both_engines(tmp_path, engine, aerial_catalog, tiny_checkpoint):
    loc = tmp_path / "i" if engine == "edge" else ":memory:"
    with TileIndex(loc, engine=engine) as idx:
        build_index(aerial_catalog, idx, tiny_checkpoint, spec=TileSpec(size=256), progress=False)
        every = idx.scroll(None, page=5, with_vectors=True)
        assert len(every) == idx.count() == 16 == len({h.id for h in every})
        assert all(h.vector is not None for h in every)
        assert len(idx.scroll(None, limit=7, page=3)) == 7


def test_cli_like_refine_platform_and_same_place(world, capsys, tmp_path):
    from rsia_geo.cli import main

    idx, ckpt, tiles = world
    tid = _aerial(tiles, "20190601")[2]
    base = ["--location", str(idx), "--checkpoint", str(ckpt), "--no-group"]
    assert main(["search", "--like", tid, "-k", "4", *base]) == 0
    out = capsys.readouterr().out
    assert f"more like the tile {tid}" in out
    shown = [line.split("tile ")[-1] for line in out.splitlines() if "score " in line]
    expected = search(example=tid, index=idx, model=ckpt, k=4, group=False)
    assert shown == list(expected.tile_id)
    pos, neg = shown[0], shown[1]
    rc = main(
        ["search", "--like", tid, "--relevant", pos, "--not-relevant", neg, "-k", "4",
         "--refine-method", "linear", "--platform", "aerial-survey", "--out",
         str(tmp_path / "r.geojson"), *base]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "refined (linear) with 1 relevant and 1 not relevant" in out
    import geopandas as gpd

    written = gpd.read_file(tmp_path / "r.geojson")
    assert neg not in set(written.tile_id) and set(written.platform) == {"aerial-survey"}
    # a polygon file as the example
    poly = tmp_path / "p.geojson"
    poly.write_text(json.dumps(tiles[tid].payload["footprint"]))
    assert main(["search", "--like", str(poly), "-k", "2", *base]) == 0
    assert "more like the polygon" in capsys.readouterr().out
    # errors: two queries, an unknown tile (exit code of an argument error, message on stderr)
    assert main(["search", "q.wav", "--like", tid, *base]) == 2
    assert "give one query" in capsys.readouterr().err
    rc = main(["search", "--like", "00000000-0000-0000-0000-000000000000", *base])
    assert rc == 2 and "no tile 00000000" in capsys.readouterr().err
    # same place, other dates
    assert main(["same-place", tid, "--location", str(idx)]) == 0
    out = capsys.readouterr().out
    assert "1 other acquisitions" in out and _twin(tiles, tid) in out and "aerial_20210601" in out


def test_service_like_refine_and_same_place(world):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from rsia_geo.pipeline import load_model
    from rsia_geo.service import ServiceSettings, create_app

    idx, ckpt, tiles = world
    tid = _aerial(tiles, "20210601")[9]
    with TileIndex(idx, create=False) as index:
        app = create_app(ServiceSettings(location=None), index=index, model=load_model(ckpt))
        with TestClient(app) as c:
            r = c.post("/search", data={"like": tid, "k": "5", "group": "false"})
            assert r.status_code == 200, r.text
            body = r.json()
            got = [f["properties"]["tile_id"] for f in body["features"]]
            expected = search(example=tid, index=index, model=ckpt, k=5, group=False)
            assert got == list(expected.tile_id)
            assert body["query"] == {"kind": "example", "example": "tile", "tile_id": tid}
            r = c.post(
                "/search",
                data={"like": tid, "relevant": got[0], "not_relevant": ",".join(got[1:3]),
                      "k": "5", "group": "false", "platform": "aerial-survey"},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            refined = [f["properties"]["tile_id"] for f in r.json()["features"]]
            assert not set(got[1:3]) & set(refined)
            assert r.json()["query"]["relevant"] == 1
            poly = json.dumps(tiles[tid].payload["footprint"])
            r = c.post("/search", data={"like": poly, "k": "2"})
            assert r.status_code == 200 and r.json()["query"]["example"] == "polygon"
            r = c.post("/search", data={"like": "00000000-0000-0000-0000-000000000000"})
            assert r.status_code == 404 and r.json()["error"] == "TileNotFoundError"
            r = c.post("/search", data={"like": tid, "text": "boats"})
            assert r.status_code == 400 and "send one query" in r.json()["detail"]
            r = c.post("/search", data={"like": "{not json"})
            assert r.status_code == 400 and "like is not valid JSON" in r.json()["detail"]
            r = c.get(f"/tiles/{tid}/same-place")
            assert r.status_code == 200, r.text
            feats = r.json()["features"]
            assert [f["properties"]["tile_id"] for f in feats] == [_twin(tiles, tid)]
            assert feats[0]["properties"]["similarity"] > 0.9999
            assert c.get("/tiles/nope/same-place").status_code == 404


def test_jupyter_panel_more_like_marks_refine_and_history(world):
    pytest.importorskip("ipyleaflet")
    from rsia_geo.jupyter import SearchPanel

    idx, ckpt, tiles = world
    with TileIndex(idx, create=False) as index:
        panel = SearchPanel(index, ckpt, thumbnails=False)
        try:
            panel.k.value = 5
            panel.group.value = False
            assert panel.more_like() is None and "pick a hit first" in panel.status.value
            tid = _aerial(tiles, "20190601")[6]
            hits = panel.more_like(tid)
            want = search(example=tid, index=index, model=ckpt, k=5, group=False)
            assert list(hits.tile_id) == list(want.tile_id)
            assert "more like the tile" in panel.status.value
            assert [v for _, v in panel.pick.options] == list(hits.tile_id)
            # a click on a hit's footprint on the map picks it
            feature = panel._hits_layer.data["features"][2]
            panel._on_hit_click(feature=feature)
            assert panel.pick.value == hits.tile_id.iloc[2]
            panel.mark(False)  # the picked hit
            panel.mark(True, hits.tile_id.iloc[0])
            panel.mark(True, hits.tile_id.iloc[2])  # a change of mind moves the mark
            assert panel.relevant == [hits.tile_id.iloc[0], hits.tile_id.iloc[2]]
            assert panel.not_relevant == [] and "2 relevant, 0 not" in panel.marks.value
            panel.mark(False, hits.tile_id.iloc[1])
            refined = panel.refine()
            want = search(
                example=tid, relevant=panel.relevant, not_relevant=panel.not_relevant,
                index=index, model=ckpt, k=5, group=False,
            )  # fmt: skip
            assert list(refined.tile_id) == list(want.tile_id)
            assert hits.tile_id.iloc[1] not in set(refined.tile_id)
            assert "refined (rocchio, 2 relevant, 1 not)" in panel.status.value
            # filters narrow every search; a new query forgets the marks
            panel.platform.value = "naip"
            only = panel.more_like(tid)
            assert set(only.platform) == {"naip"} and panel.relevant == []
            assert panel.refine() is None and "mark hits" in panel.status.value
            panel.platform.value = ""
            rows = panel.same_place(tid)
            assert list(rows.tile_id) == [_twin(tiles, tid)] and panel.history is rows
            assert "1 other acquisitions" in panel.status.value
            panel.dates.value = "2030-01-01/.."
            assert panel.more_like(tid) is not None and len(panel.hits) == 0
        finally:
            panel.close()


def test_acquisitions_groups_hits_by_date_and_platform(world, capsys):
    from rsia_geo.cli import main
    from rsia_geo.similar import acquisitions

    idx, ckpt, tiles = world
    tid = _aerial(tiles, "20190601")[1]
    hits = search(example=tid, index=idx, model=ckpt, k=40, group=False)
    table = acquisitions(hits)
    assert list(table.date) == ["2021-06-01", "2019-06-01", "2011-08-15"]  # newest first
    counts = dict(zip(table.date, table.hits, strict=True))
    assert counts == {"2021-06-01": 15, "2019-06-01": 15, "2011-08-15": 1}
    for _, row in table.iterrows():
        mine = hits[[d.startswith(row["date"]) for d in hits.datetime]]
        assert row["best_rank"] == mine["rank"].min()
        assert row["best_score"] == pytest.approx(mine["score"].max())
    assert dict(zip(table.date, table.platform, strict=True))["2011-08-15"] == "naip"
    assert acquisitions(hits.iloc[:0]).empty
    with pytest.raises(InvalidArgumentError, match="datetime column"):
        acquisitions([1, 2])
    main(["search", "--like", tid, "--location", str(idx), "--checkpoint", str(ckpt), "-k", "3"])
    assert "by acquisition:" in capsys.readouterr().out


def test_platform_filter_on_an_index_without_platforms_says_so(
    tmp_path, aerial_catalog, tiny_checkpoint
):
    build_index(aerial_catalog, tmp_path / "idx", tiny_checkpoint, spec=TileSpec(size=256),
                progress=False)  # fmt: skip
    with TileIndex(tmp_path / "idx", create=False) as idx:
        meta = idx.meta
        meta.pop("platforms")  # as indexes written before tiles stored their platform
        idx.backend.set_meta(meta)
        tid = idx.scroll(None, limit=1)[0].id
        with pytest.raises(InvalidArgumentError, match="built before tiles stored their platform"):
            search(example=tid, index=idx, model=tiny_checkpoint, platform="naip")
        assert len(search(example=tid, index=idx, model=tiny_checkpoint, k=3)) == 3
