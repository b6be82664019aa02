"""`visualize_attention`: the seed's one-call picture of a model's attention, as a PNG file.

Row 1: the input, each stage's attention (mean over heads) laid over it, and the attention rollout
through all stages. Then one row per stage: every head on its own, titled with its key grid and its
mean attention distance. Drawn on a bare ``matplotlib.figure.Figure`` (rendered by the Agg backend),
not through ``pyplot``: no display is needed, and nothing global is touched, so the apps' worker threads
can call it at the same time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from hvit.explain._inputs import ImageLike
from hvit.explain.head_stats import head_statistics_from_maps
from hvit.explain.rollout import rollout_all_stages
from hvit.explain.views import attention_views


def _overlay(ax: Axes, image, heat: torch.Tensor, title: str, vmax: float | None = None) -> None:
    ax.imshow(image)
    ax.imshow(heat.numpy(), cmap="inferno", alpha=0.6, vmin=0.0, vmax=vmax)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def visualize_attention(
    model: nn.Module,
    image: ImageLike,
    save_path: str | Path,
    block: int = -1,
    kind: str = "received",
    pixel: tuple[int, int] | None = None,
    dpi: int = 120,
) -> Path:
    """Write one PNG with the input, per-stage attention overlays and a per-head grid for each stage.

    Args:
        model: an hvit model (its mode is restored afterwards).
        image: a PIL image, a path, or a tensor ((C, H, W) or (1, C, H, W); uint8 pixels or a
            preprocessed float image). Only the first image of a batch is drawn.
        save_path: where to write the PNG (folders are created).
        block: which block of each stage to show (default the last).
        kind: "received" (the attention each key receives, averaged over queries) or "query" (the
            attention of the query at ``pixel``, default the image centre).
        pixel: (y, x) query location for ``kind="query"``.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    views = attention_views(model, image)
    n_stages = views.num_stages
    heads = [views.num_heads(s) for s in range(n_stages)]
    cols = max(n_stages + 2, max(heads))
    rows = 1 + n_stages
    img = views.images[0]
    fig = Figure(figsize=(1.9 * cols, 2.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    axes[0, 0].imshow(img)
    names = views.class_names
    pred = int(views.maps.logits[0].argmax())
    axes[0, 0].set_title(f"input · predicted {names[pred] if pred < len(names) else pred}", fontsize=8)
    what = "received" if kind == "received" else "of the query"
    for s, heat in enumerate(views.stage_maps(block, kind, pixel)):
        _overlay(axes[0, 1 + s], img, heat, f"stage {s + 1}: attention {what}\n(mean of {heads[s]} heads)")
    rollout = rollout_all_stages(views.maps, views.strides, model.config.downsample_stride, views.image_size)
    roll_img = rollout.to_image(-1)[0]
    _overlay(axes[0, 1 + n_stages], img, roll_img, "attention rollout\n(all stages)")

    stats = head_statistics_from_maps(views.maps, views.strides)
    for s in range(n_stages):
        maps = views.head_maps(s, block, kind, pixel)
        vmax = float(maps.max())  # one scale per stage: a quiet head looks quiet
        b = block % views.num_blocks(s)
        for h in range(heads[s]):
            record, _ = views.head_group(s, block, h)
            dist = next(st.mean_distance for st in stats if (st.stage, st.block, st.head) == (s, b, h))
            title = f"S{s + 1} head {h + 1}\nkeys {record.key_grid[0]}x{record.key_grid[1]} · {dist:.0f} px"
            _overlay(axes[1 + s, h], img, maps[h], title, vmax)
    fig.tight_layout()
    path = Path(save_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")  # a bare Figure renders with Agg
    return path
