"""Retrieval metrics exactly as the ALAC / AMFMN lineage defines them.

The score matrix is ``N x (N * c)``: N images against their ``c`` clips each (clip ``j``
belongs to image ``j // c``).

* image -> audio: an image's rank is the **best** rank among its ``c`` clips;
* audio -> image: a clip's rank is the rank of its single image;
* R@1, R@5, R@10 in both directions (percent), and **mR** = the mean of the six.

Per-class mAP treats every image of the query's class as relevant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["class_map", "recall_curves", "retrieval_metrics"]


def _check(scores: np.ndarray, per_image: int) -> tuple[int, int]:
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[1] != s.shape[0] * per_image:
        raise ValueError(
            f"scores must be N x (N * {per_image}); got {s.shape}. Order clips image by image"
        )
    return s.shape[0], s.shape[1]


def _ranks(scores: np.ndarray, per_image: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    n, m = _check(s, per_image)
    order = np.argsort(-s, axis=1, kind="stable")  # image -> clips
    pos = np.empty_like(order)
    pos[np.arange(n)[:, None], order] = np.arange(m)[None, :]
    own = np.arange(m).reshape(n, per_image)
    i2a = pos[np.arange(n)[:, None], own].min(axis=1)
    order_t = np.argsort(-s.T, axis=1, kind="stable")  # clip -> images
    target = np.arange(m) // per_image
    a2i = np.argmax(order_t == target[:, None], axis=1)
    return i2a, a2i


def retrieval_metrics(scores: np.ndarray, per_image: int = 5) -> dict[str, float]:
    """R@1/5/10 both ways and mR, in percent.

    Args:
        scores: ``N x (N * per_image)`` similarities.
        per_image: Clips per image (5 for the standard sets).

    Returns:
        ``i2a_r1, i2a_r5, i2a_r10, a2i_r1, a2i_r5, a2i_r10, mR``.
    """
    i2a, a2i = _ranks(scores, per_image)
    out = {}
    for k in (1, 5, 10):
        out[f"i2a_r{k}"] = 100.0 * float((i2a < k).mean())
    for k in (1, 5, 10):
        out[f"a2i_r{k}"] = 100.0 * float((a2i < k).mean())
    out["mR"] = float(np.mean(list(out.values())))
    return out


def recall_curves(
    scores: np.ndarray, per_image: int = 5, max_k: int = 50
) -> dict[str, list[float]]:
    """Recall@K for K = 1..max_k in both directions (percent).

    Args:
        scores: ``N x (N * per_image)`` similarities.
        per_image: Clips per image.
        max_k: Largest K.

    Returns:
        ``{"k": [...], "i2a": [...], "a2i": [...]}``.
    """
    i2a, a2i = _ranks(scores, per_image)
    ks = list(range(1, max_k + 1))
    return {
        "k": [float(k) for k in ks],
        "i2a": [100.0 * float((i2a < k).mean()) for k in ks],
        "a2i": [100.0 * float((a2i < k).mean()) for k in ks],
    }


def class_map(scores: np.ndarray, labels: Sequence[str], per_image: int = 5) -> dict[str, float]:
    """Mean average precision of audio -> image retrieval per scene class.

    Args:
        scores: ``N x (N * per_image)`` similarities.
        labels: Class of each of the N images.
        per_image: Clips per image.

    Returns:
        Class -> mAP (percent), plus ``"mean"`` over classes.
    """
    s = np.asarray(scores, dtype=np.float64)
    n, m = _check(s, per_image)
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must have {n} entries, got {lab.shape}")
    aps: dict[str, list[float]] = {}
    for j in range(m):
        q = lab[j // per_image]
        order = np.argsort(-s[:, j], kind="stable")
        rel = (lab[order] == q).astype(np.float64)
        hits = np.cumsum(rel)
        ap = float((hits / np.arange(1, n + 1) * rel).sum() / max(rel.sum(), 1))
        aps.setdefault(str(q), []).append(ap)
    out = {c: 100.0 * float(np.mean(v)) for c, v in sorted(aps.items())}
    out["mean"] = float(np.mean(list(out.values())))
    return out
