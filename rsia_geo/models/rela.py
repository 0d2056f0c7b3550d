"""RELA: region-enhanced learning attention (ALAC's image-token refinement).

Three 1x1-conv branches ``f_k = Conv1d(D -> D/3, no bias) + BatchNorm1d + ReLU`` see the tokens
with progressively suppressed salient regions:

    F1 = f1(X1)
    X2 = X1 * (2 - m(F1)),  F2 = f2(X2)
    X3 = X2 * (2 - m(F2)),  F3 = f3(X3)
    out = concat(F1, F2, F3)                      (B, N, 3 * D/3)

with the mask, computed without gradient,

    a = softmax over tokens of the channel mean of F
    m = clamp((a - mean(a)) / std(a) ** 0.3 + 1, 0, 2)

so tokens that one level found salient (above-average ``a``) are damped for the next level and
the others boosted. Deviation from the reference code, on purpose: ``mean`` and ``std`` are taken
**per sample** over its tokens, not over the whole batch tensor, so an image's embedding does not
depend on which other images share its batch (in eval mode the output is batch-independent).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RELA", "rela_mask"]


def rela_mask(features: torch.Tensor) -> torch.Tensor:
    """Suppression multiplier ``m`` in [0, 2] per token.

    Args:
        features: ``(B, C, N)`` branch output.

    Returns:
        ``(B, 1, N)`` mask (no gradient).
    """
    with torch.no_grad():
        a = features.mean(dim=1).softmax(dim=-1)  # (B, N)
        mu = a.mean(dim=-1, keepdim=True)
        sigma = a.std(dim=-1, keepdim=True, unbiased=True).clamp(min=1e-12)
        m = ((a - mu) / sigma**0.3 + 1.0).clamp(0.0, 2.0)
    return m[:, None, :]


class RELA(nn.Module):
    """Region-enhanced learning attention.

    Args:
        in_dim: Token channels ``D``.
        branch_dim: Channels per branch (ALAC: 128 for D = 384).
    """

    def __init__(self, in_dim: int, branch_dim: int = 128) -> None:
        super().__init__()

        def branch() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(in_dim, branch_dim, 1, bias=False),
                nn.BatchNorm1d(branch_dim),
                nn.ReLU(inplace=True),
            )

        self.f1, self.f2, self.f3 = branch(), branch(), branch()
        self.out_dim = 3 * branch_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Refine tokens ``(B, N, D)`` -> ``(B, N, 3 * branch_dim)``."""
        x1 = tokens.transpose(1, 2)  # (B, D, N)
        f1 = self.f1(x1)
        x2 = x1 * (2.0 - rela_mask(f1))
        f2 = self.f2(x2)
        x3 = x2 * (2.0 - rela_mask(f2))
        f3 = self.f3(x3)
        return torch.cat([f1, f2, f3], dim=1).transpose(1, 2)
