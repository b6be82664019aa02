"""Geometry, attention views and head statistics: keys map to the right pixels, views add up."""

from __future__ import annotations

import math

import pytest
import torch

import hvit
from hvit.explain.geometry import grid_to_image, membership, paint_matrix, pixel_to_token, spread_matrix
from hvit.explain.head_stats import head_statistics, head_statistics_from_maps
from hvit.explain.views import (
    attention_views,
    key_footprint,
    keys_to_image,
    query_key_attention,
    received_key_attention,
)
from hvit.layers.attention import AttentionRecord, KeyReduction

from helpers import small

# --- geometry --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "sr", "linear"),
    [
        ((8, 8), 4, False),
        ((7, 5), 2, False),
        ((2, 3), 4, False),
        ((6, 6), 1, False),
        ((5, 9), 1, True),
        ((9, 4), 1, True),
    ],
)
def test_membership_matches_what_the_key_reduction_really_mixes(grid, sr, linear):
    # Feed the real reduction one token at a time; a key "summarises" a token iff it responds to it.
    torch.manual_seed(0)
    red = KeyReduction(4, sr, linear=linear, pool_size=7).eval()
    with torch.no_grad():
        if red.sr is not None:
            red.sr.weight.fill_(1.0)  # positive weights: no accidental cancellation
            red.sr.bias.zero_()
        red.norm = torch.nn.Identity()
        red.act = None
        n = grid[0] * grid[1]
        responses = []
        for t in range(n):
            x = torch.zeros(1, n, 4)
            x[0, t] = 1.0
            out, key_grid = red(x, grid)  # (1, h*w, C)
            responses.append(out[0].abs().sum(-1) > 1e-6)
    touched = torch.stack(responses, dim=1).float()  # (h*w, N): key k responds to token t
    assert torch.equal(membership(grid, key_grid, None if linear else sr), touched)


def test_spread_rows_and_paint_columns_are_normalised():
    s = spread_matrix((7, 7), (3, 3), 2)
    torch.testing.assert_close(s.sum(1), torch.ones(9))
    p = paint_matrix((7, 7), (3, 3), 2)
    covered = membership((7, 7), (3, 3), 2).sum(0) > 0
    torch.testing.assert_close(p.sum(0)[covered], torch.ones(int(covered.sum())))
    assert int((~covered).sum()) == 13  # a strided 2x2 conv drops the last row and column of a 7x7 grid


def test_grid_to_image_and_pixel_to_token_agree():
    values = torch.arange(12.0).reshape(3, 4)
    img = grid_to_image(values, (12, 16), 4)
    assert img.shape == (12, 16)
    for y, x in [(0, 0), (5, 9), (11, 15)]:
        i, j = pixel_to_token((y, x), (3, 4), 4)
        assert img[y, x] == values[i, j]


# --- views -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nano_views():
    torch.manual_seed(0)
    return attention_views(hvit.create_model("hvit_nano"), torch.randn(2, 3, 32, 32))


def test_received_attention_is_the_mean_over_queries(nano_views):
    rec = nano_views.groups(0)[0]
    expected = rec.probs[1, 0].mean(0).reshape(rec.key_grid)
    got = nano_views.received_attention(0, head=0, on="keys", image_index=1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(), torch.tensor(1.0))


def test_query_attention_painted_over_key_footprints(nano_views):
    # Stage 1 of hvit_nano: 16x16 tokens of 2 px, SR 4 -> 4x4 keys, each covering an 8x8 pixel block.
    views = nano_views
    rec = views.groups(0)[0]
    assert rec.query_grid == (16, 16) and rec.key_grid == (4, 4) and views.strides[0] == 2
    on_keys = views.query_attention(0, head=0, pixel=(13, 22), on="keys")
    on_image = views.query_attention(0, head=0, pixel=(13, 22))
    torch.testing.assert_close(
        on_keys, rec.probs[0, 0, 6 * 16 + 11].reshape(4, 4)
    )  # pixel (13, 22) is token (6, 11)
    torch.testing.assert_close(on_image, on_keys.repeat_interleave(8, 0).repeat_interleave(8, 1))
    labels = views.footprint(0, head=0)
    assert labels.shape == (32, 32) and labels[13, 22] == 1 * 4 + 2  # pixel (13, 22) lies in key (1, 2)
    assert torch.equal(views.footprint(0, head=0, key=(1, 2)), labels == 6)


def test_multiscale_groups_are_shown_on_their_own_grids():
    torch.manual_seed(0)
    views = attention_views(hvit.create_model("hvit_nano_ms"), torch.randn(1, 3, 32, 32))
    assert views.received_attention(0, head=0, on="keys").shape == (4, 4)  # SR 4 group
    assert views.received_attention(0, head=1, on="keys").shape == (16, 16)  # SR 1 group
    with pytest.raises(ValueError, match="multi-scale"):
        views.received_attention(0, on="keys")
    mean = views.received_attention(0)
    both = (views.received_attention(0, head=0) + views.received_attention(0, head=1)) / 2
    torch.testing.assert_close(mean, both)
    assert views.head_maps(0).shape == (2, 32, 32)


def test_class_token_query_and_keys():
    torch.manual_seed(0)
    views = attention_views(small("hvit_seed"), torch.randn(1, 3, 64, 64))
    rec = views.groups(3)[0]
    assert rec.num_prefix_tokens == 1
    cls_row = views.query_attention(3, head=2, query="cls", on="keys")
    torch.testing.assert_close(cls_row.sum() + rec.probs[0, 2, 0, 0], torch.tensor(1.0))
    with pytest.raises(ValueError, match="class token"):
        views.query_attention(0, query="cls")


def test_footprints_partition_the_image_when_the_grid_divides():
    rec = AttentionRecord(torch.full((1, 1, 64, 4), 0.25), (8, 8), (2, 2), 0, (0,), 4)
    fp = key_footprint(rec, (32, 32), 4)
    assert fp.shape == (4, 32, 32)
    assert torch.equal(fp.sum(0), torch.ones(32, 32, dtype=torch.long))
    torch.testing.assert_close(
        keys_to_image(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), rec, (32, 32), 4)[20, 5], torch.tensor(3.0)
    )
    torch.testing.assert_close(received_key_attention(rec), torch.full((2, 2), 0.25))
    torch.testing.assert_close(query_key_attention(rec, (3, 3)), torch.full((2, 2), 0.25))


# --- head statistics --------------------------------------------------------------------------------------


def _record(probs: torch.Tensor, grid, key_grid, sr) -> AttentionRecord:
    return AttentionRecord(probs[None, None], grid, key_grid, 0, (0,), sr)


def test_head_stats_of_hand_made_attention():
    n = 16
    from hvit.explain.extract import AttentionMaps

    ident = _record(torch.eye(n), (4, 4), (4, 4), 1)
    uniform = _record(torch.full((n, n), 1 / n), (4, 4), (4, 4), 1)
    pooled = _record(torch.ones(n, 1), (4, 4), (1, 1), 4)  # one key: global pooling
    maps = AttentionMaps([[[ident]], [[uniform]], [[pooled]]], torch.zeros(1, 2))
    s_ident, s_uniform, s_pooled = head_statistics_from_maps(maps, [2, 2, 2])
    assert s_ident.mean_distance == pytest.approx(0.0, abs=1e-6)
    assert s_ident.entropy == pytest.approx(0.0, abs=1e-6)
    assert s_uniform.normalized_entropy == pytest.approx(1.0, abs=1e-5)
    assert s_uniform.entropy == pytest.approx(math.log(n), abs=1e-5)
    # Every query looking evenly at every token, or at one key that summarises them all, is the same
    # "how far": the mean pairwise distance of the 4x4 grid of 2-px tokens.
    c = (
        torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(-1, 2)
        + 0.5
    ) * 2
    expected = torch.cdist(c, c).mean().item()
    assert s_uniform.mean_distance == pytest.approx(expected, rel=1e-5)
    assert s_pooled.mean_distance == pytest.approx(expected, rel=1e-5)
    assert s_pooled.entropy == 0.0 and s_pooled.normalized_entropy == 0.0


@pytest.mark.parametrize("name", ["hvit_nano_ms", "hvit_seed"])
def test_head_stats_cover_every_head(name):
    model = small(name)
    size = min(model.config.img_size, 64)
    stats = head_statistics(model, torch.randn(2, 3, size, size))
    assert len(stats) == sum(d * h for d, h in zip(model.config.depths, model.config.num_heads, strict=True))
    for st in stats:
        assert 0 <= st.normalized_entropy <= 1 + 1e-5
        assert 0 <= st.mean_distance <= size * math.sqrt(2)
