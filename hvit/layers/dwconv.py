"""PVT v2's 3x3 depth-wise convolution, with a fast weight gradient on tiny token grids.

A PVT v2 MLP convolves its hidden tokens with a 3x3 kernel, one filter per channel. On a CPU, PyTorch
runs this through oneDNN, whose depth-wise *weight gradient* is pathologically slow when the grid is
smaller than the kernel: the last stage of a 32 px model is a 2x2 grid, and there the weight gradient of
(64, 512, 2, 2) hidden tokens took 14-30 ms, against 0.2 ms for the forward and 0.6 ms for the input
gradient (torch 2.14, one thread) -- 10-20 % of a whole training step of the classroom model.

`DepthwiseConv2d` is an ``nn.Conv2d`` (same parameters, state-dict keys, hooks and forward values) that
computes that one gradient itself when the grid is smaller than the kernel: each of the 9 kernel taps
is a sum over batch and pixels of (input shifted by the tap) x (output gradient), about 1 M
multiply-adds, 2 ms. Everything else -- the forward, the input gradient, every larger grid, every
device other than the CPU -- is PyTorch's own convolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthwiseConv2d"]


class _SmallGridDepthwise(torch.autograd.Function):
    """3x3, stride 1, padding 1 depth-wise convolution whose weight gradient is 9 tap-wise sums."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=1, groups=weight.shape[0])  # (B, C, H, W)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        c, (h, w) = weight.shape[0], x.shape[-2:]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # The input gradient is a convolution with the flipped kernel: oneDNN is fast at that.
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], c, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            # dL/dw[c, i, j] = sum over batch and pixels of x_padded[b, c, y + i, x + j] * grad_out[b, c, y, x]
            xp = F.pad(x, (1, 1, 1, 1))  # (B, C, H + 2, W + 2)
            taps = [
                (xp[:, :, i : i + h, j : j + w] * grad_out).sum((0, 2, 3)) for i in range(3) for j in range(3)
            ]  # 9 x (C,)
            grad_w = torch.stack(taps, dim=1).reshape_as(weight)  # (C, 1, 3, 3)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, 3, padding=1, groups=channels)``, faster to train on tiny grids.

    Args:
        channels: input and output channels (one 3x3 filter each).
        bias: learn a bias per channel.
    """

    def __init__(self, channels: int, bias: bool = True) -> None:
        super().__init__(channels, channels, kernel_size=3, padding=1, groups=channels, bias=bias)

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        h, w = input.shape[-2:]
        if (
            min(h, w) < 3  # the grid is smaller than the kernel: oneDNN's slow case
            and input.device.type == "cpu"
            and torch.is_grad_enabled()
            and weight.requires_grad
        ):
            return _SmallGridDepthwise.apply(input, weight, bias)
        return super()._conv_forward(input, weight, bias)
