"""TileIndex: a Qdrant collection of tile embeddings with geographic payloads.

One class over every deployment, chosen at construction::

    TileIndex("my_index")                         # embedded Qdrant Edge folder (default)
    TileIndex(":memory:", engine="client")        # qdrant-client local mode, in memory
    TileIndex(url="http://qdrant:6333", api_key=..., collection="tiles",
              shard_number=6, replication_factor=2, quantization="int8")

The index records the model that produced its vectors (id, version, embedding size,
preprocessing, weights hash); adding or querying with another model raises
:class:`~rsia_geo.errors.ModelMismatchError`. Embedded folders are locked while open: a second
process gets :class:`~rsia_geo.errors.IndexLockedError` instead of corrupting the store.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rsia_geo.errors import (
    IndexLockedError,
    IndexNotFoundError,
    InvalidArgumentError,
    ModelMismatchError,
    TilingMismatchError,
    VectorIndexError,
)
from rsia_geo.index.backends import (
    Backend,
    ClientBackend,
    EdgeBackend,
    Hit,
)
from rsia_geo.index.payload import (
    Region,
    centre_margin,
    pack_payload,
    stored_keys,
    tile_to_payload,
    unpack_payload,
)
from rsia_geo.tiles import Tile

__all__ = ["TileIndex"]

SIGNATURE_KEYS = (
    "model_id",
    "version",
    "embed_dim",
    "backbone",
    "input_size",
    "in_chans",
    "frontend",
    "weights_sha256",
)
# what the stored vectors depend on: a model with the index's image side may search and add to it
IMAGE_KEYS = ("embed_dim", "backbone", "input_size", "in_chans")


def _unpacked(hits: list[Hit]) -> list[Hit]:
    """Hits with their payloads as :func:`tile_to_payload` made them (see ``pack_payload``)."""
    return [dataclasses.replace(h, payload=unpack_payload(h.payload)) for h in hits]


def _holds_index(folder: Path) -> bool:
    """Whether a folder holds an embedded index (either engine's)."""
    return (folder / "rsia_index.json").exists() or (folder / "qdrant").is_dir()


def _merged_extent(
    old: dict[str, Any], payloads: Sequence[dict[str, Any]], other: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The extent ``{"bbox", "time", "platforms"}`` of ``old`` (and ``other``), grown.

    Grown by these payloads. ``platforms`` lists the distinct platform names, sorted, or is None
    (unknown) once they exceed :data:`MAX_PLATFORMS`, or when an extent recorded before the
    names were kept is grown: a partial list would name too few.
    """
    boxes = [[p["bbox_minx"], p["bbox_miny"], p["bbox_maxx"], p["bbox_maxy"]] for p in payloads]
    times = [[p.get("timestamp"), p.get("timestamp_end", p.get("timestamp"))] for p in payloads]
    names: set[str] | None = set()
    for ext in (old, other or {}):
        if ext.get("bbox"):
            boxes.append(list(ext["bbox"]))
            if ext.get("platforms") is None:
                names = None  # an extent without its names (older, or too many): unknown
        if ext.get("time"):
            times.append(list(ext["time"]))
        if names is not None:
            names.update(ext.get("platforms") or ())
    if names is not None:
        names.update(str(p["platform"]) for p in payloads if p.get("platform"))
        if len(names) > MAX_PLATFORMS:
            names = None
    starts = [t[0] for t in times if t[0] is not None]
    ends = [t[1] for t in times if t[1] is not None]
    box = [min(b[0] for b in boxes), min(b[1] for b in boxes)]
    box += [max(b[2] for b in boxes), max(b[3] for b in boxes)]
    return {
        "bbox": [float(v) for v in box],
        "time": [min(starts) if starts else None, max(ends) if ends else None],
        "platforms": sorted(names) if names is not None else None,
    }


MAX_PLATFORMS = 64
"""Most platform names an index's extent lists (STAC platforms are few; more: not listed)."""


def _extent(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """:meth:`TileIndex.extent` of the index metadata ``meta``."""
    from rsia_geo.query import _iso_utc

    ext = (meta or {}).get("extent")
    if not ext:
        return None
    return {
        "bbox": ext["bbox"],
        "interval": [_iso_utc(ext["time"][0]), _iso_utc(ext["time"][1])],
        "platforms": ext.get("platforms"),
    }


def _image_views(meta: dict[str, Any] | None) -> str | None:
    """:attr:`TileIndex.image_views` of the index metadata ``meta``."""
    if meta is None:
        return None
    return str(meta.get("image_views", BOUND_BEFORE["image_views"]))


BOUND_KEYS = ("tile_spec", "bands", "image_views")
"""Index settings a later run must repeat: tiles cut, read or viewed otherwise embed differently."""

BOUND_BEFORE = {"image_views": "single"}
"""What an index recorded before a bound setting existed held (its tiles were embedded so)."""


class TileIndex:
    """Tile embeddings with geographic payloads in Qdrant.

    Args:
        location: Embedded index folder, or ``":memory:"`` (qdrant-client local mode).
        url: Qdrant server URL (instead of ``location``).
        api_key: Server API key.
        collection: Collection name (server and qdrant-client local mode).
        engine: ``"edge"`` (Qdrant Edge, the embedded default) or ``"client"``
            (qdrant-client; required for servers).
        hnsw: Build an HNSW graph in the embedded engine (default exact search).
        quantization: ``None`` (float32 vectors), ``"int8"`` (scalar, 4x smaller) or
            ``"binary"`` (32x smaller): compressed vectors that the search scans, rescored
            with the originals. Set when the index is made and recorded in it; opening an
            index with another value raises :class:`~rsia_geo.errors.VectorIndexError`.
        oversampling: Candidates scanned on compressed vectors per result (default 4 for
            int8, 8 for binary; ``benchmarks/bench_quantization.py``).
        create: Create the folder when it holds no index (indexing). False (searching,
            serving) raises :class:`~rsia_geo.errors.IndexNotFoundError` instead, and writes
            nothing.
        **server: Options for new server collections: ``shard_number``,
            ``replication_factor``, ``on_disk`` (also the embedded engine: original vectors
            memory-mapped), ``timeout``, ``retries``.

    Raises:
        IndexLockedError: The folder is open in another process.
        IndexNotFoundError: ``create=False`` and the folder holds no index.
        IndexUnavailableError: The server cannot be reached.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = "tiles",
        engine: str | None = None,
        hnsw: bool = False,
        quantization: str | None = None,
        oversampling: float | None = None,
        create: bool = True,
        **server: Any,
    ) -> None:
        if location is None and url is None:
            raise VectorIndexError("pass location (a folder or ':memory:') or url")
        if location is not None and url is not None:
            raise VectorIndexError("pass location or url, not both")
        engine = engine or ("client" if url is not None or str(location) == ":memory:" else "edge")
        if engine not in ("edge", "client"):
            raise VectorIndexError(f"engine={engine!r}; use 'edge' or 'client'")
        if engine == "edge" and url is not None:
            raise VectorIndexError("a server URL needs engine='client'")
        if engine == "edge" and str(location) == ":memory:":
            raise VectorIndexError("engine='edge' needs a folder; ':memory:' needs engine='client'")
        self.engine = engine
        self.location = str(location) if location is not None else None
        self.url = url
        self.collection = collection
        self._api_key = api_key
        self._lock_fd: int | None = None
        self._margin: tuple[float, float] | None = None
        self._margin_read = -1e18  # time.monotonic() of the last read of the stored margin
        self._has_time_ranges: bool | None = None
        self._extent: dict[str, Any] | None = None  # as last read or written
        if location is not None and str(location) != ":memory:":
            folder = Path(location)
            if folder.exists() and not folder.is_dir():
                raise VectorIndexError(
                    f"index location {str(folder)!r} is a file; an embedded index is a folder: "
                    "give a folder path (it is created when indexing)"
                )
            if not create and not _holds_index(folder):
                raise IndexNotFoundError(
                    f"no index at {str(folder)!r}"
                    + (" (the folder does not exist)" if not folder.exists() else "")
                    + f"; check the path, or build one: rsia-geo index CATALOG --location {folder}"
                )
            folder.mkdir(parents=True, exist_ok=True)
            self._lock(folder)
        try:
            if engine == "edge":
                self.backend: Backend = EdgeBackend(
                    str(location),
                    hnsw=hnsw,
                    quantization=quantization,
                    oversampling=oversampling,
                    on_disk=server.get("on_disk"),
                )
            else:
                local: str | None = None
                if url is None:
                    local = (
                        ":memory:"
                        if str(location) == ":memory:"
                        else str(Path(str(location)) / "qdrant")
                    )
                self.backend = ClientBackend(
                    collection,
                    location=local,
                    url=url,
                    api_key=api_key,
                    quantization=quantization,
                    oversampling=oversampling,
                    **server,
                )
            self._storage = {"quantization": quantization, "hnsw": bool(hnsw)}
            self._storage_checked = False
            if url is None:  # a server is first contacted when it is used
                self._adopt_storage()
        except BaseException:
            self._unlock()
            raise

    def _adopt_storage(self) -> None:
        """Search an existing index with the quantization it was made with (refuse another)."""
        if self._storage_checked:
            return
        meta = self.backend.get_meta() if self.backend.exists() else None
        self._storage_checked = True
        if meta is None:
            return
        requested = self._storage["quantization"]
        stored = (meta.get("storage") or {}).get("quantization")
        if requested is not None and requested != stored:
            raise VectorIndexError(
                f"{self!r} was made with quantization={stored!r}, not {requested!r}: the "
                "quantization of an index is set when it is made; open it without "
                "quantization=, or index into a new folder or collection with it"
            )
        self.backend.quantization = stored

    # ---------------------------------------------------------------- lifecycle

    def _lock(self, folder: Path) -> None:
        fd = os.open(folder / ".rsia.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexLockedError(
                f"index folder {str(folder)!r} is open in another process; close it there, or "
                "serve it with `rsia-geo serve` and query the service (or use a Qdrant server)"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def optimize(self) -> bool:
        """Build the HNSW graph or quantized vectors the index was made with, now.

        :func:`~rsia_geo.pipeline.build_index` calls it after an ingest; a plain exact-search
        index (the default) and a server (which optimizes by itself) have nothing to do.

        Returns:
            Whether anything was built.
        """
        return bool(self.backend.optimize())

    def close(self) -> None:
        """Flush and close the index, releasing the folder lock."""
        try:
            self.backend.close()
        finally:
            self._unlock()

    def __enter__(self) -> TileIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url or self.location
        return f"TileIndex({where!r}, engine={self.engine!r}, collection={self.collection!r})"

    # ---------------------------------------------------------------- model binding

    @property
    def meta(self) -> dict[str, Any] | None:
        """Index metadata: model signature, tile specification, counts."""
        return self.backend.get_meta() if self.backend.exists() else None

    @property
    def hub_bank(self) -> str | None:
        """Which reference bank the stored hubness was measured against (its short sha256).

        None when the index stores no hubness (made before it, or by a model without a bank).
        """
        meta = self.meta or {}
        hub = meta.get("hub") or {}
        return str(hub["bank"]) if hub.get("bank") else None

    @property
    def image_views(self) -> str | None:
        """How the index's tiles were embedded (:data:`rsia_geo.tiles.IMAGE_VIEWS`).

        None while the index is empty; ``"single"`` for an index made before image views.
        """
        return _image_views(self.meta)

    def record_count(self) -> int:
        """Store the number of tiles in the metadata (after an ingest); return it."""
        meta = self.meta or {}
        meta["tiles"] = self.count()
        self.backend.set_meta(meta)
        return int(meta["tiles"])

    def bind_model(self, signature: dict[str, Any], *, extra: dict[str, Any] | None = None) -> None:
        """Create the collection for a model, or check that it was built with the same model.

        Args:
            signature: From :func:`rsia_geo.models.checkpoint.model_signature`.
            extra: More metadata to record (tile spec, checkpoint path...).

        Raises:
            ModelMismatchError: The collection holds vectors of another model.
        """
        sig = {k: signature.get(k) for k in (*SIGNATURE_KEYS, "image_side")}
        self._adopt_storage()
        if self.backend.exists() and self.backend.get_meta() is None:
            # created, then interrupted before the metadata was written: nothing was stored
            # (points are only written after it), so the collection is made again
            if self.backend.count(None) > 0:
                raise VectorIndexError(
                    f"{self!r} holds points but no rsia_geo metadata: it was not made by "
                    "rsia_geo; use another collection or folder"
                )
            self.backend.drop()
        if not self.backend.exists():
            self.backend.create(int(signature["embed_dim"]))
            self.backend.set_meta(
                {
                    "model": sig,
                    "time_ranges": True,
                    "platforms": True,
                    "storage": self._storage,
                    **(extra or {}),
                }
            )
            self._has_time_ranges = None
            self._extent = None
            return
        self.check_model(sig)
        if extra:
            meta = self.backend.get_meta() or {}
            for key in BOUND_KEYS:
                old = meta.get(key, BOUND_BEFORE.get(key))
                if key not in extra or old is None:
                    continue
                new = json.loads(json.dumps(extra[key]))  # as stored (tuples become lists)
                if old != new:
                    diff = (
                        {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
                        if isinstance(new, dict) and isinstance(old, dict)
                        else (old, new)
                    )
                    raise TilingMismatchError(
                        f"{self!r} holds tiles made with other {key} (index vs now: {diff}): "
                        "one index holds one kind of tile embedding; index into another "
                        "folder or collection, or use the same settings"
                    )
            meta.update(extra)
            self.backend.set_meta(meta)

    def check_model(self, signature: dict[str, Any]) -> None:
        """Refuse a model other than the one the index was built with.

        A model that carries the image side of the index's model (a new audio branch trained
        with ``image_from``: :func:`rsia_geo.models.checkpoint.image_side_sha256`) embeds tiles
        exactly as it did, so it is accepted.

        Args:
            signature: The model's signature.

        Raises:
            ModelMismatchError: It differs (the message names the differing fields).
            VectorIndexError: The index is empty (no model bound yet).
        """
        meta = self.meta
        if meta is None:
            raise VectorIndexError(f"{self!r} is empty: index a catalog first (rsia-geo index)")
        stored = meta["model"]
        diff = {
            k: (stored.get(k), signature.get(k))
            for k in SIGNATURE_KEYS
            if stored.get(k) != signature.get(k)
        }
        side = stored.get("image_side") or stored.get("weights_sha256")
        same_images = (
            side is not None
            and side == signature.get("image_side")
            and all(stored.get(k) == signature.get(k) for k in IMAGE_KEYS)
        )
        if diff and not same_images:
            detail = ", ".join(f"{k}: index {a!r} vs model {b!r}" for k, (a, b) in diff.items())
            raise ModelMismatchError(
                f"{self!r} was built with model {stored.get('model_id')!r} v{stored.get('version')}"
                f", not this one ({detail}); query it with the same checkpoint or rebuild it"
            )

    # ---------------------------------------------------------------- data

    def add(
        self, tiles: Sequence[Tile], raw_vectors: np.ndarray, hub: np.ndarray | None = None
    ) -> None:
        """Store tiles with their raw image embeddings (upsert by tile id: idempotent).

        Args:
            tiles: The tiles.
            raw_vectors: ``(len(tiles), dim)`` raw embeddings ``f_v``; stored L2-normalised,
                with the norm kept in the payload for IA rescoring.
            hub: ``(len(tiles),)`` hubness of the embeddings against the model's reference
                clips (:func:`rsia_geo.weights.tile_hubness`), kept in the payload; None: not
                stored (search computes it for the tiles that lack it).
        """
        vecs = np.asarray(raw_vectors, dtype=np.float64)
        if vecs.ndim != 2 or vecs.shape[0] != len(tiles):
            raise VectorIndexError(
                f"raw_vectors shape {vecs.shape} does not match {len(tiles)} tiles"
            )
        hubs = [None] * len(tiles) if hub is None else [float(h) for h in np.ravel(hub)]
        if len(hubs) != len(tiles):
            raise VectorIndexError(f"{len(hubs)} hubness values for {len(tiles)} tiles")
        norms = np.linalg.norm(vecs, axis=1)
        unit = vecs / np.maximum(norms, 1e-12)[:, None]
        self._upsert(
            [t.id for t in tiles],
            unit.tolist(),
            [
                tile_to_payload(t, raw_norm=float(n), hub=h)
                for t, n, h in zip(tiles, norms, hubs, strict=True)
            ],
        )

    def reserve(self, tiles: Sequence[Tile]) -> None:
        """Record where and when tiles about to be stored lie, before any writer stores them.

        :meth:`add` grows the index's recorded extent and centre margin (which region filters
        rely on) before it stores points. When several processes store into one server
        collection (Dask workers upserting directly), each would read, grow and write that
        metadata at once, and one could undo another's growth; the process that hands out the
        work calls this first, so that the workers' :meth:`add` finds nothing left to record.

        Args:
            tiles: The tiles (their footprints and dates; no vectors needed).
        """
        self._record_meta([tile_to_payload(t, raw_norm=0.0) for t in tiles])

    def remote_spec(self) -> dict[str, Any] | None:
        """What another process needs to store into this server collection (None: embedded).

        Returns:
            ``{"url", "api_key", "collection"}`` for :class:`TileIndex` (the API key included:
            hand it only to processes of your own cluster), or None for an embedded index,
            which one process writes.
        """
        if self.url is None:
            return None
        return {"url": self.url, "api_key": self._api_key, "collection": self.collection}

    def _upsert(
        self, ids: Sequence[str], unit_vectors: Any, payloads: Sequence[dict[str, Any]]
    ) -> None:
        """Record a larger centre margin first (write-ahead), then store the points."""
        self._record_meta(payloads)
        self.backend.upsert(ids, unit_vectors, [pack_payload(p) for p in payloads])

    def _record_meta(self, payloads: Sequence[dict[str, Any]]) -> None:
        """Grow the recorded centre margin and extent to cover ``payloads``."""
        if payloads and (self.centre_margin() is not None or self.count() == 0):
            # (an index filled before margins were recorded keeps none: a margin computed
            # from new tiles alone might not cover the old ones, so its queries keep ranges)
            margins = np.array([centre_margin(p) for p in payloads])
            gx, gy = (float(v) for v in margins.max(axis=0))
            current = self.centre_margin()
            if current is None or gx > current[0] or gy > current[1]:
                new = (gx, gy) if current is None else (max(gx, current[0]), max(gy, current[1]))
                meta = self.backend.get_meta() or {}
                meta["centre_margin"] = list(new)
                self.backend.set_meta(meta)
                self._margin = new
        self._grow_extent(payloads)

    def _grow_extent(self, payloads: Sequence[dict[str, Any]]) -> None:
        """Record the spatial and temporal extent of the stored tiles (before the points).

        The metadata is read on the first batch and written (re-read and merged, as another
        writer may have grown it) only when a batch grows the extent, not on every batch.
        """
        if not payloads:
            return
        if self._extent is None:
            self._extent = (self.backend.get_meta() or {}).get("extent") or {}
        grown = _merged_extent(self._extent, payloads)
        if grown != self._extent:
            meta = self.backend.get_meta() or {}
            grown = _merged_extent(meta.get("extent") or {}, payloads, grown)
            meta["extent"] = grown
            self.backend.set_meta(meta)
            self._extent = grown

    def extent(self) -> dict[str, Any] | None:
        """Spatial and temporal extent of the stored tiles.

        Returns:
            ``{"bbox": [minx, miny, maxx, maxy], "interval": [start, end], "platforms":
            [...]}`` (lon/lat, with ``maxx`` above 180 when tiles cross the antimeridian; ISO
            8601 UTC times, None where unknown; the tiles' STAC platforms, None for an index
            built before they were listed), or None for an index without tiles or built before
            extents were recorded.
        """
        return _extent(self.meta)

    def summary(self) -> dict[str, Any]:
        """What the index holds: tiles, extent, model, tiling, bands, image views, storage.

        What ``rsia-geo info`` prints and the service's ``/collections`` returns.

        Returns:
            ``{"tiles", "extent" (:meth:`extent`), "model" (the signature the index is bound
            to: id, version, weights sha256, ...), "checkpoint", "tile_spec", "bands",
            "image_views", "quantization"}``; an index without tiles gives ``tiles`` 0 and
            None elsewhere.
        """
        stored = self.meta  # read once: a file, or a request to a server
        meta = stored or {}
        return {
            "tiles": self.count(),
            "extent": _extent(stored),
            "model": meta.get("model"),
            "checkpoint": meta.get("checkpoint"),
            "tile_spec": meta.get("tile_spec"),
            "bands": meta.get("bands"),
            "image_views": _image_views(stored),
            "quantization": (meta.get("storage") or {}).get("quantization"),
        }

    def centre_margin(self) -> tuple[float, float] | None:
        """Largest ``(dlon, dlat)`` from a stored tile's centre to its bbox edges (None: unknown).

        Region filters use it to query the geo index of tile centres. An embedded folder has
        one writer (it is locked), so its value is cached; a server's is re-read every 5 s, as
        another process may index larger tiles.
        """
        ttl = float("inf") if self.engine == "edge" else 5.0
        now = time.monotonic()
        if self._margin is None or now - self._margin_read > ttl:
            meta = self.backend.get_meta() if self.backend.exists() else None
            stored = (meta or {}).get("centre_margin")
            self._margin = (float(stored[0]), float(stored[1])) if stored else None
            self._margin_read = now
        return self._margin

    def _time_ranges(self) -> bool:
        """Whether the tiles store ``timestamp_end`` (fixed when the index is created)."""
        if self._has_time_ranges is None:
            self._has_time_ranges = bool((self.meta or {}).get("time_ranges"))
        return self._has_time_ranges

    def _with_margin(self, region: Region | None) -> Region | None:
        """The region with what this index knows: centre margin, time-range payloads."""
        if region is None:
            return region
        if region.platforms and not (self.meta or {}).get("platforms", False):
            raise InvalidArgumentError(
                f"platform={','.join(region.platforms)!r}: this index was built before tiles "
                "stored their platform; drop the platform filter, or index the catalog again "
                "into a new folder"
            )
        if region.time_range is not None and not region.time_overlap and self._time_ranges():
            region = dataclasses.replace(region, time_overlap=True)
        if region.centre_margin is not None or not region.boxes:
            return region
        margin = self.centre_margin()
        return region if margin is None else dataclasses.replace(region, centre_margin=margin)

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which tile ids are already stored."""
        return self.backend.existing(list(ids)) if self.backend.exists() else set()

    def count(self, region: Region | None = None) -> int:
        """Number of tiles (inside ``region``)."""
        return self.backend.count(self._with_margin(region)) if self.backend.exists() else 0

    def query(
        self,
        vector: np.ndarray,
        region: Region | None = None,
        *,
        limit: int = 20,
        offset: int = 0,
        with_vectors: bool = False,
        fields: Sequence[str] | None = None,
        stored: bool = False,
    ) -> list[Hit]:
        """Nearest tiles by cosine, with the region's coarse filter applied inside Qdrant.

        Args:
            vector: Query embedding (any norm).
            region: Region boxes / time range.
            limit: Results.
            offset: Results to skip (paging).
            with_vectors: Return stored unit vectors.
            fields: Payload fields to return (all if None). Qdrant reads each point's
                payload whole, but fewer fields cost less to convert and transfer.
            stored: Payloads as stored (:func:`~rsia_geo.index.payload.pack_payload`: the
                footprint as GeoJSON text), for a caller that parses them itself (search
                parses its candidates' footprints in one vectorised call).

        Returns:
            Hits, best first.
        """
        v = np.asarray(vector, dtype=np.float64).ravel()
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        self._adopt_storage()
        hits: list[Hit] = self.backend.query(
            v.tolist(), self._with_margin(region), limit, offset, with_vectors, stored_keys(fields)
        )
        return hits if stored else _unpacked(hits)

    def scroll(
        self,
        region: Region | None = None,
        *,
        limit: int = 10_000,
        with_vectors: bool = False,
        fields: Sequence[str] | None = None,
        page: int = 1_000,
    ) -> list[Hit]:
        """Tiles inside the region's coarse filter, in id order (no query vector).

        Args:
            region: Region boxes / time range / platforms (None: every tile).
            limit: Most tiles returned.
            with_vectors: Return stored unit vectors.
            fields: Payload fields to return (all if None).
            page: Tiles per request.

        Returns:
            Up to ``limit`` hits (score 1.0).
        """
        if not self.backend.exists():
            return []
        region = self._with_margin(region)
        out: list[Hit] = []
        offset: Any = None
        while len(out) < limit:
            hits, offset = self.backend.scroll(
                region, min(page, limit - len(out)), offset, with_vectors, stored_keys(fields)
            )
            out.extend(_unpacked(hits))
            if offset is None or not hits:
                break
        return out

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Hit]:
        """Tiles by id."""
        hits: list[Hit] = self.backend.retrieve(list(ids), with_vectors)
        return _unpacked(hits)
