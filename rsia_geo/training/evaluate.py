"""Evaluate a checkpoint on a voiced split: retrieval metrics with and without rescoring/rerank.

Scores evaluated, each in both directions (image -> audio, audio -> image):

* ``cosine``: the dual-encoder cosine alone (what the vector index answers);
* ``cosine+ia@K``: the serving pipeline: the top ``K`` candidates of the cosine search are
  rescored with the exact IA pairwise score (candidates outside the top K keep their order,
  below);
* ``ia``: the IA score over all pairs (ALAC's test-time ranking);
* ``...+bswfr``: each of the above followed by the BSWFR mutual-rank rerank with ``k``.

Plus per-class mAP (audio -> image) of the pipeline score, a JSON report and a PNG of the
recall@K curves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsia_geo.models import ALACModel, load_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores
from rsia_geo.rerank import bswfr_rerank
from rsia_geo.tiles import DEFAULT_IMAGE_VIEWS, check_views
from rsia_geo.training.dataset import DataError, load_split
from rsia_geo.training.metrics import class_map, recall_curves, retrieval_metrics

__all__ = ["evaluate", "evaluate_scores", "rescore_topk"]


def rescore_topk(first: np.ndarray, second: np.ndarray, k: int) -> np.ndarray:
    """Per row, replace the top-``k`` entries of ``first`` by ``second``, kept above the rest.

    Args:
        first: Stage-1 scores ``(Q, C)`` (e.g. cosine).
        second: Stage-2 scores ``(Q, C)`` (e.g. IA), bounded in [-1, 1].
        k: Candidates rescored per query.

    Returns:
        Scores whose ranking is: the top-k by ``second``, then the rest by ``first``.
    """
    f = np.asarray(first, dtype=np.float64)
    out = f - 10.0  # below every rescored candidate
    k = min(k, f.shape[1])
    top = np.argsort(-f, axis=1, kind="stable")[:, :k]
    rows = np.arange(f.shape[0])[:, None]
    out[rows, top] = np.asarray(second, dtype=np.float64)[rows, top] + 10.0
    return out


def candidates_only(first: np.ndarray, second: np.ndarray, k: int) -> np.ndarray:
    """Per row, ``second`` on the top-``k`` entries of ``first``, ``-inf`` elsewhere.

    The scores the search pipeline holds after IA rescoring (unshifted, so a rerank that
    multiplies them sees the served values).

    Args:
        first: Stage-1 scores ``(Q, C)``.
        second: Stage-2 scores ``(Q, C)``.
        k: Candidates per query.

    Returns:
        The candidate scores.
    """
    f = np.asarray(first, dtype=np.float64)
    out = np.full_like(f, -np.inf)
    k = min(k, f.shape[1])
    top = np.argsort(-f, axis=1, kind="stable")[:, :k]
    rows = np.arange(f.shape[0])[:, None]
    out[rows, top] = np.asarray(second, dtype=np.float64)[rows, top]
    return out


def with_feedback(a2i: np.ndarray, units: np.ndarray, weight: float) -> np.ndarray:
    """Voice -> image candidate scores with ``search``'s feedback from the first places.

    Each query's candidates (the finite entries of its row) gain
    :func:`rsia_geo.pipeline.feedback_scores` toward its first
    :data:`~rsia_geo.pipeline.FEEDBACK_PLACES` candidates (whole images: one place each).

    Args:
        a2i: ``(Q, N)`` candidate scores, ``-inf`` outside the candidates
            (:func:`candidates_only`).
        units: ``(N, d)`` unit image vectors.
        weight: The feedback weight (0: the scores unchanged).

    Returns:
        The ``(Q, N)`` scores with the feedback added.
    """
    from rsia_geo.pipeline import FEEDBACK_PLACES, feedback_scores

    out = np.array(a2i, dtype=np.float64)
    if weight == 0:
        return out
    for q in range(out.shape[0]):
        cands = np.flatnonzero(np.isfinite(out[q]))
        leads = np.argsort(-out[q, cands], kind="stable")[:FEEDBACK_PLACES]
        out[q, cands] = feedback_scores(units[cands], out[q, cands], leads, weight)
    return out


def served_rerank(
    cos_a2i: np.ndarray,
    ia_a2i: np.ndarray,
    image_bank_ia: np.ndarray,
    *,
    rescore_k: int = 50,
    rerank_k: int = 30,
) -> np.ndarray:
    """Audio -> image scores exactly as the search pipeline serves them with ``rerank=True``.

    Each query's top ``rescore_k`` images by cosine are rescored by IA, then reranked by
    :func:`~rsia_geo.rerank.bswfr_query` with reverse ranks against the checkpoint's bank.

    Args:
        cos_a2i: ``(Q, N)`` cosine scores, queries in rows.
        ia_a2i: ``(Q, N)`` IA scores.
        image_bank_ia: ``(N, M)`` IA scores of every image against the ``M`` bank clips.
        rescore_k: IA candidates.
        rerank_k: BSWFR ``k``.

    Returns:
        ``(Q, N)`` served scores (``-inf`` outside each query's candidates).
    """
    from rsia_geo.rerank import bswfr_query

    out = np.full(cos_a2i.shape, -np.inf)
    k = min(rescore_k, cos_a2i.shape[1])
    for q in range(cos_a2i.shape[0]):
        cand = np.argsort(-cos_a2i[q], kind="stable")[:k]
        out[q, cand] = bswfr_query(ia_a2i[q, cand], image_bank_ia[cand], rerank_k)
    return out


def _metrics_both(i2a: np.ndarray, a2i: np.ndarray, per_image: int) -> dict[str, float]:
    """Metrics with a (possibly different) matrix per direction, both ``N x (N*c)``."""
    m1 = retrieval_metrics(i2a, per_image)
    m2 = retrieval_metrics(a2i, per_image)
    out = {k: v for k, v in m1.items() if k.startswith("i2a")}
    out.update({k: v for k, v in m2.items() if k.startswith("a2i")})
    out["mR"] = float(np.mean([v for k, v in out.items() if k != "mR"]))
    return out


def evaluate_scores(
    cos: np.ndarray,
    ia: np.ndarray,
    *,
    per_image: int = 5,
    rescore_k: int = 50,
    rerank_k: int = 30,
    image_bank_ia: np.ndarray | None = None,
    hub: np.ndarray | None = None,
    image_units: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """All score variants' metrics from the cosine and IA matrices (``N x (N*c)``).

    The ``+bswfr`` variants are the lineage's matrix rerank (reverse ranks among the split's
    own queries). With ``image_bank_ia``, the ``served`` variant reranks audio -> image as
    the search pipeline does (reverse ranks against the checkpoint's bank; its image -> audio
    half is the plain rescored one, which serving never does).

    Args:
        cos: Cosine scores.
        ia: IA scores.
        per_image: Clips per image.
        rescore_k: Candidates rescored by IA in the pipeline variant.
        rerank_k: BSWFR ``k``.
        image_bank_ia: ``(N, M)`` IA scores of the images against the bank clips.
        hub: ``(N,)`` hubness of the images against the bank
            (:func:`rsia_geo.rerank.hubness`): the ``+hub`` variant is the pipeline as
            ``search(hubness=0.5)`` serves it, the candidates' IA scores less
            :data:`~rsia_geo.rerank.HUB_BETA` times their hubness (audio -> image; its image ->
            audio half is the plain pipeline's).
        image_units: ``(N, d)`` unit image vectors: the ``+feedback`` variant is the pipeline
            as ``search`` serves it by default (:func:`with_feedback` at
            :data:`~rsia_geo.pipeline.DEFAULT_FEEDBACK`, audio -> image; its image -> audio
            half is the plain pipeline's).

    Returns:
        Variant name -> metrics.
    """
    from rsia_geo.rerank import HUB_BETA

    variants: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "cosine": (cos, cos),
        f"cosine+ia@{rescore_k}": (
            candidates_only(cos, ia, rescore_k),
            candidates_only(cos.T, ia.T, rescore_k).T,
        ),
        "ia": (ia, ia),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (i2a, a2i) in list(variants.items()):
        out[name] = _metrics_both(i2a, a2i, per_image)
        rr_i2a = bswfr_rerank(i2a, rerank_k)
        rr_a2i = bswfr_rerank(a2i.T, rerank_k).T
        out[f"{name}+bswfr@{rerank_k}"] = _metrics_both(rr_i2a, rr_a2i, per_image)
    if hub is not None:
        base = variants[f"cosine+ia@{rescore_k}"][0]
        less = ia.T - HUB_BETA * np.asarray(hub, dtype=np.float64)[None, :]
        out[f"cosine+ia@{rescore_k}+hub"] = _metrics_both(
            base, candidates_only(cos.T, less, rescore_k).T, per_image
        )
    if image_units is not None:  # search's default: feedback from the first places
        from rsia_geo.pipeline import DEFAULT_FEEDBACK

        base, a2i = variants[f"cosine+ia@{rescore_k}"]
        fed = with_feedback(a2i.T, image_units, DEFAULT_FEEDBACK)
        out[f"cosine+ia@{rescore_k}+feedback"] = _metrics_both(base, fed.T, per_image)
    if image_bank_ia is not None:  # search(rerank=True) as served by default: no hubness
        served = served_rerank(cos.T, ia.T, image_bank_ia, rescore_k=rescore_k, rerank_k=rerank_k).T
        base = variants[f"cosine+ia@{rescore_k}"][0]
        out[f"served: cosine+ia@{rescore_k}+bswfr@{rerank_k} (bank)"] = _metrics_both(
            base, served, per_image
        )
    return out


@torch.no_grad()
def encode_images(
    model: ALACModel,
    rows: list[dict[str, Any]],
    batch: int = 32,
    progress: bool = False,
    views: str = "single",
) -> tuple[torch.Tensor, list[str]]:
    """Raw embeddings of the images of manifest rows (in first-seen order) and their labels.

    Args:
        model: The model.
        rows: Manifest rows.
        batch: Images per batch.
        progress: Progress bar.
        views: Image views (:meth:`~rsia_geo.models.ALACModel.encode_images`).

    Returns:
        ``(v, labels)``.
    """
    from tqdm.auto import tqdm

    from rsia_geo.training.train import load_image

    images = list(dict.fromkeys(r["image"] for r in rows))
    first_label: dict[str, str] = {}
    for r in rows:
        first_label.setdefault(r["image"], r.get("label") or "")
    labels = [first_label[p] for p in images]
    vs = []
    for i in tqdm(range(0, len(images), batch), desc="images", disable=not progress):
        imgs = torch.stack(
            [model.preprocess_images(load_image(p)[None])[0] for p in images[i : i + batch]]
        )
        vs.append(model.encode_images(imgs, normalize=False, views=views))
    return torch.cat(vs), labels


def _heard(path: str, condition: str) -> torch.Tensor:
    """A clip as served (trimmed), under a recording condition seeded by its file name."""
    import zlib

    from rsia_geo.audio import SAMPLE_RATE, load_audio, trim_speech
    from rsia_geo.training.augment import apply_condition

    wave = load_audio(path, trim=True).samples
    if condition != "clean":
        seed = zlib.crc32(Path(path).name.encode())
        wave = trim_speech(apply_condition(wave, condition, seed=seed), SAMPLE_RATE)
    return torch.from_numpy(wave)


@torch.no_grad()
def encode_clips(
    model: ALACModel,
    rows: list[dict[str, Any]],
    batch: int = 32,
    progress: bool = False,
    condition: str = "clean",
) -> torch.Tensor:
    """Raw embeddings of the clips of manifest rows, under a recording condition.

    Args:
        model: The model.
        rows: Manifest rows with ``clip_path``.
        batch: Clips per batch.
        progress: Progress bar.
        condition: One of :data:`rsia_geo.training.augment.CONDITIONS` (seeded per clip).

    Returns:
        ``(n, dim)`` raw audio embeddings.
    """
    from tqdm.auto import tqdm

    as_ = []
    for i in tqdm(range(0, len(rows), batch), desc="clips", disable=not progress):
        waves = [_heard(r["clip_path"], condition) for r in rows[i : i + batch]]
        lengths = torch.tensor([len(w) for w in waves])
        wave = torch.zeros(len(waves), int(lengths.max()))
        for j, w in enumerate(waves):
            wave[j, : len(w)] = w
        as_.append(model.encode_audio(wave, lengths, normalize=False))
    return torch.cat(as_)


# Long (~95 lines, ~35 of them docstring): one linear pass (encode, score, each scoring
# variant, report), every step a named function of this module.
def evaluate(
    checkpoint: str | Path | ALACModel,
    manifest: str | Path,
    *,
    split: str = "val",
    per_image: int = 5,
    rescore_k: int = 50,
    rerank_k: int = 30,
    out_dir: str | Path | None = None,
    batch: int = 32,
    progress: bool = True,
    on_embeddings: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    condition: str = "clean",
    image_views: str = DEFAULT_IMAGE_VIEWS,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a voicing manifest.

    Images are read from their files and clips decoded from theirs (no training caches), so
    this measures exactly what serving does.

    Args:
        checkpoint: Checkpoint folder or a loaded model.
        manifest: ``manifest.jsonl`` of ``rsia-geo data voice``.
        split: Split to evaluate.
        per_image: Clips per image (the first ``per_image`` clips of each image are used).
        rescore_k: Cosine candidates rescored by IA.
        rerank_k: BSWFR ``k``.
        out_dir: Where to write ``report.json`` and ``recall.png``.
        batch: Encoding batch size.
        progress: Progress bars.
        on_embeddings: Called with the raw image and audio embeddings.
        condition: Recording condition applied to every clip (``clean``, ``snr20``,
            ``snr10``, ``snr5``, ``reverb``, ``bandlimit``; seeded per clip).
        image_views: How images are embedded, as an index embeds its tiles (default: a
            new index's, ``"d8"``; ``"single"`` for an index made with it).

    Returns:
        The report: metrics per variant, per-class mAP, sizes, checkpoint info.

    Raises:
        DataError: The split is missing or an image has fewer than ``per_image`` clips.
    """
    check_views(image_views)
    model = checkpoint if isinstance(checkpoint, ALACModel) else load_checkpoint(checkpoint)
    rows = load_split(manifest, split)
    if not rows:
        raise DataError(f"no clips of split {split!r} in {str(manifest)!r}")
    per: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        per.setdefault(r["image"], []).append(r)
    short = [p for p, rs in per.items() if len(rs) < per_image]
    if short:
        raise DataError(f"{len(short)} images have fewer than {per_image} clips, e.g. {short[:2]}")
    rows = [r for rs in per.values() for r in rs[:per_image]]
    v, labels = encode_images(model, rows, batch, progress, image_views)
    a = encode_clips(model, rows, batch, progress, condition)
    if on_embeddings is not None:
        on_embeddings(v, a)
    cos = cosine_scores(v, a).numpy()
    ia = ia_scores(v, a).numpy()
    bank_ia = hub = None
    if (Path(getattr(model, "checkpoint_path", "") or "") / "audio_bank.safetensors").exists():
        from rsia_geo.weights import audio_bank, tile_hubness

        bank_ia = ia_scores(v, audio_bank(model)).numpy()
        hub = tile_hubness(model, v.numpy())
    variants = evaluate_scores(
        cos,
        ia,
        per_image=per_image,
        rescore_k=rescore_k,
        rerank_k=rerank_k,
        image_bank_ia=bank_ia,
        hub=hub,
        image_units=torch.nn.functional.normalize(v.double(), dim=-1).numpy(),
    )
    pipeline = rescore_topk(cos.T, ia.T, rescore_k).T
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint) if not isinstance(checkpoint, ALACModel) else None,
        "model_id": model.config.model_id,
        "model_version": model.config.version,
        "split": split,
        "condition": condition,
        "image_views": image_views,
        "images": len(per),
        "clips": len(rows),
        "speakers": sorted({r.get("speaker", "?") for r in rows}),
        "rescore_k": rescore_k,
        "bswfr_k": rerank_k,
        "metrics": variants,
        "class_map": class_map(pipeline, labels, per_image) if all(labels) else None,
        "recall_curves": {
            "cosine": recall_curves(cos, per_image),
            "ia": recall_curves(ia, per_image),
        },
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        _plot(report, out / "recall.png")
    return report


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, curves in report["recall_curves"].items():
        ax.plot(curves["k"], curves["i2a"], label=f"{name} image->audio")
        ax.plot(curves["k"], curves["a2i"], "--", label=f"{name} audio->image")
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K (%)")
    ax.set_title(f"{report['model_id']} on {report['split']} ({report['images']} images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
