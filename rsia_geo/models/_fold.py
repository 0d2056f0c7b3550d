"""Batch normalisation folded into the convolution before it, for inference copies.

In eval mode a batch-norm layer is an affine map per channel with fixed statistics, so it can be
merged into the weights and bias of the convolution that feeds it: the network computes the
same function (up to float rounding) without a separate pass over every activation map. On the
starter's EfficientNet-Lite0 that pass is about a quarter of an image's encoding time on a CPU
(``docs/benchmarks.md``, "Batch norm folded at inference").

Only copies are folded: a folded network has no batch-norm statistics left to train or to save.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["fold_batchnorm"]

# (convolution, the batch norm right after it) by block class, as timm names them; a
# BatchNormAct2d also applies its activation, which stays in place of the norm.
_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    "EdgeResidual": (("conv_exp", "bn1"), ("conv_pwl", "bn2")),
    "ConvBnAct": (("conv", "bn1"),),
    "ResNet": (("conv1", "bn1"),),
    "BasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
    "Bottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def fold_batchnorm(net: nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution into it, in place.

    Pairs are found in timm's EfficientNet and ResNet blocks (by the attribute names of their
    ``forward``) and in ``nn.Sequential`` containers (a convolution, then a batch norm). Norms
    without running statistics, and convolutions of another kind, are left as they are.

    Args:
        net: The network, whose folded result must only be run in eval mode.

    Returns:
        How many batch norms were folded.
    """
    folded = 0
    for module in list(net.modules()):
        pairs = list(_PAIRS.get(type(module).__name__, ()))
        if isinstance(module, nn.Sequential):
            names = [name for name, _ in module.named_children()]
            pairs += list(itertools.pairwise(names))
        for conv_name, bn_name in pairs:
            conv = getattr(module, conv_name, None)
            bn = getattr(module, bn_name, None)
            if _foldable(conv, bn):
                setattr(module, bn_name, _fold_pair(conv, bn))  # type: ignore[arg-type]
                folded += 1
    return folded


def _foldable(conv: object, bn: object) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Module:
    """Merge ``bn`` into ``conv``; returns what replaces ``bn`` (its activation, if any)."""
    with torch.no_grad():
        assert bn.running_mean is not None and bn.running_var is not None  # _foldable
        scale = torch.rsqrt(bn.running_var.float() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.float()
        shift = -bn.running_mean.float() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.float()
        if conv.bias is not None:
            shift = shift + conv.bias.float() * scale
        dtype = conv.weight.dtype
        weight = conv.weight.float() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
        conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        conv.bias = nn.Parameter(shift.to(dtype), requires_grad=False)
    # timm's BatchNormAct2d normalises, then drops (identity in eval) and activates
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
    return nn.Sequential(*rest) if rest else nn.Identity()
