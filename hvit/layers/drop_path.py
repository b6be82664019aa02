"""Stochastic depth ("drop path"): in training, skip a block's residual branch for some samples."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Drop a residual branch for whole samples of a batch (Huang et al. 2016, "row" mode).

    In training each sample keeps the branch with probability ``1 - p`` and a kept branch is scaled
    by ``1 / (1 - p)``, so its expected value is unchanged; in eval, or with ``p == 0``, it is the
    identity. The same numbers as ``torchvision.ops.StochasticDepth(p, "row")`` under the same torch
    random state (tested), written out here so that building a model does not import torchvision,
    whose first import takes seconds.

    Args:
        p: probability of dropping the branch of a sample, in [0, 1].

    Raises:
        ValueError: ``p`` outside [0, 1].
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop path probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (B, ...), e.g. a branch's (B, N, C) tokens. Returns: the same shape."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        # One draw per sample, broadcast over all its other dimensions: (B, 1, ..., 1).
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0:
            mask.div_(keep)  # kept samples scaled by 1/(1-p): the same expected value as in eval
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
