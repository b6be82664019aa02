"""Which heads look near and which look far: mean attention distance and attention entropy per head.

*Mean attention distance* (Dosovitskiy et al., 2021, fig. 7) is the average distance, in image pixels,
between a query and what it attends to, weighted by the attention. With spatial reduction a key is not
a point but a block of tokens, so the distance to a key is the mean distance from the query to every
token of the key's footprint: the attention is spread back over the tokens it summarises (as in
`hvit.attention_rollout`), which gives ViT's definition when ``sr_ratio=1``. A stage whose single key
summarises the whole grid (global pooling) is then, correctly, a stage that looks far. Distances
use the centres of the nominal token cells; class-token queries and keys have no position and are left
out (the attention over grid keys is renormalised to 1 for each query).

*Attention entropy* ``-sum_k p_k log p_k`` (nats), averaged over queries, says how spread out a head's
attention is: 0 when every query looks at one key, ``log M`` when it looks evenly at all M keys. As
stages have different numbers of keys, the normalised entropy (divided by ``log M``, in [0, 1]) is the
one to compare across stages. A single key gives entropy 0 and normalised entropy 0 by convention.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from hvit.explain._inputs import ImageLike, prepare_images
from hvit.explain.extract import AttentionMaps, extract_attention
from hvit.explain.geometry import spread_matrix, stage_strides, token_centres
from hvit.layers.attention import AttentionRecord


@dataclass
class HeadStat:
    """Statistics of one head of one layer, averaged over queries and images.

    Attributes:
        stage, block, head: 0-based position of the head (head counts over the whole layer).
        group: head group within a multi-scale layer (0 otherwise).
        sr_ratio: the group's reduction ratio (``None`` for linear SRA).
        key_grid: (h, w) of the group's keys.
        mean_distance: mean attention distance in image pixels.
        entropy: mean attention entropy in nats.
        normalized_entropy: entropy / log(number of keys), in [0, 1].
    """

    stage: int
    block: int
    head: int
    group: int
    sr_ratio: int | None
    key_grid: tuple[int, int]
    mean_distance: float
    entropy: float
    normalized_entropy: float

    def to_dict(self) -> dict:
        return asdict(self)


def _group_stats(record: AttentionRecord, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(heads_in_group,) mean distance, entropy and normalised entropy of one head group."""
    p = record.num_prefix_tokens
    probs = record.probs.double()  # (B, heads, P + N, P + M)
    num_keys = probs.shape[-1]

    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)  # (B, heads, P + N)
    entropy = entropy.mean(dim=(0, 2))  # (heads,)
    normalized = entropy / math.log(num_keys) if num_keys > 1 else torch.zeros_like(entropy)

    grid = probs[:, :, p:, p:]  # (B, heads, N, M): grid queries over grid keys
    grid = grid / grid.sum(-1, keepdim=True).clamp_min(1e-30)
    centres = token_centres(record.query_grid, stride).double()  # (N, 2) pixel centres
    dist = torch.cdist(centres, centres)  # (N, N) query token to token, in pixels
    spread = spread_matrix(record.query_grid, record.key_grid, record.sr_ratio).double()  # (M, N)
    # to_key[q, k]: mean distance from query q to the tokens key k summarises.
    to_key = dist @ spread.T  # (N, M)
    distance = (grid * to_key).sum(-1).mean(dim=(0, 2))  # (heads,)
    return distance.float(), entropy.float(), normalized.float()


def head_statistics_from_maps(maps: AttentionMaps, strides: list[int]) -> list[HeadStat]:
    """`HeadStat` of every head of every layer of extracted attention.

    Args:
        maps: from `hvit.extract_attention`.
        strides: pixels per token of each stage (`hvit.explain.geometry.stage_strides`).

    Returns:
        One `HeadStat` per (stage, block, head), in that order.
    """
    stats = []
    for s, stage in enumerate(maps.records):
        for b, layer in enumerate(stage):
            for g, record in enumerate(layer):
                distance, entropy, normalized = _group_stats(record, strides[s])
                for i, head in enumerate(record.heads):
                    stats.append(
                        HeadStat(
                            s,
                            b,
                            head,
                            g,
                            record.sr_ratio,
                            tuple(record.key_grid),
                            float(distance[i]),
                            float(entropy[i]),
                            float(normalized[i]),
                        )
                    )
    return stats


def head_statistics(model: nn.Module, images: ImageLike) -> list[HeadStat]:
    """Mean attention distance and entropy of every head of ``model`` on ``images``.

    Args:
        model: an hvit model.
        images: one image or a batch (anything `hvit.explain.prepare_images` accepts); statistics are
            averaged over the batch.

    Returns:
        One `HeadStat` per (stage, block, head).
    """
    x = prepare_images(model, images)
    return head_statistics_from_maps(extract_attention(model, x), stage_strides(model))


def summarize_by_stage(stats: list[HeadStat]) -> list[dict]:
    """Average the blocks of each stage: one row per (stage, head) with ``mean_distance``,
    ``entropy`` and ``normalized_entropy``, for the "near and far heads per stage" chart."""
    rows: dict[tuple[int, int], list[HeadStat]] = {}
    for st in stats:
        rows.setdefault((st.stage, st.head), []).append(st)
    out = []
    for (stage, head), group in sorted(rows.items()):
        out.append(
            {
                "stage": stage,
                "head": head,
                "sr_ratio": group[0].sr_ratio,
                "mean_distance": sum(g.mean_distance for g in group) / len(group),
                "entropy": sum(g.entropy for g in group) / len(group),
                "normalized_entropy": sum(g.normalized_entropy for g in group) / len(group),
            }
        )
    return out
