"""Faithfulness checks: the scores reward the right maps and punish the wrong ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hvit
from hvit.explain.faithfulness import (
    blur_baseline,
    deletion_insertion,
    mask_mass,
    pointing_game,
    randomized_copy,
    relevance_order,
    spearman,
)
from hvit.preprocessing import Preprocessing


def test_pointing_game_hits_misses_ties_and_flat_maps():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True
    hit = torch.zeros(1, 4, 4)
    hit[0, 1, 1] = 5.0
    miss = torch.zeros(1, 4, 4)
    miss[0, 3, 3] = 5.0
    tie = torch.zeros(1, 4, 4)
    tie[0, 0, 0] = tie[0, 3, 3] = 5.0
    assert pointing_game(hit, mask).item() == 1.0
    assert pointing_game(miss, mask).item() == 0.0
    assert pointing_game(tie, mask).item() == 0.5
    assert pointing_game(torch.zeros(1, 4, 4), mask).item() == 0.0
    assert pointing_game(torch.ones(1, 4, 4), mask).item() == 0.0


def test_mask_mass_counts_positive_relevance_only():
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = True
    m = torch.tensor([[[3.0, 1.0], [-10.0, 0.0]]])
    assert mask_mass(m, mask).item() == pytest.approx(0.75)
    assert mask_mass(7 * m, mask).item() == pytest.approx(0.75)  # invariant to scale: no normalising needed
    assert mask_mass(torch.zeros(1, 2, 2), mask).item() == 0.0
    assert mask_mass(-m.abs(), mask).item() == 0.0


def test_relevance_order_is_descending_and_breaks_ties_randomly():
    m = torch.tensor([[[0.0, 3.0], [1.0, 2.0]]])
    assert relevance_order(m).tolist() == [[1, 3, 2, 0]]
    flat = torch.zeros(1, 8, 8)
    a, b = relevance_order(flat, seed=0), relevance_order(flat, seed=1)
    assert sorted(a[0].tolist()) == list(range(64)) and not torch.equal(a, b)
    assert a[0].tolist() != list(range(64))  # not raster order, which would favour the top rows


class LeftHalfModel(nn.Module):
    """Class 1 gets more likely the more contrast (squared pixel values) the left half of the image has."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))
        self.preprocessing = Preprocessing(img_size=8, mean=(0.0,) * 3, std=(1.0,) * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = self.scale * (x[..., :, :4] ** 2).mean((1, 2, 3)) - 2.0
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)


def test_deletion_and_insertion_prefer_the_true_relevance():
    model = LeftHalfModel()
    x = torch.ones(2, 3, 8, 8)
    x[..., ::2, :] = -1.0  # stripes: blurring (the start of insertion) removes the contrast
    right = torch.zeros(2, 8, 8)
    right[..., :4] = 1.0  # the truth: only the left half matters
    wrong = 1.0 - right
    target = torch.tensor([1, 1])
    good = deletion_insertion(model, x, right, target, steps=8)
    bad = deletion_insertion(model, x, wrong, target, steps=8)
    assert good.deletion.shape == (2, 9) and good.fractions[0] == 0 and good.fractions[-1] == 1
    p_full = torch.softmax(model(x), -1)[:, 1]
    torch.testing.assert_close(good.deletion[:, 0], p_full)  # nothing removed yet
    torch.testing.assert_close(good.insertion[:, -1], p_full)  # everything put back
    assert (good.deletion_auc < bad.deletion_auc - 0.1).all()
    assert (good.insertion_auc > bad.insertion_auc + 0.1).all()


def test_blur_baseline_removes_detail_but_keeps_the_mean():
    x = torch.zeros(1, 3, 32, 32)
    x[..., ::2, :] = 1.0  # stripes
    b = blur_baseline(x)
    assert b.shape == x.shape and b.std() < 0.1 * x.std()
    assert b.mean().item() == pytest.approx(x.mean().item(), abs=0.02)


def _reference_spearman(u: torch.Tensor, v: torch.Tensor) -> float:
    """Spearman's rho by its definition: Pearson correlation of ranks, tied values sharing their mean
    rank (counted pairwise, independently of the vectorised ranks in hvit)."""

    def ranks(x: torch.Tensor) -> np.ndarray:
        x = x.numpy()
        return np.array([(x < xi).sum() + ((x == xi).sum() + 1) / 2 for xi in x])

    return float(np.corrcoef(ranks(u), ranks(v))[0, 1])


def test_spearman_matches_its_definition_and_handles_ties_and_flat_maps():
    torch.manual_seed(0)
    a = torch.randn(3, 6, 6)
    b = a + 0.5 * torch.randn(3, 6, 6)
    b[0, :3] = 0.0  # ties
    ours = spearman(a, b, absolute=False)
    for i in range(3):
        assert ours[i].item() == pytest.approx(_reference_spearman(a[i].flatten(), b[i].flatten()), abs=1e-6)
    assert spearman(a, -a, absolute=False)[0].item() == pytest.approx(-1.0)
    assert spearman(a, -a, absolute=True)[0].item() == pytest.approx(1.0)
    assert torch.isnan(spearman(a[:1], torch.zeros(1, 6, 6))).all()


def test_randomized_copy_changes_every_weight_and_not_the_original():
    torch.manual_seed(0)
    model = hvit.create_model("hvit_seed", embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # stand-in for training: every weight moved away from its initial value
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rand = randomized_copy(model, seed=0)
    for name, p in rand.named_parameters():
        assert not torch.equal(p, before[name]), name
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    again = randomized_copy(model, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(rand.parameters(), again.parameters(), strict=True))
    assert rand.preprocessing == model.preprocessing
