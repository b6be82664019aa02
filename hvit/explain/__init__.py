"""Explainability: attention extraction, attention views, Captum attributions and their checks.

- `extract_attention` / `record_attention`: the raw probabilities of every layer (`extract`).
- `attention_views`: one query's attention, the attention each key receives, key footprints (`views`).
- `head_statistics`: mean attention distance and entropy per head (`head_stats`).
- `attention_rollout`: rollout carried through the stages of the pyramid (`rollout`).
- `attribute` / `compute_attribution`: Captum's methods as (H, W) maps; `default_cam_stage`: the stage
  Grad-CAM explains by default (`attribution`).
- `head_ablation` / `ablate_heads`: switch heads off, watch the prediction (`ablation`).
- `pointing_game`, `mask_mass`, `deletion_insertion`, `spearman`, `randomized_copy` (`faithfulness`)
  and `evaluate_explanations` (`evaluate`, also ``python -m hvit.explain.evaluate``).
- `visualize_attention`: the seed's one-call PNG (`visualize`); Plotly builders in `figures`.

Submodules are imported on first use, so importing this package does not import Captum, Plotly or
matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from hvit.explain.extract import AttentionMaps, extract_attention, record_attention

_LAZY: dict[str, str] = {
    "prepare_images": "hvit.explain._inputs",
    "AttentionViews": "hvit.explain.views",
    "attention_views": "hvit.explain.views",
    "HeadStat": "hvit.explain.head_stats",
    "head_statistics": "hvit.explain.head_stats",
    "AttentionRollout": "hvit.explain.rollout",
    "attention_rollout": "hvit.explain.rollout",
    "METHODS": "hvit.explain.attribution",
    "Attribution": "hvit.explain.attribution",
    "AttributionSettings": "hvit.explain.attribution",
    "attribute": "hvit.explain.attribution",
    "compute_attribution": "hvit.explain.attribution",
    "default_cam_stage": "hvit.explain.attribution",
    "HeadAblation": "hvit.explain.ablation",
    "ablate_heads": "hvit.explain.ablation",
    "head_ablation": "hvit.explain.ablation",
    "head_ablation_scan": "hvit.explain.ablation",
    "PerturbationCurves": "hvit.explain.faithfulness",
    "deletion_insertion": "hvit.explain.faithfulness",
    "mask_mass": "hvit.explain.faithfulness",
    "pointing_game": "hvit.explain.faithfulness",
    "randomized_copy": "hvit.explain.faithfulness",
    "spearman": "hvit.explain.faithfulness",
    "EvaluationReport": "hvit.explain.evaluate",
    "evaluate_explanations": "hvit.explain.evaluate",
    "visualize_attention": "hvit.explain.visualize",
}

__all__ = ["AttentionMaps", "extract_attention", "record_attention", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hvit.explain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
