"""The pyramid: stages of transformer blocks over a token grid that shrinks from stage to stage.

Read bottom-up: `layers/` holds patch embedding, spatial-reduction attention, the MLP and the block;
this file stacks blocks into a `HierarchicalStage` and stages into `HierarchialViT`.

    image (B, 3, H, W)
      -> patch_embed              tokens on an H/4 x W/4 grid (PVT) or H/16 x W/16 (seed default)
      -> stage 1 blocks           attention: queries on the grid, keys on a grid sr_ratio times coarser
      -> stage 2: downsample x2, blocks ...
      -> stage 4 -> norm -> pool (class token or average) -> head -> (B, num_classes)

Between stages the features travel as NCHW maps (B, C, H, W), like a CNN's, which is why PVT drops
into detection and segmentation backbones and why every stage is a natural Grad-CAM layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from hvit.config import HViTConfig, SRRatio, token_grid
from hvit.layers import Block, PatchEmbed, resize_pos_embed
from hvit.preprocessing import Preprocessing

__all__ = [
    "HierarchialViT",
    "HierarchicalStage",
    "HierarchicalViT",
    "token_grid",
]  # token_grid: moved to config


class HierarchicalStage(nn.Module):
    """One level of the pyramid: [downsample] -> [+ position] -> [class token] -> blocks -> [norm].

    Args:
        dim: token width of this stage.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        depth: number of transformer blocks.
        sr_ratio: spatial-reduction ratio of the attention (a sequence: one per head group).
        in_dim: width of the incoming feature map; with ``downsample_stride`` builds ``downsample``.
        downsample_stride: stride of this stage's patch embedding; ``None`` for the first stage, whose
            embedding is the model's ``patch_embed``.
        grid: token grid (h, w) at the model's nominal image size (sizes the position embedding).
        pos_embed: learn a position embedding for this stage.
        cls_token: prepend a learned class token (PVT v1's last stage).
        stage_norm: LayerNorm at the end of the stage (PVT v2).
        overlap: overlapping patch embedding for ``downsample`` (PVT v2).
        drop_path: stochastic-depth probability of each block (a list: one per block).
        **block_kwargs: passed to every `Block` (qkv_bias, linear_sra, pool_size, mlp_dwconv, drop,
            attn_drop, norm_eps).

    Attributes:
        blocks: the transformer blocks.
        downsample: patch embedding from the previous stage's map, or ``None`` for the first stage.
        feature_map: identity module applied to the stage's (B, C, H, W) output: the hook point for
            Captum's layer methods (Grad-CAM) and for feature extraction.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        depth: int,
        sr_ratio: SRRatio,
        *,
        in_dim: int | None = None,
        downsample_stride: int | None = None,
        grid: tuple[int, int] = (1, 1),
        pos_embed: bool = False,
        cls_token: bool = False,
        stage_norm: bool = False,
        overlap: bool = False,
        drop_path: float | Sequence[float] = 0.0,
        norm_eps: float = 1e-6,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.grid = tuple(grid)
        self.downsample = (
            PatchEmbed(in_dim or dim, dim, downsample_stride, overlap)
            if downsample_stride is not None
            else None
        )
        self.num_prefix_tokens = 1 if cls_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        n_pos = self.num_prefix_tokens + grid[0] * grid[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, dim)) if pos_embed else None
        dpr = list(drop_path) if isinstance(drop_path, Sequence) else [drop_path] * depth
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, sr_ratio, drop_path=dpr[i], norm_eps=norm_eps, **block_kwargs)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if stage_norm else nn.Identity()
        self.feature_map = nn.Identity()

    def forward_tokens(
        self, x: torch.Tensor, grid: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Run the stage and keep the token layout.

        Args:
            x: (B, C_in, H, W) map when the stage downsamples, else (B, H*W, C) tokens on ``grid``.
            grid: required when ``x`` is already tokens.

        Returns:
            (B, P + h*w, C) tokens (class token first when present) and the grid (h, w).
        """
        if self.downsample is not None:
            x, grid = self.downsample(x)  # (B, h*w, C)
        if grid is None:
            raise ValueError("grid is required when the stage receives tokens instead of a feature map")
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + h*w, C)
        if self.pos_embed is not None:
            # Learned for self.grid; resampled when the input image has another size.
            x = x + resize_pos_embed(self.pos_embed, self.grid, grid, self.num_prefix_tokens)
        for blk in self.blocks:
            x = blk(x, grid, self.num_prefix_tokens)
        return self.norm(x), grid

    def to_map(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, P + h*w, C) tokens -> (B, C, h, w) map of the grid tokens, through ``feature_map``."""
        x = x[:, self.num_prefix_tokens :]
        # A plain transpose would hand the next convolution a channels-last view; a contiguous NCHW
        # copy is what the next stage's patch embedding convolves fastest on CPU.
        x = x.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1]).contiguous()
        return self.feature_map(x)

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Like `forward_tokens`, but returns the (B, C, h, w) map the next stage consumes."""
        x, grid = self.forward_tokens(x, grid)
        return self.to_map(x, grid), grid


class HierarchialViT(nn.Module):
    """Hierarchical Vision Transformer: a Pyramid Vision Transformer (PVT v1 / v2).

    The seed's constructor (image size, patch size, channels, classes and five per-stage lists) with
    the seed's defaults, which equal the class defaults of the original PVT v1 code. Extra keyword
    arguments select PVT v2's blocks; see `HViTConfig` for every field. Named, published variants come
    from `hvit.create_model`.

    Args:
        img_size: input image size (default 224). Other sizes run too (position embeddings resized).
        patch_size: size of each stage-1 image patch (default 16).
        in_chans: number of input channels (default 3).
        num_classes: number of classes (default 1000); 0 gives a model without a head.
        embed_dims: embedding width of each stage (default [64, 128, 256, 512]).
        num_heads: attention heads of each stage (default [1, 2, 4, 8]).
        mlp_ratios: MLP expansion ratio of each stage (default [4, 4, 4, 4]).
        depths: transformer blocks of each stage (default [3, 4, 6, 3]).
        sr_ratios: spatial-reduction ratio of each stage (default [8, 4, 2, 1]); an entry may be a
            list, splitting that stage's heads into groups that attend at different scales.
        **kwargs: further `HViTConfig` fields (``overlap_patch_embed``, ``linear_sra``, ...).

    Attributes:
        patch_embed: stage-1 patch embedding.
        pos_embed: stage-1 position embedding (``None`` for PVT v2 variants).
        stages: the `HierarchicalStage` modules.
        norm: final LayerNorm (identity when every stage ends with its own norm, as in PVT v2).
        head: classification head.
        config: the validated `HViTConfig`.
        preprocessing: input size, mean, std and class names that go with the weights.
        feature_info: per stage ``num_chs``, ``reduction`` and ``module`` (timm's contract).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        depths: Sequence[int] = (3, 4, 6, 3),
        sr_ratios: Sequence[SRRatio] = (8, 4, 2, 1),
        **kwargs: Any,
    ) -> None:
        super().__init__()
        preprocessing = kwargs.pop("preprocessing", None)
        cfg = HViTConfig(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            embed_dims=embed_dims, num_heads=num_heads, mlp_ratios=mlp_ratios, depths=depths,
            sr_ratios=sr_ratios, **kwargs,
        )  # fmt: skip
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.num_features = cfg.embed_dims[-1]
        self.global_pool = "token" if cfg.cls_token else "avg"
        self.preprocessing = preprocessing or Preprocessing(img_size=cfg.img_size)

        self.patch_embed = PatchEmbed(
            cfg.in_chans, cfg.embed_dims[0], cfg.patch_size, cfg.overlap_patch_embed, cfg.stem_channels
        )
        # Stochastic depth grows linearly with depth over the whole network (as in PVT and timm).
        total = sum(cfg.depths)
        rates = [cfg.drop_path_rate * k / max(1, total - 1) for k in range(total)]
        starts = [sum(cfg.depths[:i]) for i in range(cfg.num_stages)]
        grids = cfg.stage_grids()  # at the nominal size: sizes the position embeddings
        self.stages = nn.ModuleList()
        self.feature_info: list[dict[str, Any]] = []
        for i in range(cfg.num_stages):
            reduction = cfg.patch_size * cfg.downsample_stride**i
            self.stages.append(
                HierarchicalStage(
                    cfg.embed_dims[i],
                    cfg.num_heads[i],
                    cfg.mlp_ratios[i],
                    cfg.depths[i],
                    cfg.sr_ratios[i],
                    in_dim=cfg.embed_dims[i - 1] if i > 0 else None,
                    downsample_stride=cfg.downsample_stride if i > 0 else None,
                    grid=grids[i],
                    pos_embed=cfg.pos_embed,
                    cls_token=cfg.cls_token and i == cfg.num_stages - 1,
                    stage_norm=cfg.stage_norm,
                    overlap=cfg.overlap_patch_embed,
                    drop_path=rates[starts[i] : starts[i] + cfg.depths[i]],
                    norm_eps=cfg.norm_eps,
                    qkv_bias=cfg.qkv_bias,
                    linear_sra=cfg.linear_sra,
                    pool_size=cfg.pool_size,
                    mlp_dwconv=cfg.mlp_dwconv,
                    drop=cfg.drop_rate,
                    attn_drop=cfg.attn_drop_rate,
                )  # fmt: skip
            )
            self.feature_info.append(
                {"num_chs": cfg.embed_dims[i], "reduction": reduction, "module": f"stages.{i}"}
            )
        self.norm = nn.Identity() if cfg.stage_norm else nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        # A skeleton on the meta device (`state_shapes`) has no values to draw, and the meta kernels
        # of the random fills import torch._dynamo on first use: seconds of every fresh process's
        # first checkpoint load, for nothing.
        if not any(p.is_meta for p in self.parameters()):
            self.apply(self._init_weights)
            for stage in self.stages:
                if stage.pos_embed is not None:
                    nn.init.trunc_normal_(stage.pos_embed, std=0.02)
                if stage.cls_token is not None:
                    nn.init.trunc_normal_(stage.cls_token, std=0.02)

    @classmethod
    def from_config(cls, config: HViTConfig, preprocessing: Preprocessing | None = None) -> HierarchialViT:
        """Build a model from an `HViTConfig` (and optionally its preprocessing)."""
        return cls(**{**config.__dict__, "preprocessing": preprocessing})

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # timm / PVT initialisation: truncated normal for linears, He (fan-out) for convolutions.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def pos_embed(self) -> nn.Parameter | None:
        """Stage-1 position embedding (1, H1*W1, C1), or ``None`` when the model has none."""
        return self.stages[0].pos_embed

    def no_weight_decay(self) -> set[str]:
        """Parameter names that conventionally skip weight decay (position embeddings, class token)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("pos_embed", "cls_token"))}

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"expected an image batch of shape (B, {self.config.in_chans}, H, W), got {tuple(x.shape)}"
            )

    def _run_stages(self, x: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield each stage's (tokens (B, P + h*w, C), map (B, C, h, w)); the last one after the norm."""
        self._check_input(x)
        x, grid = self.patch_embed(x)  # (B, H1*W1, C1) tokens on the stage-1 grid
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            tokens, grid = stage.forward_tokens(x, grid)
            if i == last:
                tokens = self.norm(tokens)
            x = stage.to_map(tokens, grid)  # through the stage's `feature_map` hook point
            yield tokens, x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, C, H, W) images.

        Returns:
            The last stage's normalised features: a (B, C4, H4, W4) map, or, for models with a class
            token, (B, 1 + H4*W4, C4) tokens with the class token first.
        """
        *_, (tokens, fmap) = self._run_stages(x)
        return tokens if self.stages[-1].num_prefix_tokens else fmap

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the features of `forward_features` and classify.

        Args:
            x: output of `forward_features`.
            pre_logits: return the pooled (B, C4) features instead of the logits.

        Returns:
            (B, num_classes) logits, or (B, C4) pooled features.
        """
        x = x[:, 0] if x.ndim == 3 else x.mean(dim=(-2, -1))  # class token, or average over the grid
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, C, H, W). Returns: (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-stage feature maps, timm style.

        Args:
            x: (B, C, H, W) images.
            indices: stages to return (an int n means the last n stages); default all.
            intermediates_only: return only the list of maps.

        Returns:
            ``(final_features, [map_i (B, C_i, H_i, W_i), ...])`` or only the list.
        """
        n = len(self.stages)
        problem = (
            f"indices must be stages in -{n}..{n - 1} (negative ones count from the end) or a count 1..{n}"
        )
        if indices is None:
            take = list(range(n))
        elif isinstance(indices, int):
            if not 1 <= indices <= n:
                raise ValueError(f"{problem}; got the count {indices!r}")
            take = list(range(n - indices, n))
        else:
            outside = [i for i in indices if not -n <= i < n]
            if outside or not indices:
                raise ValueError(f"{problem}; got {list(indices)!r}")
            take = [i % n for i in indices]  # Python-style: -1 is the last stage
        maps = []
        for i, (tokens, fmap) in enumerate(self._run_stages(x)):  # noqa: B007 (tokens used below)
            if i in take:
                maps.append(fmap)
            if intermediates_only and i == max(take):
                return maps
        final = tokens if self.stages[-1].num_prefix_tokens else fmap
        return final, maps

    def summary(self, img_size: int | None = None) -> str:
        """A plain-words table of every stage at ``img_size`` (default: the configured size)."""
        from hvit.complexity import model_complexity

        return model_complexity(self, img_size).to_text()


HierarchicalViT = HierarchialViT  # the correctly spelled name, for those who type it


def state_shapes(config: HViTConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor in the ``state_dict`` of the model ``config`` describes.

    Computed without allocating the model: one block per stage is built on the meta device (no memory,
    no time) and stands for all ``depth`` blocks of its stage, which share its shapes. This is what lets
    a checkpoint's tensors be checked against its stored configuration before anything is allocated,
    even for a configuration with thousands of blocks.
    """
    from dataclasses import replace

    with torch.device("meta"):
        skeleton = HierarchialViT.from_config(
            replace(config, depths=(1,) * config.num_stages, drop_path_rate=0.0)
        )
    out: dict[str, tuple[int, ...]] = {}
    for name, tensor in skeleton.state_dict().items():
        parts = name.split(".")
        if parts[0] == "stages" and parts[2] == "blocks":  # stages.<i>.blocks.0.<rest>: one per block
            for j in range(config.depths[int(parts[1])]):
                out[".".join([*parts[:3], str(j), *parts[4:]])] = tuple(tensor.shape)
        else:
            out[name] = tuple(tensor.shape)
    return out
