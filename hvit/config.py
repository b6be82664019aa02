"""The one place a model's shape is described and checked.

`HViTConfig` holds every constructor argument of `HierarchialViT`. The seed's arguments keep their
names and defaults; the extra switches select the PVT v1 or PVT v2 building blocks. `validate()` is
the single gatekeeper: every invalid combination raises a ``ValueError`` that names the field, the
value, and what would be valid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any


def token_grid(size: int, stride: int) -> int:
    """Side of the token grid a patch embedding with ``stride`` makes from ``size`` pixels or tokens."""
    return -(-size // stride)  # ceil: both PVT v1 (padded) and v2 (overlapping) embeddings give this


# An SR ratio is an int (PVT: every head attends over one reduced grid) or a tuple of ints (several
# head groups, each over its own grid: attention at several scales at once, as in Shunted Transformer).
SRRatio = int | tuple[int, ...]

# Upper bounds of the structural settings. They are far above any model that trains on one machine
# (the memory budget of `hvit.complexity` refuses large ones long before); they exist so that a typo or
# a hostile file (an SR ratio of 10**30, a million-block stage) gets a message instead of an integer
# overflow inside a C++ kernel or hours spent building modules.
MAX_SIDE = 8192  # pixels: img_size, patch_size, pool_size, downsample_stride, SR ratios
MAX_WIDTH = 65536  # channels: embed_dims, in_chans, stem_channels
MAX_HEADS = 1024
MAX_DEPTH = 1024  # blocks per stage
MAX_STAGES = 16
MAX_CLASSES = 1_000_000
MAX_MLP_RATIO = 64.0
BOOL_FIELDS = (
    "qkv_bias",
    "overlap_patch_embed",
    "pos_embed",
    "cls_token",
    "mlp_dwconv",
    "linear_sra",
    "stage_norm",
)


@dataclass(frozen=True)
class ConfigProblem:
    """One invalid setting: the ``field`` (e.g. ``"num_heads[2]"``) and a plain-words ``message``."""

    field: str
    message: str


@dataclass
class HViTConfig:
    """Configuration of a hierarchical (pyramid) vision transformer.

    Args:
        img_size: image side the position embeddings are sized for; other sizes still run.
        patch_size: stride of the stage-1 patch embedding (16 in the seed, 4 in PVT).
        in_chans: channels of the input image.
        num_classes: classifier outputs; 0 means no head (features only).
        embed_dims: token width of each stage.
        num_heads: attention heads of each stage.
        mlp_ratios: hidden width of each stage's MLP, as a multiple of its token width.
        depths: transformer blocks in each stage.
        sr_ratios: spatial-reduction ratio of each stage: keys and values come from a grid this many
            times coarser. A tuple splits the stage's heads into groups, one ratio each.
        qkv_bias: learn a bias in the query/key/value projection.
        drop_rate: dropout after the MLP and attention projections and before the head.
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth, rising linearly to this value over all blocks.
        overlap_patch_embed: PVT v2's overlapping patch embedding (kernel 2*stride-1) instead of
            PVT v1's non-overlapping one (kernel = stride).
        stem_channels: width of a convolutional stem (3x3 conv, GroupNorm, ReLU at full resolution) before
            the stage-1 patch embedding; 0 (the default, as in PVT) for none.
        pos_embed: learn a position embedding per stage (PVT v1); PVT v2 relies on its convolutions.
        cls_token: prepend a class token in the last stage and classify from it (PVT v1);
            otherwise classify from the average of the last feature map.
        mlp_dwconv: 3x3 depth-wise convolution inside every MLP (PVT v2).
        linear_sra: "linear" SRA of PVT v2-li: keys pooled to a fixed ``pool_size`` grid.
        pool_size: key grid side used by linear SRA.
        downsample_stride: stride of the patch embedding between stages.
        stage_norm: LayerNorm at the end of every stage (PVT v2) instead of one final norm (PVT v1).
        norm_eps: epsilon of the block LayerNorms.
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dims: tuple[int, ...] = (64, 128, 256, 512)
    num_heads: tuple[int, ...] = (1, 2, 4, 8)
    mlp_ratios: tuple[float, ...] = (4, 4, 4, 4)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    sr_ratios: tuple[SRRatio, ...] = (8, 4, 2, 1)
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    overlap_patch_embed: bool = False
    stem_channels: int = 0
    pos_embed: bool = True
    cls_token: bool = True
    mlp_dwconv: bool = False
    linear_sra: bool = False
    pool_size: int = 7
    downsample_stride: int = 2
    stage_norm: bool = False
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        self._normalise()
        self.validate()

    def _normalise(self) -> None:
        # Accept lists (the seed documents List[int]) but store tuples, so configs compare and hash.
        for name in ("embed_dims", "num_heads", "mlp_ratios", "depths"):
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                setattr(self, name, tuple(value))
        if isinstance(self.sr_ratios, Sequence) and not isinstance(self.sr_ratios, str):
            self.sr_ratios = tuple(
                tuple(r) if isinstance(r, Sequence) and not isinstance(r, str) else r for r in self.sr_ratios
            )

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def stage_grids(self, img_size: int | tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Token grid (h, w) of every stage for an image of ``img_size`` (default: the configured size).

        Stage 1's patch embedding divides the image by ``patch_size``, each later one the previous grid
        by ``downsample_stride``, rounding up (a partial patch still makes a token).
        """
        size = self.img_size if img_size is None else img_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        grids = []
        for i in range(self.num_stages):
            stride = self.patch_size if i == 0 else self.downsample_stride
            h, w = token_grid(h, stride), token_grid(w, stride)
            grids.append((h, w))
        return grids

    def stage_sr_groups(self, stage: int) -> tuple[int, ...]:
        """SR ratio of each head group of ``stage`` (one group for an int ratio)."""
        r = self.sr_ratios[stage]
        return (r,) if isinstance(r, int) else tuple(r)

    def validate(self) -> None:
        """Raise ``ValueError`` naming every invalid field, its value and what would be valid."""
        found = self.problems()
        if found:
            raise ValueError("; ".join(p.message for p in found))

    def problems(self) -> list[ConfigProblem]:
        """Every invalid setting, in plain words, each tied to the field that causes it.

        This is what `validate` raises and what the architecture explorer shows next to its controls.
        """
        out: list[ConfigProblem] = []

        def positive_int(name: str, v: Any, minimum: int = 1, maximum: int | None = None) -> bool:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum and v > maximum):
                valid = f"an int >= {minimum}" if maximum is None else f"an int from {minimum} to {maximum:,}"
                out.append(ConfigProblem(name, f"{name} must be {valid}, got {_short(v)}"))
                return False
            return True

        for name in ("img_size", "patch_size", "pool_size", "downsample_stride"):
            positive_int(name, getattr(self, name), maximum=MAX_SIDE)
        positive_int("in_chans", self.in_chans, maximum=MAX_WIDTH)
        positive_int("num_classes", self.num_classes, minimum=0, maximum=MAX_CLASSES)
        positive_int("stem_channels", self.stem_channels, minimum=0, maximum=MAX_WIDTH)
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                out.append(
                    ConfigProblem(name, f"{name} must be true or false, got {_short(getattr(self, name))}")
                )

        per_stage = ("embed_dims", "num_heads", "mlp_ratios", "depths", "sr_ratios")
        for name in per_stage:
            v = getattr(self, name)
            if not isinstance(v, tuple) or len(v) == 0:
                out.append(
                    ConfigProblem(
                        name, f"{name} must be a non-empty list with one value per stage, got {_short(v)}"
                    )
                )
            elif len(v) > MAX_STAGES:
                out.append(
                    ConfigProblem(name, f"{name} has {len(v)} stages; at most {MAX_STAGES} are supported")
                )
        if out and any(p.field in per_stage for p in out):
            return out
        lengths = {name: len(getattr(self, name)) for name in per_stage}
        if len(set(lengths.values())) != 1:
            out.append(ConfigProblem(
                "depths",
                "embed_dims, num_heads, mlp_ratios, depths and sr_ratios need one value per stage, "
                f"but their lengths differ: {lengths}",
            ))  # fmt: skip
            return out
        for i in range(self.num_stages):
            dim_ok = positive_int(f"embed_dims[{i}]", self.embed_dims[i], maximum=MAX_WIDTH)
            heads_ok = positive_int(f"num_heads[{i}]", self.num_heads[i], maximum=MAX_HEADS)
            positive_int(f"depths[{i}]", self.depths[i], maximum=MAX_DEPTH)
            m = self.mlp_ratios[i]
            if not _number(m) or not 0 < m <= MAX_MLP_RATIO:
                out.append(ConfigProblem(
                    f"mlp_ratios[{i}]",
                    f"mlp_ratios[{i}] must be a number above 0 and at most {MAX_MLP_RATIO:g}, got {_short(m)}",
                ))  # fmt: skip
            if dim_ok and heads_ok and self.embed_dims[i] % self.num_heads[i]:
                out.append(ConfigProblem(
                    f"num_heads[{i}]",
                    f"embed_dims[{i}]={self.embed_dims[i]} is not divisible by num_heads[{i}]="
                    f"{self.num_heads[i]}: every head needs the same width; choose a width that is a "
                    f"multiple of {self.num_heads[i]} or a head count that divides {self.embed_dims[i]}",
                ))  # fmt: skip
            groups = self.sr_ratios[i]
            groups = (groups,) if not isinstance(groups, tuple) else groups
            if len(groups) == 0 or any(
                isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= MAX_SIDE for r in groups
            ):
                out.append(ConfigProblem(
                    f"sr_ratios[{i}]",
                    f"sr_ratios[{i}] must be an int from 1 to {MAX_SIDE:,} or a list of them, "
                    f"got {_short(self.sr_ratios[i])}",
                ))  # fmt: skip
            elif heads_ok and self.num_heads[i] % len(groups):
                out.append(ConfigProblem(
                    f"sr_ratios[{i}]",
                    f"sr_ratios[{i}]={self.sr_ratios[i]!r} makes {len(groups)} head groups, but "
                    f"num_heads[{i}]={self.num_heads[i]} heads cannot be split evenly between them",
                ))  # fmt: skip
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            v = getattr(self, name)
            if not _number(v) or not 0.0 <= v < 1.0:
                out.append(ConfigProblem(name, f"{name} must be a probability in [0, 1), got {_short(v)}"))
        if not _number(self.norm_eps) or not 0 < self.norm_eps < 1:
            out.append(ConfigProblem(
                "norm_eps", f"norm_eps must be a number above 0 and below 1, got {_short(self.norm_eps)}"
            ))  # fmt: skip
        if self.overlap_patch_embed and isinstance(self.patch_size, int) and self.patch_size < 2:
            out.append(ConfigProblem(
                "patch_size", "overlap_patch_embed needs patch_size >= 2 (its kernel is 2*patch_size-1)"
            ))  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists), as stored in checkpoints."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HViTConfig:
        """Inverse of :meth:`to_dict`. Unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}; valid fields are {sorted(known)}")
        return cls(**d)


def _number(v: Any) -> bool:
    """A finite int or float (not a bool, not NaN or infinity)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _short(v: Any, limit: int = 60) -> str:
    """``repr(v)``, cut to ``limit`` characters: a hostile value must not flood a message."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_config(**fields_: Any) -> list[ConfigProblem]:
    """Every problem of a would-be config, without raising: for UIs that explain instead of crash.

    Args:
        **fields_: `HViTConfig` fields; missing ones take their defaults.

    Returns:
        The problems, empty when ``HViTConfig(**fields_)`` would succeed.
    """
    known = {f.name for f in fields(HViTConfig)}
    unknown = sorted(set(fields_) - known)
    if unknown:
        return [
            ConfigProblem(name, f"{name} is not a config field; valid fields are {sorted(known)}")
            for name in unknown
        ]
    cfg = object.__new__(HViTConfig)
    for f in fields(HViTConfig):
        setattr(cfg, f.name, fields_.get(f.name, f.default))
    try:
        cfg._normalise()
    except TypeError as err:
        return [ConfigProblem("config", str(err))]
    return cfg.problems()
