"""Audio encoders: features ``(B, 1, frames, bins)`` -> an embedding ``(B, dim)``.

``resnet18_l3`` is ALAC's: a ResNet-18 whose stem takes one channel with a 7x7 convolution of
stride 1 (then the usual 3x3/2 max-pool), stopping after ``layer3`` (256 channels), globally
average-pooled. With 300 x 64 inputs the map sizes are 150 x 32 -> 75 x 16 -> 38 x 8. Built on
torchvision's ResNet so the blocks are the standard ones. ``width`` scales every layer (0.5 gives
a 4x cheaper variant); a linear projection maps the pooled channels to ``embed_dim`` when they
differ.

``whisper_head`` reads the frames of a frozen pretrained speech encoder (the ``whisper`` front
end, ``(B, 1, T, 384)``, all-zero frames being padding): a linear map to ``d_model``, learned
positions, a small pre-norm transformer (``layers`` x ``heads``), attention pooling (a learned
query scores every valid frame) and a linear projection to ``embed_dim``. Its output is the
ALAC audio vector ``f_a``, so IA rescoring and the AKT loss work unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from rsia_geo.errors import ModelConfigError

__all__ = ["AudioEncoder", "AudioEncoderConfig", "ResNetAudioEncoder", "SpeechFrameHead"]


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Audio encoder settings.

    Attributes:
        name: ``"resnet18_l3"`` or ``"whisper_head"``.
        width: Channel multiplier (1.0 = ALAC's 64-128-256).
        stem_stride: Stride of the 7x7 stem convolution (ALAC: 1).
        embed_dim: Output size; a linear projection is added if the pooled width differs.
        in_dim: Frame width of the speech encoder (``whisper_head``).
        d_model: Transformer width (``whisper_head``).
        layers: Transformer layers (``whisper_head``).
        heads: Attention heads (``whisper_head``).
        max_tokens: Longest frame sequence (learned positions; ``whisper_head``).
        dropout: Dropout in the transformer (``whisper_head``).
    """

    name: str = "resnet18_l3"
    width: float = 1.0
    stem_stride: int = 1
    embed_dim: int = 256
    in_dim: int = 384
    d_model: int = 256
    layers: int = 2
    heads: int = 4
    max_tokens: int = 150
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form.

        Returns:
            The fields as a dict.
        """
        return asdict(self)


def AudioEncoder(config: AudioEncoderConfig | None = None) -> nn.Module:
    """Build the audio encoder a configuration names.

    Args:
        config: Encoder settings (default: ALAC's ResNet-18 to layer3).

    Returns:
        A module mapping features ``(B, 1, T, F)`` to ``(B, embed_dim)``.

    Raises:
        ModelConfigError: Unknown encoder name.
    """
    cfg = config or AudioEncoderConfig()
    if cfg.name == "resnet18_l3":
        return ResNetAudioEncoder(cfg)
    if cfg.name == "whisper_head":
        return SpeechFrameHead(cfg)
    raise ModelConfigError(f"unknown audio encoder {cfg.name!r}; known: resnet18_l3, whisper_head")


class SpeechFrameHead(nn.Module):
    """Trainable head over frozen speech-encoder frames ``(B, 1, T, in_dim)``.

    All-zero frames are padding: they are masked out of attention and pooling.

    Args:
        config: Encoder settings.
    """

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.norm_in = nn.LayerNorm(config.in_dim)
        self.inp = nn.Linear(config.in_dim, d)
        self.pos = nn.Parameter(torch.zeros(1, config.max_tokens, d))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d,
            config.heads,
            dim_feedforward=2 * d,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.score = nn.Linear(d, 1)
        self.proj = nn.Linear(d, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frames ``(B, 1, T, in_dim)`` -> embeddings ``(B, embed_dim)``."""
        x = x[:, 0]
        t = x.shape[1]
        if t > self.config.max_tokens:
            raise ModelConfigError(
                f"{t} speech frames exceed max_tokens={self.config.max_tokens}; use the "
                "front end the head was trained with"
            )
        pad = x.abs().amax(dim=-1) == 0  # (B, T)
        pad[:, 0] = False  # an all-silent clip still pools its first frame
        h = self.inp(self.norm_in(x)) + self.pos[:, :t]
        h = self.norm(self.blocks(h, src_key_padding_mask=pad))
        w = self.score(h).squeeze(-1).masked_fill(pad, float("-inf")).softmax(dim=-1)
        out: torch.Tensor = self.proj((w[..., None] * h).sum(dim=1))
        return out


class ResNetAudioEncoder(nn.Module):
    """ResNet-18 to layer3 over a one-channel spectrogram.

    Args:
        config: Encoder settings.
    """

    def __init__(self, config: AudioEncoderConfig | None = None) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        cfg = config or AudioEncoderConfig()
        self.config = cfg
        widths = [max(8, round(c * cfg.width)) for c in (64, 128, 256)]
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(1, widths[0], 7, stride=cfg.stem_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], 2, 1)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 2, 2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 2, 2)
        self.proj: nn.Module = (
            nn.Linear(widths[2], cfg.embed_dim) if widths[2] != cfg.embed_dim else nn.Identity()
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: Any, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [block(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``layer3`` output ``(B, C, frames/8, bins/8)`` (for token-level options)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: torch.Tensor = self.layer3(self.layer2(self.layer1(x)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, 1, frames, bins)`` -> embeddings ``(B, embed_dim)``."""
        pooled = self.feature_map(x).mean(dim=(2, 3))
        out: torch.Tensor = self.proj(pooled)
        return out
