"""Analytic cost of a pyramid transformer: tokens, keys, parameters, MACs and attention memory.

Why analytic: FLOP counters miss the attention matmuls when they run inside the fused
``scaled_dot_product_attention`` kernel (fvcore, thop and ptflops never count them; PyTorch's
``FlopCounterMode`` drops them on CPU). Counting per module from the shapes is exact, explains *where*
the cost goes, and is checked in the tests against ``FlopCounterMode`` on the explicit attention path.

MACs are multiply-accumulates, the unit the PVT papers call "FLOPs": convolutions, linear layers and
the two attention matmuls (q k^T and attn v). Norms, activations, softmax and pooling are not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hvit.config import HViTConfig
from hvit.model import HierarchialViT, token_grid

BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(n: float) -> str:
    """A byte count in the largest binary unit that keeps it at least 1: ``16 GiB``, ``1.5 MiB``.

    One decimal below 100, none above, so a table of sizes reads at a glance (``format_bytes(2**34)``
    is ``"16.0 GiB"``, not ``"16,777,216.0 KiB"``).

    Args:
        n: a number of bytes (not negative).

    Returns:
        The size with its unit.
    """
    if n < 0:
        raise ValueError(f"a byte count cannot be negative, got {n}")
    size, unit = float(n), 0
    while size >= 1024 and unit < len(BYTE_UNITS) - 1:
        size, unit = size / 1024, unit + 1
    if unit == 0:
        return f"{int(size)} B"
    return f"{size:.1f} {BYTE_UNITS[unit]}" if size < 100 else f"{size:.0f} {BYTE_UNITS[unit]}"


def format_count(n: float) -> str:
    """A count in a few characters, for a metric tile: ``262 k``, ``19.8 M``, ``1.2 G``, ``950``."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.1f} {unit}" if abs(v) < 100 else f"{v:.0f} {unit}"
    return f"{n:.0f}"


@dataclass
class StageComplexity:
    """Cost of one stage for one image.

    Attributes:
        stage: 1-based stage number.
        query_grid: (H, W) token grid of the stage: the queries.
        key_grids: (h, w) reduced key grid of each head group.
        tokens: H*W grid tokens (plus class tokens in ``prefix_tokens``).
        prefix_tokens: class tokens of the stage (0 or 1).
        keys: key tokens of each head group (reduced grid plus class tokens).
        params: parameters of the stage (stage 1 includes the model's patch embedding).
        macs: multiply-accumulates of the stage for one image, attention matmuls included.
        attention_macs: the part of ``macs`` spent in q k^T and attn v.
        attention_bytes: fp32 bytes of one block's attention probabilities for one image.
        notes: plain-words warnings about degenerate or wasteful settings.
    """

    stage: int
    query_grid: tuple[int, int]
    key_grids: list[tuple[int, int]]
    tokens: int
    prefix_tokens: int
    keys: list[int]
    params: int
    macs: int
    attention_macs: int
    attention_bytes: int
    notes: list[str] = field(default_factory=list)


@dataclass
class ComplexityReport:
    """Per-stage table plus totals, as returned by `model_complexity`.

    Attributes:
        img_size: (H, W) of the image analysed.
        stages: one `StageComplexity` per stage.
        head_params: parameters of the final norm and classifier.
        head_macs: MACs of the classifier.
        total_params: all parameters of the model.
        total_macs: all MACs for one image.
        notes: model-level warnings (e.g. resized position embeddings).
    """

    img_size: tuple[int, int]
    stages: list[StageComplexity]
    head_params: int
    head_macs: int
    total_params: int
    total_macs: int
    notes: list[str] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.total_macs / 1e9

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per stage, ready for a table widget."""
        out = []
        for s in self.stages:
            d = asdict(s)
            d["query_grid"] = "x".join(map(str, s.query_grid)) + (
                f" + {s.prefix_tokens} cls" if s.prefix_tokens else ""
            )
            d["key_grids"] = ", ".join("x".join(map(str, g)) for g in s.key_grids)
            d["keys"] = ", ".join(map(str, s.keys))
            d["notes"] = " ".join(s.notes)
            out.append(d)
        return out

    def to_text(self) -> str:
        """A fixed-width table with one line per stage, totals, and every warning in words."""
        lines = [
            f"image {self.img_size[0]}x{self.img_size[1]}",
            f"{'stage':>5} {'query grid':>12} {'key grid':>14} {'params':>12} {'MMACs':>10} {'attn MiB':>9}",
        ]
        for s in self.stages:
            q = "x".join(map(str, s.query_grid)) + ("+cls" if s.prefix_tokens else "")
            k = ",".join("x".join(map(str, g)) for g in s.key_grids)
            lines.append(
                f"{s.stage:>5} {q:>12} {k:>14} {s.params:>12,} {s.macs / 1e6:>10.1f} {s.attention_bytes / 2**20:>9.3f}"
            )
        lines.append(f"{'head':>5} {'':>12} {'':>14} {self.head_params:>12,} {self.head_macs / 1e6:>10.1f}")
        lines.append(f"total: {self.total_params:,} parameters, {self.gmacs:.3f} GMACs")
        notes = self.notes + [f"stage {s.stage}: {n}" for s in self.stages for n in s.notes]
        lines += ["", *notes] if notes else []
        return "\n".join(lines)


def _num_params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def model_complexity(
    model: HierarchialViT | HViTConfig, img_size: int | tuple[int, int] | None = None
) -> ComplexityReport:
    """Analyse a model (or a config, built on the meta device: no memory, no time) at ``img_size``.

    Args:
        model: an `HierarchialViT` or an `HViTConfig`.
        img_size: side (or (H, W)) of the input image; default: the configured ``img_size``.

    Returns:
        A `ComplexityReport` with per-stage tokens, key grids, parameters, MACs (attention matmuls
        included), attention memory and plain-words warnings, plus totals.
    """
    if isinstance(model, HViTConfig):
        with torch.device("meta"):
            model = HierarchialViT.from_config(model)
    cfg = model.config
    size = img_size if img_size is not None else cfg.img_size
    h_img, w_img = (size, size) if isinstance(size, int) else tuple(size)
    if min(h_img, w_img) < 1:
        raise ValueError(f"img_size must be positive, got {size!r}")

    report_notes: list[str] = []
    stages: list[StageComplexity] = []
    h_in, w_in, c_in = h_img, w_img, cfg.in_chans
    for i, stage in enumerate(model.stages):
        notes: list[str] = []
        c = cfg.embed_dims[i]
        stride = cfg.patch_size if i == 0 else cfg.downsample_stride
        what = "image" if i == 0 else "token grid"
        if not cfg.overlap_patch_embed and (h_in % stride or w_in % stride):
            notes.append(
                f"the {h_in}x{w_in} {what} is not divisible by the patch stride {stride}; it is zero-padded "
                f"to {token_grid(h_in, stride) * stride}x{token_grid(w_in, stride) * stride} so no pixel is lost."
            )
        h, w = token_grid(h_in, stride), token_grid(w_in, stride)
        kernel = 2 * stride - 1 if cfg.overlap_patch_embed else stride
        embed_macs = 0
        if i == 0 and cfg.stem_channels:
            # The stem's 3x3 convolution runs at full image resolution, before the patch stride.
            embed_macs += h_in * w_in * 9 * c_in * cfg.stem_channels
            c_in = cfg.stem_channels
        embed_macs += h * w * kernel * kernel * c_in * c
        n, p = h * w, stage.num_prefix_tokens
        if (h, w) == (1, 1):
            notes.append(
                "the token grid is 1x1: the stage sees a single token, so attention has nothing to mix."
            )
        if stage.pos_embed is not None and tuple(stage.grid) != (h, w):
            notes.append(
                f"position embedding learned for {stage.grid[0]}x{stage.grid[1]} is resized to {h}x{w}."
            )

        groups = cfg.stage_sr_groups(i)
        cg = c // len(groups)
        hidden = int(c * cfg.mlp_ratios[i])
        key_grids, keys = [], []
        block_macs = (n + p) * c * c * 2  # q projection and output projection
        attn_macs = attn_bytes = 0
        for r in groups:
            if cfg.linear_sra:
                kg = (cfg.pool_size, cfg.pool_size)
                block_macs += kg[0] * kg[1] * c * c  # 1x1 conv after the pool
                if n < kg[0] * kg[1]:
                    notes.append(
                        f"linear SRA pools {h}x{w} tokens up to {kg[0]}x{kg[1]} keys: more keys than queries, "
                        "so the pool repeats tokens instead of summarising them."
                    )
            elif r > 1:
                kg = (max(1, h // r), max(1, w // r))
                block_macs += kg[0] * kg[1] * r * r * c * c  # strided r x r reduction conv
                if h < r or w < r:
                    notes.append(
                        f"SR {r} is larger than the {h}x{w} token grid; the grid is zero-padded to keep one key."
                    )
                elif h % r or w % r:
                    notes.append(
                        f"the {h}x{w} grid is not divisible by SR {r}: keys ignore the last {h % r} row(s) and "
                        f"{w % r} column(s) of tokens."
                    )
            else:
                kg = (h, w)
            m = kg[0] * kg[1] + p
            if kg == (1, 1) and not cfg.linear_sra:
                notes.append(
                    f"SR {r} leaves a single key token: every query gets the same softmax (all weight on that "
                    "key), so attention collapses into global pooling and the maps show nothing spatial."
                )
            key_grids.append(kg)
            keys.append(m)
            block_macs += m * c * 2 * cg  # this group's keys and values
            attn_macs += 2 * (n + p) * m * cg  # q k^T and attn v for this group's heads
            attn_bytes += (cfg.num_heads[i] // len(groups)) * (n + p) * m * 4
        block_macs += 2 * (n + p) * c * hidden + (n * hidden * 9 if cfg.mlp_dwconv else 0)
        depth = cfg.depths[i]
        stages.append(
            StageComplexity(
                stage=i + 1,
                query_grid=(h, w),
                key_grids=key_grids,
                tokens=n,
                prefix_tokens=p,
                keys=keys,
                params=_num_params(stage) + (_num_params(model.patch_embed) if i == 0 else 0),
                macs=embed_macs + depth * (block_macs + attn_macs),
                attention_macs=depth * attn_macs,
                attention_bytes=attn_bytes,
                notes=list(dict.fromkeys(notes)),
            )  # fmt: skip
        )
        h_in, w_in, c_in = h, w, c

    head_macs = cfg.embed_dims[-1] * cfg.num_classes
    head_params = _num_params(model.norm) + _num_params(model.head)
    total_params = _num_params(model)
    return ComplexityReport(
        img_size=(h_img, w_img), stages=stages, head_params=head_params, head_macs=head_macs,
        total_params=total_params, total_macs=sum(s.macs for s in stages) + head_macs, notes=report_notes,
    )  # fmt: skip
