"""Captum attributions: right maps on a model whose answer is known, completeness, bounded batches,
Grad-CAM per stage, and no state left behind."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import hvit
from hvit.explain.attribution import METHODS, AttributionSettings, canonical_method, compute_attribution
from hvit.explain.faithfulness import pointing_game
from hvit.preprocessing import Preprocessing

FAST = AttributionSettings(
    n_steps=8, nt_samples=4, nt_samples_batch_size=2, shap_samples=4, shap_samples_batch_size=2
)


class RegionModel(nn.Module):
    """A linear classifier that only sees the pixels of a known square: every honest map lives there."""

    def __init__(
        self, size: int = 16, region: tuple[slice, slice] = (slice(4, 8), slice(9, 13)), classes: int = 3
    ):
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., region[0], region[1]] = 1.0
        self.register_buffer("mask", mask)
        self.weight = nn.Parameter(torch.rand(classes, 3, size, size) + 0.5)  # positive: evidence for
        self.num_classes = classes
        self.preprocessing = Preprocessing(img_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.weight * self.mask)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "grad_cam"])
def test_maps_of_a_model_that_only_sees_one_square_stay_in_it(method):
    torch.manual_seed(0)
    model = RegionModel()
    x = torch.rand(2, 3, 16, 16) + 0.1  # positive pixels: positive evidence inside the square
    result = compute_attribution(model, x, target=1, method=method, settings=FAST)
    assert result.map.shape == (2, 16, 16) and torch.isfinite(result.map).all()
    inside = model.mask[0, 0].bool()
    if method == "occlusion":  # a 2x2 window at stride 1 reaches one pixel beyond the square
        inside = F.max_pool2d(inside[None, None].float(), 3, 1, 1)[0, 0].bool()
    assert result.map[:, ~inside].abs().max() < 1e-6
    assert result.map[:, inside].abs().sum() > 0
    assert pointing_game(result.map, model.mask[0].bool().expand(2, -1, -1)).tolist() == [1.0, 1.0]


def test_linear_model_attributions_have_their_closed_form():
    torch.manual_seed(0)
    model = RegionModel()
    x = torch.rand(1, 3, 16, 16)
    w = (model.weight * model.mask)[2:3].detach()
    black = torch.zeros_like(x)  # preprocessing is the identity here, so "black" is zero
    ig = compute_attribution(model, x, 2, "integrated_gradients", settings=FAST)
    torch.testing.assert_close(ig.map, ((x - black) * w).sum(1))  # exact for a linear model
    sal = compute_attribution(model, x, 2, "saliency")
    torch.testing.assert_close(sal.map, w.abs().sum(1))
    ixg = compute_attribution(model, x, 2, "input_x_gradient")
    torch.testing.assert_close(ixg.map, (x * w).sum(1))
    assert ig.signed and ixg.signed and not sal.signed


def test_integrated_gradients_completeness_on_a_small_model():
    torch.manual_seed(0)
    model = hvit.create_model("hvit_nano", num_classes=4)
    x = torch.randn(1, 3, 32, 32)
    deltas = []
    for steps in (4, 48):
        cfg = AttributionSettings(n_steps=steps, baseline="blur")
        res = compute_attribution(model, x, method="ig", settings=cfg)
        baseline = hvit.explain.attribution.make_baseline(model, x, "blur")
        with torch.no_grad():
            diff = (model.eval()(x) - model(baseline)).gather(1, res.target[:, None])[:, 0]
        # The map is a signed sum over channels, so it adds up to the logit difference (up to delta).
        torch.testing.assert_close(res.map.sum((1, 2)) - res.convergence_delta, diff, atol=1e-4, rtol=1e-4)
        deltas.append(res.convergence_delta.abs().max().item())
    assert deltas[1] < 1e-3 * max(1.0, diff.abs().max().item())
    assert deltas[1] <= deltas[0]


def test_saliency_and_grad_cam_match_a_hand_computation():
    torch.manual_seed(0)
    model = hvit.create_model("hvit_nano", num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    xg = x.clone().requires_grad_(True)
    model(xg)[0, 2].backward()
    torch.testing.assert_close(compute_attribution(model, x, 2, "saliency").map, xg.grad.abs().sum(1))

    stage = 2
    feats = {}
    handle = model.stages[stage].feature_map.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    act = feats["a"]  # (1, C, h, w)
    (grad,) = torch.autograd.grad(logits[0, 2], act)
    cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    got = compute_attribution(model, x, 2, "grad_cam", stage=stage)
    assert got.stage == stage
    torch.testing.assert_close(got.map, expected.detach())


def test_grad_cam_every_stage_and_the_class_token_case():
    torch.manual_seed(0)
    model = hvit.create_model("hvit_seed", embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_classes=3)
    x = torch.randn(1, 3, 64, 64)
    for stage in range(3):
        assert compute_attribution(model, x, 0, "grad_cam", stage=stage).note is None
    with pytest.warns(UserWarning, match="class token"):
        last = compute_attribution(model, x, 0, "grad_cam", stage=-1)
    assert last.stage == 3 and "class token" in last.note and torch.count_nonzero(last.map) == 0
    avg = hvit.create_model("hvit_nano", num_classes=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_attribution(avg, torch.randn(1, 3, 32, 32), 0, "grad_cam", stage=3).map.abs().sum() > 0


def _max_batch(model: nn.Module, fn) -> int:
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        fn()
    finally:
        handle.remove()
    return max(seen)


@pytest.mark.slow
def test_captum_batch_sizes_bound_memory():
    model = hvit.create_model("hvit_nano", num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    cfg = AttributionSettings(
        n_steps=16,
        internal_batch_size=8,
        nt_samples=6,
        nt_samples_batch_size=3,
        shap_samples=8,
        shap_samples_batch_size=4,
        perturbations_per_eval=5,
        occlusion_window=8,
        occlusion_stride=8,
    )
    assert _max_batch(model, lambda: compute_attribution(model, x, 0, "ig", settings=cfg)) <= 8
    assert _max_batch(model, lambda: compute_attribution(model, x, 0, "smoothgrad", settings=cfg)) <= 3 * 2
    assert _max_batch(model, lambda: compute_attribution(model, x, 0, "gradient_shap", settings=cfg)) <= 4
    assert _max_batch(model, lambda: compute_attribution(model, x, 0, "occlusion", settings=cfg)) <= 5 * 2


def test_attribute_accepts_pil_path_and_tensors_and_leaves_the_model_as_it_was(tmp_path):
    torch.manual_seed(0)
    model = hvit.create_model("hvit_nano", num_classes=3)
    model.train()
    model.head.weight.requires_grad_(False)  # a partly frozen model keeps its flags
    flags = [p.requires_grad for p in model.parameters()]
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    hooks = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )
    with torch.no_grad():  # a UI callback may have switched gradients off; attributions still work
        from_pil = hvit.attribute(model, Image.fromarray(pixels), target=1, method="saliency")
        from_path = hvit.attribute(model, tmp_path / "img.png", target=1, method="saliency")
        from_uint8 = hvit.attribute(
            model, torch.from_numpy(pixels).permute(2, 0, 1), target=1, method="saliency"
        )
    assert from_pil.shape == (32, 32)
    torch.testing.assert_close(from_pil, from_path)
    torch.testing.assert_close(from_pil, from_uint8)
    batch = hvit.attribute(model, torch.randn(3, 3, 32, 32), method="grad_cam", stage=1)
    assert batch.shape == (3, 32, 32)
    assert model.training
    assert hooks == sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags


def test_targets_and_method_names():
    model = hvit.create_model("hvit_nano", num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        predicted = model.eval()(x).argmax(-1)
    assert torch.equal(compute_attribution(model, x, method="saliency").target, predicted)
    assert compute_attribution(model, x, target=[2, 0], method="saliency").target.tolist() == [2, 0]
    with pytest.raises(ValueError, match="class indices"):
        compute_attribution(model, x, target=7, method="saliency")
    with pytest.raises(ValueError, match="unknown attribution method"):
        compute_attribution(model, x, method="lime")
    assert canonical_method("Grad-CAM") == "grad_cam" and canonical_method("IG") == "integrated_gradients"


def test_default_cam_stage_is_the_deepest_stage_fine_enough_to_point():
    """One default for both apps: the deepest stage whose grid is at least MIN_CAM_SIDE tokens a side
    (measured best on the classroom model), never a class-token model's last stage (zero there)."""
    from dataclasses import replace

    from hvit.assets import DEFAULT_MODEL, SHAPES_MODEL
    from hvit.demo import load_shipped_model
    from hvit.explain import default_cam_stage
    from hvit.explain.attribution import MIN_CAM_SIDE

    assert MIN_CAM_SIDE == 8
    classroom = load_shipped_model(DEFAULT_MODEL).config  # grids 24, 12, 6, 3
    assert default_cam_stage(classroom) == 1  # stage 2, 12x12: the best pointing game (model card)
    assert default_cam_stage(load_shipped_model(SHAPES_MODEL).config) == 1  # grids 16, 8, 4, 2
    pvt = hvit.create_model("pvt_v2_b0").config  # 56, 28, 14, 7
    assert default_cam_stage(pvt) == 2
    assert default_cam_stage(replace(pvt, img_size=448)) == 3  # 14x14 last stage, no class token
    v1 = hvit.create_model("hvit_seed").config
    assert v1.cls_token and default_cam_stage(replace(v1, img_size=2048)) == v1.num_stages - 2
    assert default_cam_stage(replace(classroom, img_size=16)) == 0  # nothing that fine: stage 1
