"""Train the text route of a checkpoint: sentences -> that checkpoint's image embedding space.

The image side stays frozen (the checkpoint's embeddings, so an existing index serves the text
route unchanged). Each step draws a batch of distinct training images, one view of each (plain
or mirrored) and one sentence describing it: a human caption (words dropped at random) or what
Whisper's recogniser heard when a training voice spoke a caption (``transcripts.jsonl`` beside
the manifest, from :func:`~rsia_geo.training.transcripts.transcribe_manifest`), so the encoder
learns the recogniser's mistakes too. Loss: symmetric InfoNCE with a learned temperature.

For the pretrained kind (a frozen sentence encoder + a trained head), every sentence is
embedded once by the sentence encoder (cached on disk) and only the head trains: a few seconds
an epoch on 2 cores. Its word-dropped captions are drawn once (``variants`` per caption) so
that they can be cached too.

Validation manifests with transcripts are scored after each epoch (text route alone, cosine,
the same mR as the audio route's); they are reported, never used to pick weights: the last
epoch's weights are written.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rsia_geo.training.dataset import DataError, _caption_key, load_split

__all__ = ["TextRouteSettings", "route_vocabulary", "text_route_metrics", "train_text_route"]


class TextRouteSettings:
    """Settings of :func:`train_text_route`.

    Args:
        epochs: Passes over the training images.
        batch_size: Images per step (distinct).
        lr: AdamW learning rate (cosine decay to 5 % of it).
        caption_share: Share of steps' sentences that are human captions (the rest transcripts;
            1.0 when the manifest has no transcripts).
        word_drop: Chance to drop each word of a caption.
        views: Image views per training image: 1 (plain) or 2 (plus the mirrored one); 1
            with ``image_views="d8"``, whose mean holds every view already.
        image_views: The image embeddings the route is trained against: ``"single"`` (each
            view as it is) or ``"d8"`` (the mean over the 8 rotations and reflections, as an
            index made with ``image_views="d8"`` holds its tiles).
        variants: Word-dropped copies drawn once per caption for the pretrained kind (whose
            sentence vectors are cached); the hashed kind drops words afresh each step.
        seed: Random seed.
        threads: Torch CPU threads.
        mask_same_caption: Leave out of a step's negatives the images of which the sentence
            drawn for another image is, word for word, one of their own captions (as
            ``rsia-geo train --mask-same-caption`` does for the image side).
    """

    def __init__(
        self,
        *,
        epochs: int = 60,
        batch_size: int = 128,
        lr: float = 2e-3,
        caption_share: float = 0.5,
        word_drop: float = 0.1,
        views: int = 2,
        image_views: str = "single",
        variants: int = 2,
        seed: int = 0,
        threads: int = 2,
        mask_same_caption: bool = False,
    ) -> None:
        from rsia_geo.errors import InvalidArgumentError
        from rsia_geo.tiles import check_views

        if epochs < 1 or batch_size < 2:
            raise InvalidArgumentError(
                f"epochs={epochs} must be >= 1 and batch_size={batch_size} >= 2"
            )
        if not 0.0 <= caption_share <= 1.0 or not 0.0 <= word_drop < 1.0:
            raise InvalidArgumentError(
                f"caption_share={caption_share} must be in [0, 1] and "
                f"word_drop={word_drop} in [0, 1)"
            )
        if views not in (1, 2):
            raise InvalidArgumentError(f"views={views} must be 1 (plain) or 2 (plus mirrored)")
        if variants < 0:
            raise InvalidArgumentError(f"variants={variants} must be >= 0")
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.image_views = check_views(image_views)
        self.caption_share, self.word_drop = caption_share, word_drop
        self.views = 1 if image_views == "d8" else views
        self.variants = variants
        self.seed, self.threads = seed, threads
        self.mask_same_caption = mask_same_caption

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dict(vars(self))


def _image_targets(
    model: Any,
    images: list[str],
    views: int,
    cache_dir: Path | None,
    image_views: str = "single",
) -> torch.Tensor:
    """Unit image embeddings ``(N, views, D)`` of the checkpoint (cached on disk).

    The cache file is named by the image weights, the image list and the views, so voicings of
    the same images (one per held-out voice family) share one file. With ``image_views="d8"``
    the one view is the mean over the 8 rotations and reflections.
    """
    import hashlib

    from rsia_geo.models.checkpoint import image_side_sha256
    from rsia_geo.training.train import load_image

    cache = None
    if cache_dir is not None:
        sha = str(image_side_sha256(model) or "")
        digest = hashlib.sha256("\n".join(images).encode("utf-8")).hexdigest()
        tag = "_d8" if image_views == "d8" else ""
        cache = cache_dir / f"images_{sha[:12]}_{digest[:12]}_v{views}{tag}.pt"
    if cache is not None and cache.exists():
        blob = torch.load(cache, weights_only=True)
        if blob["images"] == images and blob["v"].shape[1] == views:
            out: torch.Tensor = blob["v"]
            return out
    vs = []
    for i in range(0, len(images), 32):
        imgs = torch.stack(
            [model.preprocess_images(load_image(p)[None])[0] for p in images[i : i + 32]]
        )
        per_view = [model.encode_images(imgs, views=image_views)]
        if views == 2:
            per_view.append(model.encode_images(imgs.flip(-1)))
        vs.append(torch.stack(per_view, dim=1))
    v = torch.cat(vs)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images, "v": v}, cache)
    return v


def _sentences(
    manifest: str | Path, split: str
) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Images of a split, with their captions and their transcripts (empty when none)."""
    from rsia_geo.training.transcripts import read_transcripts, transcripts_path

    rows = load_split(manifest, split)
    if not rows:
        raise DataError(f"manifest {str(manifest)!r} has no rows of split {split!r}")
    heard_file = transcripts_path(manifest)
    heard = read_transcripts(heard_file) if heard_file.exists() else {}
    images = list(dict.fromkeys(r["image"] for r in rows))
    at = {p: i for i, p in enumerate(images)}
    captions: list[list[str]] = [[] for _ in images]
    spoken: list[list[str]] = [[] for _ in images]
    for r in rows:
        i = at[r["image"]]
        if r["caption"] not in captions[i]:
            captions[i].append(r["caption"])
        if r["clip"] in heard:
            spoken[i].append(heard[r["clip"]]["text"])
    return images, captions, spoken


def text_route_metrics(
    encoder: Any, model: Any, manifest: str | Path, split: str = "val", *, cache: Path | None = None
) -> dict[str, float]:
    """Text route alone (cosine) on a voiced split's transcripts: the audio route's metrics.

    Args:
        encoder: A :class:`~rsia_geo.models.text.TextEncoder`.
        model: The checkpoint's model (image side).
        manifest: A manifest with ``transcripts.jsonl`` beside it.
        split: Split name.
        cache: Folder for the split's image embeddings (shared by voicings of its images).

    Returns:
        R@1/5/10 both ways and ``mR``.

    Raises:
        DataError: A clip of the split has no transcript.
    """
    from rsia_geo.training.evaluate import _metrics_both
    from rsia_geo.training.transcripts import read_transcripts, transcripts_path

    rows = load_split(manifest, split)
    if not rows:
        raise DataError(
            f"manifest {str(manifest)!r} has no rows of split {split!r} to score the text "
            "route on; give a manifest of that split"
        )
    heard = read_transcripts(transcripts_path(manifest))
    missing = [r["clip"] for r in rows if r["clip"] not in heard]
    if missing:
        raise DataError(
            f"{len(missing)} clips of {str(manifest)!r} have no transcript (first: "
            f"{missing[0]!r}); run `rsia-geo data transcribe {manifest}`"
        )
    per: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        per.setdefault(r["image"], []).append(r)
    per_image = min(len(v) for v in per.values())
    rows = [r for rs in per.values() for r in rs[:per_image]]
    v = _image_targets(model, list(per), 1, cache)[:, 0]
    t = encoder.encode([heard[r["clip"]]["text"] for r in rows], heard=True)
    cos = (v @ t.T).numpy()
    return _metrics_both(cos, cos, per_image)


def route_vocabulary(
    captions: list[list[str]], spoken: list[list[str]], *, min_heard: int = 3
) -> frozenset[str]:
    """The words a text route learned (its one-off recognition slips are not vocabulary).

    Every caption word, and the recogniser's words heard at least ``min_heard`` times.

    Args:
        captions: Captions per image.
        spoken: Transcripts per image.
        min_heard: Least count of a transcript-only word.

    Returns:
        The vocabulary (normalised words).
    """
    from collections import Counter

    from rsia_geo.models.text import normalise_text

    words = {w for texts in captions for t in texts for w in normalise_text(t)}
    heard = Counter(w for texts in spoken for t in texts for w in normalise_text(t))
    return frozenset(words | {w for w, n in heard.items() if n >= min_heard})


def _drop_words(text: str, p: float, rng: random.Random) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or words)


def _batch_texts(
    batch: list[int],
    captions: list[list[str]],
    spoken: list[list[str]],
    s: TextRouteSettings,
    rng: random.Random,
    word_drop: float,
) -> list[str]:
    out = []
    for i in batch:
        if spoken[i] and rng.random() >= s.caption_share:
            out.append(rng.choice(spoken[i]))
        else:
            out.append(_drop_words(rng.choice(captions[i]), word_drop, rng))
    return out


def _with_variants(
    captions: list[list[str]], s: TextRouteSettings, rng: random.Random
) -> list[list[str]]:
    """Each image's captions and ``s.variants`` word-dropped copies of each (drawn once)."""
    out = []
    for texts in captions:
        extra = [_drop_words(t, s.word_drop, rng) for t in texts for _ in range(s.variants)]
        out.append(list(dict.fromkeys([*texts, *extra])))
    return out


class _SentenceVectors:
    """The frozen sentence encoder's vectors of training sentences, computed once (on disk)."""

    def __init__(self, encoder: Any, cache_dir: Path) -> None:
        self.encoder = encoder
        self.file = cache_dir / f"sentences_{encoder.sentence.sha256[:12]}.pt"
        self.vectors: dict[str, torch.Tensor] = {}
        if self.file.exists():
            self.vectors = dict(torch.load(self.file, weights_only=True))

    def add(self, texts: list[str], progress: bool) -> None:
        """Embed the texts not cached yet (a progress bar over batches) and save the cache."""
        from tqdm.auto import tqdm

        todo = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if not todo:
            return
        for b in tqdm(range(0, len(todo), 256), desc="sentence vectors", disable=not progress):
            part = todo[b : b + 256]
            self.vectors.update(zip(part, self.encoder.sentence.embed(part), strict=True))
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        torch.save(self.vectors, tmp)
        tmp.replace(self.file)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """Raw route embeddings of cached sentences (through the head, on its device)."""
        vectors = torch.stack([self.vectors[t] for t in texts]).to(self.encoder.skip.weight.device)
        out: torch.Tensor = self.encoder.head(vectors)
        return out


def _one_epoch(
    embed: Any,
    params: Any,
    scale: nn.Parameter,
    steppers: tuple[Any, Any],
    targets: torch.Tensor,
    texts: tuple[list[list[str]], list[list[str]]],
    s: TextRouteSettings,
    rng: random.Random,
) -> float:
    """One pass over the training images in batches of distinct images; the mean loss.

    ``embed`` maps a batch of sentences to raw embeddings; ``params`` is the module trained.
    """
    opt, sched = steppers
    captions, spoken = texts
    params.train()
    word_drop = 0.0 if s.variants and isinstance(embed, _SentenceVectors) else s.word_drop
    order = list(range(len(targets)))
    rng.shuffle(order)
    keys = [{_caption_key(t) for t in texts} for texts in captions] if s.mask_same_caption else None
    losses = []
    for b in range(0, len(order) - 1, s.batch_size):
        batch = order[b : b + s.batch_size]
        if len(batch) < 2:
            continue
        view = torch.randint(0, s.views, (len(batch),))
        v = targets[torch.tensor(batch), view]
        said = _batch_texts(batch, captions, spoken, s, rng, word_drop)
        t = nn.functional.normalize(embed(said), dim=-1)
        logits = scale.clamp(max=np.log(100.0)).exp() * t @ v.T
        if keys is not None:  # sentence j also one of image i's own captions: no negative
            words = [_caption_key(x) for x in said]
            same = torch.tensor([[w in keys[i] for i in batch] for w in words])
            logits = logits.masked_fill(same & ~torch.eye(len(batch), dtype=torch.bool), -1e4)
        labels = torch.arange(len(batch))
        loss = (nn.functional.cross_entropy(logits, labels)
                + nn.functional.cross_entropy(logits.T, labels)) / 2  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _route_and_embed(
    config: Any,
    texts: tuple[list[list[str]], list[list[str]]],
    s: TextRouteSettings,
    rng: random.Random,
    where: tuple[Path, bool],
) -> tuple[Any, Any, list[list[str]]]:
    """The encoder to train, how a batch of sentences is embedded, and the captions to draw.

    The pretrained kind's sentences (captions with their word-dropped variants, transcripts)
    are embedded once by the frozen sentence encoder, so a step runs only the head.
    """
    from rsia_geo.models.text import PretrainedTextEncoder, TextEncoder

    captions, spoken = texts
    encoder: Any
    if config.kind == "pretrained":
        encoder = PretrainedTextEncoder(config)
        if s.variants:
            captions = _with_variants(captions, s, rng)
        embed: Any = _SentenceVectors(encoder, where[0])
        embed.add([t for group in (*captions, *spoken) for t in group], where[1])
    else:
        encoder = TextEncoder(config)
        embed = encoder
    encoder.vocabulary = route_vocabulary(texts[0], spoken)
    return encoder, embed, captions


def train_text_route(
    checkpoint: str | Path,
    manifest: str | Path,
    out: str | Path,
    *,
    val_manifests: tuple[str | Path, ...] = (),
    settings: TextRouteSettings | None = None,
    text_config: Any = None,
    kind: str = "pretrained",
    progress: bool = True,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Train a text encoder for a checkpoint's image space and write it into ``out``.

    Args:
        checkpoint: The image/audio checkpoint (folder or name) whose image side is the target.
        manifest: Training manifest (``train`` split; its ``transcripts.jsonl`` when present).
        out: Folder for ``text.safetensors``, ``text.json`` and ``text_log.jsonl`` (copy them
            into the checkpoint's folder to ship them).
        val_manifests: Manifests with transcripts to report the text route on (``val`` split).
        settings: Training settings.
        text_config: A :class:`~rsia_geo.models.text.TextConfig` (default: ``kind`` at the
            checkpoint's ``embed_dim``, other fields default).
        kind: The encoder kind when ``text_config`` is None: ``"pretrained"`` (frozen
            all-MiniLM-L6-v2 + a trained head), ``"hashed"``, ``"bank"`` (the training
            captions and the images they describe, nothing trained: seconds), or
            ``"ensemble"`` (the three in turn, in ``out/hashed``, ``out/pretrained`` and
            ``out/bank``, then combined in ``out``).
        progress: Progress bars (sentence vectors, epochs).
        cache: Folder for the image embeddings and sentence vectors computed once (default
            ``out/cache``; an ensemble's members share the ensemble's).

    Returns:
        The report: settings, data sizes, per-epoch loss and validation metrics, time.
    """
    from tqdm.auto import tqdm

    from rsia_geo.models import load_checkpoint
    from rsia_geo.models.checkpoint import image_side_sha256
    from rsia_geo.models.text import TextConfig, save_text_encoder
    from rsia_geo.weights import shipped_checkpoint, shipped_checkpoints

    s = settings or TextRouteSettings()
    if (text_config.kind if text_config is not None else kind) == "ensemble":
        return _train_ensemble(
            checkpoint, manifest, out, val_manifests, s, text_config, progress, cache
        )
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)
    ckpt = Path(checkpoint)
    if not ckpt.exists() and str(checkpoint) in shipped_checkpoints():
        ckpt = shipped_checkpoint(str(checkpoint))
    model = load_checkpoint(ckpt).eval()
    sha = str(image_side_sha256(model) or "")  # the image side it is trained against
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache is not None else out_dir / "cache"
    images, captions, spoken = _sentences(manifest, "train")
    targets = _image_targets(model, images, s.views, cache, s.image_views)
    if not any(spoken):
        s.caption_share = 1.0
    n_captions = sum(len(c) for c in captions)
    config = text_config or TextConfig(embed_dim=model.config.embed_dim, kind=kind)
    if config.kind == "bank":
        where = (ckpt, sha, manifest, out_dir, cache)
        return _build_bank(
            model, (images, captions), targets, config, where, val_manifests, s.image_views
        )
    encoder, embed, captions = _route_and_embed(
        config, (captions, spoken), s, rng, (cache, progress)
    )
    scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.05))))
    opt = torch.optim.AdamW([*encoder.parameters(), scale], lr=s.lr, weight_decay=1e-4)
    steps = s.epochs * -(-len(images) // s.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(k, steps) / steps))
    )
    log: list[dict[str, Any]] = []
    start = time.perf_counter()
    for epoch in tqdm(range(1, s.epochs + 1), desc="text route", disable=not progress):
        loss = _one_epoch(embed, encoder, scale, (opt, sched), targets, (captions, spoken), s, rng)
        row: dict[str, Any] = {"epoch": epoch, "loss": loss}
        if epoch == s.epochs or epoch % 10 == 0:
            for m in val_manifests:
                row[f"val:{Path(m).parent.name}"] = text_route_metrics(
                    encoder, model, m, cache=cache
                )
        log.append(row)
        with (out_dir / "text_log.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    report = {
        "checkpoint": str(ckpt),
        "image_weights_sha256": sha,
        "manifest": str(manifest),
        "settings": s.to_dict(),
        "train_images": len(images),
        "text_kind": encoder.config.kind,
        "captions": n_captions,
        "transcripts": sum(len(c) for c in spoken),
        "seconds": round(time.perf_counter() - start, 1),
        "final": log[-1],
    }
    encoder.recogniser_prompt = _recogniser_prompt(manifest)
    save_text_encoder(encoder.eval(), out_dir, image_sha256=sha, summary=report)
    return report


def _recogniser_prompt(manifest: str | Path) -> str:
    """The prompt a route trained on ``manifest`` ships: its training captions, one per class."""
    from rsia_geo.training.transcripts import domain_prompt

    return domain_prompt(load_split(manifest, "train"), split=None)


def _train_ensemble(
    checkpoint: str | Path,
    manifest: str | Path,
    out: str | Path,
    val_manifests: tuple[str | Path, ...],
    s: TextRouteSettings,
    text_config: Any,
    progress: bool,
    cache: str | Path | None,
) -> dict[str, Any]:
    """Train the hashed and the pretrained member, build the bank, then write the ensemble.

    The members share one cache (the training images are embedded once).
    """
    from dataclasses import replace

    from rsia_geo.models.text import (
        EnsembleTextEncoder,
        load_text_encoder,
        save_text_encoder,
    )

    shared = Path(cache) if cache is not None else Path(out) / "cache"
    reports = {}
    for member in ("hashed", "pretrained", "bank"):
        config = replace(text_config, kind=member) if text_config is not None else None
        reports[member] = train_text_route(
            checkpoint, manifest, Path(out) / member, val_manifests=val_manifests,
            settings=s, text_config=config, kind=member, progress=progress, cache=shared,
        )  # fmt: skip
    sha = reports["hashed"]["image_weights_sha256"]
    hashed = load_text_encoder(Path(out) / "hashed", image_sha256=sha)
    pretrained = load_text_encoder(Path(out) / "pretrained", image_sha256=sha)
    bank = load_text_encoder(Path(out) / "bank", image_sha256=sha, sentence=pretrained.sentence)  # type: ignore[union-attr]
    encoder = EnsembleTextEncoder(hashed, pretrained, bank)  # type: ignore[arg-type]
    report = {**reports["pretrained"], "text_kind": "ensemble", "members": reports}
    report["seconds"] = round(sum(r["seconds"] for r in reports.values()), 1)
    if val_manifests:
        from rsia_geo.models import load_checkpoint
        from rsia_geo.weights import shipped_checkpoint, shipped_checkpoints

        ckpt = Path(checkpoint)
        if not ckpt.exists() and str(checkpoint) in shipped_checkpoints():
            ckpt = shipped_checkpoint(str(checkpoint))
        model = load_checkpoint(ckpt).eval()
        report["final"] = {
            f"val:{Path(m).parent.name}": text_route_metrics(encoder, model, m, cache=shared)
            for m in val_manifests
        }
    encoder.recogniser_prompt = encoder.pretrained.recogniser_prompt  # the members' (one manifest)
    save_text_encoder(encoder.eval(), out, image_sha256=sha, summary=report)
    return report


def _build_bank(
    model: Any,
    data: tuple[list[str], list[list[str]]],
    targets: torch.Tensor,
    config: Any,
    where: tuple[Path, str, str | Path, Path, Path],
    val_manifests: tuple[str | Path, ...],
    image_views: str,
) -> dict[str, Any]:
    """The bank kind: the training captions and their images' embeddings, written to ``out``."""
    from rsia_geo.models.text import CaptionBankTextEncoder, save_text_encoder

    ckpt, sha, manifest, out_dir, cache = where
    images, captions = data
    start = time.perf_counter()
    bank = CaptionBankTextEncoder.build(captions, targets.mean(1), config)
    final: dict[str, Any] = {
        f"val:{Path(m).parent.name}": text_route_metrics(bank, model, m, cache=cache)
        for m in val_manifests
    }
    report = {
        "checkpoint": str(ckpt),
        "image_weights_sha256": sha,
        "manifest": str(manifest),
        "train_images": len(images),
        "text_kind": "bank",
        "image_views": image_views,
        "captions": sum(len(c) for c in captions),
        "bank_captions": bank.config.bank_size,
        "bank_k": bank.config.bank_k,
        "bank_tau": bank.config.bank_tau,
        "seconds": round(time.perf_counter() - start, 1),
        "final": final,
    }
    bank.recogniser_prompt = _recogniser_prompt(manifest)
    save_text_encoder(bank, out_dir, image_sha256=sha, summary=report)
    return report
