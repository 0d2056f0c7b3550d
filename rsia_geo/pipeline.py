"""The main job: index STAC tiles into Qdrant, and answer spoken queries in a region.

:func:`build_index` streams tiles from a catalog through the image encoder into a
:class:`~rsia_geo.index.TileIndex`: reading (a thread pool; GDAL releases the GIL), encoding (the
main thread; torch uses its own threads) and writing (a writer thread) overlap through bounded
queues, so memory stays flat whatever the catalog size. Point ids are the deterministic tile ids,
so a re-run after a crash or ``kill -9`` skips what is stored and adds the rest: nothing is lost
or duplicated.

:func:`search` answers a spoken query in three measurable stages:

1. cosine search of the dual-encoder vectors inside Qdrant, with the region's bounding boxes and
   time range as payload conditions, then the exact footprint-region intersection (shapely) on
   the candidates, paging until enough remain;
2. exact IA pairwise rescoring of the candidates (raw vectors rebuilt from the stored unit
   vector and norm);
3. optional BSWFR mutual-rank rerank against the checkpoint's bank of reference clips.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rsia_geo._geo import lonlat_text
from rsia_geo._types import AudioSource, BBox, ModelSource, PathLike
from rsia_geo.errors import InvalidArgumentError, RsiaError, TileReadError, VectorIndexError
from rsia_geo.index.payload import payload_to_tile
from rsia_geo.index.tile_index import TileIndex
from rsia_geo.query import Region, make_region
from rsia_geo.tiles import (
    DEFAULT_IMAGE_VIEWS,
    DEFAULT_SPEC,
    SkippedTile,
    Tile,
    TileSpec,
    check_views,
    iter_tiles,
    keep_datasets_open,
    read_tile,
)

if TYPE_CHECKING:
    from geopandas import GeoDataFrame

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_FEEDBACK",
    "DEFAULT_SPEC",
    "FEEDBACK_PLACES",
    "IndexReport",
    "build_index",
    "feedback_scores",
    "load_model",
    "read_chip",
    "search",
]


HIT_COLUMNS = (
    "rank",
    "score",
    "score_cosine",
    "score_ia",
    "score_bswfr",
    "rank_cosine",
    "rank_ia",
    "tile_id",
    "item_id",
    "collection_id",
    "href",
    "level",
    "window",
    "datetime",
    "platform",
    "crs",
    "gsd",
    "group_size",
    "group_tile_ids",
    "group_footprint",
    "tile",
)
"""Columns of :func:`search`'s GeoDataFrame besides ``geometry`` (also when it is empty).

``tile`` holds each hit's :class:`~rsia_geo.tiles.Tile` (what :func:`read_chip` reads); it is
the one column that is a Python object, left out of files and responses by
:func:`rsia_geo.results.plain_table`."""

DEFAULT_CANDIDATES = 50
"""Cosine candidates rescored by IA: on UCM val, IA over the top 50 ranks exactly as IA over
the whole gallery (docs/model_card.md), and fewer candidates read fewer payloads."""

logger = logging.getLogger(__name__)


_MODEL_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_MODEL_CACHE_LOCK = threading.Lock()
_MODEL_CACHE_SIZE = 4


def _checkpoint_key(path: Path) -> tuple[Any, ...]:
    """Identity of a checkpoint on disk: its resolved path and its files' sizes and mtimes."""
    folder = path.resolve()
    files = [folder / "config.json", folder / "model.safetensors"] if folder.is_dir() else [folder]
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
    return (str(folder), *stats)


def load_model(model: ModelSource = None) -> Any:
    """Resolve a model argument: a loaded model, a checkpoint folder, or None (the starter).

    Checkpoints loaded by path are kept (the last four, keyed by path and the size and
    modification time of their files), so ``rsia_geo.search("q.wav", "my_index")`` in a loop
    loads the model once; a checkpoint rewritten on disk is loaded again.

    Args:
        model: An :class:`~rsia_geo.models.ALACModel`, a checkpoint path, or None.

    Returns:
        The model in eval mode.
    """
    from rsia_geo.models import ALACModel, load_checkpoint
    from rsia_geo.weights import default_checkpoint

    if isinstance(model, ALACModel):
        # Module.eval() walks every submodule (milliseconds per query): only when needed
        return model.eval() if any(m.training for m in model.modules()) else model
    path = Path(model) if model is not None else default_checkpoint()
    key = _checkpoint_key(path) if path.exists() else None
    with _MODEL_CACHE_LOCK:
        if key is not None and key in _MODEL_CACHE:
            _MODEL_CACHE.move_to_end(key)
            return _MODEL_CACHE[key]
    loaded = load_checkpoint(path)
    if loaded.config.frontend.kind == "whisper":
        loaded.frontend.speech_encoder()  # load the speech encoder now, not on the first query
    if key is not None:
        with _MODEL_CACHE_LOCK:
            _MODEL_CACHE[key] = loaded
            while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
                _MODEL_CACHE.popitem(last=False)
    return loaded


def _open_index(index: TileIndex | PathLike, *, create: bool = False) -> tuple[TileIndex, bool]:
    """An open index and whether we opened it (a folder is only created when ``create``)."""
    if isinstance(index, TileIndex):
        return index, False
    return TileIndex(index, create=create), True


@dataclass
class IndexReport:
    """What :func:`build_index` did.

    Attributes:
        tiles_seen: Tiles produced by tiling.
        indexed: Tiles encoded and stored in this run.
        already_present: Tiles skipped because the index had them (resumed runs).
        skipped: Tiles, levels or items tiling skipped, with reasons.
        failed: Tiles whose pixels could not be read, with reasons.
        seconds: Wall time.
        encode_seconds: Time spent in the image encoder.
    """

    tiles_seen: int = 0
    indexed: int = 0
    already_present: int = 0
    skipped: list[SkippedTile] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0

    @property
    def tiles_per_second(self) -> float:
        """Indexed tiles per second of wall time."""
        return self.indexed / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary.

        Returns:
            The report as a dict.
        """
        d = asdict(self)
        d["tiles_per_second"] = round(self.tiles_per_second, 2)
        return d


def _batches(tiles: Iterator[Tile], size: int) -> Iterator[list[Tile]]:
    batch: list[Tile] = []
    for t in tiles:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# Over 80 lines because of its public signature and docstring (47 of 84); the body (37) binds,
# picks the ingest path (_ingest_local or _ingest_cluster) and closes, nothing more to name.
def build_index(
    source: Any,
    index: TileIndex | PathLike,
    model: ModelSource = None,
    *,
    spec: TileSpec | None = None,
    bands: Sequence[str] | None = None,
    bbox: BBox | None = None,
    batch_size: int | None = None,
    workers: int = 2,
    progress: bool = True,
    cluster: Any = None,
    device: str | None = "auto",
    image_views: str | None = None,
) -> IndexReport:
    """Tile a STAC source, encode the tiles and store them in the index (resumable).

    Args:
        source: Catalog/collection/item path or URL, a pystac object, or a list of Items.
        index: A :class:`TileIndex` or an embedded index folder.
        model: Model, checkpoint folder, or None for the shipped starter checkpoint.
        spec: Tiling; default :data:`DEFAULT_SPEC` (78 m tiles, the ground size of the
            starter model's training images, read at 256 px, plus a 156 m level).
        bands: Bands to read (default RGB).
        bbox: Only tiles intersecting this lon/lat box.
        batch_size: Tiles per encoder batch (default 16 on CPU, :data:`GPU_BATCH` on a GPU).
        workers: Reader threads (in one process).
        progress: Progress bar.
        cluster: Read and encode on a Dask cluster instead (:mod:`rsia_geo.cluster`): a
            ``distributed.Client``, a scheduler address, or a number of local worker
            processes. The same tiles, ids and vectors; this process stores them.
        device: Where this process encodes: ``"auto"`` (a GPU when torch sees one),
            ``"cpu"`` or ``"cuda"`` (float16 autocast). Dask workers encode on CPU.
        image_views: How each tile is embedded (:data:`~rsia_geo.tiles.IMAGE_VIEWS`):
            ``"d8"``, the mean over its 8 rotations and reflections, or ``"single"``, as it
            is (8x less encoder work). None: the index's own setting when it holds tiles,
            else :data:`~rsia_geo.tiles.DEFAULT_IMAGE_VIEWS` (``"d8"``).

    Returns:
        The report.

    Raises:
        ModelMismatchError: The index holds vectors of another model.
        TilingMismatchError: The index holds tiles cut, read or viewed otherwise.
        IndexLockedError: The index folder is open elsewhere.
        InvalidArgumentError: Unknown ``image_views``.
    """
    mdl = load_model(model)
    if mdl.config.backbone.in_chans != len(bands or ("red", "green", "blue")):
        raise VectorIndexError(
            f"the model takes {mdl.config.backbone.in_chans} bands but bands={bands!r}"
        )
    spec = spec or DEFAULT_SPEC
    on = resolve_device(device) if cluster is None else "cpu"
    batch_size = _encoder_batch(batch_size, on)
    if image_views is not None:
        check_views(image_views)
    idx, owned = _open_index(index, create=True)
    report = IndexReport()
    t_start = time.perf_counter()
    try:
        views = _bind(idx, mdl, spec, bands, image_views)
        hub_of = _hub_of(idx, mdl)

        def store(tiles: list[Tile], vecs: np.ndarray) -> None:
            idx.add(tiles, vecs, hub=hub_of(vecs))

        if cluster is not None:
            _ingest_cluster(
                cluster, source, idx, mdl, model, spec, bands, bbox, batch_size, report, progress,
                views, store,
            )  # fmt: skip
        else:
            _ingest_local(
                source, store, idx, image_encoder(mdl, on, views), spec, bands, bbox,
                batch_size, workers, progress, report,
            )  # fmt: skip
        idx.record_count()
        idx.optimize()  # the HNSW graph or quantized vectors the index was made with
    finally:
        report.seconds = time.perf_counter() - t_start
        if owned:
            idx.close()
    return report


def _bind(
    idx: TileIndex, mdl: Any, spec: TileSpec, bands: Sequence[str] | None, image_views: str | None
) -> str:
    """Bind the index to the model and the run's settings; return the image views it uses.

    The views asked for, else the index's own (it holds tiles), else the default.
    """
    from rsia_geo.models.checkpoint import model_signature
    from rsia_geo.rerank import HUB_K
    from rsia_geo.weights import hub_bank

    views = image_views or idx.image_views or DEFAULT_IMAGE_VIEWS
    extra: dict[str, Any] = {
        "tile_spec": asdict(spec),
        "bands": list(bands or ("red", "green", "blue")),
        "image_views": views,
        "checkpoint": str(getattr(mdl, "checkpoint_path", "")),
    }
    found = hub_bank(mdl)
    if found is not None and idx.hub_bank in (None, found[1]):
        # tiles store their hubness against this bank (an index whose stored hubness is
        # another bank's keeps it: search computes the hubness of its tiles instead)
        extra["hub"] = {"bank": found[1], "k": HUB_K}
    idx.bind_model(model_signature(mdl), extra=extra)
    return views


def _hub_of(idx: TileIndex, mdl: Any) -> Any:
    """``hub(raw vectors)`` to store with new tiles: their hubness, or None.

    The hubness (:func:`rsia_geo.weights.tile_hubness`) is stored when the index records
    the model's own reference bank (:attr:`TileIndex.hub_bank`).
    """
    from rsia_geo.weights import hub_bank, tile_hubness

    found = hub_bank(mdl)
    if found is None or idx.hub_bank != found[1]:
        return lambda vecs: None
    return lambda vecs: tile_hubness(mdl, vecs)


def _encoder_batch(batch_size: Any, on: str) -> int:
    """Tiles per encoder batch: as given (checked), or the default of the device ``on``."""
    if batch_size is None:
        return GPU_BATCH if on.startswith("cuda") else 16
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size={batch_size!r} must be a positive integer")
    return batch_size


def resolve_device(device: str | None) -> str:
    """``"cpu"`` or ``"cuda"`` from ``"auto"``/None (a GPU when torch sees one), checked.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), or None (auto).

    Returns:
        The device to encode on.

    Raises:
        InvalidArgumentError: An unknown device, or CUDA asked for where torch sees no GPU.
    """
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device={device!r} but torch sees no CUDA GPU here; use device='cpu' (or "
                "'auto', which picks a GPU when there is one)"
            )
        return name
    raise InvalidArgumentError(f"device={device!r}; use 'auto', 'cpu' or 'cuda'")


_DEVICE_MODELS: dict[tuple[int, str], Any] = {}


def image_encoder(model: Any, device: str, views: str = "single") -> Any:
    """A function ``(B, C, H, W) float32 numpy -> (B, dim) float32 numpy`` on ``device``.

    On CPU it is the model itself. On a GPU a copy of the model lives there (the cached CPU
    model that search uses is left as it is) and runs in float16 autocast.

    Args:
        model: A loaded model.
        device: From :func:`resolve_device`.
        views: Image views (:meth:`~rsia_geo.models.ALACModel.encode_images`).

    Returns:
        The encoder function.
    """
    import copy

    import torch

    if device == "cpu":
        return lambda images: model.encode_images(
            torch.from_numpy(images), normalize=False, views=views
        ).numpy()
    key = (id(model), device)
    if key not in _DEVICE_MODELS:
        _DEVICE_MODELS[key] = copy.deepcopy(model).to(device).eval()
    gpu_model = _DEVICE_MODELS[key]

    def encode(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16):
            out = gpu_model.encode_images(x, normalize=False, views=views)
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    return encode


GPU_BATCH = 256
"""Tiles per encoder batch on a GPU when ``batch_size`` is not given (16 on CPU).

On an H200 the starter's image side embeds 3,215 tiles/s at a batch of 16 (launch-bound) and
14,024 at 256 (docs/benchmarks.md, "Fine-tuning on a GPU"); 256 tiles of 256 px are ~200 MB
in float32, one view at a time."""


def _tile_total(source: Any, spec: TileSpec, bands: Any, bbox: Any, progress: bool) -> int | None:
    """How many tiles a source holds, for the progress bar (None without a bar).

    A counting pass repeats the tiling (windows, footprints and the nodata survey on a <= 1024
    px overview per item), not the per-tile reads and encoding that dominate ingest; a
    generator source is read once, so it is not counted.
    """
    if not progress or isinstance(source, Iterator):
        return None
    return sum(1 for _ in iter_tiles(source, spec, bands=bands, bbox=bbox, on_skip=lambda s: None))


def _new_batches(
    source: Any,
    spec: TileSpec,
    bands: Any,
    bbox: Any,
    idx: TileIndex,
    size: int,
    report: IndexReport,
    bar: Any,
) -> Iterator[list[Tile]]:
    """The source's tiles in batches of ``size``, less those already stored (counted)."""
    tiles = iter_tiles(source, spec, bands=bands, bbox=bbox, on_skip=report.skipped.append)
    for batch in _batches(tiles, size):
        report.tiles_seen += len(batch)
        present = idx.existing([t.id for t in batch])
        report.already_present += len(present)
        bar.update(len(present))
        todo = [t for t in batch if t.id not in present]
        if todo:
            yield todo


# Over 80 lines with its 12-line signature: one pipeline of readers (threads), the encoder (this
# thread) and a writer (a thread), whose closures share the queues and the report; split apart
# they would need that state passed around.
def _ingest_local(
    source: Any,
    store: Any,
    idx: TileIndex,
    encode: Any,
    spec: TileSpec,
    bands: Any,
    bbox: Any,
    batch_size: int,
    workers: int,
    progress: bool,
    report: IndexReport,
) -> None:
    """Read (threads), encode (this thread) and write (a thread) in one process."""
    from tqdm.auto import tqdm

    writes: queue.Queue[tuple[list[Tile], np.ndarray] | None] = queue.Queue(maxsize=2)
    write_error: list[BaseException] = []

    def writer() -> None:
        while True:
            item = writes.get()
            if item is None:
                return
            try:
                store(*item)
            except BaseException as exc:  # surfaced in the main thread
                write_error.append(exc)
                return

    wthread = threading.Thread(target=writer, name="rsia-index-writer", daemon=True)
    wthread.start()
    bar = tqdm(
        desc="indexing",
        unit="tile",
        total=_tile_total(source, spec, bands, bbox, progress),
        disable=not progress,
    )

    def read_batch(batch: list[Tile]) -> list[tuple[Tile, np.ndarray | None, str | None]]:
        out: list[tuple[Tile, np.ndarray | None, str | None]] = []
        for t in batch:  # datasets stay open per reader thread (keep_datasets_open)
            try:
                out.append((t, read_chip(t), None))
            except TileReadError as exc:
                out.append((t, None, str(exc)))
        return out

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="rsia-read")
    pending: list[Future[Any]] = []

    def drain(fut: Future[Any]) -> None:
        rows = fut.result()
        ok = [(t, a) for t, a, err in rows if err is None]
        for t, _, err in rows:
            if err is not None:
                report.failed.append((t.id, err))
                logger.warning("tile %s of %s failed: %s", t.id, t.item_id, err)
        if ok:
            t0 = time.perf_counter()
            vecs = encode(np.stack([a for _, a in ok]))
            report.encode_seconds += time.perf_counter() - t0
            if write_error:
                raise write_error[0]
            writes.put(([t for t, _ in ok], vecs))
            report.indexed += len(ok)
        bar.update(len(rows))

    with keep_datasets_open():
        try:
            for todo in _new_batches(source, spec, bands, bbox, idx, batch_size, report, bar):
                pending.append(pool.submit(read_batch, todo))
                while len(pending) > max(1, workers):
                    drain(pending.pop(0))
            while pending:
                drain(pending.pop(0))
        finally:
            pool.shutdown(wait=True)
            writes.put(None)
            wthread.join()
            bar.close()
    if write_error:
        raise write_error[0]


TASK_BATCHES = 2
"""Encoder batches per Dask task."""


def _ingest_cluster(
    cluster: Any,
    source: Any,
    idx: TileIndex,
    mdl: Any,
    model: Any,
    spec: TileSpec,
    bands: Any,
    bbox: Any,
    batch_size: int,
    report: IndexReport,
    progress: bool,
    views: str,
    store: Any,
) -> None:
    """Read and encode on a Dask cluster's workers, store here (:mod:`rsia_geo.cluster`)."""
    from tqdm.auto import tqdm

    from rsia_geo.cluster import open_client, run_ingest

    client, owned = open_client(cluster)
    try:
        path = getattr(mdl, "checkpoint_path", None)
        if isinstance(model, (str, Path)) or model is None:
            model_ref: Any = str(path) if path else model
        else:  # a model object: sent to every worker once
            model_ref = client.scatter(mdl, broadcast=True)
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        bar = tqdm(
            desc="indexing (Dask)",
            unit="tile",
            total=_tile_total(source, spec, bands, bbox, progress),
            disable=not progress,
        )

        # a task holds TASK_BATCHES encoder batches: fewer, larger tasks amortise the
        # scheduling and the opening of rasters per task
        tasks = _new_batches(source, spec, bands, bbox, idx, batch_size * TASK_BATCHES, report, bar)
        t0 = time.perf_counter()
        sink = idx.remote_spec()  # a server: the workers store, this process reserves
        try:
            for stored, failed in run_ingest(
                client, tasks, model_ref, store, in_flight=2 * n_workers + 1,
                batch_size=batch_size, sink=sink,
                reserve=idx.reserve if sink is not None else None, views=views,
            ):  # fmt: skip
                report.indexed += stored
                report.failed.extend(failed)
                for tid, err in failed:
                    logger.warning("tile %s failed: %s", tid, err)
                bar.update(stored + len(failed))
        finally:
            bar.close()
        report.encode_seconds += time.perf_counter() - t0  # read + encode, on the workers
    finally:
        for closable in reversed(owned or ()):
            closable.close()


# ------------------------------------------------------------------------------ search


@dataclass
class _Candidate:
    id: str
    cosine: float
    unit: np.ndarray | None
    raw_norm: float
    footprint: Any  # shapely geometry, or None until needed
    hub: float | None = None  # stored hubness (rerank.hubness), when the index has it


def _footprints(geojsons: Sequence[dict[str, Any] | str]) -> np.ndarray:
    """Shapely geometries of GeoJSON footprints (dicts, or text as stored), vectorised."""
    import shapely
    from shapely.geometry import shape

    out = np.empty(len(geojsons), dtype=object)
    if geojsons and all(isinstance(g, str) for g in geojsons):
        out[:] = shapely.from_geojson(np.asarray(geojsons, dtype=object))  # GEOS's reader, in C
        return out
    dicts: list[dict[str, Any]] = [json.loads(g) if isinstance(g, str) else g for g in geojsons]
    by_len: dict[int, list[int]] = {}
    for i, g in enumerate(dicts):
        if g.get("type") == "Polygon" and len(g["coordinates"]) == 1:
            by_len.setdefault(len(g["coordinates"][0]), []).append(i)
        else:
            out[i] = shape(g)
    for n, idxs in by_len.items():
        if n < 4:
            for i in idxs:
                out[i] = shape(dicts[i])
            continue
        rings = np.asarray([dicts[i]["coordinates"][0] for i in idxs], dtype=np.float64)
        out[idxs] = shapely.polygons(rings)
    return out


@dataclass
class _Exclusion:
    """Tiles a query must not return: ids, and tiles showing a place (an example's)."""

    ids: set[str]
    place: Any = None  # shapely, lon/lat
    min_overlap: float = 0.5

    def keep(self, ids: Sequence[str], footprints: np.ndarray) -> np.ndarray:
        """Mask of the tiles to keep (footprints as shapely geometries)."""
        ok = np.array([i not in self.ids for i in ids], dtype=bool)
        if self.place is not None and len(ids):
            shared, smaller = shared_area(footprints, self.place)
            ok &= ~one_place(shared, smaller, self.min_overlap)
        return ok


PLACE_TOLERANCE = 1e-4
"""Relative slack of the one-place test. Half-overlapping neighbours of the default tiling share
exactly half of a tile in its own CRS; reprojected to lon/lat their shares scatter by a few
parts per million around 0.5 (0.4999959-0.5000041 on the bundled mosaic), so without slack
about half of them would be one place and half not, decided by rounding."""


def one_place(shared: np.ndarray, smaller: np.ndarray, min_overlap: float) -> np.ndarray:
    """Whether tiles sharing ``shared`` of the ``smaller`` area show one place.

    The one test of :func:`group_places`, example exclusion and ``same_place`` (areas from
    :func:`shared_area`).

    Args:
        shared: Shared areas.
        smaller: The smaller of the two footprints' areas, per pair.
        min_overlap: Shared fraction of the smaller footprint that makes one place.

    Returns:
        A boolean mask: ``shared >= min_overlap * smaller``, to :data:`PLACE_TOLERANCE`.
    """
    need = min_overlap * (1.0 - PLACE_TOLERANCE) * np.maximum(smaller, 1e-30)
    return np.asarray(shared >= need)


def shared_area(footprints: np.ndarray, place: Any) -> tuple[np.ndarray, np.ndarray]:
    """Area each footprint shares with ``place``, and the smaller of the two areas.

    Two tiles show one place when the first is at least a fraction of the second (the
    overlap test of :func:`group_places`, example exclusion and ``same_place``).
    """
    import shapely

    shared = shapely.area(shapely.intersection(footprints, place))
    return shared, np.minimum(shapely.area(footprints), place.area)


def _page(candidates: int) -> int:
    """Hits per Qdrant request while collecting candidates (a few spare for the exact test)."""
    return candidates + max(8, candidates // 4)


def _candidates(
    idx: TileIndex,
    query: np.ndarray,
    region: Region | None,
    want: int,
    with_vectors: bool,
    page: int,
    need_footprints: bool = False,
    exclude: _Exclusion | None = None,
) -> tuple[list[_Candidate], int]:
    """Page through cosine hits until ``want`` pass the exact region test or none remain.

    Only the footprint (for the exact test) and the raw norm (for rescoring) are read per
    candidate, and only when needed (:func:`search` reads full payloads for the final hits);
    the exact test (the footprint's interior overlaps the region) runs vectorised per page.
    Tiles of ``exclude`` (an example and the tiles marked not relevant) never become
    candidates.
    """
    import shapely

    exact = region is not None and region.geometry is not None
    with_fp = exact or need_footprints or (exclude is not None and exclude.place is not None)
    fields = (["footprint"] if with_fp else []) + (["raw_norm", "hub"] if with_vectors else [])
    if exact:
        assert region is not None
        shapely.prepare(region.geometry)
    out: list[_Candidate] = []
    offset, fetched = 0, 0
    while len(out) < want:
        hits = idx.query(
            query, region, limit=page, offset=offset, with_vectors=with_vectors, fields=fields,
            stored=True,
        )  # fmt: skip
        fetched += len(hits)
        if with_fp and hits:
            fps = _footprints([h.payload["footprint"] for h in hits])
        else:
            fps = np.full(len(hits), None, dtype=object)
        if exact and hits:
            assert region is not None
            # inside = the interiors overlap (a tile that only touches the border is out)
            keep = shapely.intersects(fps, region.geometry) & ~shapely.touches(fps, region.geometry)
        else:
            keep = np.ones(len(hits), dtype=bool)
        if exclude is not None and hits:
            keep &= exclude.keep([h.id for h in hits], fps)
        for h, fp, ok in zip(hits, fps, keep, strict=True):
            if not ok:
                continue
            unit = np.asarray(h.vector, dtype=np.float32) if h.vector is not None else None
            hub = h.payload.get("hub")
            out.append(
                _Candidate(
                    h.id, h.score, unit, float(h.payload.get("raw_norm", 1.0)), fp,
                    None if hub is None else float(hub),
                )
            )  # fmt: skip
        if len(hits) < page:
            break
        offset += page
    return out[:want], fetched


FEEDBACK_PLACES = 3
"""Places whose mean image vector a spoken or typed query's feedback moves toward
(``search(feedback=...)``, :func:`feedback_scores`)."""

DEFAULT_FEEDBACK = 0.4
"""``search``'s default feedback weight: on the val mosaic (overlapping tiles at two levels)
recall@10 everywhere rose with v0.3.0 and v0.3.1 on both tilings measured (+1.0 to +3.0) and
class precision in a region by 0.4-0.7 points; on val's whole scenes the voice-to-image half
moved by -0.2 to +0.2 (docs/benchmarks.md, "Feedback from the first places")."""

DISTINCT_PLACES = 0.25
"""``search``'s default ``group_overlap``: distinct places. With the default tiling (tiles
overlapping by half, two levels), a tile's diagonal neighbours share a quarter of it, so at
this value they join its place too and no two hits share much ground; at 0.5 (the default
until session 24) they stayed places of their own, and about half of a region's top 10 showed
some ground of a better hit again. On the val mosaic 0.25 raised recall@10 everywhere on
every tiling (half-shift 84.67 -> 88.00, aligned 92.33 -> 95.67, a random offset 69.33 ->
85.00; in a region -0.7 to 0) (docs/benchmarks.md, "Class precision in a region")."""

GROUP_CANDIDATES = 8
"""With grouping, at least ``GROUP_CANDIDATES * k`` candidates are scored: with half-overlapping
tiles at two levels, one place is covered by up to about eight tiles."""


def group_places(
    footprints: Sequence[Any], order: Any, k: int, min_overlap: float = 0.5
) -> list[list[int]]:
    """Group hits that show the same place: one group per place, best first.

    Walking the hits best first, a hit joins the first group whose best footprint it overlaps
    by at least ``min_overlap`` of the smaller of the two areas (so a tile inside a coarser one,
    or two half-overlapping neighbours, are one place); otherwise it starts a group. Every hit
    is placed, so a group counts all the candidate tiles that agree on its place.

    Args:
        footprints: Footprint (shapely, lon/lat) of each hit.
        order: Hit indices, best first (a sequence or an integer array).
        k: Groups to return.
        min_overlap: Shared fraction of the smaller footprint that makes two hits one place.

    Returns:
        Up to ``k`` groups, each a list of hit indices whose first is the group's best hit.
    """
    fps = np.asarray(list(footprints), dtype=object)
    if not len(fps):
        return []
    sure, maybe = _box_tests(fps, min_overlap)
    groups: list[list[int]] = []
    leaders: list[int] = []  # hit index of each group's best tile
    for i in (int(j) for j in order):
        same = sure[i, leaders]
        ask = np.flatnonzero(maybe[i, leaders])  # the boxes cannot tell: intersect exactly
        if ask.size:
            shared, smaller = shared_area(fps[np.asarray(leaders)[ask]], fps[i])
            same[ask] = one_place(shared, smaller, min_overlap)
        hit = np.flatnonzero(same)
        if hit.size:
            groups[int(hit[0])].append(i)
        else:
            groups.append([i])
            leaders.append(i)
    return groups[:k]


def feedback_scores(
    units: np.ndarray, scores: np.ndarray, leads: Sequence[int] | np.ndarray, weight: float
) -> np.ndarray:
    """Scores moved toward what the first places look like (pseudo-relevance feedback).

    Each candidate gains ``weight`` times its cosine to the normalised mean of the lead
    candidates' unit image vectors (the best tile of each of the first
    :data:`FEEDBACK_PLACES` places): images like the query's best matches rise, so a
    scene the voice describes loosely is found through the ones it describes well.

    Args:
        units: ``(n, d)`` unit image vectors of the candidates.
        scores: ``(n,)`` their scores (IA + text route, as rescored).
        leads: Indices of the lead candidates.
        weight: Weight of the cosine to their mean (0: the scores unchanged).

    Returns:
        The ``(n,)`` scores with the feedback added.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if weight == 0 or not len(leads):
        return scores
    centre = np.asarray(units, dtype=np.float64)[np.asarray(leads, dtype=int)].mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    moved: np.ndarray = scores + weight * (np.asarray(units, dtype=np.float64) @ centre)
    return moved


def _box_tests(fps: np.ndarray, min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """What the bounding boxes tell of every pair of footprints, without intersecting them.

    Two footprints are one place when they share ``min_overlap`` of the smaller area
    (:func:`shared_area`). The boxes' overlap bounds the shared area from above; from below,
    that overlap less the parts of either box its footprint leaves empty. Tiles are
    near-rectangles, so most pairs are decided here and shapely intersects only the rest.

    Returns:
        ``(sure, maybe)``, ``(N, N)`` each: the pairs certainly one place, and the pairs the
        exact test must decide.
    """
    import shapely

    x0, y0, x1, y1 = shapely.bounds(fps).T
    areas = shapely.area(fps)
    empty = np.clip((x1 - x0) * (y1 - y0) - areas, 0, None)
    # the boxes' overlap, one axis at a time (no (N, N, 2) temporaries: half the time)
    width = np.clip(np.minimum.outer(x1, x1) - np.maximum.outer(x0, x0), 0.0, None)
    height = np.clip(np.minimum.outer(y1, y1) - np.maximum.outer(y0, y0), 0.0, None)
    box = width * height
    smaller = np.maximum(np.minimum.outer(areas, areas), 1e-30)
    need = min_overlap * (1.0 - PLACE_TOLERANCE) * smaller  # as one_place decides
    sure = box - empty[:, None] - empty[None, :] >= need * (1 + 1e-9)  # margins for rounding
    maybe = (box >= need * (1 - 1e-9)) & ~sure
    return sure, maybe


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time to ``timings[name]`` in milliseconds."""
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + 1000 * (time.perf_counter() - t)


@dataclass
class _Query:
    """Stage 1's output: what to search for, and what must not come back."""

    vector: np.ndarray  # searched by cosine in Qdrant
    audio_raw: np.ndarray | None  # raw audio embedding for IA/BSWFR (spoken/typed, no marks)
    exclude: _Exclusion | None
    description: dict[str, Any]
    text_unit: np.ndarray | None = None  # the text route's unit vector (transcript or typed)
    text_weight: float = 0.0  # its weight in both stages (route weight x word coverage)


# Over 80 lines because of its public signature and docstring (117 of 190); the body (73)
# calls the named stages (_check_search_args, _make_query, _candidates, _score and after;
# _why_empty when nothing was found).
def search(
    audio: AudioSource | None = None,
    index: TileIndex | PathLike | None = None,
    model: ModelSource = None,
    *,
    text: str | None = None,
    example: Any = None,
    relevant: Any = None,
    not_relevant: Any = None,
    refine_method: str = "rocchio",
    bbox: BBox | None = None,
    geometry: Any = None,
    datetime: Any = None,
    platform: Any = None,
    k: int = 20,
    rescore: bool = True,
    rerank: bool = False,
    candidates: int = DEFAULT_CANDIDATES,
    rerank_k: int = 30,
    sample_rate: int | None = None,
    group: bool = True,
    group_overlap: float = DISTINCT_PLACES,
    transcribe: bool = False,
    text_weight: float | None = None,
    hubness: float | None = None,
    feedback: float | None = None,
) -> GeoDataFrame:
    """Answer a spoken, typed or example query with georeferenced tiles, in a region.

    Args:
        audio: A path, bytes, a binary file object, or an array (with ``sample_rate``).
        index: A :class:`TileIndex` or an embedded index folder.
        model: Model, checkpoint folder, or None for the shipped starter checkpoint (must be
            the index's model).
        text: A typed query instead of ``audio``: spoken by the bundled speech synthesis
            (:func:`rsia_geo.training.synthesis.speak`) and searched through the same audio
            encoder (``attrs["query"]`` says so).
        example: "More like this" instead of ``audio``: an indexed tile (its id or a hit
            row), pixels (``(bands, H, W)`` in [0, 1] or uint8) or a polygon (the indexed
            tiles under it); see :func:`rsia_geo.similar.resolve_example`. The example's
            place is never returned (:func:`rsia_geo.similar.same_place` lists it on other
            dates).
        relevant: Tiles marked relevant (ids, hit rows or a hits table): the query moves
            toward them (:func:`rsia_geo.similar.refine`). Alone, without audio, text or
            example, they are the query.
        not_relevant: Tiles marked not relevant: the query moves away, and they never return.
        refine_method: ``"rocchio"`` or ``"linear"`` (:func:`rsia_geo.similar.refine`; the
            classifier needs marks of both kinds, Rocchio serves until then and
            ``attrs["query"]["refine_method"]`` says which moved the query).
        bbox: ``(minx, miny, maxx, maxy)`` in lon/lat; ``minx > maxx`` crosses 180.
        geometry: Polygon region: shapely, GeoJSON, or a GeoDataFrame (its union).
        datetime: ``"start/end"`` interval on the tiles' acquisition time.
        platform: Keep tiles of these STAC platforms (``"naip"``, ``"landsat-8,landsat-9"``).
        k: Results.
        rescore: Rescore candidates with the exact IA pairwise score (spoken or typed
            queries without marks: IA scores an image against audio).
        rerank: Apply the BSWFR mutual-rank rerank (needs the checkpoint's bank; spoken or
            typed queries without marks).
        candidates: Cosine candidates passed to the rescoring stages (at least
            ``GROUP_CANDIDATES * k`` when grouping).
        rerank_k: BSWFR ``k``.
        sample_rate: Sample rate of an array ``audio``.
        group: One hit per place (:func:`group_places`): overlapping tiles (overlapping
            tilings, several levels) are grouped, the best kept, with how many tiles agreed
            and their union footprint.
        group_overlap: Shared fraction of the smaller footprint that makes two tiles one place.
            The default, :data:`DISTINCT_PLACES` (0.25), groups a tile of the default tiling
            (tiles overlapping by half) with its edge and diagonal neighbours and the coarser
            tiles over it, so no two hits share much ground; 0.5 keeps the diagonal
            neighbours (a quarter shared) as places of their own (docs/benchmarks.md, "Class
            precision in a region").
        transcribe: Also say what the speech recogniser heard in a spoken query
            (``attrs["query"]["heard"]``; Whisper tiny.en on a short window, ~50 ms on 2
            cores; None with the reason in ``heard_unavailable`` when no recogniser is
            installed). Always on when the text route runs.
        text_weight: Weight of the text route (:mod:`rsia_geo.models.text`) for spoken and
            typed queries: the transcript (or the typed text) embedded in the image space,
            fused with the audio route in both stages
            (:func:`~rsia_geo.models.text.fused_scores`), times the share of the query's words
            the route learned (``attrs["query"]["text_weight"]`` says the weight used).
            None: the checkpoint's default (its ``text.json``; 0 when it ships no text
            route); 0: the audio route alone.
        hubness: Weight of each candidate's hubness (its mean cosine to its 10 nearest
            reference clips of the checkpoint's bank, :func:`rsia_geo.rerank.hubness`)
            subtracted from its rescored score, for spoken and typed queries: tiles that
            match every query a little ("hubs") fall behind tiles that match this one
            (CSLS's weight is :data:`~rsia_geo.rerank.HUB_BETA`, 0.5). None or 0: off (the
            default: on whole scenes it raises val mR, but on an index of overlapping tiles
            at two levels the coarser tiles, less like any one caption, rise and recall
            falls; docs/benchmarks.md). An index stores each tile's hubness; one made before
            (or against another bank) has it computed for the candidates
            (``attrs["query"]["hubness_from"]``).
        feedback: Weight of the first places' look, for spoken and typed queries rescored by
            IA: each candidate gains this times its cosine to the mean image vector of the
            best tiles of the first :data:`FEEDBACK_PLACES` places
            (:func:`feedback_scores`), so scenes like the query's best matches rise (the
            ``score`` column includes it; ``score_ia`` does not). None:
            :data:`DEFAULT_FEEDBACK`; 0: off (``attrs["query"]["feedback"]`` says the weight
            used).

    Returns:
        A GeoDataFrame in EPSG:4326, best first: ``rank``, ``score``, ``score_cosine``,
        ``score_ia``, ``score_bswfr``, ``rank_cosine``, ``rank_ia``, ids, ``href``,
        ``level``, ``window``, ``datetime``, ``platform``, ``crs``, ``gsd``, ``group_size``
        (tiles that agree on the place), ``group_tile_ids``, ``group_footprint`` (GeoJSON of
        their union), ``tile`` (the :class:`~rsia_geo.tiles.Tile`) and the best tile's
        footprint as geometry;
        ``attrs["timings"]`` holds per-stage milliseconds, ``attrs["query"]`` what was
        searched for; when nothing was found, ``attrs["empty"]`` says why (the filter that
        leaves no tile, with what the index holds).

    Raises:
        InvalidRegionError: Bad bbox or geometry.
        InvalidArgumentError: Bad dates, k <= 0, no or several queries, unknown tiles.
        AudioError: Unusable audio.
        ModelMismatchError: The model is not the index's.
    """
    from rsia_geo.models.checkpoint import model_signature

    _check_search_args(audio, text, example, relevant, index, k, group_overlap)
    _check_weight("hubness", hubness, "None or 0: off, the default; 0.5: CSLS's weight")
    _check_weight("feedback", feedback, f"None: the default, {DEFAULT_FEEDBACK}; 0: off")
    candidates = max(candidates, k, GROUP_CANDIDATES * k if group else 0)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    region = _query_region(bbox, geometry, datetime, platform)
    mdl = load_model(model)
    signature = model_signature(mdl)
    assert index is not None  # checked above
    idx, owned = _open_index(index)
    try:
        idx.check_model(signature)
        q = _make_query(
            mdl, idx, timings, audio=audio, text=text, sample_rate=sample_rate,
            example=example, relevant=relevant, not_relevant=not_relevant,
            refine_method=refine_method, group_overlap=group_overlap, transcribe=transcribe,
            text_weight=text_weight,
        )  # fmt: skip
        if rerank and q.audio_raw is None:
            raise InvalidArgumentError(
                "rerank=True reranks spoken or typed queries (BSWFR compares audio); drop it "
                "for example queries and queries refined with marks"
            )
        cross = q.audio_raw is not None and (rescore or rerank)
        with _timed(timings, "search_ms"):
            cands, fetched = _candidates(
                idx, q.vector, region, candidates, cross, page=_page(candidates),
                need_footprints=group, exclude=q.exclude,
            )  # fmt: skip
        beta = _hub_beta(mdl, hubness) if cross and rescore else 0.0
        fed = (DEFAULT_FEEDBACK if feedback is None else float(feedback)) if rescore else 0.0
        scores, order, rank_cos, rank_ia = _score(
            mdl, q, cands, cross, rerank, rerank_k, k, timings, hub=(idx, beta),
            feedback=(fed, group_overlap if group else None),
        )  # fmt: skip
        with _timed(timings, "group_ms"):
            groups = (
                group_places([c.footprint for c in cands], order, k, group_overlap)
                if group and cands
                else [[int(i)] for i in order[:k]]
            )
        with _timed(timings, "fetch_ms"):
            payloads = {h.id: h.payload for h in idx.retrieve([cands[g[0]].id for g in groups])}
        rows = _hit_rows(cands, groups, payloads, scores, rank_cos, rank_ia)
        timings["total_ms"] = 1000 * (time.perf_counter() - t0)
        why = None if rows else _why_empty(idx, (bbox, geometry, datetime, platform), q.exclude)
    finally:
        if owned:
            idx.close()
    gdf = _hits_frame(rows)
    gdf.attrs.update(
        timings={k2: round(v, 2) for k2, v in timings.items()},
        query=q.description,
        candidates=len(cands),
        fetched=fetched,
        region=_region_attr(region),
        filters=_filters_attr(
            region,
            datetime,
            k=k,
            group=group,
            group_overlap=group_overlap if group else None,
            rescore=rescore,
            rerank=rerank,
        ),
        model={key: signature.get(key) for key in ("model_id", "version", "weights_sha256")},
    )
    if why is not None:
        gdf.attrs["empty"] = why
    return gdf


def _query_region(bbox: Any, geometry: Any, datetime: Any, platform: Any) -> Region | None:
    """The search's region and filters (:func:`rsia_geo.query.make_region`), None if none."""
    if all(v is None for v in (bbox, geometry, datetime, platform)):
        return None
    return make_region(bbox, geometry, datetime, platform)


def _why_empty(
    idx: TileIndex, filters: tuple[Any, Any, Any, Any], exclude: _Exclusion | None
) -> str:
    """Why a search found nothing, in words an analyst can act on (``attrs["empty"]``).

    Counts the index's tiles under each filter alone (only when nothing was found), so the
    answer names the filter that leaves nothing, with what the index does hold.

    Args:
        idx: The open index.
        filters: The search's ``(bbox, geometry, datetime, platform)``.
        exclude: The tiles the query may not return (an example's place, marked tiles).

    Returns:
        One or two sentences (a generic one when the index cannot be counted).
    """
    try:
        return _why_empty_counted(idx, filters, exclude)
    except RsiaError as exc:  # explaining is best effort: the (empty) answer stands
        logger.warning("could not tell why the search found nothing: %s", exc)
        return "no tile matched the query and its filters"


def _why_empty_counted(
    idx: TileIndex, filters: tuple[Any, Any, Any, Any], exclude: _Exclusion | None
) -> str:
    """:func:`_why_empty`'s counts and sentences."""
    total = idx.count()
    if total == 0:
        return "the index holds no tiles: index a catalog into it first (rsia-geo index)"
    bbox, geometry, datetime, platform = filters
    extent = idx.extent() or {}
    reasons = []
    if (bbox is not None or geometry is not None) and not idx.count(make_region(bbox, geometry)):
        box = extent.get("bbox")
        covers = f" (the index's {total} tiles lie within {lonlat_text(box)})" if box else ""
        reasons.append("no indexed tile lies in the region" + covers)
    when = make_region(datetime=datetime) if datetime is not None else None
    if when is not None and not idx.count(when):
        asked = datetime if isinstance(datetime, str) else _interval_text(when.time_range)
        start, end = (str(t or "..")[:10] for t in extent.get("interval") or (None, None))
        reasons.append(
            f"no indexed tile was acquired in {asked}"
            + (f" (the tiles span {start} to {end})" if extent.get("interval") else "")
        )
    kept = make_region(platform=platform) if platform is not None else None
    if kept is not None and not idx.count(kept):
        names = ", ".join(kept.platforms or ())
        held = extent.get("platforms")  # None: not recorded for this index
        holds = ""
        if held:
            holds = f" (the index holds {', '.join(held)})"
        elif held is not None:
            holds = " (the index's tiles name no platform)"
        reasons.append(f"no indexed tile is from platform {names}{holds}")
    if reasons:
        widen = "these filters" if len(reasons) > 1 else "the filter"
        return "; ".join(reasons) + f": widen {widen}, or index imagery that matches"
    if any(f is not None for f in filters) and not idx.count(
        make_region(bbox, geometry, datetime, platform)
    ):
        return (
            "no indexed tile matches the region, the dates and the platform together (each "
            "alone matches some): widen one of them"
        )
    if exclude is not None and (exclude.ids or exclude.place is not None):
        return (
            "every tile the query reached is the example's place or marked not relevant: "
            "clear some marks, or widen the region"
        )
    if bbox is not None or geometry is not None:
        return (
            "no indexed tile's footprint overlaps the region's outline (some lie in its "
            "bounding box): draw the region over the imagery"
        )
    return "the search reached no tile"


def _interval_text(span: tuple[float | None, float | None] | None) -> str:
    """``start/end`` of POSIX times as ISO 8601 UTC (``..`` for an open side)."""
    from rsia_geo.query import _iso_utc

    start, end = span or (None, None)
    return f"{_iso_utc(start) or '..'}/{_iso_utc(end) or '..'}"


def _region_attr(region: Region | None) -> dict[str, Any] | None:
    """The region of ``attrs["region"]``: GeoJSON (attrs stay JSON: Parquet files hold them)."""
    from rsia_geo._geo import geojson_geometry

    if region is None or region.geometry is None:
        return None
    return geojson_geometry(region.geometry)


def _filters_attr(region: Region | None, datetime: Any, **options: Any) -> dict[str, Any]:
    """The filters and options of ``attrs["filters"]``."""
    platforms = list(region.platforms) if region is not None and region.platforms else None
    return {
        "datetime": None if datetime is None else str(datetime),
        "platform": platforms,
        **options,
    }


def _feedback(
    cands: Sequence[_Candidate],
    units: np.ndarray,
    scores: np.ndarray,
    order: np.ndarray,
    weight: float,
    group_overlap: float | None,
) -> np.ndarray:
    """:func:`feedback_scores` of the candidates toward their first :data:`FEEDBACK_PLACES`.

    ``units`` are the candidates' unit image vectors (stacked once by :func:`_score`).
    """
    if group_overlap is not None:  # one lead per place: overlapping tiles are one place
        leads = _first_places([c.footprint for c in cands], order, group_overlap)
    else:
        leads = [int(i) for i in order[:FEEDBACK_PLACES]]
    return feedback_scores(units, scores, leads, weight)


def _first_places(footprints: Sequence[Any], order: np.ndarray, min_overlap: float) -> list[int]:
    """The best hits of the first :data:`FEEDBACK_PLACES` places, as :func:`group_places` leads.

    Found without placing every hit: the walk stops at the last lead.
    """
    fps = np.asarray(list(footprints), dtype=object)
    leads: list[int] = []
    for i in (int(j) for j in order):
        if leads and one_place(*shared_area(fps[leads], fps[i]), min_overlap).any():
            continue
        leads.append(i)
        if len(leads) == FEEDBACK_PLACES:
            break
    return leads


def _check_search_args(
    audio: Any, text: Any, example: Any, relevant: Any, index: Any, k: Any, group_overlap: float
) -> None:
    """Refuse bad search arguments before any work, each with its fix."""
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise InvalidArgumentError(f"k={k!r} must be a positive integer (e.g. k=20)")
    if index is None:
        raise InvalidArgumentError("index is required: a TileIndex or an index folder")
    given = [
        n for n, v in (("audio", audio), ("text", text), ("example", example)) if v is not None
    ]
    if len(given) > 1:
        raise InvalidArgumentError(
            f"give one query, not {' and '.join(given)}: audio (a recording), text= (typed) "
            "or example= (a tile, pixels or a polygon)"
        )
    if not given and relevant is None:
        raise InvalidArgumentError(
            "give a query: audio (a recording), text= (typed), example= (a tile, pixels or a "
            "polygon), or relevant= tiles"
        )
    number = isinstance(group_overlap, (int, float)) and not isinstance(group_overlap, bool)
    if not number or not 0.0 < group_overlap <= 1.0:
        raise InvalidArgumentError(
            f"group_overlap={group_overlap!r} must be in (0, 1]: the shared fraction of the "
            "smaller tile that makes two tiles one place, e.g. 0.25 (the default: distinct "
            "places) or 0.5 (diagonal neighbours stay places of their own)"
        )


def _make_query(
    model: Any,
    idx: TileIndex,
    timings: dict[str, float],
    *,
    audio: Any,
    text: str | None,
    sample_rate: int | None,
    example: Any,
    relevant: Any,
    not_relevant: Any,
    refine_method: str,
    group_overlap: float,
    transcribe: bool = False,
    text_weight: float | None = None,
) -> _Query:
    """Stage 1 of :func:`search`: the query vector, from audio, text, an example and marks."""
    from rsia_geo.similar import (
        REFINE_METHODS,
        refine,
        resolve_example,
        stored_vectors,
        tile_ids,
    )

    audio_raw: np.ndarray | None = None
    vector: np.ndarray | None = None
    exclude: _Exclusion | None = None
    text_unit: np.ndarray | None = None
    weight = 0.0
    if audio is not None or text is not None:
        audio_raw, vector, description, text_unit, weight = _spoken_or_typed(
            model, timings, audio, text, sample_rate, transcribe, text_weight
        )
    elif example is not None:
        with _timed(timings, "example_ms"):
            ex = resolve_example(example, idx, model)
        vector, description = ex.vector, dict(ex.description)
        exclude = _Exclusion(set(ex.tile_ids), ex.place, group_overlap)
    else:
        description = {"kind": "relevant"}
    pos_ids = tile_ids(relevant, "relevant")
    neg_ids = tile_ids(not_relevant, "not_relevant")
    both = set(pos_ids) & set(neg_ids)
    if both:
        raise InvalidArgumentError(
            f"tiles {sorted(both)[:3]} are marked both relevant and not relevant; keep one mark"
        )
    if pos_ids or neg_ids:
        with _timed(timings, "refine_ms"):
            pos, _ = stored_vectors(idx, pos_ids, "relevant")
            neg, _ = stored_vectors(idx, neg_ids, "not_relevant")
            # a classifier needs both kinds of marks; with one kind, Rocchio moves the query
            # (an unknown method is passed on: refine() names it)
            one_kind = not (pos_ids and neg_ids)
            used = "rocchio" if one_kind and refine_method in REFINE_METHODS else refine_method
            vector = refine(vector, pos, neg, method=used)
        audio_raw, text_unit = None, None  # the query is no longer audio: cosine scores it
        exclude = exclude or _Exclusion(set())
        exclude.ids |= set(neg_ids)
        description = {
            **description, "relevant": len(pos_ids), "not_relevant": len(neg_ids),
            "refine_method": used,
        }  # fmt: skip
    assert vector is not None
    return _Query(
        np.asarray(vector, dtype=np.float64), audio_raw, exclude, description, text_unit, weight
    )


def _spoken_or_typed(
    model: Any,
    timings: dict[str, float],
    audio: Any,
    text: str | None,
    sample_rate: int | None,
    transcribe: bool,
    text_weight: float | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], np.ndarray | None, float]:
    """A spoken or typed query through the audio route and, when it has one, the text route.

    Returns:
        ``(raw audio embedding, query vector, description, text unit vector or None, text
        weight)``: the vector is ``unit(audio) + w unit(text)`` (the audio alone without text).
    """
    encoder, route_weight = _text_route(model, text_weight)
    hear = (transcribe or encoder is not None) and audio is not None
    with _timed(timings, "encode_audio_ms"):
        audio_raw, description, heard_later = _encode_query(
            model, audio, text, sample_rate, hear=hear
        )
    vector, text_unit, weight = audio_raw, None, 0.0
    if heard_later is not None:
        with _timed(timings, "transcribe_ms"):  # what is left of decoding after the head
            description.update(heard_later.result())
    said = text if text is not None else description.get("heard")
    if encoder is not None and said:
        heard = text is None  # a transcript, not typed text
        with _timed(timings, "encode_text_ms"):
            text_unit = encoder.encode([said], heard=heard)[0].numpy().astype(np.float64)
        weight = encoder.weight_for(said, route_weight)
        vector = audio_raw / max(float(np.linalg.norm(audio_raw)), 1e-12) + weight * text_unit
        description["text_weight"] = round(weight, 4)
        description["text_route"] = "+".join(encoder.members(heard=heard))
    return audio_raw, vector, description, text_unit, weight


def _text_route(model: Any, text_weight: float | None) -> tuple[Any, float]:
    """The checkpoint's text encoder and the route weight, or ``(None, 0)`` when it is off."""
    from rsia_geo.weights import text_encoder

    number = isinstance(text_weight, (int, float)) and not isinstance(text_weight, bool)
    if text_weight is not None and (not number or not np.isfinite(text_weight) or text_weight < 0):
        raise InvalidArgumentError(
            f"text_weight={text_weight!r} must be a number >= 0 (0: the audio route alone)"
        )
    if text_weight == 0:
        return None, 0.0
    encoder = text_encoder(model)
    if encoder is None:
        if text_weight is not None:
            raise InvalidArgumentError(
                f"text_weight={text_weight} needs a text route, which this checkpoint does not "
                "ship (no text.safetensors beside it); train one with `rsia-geo train-text` "
                "or leave text_weight unset"
            )
        return None, 0.0
    return encoder, encoder.default_weight if text_weight is None else float(text_weight)


def _score(
    model: Any,
    q: _Query,
    cands: Sequence[_Candidate],
    cross: bool,
    rerank: bool,
    rerank_k: int,
    k: int,
    timings: dict[str, float],
    hub: tuple[TileIndex, float] | None = None,
    feedback: tuple[float, float | None] = (0.0, None),
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Stages 2-3 of :func:`search`: cosine order, IA rescoring, feedback, BSWFR rerank.

    ``hub`` is ``(index, weight)``: the rescored scores lose ``weight`` times each
    candidate's hubness (:func:`_candidate_hubness`); the query's description says so.
    ``feedback`` is ``(weight, group overlap or None)``: the rescored scores gain
    :func:`feedback_scores` toward the first places (grouped as :func:`group_places`
    groups them, or the first candidates without grouping).

    Returns:
        ``(scores by column, final order, cosine ranks, IA ranks)`` over the candidates.
    """
    import torch

    from rsia_geo.models.alac import ia_scores

    cos = np.array([c.cosine for c in cands])
    order = np.argsort(-cos, kind="stable")
    rank_cos = np.empty(len(cands), dtype=int)
    rank_cos[order] = np.arange(len(cands))
    ia = np.full(len(cands), np.nan)
    bsw = np.full(len(cands), np.nan)
    final = cos
    if cross and cands:
        assert q.audio_raw is not None
        with _timed(timings, "rescore_ms"):
            raw_v = np.stack([np.asarray(c.unit) * c.raw_norm for c in cands])
            ia = ia_scores(
                torch.from_numpy(raw_v.astype(np.float32)),
                torch.from_numpy(q.audio_raw[None].astype(np.float32)),
            )[:, 0].numpy()
            units = np.stack([np.asarray(c.unit, dtype=np.float64) for c in cands])
            if q.text_unit is not None:  # the text route's share (models.text.fused_scores)
                ia = ia + q.text_weight * (units @ q.text_unit)
            penalty = np.zeros(len(cands))
            if hub is not None and hub[1] > 0:
                hubs, source = _candidate_hubness(model, hub[0], cands, raw_v)
                penalty = hub[1] * hubs
                q.description.update(hubness=hub[1], hubness_from=source)
            final = ia - penalty  # score_ia stays the IA (+ text) score
            order = np.argsort(-final, kind="stable")
            if feedback[0] > 0:
                with _timed(timings, "feedback_ms"):
                    final = _feedback(cands, units, final, order, *feedback)
                    order = np.argsort(-final, kind="stable")
                q.description["feedback"] = feedback[0]
        if rerank:
            with _timed(timings, "rerank_ms"):
                # the rerank depth covers the k hits returned, so every hit is reranked
                bsw = _bswfr_with_bank(model, raw_v, q.audio_raw, final, max(rerank_k, k), penalty)
                order, final = np.argsort(-bsw, kind="stable"), bsw
    rank_ia = np.empty(len(cands), dtype=int)
    rank_ia[np.argsort(-ia if cross else -cos, kind="stable")] = np.arange(len(cands))
    scores = {"score": final, "score_cosine": cos, "score_ia": ia, "score_bswfr": bsw}
    return scores, order, rank_cos, rank_ia


def _check_weight(name: str, value: Any, meaning: str) -> None:
    """Refuse a score weight that is not a finite number >= 0 (None: its default)."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{name}={value!r} must be a number >= 0 ({meaning})")


def _hub_beta(model: Any, hubness: float | None) -> float:
    """The hubness weight a search uses: as given (None: 0, off)."""
    from rsia_geo.weights import hub_bank

    if not hubness:
        return 0.0
    if hub_bank(model) is None:
        raise InvalidArgumentError(
            f"hubness={hubness!r} needs the checkpoint's audio_bank.safetensors (the "
            "reference clips hubness is measured against), which this model lacks; "
            "pass hubness=0"
        )
    return float(hubness)


def _candidate_hubness(
    model: Any, idx: TileIndex, cands: Sequence[_Candidate], raw_v: np.ndarray
) -> tuple[np.ndarray, str]:
    """Each candidate's hubness, and where it came from (``index``, ``computed``, ``both``).

    Stored values are used when the index records this model's bank; the others (an index
    made before hubness was stored, or against another bank) are computed here.
    """
    from rsia_geo.weights import hub_bank, tile_hubness

    found = hub_bank(model)
    assert found is not None  # _hub_beta asked for a bank
    stored = idx.hub_bank == found[1]
    hubs = np.array([c.hub if stored and c.hub is not None else np.nan for c in cands])
    missing = np.isnan(hubs)
    if missing.any():
        hubs[missing] = tile_hubness(model, raw_v[missing])
    source = "computed" if missing.all() else "both" if missing.any() else "index"
    return hubs, source


def _hits_frame(rows: list[dict[str, Any]], columns: Sequence[str] = HIT_COLUMNS) -> GeoDataFrame:
    """Rows with a ``geometry`` as a GeoDataFrame (EPSG:4326); an empty one keeps ``columns``."""
    import geopandas as gpd

    if rows:
        return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=gpd.GeoSeries([], crs="EPSG:4326"))


def _heard(
    model: Any, samples: np.ndarray, found: tuple[Any, bool] | None = None
) -> dict[str, Any]:
    """What the speech recogniser heard: ``{"heard": text}``, or None and the reason.

    Heard with the checkpoint's recogniser prompt (``rsia_geo.weights.recogniser_prompt``);
    a query heard with a confidence under 0.5 is decoded again with beam search
    (``rsia_geo.models.whisper.recogniser_retry``, ``RSIA_RECOGNISER_RETRY``). ``found`` is
    the front end's ``recogniser()`` when the caller resolved it already (its thread's).
    """
    from rsia_geo.errors import RsiaError
    from rsia_geo.models.whisper import recogniser_retry
    from rsia_geo.weights import _prompt_and_source

    retry_beam, retry_below = recogniser_retry()  # a bad setting fails the query, loudly
    try:  # the front end's Whisper (or RSIA_RECOGNISER_PATH's), loaded once per process
        prompt, source = _prompt_and_source(model)
        fe = model.frontend
        recogniser, shared = found or fe.recogniser()
        # the front end's window, so that its encoder pass is decoded (a recogniser of its own
        # takes the rule's window)
        window = fe.whisper_frames(len(samples)) if shared else None
        heard = recogniser.recognise(
            [samples], window=window, prompt=prompt, retry_beam=retry_beam, retry_below=retry_below
        )[0]
        out: dict[str, Any] = {
            "heard": heard.text,
            "heard_confidence": round(heard.confidence, 4),
            "heard_beam": heard.beam,  # 1: greedy; the retry's beam when it was likelier
            "heard_prompt": source,  # which prompt it was heard after, for the query's record
        }
        if heard.alternatives:  # unsure: what else it may have said (the record only; the
            # text route embeds the transcript kept, docs/benchmarks.md "Hedging...")
            out["heard_alternatives"] = [[t, round(c, 4)] for t, c in heard.alternatives]
        return out
    except RsiaError as exc:  # no recogniser installed: the search itself still answers
        return {"heard": None, "heard_unavailable": str(exc)}


def _encode_query(
    model: Any, audio: Any, text: str | None, sample_rate: int | None, *, hear: bool = False
) -> tuple[np.ndarray, dict[str, Any], Future[dict[str, Any]] | None]:
    """Stage 1 of :func:`search`: the raw audio embedding of a spoken or typed query.

    With ``hear``, the recogniser decodes the query (:func:`_heard`) in a second thread from
    the front end's encoder pass while the trained head embeds it (decoding runs on one
    thread, ``WhisperEncoder(decode_threads=1)``; the head on torch's: ~5 ms off a query on
    2 cores, docs/benchmarks.md, "Threads").

    Returns:
        ``(raw audio embedding, the query's description, what was heard (a future) or None)``.
    """
    import torch

    from rsia_geo.audio import load_audio
    from rsia_geo.models._modes import eval_mode

    if text is not None:
        from rsia_geo.training.synthesis import speak

        samples, speaker = speak(text)
        query = {"kind": "typed", "text": " ".join(text.split()), "voiced_by": speaker}
    else:
        samples = load_audio(audio, sample_rate=sample_rate, trim=True).samples
        query = {"kind": "spoken"}
    wave = torch.from_numpy(samples)[None]
    if not hear:
        return model.encode_audio(wave, normalize=False)[0].numpy(), query, None
    with eval_mode(model), torch.no_grad():
        feats = model.audio_features(wave)  # the Whisper pass the recogniser decodes
        try:  # found here: torch's thread count (which Whisper it is) is this thread's
            found = model.frontend.recogniser()
        except RsiaError:
            found = None  # _heard says why
        heard = _hearing_pool().submit(_heard, model, samples, found)
        try:
            raw = model.forward_audio_features(feats).float()[0].numpy()
        except BaseException:
            heard.exception()  # wait: the recogniser is not left decoding unseen
            raise
    return raw, query, heard


_HEARING: ThreadPoolExecutor | None = None
_HEARING_LOCK = threading.Lock()


def _hearing_pool() -> ThreadPoolExecutor:
    """The threads that decode spoken queries beside their audio head (made on first use)."""
    global _HEARING
    with _HEARING_LOCK:
        if _HEARING is None:
            _HEARING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rsia-hearing")
        return _HEARING


def _hit_rows(
    cands: Sequence[_Candidate],
    groups: Sequence[Sequence[int]],
    payloads: dict[str, dict[str, Any]],
    scores: dict[str, np.ndarray],
    rank_cos: np.ndarray,
    rank_ia: np.ndarray,
) -> list[dict[str, Any]]:
    """Last stage of :func:`search`: one row (:data:`HIT_COLUMNS` + geometry) per place."""
    import shapely
    from shapely.geometry import shape

    rows = []
    for r, members in enumerate(groups):
        i = members[0]
        c = cands[i]
        p = payloads[c.id]
        footprint = c.footprint if c.footprint is not None else shape(p["footprint"])
        union = (
            shapely.union_all([cands[j].footprint for j in members])
            if len(members) > 1
            else footprint
        )
        rows.append(
            {
                "rank": r + 1,
                **{name: float(values[i]) for name, values in scores.items()},
                "rank_cosine": int(rank_cos[i]) + 1,
                "rank_ia": int(rank_ia[i]) + 1,
                "tile_id": c.id,
                "item_id": p.get("item_id"),
                "collection_id": p.get("collection_id") or None,
                "href": p.get("href"),
                "level": p.get("level"),
                "window": ",".join(str(v) for v in p.get("window", [])),
                "datetime": p.get("datetime"),
                "platform": p.get("platform") or None,
                "crs": p.get("crs"),
                "gsd": p.get("gsd"),
                "group_size": len(members),
                "group_tile_ids": ",".join(cands[j].id for j in members),
                "group_footprint": shapely.to_geojson(union),
                "tile": payload_to_tile({**p, "footprint": footprint}),  # parsed once
                "geometry": footprint,
            }
        )
    return rows


def _bswfr_with_bank(
    model: Any,
    raw_v: np.ndarray,
    a_raw: np.ndarray,
    ia: np.ndarray,
    k: int,
    penalty: np.ndarray | None = None,
) -> np.ndarray:
    """BSWFR for one query, reverse ranks against the checkpoint's reference clips.

    ``penalty`` (per candidate, already subtracted from ``ia``: the hubness) is subtracted
    from the bank's scores too, so that reverse ranks compare like with like.
    """
    import torch

    from rsia_geo.models.alac import ia_scores
    from rsia_geo.rerank import K_MIN, bswfr_query
    from rsia_geo.weights import audio_bank

    bank = audio_bank(model)
    k1 = min(max(K_MIN, k), len(ia))
    order = np.argsort(-ia, kind="stable")[:k1]
    cand = torch.from_numpy(raw_v[order].astype(np.float32))
    bank_scores = ia_scores(cand, bank).numpy()  # (k1, bank), forward order
    if penalty is not None:
        bank_scores = bank_scores - penalty[order][:, None]
    return bswfr_query(ia, bank_scores, k)


def _row_tile(hit: Any) -> Tile:
    """The :class:`Tile` of a hit row (a pandas row or a mapping with a ``tile``)."""
    try:
        tile = hit["tile"]
    except (KeyError, TypeError, IndexError):
        tile = None
    if not isinstance(tile, Tile):
        raise InvalidArgumentError(
            f"read_chip takes a row of rsia_geo.search's hits (with its 'tile' column) or a "
            f"Tile, got {type(hit).__name__}; pass hits.iloc[i] or a Tile"
        )
    return tile


def read_chip(hit: Any, *, out_size: int | None = None) -> np.ndarray:
    """Pixels of a search hit's tile, as ``(bands, H, W)`` float32 in [0, 1].

    Args:
        hit: A row of :func:`search`'s GeoDataFrame (its ``tile``), or a Tile.
        out_size: Output side (default the tile's).

    Returns:
        The chip.

    Raises:
        InvalidArgumentError: ``hit`` is neither a hit row nor a Tile.
    """
    tile = hit if isinstance(hit, Tile) else _row_tile(hit)
    out = read_tile(tile, out_size=out_size)
    assert isinstance(out, np.ndarray)
    return out
