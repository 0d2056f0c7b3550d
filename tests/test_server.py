"""The Qdrant server path, against a real server when one is configured.

Set ``RSIA_QDRANT_URL`` (and ``RSIA_QDRANT_API_KEY`` if it needs one) to run these; without
it they are reported as skipped (not run), never as passed. They check that the server path
is congruent with the embedded engine: the same tiles, the same hits in the same order, the
same region semantics, and that shards and quantization options reach the collection.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rsia_geo import TileSpec  # noqa: E402
from rsia_geo.index import TileIndex  # noqa: E402
from rsia_geo.pipeline import build_index, search  # noqa: E402

URL = os.environ.get("RSIA_QDRANT_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="no Qdrant server configured (set RSIA_QDRANT_URL to run the server tests)"
)
WAVE = np.sin(np.linspace(0, 300, 32000)).astype(np.float32)


@pytest.fixture()
def collection():
    name = f"rsia_test_{uuid.uuid4().hex[:8]}"
    yield name
    idx = TileIndex(url=URL, api_key=os.environ.get("RSIA_QDRANT_API_KEY"), collection=name)
    try:
        idx.backend.drop()
    finally:
        idx.close()


def test_server_matches_the_embedded_engine(tmp_path, aerial_catalog, tiny_checkpoint, collection):
    spec = TileSpec(size=256)
    build_index(aerial_catalog, tmp_path / "edge", tiny_checkpoint, spec=spec, progress=False)
    with TileIndex(
        url=URL, api_key=os.environ.get("RSIA_QDRANT_API_KEY"), collection=collection,
        shard_number=2, quantization="int8",
    ) as server:  # fmt: skip
        build_index(aerial_catalog, server, tiny_checkpoint, spec=spec, progress=False)
        assert server.count() == 16
        info = server.backend.client.get_collection(collection)
        assert info.config.params.shard_number == 2
        assert info.config.quantization_config is not None
        a = search(WAVE, tmp_path / "edge", tiny_checkpoint, sample_rate=16000, k=8, group=False)
        b = search(WAVE, server, tiny_checkpoint, sample_rate=16000, k=8, group=False)
        assert list(a.tile_id) == list(b.tile_id)
        np.testing.assert_allclose(a.score, b.score, atol=1e-4)
        bbox = tuple(a.iloc[0].geometry.bounds)
        ra = search(WAVE, tmp_path / "edge", tiny_checkpoint, sample_rate=16000, bbox=bbox)
        rb = search(WAVE, server, tiny_checkpoint, sample_rate=16000, bbox=bbox)
        assert set(ra.tile_id) == set(rb.tile_id)


def test_dask_workers_upsert_into_the_server(tmp_path, aerial_catalog, tiny_checkpoint, collection):
    distributed = pytest.importorskip("distributed")
    spec = TileSpec(size=128, overlap=64, out_size=64)
    one = build_index(aerial_catalog, tmp_path / "one", tiny_checkpoint, spec=spec, progress=False)
    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    client = distributed.Client(local)
    key = os.environ.get("RSIA_QDRANT_API_KEY")
    try:
        with TileIndex(url=URL, api_key=key, collection=collection) as server:
            rep = build_index(
                aerial_catalog, server, tiny_checkpoint, spec=spec, progress=False,
                batch_size=8, cluster=client,
            )  # fmt: skip
            assert rep.indexed == one.indexed and server.count() == one.indexed
            with TileIndex(tmp_path / "one", create=False) as edge:
                assert server.extent() == edge.extent()
                assert server.centre_margin() == pytest.approx(edge.centre_margin())
                a = {h.id: np.asarray(h.vector) for h in edge.scroll(None, with_vectors=True)}
            b = {h.id: np.asarray(h.vector) for h in server.scroll(None, with_vectors=True)}
            assert set(a) == set(b)
            for tid in a:
                np.testing.assert_allclose(a[tid], b[tid], atol=1e-5)
    finally:
        client.close()
        local.close()
