"""Where things are: how reduced keys, token grids and image pixels cover one another.

A pyramid transformer has three kinds of grid, and every picture of its attention has to move between
them:

    image pixels (S_h, S_w)
      <- a stage's token grid (H, W): token (i, j) covers pixels [i*r, (i+1)*r) x [j*r, (j+1)*r),
         r = the stage's reduction (4, 8, 16, 32 for PVT)
      <- that stage's reduced key grid (h, w): key (a, b) summarises an R x R block of tokens
         (spatial-reduction conv, kernel R, stride R) or an adaptive-average-pool bin (linear SRA)

All of this is written down once, as a "membership" matrix: ``member[k, t] = 1`` when coarse cell ``k``
summarises fine cell ``t``. Everything else is a normalisation of it:

- *spread* (rows sum to 1): a coarse cell's value shared out evenly over the fine cells it summarises.
  Mass is preserved, which is what attention rollout needs.
- *paint* (columns sum to 1 where covered): every fine cell takes the (mean) value of the coarse
  cell(s) covering it. What a picture needs: "this pixel belongs to a key that received 0.3".

Footprints are nominal: a PVT v2 overlapping patch embedding (kernel 2s-1) or the depth-wise conv in
its MLP lets a token see a little beyond its cell. The cells are what the architecture *assigns* a
token or a key to; this is the convention every attention visualisation uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _axis_membership(fine: int, coarse: int, stride: int | None) -> torch.Tensor:
    """(coarse, fine) 0/1 matrix for one axis.

    ``stride`` R: cell a covers [a*R, min((a+1)*R, fine)). Fine cells past ``coarse * R`` belong to no
    cell (a strided conv drops them; a padded conv of a grid smaller than R covers all of it).
    ``stride=None``: adaptive-average-pool bins [floor(a*fine/coarse), ceil((a+1)*fine/coarse)).
    """
    a = torch.arange(coarse)
    if stride is None:
        start = (a * fine) // coarse
        end = -((-(a + 1) * fine) // coarse)  # ceil division
    else:
        start = a * stride
        end = torch.clamp((a + 1) * stride, max=fine)
    t = torch.arange(fine)
    return ((t[None, :] >= start[:, None]) & (t[None, :] < end[:, None])).float()


def membership(fine: tuple[int, int], coarse: tuple[int, int], stride: int | None) -> torch.Tensor:
    """Which fine cells each coarse cell summarises.

    Args:
        fine: (H, W) of the fine grid (tokens).
        coarse: (h, w) of the coarse grid (reduced keys, or the next stage's tokens).
        stride: R for a strided reduction, ``None`` for adaptive average pooling (linear SRA).

    Returns:
        (h*w, H*W) float 0/1 matrix, row-major on both grids.
    """
    rows = _axis_membership(fine[0], coarse[0], stride)  # (h, H)
    cols = _axis_membership(fine[1], coarse[1], stride)  # (w, W)
    # Cell (a, b) covers (i, j) iff row a covers i and column b covers j: a Kronecker product.
    return torch.kron(rows, cols)  # (h*w, H*W)


def spread_matrix(fine: tuple[int, int], coarse: tuple[int, int], stride: int | None) -> torch.Tensor:
    """(h*w, H*W) membership with rows normalised to 1: each coarse cell shared out over its fine cells."""
    m = membership(fine, coarse, stride)
    return m / m.sum(dim=1, keepdim=True).clamp_min(1.0)


def paint_matrix(fine: tuple[int, int], coarse: tuple[int, int], stride: int | None) -> torch.Tensor:
    """(h*w, H*W) membership with columns normalised: ``values @ paint`` gives each fine cell the mean
    value of the coarse cells covering it (zero for a fine cell no coarse cell covers)."""
    m = membership(fine, coarse, stride)
    return m / m.sum(dim=0, keepdim=True).clamp_min(1.0)


def grid_to_image(values: torch.Tensor, image_size: tuple[int, int], stride: int) -> torch.Tensor:
    """Paint a token-grid map onto image pixels: pixel (y, x) takes the value of token (y//r, x//r).

    Args:
        values: (..., H, W) one value per token.
        image_size: (S_h, S_w) in pixels.
        stride: r, pixels per token along each axis (the stage's reduction).

    Returns:
        (..., S_h, S_w). Pixels past the last full token (a padded border) take the last token's value.
    """
    h, w = values.shape[-2:]
    rows = torch.clamp(torch.arange(image_size[0], device=values.device) // stride, max=h - 1)
    cols = torch.clamp(torch.arange(image_size[1], device=values.device) // stride, max=w - 1)
    return values[..., rows, :][..., cols]


def token_edges(tokens: int, size: int, stride: int) -> list[int]:
    """Pixel edges of ``tokens`` cells of ``stride`` pixels along an axis of ``size`` pixels.

    Cell i covers pixels [edges[i], edges[i + 1]): i*stride up to the next cell, the last one up to
    the image's edge (as `grid_to_image` paints it: pixels past the last full token take its value).
    """
    if tokens < 1 or stride < 1 or (tokens - 1) * stride >= size:
        raise ValueError(
            f"{tokens} tokens of {stride} pixels do not fit {size} pixels: the last token would start "
            f"at pixel {(tokens - 1) * stride}; a stage's grid must cover the image with every token on it"
        )
    return [i * stride for i in range(tokens)] + [size]


@dataclass(frozen=True)
class TokenMap:
    """A map with one value per token, and the pixels each token covers on the image.

    What `grid_to_image` would paint, kept at its own resolution: a figure draws one cell per token
    (`hvit.explain.figures`), a 24x24 grid instead of the 96x96 pixels that repeat it.

    Attributes:
        values: (H, W) one value per token (or (..., H, W) for several maps on one grid).
        stride: pixels per token along each axis.
        image_size: (S_h, S_w) of the image; token (i, j) covers pixel rows [i*stride, (i+1)*stride)
            and columns likewise, the last row and column of tokens reaching the image's edge.
    """

    values: torch.Tensor | np.ndarray
    stride: int
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        h, w = self.values.shape[-2:]
        token_edges(h, self.image_size[0], self.stride)  # raises when the grid does not fit the image
        token_edges(w, self.image_size[1], self.stride)

    @property
    def grid(self) -> tuple[int, int]:
        """(H, W) of the token grid."""
        return int(self.values.shape[-2]), int(self.values.shape[-1])

    def edges(self) -> tuple[list[int], list[int]]:
        """Pixel edges of the token rows and columns (see `token_edges`)."""
        (h, w), (s_h, s_w) = self.grid, self.image_size
        return token_edges(h, s_h, self.stride), token_edges(w, s_w, self.stride)

    def to_image(self) -> torch.Tensor:
        """(..., S_h, S_w): the map painted onto pixels (`grid_to_image`)."""
        return grid_to_image(torch.as_tensor(self.values), self.image_size, self.stride)


def pixel_to_token(pixel: tuple[int, int], grid: tuple[int, int], stride: int) -> tuple[int, int]:
    """Token (i, j) of a ``grid`` with ``stride`` pixels per token that covers image pixel (y, x)."""
    return min(pixel[0] // stride, grid[0] - 1), min(pixel[1] // stride, grid[1] - 1)


def token_centres(grid: tuple[int, int], stride: int) -> torch.Tensor:
    """(H*W, 2) pixel coordinates (y, x) of the centre of every token's cell."""
    ii, jj = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    return (torch.stack([ii.flatten(), jj.flatten()], dim=1).float() + 0.5) * stride


def stage_strides(model: torch.nn.Module) -> list[int]:
    """Pixels per token of every stage of an hvit model (``feature_info[i]["reduction"]``)."""
    return [int(info["reduction"]) for info in model.feature_info]
