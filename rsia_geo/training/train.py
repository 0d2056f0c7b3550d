"""Train ALAC on image-voice pairs (the ALAC protocol, made practical on CPUs).

Protocol (as ALAC): Adam, learning rate decayed x0.7 every 20 epochs, the ALAC loss (summed
all-negative triplet + 0.1 NT-Xent + 0.1 AKT) with gradient clipping *after* ``backward``, the
checkpoint with the best validation mR kept. Options that make CPU training practical:

* **frozen backbone with cached token maps**: the image backbone runs once per image and view
  (rotations by 0/90/180/270 degrees, aerial scenes having no up), and only RELA, the image
  head and the audio encoder train;
* **cached audio features**: each clip is decoded, trimmed and turned into front-end features
  once; SpecAugment (time and frequency masks) and random time shifts are applied per batch;
* **image-balanced batches**: an epoch draws one clip per training image, so a batch never
  holds two clips of one image (false negatives are masked anyway).

State is saved every epoch (``last/``: model, optimisers, RNG, epoch) and a killed run resumes
where it stopped; ``log.csv`` / ``log.jsonl`` record every epoch; ``best/`` is a plain
checkpoint (safetensors + JSON) usable by ``rsia-geo evaluate`` and the index.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsia_geo.errors import RsiaError
from rsia_geo.models import ALACLoss, ALACModel, build_model, get_config, save_checkpoint
from rsia_geo.models.alac import cosine_scores, ia_scores, resize_images
from rsia_geo.training.dataset import DataError, _caption_key, load_split, manifest_pairs
from rsia_geo.training.metrics import retrieval_metrics

__all__ = ["TrainConfig", "encode_split", "load_image", "train", "train_kfold"]

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training run settings.

    Attributes:
        manifest: Voicing manifest (``manifest.jsonl`` from ``rsia-geo data voice``) or a
            list of them.
        out_dir: Run folder (checkpoints, logs, caches).
        model: Registry configuration name.
        model_overrides: Overrides of the configuration: ``{"audio": {...}, "frontend":
            {...}, "embed_dim": ...}``.
        train_split: Split to train on.
        val_split: Split to select the checkpoint on (clips of held-out voices).
        epochs: Passes over the training images.
        batch_size: Pairs per batch.
        lr: Adam learning rate.
        lr_decay: Factor applied every ``lr_decay_every`` epochs.
        lr_decay_every: Epochs between decays.
        weight_decay: Adam weight decay (ALAC: 0).
        grad_clip: Max gradient norm (0 disables).
        akt_adaptive: Rebuild AKT weights from trained p1, p2 (False: uniform, as ALAC's code).
        loss_weights: ``(triplet, nce, akt)``.
        freeze_backbone: Train only RELA, the image head and the audio encoder (and the last
            ``finetune_stages`` stages of the backbone) on cached activations. False: full
            fine-tuning, every backbone stage trains (BatchNorm statistics stay frozen) on
            views drawn afresh each epoch from the images kept in memory, mixed views
            included; nothing of the image side is cached (a GPU's work: ``device``).
        finetune_stages: Partial fine-tuning on CPUs: the activations before the backbone's
            last ``finetune_stages`` stages are cached per view, and those stages train with
            RELA and the heads (0: the backbone stays frozen).
        backbone_lr: Learning-rate factor of the fine-tuned backbone stages.
        allow_random_backbone: Train although the backbone has no pretrained weights and stays
            frozen (its random features cannot be learned from); for tests and smoke runs.
        views: Cached views per training image: rotations by 0/90/180/270 degrees (1-4), and
            their mirror images (5-8).
        spec_augment: Time/frequency masking and time shifts of audio features.
        audio_augment: Degrade each cached training clip with a random recording condition
            (noise, room, microphone band, clipping, silence, timbre;
            :func:`~rsia_geo.training.augment.random_condition`), seeded per clip.
        max_train_images: Use only this many training images (smoke runs).
        max_val_images: Use only this many validation images.
        seed: Seed of every random draw.
        threads: torch CPU threads.
        val_every: Epochs between validations.
        per_image: Clips per validation image (5 for UCM-Captions).
        k_folds: ALAC's protocol: split the training pool into ``k_folds`` reshuffled 80/20
            train/validation folds (:func:`train_kfold`); 0 uses ``val_split``.
        fold: Which fold this run trains (set by :func:`train_kfold`).
        amp: Run forward passes in bfloat16 autocast (helps on CPUs with bf16 units and on
            GPUs; measure first, see docs/benchmarks.md).
        mix_views: Scene-mixing views cached per training image, drawn as often as each
            plain view (:mod:`rsia_geo.training.scenes`; 0: none).
        mix_shift: Mixed windows straddle up to four scenes.
        mix_scale: ``(low, high)`` window side in scenes of the mixed views.
        mix_rotate: Mixed windows turn by any angle.
        mix_same_class: Probability that a mosaic neighbour shares the scene's class.
        device: Where the model trains: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... or ``"auto"``
            (CUDA when available). Caches are built on the CPU either way.
        workers: Processes drawing full fine-tuning's views (0: the training process).
        image_from: A checkpoint folder whose whole image side (backbone, RELA, image head)
            is loaded and kept frozen: only a new audio branch trains, against that
            checkpoint's image embeddings (cached per view), so the run's audio embeddings
            live in its image space and every index built with it stays valid (adapting the
            voice side to other speakers or microphones without re-indexing). Needs
            ``finetune_stages=0`` and a ``model`` with the same image side. The checkpoint's
            text route (which hears transcripts, not the audio branch) is copied beside the
            result; its BSWFR bank (the old audio branch's clips) is not.
        continue_audio: With ``image_from``, the audio branch starts from that checkpoint's
            own audio branch instead of fresh weights: its voice side is fine-tuned (e.g. on
            new speakers, microphones, or with ``voice_pairs``) rather than learned again.
            Needs the same audio branch configuration as the checkpoint.
        voice_pairs: Weight of a voice-invariance term (0: off): every step also draws, for
            each clip, the same caption said by another voice of the training voicing, and
            an audio-to-audio NT-Xent (:meth:`~rsia_geo.models.losses.ALACLoss.voice_pair_loss`)
            pulls the two voicings together against the batch's other captions. Needs a
            voicing with several voices per caption (``--voices-per-caption``).
        caption_weight: Weight of a caption term (0: off): every step also draws one human
            caption of each batch image (the manifest's ``caption`` field), embeds it with
            the frozen sentence encoder (all-MiniLM-L6-v2, the ``text`` extra; each caption
            once, cached in the run) through a head trained with the run, and an
            image-to-caption NT-Xent (:meth:`~rsia_geo.models.losses.ALACLoss.caption_loss`)
            shapes the image side with the captions' words as well as with the voices saying
            them. The head only trains the image side: the checkpoint's text route is trained
            afterwards against the final image side (``rsia-geo train-text``). Needs an image
            side that trains (not ``image_from``).
        mask_same_caption: Leave out of every term's negatives the pairs whose clip (or
            drawn caption) says, word for word, one of the other image's own captions: the
            clip describes that image as well as its own (UCM-Captions repeats sentences
            over many images of a class). Needs the manifest's ``caption`` field. Off by
            default (the starters trained without it).
    """

    manifest: str | list[str]
    out_dir: str
    model: str = "alac-efficientnet-lite0"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 60
    batch_size: int = 60
    lr: float = 2e-4
    lr_decay: float = 0.7
    lr_decay_every: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 2.0
    akt_adaptive: bool = True
    loss_weights: tuple[float, float, float] = (1.0, 0.1, 0.1)
    freeze_backbone: bool = True
    finetune_stages: int = 0
    backbone_lr: float = 0.1
    allow_random_backbone: bool = False
    views: int = 4
    spec_augment: bool = True
    audio_augment: bool = False
    max_train_images: int | None = None
    max_val_images: int | None = None
    k_folds: int = 0
    fold: int | None = None
    amp: bool = False
    mix_views: int = 0
    mix_shift: bool = True
    mix_scale: tuple[float, float] = (0.5, 2.0)
    mix_rotate: bool = True
    mix_same_class: float = 0.5
    device: str = "cpu"
    workers: int = 0
    image_from: str | None = None
    continue_audio: bool = False
    voice_pairs: float = 0.0
    caption_weight: float = 0.0
    mask_same_caption: bool = False
    seed: int = 0
    threads: int = 2
    val_every: int = 1
    per_image: int = 5

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form.

        Returns:
            The fields as a dict.
        """
        return dataclasses.asdict(self)


class TrainingError(RsiaError, RuntimeError):
    """Training cannot start or continue."""


def load_image(path: str | Path) -> torch.Tensor:
    """Read an RGB image file to a float ``(3, H, W)`` tensor in [0, 1].

    Args:
        path: Image file (JPEG, PNG, TIFF...).

    Returns:
        The image.

    Raises:
        DataError: The file is missing or unreadable.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _config_for(cfg: TrainConfig) -> Any:
    base = get_config(cfg.model)
    over = dict(cfg.model_overrides)
    kw: dict[str, Any] = {}
    for key in ("audio", "frontend", "backbone"):
        if key in over:
            kw[key] = dataclasses.replace(getattr(base, key), **over.pop(key))
    kw.update(over)
    return dataclasses.replace(base, **kw)


def _rows(cfg: TrainConfig, split: str, limit: int | None) -> list[dict[str, Any]]:
    manifests = [cfg.manifest] if isinstance(cfg.manifest, str) else list(cfg.manifest)
    rows = [r for m in manifests for r in load_split(m, split)]
    out = manifest_pairs(rows, split)
    if not out:
        raise DataError(f"no clips of split {split!r} in {manifests}")
    if limit is not None:
        keep = list(dict.fromkeys(r["image_id"] for r in out))[:limit]
        keep_set = set(keep)
        out = [r for r in out if r["image_id"] in keep_set]
    missing = [r["clip_path"] for r in out if not Path(r["clip_path"]).exists()]
    if missing:
        raise DataError(
            f"{len(missing)} clips listed in the manifest are missing, e.g. "
            f"{missing[:3]}; re-run `rsia-geo data voice` to recreate them"
        )
    return out


def _digest(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _view(images: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` of a batch: rotation by ``k % 4`` quarter turns, mirrored first when k >= 4."""
    if k >= 4:
        images = torch.flip(images, dims=(3,))
    return torch.rot90(images, k % 4, dims=(2, 3))


def _sharded_cache(
    joined: Path,
    key: str,
    n: int,
    shard: int,
    compute: Callable[[int, int, Any], torch.Tensor],
    progress: tuple[str, str] | None,
) -> torch.Tensor:
    """A cache of ``n`` rows computed ``shard`` rows at a time, resumable after a kill.

    ``compute(start, stop, bar)`` returns rows ``start:stop`` and advances the progress bar
    ``bar`` as it goes; ``progress`` is the bar's ``(description, unit)`` (None: no bar).
    Each shard is written atomically into a folder beside ``joined`` (its name without the
    suffix), so a killed run resumes at the first missing shard; when every shard exists they
    are joined into ``joined`` (one safetensors file, the tensor under ``key``) and the folder
    is removed.
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    if joined.exists():
        return load_file(str(joined))[key]
    desc, unit = progress or ("", "")
    bar = tqdm(total=n, desc=desc, unit=unit, disable=progress is None)
    parts = joined.with_suffix("")
    parts.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(n / shard)
    for si in range(n_shards):
        part = parts / f"part_{si:05d}.safetensors"
        start, stop = si * shard, min(n, (si + 1) * shard)
        if part.exists():
            bar.update(stop - start)
            continue
        rows = compute(start, stop, bar)
        tmp = part.with_name(part.name + ".part")
        save_file({key: rows.contiguous()}, str(tmp))
        tmp.replace(part)
    bar.close()
    out = torch.cat(
        [load_file(str(parts / f"part_{si:05d}.safetensors"))[key] for si in range(n_shards)]
    )
    tmp = joined.with_name(joined.name + ".part")
    save_file({key: out.contiguous()}, str(tmp))
    tmp.replace(joined)
    for part in parts.glob("part_*.safetensors"):
        part.unlink()
    parts.rmdir()
    return out


def _image_tokens(
    model: ALACModel,
    paths: Sequence[str],
    views: int,
    cache: Path,
    batch: int = 32,
    progress: bool = True,
    tail_stages: int = 0,
    embed: bool = False,
    shard: int = 256,
) -> torch.Tensor:
    """Backbone tokens ``(n, views, N, D)`` float16 of each image's views (:func:`_view`).

    With ``tail_stages`` > 0, the cached tensors are the trunk activations before the last
    ``tail_stages`` stages, ``(n, views, C, h, w)``; with ``embed``, the raw image embeddings
    ``(n, views, embed_dim)`` of a frozen image side. Written ``shard`` images at a time
    (:func:`_sharded_cache`): a killed run resumes at the first missing shard.
    """
    model.eval()

    @torch.no_grad()
    def rows(start: int, stop: int, bar: Any) -> torch.Tensor:
        out: list[torch.Tensor] = []
        for i in range(start, stop, batch):
            # images may differ in size (UCM has a few 256 x 253 ones): resize one by one
            imgs = torch.stack(
                [
                    model.preprocess_images(load_image(p)[None])[0]
                    for p in paths[i : min(stop, i + batch)]
                ]
            )
            per_view = [
                _frozen_part(model, _view(imgs, k), tail_stages, embed=embed) for k in range(views)
            ]
            out.append(torch.stack(per_view, dim=1))
            bar.update(len(imgs))
        return torch.cat(out)

    bar = (f"image tokens x{views}", "image") if progress else None
    return _sharded_cache(cache, "tokens", len(paths), shard, rows, bar)


def _frozen_part(
    model: ALACModel, images: torch.Tensor, tail_stages: int, *, embed: bool = False
) -> torch.Tensor:
    """What is cached of preprocessed images (float16).

    The backbone's tokens, or with ``tail_stages`` > 0 the trunk activations before its last
    ``tail_stages`` stages (:func:`_head_from_cache` runs the rest), or with ``embed`` the
    raw embeddings ``f_v`` of a frozen image side (``image_from``).
    """
    if embed:
        return model.forward_image(images).half()
    if tail_stages:
        return model.backbone.trunk(images, tail_stages).half()
    return model.image_tokens(images).half()


def _read_tokens(cache: Path) -> torch.Tensor | None:
    """A finished token cache (:func:`_sharded_cache`), or None when there is none yet."""
    from safetensors.torch import load_file

    return load_file(str(cache))["tokens"] if cache.exists() else None


def _mixed_tokens(
    model: ALACModel,
    paths: Sequence[str],
    labels: Sequence[str],
    mix: Any,
    seed: int,
    cache: Path,
    *,
    tail_stages: int,
    embed: bool = False,
    batch: int = 32,
    progress: bool = True,
    shard: int = 256,
) -> torch.Tensor:
    """Cached backbone tokens (or trunk activations) of ``mix.views`` mixed views per image.

    Every image is resized to 256 px once and kept in memory as the mosaics' material; the
    draws are seeded per image and view, so a cache is rebuilt identically, and a killed run
    resumes at the first missing shard of ``shard`` images (:func:`_sharded_cache`).
    """
    cached = _read_tokens(cache)
    if cached is not None:  # the mosaics' material is not needed
        return cached
    scenes = _scenes(paths, progress)
    model.eval()
    shares: list[float] = []

    @torch.no_grad()
    def rows(start: int, stop: int, bar: Any) -> torch.Tensor:
        out: list[torch.Tensor] = []
        for i in range(start, stop, batch):
            per_view = []
            for v in range(mix.views):
                views = []
                for c in range(i, min(i + batch, stop)):
                    view, share = _mixed_view(scenes, labels, c, mix, [seed, c, v])
                    shares.append(share)
                    views.append(model.preprocess_images(view[None])[0])
                per_view.append(_frozen_part(model, torch.stack(views), tail_stages, embed=embed))
            out.append(torch.stack(per_view, dim=1))
            bar.update(min(i + batch, stop) - i)
        return torch.cat(out)

    bar = ("mixed views", "image") if progress else None
    tokens = _sharded_cache(cache, "tokens", len(paths), shard, rows, bar)
    if shares:
        logger.info("mixed views: mean share of the dominant scene %.3f", float(np.mean(shares)))
    return tokens


def _scenes(paths: Sequence[str], progress: bool) -> list[torch.Tensor]:
    """Every image resized to 256 px, uint8 ``(3, 256, 256)``: the mosaics' material."""
    from tqdm.auto import tqdm

    return [
        (
            torch.nn.functional.interpolate(
                load_image(p)[None], size=(256, 256), mode="bilinear", antialias=True
            )[0]
            * 255
        ).to(torch.uint8)
        for p in tqdm(paths, desc="scenes", unit="image", disable=not progress)
    ]


def _mixed_view(
    scenes: list[torch.Tensor], labels: Sequence[str], centre: int, mix: Any, seed: list[int]
) -> tuple[torch.Tensor, float]:
    """One mixed view of scene ``centre`` (and its dominant share), drawn from ``seed``."""
    from rsia_geo.training.scenes import mixed_view, neighbours

    rng = np.random.default_rng(seed)
    around = neighbours(centre, labels, rng, mix.same_class)
    return mixed_view(
        scenes[centre].float() / 255, [scenes[j].float() / 255 for j in around], mix, rng
    )


class _Views(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Full fine-tuning's training views, drawn afresh every epoch.

    Holds every training image at 256 px (:func:`_scenes`). Item ``i`` is entry ``i`` of
    :attr:`plan`, ``(image, code)``: dihedral view ``code`` (:func:`_view`) when ``code <
    views``, else a mixed view (:func:`~rsia_geo.training.scenes.mixed_view`) seeded by the
    run's seed, :attr:`epoch`, the image and the code; resized to the model's input. A Dataset,
    so that ``workers`` processes can draw them.
    """

    def __init__(
        self,
        scenes: list[torch.Tensor],
        labels: list[str],
        views: int,
        mix: Any,
        size: int,
        seed: int,
    ) -> None:
        self.scenes, self.labels, self.views, self.mix = scenes, labels, views, mix
        self.size, self.seed = size, seed
        self.codes = views + (mix.views if mix is not None else 0)
        self.plan: list[tuple[int, int]] = []
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> torch.Tensor:
        img, code = self.plan[i]
        x = self.scenes[img].float() / 255
        if code < self.views:
            x = _view(x[None], code)[0]
        else:
            seed = [self.seed, self.epoch, img, code]
            x, _ = _mixed_view(self.scenes, self.labels, img, self.mix, seed)
        return resize_images(x[None], self.size)[0]


def _clip_wave(path: str, augment_seed: str | None) -> np.ndarray:
    """A clip as the model hears it: trimmed, optionally degraded, and trimmed again."""
    from rsia_geo.audio import SAMPLE_RATE, load_audio, trim_speech
    from rsia_geo.training.augment import random_condition

    wave = load_audio(path, trim=True).samples
    if augment_seed is None:
        return wave
    rng = np.random.default_rng(int(hashlib.sha1(augment_seed.encode()).hexdigest()[:15], 16))
    degraded, _ = random_condition(wave, rng)
    return trim_speech(degraded, SAMPLE_RATE)  # what serving does to a recording


@torch.no_grad()
def _audio_features(
    model: ALACModel,
    paths: Sequence[str],
    cache: Path,
    progress: bool = True,
    *,
    augment_seed: str | None = None,
    shard: int = 512,
    batch: int = 16,
) -> torch.Tensor:
    """Front-end features ``(n, frames, bins)`` float16 of each clip (trimmed).

    Written in shards of ``shard`` clips under ``cache`` (a folder), each atomically, so a
    killed run resumes at the first missing shard; the shards are joined when all exist.
    With ``augment_seed``, each clip is degraded by a random recording condition seeded by
    the seed and its path.
    """

    @torch.no_grad()
    def rows(start: int, stop: int, bar: Any) -> torch.Tensor:
        feats = []
        for i in range(start, stop, batch):
            waves = [
                _clip_wave(p, None if augment_seed is None else f"{augment_seed}/{p}")
                for p in paths[i : min(stop, i + batch)]
            ]
            lengths = torch.tensor([len(w) for w in waves])
            padded = torch.zeros(len(waves), int(lengths.max()))
            for j, w in enumerate(waves):
                padded[j, : len(w)] = torch.from_numpy(w)
            feats.append(model.frontend(padded, lengths)[:, 0].half())
            bar.update(len(waves))
        return torch.cat(feats)

    bar = ("audio features", "clip") if progress else None
    joined = cache.with_suffix(".safetensors")
    return _sharded_cache(joined, "features", len(paths), shard, rows, bar)


def _spec_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random time shift, two time masks and two frequency masks per clip, ``(B, 1, T, F)``."""
    b, _, t, f = x.shape
    out = x.clone()
    shifts = torch.randint(0, 20, (b,), generator=gen)
    for i in range(b):
        if shifts[i] > 0:
            out[i, 0] = torch.roll(out[i, 0], int(shifts[i]), dims=0)
            out[i, 0, : int(shifts[i])] = 0
        for _ in range(2):
            w = int(torch.randint(0, max(2, t // 10), (1,), generator=gen))
            s0 = int(torch.randint(0, max(1, t - w), (1,), generator=gen))
            out[i, 0, s0 : s0 + w] = 0
            w = int(torch.randint(0, max(2, f // 8), (1,), generator=gen))
            s0 = int(torch.randint(0, max(1, f - w), (1,), generator=gen))
            out[i, 0, :, s0 : s0 + w] = 0
    return out


_FULL = -1  # ``tail_stages`` of full fine-tuning: the "cache" holds preprocessed images


def _tail(cfg: TrainConfig) -> int:
    """The run's ``tail_stages``: fine-tuned stages on cached activations, or ``_FULL``."""
    return cfg.finetune_stages if cfg.freeze_backbone else _FULL


def _head_from_cache(model: ALACModel, cached: torch.Tensor, tail_stages: int) -> torch.Tensor:
    """``f_v`` from cached tokens, or from cached trunk activations when fine-tuning.

    A cache of embeddings (``(B, embed_dim)``, a frozen image side) is ``f_v`` already; with
    ``tail_stages == _FULL`` (full fine-tuning) ``cached`` holds preprocessed images.
    """
    if cached.dim() == 2:
        return cached
    if tail_stages == _FULL:
        return model.forward_image(cached)
    tokens = model.backbone.tail(cached, tail_stages) if tail_stages else cached
    return model.image_head(tokens)


@torch.no_grad()
def encode_split(
    model: ALACModel,
    image_tokens: torch.Tensor,
    features: torch.Tensor,
    tail_stages: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw embeddings of cached validation images (view 0) and clips, in eval mode.

    Args:
        model: The model.
        image_tokens: ``(n_img, views, N, D)`` cached tokens (or trunk activations).
        features: ``(n_clips, frames, bins)`` cached features.
        tail_stages: Backbone stages to run on cached trunk activations (0: tokens cached;
            -1: ``image_tokens`` holds preprocessed images, the whole image side runs).

    Returns:
        ``(v, a)`` raw embeddings.
    """
    model.eval()
    dev = next(model.parameters()).device
    v = torch.cat(
        [
            _head_from_cache(model, image_tokens[i : i + 128, 0].to(dev).float(), tail_stages)
            .float()
            .cpu()
            for i in range(0, len(image_tokens), 128)
        ]
    )
    a = torch.cat(
        [
            model.forward_audio_features(features[i : i + 128, None].to(dev).float()).float().cpu()
            for i in range(0, len(features), 128)
        ]
    )
    return v, a


def _validate(
    model: ALACModel, tokens: torch.Tensor, feats: torch.Tensor, per_image: int, tail: int = 0
) -> dict[str, float]:
    v, a = encode_split(model, tokens, feats, tail)
    out = {
        f"cos_{k}": x for k, x in retrieval_metrics(cosine_scores(v, a).numpy(), per_image).items()
    }
    out.update(
        {f"ia_{k}": x for k, x in retrieval_metrics(ia_scores(v, a).numpy(), per_image).items()}
    )
    return out


@dataclass
class _Data:
    """Everything an epoch reads: cached image views and audio features, and their pairing."""

    train_tokens: torch.Tensor  # (images, views, ...) plain views, then mixed views
    val_tokens: torch.Tensor
    train_feats: torch.Tensor  # (clips, frames, bins)
    val_feats: torch.Tensor
    clip_image: torch.Tensor  # image index of each training clip
    by_image: dict[int, list[int]]  # training clips of each image
    partners: list[list[int]]  # each training clip's caption said by other voices
    n_train: int  # training clips
    n_val: int  # validation clips
    views: _Views | None = None  # full fine-tuning: training views drawn on the fly
    captions: _Captions | None = None  # the caption term's captions and head
    said: _Said | None = None  # mask_same_caption: which captions each clip and image say


@dataclass
class _Said:
    """The words of each training clip and image, for ``mask_same_caption``."""

    ids: dict[str, int]  # normalised caption -> id
    clip: torch.Tensor  # (clips,) caption id of each training clip
    image: torch.Tensor  # (images, k) caption ids of each training image, -1 padded

    def id_of(self, caption: str) -> int:
        """The id of a caption (-1 for words no training image says)."""
        return self.ids.get(_caption_key(caption), -1)

    def exclude(self, images: torch.Tensor, said: torch.Tensor) -> torch.Tensor:
        """``(B, B)``: pair ``(i, j)`` when ``said[j]`` is one of image ``images[i]``'s captions."""
        own = self.image[images.cpu()]  # (B, k)
        ids = said.cpu()
        return ((own[:, :, None] == ids[None, None, :]) & (ids >= 0)[None, None, :]).any(1)


def _clip_caption(row: dict[str, Any], option: str, off: str) -> str:
    """A manifest row's caption, for an ``option`` that needs it (``off``: how to do without)."""
    caption = str(row.get("caption") or "").strip()
    if not caption:
        raise DataError(
            f"{option} needs each clip's caption, but the manifest row of clip "
            f"{row.get('clip')!r} has no 'caption' field; voice the captions with "
            f"`rsia-geo data voice`, or train with {off}"
        )
    return caption


def _said_material(rows: Sequence[dict[str, Any]], img_index: dict[str, int]) -> _Said:
    """Caption ids of the training clips and images (``mask_same_caption``)."""
    ids: dict[str, int] = {}
    clip = []
    per_image: list[set[int]] = [set() for _ in img_index]
    for r in rows:
        caption = _clip_caption(r, "mask_same_caption", "mask_same_caption=False")
        cid = ids.setdefault(_caption_key(caption), len(ids))
        clip.append(cid)
        per_image[img_index[r["image"]]].add(cid)
    k = max(len(x) for x in per_image)
    image = torch.full((len(per_image), k), -1, dtype=torch.long)
    for i, x in enumerate(per_image):
        image[i, : len(x)] = torch.tensor(sorted(x), dtype=torch.long)
    return _Said(ids=ids, clip=torch.tensor(clip, dtype=torch.long), image=image)


@dataclass
class _Captions:
    """The caption term's material: each training image's captions, and their head."""

    texts: list[list[str]]  # distinct captions of each training image
    embed: Any  # text_route._SentenceVectors: cached captions -> raw joint-space embeddings

    @property
    def head(self) -> Any:
        """The trained head (a PretrainedTextEncoder) the cached vectors go through."""
        return self.embed.encoder


@dataclass
class _Optim:
    """The optimisers of a run and the parameters they train."""

    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    akt_opt: torch.optim.Optimizer


def train(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run.

    The parts, in order: :func:`_start_run` (settings checked and recorded),
    :func:`_load_data` (caches built once), :func:`_optimisers`, :func:`_resume`, then per
    epoch :func:`_lr_at` (the schedule), :func:`_train_one_epoch`, validation with the best
    checkpoint kept, :func:`_log_epoch` and :func:`_save_state`.

    Args:
        cfg: Settings.
        progress: Show progress bars.

    Returns:
        Summary: best epoch and its validation metrics, paths.

    Raises:
        DataError: Manifest missing, clips missing, or no pairs.
        TrainingError: Inconsistent settings or a resumed run with other settings.
    """
    out = _start_run(cfg)
    device = _device(cfg.device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    mcfg = _config_for(cfg)
    image_sha = None
    if cfg.image_from is None:
        if cfg.freeze_backbone:  # a fully fine-tuned backbone learns, even from random
            _check_backbone_weights(mcfg, cfg)
        model = build_model(mcfg)
    else:
        model = build_model(mcfg, pretrained=False)
        image_sha = _take_image_side(model, cfg.image_from, audio=cfg.continue_audio)
    tail = _tail(cfg)
    if tail > 0:
        try:
            model.backbone.check_split(tail)
        except RsiaError as exc:
            raise TrainingError(str(exc)) from exc
    data = _load_data(cfg, model, mcfg, out, progress, image_sha)
    loss_fn = ALACLoss(
        akt_adaptive=cfg.akt_adaptive,
        w_triplet=cfg.loss_weights[0],
        w_nce=cfg.loss_weights[1],
        w_akt=cfg.loss_weights[2],
    )
    model.to(device)  # after the caches, which are built on the CPU
    if data.captions is not None:
        data.captions.head.to(device)
    loss_fn.to(device)
    optim = _optimisers(cfg, model, loss_fn, data.captions)
    gen = torch.Generator().manual_seed(cfg.seed)
    state_path = out / "last" / "state.pt"
    start_epoch, best = _resume(state_path, model, loss_fn, optim, gen, data.captions)
    for epoch in range(start_epoch, cfg.epochs):
        lr = _lr_at(cfg, epoch)
        for g in optim.opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        for g in optim.akt_opt.param_groups:
            g["lr"] = 10 * lr
        t0 = time.time()
        sums = _train_one_epoch(cfg, model, loss_fn, optim, data, gen, epoch, progress)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "seconds": round(time.time() - t0, 1),
            **{k: round(v, 5) for k, v in sums.items()},
            "akt_p1": float(loss_fn.p1.detach()),
            "akt_p2": float(loss_fn.p2.detach()),
        }
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
            metrics = _validate(model, data.val_tokens, data.val_feats, cfg.per_image, tail)
            row.update({k: round(v, 3) for k, v in metrics.items()})
            score = max(metrics["cos_mR"], metrics["ia_mR"])
            if score > best["mR"]:
                best = {"mR": score, "epoch": epoch + 1, **metrics}
                _save_best(
                    model, out / "best", cfg, mcfg, best, data.n_train, data.n_val, image_sha
                )
        _log_epoch(out, row, progress)
        _save_state(state_path, model, loss_fn, optim, gen, epoch, best, data.captions)
    return {"best": best, "out_dir": str(out), "best_checkpoint": str(out / "best")}


def _start_run(cfg: TrainConfig) -> Path:
    """Check the settings, refuse to resume a run made with others, and record them."""
    if not cfg.freeze_backbone and (cfg.finetune_stages or cfg.image_from is not None):
        raise TrainingError(
            "freeze_backbone=False fine-tunes every backbone stage; it cannot go with "
            f"finetune_stages={cfg.finetune_stages!r} (the cached partial fine-tuning) or "
            f"image_from={cfg.image_from!r} (a frozen image side): drop one of them"
        )
    if cfg.workers < 0:
        raise TrainingError(f"workers={cfg.workers!r}; use 0 (the training process) or more")
    if cfg.image_from is not None and cfg.finetune_stages:
        raise TrainingError(
            f"image_from={cfg.image_from!r} keeps the whole image side frozen, so "
            f"finetune_stages={cfg.finetune_stages!r} has nothing to train; use 0 "
            "(drop --finetune-stages)"
        )
    if cfg.continue_audio and cfg.image_from is None:
        raise TrainingError(
            "continue_audio=True fine-tunes the audio branch of image_from's checkpoint, but "
            "image_from is not set: pass --image-from CHECKPOINT, or drop --continue-audio"
        )
    if not cfg.voice_pairs >= 0:
        raise TrainingError(
            f"voice_pairs={cfg.voice_pairs!r} is a loss weight; use 0 (off) or more, e.g. 0.1"
        )
    if not cfg.caption_weight >= 0:
        raise TrainingError(
            f"caption_weight={cfg.caption_weight!r} is a loss weight; use 0 (off) or more, e.g. 50"
        )
    if cfg.caption_weight > 0 and cfg.image_from is not None:
        raise TrainingError(
            f"caption_weight={cfg.caption_weight!r} shapes the image side, but "
            f"image_from={cfg.image_from!r} keeps it frozen: drop --caption-weight (the text "
            "route is trained against a frozen image side by `rsia-geo train-text`)"
        )
    if not 1 <= cfg.views <= 8:
        raise TrainingError(
            f"views={cfg.views!r} must be 1..8 (4 rotations, then their mirror images)"
        )
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "train_config.json"
    if settings.exists():
        old = json.loads(settings.read_text())
        new = json.loads(json.dumps(cfg.to_dict()))
        free = ("epochs", "device", "workers", "threads")  # do not change what is learned
        changed = {k for k in new if k not in free and k in old and old[k] != new[k]}
        if changed:
            raise TrainingError(
                f"{str(out)!r} holds a run with other settings ({sorted(changed)}); use another "
                "out_dir or the same settings to resume"
            )
    settings.write_text(json.dumps(cfg.to_dict(), indent=2))
    return out


def _device(name: str) -> torch.device:
    """The torch device named by ``TrainConfig.device`` (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise TrainingError(
            f"device={name!r} is not a torch device; use 'cpu', 'cuda', 'cuda:N' or 'auto'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            f"device={name!r} but this torch sees no CUDA device; use device='cpu' "
            "(--device cpu) or 'auto', or install a CUDA build of torch"
        )
    return dev


def _mix_settings(cfg: TrainConfig) -> Any:
    """The run's :class:`~rsia_geo.training.scenes.MixSettings` (checked)."""
    from rsia_geo.training.scenes import MixSettings

    try:
        return MixSettings(
            views=cfg.mix_views,
            shift=cfg.mix_shift,
            scale=(float(cfg.mix_scale[0]), float(cfg.mix_scale[1])),
            rotate=cfg.mix_rotate,
            same_class=cfg.mix_same_class,
        )
    except RsiaError as exc:
        raise TrainingError(str(exc)) from exc


def _load_data(
    cfg: TrainConfig,
    model: ALACModel,
    mcfg: Any,
    out: Path,
    progress: bool,
    image_sha: str | None = None,
) -> _Data:
    """Pair clips with images and build (or reuse) the image and audio caches of a run.

    With ``image_sha`` (the identity of the ``image_from`` image side the model carries,
    :func:`~rsia_geo.models.checkpoint.image_side_sha256`), the image caches hold that side's
    embeddings, keyed by it.
    """
    train_rows = _rows(cfg, cfg.train_split, cfg.max_train_images)
    if cfg.fold is not None:
        train_rows, val_rows = _fold_split(train_rows, cfg)
    else:
        val_rows = _rows(cfg, cfg.val_split, cfg.max_val_images)
    train_images = list(dict.fromkeys(r["image"] for r in train_rows))
    val_images = list(dict.fromkeys(r["image"] for r in val_rows))
    img_index = {p: i for i, p in enumerate(train_images)}
    by_image: dict[int, list[int]] = {}
    for ci, r in enumerate(train_rows):
        by_image.setdefault(img_index[r["image"]], []).append(ci)
    partners = _voice_partners(train_rows)
    if cfg.voice_pairs > 0 and not any(partners):
        raise TrainingError(
            f"voice_pairs={cfg.voice_pairs!r} needs captions said by several voices, but "
            "the training voicing has one voice per caption; voice it with "
            "`rsia-geo data voice ... --voices-per-caption 3`, or use voice_pairs=0"
        )
    val_counts = [sum(1 for r in val_rows if r["image"] == p) for p in val_images]
    if set(val_counts) != {cfg.per_image}:
        raise DataError(
            f"validation needs {cfg.per_image} clips per image (one voice per caption); "
            f"found counts {sorted(set(val_counts))}"
        )
    fe = _digest(mcfg.frontend.to_dict())
    cache = out / "cache"
    labels = {r["image"]: str(r.get("label", "")) for r in train_rows}
    tr_tokens, va_tokens, views = _image_caches(
        cfg,
        model,
        mcfg,
        (train_images, [labels[p] for p in train_images], val_images),
        cache,
        progress,
        image_sha,
    )
    aug = f"{cfg.seed}" if cfg.audio_augment else None
    tr_feats = _audio_features(
        model,
        [r["clip_path"] for r in train_rows],
        cache / f"train_audio_{fe}_{_digest([r['clip'] for r in train_rows], aug)}",
        progress=progress,
        augment_seed=aug,
    )
    va_feats = _audio_features(
        model,
        [r["clip_path"] for r in val_rows],
        cache / f"val_audio_{fe}_{_digest([r['clip'] for r in val_rows])}",
        progress=progress,
    )
    captions = _caption_material(cfg, mcfg, train_rows, train_images, cache, progress)
    return _Data(
        train_tokens=tr_tokens,
        val_tokens=va_tokens,
        train_feats=tr_feats,
        val_feats=va_feats,
        clip_image=torch.tensor([img_index[r["image"]] for r in train_rows]),
        by_image=by_image,
        partners=partners,
        n_train=len(train_rows),
        n_val=len(val_rows),
        views=views,
        captions=captions,
        said=_said_material(train_rows, img_index) if cfg.mask_same_caption else None,
    )


def _caption_material(
    cfg: TrainConfig,
    mcfg: Any,
    rows: Sequence[dict[str, Any]],
    images: Sequence[str],
    cache: Path,
    progress: bool,
) -> _Captions | None:
    """The caption term's captions per image, their sentence vectors (cached) and a new head."""
    if cfg.caption_weight <= 0:
        return None
    from rsia_geo.models.text import PretrainedTextEncoder, TextConfig
    from rsia_geo.training.text_route import _SentenceVectors

    texts: dict[str, list[str]] = {p: [] for p in images}
    for r in rows:
        caption = _clip_caption(r, f"caption_weight={cfg.caption_weight!r}", "caption_weight=0")
        if caption not in texts[r["image"]]:
            texts[r["image"]].append(caption)
    head = PretrainedTextEncoder(TextConfig(kind="pretrained", embed_dim=mcfg.embed_dim))
    cached = _SentenceVectors(head, cache)
    cached.add([t for p in images for t in texts[p]], progress)
    return _Captions(texts=[texts[p] for p in images], embed=cached)


def _voice_partners(rows: Sequence[dict[str, Any]]) -> list[list[int]]:
    """For each clip, the other clips of its image and caption (other voices saying it)."""
    groups: dict[tuple[str, Any], list[int]] = {}
    for ci, r in enumerate(rows):
        groups.setdefault((r["image"], r.get("caption_index")), []).append(ci)
    return [
        [o for o in groups[(r["image"], r.get("caption_index"))] if o != ci]
        for ci, r in enumerate(rows)
    ]


def _image_caches(
    cfg: TrainConfig,
    model: ALACModel,
    mcfg: Any,
    images: tuple[list[str], list[str], list[str]],
    cache: Path,
    progress: bool,
    image_sha: str | None,
) -> tuple[torch.Tensor, torch.Tensor, _Views | None]:
    """A run's image side: ``(train views, val images, on-the-fly views)``.

    ``images`` is ``(training images, their labels, validation images)``. Cached tokens,
    trunk activations or embeddings per view (``(n, views + mix_views, ...)``) and the
    validation images' (``(n, 1, ...)``); with full fine-tuning nothing is cached: the
    validation images are kept preprocessed and a :class:`_Views` draws the training views.
    """
    train_images, labels, val_images = images
    mix = _mix_settings(cfg) if cfg.mix_views else None
    if not cfg.freeze_backbone:
        size = mcfg.backbone.input_size
        val = [resize_images(load_image(p)[None], size)[0] for p in val_images]
        views = _Views(_scenes(train_images, progress), labels, cfg.views, mix, size, cfg.seed)
        return torch.empty(0), torch.stack(val)[:, None].half(), views
    tail = cfg.finetune_stages
    embed = image_sha is not None  # a frozen image side: its embeddings are cached
    bb = _digest(mcfg.backbone.to_dict(), image_sha) if embed else _digest(mcfg.backbone.to_dict())
    trunk = "_embeddings" if embed else f"_trunk{tail}" if tail else ""
    kw: dict[str, Any] = {"progress": progress, "tail_stages": tail, "embed": embed}
    tr_tokens = _image_tokens(
        model,
        train_images,
        cfg.views,
        cache / f"train_tokens{trunk}_{bb}_{_digest(train_images, cfg.views)}.safetensors",
        **kw,
    )
    va_tokens = _image_tokens(
        model,
        val_images,
        1,
        cache / f"val_tokens{trunk}_{bb}_{_digest(val_images)}.safetensors",
        **kw,
    )
    if mix is not None:
        mixed = _mixed_tokens(
            model,
            train_images,
            labels,
            mix,
            cfg.seed,
            cache / f"train_mixed{trunk}_{bb}_{_digest(train_images, mix.to_dict(), cfg.seed)}"
            ".safetensors",
            **kw,
        )
        tr_tokens = torch.cat([tr_tokens, mixed], dim=1)  # drawn like any other view
        del mixed
    return tr_tokens, va_tokens, None


def _optimisers(
    cfg: TrainConfig, model: ALACModel, loss_fn: ALACLoss, captions: _Captions | None = None
) -> _Optim:
    """Adam over the heads and fine-tuned stages, and the AKT weights' own Adam.

    The caption term's head (``captions``) trains with the heads.

    The fine-tuned backbone stages (all of them with ``freeze_backbone=False``) train at
    ``backbone_lr`` times the rate; the rest of the backbone is frozen (with ``image_from``,
    the whole image side is).
    """
    tail = cfg.finetune_stages
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    tail_modules: list[torch.nn.Module]
    if not cfg.freeze_backbone:
        tail_modules = [model.backbone]
    else:
        tail_modules = model.backbone.tail_modules(tail) if tail else []
    if cfg.image_from is not None:
        for name, p in model.named_parameters():
            if name.startswith(_IMAGE_SIDE):
                p.requires_grad_(False)
    tail_params: list[torch.nn.Parameter] = []
    for m in tail_modules:
        for p in m.parameters():
            p.requires_grad_(True)
            tail_params.append(p)
    tail_ids = {id(p) for p in tail_params}
    params = [p for p in model.parameters() if p.requires_grad]
    if captions is not None:
        params += list(captions.head.parameters())
    head_params = [p for p in params if id(p) not in tail_ids]
    groups: list[dict[str, Any]] = [{"params": head_params, "lr_scale": 1.0}]
    if tail_params:
        groups.append({"params": tail_params, "lr_scale": cfg.backbone_lr})
    return _Optim(
        params=params,
        opt=torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay),
        akt_opt=torch.optim.Adam([loss_fn.p1, loss_fn.p2], lr=10 * cfg.lr),
    )


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    """ALAC's schedule: the learning rate decayed by ``lr_decay`` every ``lr_decay_every``."""
    return cfg.lr * cfg.lr_decay ** (epoch // cfg.lr_decay_every)


def _resume(
    state_path: Path,
    model: ALACModel,
    loss_fn: ALACLoss,
    optim: _Optim,
    gen: torch.Generator,
    captions: _Captions | None = None,
) -> tuple[int, dict[str, Any]]:
    """Restore a killed run's last state: ``(first epoch to run, best so far)``."""
    if not state_path.exists():
        return 0, {"mR": -1.0, "epoch": -1}
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    loss_fn.load_state_dict(state["loss"])
    optim.opt.load_state_dict(state["opt"])
    optim.akt_opt.load_state_dict(state["akt_opt"])
    gen.set_state(state["gen"])
    if captions is not None:
        captions.head.load_state_dict(state["captions"])
    logger.info("resuming %s at epoch %d", state_path.parent.parent, int(state["epoch"]) + 1)
    return int(state["epoch"]) + 1, dict(state["best"])


def _train_one_epoch(
    cfg: TrainConfig,
    model: ALACModel,
    loss_fn: ALACLoss,
    optim: _Optim,
    data: _Data,
    gen: torch.Generator,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """One pass over the training images (one clip and one view each): mean losses.

    Cached runs draw each step's clips and views as the step comes; full fine-tuning draws the
    whole epoch first, so that :func:`_view_batches` (and its workers) can build the views.
    """
    from tqdm.auto import tqdm

    tail = _tail(cfg)
    dev = next(model.parameters()).device
    model.train()
    model.backbone.eval()  # frozen BatchNorm statistics, also in fine-tuned stages
    n_img = len(data.by_image)
    steps = math.ceil(n_img / cfg.batch_size)
    perm = torch.randperm(n_img, generator=gen)
    batches = [perm[s * cfg.batch_size : (s + 1) * cfg.batch_size] for s in range(steps)]
    drawn: list[tuple[torch.Tensor, torch.Tensor]] = []
    loader = None
    if data.views is not None:
        drawn = [_draw(data, imgs, gen) for imgs in batches if len(imgs) >= 2]
        loader = _view_batches(data.views, batches, drawn, epoch, cfg.workers, dev)
    sums = {"loss": 0.0, "triplet": 0.0, "nce": 0.0, "akt": 0.0}
    if cfg.voice_pairs > 0:
        sums["voice"] = 0.0
    if data.captions is not None:
        sums["caption"] = 0.0
        data.captions.head.train()
    bar = tqdm(
        range(steps),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
        disable=not progress,
        leave=False,
    )
    for s in bar:
        imgs = batches[s]
        if len(imgs) < 2:
            continue
        if loader is None:
            clips, views = _draw(data, imgs, gen)
            tokens = data.train_tokens[imgs, views].to(dev).float()
        else:
            clips, _ = drawn.pop(0)
            tokens = next(loader).to(dev, non_blocking=True)
        n = len(clips)
        if cfg.voice_pairs > 0:  # the same captions in other voices, one forward pass
            clips = torch.cat([clips, _partners(data, clips, gen)])
        feats = data.train_feats[clips][:, None].float()
        if cfg.spec_augment:
            feats = _spec_augment(feats, gen)
        feats = feats.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp):
            v = _head_from_cache(model, tokens, tail)
            a = model.forward_audio_features(feats)
        v, a = v.float(), a.float()  # the loss in float32, also under bfloat16 autocast
        of_image = data.clip_image[clips[:n]]
        ids = of_image.to(dev)
        words: torch.Tensor | None = None  # mask_same_caption: what each clip says
        excl: torch.Tensor | None = None
        said = data.said
        if said is not None:
            words = said.clip[clips[:n]]
            excl = said.exclude(of_image, words)
        res = loss_fn(v, a[:n], ids, excl)
        if cfg.voice_pairs > 0:
            # two clips saying the same words are no negatives of each other
            same = words[:, None] == words[None, :] if words is not None else None
            res["voice"] = loss_fn.voice_pair_loss(a[:n], a[n:], ids, same)
            res["loss"] = res["loss"] + cfg.voice_pairs * res["voice"]
        if data.captions is not None:
            drawn_captions = _draw_captions(data.captions, imgs, cfg.seed, epoch, s)
            t = data.captions.embed(drawn_captions)
            excl_t = None
            if said is not None:
                drawn_ids = torch.tensor([said.id_of(c) for c in drawn_captions])
                excl_t = said.exclude(imgs, drawn_ids)
            res["caption"] = loss_fn.caption_loss(v, t, imgs.to(dev), excl_t)
            res["loss"] = res["loss"] + cfg.caption_weight * res["caption"]
        optim.opt.zero_grad()
        res["loss"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(optim.params, cfg.grad_clip)  # after backward
        optim.opt.step()
        if cfg.akt_adaptive:
            optim.akt_opt.zero_grad()
            loss_fn.akt_weight_loss(v.detach(), a[:n].detach()).backward()
            torch.nn.utils.clip_grad_norm_([loss_fn.p1, loss_fn.p2], 2.0)
            optim.akt_opt.step()
        for k in sums:
            sums[k] += float(res[k].detach())
        bar.set_postfix(loss=f"{float(res['loss'].detach()):.3f}")
    return {k: v / steps for k, v in sums.items()}


def _draw(
    data: _Data, imgs: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's clips (one of each image's) and view codes."""
    clips = torch.tensor(
        [
            data.by_image[int(i)][
                int(torch.randint(len(data.by_image[int(i)]), (1,), generator=gen))
            ]
            for i in imgs
        ]
    )
    codes = data.views.codes if data.views is not None else data.train_tokens.shape[1]
    return clips, torch.randint(0, codes, (len(imgs),), generator=gen)


def _draw_captions(
    captions: _Captions, imgs: torch.Tensor, seed: int, epoch: int, step: int
) -> list[str]:
    """One caption of each batch image, drawn from its own stream (``seed``, epoch, step).

    A stream apart from the run's generator leaves every other draw (clips, views, masks)
    as a run without the caption term makes them.
    """
    gen = torch.Generator().manual_seed(int(_digest("captions", seed, epoch, step)[:12], 16))
    out = []
    for i in imgs.tolist():
        texts = captions.texts[i]
        out.append(texts[int(torch.randint(len(texts), (1,), generator=gen))])
    return out


def _partners(data: _Data, clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each clip's caption in another voice (the clip itself when it has no other voice)."""
    out = []
    for c in clips.tolist():
        others = data.partners[c]
        out.append(others[int(torch.randint(len(others), (1,), generator=gen))] if others else c)
    return torch.tensor(out)


def _view_batches(
    views: _Views,
    batches: list[torch.Tensor],
    drawn: list[tuple[torch.Tensor, torch.Tensor]],
    epoch: int,
    workers: int,
    device: torch.device,
) -> Any:
    """An iterator over the epoch's batches of views (:class:`_Views`), in step order."""
    steps = [imgs for imgs in batches if len(imgs) >= 2]
    views.epoch = epoch
    views.plan = [
        (int(i), int(c))
        for imgs, (_, codes) in zip(steps, drawn, strict=True)
        for i, c in zip(imgs, codes, strict=True)
    ]
    sizes = [len(imgs) for imgs in steps]
    starts = np.cumsum([0, *sizes])
    sampler = [list(range(int(starts[k]), int(starts[k + 1]))) for k in range(len(sizes))]
    loader = torch.utils.data.DataLoader(
        views, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda"
    )
    return iter(loader)


def _log_epoch(out: Path, row: dict[str, Any], progress: bool) -> None:
    """Append an epoch's row to ``log.csv`` and ``log.jsonl`` (and print it)."""
    log_csv, log_jsonl = out / "log.csv", out / "log.jsonl"
    new_file = not log_csv.exists()
    with log_csv.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new_file:
            w.writeheader()
        w.writerow(row)
    with log_jsonl.open("a") as f:
        f.write(json.dumps(row) + "\n")
    logger.info("epoch %s", row)
    if progress:
        print(json.dumps(row), flush=True)


def _save_state(
    state_path: Path,
    model: ALACModel,
    loss_fn: ALACLoss,
    optim: _Optim,
    gen: torch.Generator,
    epoch: int,
    best: dict[str, Any],
    captions: _Captions | None = None,
) -> None:
    """Save everything a killed run needs to resume after ``epoch`` (atomically)."""
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "loss": loss_fn.state_dict(),
            "opt": optim.opt.state_dict(),
            "akt_opt": optim.akt_opt.state_dict(),
            "gen": gen.get_state(),
            "epoch": epoch,
            "best": best,
            **({"captions": captions.head.state_dict()} if captions is not None else {}),
        },
        tmp,
    )
    tmp.replace(state_path)


_IMAGE_SIDE = ("backbone.", "rela.", "norm.", "image_proj.")


def _take_image_side(model: ALACModel, folder: str, *, audio: bool = False) -> str:
    """Load a checkpoint's image side into ``model`` (frozen later); return its identity.

    The identity is :func:`~rsia_geo.models.checkpoint.image_side_sha256` of the checkpoint.
    With ``audio``, its audio branch is loaded too (the start of a fine-tuned voice side).

    Raises:
        TrainingError: The checkpoint is missing, its image side differs from the model's, or
            (with ``audio``) its audio branch does.
    """
    from rsia_geo.models.checkpoint import image_side_sha256, load_checkpoint

    try:
        source = load_checkpoint(folder)
    except RsiaError as exc:
        raise TrainingError(f"image_from={folder!r}: {exc}") from exc
    mine, theirs = model.config, source.config

    def side(c: Any) -> dict[str, Any]:
        bb = {k: v for k, v in c.backbone.to_dict().items() if k != "options"}
        return {"backbone": bb, "rela_branch_dim": c.rela_branch_dim, "embed_dim": c.embed_dim}

    if side(mine) != side(theirs):
        raise TrainingError(
            f"image_from={folder!r} has the image side {side(theirs)}, but model "
            f"{mine.model_id!r} has {side(mine)}; pass the checkpoint's configuration as "
            f"--model ({theirs.model_id!r} was trained from it, see its config.json)"
        )
    # with ``audio``, the rest of the checkpoint (its audio branch) is taken too
    state = {k: v for k, v in source.state_dict().items() if audio or k.startswith(_IMAGE_SIDE)}
    missing = [k for k in model.state_dict() if k.startswith(_IMAGE_SIDE) and k not in state]
    if missing:
        raise TrainingError(f"image_from={folder!r} lacks image weights, e.g. {missing[:3]}")
    if audio:
        _check_audio_branch(mine, theirs, folder)
    model.load_state_dict(state, strict=False)
    return str(image_side_sha256(source))  # its own, or the one it carries in turn


def _check_audio_branch(mine: Any, theirs: Any, folder: str) -> None:
    """Refuse ``continue_audio`` when the checkpoint's audio branch is not the model's.

    The Whisper window policy (``whisper_window``) may differ: it changes what the head reads,
    not its weights, so a head trained on fixed windows can be fine-tuned on fitted ones.
    """

    def branch(c: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        fe = {k: v for k, v in c.frontend.to_dict().items() if k != "whisper_window"}
        return fe, c.audio.to_dict()

    if branch(mine) != branch(theirs):
        raise TrainingError(
            f"continue_audio: image_from={folder!r} has the audio branch "
            f"{theirs.audio.to_dict()} (front end {theirs.frontend.kind!r}), but model "
            f"{mine.model_id!r} has {mine.audio.to_dict()} (front end {mine.frontend.kind!r}); "
            f"pass the checkpoint's configuration as --model ({theirs.model_id!r}), or drop "
            "--continue-audio to train a fresh audio branch"
        )


def _check_backbone_weights(mcfg: Any, cfg: TrainConfig) -> None:
    """Refuse to train heads on a frozen backbone that has no pretrained weights."""
    opts = mcfg.backbone.options
    name = mcfg.backbone.name
    pretrained = bool(opts.get("weights_path") or opts.get("weights")) or (
        name == "efficientnet_lite0" and opts.get("pretrained", True)
    )
    if not pretrained and not cfg.allow_random_backbone:
        raise TrainingError(
            f"the {name!r} backbone of {mcfg.model_id!r} has no pretrained weights and stays "
            "frozen, so its random features cannot learn; give weights (--model-overrides "
            '\'{"backbone": {"options": {"weights_path": "file.pth"}}}\'), use '
            "alac-efficientnet-lite0, or pass allow_random_backbone=True "
            "(--allow-random-backbone) for a smoke run"
        )


def _fold_split(
    rows: list[dict[str, Any]], cfg: TrainConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """ALAC's fold: reshuffle the training images, hold out 20 % for validation.

    Validation keeps the first voice of each caption (``per_image`` clips per image).
    """
    images = list(dict.fromkeys(r["image"] for r in rows))
    rng = random.Random(f"{cfg.seed}/fold{cfg.fold}")
    rng.shuffle(images)
    n_val = max(1, round(0.2 * len(images)))
    val_set = set(images[:n_val])
    train = [r for r in rows if r["image"] not in val_set]
    val = [r for r in rows if r["image"] in val_set and r.get("voice_index", 0) == 0]
    return train, val


def train_kfold(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run ALAC's k-fold protocol: one run per fold under ``out_dir/fold_<i>``.

    Each fold reshuffles the training pool into 80/20 train/validation and keeps its best
    checkpoint on that validation part; each fold's best model is then evaluated on the
    held-out split (``cfg.val_split``, ALAC's test split, which no fold trains or selects on)
    with the search pipeline's score, and the folds' test metrics are averaged, as ALAC
    reports them.

    Args:
        cfg: Settings with ``k_folds >= 2``.
        progress: Progress bars.

    Returns:
        Per-fold best validation metrics and their mean, and ``test``: per-fold metrics on the
        held-out split and their mean (absent when no manifest has that split); also written
        to ``kfold.json``.

    Raises:
        TrainingError: ``k_folds < 2``.
    """
    if cfg.k_folds < 2:
        raise TrainingError(f"k_folds={cfg.k_folds!r}; use 2 or more (ALAC uses 2)")
    from rsia_geo.training.evaluate import evaluate

    folds, tests = [], []
    held_out = _manifest_with_split(cfg.manifest, cfg.val_split)
    for i in range(cfg.k_folds):
        fcfg = dataclasses.replace(cfg, fold=i, out_dir=str(Path(cfg.out_dir) / f"fold_{i}"))
        result = train(fcfg, progress=progress)
        folds.append(result["best"])
        if held_out is not None:
            report = evaluate(
                result["best_checkpoint"], held_out, split=cfg.val_split, progress=progress
            )
            tests.append(report["metrics"]["cosine+ia@50"])
    keys = [k for k in folds[0] if k != "epoch"]
    mean = {k: float(np.mean([f[k] for f in folds])) for k in keys}
    summary: dict[str, Any] = {"folds": folds, "mean": mean, "k_folds": cfg.k_folds}
    if tests:
        summary["test"] = {
            "split": cfg.val_split,
            "score": "cosine+ia@50",
            "folds": tests,
            "mean": {k: float(np.mean([t[k] for t in tests])) for k in tests[0]},
        }
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / "kfold.json").write_text(json.dumps(summary, indent=2))
    return summary


def _manifest_with_split(manifest: Any, split: str) -> str | None:
    """The first of the run's manifests that has rows of ``split`` (None when none has)."""
    from rsia_geo.training.dataset import read_manifest

    for m in [manifest] if isinstance(manifest, (str, Path)) else list(manifest):
        if any(r.get("split") == split for r in read_manifest(m)):
            return str(m)
    return None


def _save_best(
    model: ALACModel,
    path: Path,
    cfg: TrainConfig,
    mcfg: Any,
    best: dict[str, Any],
    n_train: int,
    n_val: int,
    image_sha: str | None = None,
) -> None:
    """Save the best model as a plain checkpoint with its training summary."""
    training: dict[str, Any] = {
        "manifest": cfg.manifest,
        "train_split": cfg.train_split,
        "val_split": cfg.val_split,
        "train_clips": n_train,
        "val_clips": n_val,
        "epoch": best["epoch"],
        "settings": cfg.to_dict(),
    }
    if image_sha is not None:
        training["image_from"] = {"checkpoint": cfg.image_from, "weights_sha256": image_sha}
    model.config = dataclasses.replace(mcfg, training=training)
    save_checkpoint(model, path, extra={"val_metrics": best})
    if cfg.image_from is not None:  # the text route hears transcripts: it serves the new voice
        import shutil

        from rsia_geo.models.text import TEXT_CONFIG_NAME, TEXT_WEIGHTS_NAME

        for name in (TEXT_WEIGHTS_NAME, TEXT_CONFIG_NAME):
            if (Path(cfg.image_from) / name).exists():
                shutil.copyfile(Path(cfg.image_from) / name, path / name)
