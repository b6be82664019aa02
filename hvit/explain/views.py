"""Attention you can point at: one query's attention, the attention each key receives, key footprints.

In a pyramid transformer the attention matrix of a layer is *rectangular*: queries live on the stage's
token grid (H, W), keys on a grid reduced by the SR ratio (h, w) (or on a fixed pooled grid for linear
SRA), and a PVT v1 last stage adds a class token in front of both. A multi-scale layer has one key grid
per head group. So there is no "attention image" without saying how keys map back to pixels.

Here a reduced key is drawn over its *footprint*: the R x R block of tokens it summarises, and the
pixels those tokens cover (see `hvit.explain.geometry`). Views come in two coordinate systems:

- ``on="keys"``: the raw (h, w) values on the head group's own key grid (what the layer computes);
- ``on="image"``: the same values painted over each key's footprint at image resolution, so heads with
  different key grids (and different stages) can be laid over the input and compared;
- ``on="tokens"``: the same picture at the stage's token resolution, a `TokenMap` (one value per
  query token, plus the pixels each covers): what the figures draw, one cell per token.

`attention_views(model, image)` runs the model once and returns an `AttentionViews` whose methods give
every picture the apps show. The functions below it work on a single `AttentionRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hvit.explain._inputs import ImageLike, class_names, display_images, prepare_images
from hvit.explain.extract import AttentionMaps, extract_attention
from hvit.explain.geometry import (
    TokenMap,
    grid_to_image,
    membership,
    paint_matrix,
    pixel_to_token,
    stage_strides,
)
from hvit.layers.attention import AttentionRecord

# --- one head group ------------------------------------------------------------------------------------


def key_membership(record: AttentionRecord) -> torch.Tensor:
    """(h*w, H*W) 0/1: which query-grid tokens each reduced key of ``record`` summarises."""
    return membership(record.query_grid, record.key_grid, record.sr_ratio)


def _head_probs(record: AttentionRecord, head: int | None, image_index: int) -> torch.Tensor:
    """(Nq, Nk) probabilities of one head (index within the group), or the group's head mean."""
    probs = record.probs[image_index]  # (heads_in_group, P + H*W, P + h*w)
    return probs.mean(0) if head is None else probs[head]


def query_key_attention(
    record: AttentionRecord, query: int | tuple[int, int] | str, head: int | None = None, image_index: int = 0
) -> torch.Tensor:
    """Attention of one query over the grid keys of one head group.

    Args:
        record: the head group's `AttentionRecord`.
        query: a query token: (i, j) on the query grid, a flat grid index, or ``"cls"`` for the class
            token (``num_prefix_tokens`` must be 1).
        head: head within the group (0-based); ``None`` averages the group's heads.
        image_index: which image of the batch.

    Returns:
        (h, w) probabilities on the key grid. They sum to 1 minus the attention paid to the class token.
    """
    p = record.num_prefix_tokens
    if isinstance(query, str):
        if query != "cls" or p == 0:
            raise ValueError(f"query {query!r} needs a class token; this layer has {p} prefix tokens")
        row = 0
    else:
        row = p + (query if isinstance(query, int) else query[0] * record.query_grid[1] + query[1])
    probs = _head_probs(record, head, image_index)[row, p:]  # (h*w,)
    return probs.reshape(record.key_grid)


def received_key_attention(
    record: AttentionRecord, head: int | None = None, image_index: int = 0
) -> torch.Tensor:
    """The attention each grid key receives, averaged over the grid queries.

    Returns:
        (h, w); sums to 1 minus the average attention paid to the class token (1 without one).
    """
    p = record.num_prefix_tokens
    probs = _head_probs(record, head, image_index)[p:, p:]  # (H*W, h*w): grid queries x grid keys
    return probs.mean(0).reshape(record.key_grid)


def keys_to_tokens(values: torch.Tensor, record: AttentionRecord) -> torch.Tensor:
    """Paint (..., h, w) key values over the query tokens they summarise.

    Every token takes the value of the key that summarises it (the mean, where adaptive-pooling bins
    overlap; zero for the few tokens a strided reduction drops).

    Returns:
        (..., H, W) on the query grid.
    """
    paint = paint_matrix(record.query_grid, record.key_grid, record.sr_ratio).to(values)  # (h*w, H*W)
    tokens = values.flatten(-2) @ paint  # (..., H*W)
    return tokens.unflatten(-1, record.query_grid)


def keys_to_image(
    values: torch.Tensor, record: AttentionRecord, image_size: tuple[int, int], stride: int
) -> torch.Tensor:
    """Paint (..., h, w) key values over their footprints at image resolution: `keys_to_tokens`, then
    every pixel takes the value of its token.

    Returns:
        (..., S_h, S_w).
    """
    return grid_to_image(keys_to_tokens(values, record), image_size, stride)


def key_footprint(record: AttentionRecord, image_size: tuple[int, int], stride: int) -> torch.Tensor:
    """Pixels each reduced key summarises.

    Returns:
        (h*w, S_h, S_w) bool; ``footprint[k]`` is True on the pixels of key k.
    """
    member = key_membership(record).unflatten(-1, record.query_grid)  # (h*w, H, W)
    return grid_to_image(member, image_size, stride) > 0


def key_token_labels(record: AttentionRecord) -> torch.Tensor:
    """(H, W) long: the index of the key summarising each query token (-1 where none does; the first
    one where adaptive-pooling bins overlap)."""
    member = key_membership(record).unflatten(-1, record.query_grid) > 0  # (h*w, H, W)
    labels = member.float().argmax(0)
    return torch.where(member.any(0), labels, torch.full_like(labels, -1))


def key_footprint_labels(record: AttentionRecord, image_size: tuple[int, int], stride: int) -> torch.Tensor:
    """(S_h, S_w) long: `key_token_labels` painted onto pixels. A label image to draw the key grid over
    the input."""
    return grid_to_image(key_token_labels(record), image_size, stride)


# --- a whole model ---------------------------------------------------------------------------------------


@dataclass
class AttentionViews:
    """The attention of one forward pass, with every view the apps draw.

    Stages, blocks and heads are 0-based; a negative block counts from the end. Head indices count over
    the whole layer (head 3 of a layer with two groups of two heads is head 1 of group 1).

    Attributes:
        maps: the `AttentionMaps` of the pass.
        inputs: (B, C, S_h, S_w) model input.
        images: (B, S_h, S_w, 3) input in [0, 1] for display.
        strides: pixels per token of every stage.
        class_names: one name per class.
    """

    maps: AttentionMaps
    inputs: torch.Tensor
    images: np.ndarray
    strides: list[int]
    class_names: list[str]

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.inputs.shape[-2]), int(self.inputs.shape[-1])

    @property
    def num_stages(self) -> int:
        return self.maps.num_stages

    def num_blocks(self, stage: int) -> int:
        return len(self.maps.records[stage])

    def num_heads(self, stage: int) -> int:
        return sum(len(r.heads) for r in self.maps.records[stage][0])

    def groups(self, stage: int, block: int = -1) -> list[AttentionRecord]:
        """The head-group records of one layer (one entry unless the layer is multi-scale)."""
        return self.maps.records[stage][block]

    def head_group(self, stage: int, block: int, head: int) -> tuple[AttentionRecord, int]:
        """The record holding layer head ``head`` and the head's index within that group."""
        for record in self.groups(stage, block):
            if head in record.heads:
                return record, record.heads.index(head)
        raise ValueError(f"stage {stage} has heads 0..{self.num_heads(stage) - 1}, got head {head}")

    def query_token(self, stage: int, pixel: tuple[int, int]) -> tuple[int, int]:
        """The stage's query token (i, j) covering image pixel (y, x)."""
        grid = self.groups(stage)[0].query_grid
        return pixel_to_token(pixel, grid, self.strides[stage])

    def _per_head(self, stage: int, block: int, head: int | None, fn, on: str) -> torch.Tensor | TokenMap:
        if on not in ("image", "keys", "tokens"):
            raise ValueError(f"on must be 'image', 'keys' or 'tokens', got {on!r}")
        if on == "keys":
            if head is not None:
                record, h = self.head_group(stage, block, head)
                return fn(record, h)
            groups = self.groups(stage, block)
            if len(groups) > 1:
                raise ValueError(
                    f"stage {stage} is multi-scale: its head groups have key grids {[g.key_grid for g in groups]}; "
                    "ask for one head, or for on='image' to average the heads over the image"
                )
            return fn(groups[0], None)
        if head is not None:
            record, h = self.head_group(stage, block, head)
            tokens = keys_to_tokens(fn(record, h), record)  # (H, W)
        else:
            # Mean over every head of the layer: each group's head mean, weighted by its number of heads,
            # once painted onto the query tokens (the grid all groups share).
            groups = self.groups(stage, block)
            tokens = sum(len(g.heads) * keys_to_tokens(fn(g, None), g) for g in groups) / self.num_heads(
                stage
            )
        on_tokens = TokenMap(tokens, self.strides[stage], self.image_size)
        return on_tokens if on == "tokens" else on_tokens.to_image()

    def query_attention(
        self,
        stage: int,
        block: int = -1,
        head: int | None = None,
        pixel: tuple[int, int] | None = None,
        query: tuple[int, int] | str | None = None,
        on: str = "image",
        image_index: int = 0,
    ) -> torch.Tensor | TokenMap:
        """Where one query location looks: its attention over the reduced key grid.

        Args:
            stage, block: the layer.
            head: a head of the layer, or ``None`` for the mean over all heads.
            pixel: the query as an image pixel (y, x) (converted to the stage's token covering it).
            query: the query as a token (i, j) of the stage's grid, or ``"cls"``; used when no pixel.
            on: ``"image"`` (S_h, S_w) painted over key footprints, ``"keys"`` (h, w), or ``"tokens"``: a
                `TokenMap` of the stage's query grid (what ``"image"`` repeats over each token's pixels).
            image_index: which image of the batch.

        Returns:
            The attention map; on the image, a pixel holds the probability of the key it belongs to.
        """
        if pixel is not None:
            query = self.query_token(stage, pixel)
        if query is None:
            grid = self.groups(stage)[0].query_grid
            query = (grid[0] // 2, grid[1] // 2)  # default: the centre of the image

        def fn(record: AttentionRecord, h: int | None) -> torch.Tensor:
            return query_key_attention(record, query, h, image_index)

        return self._per_head(stage, block, head, fn, on)

    def received_attention(
        self, stage: int, block: int = -1, head: int | None = None, on: str = "image", image_index: int = 0
    ) -> torch.Tensor | TokenMap:
        """The attention each key receives, averaged over all queries of the layer (see
        `received_key_attention`); ``head=None`` averages the heads. Returns (S_h, S_w), (h, w) or a
        `TokenMap`, as ``on`` asks (see `query_attention`)."""

        def fn(record: AttentionRecord, h: int | None) -> torch.Tensor:
            return received_key_attention(record, h, image_index)

        return self._per_head(stage, block, head, fn, on)

    def head_maps(
        self,
        stage: int,
        block: int = -1,
        kind: str = "received",
        pixel: tuple[int, int] | None = None,
        image_index: int = 0,
        on: str = "image",
    ) -> torch.Tensor | TokenMap:
        """Every head of a layer on the image, for a per-head grid.

        Args:
            kind: ``"received"`` (attention each key receives) or ``"query"`` (the attention of the
                query at ``pixel``, default the image centre).
            on: ``"image"``: a (heads, S_h, S_w) tensor; ``"tokens"``: a `TokenMap` of (heads, H, W).
        """
        if kind not in ("received", "query"):
            raise ValueError(f"kind must be 'received' or 'query', got {kind!r}")
        if on not in ("image", "tokens"):
            raise ValueError(f"on must be 'image' or 'tokens' (every head on one grid), got {on!r}")
        maps = []
        for h in range(self.num_heads(stage)):
            if kind == "received":
                maps.append(self.received_attention(stage, block, h, on="tokens", image_index=image_index))
            else:
                maps.append(
                    self.query_attention(stage, block, h, pixel=pixel, on="tokens", image_index=image_index)
                )
        heads = TokenMap(torch.stack([m.values for m in maps]), maps[0].stride, maps[0].image_size)
        return heads if on == "tokens" else heads.to_image()

    def stage_maps(
        self,
        block: int = -1,
        kind: str = "received",
        pixel: tuple[int, int] | None = None,
        image_index: int = 0,
        on: str = "image",
    ) -> list[torch.Tensor] | list[TokenMap]:
        """One head-mean map per stage (block ``block`` of each), for per-stage panels: (S_h, S_w)
        tensors, or with ``on="tokens"`` one `TokenMap` per stage, each on its own token grid."""
        if on not in ("image", "tokens"):
            raise ValueError(f"on must be 'image' or 'tokens' (stages have different key grids), got {on!r}")
        out = []
        for s in range(self.num_stages):
            if kind == "received":
                out.append(self.received_attention(s, block, on=on, image_index=image_index))
            else:
                out.append(self.query_attention(s, block, pixel=pixel, on=on, image_index=image_index))
        return out

    def footprint(
        self,
        stage: int,
        block: int = -1,
        head: int = 0,
        key: int | tuple[int, int] | None = None,
        on: str = "image",
    ) -> torch.Tensor | TokenMap:
        """Footprint of the key grid of ``head``'s group.

        Returns:
            with ``key`` (flat index or (a, b)): an (S_h, S_w) bool mask of the pixels that key
            summarises; without: the (S_h, S_w) label image of `key_footprint_labels`. With
            ``on="tokens"``, the same as a `TokenMap` of the stage's query grid.
        """
        if on not in ("image", "tokens"):
            raise ValueError(f"on must be 'image' or 'tokens', got {on!r}")
        record, _ = self.head_group(stage, block, head)
        if key is None:
            tokens = key_token_labels(record)  # (H, W)
        else:
            k = key if isinstance(key, int) else key[0] * record.key_grid[1] + key[1]
            tokens = key_membership(record)[k].reshape(record.query_grid) > 0  # (H, W)
        on_tokens = TokenMap(tokens, self.strides[stage], self.image_size)
        return on_tokens if on == "tokens" else on_tokens.to_image()

    def layer_info(self, stage: int, block: int = -1) -> list[dict]:
        """Plain description of each head group of a layer (for captions)."""
        return [
            {
                "heads": list(r.heads),
                "query_grid": r.query_grid,
                "key_grid": r.key_grid,
                "sr_ratio": r.sr_ratio,
                "class_token": bool(r.num_prefix_tokens),
            }
            for r in self.groups(stage, block)
        ]

    def uniform_level(self, stage: int, block: int = -1, head: int | None = None) -> float:
        """The attention a key gets when a query spreads its attention evenly: 1 / keys.

        The reference against which the apps draw attention (`hvit.explain.colors.uniform_ratio`).
        Keys count the class token when the layer has one. ``head=None`` (the mean over the heads of a
        multi-scale layer) weights each group's level by its number of heads, as the mean map does.
        """
        if head is not None:
            record, _ = self.head_group(stage, block, head)
            return 1.0 / (record.key_grid[0] * record.key_grid[1] + record.num_prefix_tokens)
        groups = self.groups(stage, block)
        levels = [len(g.heads) / (g.key_grid[0] * g.key_grid[1] + g.num_prefix_tokens) for g in groups]
        return sum(levels) / self.num_heads(stage)

    @property
    def rollout_uniform_level(self) -> float:
        """A rollout map's value at one stage-1 token when it is spread evenly: 1 / stage-1 tokens."""
        grid = self.groups(0)[0].query_grid
        return 1.0 / (grid[0] * grid[1])


def attention_views(model: nn.Module, image: ImageLike) -> AttentionViews:
    """Run ``model`` once with attention recording on, ready for every view.

    Args:
        model: an hvit model (its mode and hooks are unchanged afterwards).
        image: a path, PIL image, array or tensor; see `hvit.explain.prepare_images`.

    Returns:
        `AttentionViews` of the batch.
    """
    x = prepare_images(model, image)
    maps = extract_attention(model, x)
    return AttentionViews(maps, x, display_images(model, x), stage_strides(model), class_names(model))
