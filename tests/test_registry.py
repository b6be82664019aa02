"""Fidelity to the papers: every PVT v1/v2 variant's parameters and MACs against REFERENCE.md."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import hvit
from hvit.layers import MultiScaleAttention
from hvit.registry import get_entry

PAPER = [n for n in hvit.list_models() if get_entry(n).paper_params is not None]


def test_registry_has_every_published_variant():
    expected = {"hvit_seed", "hvit_nano", "pvt_tiny", "pvt_small", "pvt_medium", "pvt_large", "pvt_v2_b2_li"}
    expected |= {f"pvt_v2_b{i}" for i in range(6)}
    assert expected <= set(hvit.list_models())
    assert len(PAPER) == 11


@pytest.mark.parametrize("name", PAPER)
def test_params_and_macs_match_the_paper(name):
    entry = get_entry(name)
    with torch.device("meta"):  # no memory, no initialisation time: only shapes matter here
        model = hvit.create_model(name)
    report = hvit.model_complexity(model, 224)
    params = sum(p.numel() for p in model.parameters())
    assert report.total_params == params
    assert abs(params / entry.paper_params - 1) < 0.005, (params, entry.paper_params)
    assert abs(report.gmacs / entry.paper_gmacs - 1) < 0.02, (report.gmacs, entry.paper_gmacs)


def _flop_counter_macs(model: torch.nn.Module, size: int | tuple[int, int]) -> int:
    for m in model.modules():
        if isinstance(m, MultiScaleAttention):
            m.fused_attn = False  # the explicit path: attention matmuls are visible to the counter
    h, w = (size, size) if isinstance(size, int) else size
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, model.config.in_chans, h, w, device=next(model.parameters()).device))
    return counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per multiply-accumulate


@pytest.mark.parametrize("name", hvit.list_models())
def test_analytic_macs_equal_flop_counter(name):
    with torch.device("meta"):
        model = hvit.create_model(name).eval()
    size = model.config.img_size
    analytic = hvit.model_complexity(model, size).total_macs
    counted = _flop_counter_macs(model, size)
    assert abs(analytic / counted - 1) < 0.01, (analytic, counted)


@pytest.mark.parametrize("size", [(17, 40), (1, 1), (100, 64)])
def test_analytic_macs_on_degenerate_sizes(size):
    for name in ("hvit_seed", "hvit_nano_ms", "pvt_v2_b2_li"):
        with torch.device("meta"):
            model = hvit.create_model(name).eval()
        analytic = hvit.model_complexity(model, size).total_macs
        assert abs(analytic / _flop_counter_macs(model, size) - 1) < 0.01, name


def test_summary_flags_the_seed_degeneracy_in_words():
    report = hvit.model_complexity(hvit.HViTConfig())
    s1, s2, s3, _ = report.stages
    assert s1.query_grid == (14, 14) and s1.key_grids == [(1, 1)]
    assert any("single key token" in n and "global pooling" in n for n in s1.notes)
    assert any("not divisible by SR 8" in n for n in s1.notes)
    assert s3.query_grid == (4, 4) and any("zero-padded" in n for n in s3.notes)
    assert "single key token" in report.to_text()
    # A published model at its own size has nothing to warn about.
    assert all(not s.notes for s in hvit.model_complexity(hvit.registry.model_config("pvt_v2_b0")).stages)


def test_complexity_of_a_config_does_not_allocate():
    report = hvit.model_complexity(hvit.registry.model_config("pvt_v2_b5"), 224)
    assert report.total_params == pytest.approx(81.96e6, rel=0.005)
    row = report.rows()[0]
    assert row["query_grid"] == "56x56" and row["key_grids"] == "7x7"
    assert report.stages[0].attention_bytes == 1 * 3136 * 49 * 4


@pytest.mark.parametrize(
    "name, overrides",
    [(n, {}) for n in hvit.list_models()]
    + [("hvit_seed", {"num_classes": 0, "qkv_bias": False}), ("pvt_v2_b2_li", {"img_size": 96})],
)
def test_params_counted_from_a_config_equal_the_built_modules(name, overrides):
    # model_complexity(config) counts parameters from the configuration alone (so hvit.complexity does
    # not depend on hvit.model); a built model is counted from its modules. They must agree everywhere.
    cfg = hvit.registry.model_config(name, **overrides)
    with torch.device("meta"):
        model = hvit.HierarchialViT.from_config(cfg)
    from_config, from_model = hvit.model_complexity(cfg), hvit.model_complexity(model)
    assert [s.params for s in from_config.stages] == [s.params for s in from_model.stages]
    assert from_config.head_params == from_model.head_params
    assert from_config.total_params == from_model.total_params == sum(p.numel() for p in model.parameters())
    assert from_config.rows() == from_model.rows()
