"""Building blocks checked against the PyTorch operation they stand in for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hvit
from hvit.layers import DepthwiseConv2d, DropPath, PatchEmbed


def _pair(channels: int) -> tuple[DepthwiseConv2d, nn.Conv2d]:
    torch.manual_seed(0)
    ours = DepthwiseConv2d(channels)
    reference = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (2, 5), (1, 4), (3, 3), (4, 4)])
def test_depthwise_conv_gradients_equal_conv2d(grid):
    # Grids smaller than the kernel take the hand-written weight gradient; larger ones PyTorch's. Both
    # must give nn.Conv2d's output and all three gradients, in the channels-last layout the MLP uses.
    ours, reference = _pair(8)
    x = torch.randn(4, grid[0] * grid[1], 8).transpose(1, 2).reshape(4, 8, *grid)  # channels-last view
    grad = torch.randn(4, 8, *grid)
    results = []
    for conv in (ours, reference):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        out.backward(grad)
        results.append((out.detach(), xi.grad, conv.weight.grad, conv.bias.grad))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (2, 3)])
def test_depthwise_conv_small_grid_gradcheck(grid):
    # Finite differences in float64: the backward is the derivative of the forward, not just close to
    # nn.Conv2d's numbers.
    conv = DepthwiseConv2d(3).double()
    x = torch.randn(2, 3, *grid, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv._conv_forward(x, w, b), (x, conv.weight, conv.bias))


def test_depthwise_conv_small_grid_takes_custom_backward():
    # The fast path is only worth having if it is taken: a 2x2 grid with a trainable weight goes
    # through the custom autograd function, a 3x3 grid and a frozen weight do not.
    conv = DepthwiseConv2d(4)
    names = []
    for grid, trainable in (((2, 2), True), ((3, 3), True), ((2, 2), False)):
        conv.weight.requires_grad_(trainable)
        out = conv(torch.randn(1, 4, *grid, requires_grad=True))
        names.append(type(out.grad_fn).__name__)
    assert names[0] == "_SmallGridDepthwiseBackward"
    assert "_SmallGrid" not in names[1] and "_SmallGrid" not in names[2]


def test_depthwise_conv_is_a_conv2d_with_conv2d_state_dict():
    # timm interchange, FLOP counting and hooks treat it as the nn.Conv2d it replaces.
    ours, reference = _pair(6)
    assert isinstance(ours, nn.Conv2d)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    mlp = hvit.create_model("hvit_nano").stages[3].blocks[0].mlp
    assert isinstance(mlp.dwconv, DepthwiseConv2d)


def test_conv_stem_keeps_the_token_grid_and_equals_the_plain_nchw_computation():
    # The stem changes what a token is computed from, not how many tokens there are; it runs channels-
    # last for speed, which must not change a single value beyond rounding.
    torch.manual_seed(0)
    plain = PatchEmbed(3, 16, stride=2, overlap=True)
    stemmed = PatchEmbed(3, 16, stride=2, overlap=True, stem_channels=8)
    x = torch.randn(2, 3, 32, 32)
    (tokens, grid), (plain_tokens, plain_grid) = stemmed(x), plain(x)
    assert grid == plain_grid == (16, 16) and tokens.shape == plain_tokens.shape == (2, 256, 16)

    conv, norm = stemmed.stem[0], stemmed.stem[1]
    h = F.conv2d(x, conv.weight.contiguous(), conv.bias, padding=1)
    h = F.relu(F.group_norm(h, 1, norm.weight, norm.bias, norm.eps))
    h = F.conv2d(h, stemmed.proj.weight.contiguous(), stemmed.proj.bias, stride=2, padding=1)
    expected = stemmed.norm(h.flatten(2).transpose(1, 2))
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


def test_conv_stem_model_computes_the_same_function_in_train_and_eval_mode():
    # GroupNorm, not BatchNorm: no batch statistics, so the model the trainer validates is the model it
    # trained, and a batch of one image gives the same answer as that image inside a batch.
    torch.manual_seed(0)
    model = hvit.create_model("hvit_nano_stem", num_classes=6)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        trained = model.train()(x)
        evaluated = model.eval()(x)
        alone = model(x[:1])
    torch.testing.assert_close(trained, evaluated)
    torch.testing.assert_close(alone, evaluated[:1], atol=1e-5, rtol=1e-5)
    assert model.config.stem_channels == 16 and model.patch_embed.stem is not None


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(8, 5, 4), (16, 3, 4, 4), (6,)])
def test_drop_path_equals_torchvision_stochastic_depth(p, shape):
    # Our drop path stands in for torchvision's row-mode stochastic depth: the same draws from the same
    # torch random state, the same kept samples, the same 1/(1-p) scale.
    from torchvision.ops import stochastic_depth

    x = torch.randn(*shape)
    torch.manual_seed(7)
    ours = DropPath(p).train()(x)
    torch.manual_seed(7)
    want = stochastic_depth(x, p, "row", training=True)
    torch.testing.assert_close(ours, want, rtol=0, atol=0)
    if 0.0 < p < 1.0 and shape[0] >= 8:  # whole samples dropped or kept: the test is not vacuous
        kept = (ours.flatten(1) != 0).all(1)
        assert 0 < int(kept.sum()) < shape[0]
        torch.testing.assert_close(ours[kept], x[kept] / (1 - p))


def test_drop_path_is_the_identity_in_eval_and_keeps_the_state_dict_keys():
    x = torch.randn(4, 9, 8)
    assert DropPath(0.5).eval()(x) is x
    assert DropPath(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"drop path probability must be in \[0, 1\], got 1.5"):
        DropPath(1.5)
    # no parameters or buffers: a model with stochastic depth has the state dict of one without it
    with_dp = hvit.create_model("hvit_nano", drop_path_rate=0.3)
    assert any(isinstance(m, DropPath) for m in with_dp.modules())
    assert list(with_dp.state_dict()) == list(hvit.create_model("hvit_nano").state_dict())
