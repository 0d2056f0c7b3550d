"""Ingest on a real Dask LocalCluster of worker processes (``rsia_geo.cluster``).

The same catalog is indexed in one process and on two worker processes: the same tile ids and
the same vectors; a worker killed mid-job and the job still stores every tile exactly once.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")

from rsia_geo import TileSpec  # noqa: E402
from rsia_geo.cluster import _KeptEnviron  # noqa: E402
from rsia_geo.errors import InvalidArgumentError  # noqa: E402
from rsia_geo.index import TileIndex  # noqa: E402
from rsia_geo.pipeline import build_index  # noqa: E402

# 128 px tiles overlapping by half on the 1024 px aerial COG: a couple of hundred tiles, so
# the job lasts long enough to lose a worker in the middle
SPEC = TileSpec(size=128, overlap=64, out_size=64)


NANNY_ENVIRON = (
    "MALLOC_TRIM_THRESHOLD_", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _environ_as_it_was():
    """This module's own LocalClusters set their nannies' variables in the test process."""
    kept = _KeptEnviron()
    yield
    kept.close()


@pytest.fixture(scope="module")
def cluster():
    local = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(local)
    yield client
    client.close()
    local.close()


def _vectors(path):
    with TileIndex(path, create=False) as idx:
        hits = idx.scroll(None, with_vectors=True)
    return {h.id: np.asarray(h.vector) for h in hits}


def test_same_ids_and_vectors_as_one_process(tmp_path, aerial_catalog, tiny_checkpoint, cluster):
    one = build_index(aerial_catalog, tmp_path / "one", tiny_checkpoint, spec=SPEC, progress=False)
    two = build_index(
        aerial_catalog, tmp_path / "two", tiny_checkpoint, spec=SPEC, progress=False,
        batch_size=8, cluster=cluster,
    )  # fmt: skip
    assert one.indexed == two.indexed > 150 and not two.failed
    a, b = _vectors(tmp_path / "one"), _vectors(tmp_path / "two")
    assert set(a) == set(b)
    for tid in a:
        np.testing.assert_allclose(a[tid], b[tid], atol=1e-5)
    # both workers did part of the work
    assert len(cluster.scheduler_info()["workers"]) == 2
    # a re-run on the cluster stores nothing twice
    again = build_index(
        aerial_catalog, tmp_path / "two", tiny_checkpoint, spec=SPEC, progress=False,
        cluster=cluster,
    )  # fmt: skip
    assert again.indexed == 0 and again.already_present == one.indexed


def test_a_worker_killed_mid_job_loses_nothing(tmp_path, aerial_catalog, tiny_checkpoint):
    local = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(local)
    try:
        report: dict = {}

        def job():
            report["r"] = build_index(
                aerial_catalog, tmp_path / "idx", tiny_checkpoint, spec=SPEC, progress=False,
                batch_size=4, cluster=client,
            )  # fmt: skip

        t = threading.Thread(target=job)
        t.start()
        # wait until work is under way on both workers, then kill one of them outright
        t0 = time.time()
        while time.time() - t0 < 60:
            busy = client.processing()
            if sum(len(v) for v in busy.values()) >= 2 and all(busy.values()):
                break
            time.sleep(0.05)
        pids = client.run(os.getpid)  # worker address -> process id
        victim = next(a for a, v in client.processing().items() if v)
        os.kill(pids[victim], signal.SIGKILL)  # kill -9: no goodbye to the scheduler
        t.join(timeout=300)
        assert not t.is_alive()
        assert pids[victim] not in client.run(os.getpid).values()  # it died (and was replaced)
        r = report["r"]
        with TileIndex(tmp_path / "idx", create=False) as idx:
            stored = idx.count()
        # every tile once: the count equals a one-process run's
        one = build_index(
            aerial_catalog, tmp_path / "one", tiny_checkpoint, spec=SPEC, progress=False
        )
        assert stored == one.indexed and r.indexed + r.already_present >= stored
        assert not r.failed
    finally:
        client.close()
        local.close()


def test_bad_cluster_arguments(tmp_path, aerial_catalog, tiny_checkpoint):
    with pytest.raises(InvalidArgumentError, match="cluster="):
        build_index(aerial_catalog, tmp_path / "i", tiny_checkpoint, cluster=2.5)
    with pytest.raises(InvalidArgumentError, match="at least 1 worker"):
        build_index(aerial_catalog, tmp_path / "i", tiny_checkpoint, cluster=0)
    with pytest.raises(InvalidArgumentError, match="cannot reach the Dask scheduler"):
        build_index(aerial_catalog, tmp_path / "i", tiny_checkpoint, cluster="tcp://127.0.0.1:1")


def test_local_workers_leave_this_processes_environment_as_it_was(
    tmp_path, aerial_catalog, tiny_checkpoint, monkeypatch
):
    for key in NANNY_ENVIRON:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "2")  # a user's own setting
    report = build_index(
        aerial_catalog, tmp_path / "idx", tiny_checkpoint, progress=False, cluster=1,
        spec=TileSpec(size=512, overlap=0, out_size=64),
    )  # fmt: skip
    assert report.indexed > 0
    # the nannies set OMP_NUM_THREADS=1 (and the rest) here to spawn the workers: put back
    assert {k: os.environ.get(k) for k in NANNY_ENVIRON} == {
        **dict.fromkeys(NANNY_ENVIRON),
        "MKL_NUM_THREADS": "2",
    }


def test_cli_index_on_local_dask_workers(tmp_path, aerial_catalog, tiny_checkpoint, capsys):
    from rsia_geo.cli import main

    cat = aerial_catalog.get_self_href()
    rc = main(
        ["index", cat, "--location", str(tmp_path / "idx"), "--checkpoint", str(tiny_checkpoint),
         "--size", "256", "--overlap", "0", "--units", "px", "--scales", "1",
         "--dask-workers", "2", "--no-progress"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    with TileIndex(tmp_path / "idx", create=False) as idx:
        assert idx.count() == 16


def test_device_choice_on_this_machine(tmp_path, aerial_catalog, tiny_checkpoint):
    from rsia_geo.pipeline import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == resolve_device(None) == expected
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(InvalidArgumentError, match="device='tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="no CUDA GPU here; use device='cpu'"):
            build_index(aerial_catalog, tmp_path / "g", tiny_checkpoint, device="cuda")
    with pytest.raises(InvalidArgumentError, match="batch_size=0"):
        build_index(aerial_catalog, tmp_path / "g", tiny_checkpoint, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
def test_gpu_encoding_matches_cpu(tmp_path, aerial_catalog, tiny_checkpoint):
    cpu = build_index(aerial_catalog, tmp_path / "cpu", tiny_checkpoint, device="cpu",
                      spec=SPEC, progress=False)  # fmt: skip
    gpu = build_index(aerial_catalog, tmp_path / "gpu", tiny_checkpoint, device="cuda",
                      spec=SPEC, progress=False)  # fmt: skip
    assert cpu.indexed == gpu.indexed
    a, b = _vectors(tmp_path / "cpu"), _vectors(tmp_path / "gpu")
    assert set(a) == set(b)
    for tid in a:  # float16 autocast: close, not equal
        assert float(np.dot(a[tid], b[tid])) > 0.999


def test_a_worker_stores_into_its_sink(tmp_path, aerial_catalog, tiny_checkpoint):
    """The worker side of server ingest, through qdrant-client (local mode on disk here)."""
    from rsia_geo.cluster import _SINKS, encode_tiles
    from rsia_geo.models.checkpoint import model_signature
    from rsia_geo.pipeline import load_model
    from rsia_geo.tiles import iter_tiles

    build_index(aerial_catalog, tmp_path / "one", tiny_checkpoint, spec=SPEC, progress=False)
    expected = _vectors(tmp_path / "one")
    tiles = list(iter_tiles(aerial_catalog, SPEC))[:20]
    sink = {"location": str(tmp_path / "sink"), "engine": "client"}
    with TileIndex(**sink) as made:  # made and bound by the caller, as build_index does
        made.bind_model(model_signature(load_model(tiny_checkpoint)))
        made.reserve(tiles)
        before = made.meta
    # the index's image views, as build_index hands them to its workers
    records = [t.to_dict() for t in tiles]
    ids, vecs, failed = encode_tiles(records, tiny_checkpoint, 8, sink, views="d8")
    assert ids == [t.id for t in tiles] and vecs.shape == (0, 0) and not failed
    opened = _SINKS.pop(next(k for k in _SINKS if ("location", sink["location"]) in k))
    stored = {h.id: np.asarray(h.vector) for h in opened.scroll(None, with_vectors=True)}
    # reserved first: the worker's add found the extent and margin recorded, and wrote none
    assert opened.meta == before
    opened.close()
    assert set(stored) == set(ids)
    for tid in ids:
        np.testing.assert_allclose(stored[tid], expected[tid], atol=1e-5)


def test_reserve_records_what_add_would(tmp_path, aerial_catalog, tiny_checkpoint):
    from rsia_geo.models.checkpoint import model_signature
    from rsia_geo.pipeline import load_model
    from rsia_geo.tiles import iter_tiles

    tiles = list(iter_tiles(aerial_catalog, SPEC))
    signature = model_signature(load_model(tiny_checkpoint))
    shape = (len(tiles), signature["embed_dim"])
    vecs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with TileIndex(tmp_path / "added") as added, TileIndex(tmp_path / "reserved") as reserved:
        added.bind_model(signature)
        reserved.bind_model(signature)
        added.add(tiles, vecs)
        reserved.reserve(tiles)
        assert reserved.count() == 0
        assert reserved.extent() == added.extent()
        assert reserved.centre_margin() == added.centre_margin() is not None
        meta = reserved.meta
        reserved.add(tiles[:5], vecs[:5])
        assert reserved.meta == meta and reserved.count() == 5
