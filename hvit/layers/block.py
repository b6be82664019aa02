"""A pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

from __future__ import annotations

import torch
from torch import nn

from hvit.config import SRRatio
from hvit.layers.attention import MultiScaleAttention
from hvit.layers.drop_path import DropPath
from hvit.layers.mlp import Mlp


class Block(nn.Module):
    """One transformer block of a stage.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        sr_ratio: spatial-reduction ratio (or one per head group), see `MultiScaleAttention`.
        qkv_bias: bias in the query/key/value projection.
        linear_sra: PVT v2-li linear SRA (keys pooled to ``pool_size``).
        pool_size: key grid side for linear SRA.
        mlp_dwconv: PVT v2 depth-wise conv inside the MLP.
        drop: dropout after projections.
        attn_drop: dropout on attention probabilities.
        drop_path: stochastic-depth probability of this block.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr_ratio: SRRatio = 1,
        qkv_bias: bool = True,
        linear_sra: bool = False,
        pool_size: int = 7,
        mlp_dwconv: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiScaleAttention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            sr_ratio=sr_ratio,
            linear=linear_sra,
            pool_size=pool_size,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        # Row-wise stochastic depth drops the whole residual branch for some samples of a batch.
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dwconv=mlp_dwconv, extra_relu=linear_sra, drop=drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
        """Args: x: (B, P + H*W, C) on ``grid`` = (H, W). Returns: (B, P + H*W, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x), grid, num_prefix_tokens))
        return x + self.drop_path(self.mlp(self.norm2(x), grid, num_prefix_tokens))
