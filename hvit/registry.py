"""Named variants: the published PVT v1 and v2 models, the seed, and tiny classroom models.

`create_model(name, **overrides)` is the one way the apps, the trainer and the tests build models.
Each entry records the paper's numbers next to its settings so tests can hold us to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hvit.config import HViTConfig
from hvit.model import HierarchialViT

# PVT v1 (Wang et al., ICCV 2021): non-overlapping patches, position embeddings, class token, one norm.
_PVT_V1 = dict(
    patch_size=4, embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
    sr_ratios=(8, 4, 2, 1), qkv_bias=True, norm_eps=1e-6,
)  # fmt: skip
# PVT v2 (Wang et al., CVMJ 2022): overlapping patches, depth-wise conv MLP, no position embedding,
# average pooling, a LayerNorm closing every stage. This is also timm's `pvt_v2_*`.
_PVT_V2 = dict(
    patch_size=4, embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
    sr_ratios=(8, 4, 2, 1), qkv_bias=True, norm_eps=1e-6, overlap_patch_embed=True, pos_embed=False,
    cls_token=False, mlp_dwconv=True, stage_norm=True,
)  # fmt: skip
# Classroom models: PVT v2 blocks, small enough to train in seconds on a laptop CPU.
_TINY = dict(_PVT_V2, mlp_ratios=(4, 4, 4, 4))


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant.

    Attributes:
        name: registry name.
        kwargs: `HViTConfig` fields that differ from the seed defaults.
        description: one line for UIs.
        paper_params: parameter count the paper reports (None when it has none).
        paper_gmacs: GMACs at 224 px the paper reports.
        timm_name: timm model with the same architecture, when there is one.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    paper_params: float | None = None
    paper_gmacs: float | None = None
    timm_name: str | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def _register(entry: ModelEntry) -> None:
    _REGISTRY[entry.name] = entry


_register(
    ModelEntry(
        "hvit_seed", {}, "The seed API's defaults: patch 16, dims 64-512, SR 8/4/2/1 (PVT v1 class defaults)"
    )
)
for _name, _depths, _params, _gmacs in [
    ("pvt_tiny", (2, 2, 2, 2), 13_229_288, 1.933),
    ("pvt_small", (3, 4, 6, 3), 24_485_864, 3.816),
    ("pvt_medium", (3, 4, 18, 3), 44.2e6, 6.659),
    ("pvt_large", (3, 8, 27, 3), 61.4e6, 9.814),
]:
    _register(
        ModelEntry(
            _name, dict(_PVT_V1, depths=_depths), f"PVT v1 {_name[4:].title()} (ICCV 2021)", _params, _gmacs
        )
    )
for _name, _extra, _params, _gmacs in [
    ("pvt_v2_b0", dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)), 3.67e6, 0.566),
    ("pvt_v2_b1", dict(depths=(2, 2, 2, 2)), 14.01e6, 2.108),
    ("pvt_v2_b2", dict(depths=(3, 4, 6, 3)), 25_362_856, 4.027),
    ("pvt_v2_b2_li", dict(depths=(3, 4, 6, 3), linear_sra=True), 22.55e6, 3.889),
    ("pvt_v2_b3", dict(depths=(3, 4, 18, 3)), 45.24e6, 6.897),
    ("pvt_v2_b4", dict(depths=(3, 8, 27, 3)), 62.56e6, 10.101),
    ("pvt_v2_b5", dict(depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)), 81.96e6, 11.717),
]:
    _register(
        ModelEntry(_name, dict(_PVT_V2, **_extra), f"PVT v2 {_name[7:]} (CVMJ 2022)", _params, _gmacs, _name)
    )

_register(ModelEntry(
    "hvit_nano",
    dict(_TINY, img_size=32, patch_size=2, embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8),
         depths=(1, 1, 1, 1), sr_ratios=(4, 2, 1, 1), num_classes=10),
    "Classroom: 32 px, four stages of one block each; trains in seconds on a CPU",
))  # fmt: skip
_register(ModelEntry(
    "hvit_nano_stem",
    dict(_TINY, img_size=32, patch_size=2, embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8),
         depths=(1, 1, 1, 1), sr_ratios=(4, 2, 1, 1), stem_channels=16, num_classes=10),
    "Classroom: hvit_nano after a convolutional stem; learns ~3x faster from scratch (the shipped model)",
))  # fmt: skip
_register(ModelEntry(
    "hvit_classroom",
    dict(_TINY, img_size=96, patch_size=4, embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8),
         depths=(1, 1, 1, 1), sr_ratios=(4, 2, 1, 1), stem_channels=8, num_classes=6),
    "Classroom, legible maps: 96 px, stage-1 queries on a 24x24 grid, keys 6x6 in stages 1-3 (the shipped model)",
))  # fmt: skip
_register(ModelEntry(
    "hvit_micro",
    dict(_TINY, img_size=64, patch_size=4, embed_dims=(32, 64, 96, 128), num_heads=(1, 2, 4, 8),
         depths=(1, 1, 2, 1), sr_ratios=(4, 2, 1, 1), num_classes=10),
    "Classroom: 64 px, PVT v2 blocks, a little deeper than hvit_nano",
))  # fmt: skip
_register(ModelEntry(
    "hvit_nano_ms",
    dict(_TINY, img_size=32, patch_size=2, embed_dims=(16, 32, 64, 128), num_heads=(2, 2, 4, 8),
         depths=(1, 1, 1, 1), sr_ratios=((4, 1), (2, 1), 1, 1), num_classes=10),
    "Classroom: hvit_nano with multi-scale attention (two head groups per stage, SR 4+1 and 2+1)",
))  # fmt: skip


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered variants, optionally filtered by a substring."""
    return sorted(n for n in _REGISTRY if pattern is None or pattern in n)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_config(name: str, **overrides: Any) -> HViTConfig:
    """The validated `HViTConfig` of a variant with ``overrides`` applied."""
    return HViTConfig(**{**get_entry(name).kwargs, **overrides})


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> HierarchialViT:
    """Build a registered variant.

    Args:
        name: a name from `list_models()`.
        pretrained: load ImageNet weights through timm (needs internet and a ``timm_name``).
        **overrides: `HViTConfig` fields to change (e.g. ``num_classes=10, img_size=64``).

    Returns:
        The model, in training mode, with ``model.preprocessing`` set.
    """
    entry = get_entry(name)
    cfg = model_config(name, **overrides)
    model = HierarchialViT(**cfg.__dict__)
    model.variant = name
    if pretrained:
        from hvit.interchange import PretrainedUnavailableError, load_pretrained

        if entry.timm_name is None:
            raise PretrainedUnavailableError(
                f"no pretrained weights exist for {name!r}; pretrained weights come from timm for the "
                "pvt_v2_* variants only. Use pretrained=False, or a checkpoint trained with `python -m hvit.train`."
            )
        load_pretrained(model, entry.timm_name)
    return model
