"""ALAC models: image and speech encoders, IA scoring, losses, checkpoints (needs torch).

Install with ``pip install 'rsia_geo[model]'``.
"""

from __future__ import annotations

from rsia_geo.models.alac import ALACConfig, ALACModel, cosine_scores, ia_scores
from rsia_geo.models.audio_encoder import AudioEncoder, AudioEncoderConfig
from rsia_geo.models.backbones import BackboneConfig, TokenBackbone, build_backbone
from rsia_geo.models.checkpoint import (
    build_model,
    image_side_sha256,
    load_checkpoint,
    save_checkpoint,
)
from rsia_geo.models.frontend import AudioFrontend, AudioFrontendConfig
from rsia_geo.models.losses import ALACLoss
from rsia_geo.models.registry import get_config, list_configs

__all__ = [
    "ALACConfig",
    "ALACLoss",
    "ALACModel",
    "AudioEncoder",
    "AudioEncoderConfig",
    "AudioFrontend",
    "AudioFrontendConfig",
    "BackboneConfig",
    "TokenBackbone",
    "build_backbone",
    "build_model",
    "cosine_scores",
    "get_config",
    "ia_scores",
    "image_side_sha256",
    "list_configs",
    "load_checkpoint",
    "save_checkpoint",
]
