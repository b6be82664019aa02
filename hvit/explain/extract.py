"""Reading the attention probabilities out of a model, without leaving anything behind.

Fused attention never materialises its probabilities, and hooks on ``attn_drop`` see nothing (the
failure of vit-explain on current timm). Instead, `record_attention` hands every
`MultiScaleAttention` a list to append to; while it is set, the layer takes its explicit-softmax path
(tested to equal the fused one). The ``finally`` clause takes the lists away again, so the next
forward is exactly the model's normal, fused forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from hvit.layers.attention import AttentionRecord, MultiScaleAttention


@dataclass
class AttentionMaps:
    """Attention of every stage, block and head group for one batch.

    Attributes:
        records: ``records[stage][block]`` is the list of `AttentionRecord` of that layer, one per
            head group (a single entry unless the stage uses multi-scale attention).
        logits: (B, num_classes) output of the same forward pass.
    """

    records: list[list[list[AttentionRecord]]]
    logits: torch.Tensor

    @property
    def num_stages(self) -> int:
        return len(self.records)

    def layer(self, stage: int, block: int) -> list[AttentionRecord]:
        """Head-group records of one layer (0-based ``stage`` and ``block``)."""
        return self.records[stage][block]

    def probs(self, stage: int, block: int) -> torch.Tensor:
        """(B, heads, queries, keys) probabilities of a single-scale layer.

        Raises:
            ValueError: for a multi-scale layer, whose head groups have different key grids; use
                `layer` to get each group on its own grid.
        """
        groups = self.layer(stage, block)
        if len(groups) != 1:
            raise ValueError(
                f"stage {stage} uses multi-scale attention with {len(groups)} key grids "
                f"{[g.key_grid for g in groups]}; read each head group from maps.layer({stage}, {block})"
            )
        return groups[0].probs


def _attention_layers(model: nn.Module) -> list[list[MultiScaleAttention]]:
    """``[stage][block]`` attention modules of an hvit model."""
    stages = getattr(model, "stages", None)
    if stages is None:
        raise TypeError(f"expected an hvit model with .stages, got {type(model).__name__}")
    return [[blk.attn for blk in stage.blocks] for stage in stages]


@contextmanager
def record_attention(model: nn.Module) -> Iterator[list[list[list[list[AttentionRecord]]]]]:
    """Record the attention of every layer during the forward passes run inside the ``with`` block.

    Yields:
        ``store[stage][block]``: a list that receives one entry (a list of `AttentionRecord`, one per
        head group) per forward pass. Everything is detached from the autograd graph.
    """
    layers = _attention_layers(model)
    store = [[[] for _ in stage] for stage in layers]
    try:
        for s, stage in enumerate(layers):
            for b, attn in enumerate(stage):
                attn.recorder = store[s][b]
        yield store
    finally:
        for stage in layers:
            for attn in stage:
                attn.recorder = None


@torch.no_grad()
def extract_attention(model: nn.Module, images: torch.Tensor) -> AttentionMaps:
    """Attention probabilities of every stage, block and head for a batch of images.

    The model runs in eval mode for this one call (no dropout); its previous mode, its fused attention
    path and its hooks are exactly as before when the function returns.

    Args:
        model: an hvit model.
        images: (B, C, H, W) preprocessed images.

    Returns:
        `AttentionMaps`: per stage and block, one `AttentionRecord` per head group holding
        ``probs`` (B, heads, P + H*W, P + h*w), the query grid (H, W), the key grid (h, w) and the
        number of class tokens P; and the logits of the same pass.
    """
    was_training = model.training
    model.eval()
    try:
        with record_attention(model) as store:
            logits = model(images)
    finally:
        model.train(was_training)
    records = [[calls[-1] for calls in stage] for stage in store]
    return AttentionMaps(records=records, logits=logits)
