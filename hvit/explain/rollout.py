"""Attention rollout through a pyramid: rectangular attention, changing grids, and a class token.

Ordinary rollout (Abnar & Zuidema, 2020) follows information from the output back to the input tokens
of a plain ViT: each layer mixes tokens by its attention A (N x N) and keeps a residual copy, so it is
modelled as ``L = (1 - a) A + a I`` with rows renormalised (a = 0.5), and the rollout of a stack of layers
is the product ``L_last ... L_1``: row q says how much output token q draws from each input token.

A pyramid breaks three assumptions, and each gets one rule here:

1. **Rectangular attention.** With spatial reduction, A is (P + N) x (P + M): queries on the token grid,
   keys on a grid R times coarser (or a fixed pooled grid for linear SRA). A reduced key is a summary
   of the R x R block of tokens under it, so its share is *spread back evenly over the tokens it
   summarises*: ``A_tokens = A @ U`` with U the (P + M) x (P + N) spread matrix (class tokens map to
   themselves). U has rows summing to 1, so A_tokens is again row-stochastic. With ``sr_ratio=1``, U is
   the identity and this is ordinary rollout.
2. **Several key grids per layer** (multi-scale attention): every head group is spread back from its own
   grid, then the heads are fused (mean, max or min) on the common token grid.
3. **Changing grids between stages.** Stage s+1's tokens come from stage s's map through a strided patch
   embedding; a stage-(s+1) token is spread evenly over the stage-s tokens of its cell (the same kind
   of spread matrix, stride ``downsample_stride``). A class token (PVT v1, last stage) is a learned
   constant with no ancestor in the image: the share that reaches it is dropped and the rest
   renormalised, and the dropped share is reported (``prefix_mass``).

The result is a distribution over stage-1 tokens, which cover ``patch_size`` x ``patch_size`` pixels
each. Rather than multiplying (N x N) matrices, the rollout is computed as a row vector pushed down
from the output, ``v <- v L`` layer by layer, which costs O(N M) per layer (and never forms the
3136 x 3136 stage-1 matrix at 224 px).

What rollout leaves out, here as in a plain ViT: the MLPs, including PVT v2's 3x3 depth-wise
convolution that also mixes neighbouring tokens, and the overlap of PVT v2's patch embeddings (cells
are nominal). Rollout says where attention *can* carry information from, not what the class depends
on; `hvit.attribute` and the checks in `hvit.explain.faithfulness` measure the latter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hvit.explain._inputs import ImageLike, prepare_images
from hvit.explain.extract import AttentionMaps, extract_attention
from hvit.explain.geometry import TokenMap, grid_to_image, pixel_to_token, spread_matrix, stage_strides
from hvit.layers.attention import AttentionRecord

HEAD_FUSIONS = ("mean", "max", "min")


def _key_spread(record: AttentionRecord) -> torch.Tensor:
    """(P + M, P + N) spread matrix of a head group: class keys to class tokens, reduced keys evenly
    over the tokens they summarise. Rows sum to 1."""
    p = record.num_prefix_tokens
    grid = spread_matrix(record.query_grid, record.key_grid, record.sr_ratio)  # (M, N)
    return torch.block_diag(torch.eye(p), grid) if p else grid


def layer_attention_on_tokens(layer: list[AttentionRecord], head_fusion: str = "mean") -> torch.Tensor:
    """The layer's attention as a square, row-stochastic matrix over its own tokens.

    Args:
        layer: the `AttentionRecord` of every head group of one layer.
        head_fusion: "mean", "max" or "min" over all heads of the layer.

    Returns:
        (B, P + N, P + N); rows sum to 1. Builds the dense matrix: for small grids and tests.
    """
    lifted = torch.cat([g.probs @ _key_spread(g).to(g.probs) for g in layer], dim=1)  # (B, heads, P+N, P+N)
    fused = {"mean": lifted.mean(1), "max": lifted.amax(1), "min": lifted.amin(1)}[head_fusion]
    return fused / fused.sum(-1, keepdim=True).clamp_min(1e-12)


def _push_through_layer(
    v: torch.Tensor, layer: list[AttentionRecord], head_fusion: str, residual_weight: float
) -> torch.Tensor:
    """``v @ L`` for the layer's residual-augmented attention L; v: (B, K, P + N) -> (B, K, P + N)."""
    if head_fusion == "mean":
        # Mean over all heads, factorised per group: v @ (mean_h A_g) @ U_g costs O(K (P+N) (P+M)).
        heads = sum(len(g.heads) for g in layer)
        attended = sum(
            len(g.heads) / heads * ((v @ g.probs.mean(1).to(v)) @ _key_spread(g).to(v)) for g in layer
        )  # (B, K, P + N)
    else:
        attended = v @ layer_attention_on_tokens(layer, head_fusion).to(v)
    out = (1 - residual_weight) * attended + residual_weight * v
    return out / out.sum(-1, keepdim=True).clamp_min(1e-12)  # keepdim: renormalise each row on its own


def rollout_from_maps(
    maps: AttentionMaps,
    downsample_stride: int,
    start: torch.Tensor | None = None,
    start_stage: int = -1,
    head_fusion: str = "mean",
    residual_weight: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Push distributions over one stage's output tokens down to the stage-1 token grid.

    Args:
        maps: from `hvit.extract_attention`.
        downsample_stride: stride of the patch embedding between stages (``model.config``).
        start: (B, K, P + N) rows, each a distribution over the output tokens of ``start_stage``
            (class tokens first). ``None``: the identity, which gives the full rollout matrix.
        start_stage: the stage the rows start from (negative counts from the end).
        head_fusion: "mean", "max" or "min" over the heads of each layer.
        residual_weight: weight a of the identity in ``(1 - a) A + a I``.

    Returns:
        ``(rollout, prefix_mass)``: rollout (B, K, N_1), every row a distribution over the stage-1
        grid tokens (rows sum to 1); prefix_mass (B, K), the share that ended on a class token and was
        dropped.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if not 0.0 <= residual_weight <= 1.0:
        raise ValueError(f"residual_weight must be in [0, 1], got {residual_weight}")
    stage = start_stage % maps.num_stages
    first = maps.records[stage][0][0]
    b = first.probs.shape[0]
    n_tokens = first.num_prefix_tokens + first.query_grid[0] * first.query_grid[1]
    v = torch.eye(n_tokens).expand(b, -1, -1) if start is None else start
    if v.shape[-1] != n_tokens:
        raise ValueError(
            f"start rows must have {n_tokens} entries (the tokens of stage {stage}), got {v.shape[-1]}"
        )
    v = v.double()
    dropped = torch.zeros(v.shape[:2], dtype=v.dtype)
    for s in range(stage, -1, -1):
        for layer in reversed(maps.records[s]):
            v = _push_through_layer(v, layer, head_fusion, residual_weight)
        # Leave stage s: drop the class-token share (a learned constant, no ancestor in the image).
        rec = maps.records[s][0][0]
        p = rec.num_prefix_tokens
        dropped = dropped + (1 - dropped) * v[..., :p].sum(-1)
        v = v[..., p:]
        v = v / v.sum(-1, keepdim=True).clamp_min(1e-12)
        if s > 0:
            # Each token of stage s came from a cell of stage s-1 tokens: share it out over that cell.
            below = maps.records[s - 1][0][0].query_grid
            v = v @ spread_matrix(below, rec.query_grid, downsample_stride).to(v)  # (B, K, N_{s-1})
    return v.float(), dropped.float()


@dataclass
class AttentionRollout:
    """Rollout of every stage of one forward pass.

    Attributes:
        maps: per stage s, (B, H1, W1): where the output of stage s draws from on the stage-1 grid, as
            a distribution (each map sums to 1). The last is the model's: it starts from what the
            classifier reads (the class token, or the mean of the last map).
        prefix_mass: per stage, (B,) the share that reached a class token and was dropped.
        grid: (H1, W1) stage-1 token grid.
        stride: pixels per stage-1 token.
        image_size: (S_h, S_w) of the input.
    """

    maps: list[torch.Tensor]
    prefix_mass: list[torch.Tensor]
    grid: tuple[int, int]
    stride: int
    image_size: tuple[int, int]

    def to_image(self, stage: int = -1) -> torch.Tensor:
        """(B, S_h, S_w): stage ``stage``'s rollout painted onto pixels (each pixel holds its token's share)."""
        return grid_to_image(self.maps[stage], self.image_size, self.stride)

    def token_map(self, stage: int = -1, image_index: int = 0) -> TokenMap:
        """Stage ``stage``'s rollout of one image on the stage-1 token grid, with the pixels each token
        covers: what `to_image` paints, one value per token (what the figures draw)."""
        return TokenMap(self.maps[stage][image_index], self.stride, self.image_size)


def _readout(
    record: AttentionRecord, batch: int, is_last: bool, query: tuple[int, int] | None
) -> torch.Tensor:
    """(B, 1, P + N) starting row: a query token, the class token the head reads, or the mean of the map."""
    p = record.num_prefix_tokens
    n = record.query_grid[0] * record.query_grid[1]
    v = torch.zeros(batch, 1, p + n)
    if query is not None:
        v[..., p + query[0] * record.query_grid[1] + query[1]] = 1.0
    elif is_last and p:
        v[..., 0] = 1.0
    else:
        v[..., p:] = 1.0 / n
    return v


def rollout_all_stages(
    maps: AttentionMaps,
    strides: list[int],
    downsample_stride: int,
    image_size: tuple[int, int],
    head_fusion: str = "mean",
    residual_weight: float = 0.5,
    pixel: tuple[int, int] | None = None,
) -> AttentionRollout:
    """`attention_rollout` on attention already extracted (``strides``: pixels per token per stage)."""
    out, dropped = [], []
    batch = maps.records[0][0][0].probs.shape[0]
    for s in range(maps.num_stages):
        rec = maps.records[s][0][0]
        query = None if pixel is None else pixel_to_token(pixel, rec.query_grid, strides[s])
        start = _readout(rec, batch, s == maps.num_stages - 1, query)
        roll, mass = rollout_from_maps(maps, downsample_stride, start, s, head_fusion, residual_weight)
        out.append(roll[:, 0].unflatten(-1, maps.records[0][0][0].query_grid))  # (B, H1, W1)
        dropped.append(mass[:, 0])
    grid = maps.records[0][0][0].query_grid
    return AttentionRollout(out, dropped, tuple(grid), strides[0], tuple(image_size))


def attention_rollout(
    model: nn.Module,
    images: ImageLike,
    head_fusion: str = "mean",
    residual_weight: float = 0.5,
    pixel: tuple[int, int] | None = None,
) -> AttentionRollout:
    """Attention rollout carried through every stage of a pyramid transformer.

    The method is described in this module's docstring: reduced keys are spread back over the tokens
    they summarise, stage-(s+1) tokens over their cell of stage-s tokens, class-token shares are
    dropped, rows are renormalised (keepdim) after every layer.

    Args:
        model: an hvit model (mode restored afterwards).
        images: one image or a batch (see `hvit.explain.prepare_images`).
        head_fusion: "mean" (Abnar & Zuidema), "max" or "min" over the heads of each layer.
        residual_weight: weight of the identity (residual path) in every layer, 0.5 in the paper.
        pixel: start every stage's rollout from the token covering this image pixel (y, x) instead of
            from what the next stage or the classifier reads.

    Returns:
        `AttentionRollout` with one map per stage; ``maps[-1]`` explains the prediction.
    """
    x = prepare_images(model, images)
    return rollout_all_stages(
        extract_attention(model, x),
        stage_strides(model),
        model.config.downsample_stride,
        (int(x.shape[-2]), int(x.shape[-1])),
        head_fusion,
        residual_weight,
        pixel,
    )
