"""Quantized indexes (int8, binary) on the embedded engine: compressed scan, exact rescoring."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import numpy as np
import pytest

from rsia_geo import TileSpec
from rsia_geo.errors import VectorIndexError
from rsia_geo.index import TileIndex
from rsia_geo.tiles import iter_tiles

pytest.importorskip("qdrant_edge")

DIM = 64
WHEN = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
SIG = {
    "model_id": "synthetic",
    "version": "1",
    "embed_dim": DIM,
    "backbone": "none",
    "input_size": 128,
    "in_chans": 3,
    "frontend": "none",
    "weights_sha256": None,
}


@pytest.fixture(scope="module")
def points(tmp_path_factory, samples):
    """3,000 tiles (copies of the aerial sample's, new ids) with clustered unit vectors."""
    from rsia_geo.catalog import build_catalog

    cat = build_catalog([samples / "aerial"], tmp_path_factory.mktemp("cat"), default_datetime=WHEN)
    base = list(iter_tiles(cat, TileSpec(size=256)))
    tiles = [
        dataclasses.replace(base[i % len(base)], id=str(uuid.UUID(int=i + 1))) for i in range(3000)
    ]
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, DIM))
    v = centres[rng.integers(0, 30, len(tiles))] + 0.7 * rng.standard_normal((len(tiles), DIM))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    queries = v[rng.integers(0, len(tiles), 20)] + 0.3 * rng.standard_normal((20, DIM))
    return tiles, v, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def _build(path, tiles, vectors, **kw) -> TileIndex:
    idx = TileIndex(path, **kw)
    idx.bind_model(SIG)
    for i in range(0, len(tiles), 1000):
        idx.add(tiles[i : i + 1000], vectors[i : i + 1000] * 3.0)  # raw norms are kept
    return idx


def _recall(idx: TileIndex, tiles, vectors, queries) -> float:
    """Mean recall@10 against exact search; every returned score must be the exact cosine."""
    ids = [t.id for t in tiles]
    recalls = []
    for q in queries:
        exact = vectors @ q
        hits = idx.query(q, limit=10)
        assert len(hits) == 10
        # rescored: the scores are the original vectors' cosines, not the compressed ones'
        for h in hits:
            assert h.score == pytest.approx(exact[ids.index(h.id)], abs=2e-3)
        top = {ids[i] for i in np.argsort(-exact)[:10]}
        recalls.append(len(top & {h.id for h in hits}) / 10)
    return float(np.mean(recalls))


# binary codes of 64 dimensions are coarse (Qdrant advises binary for 1,000+ dimensions): the
# rescoring has to find the neighbours among more candidates
@pytest.mark.parametrize("kind,least", [("int8", 0.9), ("binary", 0.75)])
def test_quantized_index_scans_compressed_vectors_and_rescores_exactly(
    tmp_path, points, kind, least
):
    tiles, vectors, queries = points
    with _build(tmp_path / kind, tiles, vectors, quantization=kind, oversampling=20) as idx:
        assert idx.optimize() is True
        built = [p.name for p in (tmp_path / kind).rglob("quantized*")]
        assert built, f"no quantized vectors were written for {kind}"
        assert idx.meta["storage"]["quantization"] == kind
        wide = _recall(idx, tiles, vectors, queries)
    assert wide >= least, (kind, wide)
    with TileIndex(tmp_path / kind, oversampling=1) as idx:
        narrow = _recall(idx, tiles, vectors, queries)
    # the compressed scan is what ranks: fewer candidates to rescore, fewer true neighbours
    assert narrow < wide or narrow == wide == 1.0, (kind, narrow, wide)


def test_a_plain_index_has_nothing_to_optimize(tmp_path, points):
    tiles, vectors, _ = points
    with _build(tmp_path / "plain", tiles[:200], vectors[:200]) as idx:
        assert idx.optimize() is False
        assert idx.meta["storage"] == {"quantization": None, "hnsw": False}
    assert not list((tmp_path / "plain").rglob("quantized*"))


def test_quantization_is_fixed_when_the_index_is_made(tmp_path, points):
    tiles, vectors, queries = points
    path = tmp_path / "q"
    _build(path, tiles[:500], vectors[:500], quantization="int8").close()
    with pytest.raises(VectorIndexError, match=r"made with quantization='int8', not 'binary'"):
        TileIndex(path, quantization="binary")
    with TileIndex(path, create=False) as idx:  # opened as made: searched with rescoring
        assert idx.backend.quantization == "int8"
        assert len(idx.query(queries[0], limit=5)) == 5
    plain = tmp_path / "plain"
    _build(plain, tiles[:50], vectors[:50]).close()
    with pytest.raises(VectorIndexError, match=r"made with quantization=None, not 'int8'"):
        TileIndex(plain, quantization="int8")


def test_bad_quantization_settings_name_the_value(tmp_path):
    with pytest.raises(VectorIndexError, match=r"quantization='int4'.*'int8'.*'binary'"):
        TileIndex(tmp_path / "a", quantization="int4")
    with pytest.raises(VectorIndexError, match=r"oversampling=0\.5 must be >= 1"):
        TileIndex(tmp_path / "b", quantization="int8", oversampling=0.5)
    assert not (tmp_path / "a" / "rsia_index.json").exists()


def test_cli_index_with_quantization_and_search_finds_the_same_tiles(tmp_path, samples, capsys):
    """`rsia-geo index --quantization int8` then a search: same hits as the float index."""
    torch = pytest.importorskip("torch")
    from rsia_geo.catalog import build_catalog
    from rsia_geo.cli import main
    from rsia_geo.models import build_model, get_config, save_checkpoint
    from rsia_geo.pipeline import search

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(get_config("alac-tiny"), pretrained=False), tmp_path / "m")
    build_catalog([samples / "aerial"], tmp_path / "c", default_datetime=WHEN)
    common = ["--checkpoint", str(ckpt), "--units", "px", "--size", "128", "--no-progress"]
    for name, extra in (("float", []), ("int8", ["--quantization", "int8"])):
        rc = main(
            [
                "index",
                str(tmp_path / "c" / "catalog.json"),
                "--location",
                str(tmp_path / name),
                *common,
                *extra,
            ]
        )
        assert rc == 0
    assert list((tmp_path / "int8").rglob("quantized*"))
    wav = samples / "queries" / "an_airplane_parked_at_the_airport.wav"
    found = {}
    for name in ("float", "int8"):
        hits = search(wav, tmp_path / name, ckpt, k=5, group=False, transcribe=False)
        found[name] = list(hits["tile_id"])
    assert found["int8"] == found["float"]
