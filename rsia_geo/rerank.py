"""BSWFR mutual-rank rerank (ALAC's "plug-and-play" rerank, from GaLR's) and hubness.

For a query row ``i`` of a score matrix ``S`` (queries x candidates), take the top
``K1 = max(k_min, k)`` candidates by score. Candidate ``t`` at forward position ``r_f``
(0-based) has a reverse rank: the position of query ``i`` in ``t``'s own ranking of all queries
(column ``t`` sorted by score). Sorting the ``K1`` candidates by that reverse rank gives their
backward position ``r_b`` (0-based). The new score is

    s'(i, t) = s(i, t) * 0.7 * exp(-0.05 (r_f + 1)) * 0.3 * exp(-0.05 (r_b + 1))

and candidates outside the top ``K1`` get ``fill``. The reference code fills with 0; the default
here is ``-inf`` so that candidates always stay above non-candidates even when scores are
negative (with 0, a negative top-K score would fall below the zeroed rest). Note that for a
negative ``s`` the weights push it the wrong way; IA and cosine scores of good matches are
positive. ``0.7`` and ``0.3`` are constant factors and do not change rankings.

For audio -> image, apply the same function to ``S.T``.

Serving has one query at a time, so reverse ranks come from a *bank* of reference queries
(the checkpoint's training clips): :func:`bswfr_query` reranks one query's candidates given
each candidate's scores against the bank. The search pipeline and the evaluation's "served"
variant both call it.

:func:`hubness` is the other use of the bank: how close an image lies to reference queries
of every kind, which ``search(hubness=0.5)`` takes half of off its rescored score (CSLS).
"""

from __future__ import annotations

import numpy as np

from rsia_geo.errors import InvalidArgumentError

__all__ = [
    "HUB_BETA",
    "HUB_K",
    "bswfr_query",
    "bswfr_rerank",
    "bswfr_weights",
    "hubness",
    "reverse_ranks",
]

K_MIN = 10
DECAY = 0.05

HUB_K = 10
"""Nearest reference queries averaged into an image's hubness (CSLS's ``K``)."""
HUB_BETA = 0.5
"""Weight of an image's hubness subtracted from its score for a query: CSLS ranks an image
for a query by ``2 s(q, i) - r(q) - r(i)``, that is by ``s(q, i) - r(i) / 2``."""


def hubness(unit_images: np.ndarray, unit_bank: np.ndarray, k: int = HUB_K) -> np.ndarray:
    """How close each image lies to the queries of a reference bank: its hubness ``r(i)``.

    The mean cosine of an image to its ``k`` nearest reference queries (the checkpoint's
    training clips). An image near many queries of every kind (a "hub") scores high for
    queries it does not answer; cross-domain similarity local scaling (CSLS, Conneau et al.
    2018) ranks the images of a query by ``s(q, i) - r(i) / 2`` instead of ``s(q, i)``
    (:data:`HUB_BETA`). It depends on the image and the bank only, so an index computes it
    once per tile.

    Args:
        unit_images: ``(n, d)`` unit image embeddings.
        unit_bank: ``(m, d)`` unit embeddings of the reference queries.
        k: Nearest queries averaged (at most ``m``).

    Returns:
        ``(n,)`` float64 hubness, one per image.
    """
    images = np.asarray(unit_images, dtype=np.float32)
    bank = np.asarray(unit_bank, dtype=np.float32)
    if images.ndim != 2 or bank.ndim != 2 or images.shape[1] != bank.shape[1]:
        raise InvalidArgumentError(
            f"images {images.shape} and bank {bank.shape} must be (n, d) and (m, d)"
        )
    k = max(1, min(k, bank.shape[0]))
    out = np.empty(len(images), dtype=np.float64)
    for i in range(0, len(images), 256):  # bounded memory: 256 x m scores at a time
        scores = images[i : i + 256] @ bank.T
        top = np.partition(scores, scores.shape[1] - k, axis=1)[:, -k:]
        out[i : i + 256] = top.mean(axis=1, dtype=np.float64)
    return out


def bswfr_weights(reverse: np.ndarray, *, decay: float = DECAY) -> np.ndarray:
    """BSWFR weights of ``K1`` candidates in forward order, from their reverse ranks.

    Args:
        reverse: Reverse rank of the query for each candidate, candidates sorted by forward
            score (best first).
        decay: Exponential decay per rank position.

    Returns:
        ``0.7 e^{-decay (r_f+1)} * 0.3 e^{-decay (r_b+1)}`` per candidate.
    """
    k1 = len(reverse)
    r_b = np.empty(k1, dtype=np.int64)
    r_b[np.argsort(reverse, kind="stable")] = np.arange(k1)
    r_f = np.arange(k1)
    out: np.ndarray = 0.7 * np.exp(-decay * (r_f + 1)) * 0.3 * np.exp(-decay * (r_b + 1))
    return out


def bswfr_query(
    scores: np.ndarray,
    bank_scores: np.ndarray,
    k: int = 30,
    *,
    k_min: int = K_MIN,
    decay: float = DECAY,
) -> np.ndarray:
    """Rerank one query's candidates with reverse ranks taken against a bank of queries.

    Candidates beyond the rerank depth ``K1 = max(k_min, k)`` keep their order after the
    reranked ones: their new score is their old score shifted below the lowest reranked score,
    so every score stays finite.

    Args:
        scores: ``(C,)`` the query's scores of its candidates.
        bank_scores: Each candidate's scores against the ``M`` bank queries: ``(C, M)`` for
            all candidates, or ``(K1, M)`` for the ``K1`` best only, in forward order.
        k: BSWFR ``k``.
        k_min: Lower bound of ``K1``.
        decay: Exponential decay per rank position.

    Returns:
        ``(C,)`` reranked scores (higher is better).

    Raises:
        ValueError: ``k`` is not positive or the shapes disagree.
    """
    s = np.asarray(scores, dtype=np.float64)
    if k <= 0:
        raise ValueError(f"k={k!r} must be positive")
    k1 = min(max(k_min, k), len(s))
    order = np.argsort(-s, kind="stable")[:k1]
    bank = np.asarray(bank_scores, dtype=np.float64)
    if bank.shape[0] == len(s):
        bank = bank[order]
    elif bank.shape[0] != k1:
        raise ValueError(f"bank_scores has {bank.shape[0]} rows; expected {len(s)} or {k1}")
    reverse = (bank > s[order][:, None]).sum(axis=1)  # the query's rank among the bank's
    new = s[order] * bswfr_weights(reverse, decay=decay)
    out = s.copy()
    if k1 < len(s):
        rest = np.ones(len(s), dtype=bool)
        rest[order] = False
        out[rest] = s[rest] - s[rest].max() + new.min() - 1.0
    out[order] = new
    return out


def reverse_ranks(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """0-based rank of query ``rows[k]`` in candidate ``cols[k]``'s ranking of all queries.

    Ties are broken by query index, as a stable descending sort does.

    Args:
        scores: ``(Q, C)`` score matrix.
        rows: Query indices.
        cols: Candidate indices (same length as ``rows``).

    Returns:
        Integer ranks.
    """
    col_scores = scores[:, cols]  # (Q, K)
    mine = scores[rows, cols]  # (K,)
    q = np.arange(scores.shape[0])[:, None]
    better = (col_scores > mine[None, :]) | ((col_scores == mine[None, :]) & (q < rows[None, :]))
    return np.asarray(better.sum(axis=0))


def bswfr_rerank(
    scores: np.ndarray,
    k: int = 30,
    *,
    k_min: int = K_MIN,
    decay: float = DECAY,
    fill: float = -np.inf,
) -> np.ndarray:
    """Rerank every row of ``scores`` by forward and reverse (mutual) rank.

    Args:
        scores: ``(Q, C)`` similarities, queries in rows.
        k: Candidates per query (``K``; GaLR's default 30).
        k_min: Lower bound of ``K1 = max(k_min, k)``.
        decay: Exponential decay per rank position.
        fill: Score of candidates outside the top ``K1``.

    Returns:
        ``(Q, C)`` float64 reranked scores.

    Raises:
        ValueError: ``scores`` is not 2-D or ``k`` is not positive.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D matrix, got shape {s.shape}")
    if k <= 0:
        raise ValueError(f"k={k!r} must be positive")
    k1 = min(max(k_min, k), s.shape[1])
    out = np.full_like(s, fill)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k1]  # forward ranking
    for i in range(s.shape[0]):
        cand = order[i]
        rev = reverse_ranks(s, np.full(k1, i), cand)
        out[i, cand] = s[i, cand] * bswfr_weights(rev, decay=decay)
    return out
