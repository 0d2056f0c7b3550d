"""Ingest on a Dask cluster: workers read and encode, one writer stores.

:func:`rsia_geo.build_index` with ``cluster=`` hands the read-and-encode work (what dominates
ingest: windowed reads and the image encoder) to the workers of a Dask ``distributed``
cluster, in tasks of ``batch_size`` tiles, and stores what comes back in the index from the
calling process, as the results arrive. The tiling, the tile ids and the index are the same as
in one process, so:

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
        ``(client, owned)``: ``owned`` is the client and local cluster started here.

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
        local = distributed.LocalCluster(
            n_workers=cluster, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(local)
        return client, (client, local)
    try:
        client = distributed.Client(cluster, timeout="20s")
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot reach the Dask scheduler at {cluster!r} ({exc}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, or pass a number of "
            "local worker processes"
        ) from exc
    return client, (client,)


def encode_tiles(
    records: list[dict[str, Any]], model_ref: Any
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Read and encode tiles on a worker (a Dask task).

    Args:
        records: ``Tile.to_dict()`` of each tile.
        model_ref: A checkpoint folder, None for the starter, or a loaded model.

    Returns:
        ``(ids, raw vectors (n, dim) float32, failed (tile id, reason))``.
    """
    import torch

    from rsia_geo.pipeline import load_model, read_chip
    from rsia_geo.tiles import Tile, keep_datasets_open

    try:
        from distributed import get_worker

        torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
    except (ImportError, ValueError):  # run outside a worker (tests, one process)
        pass
    model = load_model(model_ref)
    ids: list[str] = []
    images: list[np.ndarray] = []
    failed: list[tuple[str, str]] = []
    with keep_datasets_open():
        for record in records:
            tile = Tile.from_dict(record)
            try:
                images.append(read_chip(tile))
                ids.append(tile.id)
            except TileReadError as exc:
                failed.append((tile.id, str(exc)))
    if not images:
        return ids, np.zeros((0, 0), np.float32), failed
    vecs = model.encode_images(torch.from_numpy(np.stack(images)), normalize=False).numpy()
    return ids, vecs.astype(np.float32), failed


def run_ingest(
    client: Any,
    batches: Iterable[list[Any]],
    model_ref: Any,
    store: Any,
    *,
    in_flight: int,
) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """Submit batches of tiles, store each result as it arrives (in this process).

    Args:
        client: The ``distributed.Client``.
        batches: Lists of tiles still to index.
        model_ref: What :func:`encode_tiles` loads (a path, None, or a scattered model).
        store: ``store(tiles, vectors)``: writes one result into the index.
        in_flight: Tasks submitted ahead of the results (bounds memory).

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
        records = [t.to_dict() for t in tiles.values()]
        fut = client.submit(encode_tiles, records, model_ref, pure=False)
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
        if ids:
            store([tiles[i] for i in ids], vecs)
        submit_more()
        yield len(ids), failed
