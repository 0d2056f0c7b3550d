"""The stages of ``rsia_geo.search``, each alone, on a real tiny index.

query (``_make_query``) -> candidates in the region (``_candidates``) -> scores and order
(``_score``) -> one hit per place (``group_places``) -> rows (``_hit_rows``, ``_hits_frame``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shapely.geometry import shape  # noqa: E402

from rsia_geo import TileSpec  # noqa: E402
from rsia_geo.index import TileIndex  # noqa: E402
from rsia_geo.pipeline import (  # noqa: E402
    DEFAULT_FEEDBACK,
    FEEDBACK_PLACES,
    HIT_COLUMNS,
    PLACE_TOLERANCE,
    _candidates,
    _Exclusion,
    _feedback,
    _hit_rows,
    _hits_frame,
    _make_query,
    _score,
    build_index,
    feedback_scores,
    group_places,
    load_model,
    one_place,
    shared_area,
)
from rsia_geo.query import make_region  # noqa: E402

WAVE = np.sin(np.linspace(0, 500, 24000)).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint, samples):
    import datetime as dt

    from rsia_geo import build_catalog

    root = tmp_path_factory.mktemp("stages")
    cat = build_catalog(
        [samples / "aerial"], root / "cat", default_datetime=dt.datetime(2020, 1, 1)
    )
    # half-overlapping tiles: neighbours share half their area (for the grouping stage)
    build_index(cat, root / "idx", tiny_checkpoint, spec=TileSpec(size=256, overlap=128),
                progress=False)  # fmt: skip
    idx = TileIndex(root / "idx", create=False)
    yield idx, load_model(tiny_checkpoint)
    idx.close()


def _query(world, **kw):
    idx, model = world
    args = dict(audio=None, text=None, sample_rate=16000, example=None, relevant=None,
                not_relevant=None, refine_method="rocchio", group_overlap=0.5)  # fmt: skip
    args.update(kw)
    return _make_query(model, idx, {}, **args)


def test_query_stage(world):
    idx, model = world
    spoken = _query(world, audio=WAVE)
    from rsia_geo.audio import load_audio

    heard = load_audio(WAVE, sample_rate=16000, trim=True).samples  # what the stage encodes
    raw = model.encode_audio(torch.from_numpy(heard)[None], normalize=False)[0].numpy()
    assert spoken.audio_raw is not None and spoken.exclude is None
    np.testing.assert_allclose(spoken.vector, raw, rtol=1e-4, atol=1e-5)
    tid = idx.scroll(None, limit=1)[0].id
    example = _query(world, example=tid)
    assert example.audio_raw is None and example.exclude.ids == {tid}
    assert example.exclude.place is not None
    marked = _query(world, audio=WAVE, relevant=[tid])
    assert marked.audio_raw is None and marked.description["relevant"] == 1


def test_candidates_stage_region_and_exclusion(world):
    idx, _ = world
    every = idx.scroll(None, with_vectors=True)
    fps = {h.id: shape(h.payload["footprint"]) for h in every}
    minx, miny, maxx, maxy = next(iter(fps.values())).bounds
    region = make_region(bbox=(minx, miny, maxx, maxy))
    q = np.asarray(every[0].vector)
    cands, fetched = _candidates(idx, q, region, 50, True, page=8)
    inside = {t for t, fp in fps.items() if fp.intersects(region.geometry)
              and not fp.touches(region.geometry)}  # fmt: skip
    assert {c.id for c in cands} == inside and fetched >= len(cands)
    assert all(c.unit is not None and c.raw_norm > 0 for c in cands)
    # paging: a small page size gathers the same candidates
    few, _ = _candidates(idx, q, None, 10, False, page=3)
    many, _ = _candidates(idx, q, None, 10, False, page=50)
    assert [c.id for c in few] == [c.id for c in many]
    # exclusion: ids and a place (tiles sharing half of it) never become candidates
    place = fps[every[0].id]
    ex = _Exclusion({every[1].id}, place, 0.5)
    kept, _ = _candidates(idx, q, None, 100, False, page=20, exclude=ex)
    ids = {c.id for c in kept}
    assert every[1].id not in ids and every[0].id not in ids
    for c in kept:
        fp = fps[c.id]
        assert fp.intersection(place).area < 0.5 * min(fp.area, place.area)
    assert len(kept) > 0


def test_score_stage_orders_by_ia_then_cosine(world):
    idx, model = world
    q = _query(world, audio=WAVE)
    cands, _ = _candidates(idx, q.vector, None, 30, True, page=40)
    scores, order, rank_cos, rank_ia = _score(model, q, cands, True, False, 30, 10, {})
    assert np.all(np.diff(scores["score_ia"][order]) <= 1e-7)  # best first by IA
    assert np.all(np.diff(scores["score_cosine"][np.argsort(rank_cos)]) <= 1e-7)
    assert sorted(rank_ia) == list(range(len(cands)))
    assert np.isnan(scores["score_bswfr"]).all()
    cos_only = _score(model, q, cands, False, False, 30, 10, {})
    assert np.isnan(cos_only[0]["score_ia"]).all()
    assert list(cos_only[1]) == list(np.argsort(-scores["score_cosine"], kind="stable"))


def test_feedback_scores_move_toward_the_mean_of_the_leads():
    rng = np.random.default_rng(3)
    units = rng.normal(size=(9, 16))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    scores = rng.normal(size=9)
    got = feedback_scores(units, scores, [4, 1, 7], 0.4)
    centre = units[[4, 1, 7]].sum(axis=0)  # the mean's direction: the sum's
    brute = scores + 0.4 * units @ (centre / np.linalg.norm(centre))
    np.testing.assert_allclose(got, brute, atol=1e-12)
    np.testing.assert_array_equal(feedback_scores(units, scores, [4, 1, 7], 0.0), scores)
    np.testing.assert_array_equal(feedback_scores(units, scores, [], 0.4), scores)


def test_evaluation_feedback_is_the_pipelines_per_query():
    """``with_feedback`` (val metrics) scores each query's candidates as search does."""
    from rsia_geo.training.evaluate import candidates_only, with_feedback

    rng = np.random.default_rng(4)
    units = rng.normal(size=(12, 8))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    first, second = rng.normal(size=(5, 12)), rng.normal(size=(5, 12))
    a2i = candidates_only(first, second, 6)
    got = with_feedback(a2i, units, 0.4)
    for q in range(5):
        cands = np.flatnonzero(np.isfinite(a2i[q]))
        assert len(cands) == 6 and np.isneginf(got[q, np.isinf(a2i[q])]).all()
        leads = cands[np.argsort(-a2i[q, cands])[:FEEDBACK_PLACES]]
        centre = units[leads].mean(axis=0)
        want = a2i[q, cands] + 0.4 * units[cands] @ (centre / np.linalg.norm(centre))
        np.testing.assert_allclose(got[q, cands], want, atol=1e-12)
    np.testing.assert_array_equal(with_feedback(a2i, units, 0.0), a2i)


def test_feedback_leads_are_the_first_places_not_the_first_tiles(world):
    """Grouped, a tile overlapping a better one is the same place, not another lead."""
    idx, model = world
    q = _query(world, audio=WAVE)
    cands, _ = _candidates(idx, q.vector, None, 30, True, page=40, need_footprints=True)
    scores, order, _, _ = _score(model, q, cands, True, False, 30, 10, {})
    ia = scores["score_ia"]
    units = np.stack([np.asarray(c.unit, dtype=np.float64) for c in cands])
    # an order whose second tile half-overlaps its first: one place, so not a lead
    fps = [c.footprint for c in cands]
    pair = next(g for g in group_places(fps, order, len(cands), 0.5) if len(g) > 1)[:2]
    mine = np.array(pair + [int(i) for i in order if int(i) not in pair])
    leads = [g[0] for g in group_places(fps, mine, FEEDBACK_PLACES, 0.5)]
    assert leads[0] == pair[0] and pair[1] not in leads and len(leads) == FEEDBACK_PLACES
    np.testing.assert_allclose(
        _feedback(cands, units, ia, mine, 0.4, 0.5), feedback_scores(units, ia, leads, 0.4)
    )
    plain = _feedback(cands, units, ia, mine, 0.4, None)  # without grouping: the first tiles
    np.testing.assert_allclose(plain, feedback_scores(units, ia, mine[:FEEDBACK_PLACES], 0.4))
    # the score stage adds it toward the first places of its own order and orders by it;
    # the IA column stays the IA score
    first = [g[0] for g in group_places(fps, order, FEEDBACK_PLACES, 0.5)]
    grouped = feedback_scores(units, ia, first, 0.4)
    fed, fed_order, _, _ = _score(model, q, cands, True, False, 30, 10, {}, feedback=(0.4, 0.5))
    np.testing.assert_allclose(fed["score"], grouped)
    np.testing.assert_allclose(fed["score_ia"], ia)
    assert list(fed_order) == list(np.argsort(-grouped, kind="stable"))
    assert q.description["feedback"] == 0.4


def test_search_serves_feedback_by_default_and_refuses_bad_weights(world):
    from rsia_geo import search
    from rsia_geo.errors import InvalidArgumentError

    idx, model = world
    served = search(WAVE, idx, model, sample_rate=16000, k=8, group=False)
    off = search(WAVE, idx, model, sample_rate=16000, k=8, group=False, feedback=0)
    assert served.attrs["query"]["feedback"] == DEFAULT_FEEDBACK
    assert "feedback" not in off.attrs["query"]
    np.testing.assert_allclose(off.score, off.score_ia)
    # the served scores: IA plus the weight times the cosine to the first three tiles' mean
    ids = list(dict.fromkeys([*off.tile_id[:FEEDBACK_PLACES], *served.tile_id]))
    got = idx.retrieve(ids, with_vectors=True)
    vec = {h.id: np.asarray(h.vector, dtype=np.float64) for h in got}
    centre = sum(vec[t] for t in off.tile_id[:FEEDBACK_PLACES])
    centre = centre / np.linalg.norm(centre)
    expected = served.score_ia + DEFAULT_FEEDBACK * served.tile_id.map(lambda t: vec[t] @ centre)
    np.testing.assert_allclose(served.score, expected, atol=1e-5)
    assert list(served.score) == sorted(served.score, reverse=True)
    for bad in (-1.0, float("nan"), "0.4", True):
        with pytest.raises(InvalidArgumentError, match=r"feedback=.* must be a number >= 0"):
            search(WAVE, idx, model, sample_rate=16000, k=8, feedback=bad)


def test_an_empty_search_says_why(world):
    """No hits: attrs["empty"] names the filter that leaves no tile, with what the index holds."""
    from shapely.geometry import Polygon, box

    from rsia_geo import search

    idx, model = world

    def run(**kw):
        return search(WAVE, idx, model, sample_rate=16000, k=5, **kw)

    found = run()
    assert len(found) and "empty" not in found.attrs
    minx, miny, maxx, maxy = idx.extent()["bbox"]
    away = run(bbox=(minx + 10, miny, maxx + 10, maxy))
    assert len(away) == 0
    why = away.attrs["empty"]
    assert why.startswith(f"no indexed tile lies in the region (the index's {idx.count()} tiles")
    assert f"lon {minx:.5f} to {maxx:.5f}, lat {miny:.5f} to {maxy:.5f}" in why
    assert why.endswith("widen the filter, or index imagery that matches")
    later = run(datetime="2031-01-01/..").attrs["empty"]
    assert later.startswith(
        "no indexed tile was acquired in 2031-01-01/.. (the tiles span 2020-01-01"
    )
    platform = run(platform="landsat-9").attrs["empty"]  # the sample raster names none
    assert platform.startswith(
        "no indexed tile is from platform landsat-9 (the index's tiles name no platform)"
    )
    # dates and platforms given as Python values read as the user would write them
    import datetime as dt

    pair = run(datetime=(dt.datetime(2031, 1, 1, tzinfo=dt.UTC), None)).attrs["empty"]
    assert pair.startswith("no indexed tile was acquired in 2031-01-01T00:00:00Z/.. (")
    names = run(platform=["landsat-9", "sentinel-2a"]).attrs["empty"]
    assert names.startswith("no indexed tile is from platform landsat-9, sentinel-2a (")
    both = run(bbox=(minx + 10, miny, maxx + 10, maxy), datetime="2031").attrs["empty"]
    assert both.count("no indexed tile") == 2 and "widen these filters" in both
    # a ring around the imagery: its bounding box holds tiles, its outline overlaps none
    outer = box(minx - 0.05, miny - 0.05, maxx + 0.05, maxy + 0.05)
    hole = box(minx - 0.01, miny - 0.01, maxx + 0.01, maxy + 0.01)
    ring = Polygon(outer.exterior.coords, [hole.exterior.coords])
    around = run(geometry=ring)
    assert len(around) == 0 and "overlaps the region's outline" in around.attrs["empty"]
    # every tile marked not relevant: the marks leave nothing
    ids = [h.id for h in idx.scroll(None, limit=10_000)]
    marked = run(not_relevant=ids)
    assert len(marked) == 0 and "marked not relevant" in marked.attrs["empty"]


def test_group_and_rows_stages(world):
    idx, model = world
    q = _query(world, audio=WAVE)
    cands, _ = _candidates(idx, q.vector, None, 40, True, page=50, need_footprints=True)
    scores, order, rank_cos, rank_ia = _score(model, q, cands, True, False, 30, 5, {})
    groups = group_places([c.footprint for c in cands], order, 5, 0.5)
    assert len(groups) == 5 and [g[0] for g in groups] == sorted(
        [g[0] for g in groups], key=lambda i: list(order).index(i)
    )
    # a group holds the tiles sharing at least half of the smaller footprint with its leader
    for g in groups:
        lead = cands[g[0]].footprint
        for j in g[1:]:
            fp = cands[j].footprint
            assert fp.intersection(lead).area >= 0.5 * min(fp.area, lead.area) - 1e-12
    payloads = {h.id: h.payload for h in idx.retrieve([cands[g[0]].id for g in groups])}
    rows = _hit_rows(cands, groups, payloads, scores, rank_cos, rank_ia)
    frame = _hits_frame(rows)
    assert list(frame["rank"]) == [1, 2, 3, 4, 5] and frame.crs.to_epsg() == 4326
    assert set(HIT_COLUMNS) <= set(frame.columns)
    assert list(frame.group_size) == [len(g) for g in groups]
    empty = _hits_frame([])
    assert len(empty) == 0 and set(HIT_COLUMNS) <= set(empty.columns)


def test_group_overlap_sets_how_much_ground_two_places_share(world):
    from rsia_geo import search
    from rsia_geo.errors import InvalidArgumentError

    idx, model = world
    n = idx.count()

    def most_shared(hits):
        fps = list(hits.geometry)
        return max(
            a.intersection(b).area / min(a.area, b.area)
            for i, a in enumerate(fps)
            for b in fps[i + 1 :]
        )

    # k = every tile: every place of the index, every tile in one of them
    half = search(WAVE, idx, model, sample_rate=16000, k=n, group_overlap=0.5)
    quarter = search(WAVE, idx, model, sample_rate=16000, k=n)  # the default: distinct places
    assert half.group_size.sum() == quarter.group_size.sum() == n
    # at 0.5 diagonal neighbours (a quarter shared) stay places of their own; at 0.25 they merge
    assert most_shared(half) >= 0.25 * (1 - 1e-6)
    assert most_shared(quarter) < 0.25
    assert len(quarter) < len(half)
    assert half.attrs["filters"]["group_overlap"] == 0.5
    assert quarter.attrs["filters"]["group_overlap"] == 0.25
    for bad in (0.0, 1.5, float("nan"), "0.5", True):
        with pytest.raises(InvalidArgumentError, match=r"group_overlap=.* must be in \(0, 1\]"):
            search(WAVE, idx, model, sample_rate=16000, group_overlap=bad)


def test_jupyter_panel_asks_for_distinct_places(world):
    pytest.importorskip("ipyleaflet")
    from rsia_geo import search
    from rsia_geo.jupyter import SearchPanel
    from rsia_geo.pipeline import DISTINCT_PLACES

    idx, model = world
    tid = next(iter(idx.scroll(None, limit=1))).id
    panel = SearchPanel(idx, model, thumbnails=False)
    panel.k.value = 12
    assert panel.group.value and panel.distinct.value  # distinct places, the default
    distinct = panel.more_like(tid)
    panel.distinct.value = False
    served = panel.more_like(tid)
    for hits, overlap in ((served, 0.5), (distinct, DISTINCT_PLACES)):
        want = search(example=tid, index=idx, model=model, k=12, group_overlap=overlap)
        assert list(hits.tile_id) == list(want.tile_id)
    assert list(served.tile_id) != list(distinct.tile_id)
    panel.group.value = False  # one hit per tile: nothing to keep distinct
    assert panel.distinct.disabled
    panel.group.value = True
    assert not panel.distinct.disabled


def test_the_qgis_plugins_distinct_places_are_the_librarys():
    """The plugin imports no rsia_geo, so it keeps its own copy of the value: read it."""
    import ast
    from pathlib import Path

    from rsia_geo.pipeline import DISTINCT_PLACES

    source = Path(__file__).parents[1] / "plugins" / "qgis_rsia" / "plugin.py"
    values = [
        ast.literal_eval(node.value)
        for node in ast.parse(source.read_text()).body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "DISTINCT_PLACES" for t in node.targets)
    ]
    assert values == [DISTINCT_PLACES]


def _first_matching_group(footprints, order, k, min_overlap):
    """group_places's definition, one exact intersection per pair (the reference)."""
    groups = []
    for i in order:
        fp = footprints[i]
        for g in groups:
            lead = footprints[g[0]]
            need = min_overlap * (1 - PLACE_TOLERANCE) * max(min(fp.area, lead.area), 1e-30)
            if fp.intersection(lead).area >= need:
                g.append(int(i))
                break
        else:
            groups.append([int(i)])
    return groups[:k]


@pytest.mark.parametrize("min_overlap", [0.25, 0.5, 1.0])
def test_group_places_matches_its_definition(min_overlap):
    from shapely import affinity
    from shapely.geometry import box

    rng = np.random.default_rng(7)
    # half-overlapping tiles at two levels (shared areas exactly at the 0.5 threshold), and
    # rotated, scaled quadrilaterals whose boxes overlap more than the shapes do
    grid = [box(x, y, x + 1, y + 1) for x in np.arange(0, 4, 0.5) for y in np.arange(0, 4, 0.5)]
    grid += [box(x, y, x + 2, y + 2) for x in range(0, 4) for y in range(0, 4)]
    skew = [
        affinity.rotate(box(x, y, x + s, y + s), a, origin="centroid")
        for x, y, s, a in zip(
            rng.uniform(0, 4, 80), rng.uniform(0, 4, 80), rng.uniform(0.3, 2, 80),
            rng.uniform(0, 90, 80), strict=True,
        )
    ]  # fmt: skip
    for fps in (grid, skew, grid + skew):
        order = rng.permutation(len(fps))
        assert group_places(fps, order, 1000, min_overlap) == _first_matching_group(
            fps, order, 1000, min_overlap
        )
        assert group_places(fps, order, 3, min_overlap) == _first_matching_group(
            fps, order, 3, min_overlap
        )
    assert group_places([], [], 5) == []


def test_half_overlapping_neighbours_in_lon_lat_are_one_place():
    """Tiles sharing exactly half their area in UTM share 0.5 +- a few ppm once in lon/lat."""
    from pyproj import Transformer
    from shapely.geometry import Polygon

    to_ll = Transformer.from_crs(32611, 4326, always_xy=True)
    x0, y0, size = 480_000.0, 3_760_000.0, 75.0

    def footprint(x, y):  # four corners reprojected, as tiles record them
        xs, ys = to_ll.transform([x, x + size, x + size, x], [y, y, y + size, y + size])
        return Polygon(zip(xs, ys, strict=True))

    fps = [footprint(x0 + i * size / 2, y0 + j * size / 2) for i in range(8) for j in range(8)]
    lead = np.asarray(fps, dtype=object)
    shares, smaller = shared_area(lead, fps[0])
    neighbours = [1, 8]  # half a tile up, half a tile right
    assert np.allclose(shares[neighbours] / smaller[neighbours], 0.5, atol=1e-4)
    assert one_place(shares, smaller, 0.5)[neighbours].all()
    # every tile is one place with each half-overlapping neighbour, whatever the rounding
    for i in range(len(fps)):
        shared, small = shared_area(lead, fps[i])
        ratio = shared / small
        near = np.abs(ratio - 0.5) < 1e-3
        assert near.sum() >= 2 and one_place(shared, small, 0.5)[near].all()
    # walking them best first, a tile joins its half-overlapping neighbour's group
    groups = group_places(fps, np.arange(len(fps)), 1000, 0.5)
    assert groups == _first_matching_group(fps, np.arange(len(fps)), 1000, 0.5)
    assert groups[0][:3] == [0, 1, 8]


@pytest.mark.requires_programs("espeak-ng")
def test_text_route_is_fused_in_both_stages(world, tmp_path, tiny_checkpoint):
    import shutil

    from rsia_geo.errors import InvalidArgumentError
    from rsia_geo.models.text import TextConfig, TextEncoder, save_text_encoder
    from rsia_geo.weights import text_encoder

    idx, plain = world
    with pytest.raises(InvalidArgumentError, match="train-text"):  # no text route shipped
        _query(world, text="boats in a harbour", text_weight=1.0)
    ckpt = tmp_path / "with_text"
    shutil.copytree(tiny_checkpoint, ckpt)
    torch.manual_seed(0)
    sha = plain.checkpoint_meta["weights_sha256"]
    enc = TextEncoder(TextConfig(embed_dim=plain.config.embed_dim))
    save_text_encoder(enc, ckpt, image_sha256=sha, summary={}, default_weight=0.5)
    model = load_model(ckpt)
    assert text_encoder(model) is not None
    args = dict(audio=None, sample_rate=16000, example=None, relevant=None, not_relevant=None,
                refine_method="rocchio", group_overlap=0.5)  # fmt: skip
    said = "many boats docked at the harbour"
    q = _make_query(model, idx, {}, text=said, **args)
    t = enc.encode([said])[0].numpy()
    unit_a = q.audio_raw / np.linalg.norm(q.audio_raw)
    np.testing.assert_allclose(q.vector, unit_a + 0.5 * t, atol=1e-5)  # the checkpoint's weight
    assert q.description["text_weight"] == 0.5
    off = _make_query(model, idx, {}, text=said, text_weight=0, **args)
    np.testing.assert_allclose(off.vector, off.audio_raw)  # the audio route alone
    cands, _ = _candidates(idx, q.vector, None, 20, True, page=24)
    fused, _, _, _ = _score(model, q, cands, True, False, 30, 10, {})
    alone, _, _, _ = _score(model, off, cands, True, False, 30, 10, {})
    units = np.stack([c.unit for c in cands])
    np.testing.assert_allclose(fused["score_ia"], alone["score_ia"] + 0.5 * units @ t, atol=1e-5)
    for bad in (-1.0, float("nan"), "1", True):
        with pytest.raises(InvalidArgumentError, match="text_weight"):
            _make_query(model, idx, {}, text=said, text_weight=bad, **args)
    assert q.description["text_route"] == "hashed"


@pytest.mark.requires_programs("espeak-ng")
def test_typed_text_consults_the_caption_bank(world, tmp_path, tiny_checkpoint):
    """An ensemble route with a bank: typed text is embedded with all three members."""
    import shutil

    from rsia_geo.models.text import (
        CaptionBankTextEncoder,
        EnsembleTextEncoder,
        PretrainedTextEncoder,
        TextConfig,
        TextEncoder,
        save_text_encoder,
    )

    idx, plain = world
    ckpt = tmp_path / "with_bank"
    shutil.copytree(tiny_checkpoint, ckpt)
    torch.manual_seed(0)
    d = plain.config.embed_dim
    pretrained = PretrainedTextEncoder(TextConfig(embed_dim=d, kind="pretrained", hidden=16))
    bank = CaptionBankTextEncoder.build(
        [["Many boats are docked at the harbour ."], ["A dense forest ."]], torch.randn(2, d),
        TextConfig(embed_dim=d), pretrained.sentence,
    )  # fmt: skip
    ens = EnsembleTextEncoder(TextEncoder(TextConfig(embed_dim=d)), pretrained, bank).eval()
    save_text_encoder(ens, ckpt, image_sha256=plain.checkpoint_meta["weights_sha256"], summary={})
    model = load_model(ckpt)
    args = dict(audio=None, sample_rate=16000, example=None, relevant=None, not_relevant=None,
                refine_method="rocchio", group_overlap=0.5)  # fmt: skip
    said = "boats in a marina"
    q = _make_query(model, idx, {}, text=said, **args)
    assert q.description["text_route"] == "hashed+pretrained+bank"
    unit_a = q.audio_raw / np.linalg.norm(q.audio_raw)
    typed = ens.encode([said])[0].numpy()
    np.testing.assert_allclose(q.vector, unit_a + typed, atol=1e-5)
    heard = ens.encode([said], heard=True)[0].numpy()
    assert not np.allclose(typed, heard, atol=1e-3)  # the bank moved the typed query
    assert ens.members(heard=True) == ("hashed", "pretrained")
