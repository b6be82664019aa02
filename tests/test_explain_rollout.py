"""Attention rollout through a pyramid: rows are distributions, and one stage with SR 1 is plain rollout."""

from __future__ import annotations

import pytest
import torch

import hvit
from hvit.explain.extract import AttentionMaps
from hvit.explain.rollout import (
    _push_through_layer,
    attention_rollout,
    layer_attention_on_tokens,
    rollout_from_maps,
)
from hvit.layers.attention import AttentionRecord

from helpers import small

CASES = [("hvit_nano", 32), ("hvit_nano_ms", 32), ("hvit_seed", 64), ("pvt_v2_b2_li", 64)]


@pytest.mark.parametrize(("name", "size"), CASES)
@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_full_rollout_rows_sum_to_one(name, size, fusion):
    torch.manual_seed(0)
    model = small(name)
    maps = hvit.extract_attention(model, torch.randn(2, 3, size, size))
    full, dropped = rollout_from_maps(maps, model.config.downsample_stride, head_fusion=fusion)
    last = maps.records[-1][0][0]
    n_first = maps.records[0][0][0].query_grid[0] * maps.records[0][0][0].query_grid[1]
    assert full.shape == (2, last.num_prefix_tokens + last.query_grid[0] * last.query_grid[1], n_first)
    assert (full >= 0).all()
    torch.testing.assert_close(full.sum(-1), torch.ones(full.shape[:2]))
    assert ((dropped > 0) & (dropped < 1)).all() if last.num_prefix_tokens else (dropped == 0).all()


def test_single_stage_with_sr1_is_ordinary_rollout():
    torch.manual_seed(0)
    model = hvit.HierarchialViT(
        img_size=16,
        patch_size=2,
        num_classes=3,
        embed_dims=[16],
        num_heads=[2],
        mlp_ratios=[2],
        depths=[3],
        sr_ratios=[1],
        cls_token=False,
    )
    maps = hvit.extract_attention(model, torch.randn(2, 3, 16, 16))
    ours, _ = rollout_from_maps(maps, downsample_stride=2)
    # Abnar & Zuidema: R = L_3 @ L_2 @ L_1 with L_l = rownorm(0.5 * mean_h A_l + 0.5 I).
    n = 64
    expected = torch.eye(n).expand(2, n, n).double()
    for layer in reversed(maps.records[0]):
        a = 0.5 * layer[0].probs.mean(1).double() + 0.5 * torch.eye(n)
        expected = expected @ (a / a.sum(-1, keepdim=True))
    torch.testing.assert_close(ours.double(), expected, atol=1e-6, rtol=1e-5)


def test_factorised_mean_push_equals_the_dense_matrix():
    torch.manual_seed(0)
    maps = hvit.extract_attention(hvit.create_model("hvit_nano_ms"), torch.randn(2, 3, 32, 32))
    layer = maps.layer(0, 0)  # two head groups: 4x4 and 16x16 keys
    v = torch.softmax(torch.randn(2, 5, 256), -1).double()
    dense = 0.5 * layer_attention_on_tokens(layer).double() + 0.5 * torch.eye(256)
    torch.testing.assert_close(_push_through_layer(v, layer, "mean", 0.5), v @ dense)


def test_a_reduced_key_is_spread_evenly_over_the_tokens_it_summarises():
    # Every query attends only to key (0, 1) of a 2x2 key grid over a 4x4 token grid (SR 2).
    probs = torch.zeros(1, 1, 16, 4)
    probs[..., 1] = 1.0
    rec = AttentionRecord(probs, (4, 4), (2, 2), 0, (0,), 2)
    lifted = layer_attention_on_tokens([rec])[0, 0].reshape(4, 4)
    expected = torch.zeros(4, 4)
    expected[0:2, 2:4] = 0.25
    torch.testing.assert_close(lifted, expected)
    maps = AttentionMaps([[[rec]]], torch.zeros(1, 2))
    full, _ = rollout_from_maps(maps, 2, residual_weight=0.0)
    torch.testing.assert_close(full[0, 5].reshape(4, 4), expected)


def test_rollout_maps_are_distributions_and_pixel_queries_work():
    torch.manual_seed(0)
    model = small("hvit_seed")
    roll = attention_rollout(model, torch.randn(1, 3, 64, 64))
    assert len(roll.maps) == 4 and roll.grid == (4, 4) and roll.stride == 16
    for m in roll.maps:
        torch.testing.assert_close(m.sum((1, 2)), torch.ones(1))
    assert 0 < float(roll.prefix_mass[-1]) < 1 and float(roll.prefix_mass[0]) == 0
    assert roll.to_image().shape == (1, 64, 64)
    at = attention_rollout(model, torch.randn(1, 3, 64, 64), pixel=(60, 3))
    torch.testing.assert_close(at.maps[0].sum(), torch.tensor(1.0))


def test_rollout_rejects_bad_arguments():
    maps = hvit.extract_attention(hvit.create_model("hvit_nano"), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="head_fusion"):
        rollout_from_maps(maps, 2, head_fusion="median")
    with pytest.raises(ValueError, match="entries"):
        rollout_from_maps(maps, 2, start=torch.ones(1, 1, 5))
