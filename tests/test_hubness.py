"""Hubness-corrected rescoring (CSLS): stored per tile at indexing, subtracted at search."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo import TileIndex, build_catalog, build_index, search  # noqa: E402
from rsia_geo.errors import InvalidArgumentError  # noqa: E402
from rsia_geo.models import load_checkpoint, save_checkpoint  # noqa: E402
from rsia_geo.rerank import HUB_BETA, hubness  # noqa: E402
from rsia_geo.tiles import TileSpec  # noqa: E402
from rsia_geo.weights import hub_bank, tile_hubness  # noqa: E402

SR = 16000


def _clip(seed: int = 0) -> bytes:
    """A 1.2 s WAV of three tones (each seed its own), as bytes."""
    import io

    import soundfile as sf

    t = np.arange(int(1.2 * SR)) / SR
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 1200, 3))
    buf = io.BytesIO()
    sf.write(buf, (0.2 * tone * np.hanning(len(t))).astype(np.float32), SR, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def banked(banked_index):
    """The shared tiny checkpoint with a bank, its aerial index, and the catalog."""
    root, ckpt = banked_index
    return root, ckpt, root / "cat" / "catalog.json"


def test_hubness_is_the_mean_of_the_nearest_reference_queries():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(7, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    got = hubness(images, bank, k=10)
    brute = np.sort(images @ bank.T, axis=1)[:, -10:].mean(axis=1)
    np.testing.assert_allclose(got, brute, rtol=1e-5)
    np.testing.assert_allclose(hubness(images, bank[::-1], k=10), got, rtol=1e-5)  # any order
    assert hubness(images, bank[:4], k=10).shape == (7,)  # k capped by the bank
    with pytest.raises(InvalidArgumentError, match=r"must be \(n, d\) and \(m, d\)"):
        hubness(images, bank[:, :8])


def test_an_index_stores_each_tiles_hubness_against_the_models_bank(banked):
    root, ckpt, _ = banked
    model = load_checkpoint(ckpt)
    unit_bank, sha = hub_bank(model)
    assert unit_bank.shape == (64, 64) and len(sha) == 12
    with TileIndex(root / "idx", create=False) as idx:
        assert idx.hub_bank == sha and idx.meta["hub"] == {"bank": sha, "k": 10}
        ids = [h.id for h in idx.query(np.ones(64), limit=100)]
        hits = idx.retrieve(ids, with_vectors=True)
    assert len(hits) == 16
    raw = np.stack([np.asarray(h.vector) * h.payload["raw_norm"] for h in hits])
    stored = np.array([h.payload["hub"] for h in hits])
    np.testing.assert_allclose(stored, tile_hubness(model, raw), atol=1e-5)
    assert stored.std() > 0  # tiles differ in how close they lie to the bank


def test_search_subtracts_half_the_hubness_and_reorders(banked):
    root, ckpt, _ = banked
    model = load_checkpoint(ckpt)
    with TileIndex(root / "idx", create=False) as idx:
        hubs = {
            h.id: h.payload["hub"]
            for h in idx.retrieve([h.id for h in idx.query(np.ones(64), limit=100)])
        }
        # feedback off: the scores are the IA scores less the hubness alone
        served = search(_clip(), idx, model, k=16, group=False, hubness=HUB_BETA, feedback=0)
        plain = search(_clip(), idx, model, k=16, group=False, feedback=0)  # hubness off
    q = served.attrs["query"]
    assert q["hubness"] == HUB_BETA and q["hubness_from"] == "index"
    assert "hubness" not in plain.attrs["query"]
    expected = served.score_ia - HUB_BETA * served.tile_id.map(hubs)
    np.testing.assert_allclose(served.score, expected, atol=1e-6)
    assert list(served.score) == sorted(served.score, reverse=True)
    # the IA scores are the same; the order follows them less the hubness
    by_id = dict(zip(plain.tile_id, plain.score_ia, strict=True))
    np.testing.assert_allclose(served.score_ia, served.tile_id.map(by_id), atol=1e-6)
    order_plain = list(plain.tile_id)
    order_hub = sorted(order_plain, key=lambda t: -(by_id[t] - HUB_BETA * hubs[t]))
    assert list(served.tile_id) == order_hub
    assert order_hub != order_plain  # the random bank moves some tiles


def test_an_index_without_stored_hubness_gets_the_same_hits(banked, monkeypatch):
    """Made before hubness was stored: computed for the candidates, same hits and scores."""
    import rsia_geo.pipeline as pipeline

    root, ckpt, cat = banked
    monkeypatch.setattr(pipeline, "_hub_of", lambda idx, mdl: lambda vecs: None)
    build_index(cat, root / "old", ckpt, spec=TileSpec(size=256), progress=False)
    monkeypatch.undo()
    model = load_checkpoint(ckpt)
    with TileIndex(root / "old", create=False) as old, TileIndex(root / "idx", create=False) as new:
        assert all("hub" not in h.payload for h in old.query(np.ones(64), limit=100))
        a = search(_clip(1), old, model, k=8, hubness=HUB_BETA)
        b = search(_clip(1), new, model, k=8, hubness=HUB_BETA)
    assert a.attrs["query"]["hubness_from"] == "computed"
    assert b.attrs["query"]["hubness_from"] == "index"
    assert list(a.tile_id) == list(b.tile_id)
    np.testing.assert_allclose(a.score, b.score, atol=1e-5)


def test_another_bank_is_computed_not_mixed(banked, tmp_path):
    """A checkpoint with the same image side but another bank: its own hubness, computed."""
    root, ckpt, cat = banked
    other = tmp_path / "other"
    shutil.copytree(ckpt, other)
    model = load_checkpoint(ckpt)
    torch.manual_seed(5)
    save_checkpoint(model, other, audio_bank=torch.randn(40, 64))
    model2 = load_checkpoint(other)
    assert hub_bank(model2)[1] != hub_bank(model)[1]
    with TileIndex(root / "idx", create=False) as idx:
        hits = search(_clip(2), idx, model2, k=8, group=False, hubness=HUB_BETA, feedback=0)
        hubs = {h.id: h for h in idx.retrieve(list(hits.tile_id), with_vectors=True)}
    assert hits.attrs["query"]["hubness_from"] == "computed"
    raw = np.stack([np.asarray(hubs[t].vector) * hubs[t].payload["raw_norm"] for t in hits.tile_id])
    expected = hits.score_ia.to_numpy() - HUB_BETA * tile_hubness(model2, raw)
    np.testing.assert_allclose(hits.score, expected, atol=1e-5)
    # resuming the index with that checkpoint keeps the index's bank and stores no hubness
    build_index(cat, root / "idx", other, spec=TileSpec(size=256), progress=False)
    with TileIndex(root / "idx", create=False) as idx:
        assert idx.hub_bank == hub_bank(model)[1]


def test_bad_hubness_and_a_model_without_a_bank(banked, tiny_checkpoint, samples, tmp_path):
    root, ckpt, _ = banked
    with TileIndex(root / "idx", create=False) as idx:
        for bad in (-0.1, float("nan"), float("inf"), "0.5", True):
            with pytest.raises(InvalidArgumentError, match=r"hubness=.* must be a number >= 0"):
                search(_clip(), idx, ckpt, hubness=bad)
    cat = build_catalog(
        [samples / "aerial"], tmp_path / "cat", default_datetime=dt.datetime(2020, 1, 1)
    )
    build_index(cat, tmp_path / "idx", tiny_checkpoint, spec=TileSpec(size=256), progress=False)
    with TileIndex(tmp_path / "idx", create=False) as idx:
        assert idx.hub_bank is None
        hits = search(_clip(), idx, tiny_checkpoint, k=4, hubness=0)  # off: fine without a bank
        assert "hubness" not in hits.attrs["query"]
        with pytest.raises(InvalidArgumentError, match="needs the checkpoint's audio_bank"):
            search(_clip(), idx, tiny_checkpoint, hubness=0.5)
