"""The feed-forward half of a transformer block.

PVT v1 uses the plain two-layer MLP of ViT. PVT v2 adds a 3x3 depth-wise convolution between the two
layers: tokens mix with their spatial neighbours, which is why PVT v2 needs no position embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from hvit.layers.dwconv import DepthwiseConv2d


class Mlp(nn.Module):
    """fc1 -> [ReLU] -> [3x3 depth-wise conv] -> GELU -> fc2, on (B, P + H*W, C) tokens.

    Args:
        dim: token width in and out.
        hidden_dim: width of the hidden layer (``mlp_ratio * dim``).
        dwconv: add PVT v2's depth-wise convolution over the token grid.
        extra_relu: ReLU before the depth-wise conv (PVT v2-li).
        drop: dropout after the activation and after fc2.
    """

    def __init__(
        self, dim: int, hidden_dim: int, dwconv: bool = False, extra_relu: bool = False, drop: float = 0.0
    ):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = None
        if dwconv:
            # The conv's input is a transposed view of fc1's (B, H*W, hidden) output: its memory is
            # already channels-last. Storing the weight channels-last too lets oneDNN convolve it as it
            # lies, where a contiguous weight makes it copy the whole hidden map to NCHW first and hand
            # back a layout fc2 must copy again (3-5x slower at batch 1 on CPU). The values and the
            # state dict are unchanged; `load_state_dict` copies into this layout.
            self.dwconv = DepthwiseConv2d(hidden_dim)  # an nn.Conv2d, faster to train on tiny grids
            self.dwconv.to(memory_format=torch.channels_last)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
        """Args: x: (B, P + H*W, C) tokens on ``grid`` = (H, W). Returns: (B, P + H*W, C)."""
        x = self.fc1(x)  # (B, P + H*W, hidden)
        if self.dwconv is not None:
            # Only the grid tokens have neighbours; a class token skips the convolution.
            prefix, x = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
            b, n, c = x.shape
            x = x.transpose(1, 2).reshape(b, c, grid[0], grid[1])  # (B, hidden, H, W)
            x = self.dwconv(self.relu(x)).flatten(2).transpose(1, 2)  # (B, H*W, hidden)
            x = torch.cat([prefix, x], dim=1) if num_prefix_tokens else x
        if self._may_overwrite():
            # The hidden layer is the widest tensor of the block (4-8x the tokens); reusing its buffer
            # for the activation saves allocating and first-touching another one (~10 % at batch 32).
            x = torch.ops.aten.gelu_(x, approximate=self.act.approximate)
        else:
            x = self.act(x)
        return self.drop(self.fc2(self.drop(x)))

    def _may_overwrite(self) -> bool:
        """Whether GELU may be computed in place, i.e. nobody can tell the difference: autograd is off
        (GELU's backward needs its input), the activation is still the stock GELU, and no forward hook
        on the layers that produced the hidden tensor (or on the activation) could be holding it, as
        Captum's ``LayerActivation`` does."""
        if (
            torch.is_grad_enabled()
            or type(self.act) is not nn.GELU
            or nn.modules.module._global_forward_hooks
        ):
            return False
        producers = (self.fc1, self.relu, self.dwconv, self.act)
        return not any(m is not None and (m._forward_hooks or m._forward_pre_hooks) for m in producers)
