"""Spatial-reduction attention (SRA), the idea that makes a pyramid transformer affordable.

Global self-attention over N tokens costs N x N. PVT keeps every query at full resolution but builds
keys and values from a grid ``sr_ratio`` times coarser, so the attention matrix is N x N / R^2: a
*rectangular* matrix whose columns are reduced key tokens, each summarising an R x R patch of tokens.

Three flavours live here:
- ``sr_ratio=R`` (int): PVT v1/v2. A strided R x R convolution + LayerNorm reduces the grid.
- ``linear=True``: PVT v2-li. Keys come from an adaptive average pool to a fixed ``pool_size`` grid,
  so the cost is linear in N.
- ``sr_ratio=(R1, R2, ...)``: the heads are split into equal groups and group g attends over a grid
  reduced by R_g. One layer then looks at several scales at once (the Shunted Transformer idea),
  which is what the seed's name "MultiScaleAttention" promises. The int form is exactly PVT.

There are two mathematically identical paths. The fused path calls
``F.scaled_dot_product_attention`` (fast, never materialises probabilities). The explicit path computes
``softmax(q k^T / sqrt(d))`` so the probabilities can be looked at; `hvit.extract_attention` switches
to it only for the duration of one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hvit.config import SRRatio


@dataclass
class AttentionRecord:
    """The attention probabilities of one head group of one layer, for one forward pass.

    Attributes:
        probs: (B, heads_in_group, P + H*W, P + h*w) softmax probabilities; rows sum to 1.
        query_grid: (H, W) grid of the query tokens.
        key_grid: (h, w) grid of the reduced key tokens.
        num_prefix_tokens: P, class tokens placed before the grid tokens on both axes.
        heads: indices of this group's heads within the layer.
        sr_ratio: the reduction ratio of this group (``None`` for linear SRA's fixed pool).
    """

    probs: torch.Tensor
    query_grid: tuple[int, int]
    key_grid: tuple[int, int]
    num_prefix_tokens: int
    heads: tuple[int, ...]
    sr_ratio: int | None


class KeyReduction(nn.Module):
    """Turns the (B, H*W, C) token grid into the (B, h*w, C) reduced grid keys and values come from.

    Args:
        dim: token width.
        sr_ratio: reduction factor R (R=1: no reduction).
        linear: PVT v2-li: adaptive-average-pool to ``pool_size`` x ``pool_size``, 1x1 conv, LN, GELU.
        pool_size: key grid side for ``linear``.
    """

    def __init__(self, dim: int, sr_ratio: int = 1, linear: bool = False, pool_size: int = 7) -> None:
        super().__init__()
        self.sr_ratio, self.linear = sr_ratio, linear
        if linear:
            self.pool = nn.AdaptiveAvgPool2d(pool_size)
            self.sr = nn.Conv2d(dim, dim, kernel_size=1)
            self.norm = nn.LayerNorm(dim)  # eps 1e-5, as in PVT and timm
            self.act = nn.GELU()
        elif sr_ratio > 1:
            self.pool, self.act = None, None
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:
            self.pool = self.sr = self.norm = self.act = None

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Args: x: (B, H*W, C) grid tokens. Returns: (B, h*w, C) reduced tokens and (h, w)."""
        if self.sr is None:
            return x, grid
        b, n, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, grid[0], grid[1])  # (B, C, H, W)
        if self.pool is not None:
            x = self.pool(x)  # (B, C, pool, pool) whatever H and W are
        else:
            # A grid smaller than R would give zero keys; pad it so at least one key survives.
            # (At the paper's sizes this never triggers. The model's summary reports when it does.)
            r = self.sr_ratio
            pad_h, pad_w = max(0, r - grid[0]), max(0, r - grid[1])
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.sr(x)  # (B, C, h, w); h = max(1, H // R), or pool_size for linear SRA
        key_grid = (x.shape[-2], x.shape[-1])
        x = self.norm(x.flatten(2).transpose(1, 2))  # (B, h*w, C)
        if self.act is not None:
            x = self.act(x)
        return x, key_grid


class MultiScaleAttention(nn.Module):
    """Multi-head spatial-reduction attention, optionally with a different reduction per head group.

    Args:
        dim: token width C.
        num_heads: attention heads; C must be divisible by it.
        qkv_bias: learn a bias in the ``qkv`` projection.
        sr_ratio: an int R (PVT SRA) or a sequence (R1, R2, ...) splitting the heads into that many
            equal groups, group g attending over keys reduced by R_g.
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout after the output projection.
        linear: PVT v2-li linear SRA (keys pooled to ``pool_size`` x ``pool_size``).
        pool_size: key grid side for linear SRA.

    Attributes:
        scale: 1 / sqrt(head_dim), the softmax temperature.
        qkv: one (C -> 3C) projection. Queries use its first C rows on the full grid; keys and values
            use the other 2C rows on the reduced grid(s). Splitting one weight instead of owning
            separate ``q`` and ``kv`` layers gives identical parameters and maths.
        proj: output projection (C -> C).
        reductions: one `KeyReduction` per head group.
        fused_attn: use ``F.scaled_dot_product_attention`` when nobody is recording.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        sr_ratio: SRRatio = 1,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        linear: bool = False,
        pool_size: int = 7,
    ) -> None:
        super().__init__()
        groups = (sr_ratio,) if isinstance(sr_ratio, int) else tuple(sr_ratio)
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if not groups or num_heads % len(groups):
            raise ValueError(f"sr_ratio={sr_ratio!r} needs a number of groups dividing num_heads={num_heads}")
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.sr_ratio = sr_ratio
        self.sr_groups = groups
        self.heads_per_group = num_heads // len(groups)
        self.linear = linear

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.reductions = nn.ModuleList(KeyReduction(dim, r, linear, pool_size) for r in groups)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        # Multi-scale only: which rows of qkv make group g's keys and values (its heads' slice of K and
        # of V). Buffers, so they follow the module across devices; not saved in checkpoints.
        gw = self.heads_per_group * self.head_dim
        for g in range(len(groups) if len(groups) > 1 else 0):
            k_rows = torch.arange(dim + g * gw, dim + (g + 1) * gw)
            self.register_buffer(f"kv_rows_{g}", torch.cat([k_rows, k_rows + dim]), persistent=False)

        self.fused_attn = True
        # Set only inside `hvit.extract_attention` (and reset in its `finally`): a list that each
        # forward appends its `AttentionRecord`s to. None means "nobody is looking".
        self.recorder: list[list[AttentionRecord]] | None = None

    def _kv_weight(self, group: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of ``qkv`` that produce the keys and values of one head group's heads."""
        if len(self.sr_groups) == 1:
            w, b = self.qkv.weight[self.dim :], None if self.qkv.bias is None else self.qkv.bias[self.dim :]
            return w, b
        rows = getattr(self, f"kv_rows_{group}")
        return self.qkv.weight[rows], None if self.qkv.bias is None else self.qkv.bias[rows]

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
        """Args:
            x: (B, P + H*W, C) tokens; the first P are class tokens, the rest lie on ``grid``.
            grid: (H, W) of the grid tokens.
            num_prefix_tokens: P.

        Returns:
            (B, P + H*W, C).
        """
        b, n, c = x.shape
        hg, d = self.heads_per_group, self.head_dim
        if len(self.reductions) == 1 and self.reductions[0].sr is None:
            # No reduction (SR 1): queries, keys and values all come from x, so one GEMM makes all three.
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # each (B, heads, N, d)
            groups = [(q, k, v, tuple(grid))]
        else:
            q_b = None if self.qkv.bias is None else self.qkv.bias[:c]
            q = F.linear(x, self.qkv.weight[:c], q_b).reshape(b, n, self.num_heads, d).transpose(1, 2)
            prefix, tokens = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
            groups = []
            for g, reduce in enumerate(self.reductions):
                kv_in, key_grid = reduce(tokens, grid)  # (B, h*w, C)
                if num_prefix_tokens:
                    kv_in = torch.cat([prefix, kv_in], dim=1)  # class tokens are keys too: (B, P + h*w, C)
                w, bias = self._kv_weight(g)
                kv = F.linear(kv_in, w, bias).reshape(b, -1, 2, hg, d).permute(2, 0, 3, 1, 4)
                k, v = kv.unbind(0)  # each (B, heads_in_group, M, d), M = P + h*w
                groups.append((q[:, g * hg : (g + 1) * hg], k, v, key_grid))  # q: (B, heads_in_group, N, d)

        explicit = self.recorder is not None or not self.fused_attn
        records: list[AttentionRecord] = []
        outs = []
        for g, (qg, k, v, key_grid) in enumerate(groups):
            if explicit:
                attn = (qg @ k.transpose(-2, -1)) * self.scale  # (B, heads_in_group, N, M): rectangular
                attn = attn.softmax(dim=-1)
                if self.recorder is not None:
                    heads = tuple(range(g * hg, (g + 1) * hg))
                    r = None if self.linear else self.sr_groups[g]
                    records.append(
                        AttentionRecord(attn.detach(), tuple(grid), key_grid, num_prefix_tokens, heads, r)
                    )
                outs.append(self.attn_drop(attn) @ v)
            else:
                p = self.attn_drop.p if self.training else 0.0
                outs.append(F.scaled_dot_product_attention(qg, k, v, dropout_p=p))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # (B, heads, N, d)
        if self.recorder is not None:
            self.recorder.append(records)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))
