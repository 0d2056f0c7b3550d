"""CrossFormer image encoder, as ALAC uses it (Wang et al., ICLR 2022).

CrossFormer embeds patches at several scales at once (cross-scale embedding: convolutions of
kernel 4, 8, 16 and 32 with stride 4, their outputs concatenated along channels), then runs
stages of blocks that alternate short-distance attention (SDA: attention inside G x G groups of
neighbouring tokens) and long-distance attention (LDA: groups of tokens sampled with a fixed
interval), with a dynamic position bias (an MLP over relative coordinates). Between stages,
cross-scale patch merging halves the resolution.

ALAC truncates CrossFormer-S to three stages of depth 2 (dims 96, 192, 384; heads 3, 6, 12;
group size 7; patch sizes 4/8/16/32; merge sizes 2/4), giving 14 x 14 = 196 tokens of 384
channels at 224 px input, and runs its third stage **without** the dynamic position bias. This
module reproduces that; parameter names follow the official implementation so its ImageNet
checkpoint (``crossformer-s.pth``) loads with :func:`load_crossformer_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rsia_geo.errors import ModelConfigError

__all__ = ["CrossFormer", "CrossFormerConfig", "load_crossformer_weights"]


@dataclass(frozen=True)
class CrossFormerConfig:
    """CrossFormer hyper-parameters (defaults: ALAC's truncated CrossFormer-S).

    Attributes:
        img_size: Input side in pixels.
        in_chans: Input channels.
        embed_dim: Channels after patch embedding.
        depths: Blocks per stage.
        num_heads: Attention heads per stage.
        group_size: Attention group side per stage.
        patch_sizes: Kernel sizes of the cross-scale patch embedding.
        merge_sizes: Kernel sizes of each cross-scale patch merging.
        mlp_ratio: MLP hidden width / dim.
        drop_path_rate: Stochastic depth at the last block.
        position_bias: Whether each stage uses the dynamic position bias.
    """

    img_size: int = 224
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12)
    group_size: tuple[int, ...] = (7, 7, 7)
    patch_sizes: tuple[int, ...] = (4, 8, 16, 32)
    merge_sizes: tuple[tuple[int, ...], ...] = ((2, 4), (2, 4))
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    position_bias: tuple[bool, ...] = field(default=(True, True, False))

    @property
    def out_dim(self) -> int:
        """Channels of the output tokens."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


def _split_dims(total: int, n: int) -> list[int]:
    """Channels per kernel size: halve for each but the last, which takes the rest's share."""
    return [total // 2 ** (i + 1) if i < n - 1 else total // 2**i for i in range(n)]


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample during training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply stochastic depth."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """Two-layer MLP with GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.fc2(self.act(self.fc1(x)))


class DynamicPosBias(nn.Module):
    """MLP from a relative (dy, dx) offset to one bias per head."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, self.pos_dim)

        def block(out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.LayerNorm(self.pos_dim), nn.ReLU(inplace=True), nn.Linear(self.pos_dim, out)
            )

        self.pos1 = block(self.pos_dim)
        self.pos2 = block(self.pos_dim)
        self.pos3 = block(num_heads)

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        """Biases ``(n_offsets, heads)`` for offsets ``(n_offsets, 2)``."""
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


class Attention(nn.Module):
    """Multi-head self-attention inside groups, with an optional dynamic position bias."""

    def __init__(self, dim: int, group: int, num_heads: int, position_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.group = group
        self.position_bias = position_bias
        if position_bias:
            self.pos = DynamicPosBias(dim // 4, num_heads)
            r = torch.arange(1 - group, group)
            offsets = torch.stack(torch.meshgrid(r, r, indexing="ij")).flatten(1).T.float()
            self.register_buffer("biases", offsets, persistent=False)
            c = torch.arange(group)
            coords = torch.stack(torch.meshgrid(c, c, indexing="ij")).flatten(1)  # 2, G*G
            rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (group - 1)
            index = rel[..., 0] * (2 * group - 1) + rel[..., 1]
            self.register_buffer("relative_position_index", index, persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend within each group of ``x`` (groups*batch, tokens, dim)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.position_bias:
            bias = self.pos(self.biases)[self.relative_position_index.reshape(-1)]
            attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1)[None]
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossFormerBlock(nn.Module):
    """Pre-norm block: SDA or LDA attention, then MLP, each with a residual."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        group: int,
        long_distance: bool,
        mlp_ratio: float,
        drop_path: float,
        position_bias: bool,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        if resolution <= group:  # one group covers everything: plain SDA
            group, long_distance = resolution, False
        self.group = group
        self.long_distance = long_distance
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, group, num_heads, position_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to tokens ``(batch, H*W, dim)``."""
        h = w = self.resolution
        b, _, c = x.shape
        g = self.group
        y = self.norm1(x).reshape(b, h, w, c)
        if self.long_distance:  # tokens i, i+I, i+2I... form a group (interval I = H/G)
            y = y.reshape(b, g, h // g, g, w // g, c).permute(0, 2, 4, 1, 3, 5)
        else:  # G x G neighbours form a group
            y = y.reshape(b, h // g, g, w // g, g, c).permute(0, 1, 3, 2, 4, 5)
        y = self.attn(y.reshape(-1, g * g, c)).reshape(b, h // g, w // g, g, g, c)
        if self.long_distance:
            y = y.permute(0, 3, 1, 4, 2, 5)
        else:
            y = y.permute(0, 1, 3, 2, 4, 5)
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Cross-scale embedding: several kernel sizes, stride = the smallest, outputs concatenated."""

    def __init__(self, patch_sizes: Sequence[int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        stride = patch_sizes[0]
        self.projs = nn.ModuleList(
            nn.Conv2d(in_chans, d, kernel_size=ps, stride=stride, padding=(ps - stride) // 2)
            for ps, d in zip(patch_sizes, _split_dims(embed_dim, len(patch_sizes)), strict=False)
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> tokens ``(B, H/4*W/4, embed_dim)``."""
        return self.norm(torch.cat([p(x).flatten(2).transpose(1, 2) for p in self.projs], dim=2))


class PatchMerging(nn.Module):
    """Cross-scale merging: halve the resolution, double the channels."""

    def __init__(self, dim: int, resolution: int, merge_sizes: Sequence[int]) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(dim)
        self.reductions = nn.ModuleList(
            nn.Conv2d(dim, d, kernel_size=ps, stride=2, padding=(ps - 2) // 2)
            for ps, d in zip(merge_sizes, _split_dims(2 * dim, len(merge_sizes)), strict=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, H*W, C)`` -> ``(B, H/2*W/2, 2C)``."""
        b, _, c = x.shape
        r = self.resolution
        y = self.norm(x).reshape(b, r, r, c).permute(0, 3, 1, 2)
        return torch.cat([m(y).flatten(2).transpose(1, 2) for m in self.reductions], dim=2)


class Stage(nn.Module):
    """Blocks of one stage (alternating SDA/LDA) and an optional merging at the end."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        depth: int,
        num_heads: int,
        group: int,
        mlp_ratio: float,
        drop_paths: Sequence[float],
        position_bias: bool,
        merge_sizes: Sequence[int] | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            CrossFormerBlock(
                dim,
                resolution,
                num_heads,
                group,
                long_distance=i % 2 == 1,
                mlp_ratio=mlp_ratio,
                drop_path=drop_paths[i],
                position_bias=position_bias,
            )
            for i in range(depth)
        )
        self.downsample = (
            PatchMerging(dim, resolution, merge_sizes) if merge_sizes is not None else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stage."""
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class CrossFormer(nn.Module):
    """CrossFormer trunk returning the last stage's tokens ``(B, N, out_dim)`` (no head).

    Args:
        config: Hyper-parameters; defaults to ALAC's truncated CrossFormer-S.
    """

    def __init__(self, config: CrossFormerConfig | None = None) -> None:
        super().__init__()
        cfg = config or CrossFormerConfig()
        self.config = cfg
        n = len(cfg.depths)
        if not (
            len(cfg.num_heads) == len(cfg.group_size) == len(cfg.position_bias) == n
            and len(cfg.merge_sizes) >= n - 1
        ):
            raise ModelConfigError(f"inconsistent CrossFormer config: {cfg}")
        self.patch_embed = PatchEmbed(cfg.patch_sizes, cfg.in_chans, cfg.embed_dim)
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        res = cfg.img_size // cfg.patch_sizes[0]
        self.layers = nn.ModuleList()
        for i in range(n):
            start = sum(cfg.depths[:i])
            self.layers.append(
                Stage(
                    dim=cfg.embed_dim * 2**i,
                    resolution=res // 2**i,
                    depth=cfg.depths[i],
                    num_heads=cfg.num_heads[i],
                    group=cfg.group_size[i],
                    mlp_ratio=cfg.mlp_ratio,
                    drop_paths=dpr[start : start + cfg.depths[i]],
                    position_bias=cfg.position_bias[i],
                    merge_sizes=cfg.merge_sizes[i] if i < n - 1 else None,
                )
            )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, img_size, img_size)`` -> tokens ``(B, N, out_dim)``."""
        if x.shape[-2:] != (self.config.img_size, self.config.img_size):
            raise ValueError(
                f"CrossFormer expects {self.config.img_size}x{self.config.img_size} inputs, "
                f"got {tuple(x.shape[-2:])}"
            )
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x


def load_crossformer_weights(model: CrossFormer, state: Mapping[str, Any]) -> dict[str, Any]:
    """Load an official CrossFormer checkpoint's matching tensors into ``model``.

    Tensors are matched by name and shape; the classification head, the final norm, the
    stages beyond the truncation, and stage-3 position-bias MLPs (unused by ALAC) are skipped.

    Args:
        model: The model to fill.
        state: The checkpoint's state dict (its ``"model"`` entry for official files).

    Returns:
        A report: ``loaded`` (names), ``skipped`` (names in the checkpoint not used, with the
        reason) and ``missing`` (model tensors the checkpoint did not provide).
    """
    own = model.state_dict()
    loaded, skipped = [], {}
    new_state = {}
    for name, tensor in state.items():
        if name not in own:
            skipped[name] = "not in model"
        elif tuple(own[name].shape) != tuple(tensor.shape):
            skipped[name] = f"shape {tuple(tensor.shape)} != {tuple(own[name].shape)}"
        else:
            new_state[name] = tensor
            loaded.append(name)
    model.load_state_dict(new_state, strict=False)
    missing = sorted(set(own) - set(loaded))
    return {"loaded": loaded, "skipped": skipped, "missing": missing}
