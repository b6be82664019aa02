"""hvit: learn, teach and inspect hierarchical vision transformers.

The public API is re-exported here. Submodules are imported on first use, so ``import hvit`` stays
fast and the apps only pay for Captum, timm or Plotly when they use them.

    import hvit
    model = hvit.create_model("pvt_v2_b0")          # a published variant
    maps = hvit.extract_attention(model, images)     # attention probabilities per stage and block
    print(hvit.model_complexity(model).to_text())    # tokens, keys, params and MACs per stage
"""

from __future__ import annotations

from hvit._lazy import lazy_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # model core
    "HViTConfig": "hvit.config",
    "ConfigProblem": "hvit.config",
    "check_config": "hvit.config",
    "Preprocessing": "hvit.preprocessing",
    "HierarchialViT": "hvit.model",
    "HierarchicalViT": "hvit.model",
    "HierarchicalStage": "hvit.model",
    "MultiScaleAttention": "hvit.layers.attention",
    "AttentionRecord": "hvit.layers.attention",
    "create_model": "hvit.registry",
    "list_models": "hvit.registry",
    "model_complexity": "hvit.complexity",
    "ComplexityReport": "hvit.complexity",
    "load_timm_state_dict": "hvit.interchange",
    "convert_timm_state_dict": "hvit.interchange",
    "PretrainedUnavailableError": "hvit.interchange",
    "extract_attention": "hvit.explain.extract",
    "AttentionMaps": "hvit.explain.extract",
    # data, training, metrics
    "HViTDataset": "hvit.data",
    "ShapesDataset": "hvit.data",
    "make_shapes": "hvit.data",
    "write_shapes": "hvit.data",
    "build_transforms": "hvit.data",
    "load_dataset": "hvit.data",
    "calculate_metrics": "hvit.metrics",
    "confusion_matrix": "hvit.metrics",
    "HViTTrainer": "hvit.train",
    "TrainConfig": "hvit.train",
    "save_checkpoint": "hvit.train",
    "load_checkpoint": "hvit.train",
    # explainability
    "visualize_attention": "hvit.explain",
    "attribute": "hvit.explain",
    "attention_rollout": "hvit.explain",
    "head_ablation": "hvit.explain",
    "ablate_heads": "hvit.explain",
    "attention_views": "hvit.explain",
    "head_statistics": "hvit.explain",
    "compute_attribution": "hvit.explain",
    "AttributionSettings": "hvit.explain",
    "evaluate_explanations": "hvit.explain",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_module("hvit", _EXPORTS, globals())
