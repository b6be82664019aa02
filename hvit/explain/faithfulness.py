"""Are the pictures right? Scores that hold an explanation map to account.

A heat map can look convincing and be wrong. These checks need no human judgement:

- **Pointing game** (Zhang et al., 2016): does the map's maximum fall inside the object's ground-truth
  mask? Ties (flat maps, Grad-CAM at a coarse stage) count fractionally: the share of the tied
  maximum pixels that lie inside the mask. A constant map points nowhere and scores 0.
- **Mask mass** (relevance mass accuracy, Arras et al., 2022): the share of the map's *positive* mass
  that lies inside the mask. Negative values (evidence against the class) are not "where the object
  is", so they are left out. An all-zero map scores 0. Chance level is the mask's share of the image.
- **Deletion / insertion** (Petsiuk et al., 2018, RISE): remove the most relevant pixels first (replaced
  by the mean colour) and watch the class probability fall; or start from a heavily blurred image and
  put the most relevant pixels back first, and watch it rise. The area under each curve (fraction of
  pixels on the x axis, probability on the y axis) summarises it: low deletion AUC and high insertion
  AUC are good. Ties in the ranking are broken at random (seeded), so a flat map is a random order.
- **Model randomisation** (Adebayo et al., 2018): re-initialise every weight and compute the map again.
  If the Spearman rank correlation between the trained and the random model's maps stays high, the
  method is showing the image (edges, colour), not what the model learned. Both the correlation of
  absolute values (the paper's main variant, stricter) and of the signed maps are given.

No map is normalised on its own before scoring: every score here is invariant to scaling a map by a
positive constant, so normalisation is never needed, and all-zero maps are guarded explicitly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hvit.explain._inputs import eval_mode


def _flat(maps: torch.Tensor) -> torch.Tensor:
    return maps.detach().float().cpu().flatten(1)  # (B, H*W)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing the mean of their ranks (scipy's ``rankdata``)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first index of each run of ties
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)  # mean of ranks start+1..end
    return ranks


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Whether each map's maximum lies inside its mask.

    Args:
        maps: (B, H, W) relevance (higher = more relevant).
        masks: (B, H, W) bool ground truth.

    Returns:
        (B,) float in [0, 1]: 1 for a hit, the share of tied maxima inside the mask when several pixels
        share the maximum, 0 for a constant map.
    """
    m, gt = _flat(maps), masks.detach().cpu().flatten(1).bool()
    top = m.amax(1, keepdim=True)
    is_max = m >= top - 1e-12 * top.abs().clamp_min(1.0)
    hits = (is_max & gt).sum(1).float() / is_max.sum(1).float()
    constant = (m.amax(1) - m.amin(1)) <= 0
    return torch.where(constant, torch.zeros_like(hits), hits)


def mask_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive mass inside its mask.

    Returns:
        (B,) in [0, 1]; 0 for a map with no positive mass.
    """
    pos = _flat(maps).clamp_min(0)
    gt = masks.detach().cpu().flatten(1).float()
    total = pos.sum(1)
    inside = (pos * gt).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def relevance_order(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(B, H*W) pixel indices from most to least relevant; ties broken by a seeded random order."""
    m = _flat(maps)
    g = torch.Generator().manual_seed(seed)
    shuffle = torch.stack([torch.randperm(m.shape[1], generator=g) for _ in range(m.shape[0])])  # (B, H*W)
    # Sorting a shuffled copy with a stable sort keeps the random order inside every tie.
    order = torch.sort(torch.gather(m, 1, shuffle), dim=1, descending=True, stable=True).indices
    return torch.gather(shuffle, 1, order)


def blur_baseline(x: torch.Tensor) -> torch.Tensor:
    """A heavily blurred copy of (B, C, H, W) images (Gaussian, sigma = side / 8): the start of insertion."""
    side = min(x.shape[-2:])
    sigma = max(1.0, side / 8)
    kernel = min(2 * math.ceil(2 * sigma) + 1, 2 * ((side - 1) // 2) + 1)  # odd, and padding fits the image
    import torchvision.transforms.v2.functional as TF  # here: its first import takes seconds

    return TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])


@dataclass
class PerturbationCurves:
    """Deletion and insertion curves of a batch of maps.

    Attributes:
        fractions: (T,) share of pixels removed (deletion) or inserted (insertion), from 0 to 1.
        deletion: (B, T) target probability as the most relevant pixels are removed.
        insertion: (B, T) target probability as the most relevant pixels are put back.
        deletion_auc: (B,) area under the deletion curve (lower is better).
        insertion_auc: (B,) area under the insertion curve (higher is better).
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    steps: int = 16,
    batch_size: int = 64,
    seed: int = 0,
) -> PerturbationCurves:
    """Deletion and insertion curves (Petsiuk et al., 2018) of relevance maps.

    Args:
        model: the classifier the maps explain.
        x: (B, C, H, W) preprocessed images (the mean colour is 0 there: the deletion baseline).
        maps: (B, H, W) relevance at input resolution.
        target: (B,) class whose softmax probability is followed.
        steps: number of equal steps from 0 to all pixels (T = steps + 1 points).
        batch_size: perturbed images per forward pass (bounds memory).
        seed: tie-breaking seed.

    Returns:
        `PerturbationCurves`.
    """
    b, c, h, w = x.shape
    if maps.shape != (b, h, w):
        raise ValueError(f"maps must be (B, H, W) = {(b, h, w)} to match the images, got {tuple(maps.shape)}")
    order = relevance_order(maps, seed).to(x.device)  # (B, H*W)
    fractions = torch.linspace(0, 1, steps + 1)
    counts = (fractions * h * w).round().long()  # pixels switched at each step
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=x.device).expand(b, -1))  # rank of every pixel
    # switched[b, t, p]: pixel p is among the counts[t] most relevant pixels of image b.
    switched = rank[:, None, :] < counts.to(x.device)[None, :, None]  # (B, T, H*W)
    switched = switched.view(b, steps + 1, 1, h, w).float()
    blurred = blur_baseline(x)
    deleted = x[:, None] * (1 - switched)  # (B, T, C, H, W): baseline 0 = mean colour
    inserted = blurred[:, None] * (1 - switched) + x[:, None] * switched

    def probs(batch: torch.Tensor) -> torch.Tensor:
        flat = batch.reshape(-1, c, h, w)
        tgt = target.to(x.device).repeat_interleave(steps + 1)
        out = torch.cat([model(chunk).softmax(-1) for chunk in flat.split(batch_size)])
        return out.gather(1, tgt[:, None])[:, 0].view(b, steps + 1).cpu()

    with eval_mode(model):
        deletion, insertion = probs(deleted), probs(inserted)
    return PerturbationCurves(
        fractions,
        deletion,
        insertion,
        torch.trapezoid(deletion, fractions),
        torch.trapezoid(insertion, fractions),
    )


def spearman(a: torch.Tensor, b: torch.Tensor, absolute: bool = True) -> torch.Tensor:
    """Spearman rank correlation between paired maps (ties get their average rank).

    Args:
        a, b: (B, H, W) maps.
        absolute: correlate absolute values (Adebayo et al.'s main variant).

    Returns:
        (B,) correlations; NaN where a map is constant (no ranking to compare).
    """
    fa, fb = _flat(a).double().numpy(), _flat(b).double().numpy()
    if absolute:
        fa, fb = np.abs(fa), np.abs(fb)
    out = []
    for u, v in zip(fa, fb, strict=True):
        ru, rv = _average_ranks(u), _average_ranks(v)
        ru, rv = ru - ru.mean(), rv - rv.mean()
        denom = math.sqrt(float((ru * ru).sum() * (rv * rv).sum()))
        out.append(float((ru * rv).sum()) / denom if denom > 0 else float("nan"))
    return torch.tensor(out)


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every parameter re-initialised (the model-randomisation test).

    Every module with ``reset_parameters`` is reset, then an hvit model's own initialisation is applied
    (truncated-normal linears, He convolutions, position embeddings and class token). Buffers and
    ``preprocessing`` are kept; the original is untouched.
    """
    rand = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in rand.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        init = getattr(rand, "_init_weights", None)
        if init is not None:
            rand.apply(init)
        for name, p in rand.named_parameters():
            if name.endswith(("pos_embed", "cls_token")):
                nn.init.trunc_normal_(p, std=0.02)
    return rand
