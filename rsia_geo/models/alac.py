"""The ALAC model: image and speech encoders, and their pairwise interactive-alignment score.

Image branch: backbone tokens -> RELA -> LayerNorm -> mean over tokens -> Linear -> ``f_v``.
Audio branch: waveform -> front end -> ResNet-18 (to layer3) -> pooled -> ``f_a``.

Two scores compare an image and a clip:

* the **dual-encoder cosine** ``cos(f_v, f_a)``: one vector per side, so it can be served by a
  vector database (this is what goes into Qdrant, L2-normalised);
* the **interactive alignment (IA)** score, ALAC's test-time score: for a pair (v, a),
  ``a' = sigmoid(v * a) * a``, ``v' = sigmoid(v * a') * v`` (the second gate uses the already
  gated ``a'``), ``S = cos(v', a')``. It has no parameters but needs both raw vectors, so it is
  used to rescore the top candidates. Adaptive knowledge transfer trains the cosine to agree with
  it.

In eval mode both encoders are independent of the batch their inputs come in (BatchNorm uses
running statistics, and RELA normalises per sample).

Image views: :meth:`ALACModel.encode_images` can embed a tile as the mean of its raw
embeddings over the 8 rotations and reflections of the square (``views="d8"``, the dihedral
group). Aerial imagery has no canonical orientation; the mean is exactly invariant to it, and
it averages out the noise of any one view (measured in ``docs/benchmarks.md``, "Image views").
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from rsia_geo.errors import InvalidArgumentError, ModelConfigError
from rsia_geo.models._modes import eval_mode
from rsia_geo.models.audio_encoder import AudioEncoder, AudioEncoderConfig
from rsia_geo.models.backbones import BackboneConfig, build_backbone
from rsia_geo.models.frontend import AudioFrontend, AudioFrontendConfig
from rsia_geo.models.rela import RELA
from rsia_geo.tiles import check_views

__all__ = [
    "ALACConfig",
    "ALACModel",
    "cosine_scores",
    "dihedral_view",
    "dihedral_views",
    "ia_scores",
    "resize_images",
]


@dataclass(frozen=True)
class ALACConfig:
    """Everything needed to rebuild a model (stored as JSON beside the weights).

    Attributes:
        model_id: Identifier of the configuration / trained model.
        version: Version of the trained weights.
        embed_dim: Size of ``f_v`` and ``f_a``.
        backbone: Image backbone and preprocessing.
        rela_branch_dim: Channels per RELA branch (0 disables RELA: LayerNorm on raw tokens).
        frontend: Audio front end.
        audio: Audio encoder.
        training: Free-form summary of the training data and run.
    """

    model_id: str = "alac-efficientnet-lite0"
    version: str = "0"
    embed_dim: int = 256
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rela_branch_dim: int = 128
    frontend: AudioFrontendConfig = field(default_factory=AudioFrontendConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form.

        Returns:
            Nested dicts of the fields.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ALACConfig:
        """Rebuild from :meth:`to_dict` output.

        Args:
            d: The dict.

        Returns:
            The configuration.
        """
        bb = dict(d.get("backbone", {}))
        for key in ("mean", "std"):
            if key in bb:
                bb[key] = tuple(bb[key])
        return cls(
            model_id=d.get("model_id", "unknown"),
            version=str(d.get("version", "0")),
            embed_dim=int(d.get("embed_dim", 256)),
            backbone=BackboneConfig(**bb),
            rela_branch_dim=int(d.get("rela_branch_dim", 128)),
            frontend=AudioFrontendConfig(**d.get("frontend", {})),
            audio=AudioEncoderConfig(**d.get("audio", {})),
            training=dict(d.get("training", {})),
        )


def ia_gate(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interactive-alignment gating of broadcastable ``v`` and ``a``.

    Args:
        v: Image vectors ``(..., D)``.
        a: Audio vectors ``(..., D)``.

    Returns:
        ``(v', a')`` with ``a' = sigmoid(v*a)*a`` and ``v' = sigmoid(v*a')*v``.
    """
    a_g = torch.sigmoid(v * a) * a
    v_g = torch.sigmoid(v * a_g) * v
    return v_g, a_g


def ia_scores(v: torch.Tensor, a: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    """IA score matrix ``S[i, j] = cos(v'_ij, a'_ij)`` for all image/audio pairs.

    Computed in blocks of ``chunk`` x ``chunk`` pairs so that N x M matrices of any size fit
    in memory.

    Args:
        v: Raw image embeddings ``(N, D)``.
        a: Raw audio embeddings ``(M, D)``.
        chunk: Block side.

    Returns:
        ``(N, M)`` scores in [-1, 1].
    """
    out = v.new_empty((v.shape[0], a.shape[0]))
    for i in range(0, v.shape[0], chunk):
        vi = v[i : i + chunk, None, :]
        for j in range(0, a.shape[0], chunk):
            aj = a[None, j : j + chunk, :]
            vg, ag = ia_gate(vi, aj)
            out[i : i + chunk, j : j + chunk] = nn.functional.cosine_similarity(vg, ag, dim=-1)
    return out


def cosine_scores(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Dual-encoder cosine matrix ``(N, M)``.

    Args:
        v: Image embeddings ``(N, D)``.
        a: Audio embeddings ``(M, D)``.

    Returns:
        ``(N, M)`` cosines.
    """
    return nn.functional.normalize(v, dim=-1) @ nn.functional.normalize(a, dim=-1).T


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` images to ``size`` x ``size`` (bilinear, antialiased).

    The one resampling of training views and served tiles (:meth:`ALACModel.preprocess_images`).

    Args:
        images: The images.
        size: Output side in pixels.

    Returns:
        ``(B, C, size, size)`` (the input itself when it has that size already).
    """
    if images.shape[-2:] == (size, size):
        return images
    return nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def dihedral_view(images: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` (0-7) of square images: ``k % 4`` quarter turns, then mirrored if ``k >= 4``.

    Args:
        images: ``(B, C, S, S)``.
        k: The view.

    Returns:
        ``(B, C, S, S)``.

    Raises:
        InvalidArgumentError: The images are not square.
    """
    if images.shape[-1] != images.shape[-2]:
        raise InvalidArgumentError(
            f"dihedral views need square images, got {tuple(images.shape[-2:])}; resize them "
            "first (ALACModel.preprocess_images)"
        )
    turned = torch.rot90(images, k % 4, dims=(-2, -1))
    return turned.flip(-1) if k >= 4 else turned


def dihedral_views(images: torch.Tensor) -> torch.Tensor:
    """The 8 rotations and reflections of square images, view-major: ``(8 * B, C, S, S)``.

    Args:
        images: ``(B, C, S, S)``.

    Returns:
        Rows ``k * B + i`` hold :func:`dihedral_view` ``k`` of image ``i``.

    Raises:
        InvalidArgumentError: The images are not square.
    """
    return torch.cat([dihedral_view(images, k) for k in range(8)])


class ALACModel(nn.Module):
    """ALAC image and audio encoders.

    Args:
        config: Model configuration.
    """

    def __init__(self, config: ALACConfig | None = None) -> None:
        super().__init__()
        cfg = config or ALACConfig()
        self.config = cfg
        self.backbone = build_backbone(cfg.backbone)
        d = self.backbone.out_dim
        if cfg.rela_branch_dim > 0:
            self.rela: nn.Module = RELA(d, cfg.rela_branch_dim)
            d = 3 * cfg.rela_branch_dim
        else:
            self.rela = nn.Identity()
        self.norm = nn.LayerNorm(d)
        self.image_proj = nn.Linear(d, cfg.embed_dim)
        self.frontend = AudioFrontend(cfg.frontend)
        audio_cfg = cfg.audio
        if audio_cfg.embed_dim != cfg.embed_dim:
            raise ModelConfigError(
                f"audio.embed_dim={audio_cfg.embed_dim} must equal embed_dim={cfg.embed_dim}"
            )
        self.audio_encoder = AudioEncoder(audio_cfg)

    # ---------------------------------------------------------------- image branch

    def preprocess_images(self, images: torch.Tensor) -> torch.Tensor:
        """Resize [0, 1] images to the backbone's input size (bilinear, antialiased).

        Training and serving both go through this, so tiles are resampled exactly as the
        training images were.

        Args:
            images: ``(B, C, H, W)`` in [0, 1].

        Returns:
            ``(B, C, S, S)`` with ``S = config.backbone.input_size``.
        """
        return resize_images(images, self.config.backbone.input_size)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone token map of [0, 1] images (cacheable when the backbone is frozen)."""
        out: torch.Tensor = self.backbone(images)
        return out

    def image_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """RELA -> LayerNorm -> mean-pool -> Linear: tokens ``(B, N, D)`` -> ``f_v``."""
        out: torch.Tensor = self.image_proj(self.norm(self.rela(tokens)).mean(dim=1))
        return out

    def forward_image(self, images: torch.Tensor) -> torch.Tensor:
        """Raw image embeddings ``f_v`` ``(B, embed_dim)`` of [0, 1] images (any size)."""
        return self.image_head(self.image_tokens(self.preprocess_images(images)))

    # ---------------------------------------------------------------- audio branch

    def audio_features(
        self, waves: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Front-end features ``(B, 1, frames, bins)`` of waveforms ``(B, samples)``."""
        out: torch.Tensor = self.frontend(waves, lengths)
        return out

    def forward_audio_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Raw audio embeddings ``f_a`` from front-end features."""
        out: torch.Tensor = self.audio_encoder(feats)
        return out

    def forward_audio(
        self, waves: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw audio embeddings ``f_a`` ``(B, embed_dim)`` of 16 kHz waveforms."""
        return self.forward_audio_features(self.audio_features(waves, lengths))

    # ---------------------------------------------------------------- serving API

    @torch.no_grad()
    def encode_images(
        self, images: torch.Tensor, *, normalize: bool = True, views: str = "single"
    ) -> torch.Tensor:
        """Embed [0, 1] images in eval mode.

        Args:
            images: ``(B, C, H, W)`` in [0, 1]; resized to the backbone's input size.
            normalize: L2-normalise (for cosine search); False gives raw ``f_v`` for IA.
            views: ``"single"``: the images as they are; ``"d8"``: the mean of the raw
                embeddings of their 8 rotations and reflections (8 passes, one view each).

        Returns:
            float32 ``(B, embed_dim)``.

        Raises:
            InvalidArgumentError: Unknown ``views``.
        """
        check_views(views)
        with eval_mode(self):
            x = self.preprocess_images(images)
            n = 8 if views == "d8" else 1
            v = self._embed_view(x)
            for k in range(1, n):  # one view at a time: the memory of a single-view batch
                v = v + self._embed_view(dihedral_view(x, k))
            v = v / n
        return nn.functional.normalize(v, dim=-1) if normalize else v

    def _embed_view(self, x: torch.Tensor) -> torch.Tensor:
        """``f_v`` (float32) of preprocessed images, laid out channels-last for the backbone.

        Channels-last input runs the convolutions about twice as fast on CPU (docs/benchmarks.md,
        "Image views"), and the backbone runs as its batch-norm-folded copy
        (:meth:`_inference_backbone`); the result equals the plain forward's up to float rounding.
        """
        x = x.contiguous(memory_format=torch.channels_last)
        tokens: torch.Tensor = self._inference_backbone()(x)
        return self.image_head(tokens).float()

    def _inference_backbone(self) -> nn.Module:
        """The backbone with its batch norms folded into its convolutions (eval mode only).

        A copy, kept outside the module tree (not in ``state_dict``, not trained), rebuilt
        whenever a backbone tensor has changed since: another tensor (a load, a move, a copy of
        the model) or the same one written in place (an optimiser step bumps its version). A
        model built under ``torch.inference_mode`` has tensors without versions, whose in-place
        changes nothing could see: its own backbone runs, unfolded.
        """
        from rsia_geo.models._fold import fold_batchnorm

        tensors = [*self.backbone.parameters(), *self.backbone.buffers()]
        if any(t.is_inference() for t in tensors):
            return self.backbone
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        cached = self.__dict__.get("_folded_backbone")
        if cached is not None and cached[0] == key:
            folded: nn.Module = cached[1]
            return folded
        with torch.inference_mode(False), torch.no_grad():
            copy = deepcopy(self.backbone).eval()
            if not fold_batchnorm(copy):
                copy = self.backbone  # nothing to fold (CrossFormer): no second copy
        # a plain attribute, not a submodule: outside parameters(), state_dict() and train()
        self.__dict__["_folded_backbone"] = (key, copy)
        return copy

    @torch.no_grad()
    def encode_audio(
        self, waves: torch.Tensor, lengths: torch.Tensor | None = None, *, normalize: bool = True
    ) -> torch.Tensor:
        """Embed 16 kHz waveforms in eval mode.

        Args:
            waves: ``(B, samples)``, clips zero-padded at the end.
            lengths: Valid samples per clip (so padding does not change a clip's embedding).
            normalize: L2-normalise; False gives raw ``f_a`` for IA.

        Returns:
            float32 ``(B, embed_dim)``.
        """
        with eval_mode(self):
            a = self.forward_audio(waves, lengths).float()
        return nn.functional.normalize(a, dim=-1) if normalize else a
