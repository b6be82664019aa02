"""Head ablation: switch a head off and see what happens to the prediction.

A picture of a head's attention shows where it looks, not whether the model *needs* it. Ablation is
the causal counterpart (Michel et al., 2019, "Are sixteen heads really better than one?"): the head's
output is zeroed before the layer's output projection ``attn.proj`` mixes the heads, and the change in
the predicted probability says how much the prediction relied on that head.

``proj``'s input is (B, P + N, C) with the heads side by side: head h owns channels
``[h * head_dim, (h + 1) * head_dim)`` (multi-scale groups are concatenated in head order too). The
switch is a forward pre-hook on ``proj`` that is removed in a ``finally`` clause, so nothing leaks
into the next forward pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from hvit.explain._inputs import ImageLike, eval_mode, prepare_images
from hvit.explain.attribution import resolve_targets


def _blocks(model: nn.Module, stage: int, block: int | None) -> list[nn.Module]:
    n = len(model.stages)
    if not -n <= stage < n:
        raise ValueError(f"stage must be in 0..{n - 1}, got {stage}")
    blocks = list(model.stages[stage].blocks)
    if block is None:
        return blocks
    if not -len(blocks) <= block < len(blocks):
        raise ValueError(f"stage {stage} has blocks 0..{len(blocks) - 1}, got block {block}")
    return [blocks[block]]


@contextmanager
def ablate_heads(
    model: nn.Module, stage: int, heads: int | Iterable[int], block: int | None = None
) -> Iterator[None]:
    """Inside the ``with`` block, the given heads of one stage output zeros.

    Args:
        model: an hvit model.
        stage: 0-based stage.
        heads: a head index or several (0-based, over the whole layer).
        block: one block of the stage, or ``None`` for the same heads in every block of the stage.
    """
    heads = [heads] if isinstance(heads, int) else list(heads)
    handles = []
    try:
        for blk in _blocks(model, stage, block):
            attn = blk.attn
            bad = [h for h in heads if not 0 <= h < attn.num_heads]
            if bad:
                raise ValueError(f"stage {stage} has heads 0..{attn.num_heads - 1}, got {bad}")
            keep = torch.ones(attn.dim)
            for h in heads:
                keep[h * attn.head_dim : (h + 1) * attn.head_dim] = 0.0

            def zero_heads(module: nn.Module, args: tuple, keep: torch.Tensor = keep) -> tuple:
                (x,) = args  # (B, P + N, C): the heads' outputs side by side
                return (x * keep.to(x),)

            handles.append(attn.proj.register_forward_pre_hook(zero_heads))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class HeadAblation:
    """Effect of switching heads off on one image's target class.

    Attributes:
        stage, heads, block: what was switched off (``block=None``: every block of the stage).
        target: the class whose probability is reported.
        prob_before, prob_after: its softmax probability with the heads on and off.
        delta: ``prob_after - prob_before`` (negative: the prediction relied on the heads).
        predicted_after: the predicted class with the heads off.
    """

    stage: int
    heads: list[int]
    block: int | None
    target: int
    prob_before: float
    prob_after: float
    delta: float
    predicted_after: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def head_ablation(
    model: nn.Module,
    image: ImageLike,
    stage: int,
    head: int | Iterable[int],
    block: int | None = None,
    target: int | None = None,
) -> HeadAblation:
    """Switch one head (or several) of one stage off and report how the class probability changes.

    Args:
        model: an hvit model (mode restored, no hook left behind).
        image: one image (see `hvit.explain.prepare_images`); a batch uses its first image.
        stage: 0-based stage.
        head: head index (or indices) within the stage's layers.
        block: one block, or ``None`` to switch the head off in every block of the stage.
        target: class to follow (``None``: the class predicted with all heads on).

    Returns:
        `HeadAblation`.
    """
    x = prepare_images(model, image)[:1]
    tgt = int(resolve_targets(model, x, target)[0])
    with eval_mode(model):
        before = model(x).softmax(-1)[0]
        with ablate_heads(model, stage, head, block):
            after = model(x).softmax(-1)[0]
    heads = [head] if isinstance(head, int) else list(head)
    return HeadAblation(
        stage,
        heads,
        block,
        tgt,
        float(before[tgt]),
        float(after[tgt]),
        float(after[tgt] - before[tgt]),
        int(after.argmax()),
    )


def head_ablation_scan(
    model: nn.Module, image: ImageLike, target: int | None = None, block: int | None = None
) -> list[HeadAblation]:
    """`head_ablation` of every head of every stage, one at a time (for a "which heads matter" chart)."""
    x = prepare_images(model, image)[:1]
    tgt = int(resolve_targets(model, x, target)[0])
    return [
        head_ablation(model, x, s, h, block, tgt)
        for s, stage in enumerate(model.stages)
        for h in range(stage.blocks[0].attn.num_heads)
    ]
