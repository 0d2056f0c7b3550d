"""Ingest on a Dask cluster: workers read and encode; one writer, or the workers, store.

:func:`rsia_geo.build_index` with ``cluster=`` hands the read-and-encode work (what dominates
ingest: windowed reads and the image encoder) to the workers of a Dask ``distributed``
cluster, in tasks of ``batch_size`` tiles. An embedded index (one folder, one writer) stores
what comes back from the calling process, as the results arrive; a Qdrant server's collection
is written by the workers directly (each opens its own client once), the calling process
recording the batch's extent first (:meth:`~rsia_geo.index.TileIndex.reserve`), so that only
ids travel back. The tiling, the tile ids and the index are the same as in one process, so:

* a re-run (or a run after a crash) skips what is stored and adds the rest;
* a worker that dies mid-job loses nothing: the scheduler runs its tasks again elsewhere, and
  since results are stored by deterministic tile id, none is stored twice;
* every worker loads the model once (checkpoints are cached per process) and encodes with as
  many torch threads as it has Dask threads.

``cluster`` is a ``distributed.Client``, a scheduler address (``"tcp://host:8786"``), or a
number of local worker processes (a ``LocalCluster`` with one thread each, started and stopped
here).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from rsia_geo.errors import InvalidArgumentError, TileReadError

__all__ = ["encode_tiles", "open_client"]

logger = logging.getLogger(__name__)

MAX_RETRIES = 3
"""Times a batch lost with a worker is submitted again before the job fails."""


def open_client(cluster: Any) -> tuple[Any, Any]:
    """A ``distributed.Client`` for ``cluster``, and what to close when done (or None).

    Args:
        cluster: A ``distributed.Client``, a scheduler address, or a number of local worker
            processes.

    Returns:
        ``(client, owned)``: ``owned`` is what was started here, to close in reverse order
        (a local cluster, its client, then this process's environment put back as it was
        before the cluster's nannies set their variables in it).

    Raises:
        InvalidArgumentError: Not one of these.
        DependencyNotFoundError: ``distributed`` is not installed.
    """
    from rsia_geo._lazy import lazy_import

    distributed = lazy_import("distributed")
    if isinstance(cluster, distributed.Client):
        return cluster, None
    if isinstance(cluster, bool) or not isinstance(cluster, (int, str)):
        raise InvalidArgumentError(
            f"cluster={cluster!r}: pass a distributed.Client, a scheduler address "
            "('tcp://host:8786') or a number of local worker processes"
        )
    if isinstance(cluster, int):
        if cluster < 1:
            raise InvalidArgumentError(f"cluster={cluster}: give at least 1 worker process")
        kept = _KeptEnviron()
        try:
            local = distributed.LocalCluster(
                n_workers=cluster, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = distributed.Client(local)
        finally:
            kept.close()  # the workers are spawned: what their nannies set is theirs
        return client, (kept, client, local)  # closed in reverse: the environment last
    try:
        client = distributed.Client(cluster, timeout="20s")
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot reach the Dask scheduler at {cluster!r} ({exc}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, or pass a number of "
            "local worker processes"
        ) from exc
    return client, (client,)


class _KeptEnviron:
    """This process's environment variables that Dask's nannies set here, to put back.

    Before spawning each worker process, a nanny sets ``distributed.nanny.pre-spawn-environ``
    (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` at 1,
    ``MALLOC_TRIM_THRESHOLD_``) and ``PYTHONHASHSEED`` in the environment of the process that
    runs it, this one, and leaves them there: every process started from here afterwards
    (a notebook's service, training's view workers, a notebook kernel) would run torch and
    its BLAS on one thread, and so would torch here if first used after. :meth:`close` puts
    back what was there before (a user's own setting, or nothing).
    """

    def __init__(self) -> None:
        import dask

        keys = set(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
        self.saved = {k: os.environ.get(k) for k in sorted(keys | {"PYTHONHASHSEED"})}

    def close(self) -> None:
        """Put the saved variables back (unset those that were unset)."""
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_READER: Any = None
_READER_LOCK = threading.Lock()
MAX_OPEN_RASTERS = 64
"""Rasters a worker keeps open between tasks (then it closes them all and starts again)."""


def _worker_reader() -> Any:
    """The worker process's reader thread, with rasters kept open across tasks.

    Made on the first task, with the process's allocator set up (:func:`_tune_allocator`).

    Neighbouring tiles share compressed blocks; one long-lived reader thread with the rasters
    open lets GDAL's block cache serve them across tasks, as in one process (a reader per task
    would open the rasters again and decode the shared blocks again).
    """
    global _READER
    with _READER_LOCK:
        if _READER is None:
            from concurrent.futures import ThreadPoolExecutor

            from rsia_geo.tiles import keep_datasets_open

            _tune_allocator()  # once per worker process, before the model's allocations
            keep_datasets_open().__enter__()  # for the life of the worker process
            _READER = ThreadPoolExecutor(1, thread_name_prefix="rsia-read")
        return _READER


def _tune_allocator() -> None:
    """Undo, in this worker process, what Dask's default worker environment costs torch.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes
    glibc's mmap threshold: every large tensor is then mapped and unmapped afresh, and the
    encoder ran at half speed on workers (docs/benchmarks.md). Raising the mmap and trim
    thresholds again (glibc ``mallopt``) restores one-process speed; elsewhere nothing is done.
    """
    import ctypes
    import ctypes.util
    import os

    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc
        logger.debug("mallopt unavailable; worker allocator left as it is")


def _limit_open_rasters() -> None:
    from rsia_geo.tiles import _OPEN

    if len(_OPEN.all) > MAX_OPEN_RASTERS:
        _OPEN.close_all()


_SINKS: dict[tuple[Any, ...], Any] = {}
_SINKS_LOCK = threading.Lock()


def _sink_index(sink: dict[str, Any]) -> Any:
    """The worker's own :class:`~rsia_geo.index.TileIndex` for ``sink`` (opened once)."""
    from rsia_geo.index import TileIndex

    key = tuple(sorted((k, str(v)) for k, v in sink.items()))
    with _SINKS_LOCK:
        if key not in _SINKS:
            _SINKS[key] = TileIndex(**sink)
        return _SINKS[key]


def encode_tiles(
    records: list[dict[str, Any]],
    model_ref: Any,
    batch_size: int = 16,
    sink: dict[str, Any] | None = None,
    views: str = "single",
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Read and encode tiles on a worker (a Dask task), and store them when given a sink.

    Reading overlaps encoding, as in one process: a reader thread reads the next
    ``batch_size`` tiles (GDAL releases the GIL) while the encoder runs on the current ones.

    Args:
        records: ``Tile.to_dict()`` of each tile.
        model_ref: A checkpoint folder, None for the starter, or a loaded model.
        batch_size: Tiles per encoder batch.
        sink: :class:`~rsia_geo.index.TileIndex` arguments of a collection this worker stores
            into itself (a Qdrant server's: ``TileIndex.remote_spec()``); None to send the
            vectors back to the caller.
        views: Image views (:meth:`~rsia_geo.models.ALACModel.encode_images`).

    Returns:
        ``(ids, raw vectors (n, dim) float32, failed (tile id, reason))``; with a sink the
        vectors are stored, not returned (``(0, 0)``).
    """
    import torch

    from rsia_geo.pipeline import _hub_of, load_model, read_chip
    from rsia_geo.tiles import Tile

    try:
        from distributed import get_worker

        threads = max(1, int(get_worker().state.nthreads))
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    except (ImportError, ValueError):  # run outside a worker (tests, one process)
        pass
    pool = _worker_reader()  # (sets the worker process up on its first task)
    model = load_model(model_ref)
    failed: list[tuple[str, str]] = []

    def read(chunk: list[dict[str, Any]]) -> list[tuple[str, np.ndarray]]:
        out = []
        for record in chunk:
            tile = Tile.from_dict(record)
            try:
                out.append((tile.id, read_chip(tile)))
            except TileReadError as exc:
                failed.append((tile.id, str(exc)))
        return out

    chunks = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    ids: list[str] = []
    vecs: list[np.ndarray] = []
    nxt = pool.submit(read, chunks[0]) if chunks else None
    for j in range(len(chunks)):
        assert nxt is not None
        got = nxt.result()
        nxt = pool.submit(read, chunks[j + 1]) if j + 1 < len(chunks) else None
        if got:
            images = torch.from_numpy(np.stack([a for _, a in got]))
            vecs.append(model.encode_images(images, normalize=False, views=views).numpy())
            ids.extend(i for i, _ in got)
    _limit_open_rasters()
    if not ids:
        return ids, np.zeros((0, 0), np.float32), failed
    out = np.concatenate(vecs).astype(np.float32)
    if sink is None:
        return ids, out, failed
    by_id = {r["id"]: r for r in records}
    index = _sink_index(sink)
    index.add([Tile.from_dict(by_id[i]) for i in ids], out, hub=_hub_of(index, model)(out))
    return ids, np.zeros((0, 0), np.float32), failed


def run_ingest(
    client: Any,
    batches: Iterable[list[Any]],
    model_ref: Any,
    store: Any,
    *,
    in_flight: int,
    batch_size: int = 16,
    sink: dict[str, Any] | None = None,
    reserve: Any = None,
    views: str = "single",
) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """Submit batches of tiles, store each result as it arrives (here, or on the workers).

    Args:
        client: The ``distributed.Client``.
        batches: Lists of tiles still to index (one task each).
        model_ref: What :func:`encode_tiles` loads (a path, None, or a scattered model).
        store: ``store(tiles, vectors)``: writes one result into the index (unused with
            ``sink``).
        in_flight: Tasks submitted ahead of the results (bounds memory).
        batch_size: Tiles per encoder batch inside a task.
        sink: The workers store into this collection themselves (see :func:`encode_tiles`).
        reserve: ``reserve(tiles)``, called with each batch before it is handed out (with a
            sink: :meth:`~rsia_geo.index.TileIndex.reserve`).
        views: Image views (:meth:`~rsia_geo.models.ALACModel.encode_images`).

    Yields:
        ``(tiles stored, failed)`` per finished task.
    """
    from concurrent.futures import CancelledError

    from distributed import KilledWorker, as_completed
    from distributed.client import FutureCancelledError

    pending: dict[Any, tuple[dict[str, Any], int]] = {}
    queue = as_completed()  # type: ignore[no-untyped-call]
    it = iter(batches)
    exhausted = False

    def submit(tiles: dict[str, Any], tries: int) -> None:
        if reserve is not None and tries == 0:
            reserve(list(tiles.values()))
        records = [t.to_dict() for t in tiles.values()]
        fut = client.submit(encode_tiles, records, model_ref, batch_size, sink, views, pure=False)
        pending[fut] = (tiles, tries)
        queue.add(fut)  # type: ignore[no-untyped-call]

    def submit_more() -> None:
        nonlocal exhausted
        while not exhausted and len(pending) < in_flight:
            try:
                batch = next(it)
            except StopIteration:
                exhausted = True
                return
            submit({t.id: t for t in batch}, 0)

    submit_more()
    while pending:
        fut = next(queue)
        tiles, tries = pending.pop(fut)
        try:
            ids, vecs, failed = fut.result()
        except (FutureCancelledError, CancelledError, KilledWorker) as exc:
            # a worker died with the task (or its result): run it again, a few times
            fut.release()
            if tries >= MAX_RETRIES:
                raise
            logger.warning("a batch of %d tiles was lost (%s); running it again", len(tiles), exc)
            submit(tiles, tries + 1)
            continue
        fut.release()
        if ids and sink is None:
            store([tiles[i] for i in ids], vecs)
        submit_more()
        yield len(ids), failed
