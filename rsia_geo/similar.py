"""More like this: queries by example, relevance feedback, and the same place on other dates.

The index stores every tile's image embedding in the space spoken queries are embedded in, so
an indexed tile, a chip of pixels or the tiles under a drawn polygon are queries too (their unit
image vectors, searched by cosine in Qdrant), and marks of relevant / not relevant hits move a
query toward what the analyst wants:

* **Rocchio** (the default): ``q' = alpha q + beta mean(relevant) - gamma mean(not relevant)``
  over unit vectors, with the classic weights 1, 0.75, 0.15 (Rocchio 1971; Manning, Raghavan &
  Schuetze, *Introduction to Information Retrieval*, section 9.1.1).
* **A linear classifier** (``method="linear"``): L2-regularised logistic regression on the
  marked tiles' unit embeddings, its weights pulled toward the Rocchio vector. On unit vectors
  ``w . x`` orders tiles as ``cos(w, x)`` does, so the weight vector is searched in Qdrant like
  any query (the peers' "light classifier over embeddings").

Which one serves by default was measured, not assumed: ``benchmarks/bench_similar.py`` and the
table in ``docs/benchmarks.md``.

:func:`rsia_geo.search` takes ``example=``, ``relevant=`` and ``not_relevant=``; this module
holds the parts (:func:`resolve_example`, :func:`refine`) and :func:`same_place`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rsia_geo.errors import InvalidArgumentError, InvalidRegionError, TileNotFoundError

__all__ = [
    "MAX_EXAMPLE_TILES",
    "REFINE_METHODS",
    "Example",
    "acquisitions",
    "refine",
    "resolve_example",
    "same_place",
    "tile_ids",
]

MAX_EXAMPLE_TILES = 5_000
"""Most indexed tiles a drawn polygon may average (a larger polygon is refused)."""

REFINE_METHODS = ("rocchio", "linear")
ROCCHIO = (1.0, 0.75, 0.15)
"""``(alpha, beta, gamma)``: weight of the query, of the relevant and of the not-relevant mean."""
LINEAR_SCALE = 10.0
"""Norm of the prior weight vector (a logit scale: unit-vector dot products span [-1, 1])."""
LINEAR_L2 = 1.0
"""Strength of the pull toward the Rocchio prior."""


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    out: np.ndarray = v / np.maximum(n, 1e-12)
    return out


@dataclass(frozen=True)
class Example:
    """A query made from imagery.

    Attributes:
        vector: Unit query vector.
        kind: ``"tile"``, ``"chip"`` or ``"polygon"``.
        tile_ids: Indexed tiles the example is made of (never returned as hits).
        place: Lon/lat shape of the example's place (hits showing that place are left out),
            or None for a chip.
        description: What the hits' ``attrs["query"]`` reports.
    """

    vector: np.ndarray
    kind: str
    tile_ids: tuple[str, ...] = ()
    place: Any = None
    description: dict[str, Any] = field(default_factory=dict)


def tile_ids(marks: Any, name: str = "relevant") -> list[str]:
    """Tile ids from marks: an id, ids, hit rows, or a GeoDataFrame of hits.

    Args:
        marks: A tile id string, a comma-separated string of ids, a sequence of ids or hit
            rows (anything with a ``tile_id``), a GeoDataFrame/DataFrame with a ``tile_id``
            column, or None.
        name: The argument's name, for messages.

    Returns:
        The ids, in order, without repeats.

    Raises:
        InvalidArgumentError: Something that names no tile.
    """
    if marks is None:
        return []
    if hasattr(marks, "columns"):  # a (Geo)DataFrame of hits
        if "tile_id" not in marks.columns:
            raise InvalidArgumentError(
                f"{name}: the table has no tile_id column; pass hits from rsia_geo.search"
            )
        items: Sequence[Any] = list(marks["tile_id"])
    elif isinstance(marks, str):
        items = [m for m in (p.strip() for p in marks.split(",")) if m]
    elif isinstance(marks, dict) or (hasattr(marks, "index") and hasattr(marks, "get")):
        items = [marks]  # one hit row (a Series or a dict)
    else:
        try:
            items = list(marks)
        except TypeError:
            items = [marks]
    out: list[str] = []
    for m in items:
        tid = m if isinstance(m, str) else (m.get("tile_id") if hasattr(m, "get") else None)
        if not isinstance(tid, str) or not tid.strip():
            raise InvalidArgumentError(
                f"{name}={m!r} names no tile; pass tile ids (the tile_id column of the hits) "
                "or hit rows"
            )
        if tid.strip() not in out:
            out.append(tid.strip())
    return out


def _is_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def stored_vectors(index: Any, ids: Sequence[str], name: str) -> tuple[np.ndarray, list[Any]]:
    """Unit vectors and payloads of indexed tiles, in the order of ``ids``.

    Args:
        index: An open :class:`~rsia_geo.index.TileIndex`.
        ids: Tile ids.
        name: The argument the ids came from, for messages.

    Returns:
        ``(vectors (n, d), payloads)``.

    Raises:
        TileNotFoundError: An id is not in the index.
    """
    if not ids:
        return np.zeros((0, 0)), []
    valid = [i for i in ids if _is_uuid(i)]  # tile ids are UUIDs; engines reject others
    found = {h.id: h for h in index.retrieve(valid, with_vectors=True)} if valid else {}
    missing = [i for i in ids if i not in found or found[i].vector is None]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise TileNotFoundError(
            f"{name}: no tile {shown} in this index; pass tile ids from this index's hits "
            "(the tile_id column)"
        )
    vecs = np.asarray([found[i].vector for i in ids], dtype=np.float64)
    return _unit(vecs), [found[i].payload for i in ids]


def _chip_array(chip: np.ndarray, in_chans: int) -> np.ndarray:
    """A ``(bands, H, W)`` float32 chip in [0, 1] from a float or uint8 array."""
    a = np.asarray(chip)
    if a.ndim != 3:
        raise InvalidArgumentError(
            f"example chip has shape {a.shape}; pass (bands, height, width) pixels, as "
            "rsia_geo.read_chip returns"
        )
    if a.shape[0] != in_chans and a.shape[-1] == in_chans:
        a = np.moveaxis(a, -1, 0)  # (H, W, bands), as PIL/matplotlib hold images
    if a.shape[0] != in_chans:
        raise InvalidArgumentError(
            f"example chip has {a.shape[0]} bands but the model reads {in_chans}; pass the "
            "bands the index was built with"
        )
    if a.dtype == np.uint8:
        return (a.astype(np.float32) / 255.0).astype(np.float32)
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < -1e-3 or a.max() > 1.0 + 1e-3:
        raise InvalidArgumentError(
            f"example chip values span [{np.nanmin(a):.3g}, {np.nanmax(a):.3g}]; pass floats "
            "in [0, 1] (rsia_geo.read_chip) or uint8 pixels"
        )
    clipped: np.ndarray = np.clip(a, 0.0, 1.0)
    return clipped


def _under_polygon(index: Any, polygon: Any) -> tuple[list[str], np.ndarray]:
    """Ids and unit vectors of the indexed tiles under a polygon (most of each tile inside)."""
    import shapely

    from rsia_geo.pipeline import _footprints
    from rsia_geo.query import make_region

    region = make_region(geometry=polygon)
    hits = index.scroll(
        region, limit=MAX_EXAMPLE_TILES + 1, with_vectors=True, fields=["footprint"]
    )
    if len(hits) > MAX_EXAMPLE_TILES:
        raise InvalidArgumentError(
            f"more than {MAX_EXAMPLE_TILES} tiles lie under the example polygon; draw a "
            "smaller one around the kind of place you want more of"
        )
    if not hits:
        raise InvalidRegionError(
            "no indexed tile lies under the example polygon; draw it over indexed imagery"
        )
    fps = _footprints([h.payload["footprint"] for h in hits])
    inside = shapely.area(shapely.intersection(fps, region.geometry)) / np.maximum(
        shapely.area(fps), 1e-30
    )
    keep = inside >= 0.5
    if not keep.any():  # a polygon smaller than one tile: the tiles it touches
        keep = inside > 0
    if not keep.any():
        raise InvalidRegionError(
            "no indexed tile lies under the example polygon; draw it over indexed imagery"
        )
    chosen = [h for h, k in zip(hits, keep, strict=True) if k]
    return [h.id for h in chosen], _unit(np.asarray([h.vector for h in chosen]))


def resolve_example(example: Any, index: Any, model: Any) -> Example:
    """Turn an example into a query vector.

    Args:
        example: An indexed tile (its id, or a hit row), pixels (a ``(bands, H, W)`` array
            in [0, 1] or uint8, encoded on the fly with the index's image views), or a
            polygon (shapely, GeoJSON, a GeoDataFrame: the mean of the indexed tiles mostly
            under it).
        index: The open index.
        model: The index's model (for chips).

    Returns:
        The :class:`Example`.

    Raises:
        InvalidArgumentError: An id not in the index, or unusable pixels.
        InvalidRegionError: A polygon with no indexed tile under it.
    """
    from shapely.geometry import shape

    if isinstance(example, np.ndarray):
        import torch

        chip = _chip_array(example, int(model.config.backbone.in_chans))
        views = index.image_views or "single"  # embedded as the index's tiles were
        vec = model.encode_images(torch.from_numpy(chip)[None], normalize=True, views=views)
        return Example(
            _unit(vec[0].numpy()),
            "chip",
            description={
                "kind": "example", "example": "chip", "shape": list(chip.shape),
                "image_views": views,
            },
        )  # fmt: skip
    if isinstance(example, str) or (hasattr(example, "get") and "tile_id" in example):
        ids = tile_ids(example, "example")
        if not ids:
            raise InvalidArgumentError("example names no tile; pass a tile id or a hit row")
        tid = ids[0]
        vecs, payloads = stored_vectors(index, [tid], "example")
        return Example(
            vecs[0],
            "tile",
            (tid,),
            shape(payloads[0]["footprint"]),
            {"kind": "example", "example": "tile", "tile_id": tid},
        )
    from rsia_geo.query import parse_geometry

    try:
        polygon = parse_geometry(example)
    except InvalidRegionError as exc:
        raise InvalidArgumentError(
            f"example of type {type(example).__name__} is not usable: pass a tile id or hit "
            f"row, a (bands, H, W) pixel array, or a polygon ({exc})"
        ) from exc
    ids, vecs = _under_polygon(index, polygon)
    return Example(
        _unit(vecs.mean(axis=0)),
        "polygon",
        tuple(ids),
        polygon,
        {"kind": "example", "example": "polygon", "tiles": len(ids)},
    )


def _logistic(
    x: np.ndarray, y: np.ndarray, prior: np.ndarray, l2: float, iters: int = 25
) -> np.ndarray:
    """Class-balanced logistic regression (with a bias) whose weights are pulled to ``prior``.

    Minimises ``sum_i c_i log(1 + exp(-s_i (w . x_i + b))) + l2 / 2 |w - prior|^2`` by
    Newton's method (the problem is strictly convex, so a few steps converge).
    """
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    s = np.where(y > 0, 1.0, -1.0)
    pos = max(int((y > 0).sum()), 1)
    neg = max(n - int((y > 0).sum()), 1)
    c = np.where(y > 0, n / (2.0 * pos), n / (2.0 * neg))
    w = np.append(prior, 0.0)
    reg = np.full(d + 1, l2)
    reg[-1] = 1e-6  # the bias is free
    target = np.append(prior, 0.0)
    for _ in range(iters):
        m = s * (xb @ w)
        p = 1.0 / (1.0 + np.exp(np.clip(m, -50, 50)))  # sigmoid(-margin)
        grad = -(xb.T @ (c * s * p)) + reg * (w - target)
        hess = (xb.T * (c * p * (1 - p))) @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return w[:-1]


def refine(
    query: np.ndarray | None,
    relevant: np.ndarray,
    not_relevant: np.ndarray,
    *,
    method: str = "rocchio",
) -> np.ndarray:
    """Move a query toward the relevant tiles and away from the others.

    Args:
        query: The query's vector (any norm; spoken, typed or example), or None to start from
            the marks alone.
        relevant: ``(n, d)`` unit vectors of tiles marked relevant.
        not_relevant: ``(m, d)`` unit vectors of tiles marked not relevant.
        method: ``"rocchio"`` (mean vectors) or ``"linear"`` (a logistic regression pulled
            toward the Rocchio vector; needs at least one mark of each kind).

    Returns:
        The refined unit query vector.

    Raises:
        InvalidArgumentError: Unknown method, no query and no relevant mark, or ``linear``
            without marks of both kinds.
    """
    if method not in REFINE_METHODS:
        raise InvalidArgumentError(f"refine method={method!r}; use one of {REFINE_METHODS}")
    alpha, beta, gamma = ROCCHIO
    pos = _unit(relevant) if len(relevant) else np.zeros((0, 0))
    neg = _unit(not_relevant) if len(not_relevant) else np.zeros((0, 0))
    if query is None and not len(pos):
        raise InvalidArgumentError(
            "nothing to search for: give a query (audio, text or example) or at least one "
            "relevant tile"
        )
    dim = len(query) if query is not None else pos.shape[1]
    vec = alpha * _unit(query) if query is not None else np.zeros(dim)
    if len(pos):
        vec = vec + beta * pos.mean(axis=0)
    if len(neg):
        vec = vec - gamma * neg.mean(axis=0)
    rocchio = _unit(vec)
    if method == "rocchio":
        return rocchio
    if not len(pos) or not len(neg):
        raise InvalidArgumentError(
            "method='linear' needs at least one relevant and one not-relevant mark; use "
            "method='rocchio' with marks of one kind"
        )
    x = np.vstack([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w = _logistic(x, y, LINEAR_SCALE * rocchio, LINEAR_L2)
    return _unit(w)


def same_place(
    hit: Any,
    index: Any,
    *,
    min_overlap: float = 0.5,
    datetime: Any = None,
    platform: Any = None,
) -> Any:
    """The same place on other dates: one tile per other acquisition, oldest first.

    The analyst's question after a hit is often "what did it look like before?": this lists
    the indexed tiles of other items (other dates, other sensors) that show the hit's place,
    each with how similar its embedding is to the hit's (a low similarity flags a change).

    Args:
        hit: A tile id or a hit row.
        index: A :class:`~rsia_geo.index.TileIndex` or an embedded index folder.
        min_overlap: Shared fraction of the smaller footprint that makes two tiles one place.
        datetime: Keep acquisitions in this interval (as :func:`rsia_geo.search`).
        platform: Keep these STAC platforms.

    Returns:
        A GeoDataFrame (EPSG:4326), oldest first: ``tile_id``, ``item_id``,
        ``collection_id``, ``platform``, ``datetime``, ``level``, ``gsd``, ``overlap`` (shared
        fraction), ``similarity`` (cosine to the hit's embedding), ``href``, ``window``,
        ``tile`` (for :func:`rsia_geo.read_chip`), and the footprint as geometry. The
        hit's own item is not listed.

    Raises:
        InvalidArgumentError: The tile is not in the index, or a bad ``min_overlap``.
    """
    from shapely.geometry import shape

    from rsia_geo.pipeline import _hits_frame, _open_index
    from rsia_geo.query import make_region

    if not (isinstance(min_overlap, (int, float)) and 0.0 < min_overlap <= 1.0):
        raise InvalidArgumentError(f"min_overlap={min_overlap!r} must be in (0, 1]")
    ids = tile_ids(hit, "hit")
    if len(ids) != 1:
        raise InvalidArgumentError(f"hit={hit!r} must name one tile; pass a tile id or a hit row")
    tid = ids[0]
    idx, owned = _open_index(index)
    try:
        vecs, payloads = stored_vectors(idx, [tid], "hit")
        ref, place = vecs[0], shape(payloads[0]["footprint"])
        region = make_region(geometry=place, datetime=datetime, platform=platform)
        hits = idx.scroll(region, limit=MAX_EXAMPLE_TILES, with_vectors=True)
    finally:
        if owned:
            idx.close()
    others = [h for h in hits if h.payload.get("item_id") != payloads[0].get("item_id")]
    columns = [
        "tile_id", "item_id", "collection_id", "platform", "datetime", "level", "gsd",
        "overlap", "similarity", "href", "window", "tile",
    ]  # fmt: skip
    rows = [
        _same_place_row(h, fp, share, sim)
        for h, fp, share, sim in _best_per_acquisition(
            others, place, ref, min_overlap, payloads[0].get("level")
        )
    ]
    rows.sort(key=lambda r: (r["datetime"] or "", r["item_id"] or ""))
    out = _hits_frame(rows, columns)
    out.attrs["hit"] = {"tile_id": tid, "datetime": payloads[0].get("datetime"),
                        "item_id": payloads[0].get("item_id")}  # fmt: skip
    return out


def _best_per_acquisition(
    others: list[Any], place: Any, ref: np.ndarray, min_overlap: float, level: Any
) -> list[tuple[Any, Any, float, float]]:
    """Per other item, the tile sharing most of the place (then the hit's level).

    Returns:
        ``(hit, footprint, shared fraction, cosine similarity to ref)`` per acquisition kept.
    """
    from rsia_geo.pipeline import _footprints, one_place, shared_area

    if not others:
        return []
    fps = _footprints([h.payload["footprint"] for h in others])
    shared, smaller = shared_area(fps, place)
    shares = shared / np.maximum(smaller, 1e-30)
    same = one_place(shared, smaller, min_overlap)
    sims = _unit(np.asarray([h.vector for h in others])) @ ref
    best: dict[str, tuple[tuple[float, bool], tuple[Any, Any, float, float]]] = {}
    for h, fp, sh, sim, ok in zip(others, fps, shares, sims, same, strict=True):
        if not ok:
            continue
        key = str(h.payload.get("item_id"))
        rank = (float(sh), h.payload.get("level") == level)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, (h, fp, float(sh), float(sim)))
    return [found for _, found in best.values()]


def _same_place_row(h: Any, footprint: Any, share: float, sim: float) -> dict[str, Any]:
    """One row of :func:`same_place` (its tile record built only for the tiles kept)."""
    from rsia_geo.index.payload import payload_to_tile

    p = h.payload
    return {
        "tile_id": h.id,
        "item_id": str(p.get("item_id")),
        "collection_id": p.get("collection_id") or None,
        "platform": p.get("platform") or None,
        "datetime": p.get("datetime"),
        "level": p.get("level"),
        "gsd": p.get("gsd"),
        "overlap": round(share, 4),
        "similarity": sim,
        "href": p.get("href"),
        "window": ",".join(str(v) for v in p.get("window", [])),
        "tile": payload_to_tile(p),
        "geometry": footprint,
    }


def acquisitions(hits: Any) -> Any:
    """Hits grouped by acquisition date and platform: how many, and the best of each.

    Args:
        hits: A GeoDataFrame from :func:`rsia_geo.search` (or :func:`same_place`).

    Returns:
        A DataFrame, one row per (``date``, ``platform``), newest first: ``hits``,
        ``best_rank`` and ``best_score`` (when the hits are ranked), ``items`` (item ids).

    Raises:
        InvalidArgumentError: ``hits`` has no ``datetime`` column.
    """
    import pandas as pd  # type: ignore[import-untyped]

    if not hasattr(hits, "columns") or "datetime" not in hits.columns:
        raise InvalidArgumentError(
            "acquisitions needs hits from rsia_geo.search or same_place (a datetime column)"
        )
    cols = ["date", "platform", "hits", "best_rank", "best_score", "items"]
    if not len(hits):
        return pd.DataFrame({c: [] for c in cols})

    def day(value: Any) -> str:
        # an instant gives its day; a STAC start/end interval gives "start/end" days
        text = str(value or "")
        return "/".join(part[:10] for part in text.split("/")) if text else "unknown"

    frame = pd.DataFrame(
        {
            "date": [day(v) for v in hits["datetime"]],
            "platform": [p or "unknown" for p in hits.get("platform", [None] * len(hits))],
            "rank": list(hits["rank"]) if "rank" in hits.columns else [None] * len(hits),
            "score": list(hits["score"]) if "score" in hits.columns else [None] * len(hits),
            "item_id": list(hits["item_id"]),
        }
    )
    rows = []
    for (date, platform), g in frame.groupby(["date", "platform"], sort=False):
        ranked = g.dropna(subset=["rank"])
        best = ranked.loc[ranked["rank"].idxmin()] if len(ranked) else None
        rows.append(
            {
                "date": date,
                "platform": platform,
                "hits": len(g),
                "best_rank": int(best["rank"]) if best is not None else None,
                "best_score": float(best["score"]) if best is not None else None,
                "items": ",".join(dict.fromkeys(g["item_id"])),
            }
        )
    return pd.DataFrame(rows, columns=cols).sort_values("date", ascending=False, kind="stable")
