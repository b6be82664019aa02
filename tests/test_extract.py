"""Attention extraction: right shapes and grids, rows sum to 1, and nothing leaks afterwards."""

from __future__ import annotations

import pytest
import torch

import hvit
from hvit.layers import MultiScaleAttention


@pytest.mark.parametrize("name", ["hvit_nano", "hvit_nano_ms", "hvit_seed", "pvt_v2_b2_li"])
def test_extracted_probabilities_are_rectangular_rows_summing_to_one(name):
    model = hvit.create_model(name).eval()
    size = min(model.config.img_size, 64)
    maps = hvit.extract_attention(model, torch.randn(2, 3, size, size))
    assert maps.num_stages == 4 and maps.logits.shape == (2, model.config.num_classes)
    for s, stage in enumerate(maps.records):
        assert len(stage) == model.config.depths[s]
        for layer in stage:
            assert sum(len(r.heads) for r in layer) == model.config.num_heads[s]
            for r in layer:
                h, w = r.query_grid
                kh, kw = r.key_grid
                assert r.probs.shape == (
                    2,
                    len(r.heads),
                    r.num_prefix_tokens + h * w,
                    r.num_prefix_tokens + kh * kw,
                )
                torch.testing.assert_close(r.probs.sum(-1), torch.ones(r.probs.shape[:-1]))
                assert (r.probs >= 0).all()


def test_key_grid_is_reduced_by_sr_ratio():
    model = hvit.create_model("pvt_v2_b0").eval()
    maps = hvit.extract_attention(model, torch.randn(1, 3, 224, 224))
    assert [maps.layer(s, 0)[0].query_grid for s in range(4)] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert [maps.layer(s, 0)[0].key_grid for s in range(4)] == [(7, 7)] * 4
    assert maps.probs(0, 0).shape == (1, 1, 3136, 49)


def test_multiscale_probs_requires_layer_access():
    maps = hvit.extract_attention(hvit.create_model("hvit_nano_ms"), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multi-scale"):
        maps.probs(0, 0)
    assert [g.key_grid for g in maps.layer(0, 0)] == [(4, 4), (16, 16)]


def test_extraction_leaves_no_trace():
    model = hvit.create_model("hvit_nano_ms", drop_rate=0.1)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.train()
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    maps = hvit.extract_attention(model, x)
    assert model.training  # mode restored
    assert all(
        m.recorder is None and m.fused_attn for m in model.modules() if isinstance(m, MultiScaleAttention)
    )
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
    model.eval()
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(before, after, atol=0, rtol=0)
    torch.testing.assert_close(maps.logits, before, atol=1e-5, rtol=0)


def test_extraction_cleans_up_after_an_error():
    model = hvit.create_model("hvit_nano")
    with pytest.raises(ValueError):
        hvit.extract_attention(model, torch.randn(1, 1, 32, 32))  # wrong channels
    assert all(m.recorder is None for m in model.modules() if isinstance(m, MultiScaleAttention))
