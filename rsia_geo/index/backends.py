"""Storage engines behind :class:`~rsia_geo.index.TileIndex`, one interface for all.

* :class:`EdgeBackend`: Qdrant's own engine in-process (``qdrant-edge-py``), in a local
  folder. The embedded default: payload indexes and exact or HNSW search run in Rust, so a
  geo-filtered query over 100k+ tiles takes milliseconds.
* :class:`ClientBackend`: ``qdrant-client``, either its pure-Python local mode
  (``":memory:"`` or a folder; handy for tests and notebooks, slow at scale) or a Qdrant
  server/cluster by URL (with API key, shards, replication and quantization).

Both receive backend-neutral requests: a unit query vector, a :class:`~rsia_geo.index.payload.
Region` (boxes + time range) and a limit/offset, and return :class:`Hit` tuples. The same
congruence tests run over both (``tests/test_index.py``).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rsia_geo.errors import IndexLockedError, IndexUnavailableError, VectorIndexError
from rsia_geo.index.payload import FLOAT_FIELDS, GEO_FIELDS, KEYWORD_FIELDS
from rsia_geo.query import Region

__all__ = ["Backend", "ClientBackend", "EdgeBackend", "Hit"]

VECTOR = "image"


@dataclass(frozen=True)
class Hit:
    """One search result from a backend.

    Attributes:
        id: Point id (the tile id).
        score: Cosine similarity.
        payload: The stored payload.
        vector: The stored unit vector (when requested).
    """

    id: str
    score: float
    payload: dict[str, Any]
    vector: list[float] | None = None


class Backend(Protocol):
    """What :class:`~rsia_geo.index.TileIndex` needs from a storage engine."""

    quantization: str | None
    """The compressed vectors searched (``None``, ``"int8"``, ``"binary"``)."""

    def exists(self) -> bool:
        """Whether the collection exists."""

    def create(self, dim: int) -> None:
        """Create the collection with payload indexes."""

    def get_meta(self) -> dict[str, Any] | None:
        """Collection metadata (model signature...)."""

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Store collection metadata."""

    def drop(self) -> None:
        """Delete the collection (used after an interrupted creation)."""

    def upsert(
        self,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        """Insert or replace points."""

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored."""

    def query(
        self,
        vector: Sequence[float],
        region: Region | None,
        limit: int,
        offset: int,
        with_vectors: bool,
        fields: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Nearest points inside the region's boxes and time range."""

    def count(self, region: Region | None = None) -> int:
        """Points (inside the region)."""

    def scroll(
        self,
        region: Region | None,
        limit: int,
        offset: Any,
        with_vectors: bool,
        fields: Sequence[str] | None = None,
    ) -> tuple[list[Hit], Any]:
        """One page of the points inside the region, in id order, and the next page's offset."""

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Hit]:
        """Points by id."""

    def optimize(self) -> bool:
        """Build pending index structures (graph, quantized vectors); whether any were built."""

    def close(self) -> None:
        """Release resources."""


def _box_conditions(
    box: tuple[float, float, float, float], shift: float
) -> list[tuple[str, str, float]]:
    minx, miny, maxx, maxy = box
    return [
        ("bbox_minx", "lte", maxx + shift),
        ("bbox_maxx", "gte", minx + shift),
        ("bbox_miny", "lte", maxy),
        ("bbox_maxy", "gte", miny),
    ]


Condition = tuple[str, str, Any]
"""``(field, op, value)``: op ``gt/gte/lt/lte`` (a float range), ``geo_box`` (lon/lat box) or
``any`` (a keyword equal to one of the values)."""


def _region_spec(
    region: Region | None, *, exact: bool = True
) -> tuple[list[list[Condition]], list[Condition]]:
    """``(alternatives, musts)``: OR over alternatives (each an AND of conditions), AND musts.

    With the index's centre margin, a box's alternative starts with a geo-box condition on the
    tile centres (the box grown by the margin): the geo index yields about the tiles of the
    box, where Qdrant would scan for four open-ended ranges. ``exact=False`` (search, which
    checks every candidate's footprint afterwards) keeps only that condition; ``exact=True``
    (counts) adds the bbox ranges. Boxes within two margins of 180 degrees use the ranges only,
    as centres of tiles crossing 180 are wrapped to the other side.
    """
    alts: list[list[Condition]] = []
    musts: list[Condition] = []
    if region is None:
        return alts, musts
    margin = region.centre_margin
    for box in region.boxes:
        x0, y0, x1, y1 = box
        if margin is not None and x0 - 2 * margin[0] >= -180.0 and x1 + 2 * margin[0] <= 180.0:
            dx, dy = margin
            grown = (x0 - dx, max(y0 - dy, -90.0), x1 + dx, min(y1 + dy, 90.0))
            geo: list[Condition] = [("location", "geo_box", grown)]
            alts.append(geo + (_box_conditions(box, 0.0) if exact else []))
            continue  # too far from 180 for tiles stored unwrapped to reach it
        alts.append(list(_box_conditions(box, 0.0)))
        # tiles stored unwrapped (bbox_maxx > 180) also match the box shifted by 360
        alts.append([*_box_conditions(box, 360.0), ("bbox_maxx", "gt", 180.0)])
    if region.time_range is not None:
        t0, t1 = region.time_range
        # overlap: the tile starts before the range ends and ends after it starts
        if t0 is not None:
            musts.append(("timestamp_end" if region.time_overlap else "timestamp", "gte", t0))
        if t1 is not None:
            musts.append(("timestamp", "lte", t1))
    if region.platforms:
        musts.append(("platform", "any", list(region.platforms)))
    return alts, musts


def _records_to_hits(records: Sequence[Any], with_vectors: bool) -> list[Hit]:
    """Hits (score 1.0) from either engine's retrieved records (``id``, ``payload``, ``vector``)."""
    return [
        Hit(
            str(r.id),
            1.0,
            dict(r.payload or {}),
            (r.vector or {}).get(VECTOR) if with_vectors else None,
        )
        for r in records
    ]


def _native_filter(region: Region | None, ns: Any, range_cls: Any, exact: bool = True) -> Any:
    """Build an engine's filter from the neutral spec: OR of box alternatives, AND of musts.

    Args:
        region: The region (None: no filter).
        ns: The engine's models namespace (``qdrant_edge`` or ``qdrant_client.models``), which
            both name ``FieldCondition``, ``GeoBoundingBox``, ``GeoPoint``, ``MatchAny`` and
            ``Filter``.
        range_cls: The engine's float range class (``RangeFloat`` / ``Range``).
        exact: Keep the bbox ranges beside a geo-box condition (see :func:`_region_spec`).

    Returns:
        The engine filter, or None.
    """

    def cond(key: str, op: str, value: Any) -> Any:
        if op == "geo_box":
            x0, y0, x1, y1 = value
            box = ns.GeoBoundingBox(
                top_left=ns.GeoPoint(lon=x0, lat=y1), bottom_right=ns.GeoPoint(lon=x1, lat=y0)
            )
            return ns.FieldCondition(key=key, geo_bounding_box=box)
        if op == "any":
            return ns.FieldCondition(key=key, match=ns.MatchAny(any=list(value)))
        return ns.FieldCondition(key=key, range=range_cls(**{op: value}))

    filter_cls = ns.Filter
    alts, musts = _region_spec(region, exact=exact)
    must = [cond(*c) for c in musts]
    if len(alts) == 1:  # one alternative: AND it in, no OR to plan
        must += [cond(*c) for c in alts[0]]
        alts = []
    should = [filter_cls(must=[cond(*c) for c in alt]) for alt in alts]
    if not must and not should:
        return None
    return filter_cls(must=must or None, should=should or None)


# ------------------------------------------------------------------------------------ edge


class EdgeBackend:
    """Qdrant Edge shard in a local folder.

    Args:
        path: Folder of the shard (created on :meth:`create`).
        hnsw: Build an HNSW graph (otherwise exact search with payload indexes, which measured
            faster below a few hundred thousand points on 2 cores; see docs/benchmarks.md).
            The graph is built by :meth:`optimize` (after an ingest).
        quantization: ``None``, ``"int8"`` or ``"binary"``: compressed copies of the vectors
            that the search scans, the top ``limit * oversampling`` rescored with the original
            vectors (a new shard only; :meth:`optimize` builds them).
        oversampling: Candidates scanned on the compressed vectors per result (default
            :data:`DEFAULT_OVERSAMPLING` of the quantization).
        on_disk: Keep the original vectors in memory-mapped files rather than in RAM (with
            quantization, only the rescoring reads them).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        hnsw: bool = False,
        quantization: str | None = None,
        oversampling: float | None = None,
        on_disk: bool | None = None,
    ) -> None:
        from rsia_geo._lazy import lazy_import

        self.q = lazy_import("qdrant_edge")
        self.path = Path(path)
        self.hnsw = hnsw
        self.quantization = check_quantization(quantization)
        self.oversampling = check_oversampling(oversampling)
        self.on_disk = on_disk
        self.shard: Any = None
        self._written = False  # points upserted since the shard was opened (close flushes)
        if self.exists():
            self._load()

    def _meta_path(self) -> Path:
        return self.path / "rsia_index.json"

    def exists(self) -> bool:
        """Whether the shard exists."""
        return self._meta_path().exists()

    def _load(self) -> None:
        try:
            self.shard = self.q.EdgeShard.load(str(self.path / "shard"))
        except Exception as exc:  # the engine raises plain exceptions
            if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
                raise IndexLockedError(
                    f"index folder {str(self.path)!r} is open in another process; close it "
                    "there, or serve it with `rsia-geo serve` and query the service"
                ) from exc
            raise VectorIndexError(f"cannot open the index at {str(self.path)!r}: {exc}") from exc

    def create(self, dim: int) -> None:
        """Create the shard and its payload indexes."""
        q = self.q
        params: dict[str, Any] = {"size": dim, "distance": q.Distance.Cosine}
        if self.on_disk:
            params["on_disk"] = True
        cfg_kw: dict[str, Any] = {"vectors": {VECTOR: q.EdgeVectorParams(**params)}}
        if self.quantization == "int8":
            cfg_kw["quantization_config"] = q.ScalarQuantizationConfig(
                q.ScalarType.Int8, quantile=0.99, always_ram=True
            )
        elif self.quantization == "binary":
            cfg_kw["quantization_config"] = q.BinaryQuantizationConfig(always_ram=True)
        if self.quantization and not self.hnsw:
            # quantized vectors live in optimized (immutable) segments: let the optimizer make
            # them, with a graph of no edges (m=0) so that search stays an exact scan
            cfg_kw["hnsw_config"] = q.HnswIndexConfig(
                m=0, ef_construct=100, full_scan_threshold=10000
            )
        # quantized: optimize() builds every segment with points, however small (1 KB);
        # plain exact search: never index (0); HNSW: the engine's default threshold
        threshold = 1 if self.quantization else None if self.hnsw else 0
        if threshold is not None and _has_kw(q.EdgeOptimizersConfig, "indexing_threshold"):
            cfg_kw["optimizers"] = q.EdgeOptimizersConfig(indexing_threshold=threshold)
        self.path.mkdir(parents=True, exist_ok=True)
        stale = self.path / "shard"
        if stale.exists():
            # a creation interrupted before rsia_index.json was written: points are only ever
            # stored after it, so the shard holds nothing and is made again
            shutil.rmtree(stale)
        self.shard = q.EdgeShard.create(
            str(self.path / "shard"), q.EdgeConfig(**{k: v for k, v in cfg_kw.items() if v})
        )
        for f in KEYWORD_FIELDS:
            self.shard.update(q.UpdateOperation.create_field_index(f, q.PayloadSchemaType.Keyword))
        for f in FLOAT_FIELDS:
            self.shard.update(q.UpdateOperation.create_field_index(f, q.PayloadSchemaType.Float))
        for f in GEO_FIELDS:
            self.shard.update(q.UpdateOperation.create_field_index(f, q.PayloadSchemaType.Geo))
        self.shard.flush()

    def get_meta(self) -> dict[str, Any] | None:
        """Metadata from ``rsia_index.json``."""
        p = self._meta_path()
        return json.loads(p.read_text()) if p.exists() else None

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Write ``rsia_index.json`` atomically."""
        tmp = self._meta_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(self._meta_path())

    def _filter(self, region: Region | None, exact: bool = True) -> Any:
        return _native_filter(region, self.q, self.q.RangeFloat, exact)

    def upsert(
        self,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        """Insert or replace points (durable through the shard's write-ahead log)."""
        q = self.q
        points = [
            q.Point(i, {VECTOR: _floats(v)}, p)
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        self.shard.update(q.UpdateOperation.upsert_points(points))
        self._written = True

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Stored ids among ``ids``."""
        if not ids:
            return set()
        return {str(r.id) for r in self.shard.retrieve(list(ids), False, False)}

    def query(
        self,
        vector: Sequence[float],
        region: Region | None,
        limit: int,
        offset: int,
        with_vectors: bool,
        fields: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Nearest neighbours inside the region (payload limited to ``fields`` if given)."""
        q = self.q
        params = None
        if self.quantization:
            params = q.SearchParams(
                quantization=q.QuantizationSearchParams(
                    rescore=True,
                    oversampling=oversampling_for(self.quantization, self.oversampling),
                )
            )
        req = q.QueryRequest(
            limit=limit,
            offset=offset or None,
            query=q.Query.Nearest([float(x) for x in vector], using=VECTOR),
            filter=self._filter(region, exact=False),
            with_payload=(list(fields) or False) if fields is not None else True,
            with_vector=[VECTOR] if with_vectors else False,
            params=params,
        )
        out = []
        for r in self.shard.query(req):
            vec = r.vector.get(VECTOR) if with_vectors and r.vector else None
            out.append(Hit(str(r.id), float(r.score), dict(r.payload or {}), vec))
        return out

    def count(self, region: Region | None = None) -> int:
        """Points inside the region (all without one)."""
        return int(self.shard.count(self.q.CountRequest(exact=True, filter=self._filter(region))))

    def scroll(
        self,
        region: Region | None,
        limit: int,
        offset: Any,
        with_vectors: bool,
        fields: Sequence[str] | None = None,
    ) -> tuple[list[Hit], Any]:
        """One page of the points inside the region, in id order, and the next page's offset."""
        q = self.q
        records, nxt = self.shard.scroll(
            q.ScrollRequest(
                offset=offset,
                limit=limit,
                filter=self._filter(region),
                with_payload=(list(fields) or False) if fields is not None else True,
                with_vector=[VECTOR] if with_vectors else False,
            )
        )
        return _records_to_hits(records, with_vectors), nxt

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Hit]:
        """Points by id."""
        recs = self.shard.retrieve(list(ids), True, [VECTOR] if with_vectors else False)
        return _records_to_hits(recs, with_vectors)

    def drop(self) -> None:
        """Delete the shard and the metadata."""
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        shutil.rmtree(self.path / "shard", ignore_errors=True)
        self._meta_path().unlink(missing_ok=True)

    def optimize(self) -> bool:
        """Build what the shard's settings ask for (HNSW graph, quantized vectors) now.

        Without either, the shard is left as it is (exact search needs no optimization).

        Returns:
            Whether any segment was rebuilt.
        """
        if self.shard is None or not (self.hnsw or self.quantization):
            return False
        self.shard.flush()
        return bool(self.shard.optimize())

    def close(self) -> None:
        """Close the shard, flushed first when points were stored (a search-only open is not)."""
        if self.shard is not None:
            if self._written:
                self.shard.flush()
            self.shard.close()
            self.shard = None
            self._written = False


def _floats(v: Any) -> list[float]:
    """A vector as a list of Python floats (as given when it already is one: no copy)."""
    if isinstance(v, list) and (not v or isinstance(v[0], float)):
        return v
    return [float(x) for x in v]


def _has_kw(cls: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


QUANTIZATIONS = ("int8", "binary")
"""Compressed vector kinds of :class:`~rsia_geo.index.TileIndex` (``quantization=``)."""

DEFAULT_OVERSAMPLING = {"int8": 4.0, "binary": 8.0}
"""Candidates scanned on compressed vectors per result before rescoring
(``benchmarks/bench_quantization.py`` measures recall against exact search)."""


def check_quantization(value: str | None) -> str | None:
    """``value`` if it names a quantization (or is None), else a clear error.

    Raises:
        VectorIndexError: Another value.
    """
    if value is None or value in QUANTIZATIONS:
        return value
    raise VectorIndexError(
        f"quantization={value!r}; use None (float32 vectors), 'int8' (scalar, 4x smaller) or "
        "'binary' (32x smaller; rescored with the original vectors)"
    )


def check_oversampling(value: float | None) -> float | None:
    """``value`` if it is None or at least 1, else a clear error.

    Raises:
        VectorIndexError: ``value`` below 1.
    """
    if value is None or float(value) >= 1.0:
        return value
    raise VectorIndexError(f"oversampling={value!r} must be >= 1 (candidates scanned per result)")


def oversampling_for(quantization: str, oversampling: float | None) -> float:
    """The oversampling to search a quantized index with: as given, or the kind's default."""
    return DEFAULT_OVERSAMPLING[quantization] if oversampling is None else float(oversampling)


# ---------------------------------------------------------------------------------- client


class ClientBackend:
    """qdrant-client: local mode (``":memory:"`` or a folder) or a server by URL.

    Args:
        collection: Collection name.
        location: ``":memory:"`` or a folder for local mode; None with ``url``.
        url: Server URL (``http://host:6333``).
        api_key: Server API key.
        timeout: Request timeout, seconds.
        retries: Attempts before a connection failure is reported.
        shard_number: Shards of a new collection (server).
        replication_factor: Replicas of a new collection (server).
        quantization: ``None``, ``"int8"`` (scalar) or ``"binary"`` (a new collection; the
            search rescores with the original vectors).
        oversampling: As for :class:`EdgeBackend`.
        on_disk: Keep vectors on disk (server).
    """

    def __init__(
        self,
        collection: str,
        *,
        location: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        quantization: str | None = None,
        oversampling: float | None = None,
        on_disk: bool | None = None,
    ) -> None:
        from rsia_geo._lazy import lazy_import

        qc = lazy_import("qdrant_client")
        self.models = lazy_import("qdrant_client.models")
        self.collection = collection
        self.meta_collection = f"{collection}__rsia_meta"
        self.retries = max(1, retries)
        self.url = url
        self.shard_number, self.replication_factor = shard_number, replication_factor
        self.quantization, self.on_disk = check_quantization(quantization), on_disk
        self.oversampling = check_oversampling(oversampling)
        if (location is None) == (url is None):
            raise VectorIndexError("pass exactly one of location (':memory:' or a folder) and url")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if url is not None:
                    self.client = qc.QdrantClient(url=url, api_key=api_key, timeout=int(timeout))
                elif str(location) == ":memory:":
                    self.client = qc.QdrantClient(location=":memory:")
                else:
                    self.client = qc.QdrantClient(path=str(location))
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise IndexLockedError(
                        f"index folder {str(location)!r} is open in another process; close it "
                        "there or use a Qdrant server"
                    ) from exc
                raise

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the client, retrying connection failures with backoff."""
        last: Exception | None = None
        for attempt in range(self.retries):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return fn(*args, **kwargs)
            except Exception as exc:  # transport errors come from httpx/grpc
                name = type(exc).__name__
                if not any(
                    k in name
                    for k in ("Connect", "Timeout", "Transport", "Unavailable", "ResponseHandling")
                ):
                    raise
                last = exc
                time.sleep(min(2.0, 0.2 * 2**attempt))
        raise IndexUnavailableError(
            f"Qdrant at {self.url!r} did not answer after {self.retries} attempts ({last}); "
            "is the server running and the URL right?"
        ) from last

    def exists(self) -> bool:
        """Whether the collection exists."""
        return bool(self._call(self.client.collection_exists, self.collection))

    def create(self, dim: int) -> None:
        """Create the collection (and its metadata collection) with payload indexes."""
        m = self.models
        quant = None
        if self.quantization == "int8":
            quant = m.ScalarQuantization(
                scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, always_ram=True)
            )
        elif self.quantization == "binary":
            quant = m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True))
        self._call(
            self.client.create_collection,
            self.collection,
            vectors_config={
                VECTOR: m.VectorParams(size=dim, distance=m.Distance.COSINE, on_disk=self.on_disk)
            },
            shard_number=self.shard_number,
            replication_factor=self.replication_factor,
            quantization_config=quant,
        )
        for f in KEYWORD_FIELDS:
            self._call(
                self.client.create_payload_index, self.collection, f, m.PayloadSchemaType.KEYWORD
            )
        for f in FLOAT_FIELDS:
            self._call(
                self.client.create_payload_index, self.collection, f, m.PayloadSchemaType.FLOAT
            )
        for f in GEO_FIELDS:
            self._call(
                self.client.create_payload_index, self.collection, f, m.PayloadSchemaType.GEO
            )
        if not self._call(self.client.collection_exists, self.meta_collection):
            self._call(
                self.client.create_collection,
                self.meta_collection,
                vectors_config=m.VectorParams(size=1, distance=m.Distance.DOT),
            )

    def drop(self) -> None:
        """Delete the collection and its metadata collection."""
        for name in (self.collection, self.meta_collection):
            if self._call(self.client.collection_exists, name):
                self._call(self.client.delete_collection, name)

    def get_meta(self) -> dict[str, Any] | None:
        """Metadata from the ``<collection>__rsia_meta`` collection."""
        if not self._call(self.client.collection_exists, self.meta_collection):
            return None
        recs = self._call(self.client.retrieve, self.meta_collection, [1], with_payload=True)
        return dict(recs[0].payload["meta"]) if recs else None

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Store metadata as the payload of point 1 of the metadata collection."""
        m = self.models
        self._call(
            self.client.upsert,
            self.meta_collection,
            [m.PointStruct(id=1, vector=[1.0], payload={"meta": meta})],
        )

    def _filter(self, region: Region | None, exact: bool = True) -> Any:
        return _native_filter(region, self.models, self.models.Range, exact)

    def upsert(
        self,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        """Insert or replace points (waits for the write)."""
        m = self.models
        points = [
            m.PointStruct(id=i, vector={VECTOR: _floats(v)}, payload=p)
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        self._call(self.client.upsert, self.collection, points, wait=True)

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Stored ids among ``ids``."""
        if not ids:
            return set()
        recs = self._call(self.client.retrieve, self.collection, list(ids), with_payload=False)
        return {str(r.id) for r in recs}

    def query(
        self,
        vector: Sequence[float],
        region: Region | None,
        limit: int,
        offset: int,
        with_vectors: bool,
        fields: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Nearest neighbours inside the region (payload limited to ``fields`` if given)."""
        res = self._call(
            self.client.query_points,
            self.collection,
            query=[float(x) for x in vector],
            using=VECTOR,
            query_filter=self._filter(region, exact=False),
            limit=limit,
            offset=offset or None,
            with_payload=(list(fields) or False) if fields is not None else True,
            with_vectors=[VECTOR] if with_vectors else False,
            search_params=(
                self.models.SearchParams(
                    quantization=self.models.QuantizationSearchParams(
                        rescore=True,
                        oversampling=oversampling_for(self.quantization, self.oversampling),
                    )
                )
                if self.quantization
                else None
            ),
        )
        out = []
        for p in res.points:
            vec = (p.vector or {}).get(VECTOR) if with_vectors else None
            out.append(Hit(str(p.id), float(p.score), dict(p.payload or {}), vec))
        return out

    def count(self, region: Region | None = None) -> int:
        """Points inside the region (all without one)."""
        return int(
            self._call(
                self.client.count, self.collection, count_filter=self._filter(region), exact=True
            ).count
        )

    def scroll(
        self,
        region: Region | None,
        limit: int,
        offset: Any,
        with_vectors: bool,
        fields: Sequence[str] | None = None,
    ) -> tuple[list[Hit], Any]:
        """One page of the points inside the region, in id order, and the next page's offset."""
        records, nxt = self._call(
            self.client.scroll,
            self.collection,
            scroll_filter=self._filter(region),
            limit=limit,
            offset=offset,
            with_payload=(list(fields) or False) if fields is not None else True,
            with_vectors=[VECTOR] if with_vectors else False,
        )
        return _records_to_hits(records, with_vectors), nxt

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Hit]:
        """Points by id."""
        recs = self._call(
            self.client.retrieve,
            self.collection,
            list(ids),
            with_payload=True,
            with_vectors=[VECTOR] if with_vectors else False,
        )
        return _records_to_hits(recs, with_vectors)

    def optimize(self) -> bool:
        """Nothing to do: a server optimizes its segments itself; local mode has none."""
        return False

    def close(self) -> None:
        """Close the client."""
        self.client.close()
