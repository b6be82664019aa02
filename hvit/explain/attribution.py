"""Attribution maps through Captum: one call, seven methods, one (H, W) map aligned with the input.

Attention says where a layer *looks*; an attribution says which input pixels the *prediction* depends
on. The methods are Captum's, not re-implemented here; this module only chooses sensible settings,
keeps memory bounded, and reduces every method's output to one value per pixel:

| method | Captum | map | memory bound |
|---|---|---|---|
| ``saliency`` | `Saliency` (abs) | sum over channels of abs(gradient) | one backward |
| ``integrated_gradients`` | `IntegratedGradients` | signed sum over channels | ``internal_batch_size`` |
| ``input_x_gradient`` | `InputXGradient` | signed sum over channels | one backward |
| ``gradient_shap`` | `GradientShap` | signed sum over channels | samples in chunks |
| ``smoothgrad`` | `NoiseTunnel(Saliency)` | sum over channels of abs(gradient) | ``nt_samples_batch_size`` |
| ``occlusion`` | `Occlusion` | signed mean over channels | ``perturbations_per_eval`` |
| ``grad_cam`` | `LayerGradCam` on ``stages[stage].feature_map`` | ReLU, bilinear to the input | one backward |

The signed methods keep their sign because it means something: integrated gradients, input x gradient
and GradientSHAP add up (over pixels and channels) to the change of the logit from the baseline
(completeness), and occlusion says whether hiding a patch lowers or raises the logit. Maps are never
normalised here: a near-zero map stays near zero. The baseline of the path methods (integrated
gradients, GradientSHAP) is a black image by default (Sundararajan et al.'s choice; ``AttributionSettings.baseline``). Not the
all-zero *normalised* input: a patch embedding is a linear map followed by LayerNorm, and LayerNorm
ignores scale, so with a zero conv bias ``f(a * x)`` is the same for every ``a > 0`` and jumps at
``a = 0``. The integral then misses the jump and completeness fails (measured on a freshly initialised
``hvit_nano``: a convergence delta as large as the logit difference itself). Occlusion replaces a patch by the mean colour (zero), which
involves no path and is unaffected.

Every stage's output passes through ``stage.feature_map`` (an identity with the (B, C, h, w) map), the
hook point Captum's layer methods need. A PVT v1 model (``hvit_seed``, class token) reads its class
token after the last blocks; the last stage's map is a side branch that never reaches the logits, so
Grad-CAM there is zero by construction: it is returned as a zero map with a ``note`` saying why.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hvit.config import HViTConfig
from hvit.explain._inputs import ImageLike, eval_mode, prepare_images

METHODS: tuple[str, ...] = (
    "saliency",
    "integrated_gradients",
    "input_x_gradient",
    "gradient_shap",
    "smoothgrad",
    "occlusion",
    "grad_cam",
)
SIGNED_METHODS = frozenset({"integrated_gradients", "input_x_gradient", "gradient_shap", "occlusion"})
_ALIASES = {  # after lower-casing and turning "-" and " " into "_"
    "ig": "integrated_gradients",
    "gradcam": "grad_cam",
    "input_x_grad": "input_x_gradient",
    "inputxgradient": "input_x_gradient",
    "gradientshap": "gradient_shap",
    "noise_tunnel": "smoothgrad",
    "smooth_grad": "smoothgrad",
}


def canonical_method(method: str) -> str:
    """The canonical name of ``method`` (accepts a few aliases such as "ig" and "gradcam")."""
    key = method.strip().lower().replace("-", "_").replace(" ", "_")
    name = _ALIASES.get(key, key)
    if name not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    return name


@dataclass
class AttributionSettings:
    """Knobs of the attribution methods (defaults suit both 32 px classroom models and 224 px PVTs).

    Attributes:
        n_steps: integration steps of integrated gradients.
        internal_batch_size: integrated-gradients evaluations per forward/backward pass.
        nt_samples: noisy copies for SmoothGrad.
        nt_samples_batch_size: noisy copies per pass.
        noise_level: SmoothGrad noise std as a fraction of the input's value range (Smilkov et al.:
            10-20%).
        shap_samples: GradientSHAP samples (random points between a baseline and the input).
        shap_samples_batch_size: GradientSHAP samples per pass.
        shap_stdev: std of the Gaussian noise GradientSHAP adds to each sample.
        baseline: reference image of integrated gradients and GradientSHAP: "black" (pixel value 0),
            "blur" (the input blurred, Gaussian sigma = side / 8) or "mean" (the mean colour, all-zero
            normalised input; see the module docstring for why it is not the default).
        occlusion_window: side of the occluding square in pixels (default: image side / 8, at least 2).
        occlusion_stride: step of the window (default: half the window).
        perturbations_per_eval: occluded images per forward pass.
    """

    n_steps: int = 32
    internal_batch_size: int = 32
    nt_samples: int = 16
    nt_samples_batch_size: int = 8
    noise_level: float = 0.15
    shap_samples: int = 16
    shap_samples_batch_size: int = 8
    shap_stdev: float = 0.1
    baseline: str = "black"
    occlusion_window: int | None = None
    occlusion_stride: int | None = None
    perturbations_per_eval: int = 64


@dataclass
class Attribution:
    """One attribution method's result for a batch.

    Attributes:
        map: (B, H, W) one value per input pixel (signed for ``signed`` methods).
        method: canonical method name.
        target: (B,) the class each map explains.
        signed: whether negative values are meaningful (evidence against the target).
        stage: the stage of a Grad-CAM map (``None`` for other methods).
        convergence_delta: (B,) integrated gradients' completeness error
            ``sum(attributions) - (f(x) - f(baseline))``; ``None`` for other methods.
        note: why a map is empty, when it is by construction.
    """

    map: torch.Tensor
    method: str
    target: torch.Tensor
    signed: bool
    stage: int | None = None
    convergence_delta: torch.Tensor | None = None
    note: str | None = field(default=None)


# Grad-CAM paints one value per token of the stage it reads. On a grid coarser than this many tokens a
# side the map is a few blocks over the image: the classroom model's last stage (3x3) misses the
# labelled shape (pointing game 0.07, chance 0.17), its 12x12 stage 2 finds it best (0.44).
MIN_CAM_SIDE = 8


def default_cam_stage(config: HViTConfig) -> int:
    """The stage Grad-CAM explains unless the user picks another, the one default both apps use.

    Grad-CAM weighs a stage's feature map by the gradient of the class score: deeper stages are more
    class-specific (Selvaraju et al. read the last convolutional layer) but coarser. The default is
    the deepest stage whose token grid is still at least `MIN_CAM_SIDE` tokens a side, so the map is
    fine enough to point at something. Measured on ``hvit_classroom`` (96 px; 500 held-out shapes-pair
    images, ``python -m hvit.explain.evaluate``; MODEL_CARD_classroom.md), pointing game / mask mass by
    stage: 1 (24x24) 0.33 / 0.34, **2 (12x12) 0.44 / 0.42**, 3 (6x6) 0.38 / 0.30, 4 (3x3) 0.07 / 0.16,
    chance 0.17 / 0.16. The rule picks stage 2 there, stage 2 (8x8) on the 32 px shapes model and
    stage 3 (14x14) on ``pvt_v2_b0`` at 224 px. A model that reads a class token after its last blocks
    (PVT v1) never gets its last stage, whose Grad-CAM is zero by construction.

    Args:
        config: the model's configuration (its ``img_size`` sets the grids).

    Returns:
        The 0-based stage index (stage 1 when no stage is that fine).
    """
    grids = config.stage_grids()
    usable = grids[:-1] if config.cls_token and len(grids) > 1 else grids
    fine = [s for s, (h, w) in enumerate(usable) if min(h, w) >= MIN_CAM_SIDE]
    return fine[-1] if fine else 0


def resolve_targets(
    model: nn.Module, x: torch.Tensor, target: int | list[int] | torch.Tensor | None
) -> torch.Tensor:
    """(B,) long targets: the given class(es), or the model's predicted class when ``target`` is None."""
    if target is None:
        with torch.no_grad(), eval_mode(model):
            return model(x).argmax(-1)
    t = torch.as_tensor(target, dtype=torch.long, device=x.device).flatten()
    if t.numel() == 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise ValueError(f"need one target per image ({x.shape[0]}), got {t.numel()}")
    if (t < 0).any() or (t >= model.num_classes).any():
        raise ValueError(f"targets must be class indices in 0..{model.num_classes - 1}, got {t.tolist()}")
    return t.clone()


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Switch off ``requires_grad`` of every parameter for the duration (restored in ``finally``).

    Attributions need gradients with respect to the input (or a layer's output) only. With parameters
    that require gradients, autograd also saves what their gradients would need, which costs time
    (measured: about a fifth of a forward+backward pass of pvt_v2_b0 at 224 px) and memory.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def make_baseline(model: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, C, H, W) reference input of kind "black", "blur" or "mean" for preprocessed images ``x``."""
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "black":
        mean = torch.tensor(model.preprocessing.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(model.preprocessing.std, device=x.device).view(1, -1, 1, 1)
        return ((0.0 - mean) / std).expand_as(x).to(x.dtype).clone()  # pixel 0 after normalisation
    if kind == "blur":
        from hvit.explain.faithfulness import blur_baseline

        return blur_baseline(x)
    raise ValueError(f"baseline must be 'black', 'blur' or 'mean', got {kind!r}")


def _in_chunks(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


def _grad_cam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, stage: int
) -> tuple[torch.Tensor, str | None]:
    n = len(model.stages)
    s = stage % n
    if s == n - 1 and model.stages[-1].num_prefix_tokens:
        note = (
            f"Grad-CAM on stage {s + 1} is zero: this model classifies from its class token, which is read "
            "after the last blocks, so the last stage's feature map never reaches the logits. Use an "
            "earlier stage, or a gradient method on the input."
        )
        warnings.warn(note, stacklevel=3)
        return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1]), note
    from captum.attr import LayerGradCam

    cam = LayerGradCam(model, model.stages[s].feature_map)
    layer_map = cam.attribute(x, target=target, relu_attributions=True)  # (B, 1, h, w)
    up = F.interpolate(layer_map, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, 1, H, W)
    return up[:, 0], None


def compute_attribution(
    model: nn.Module,
    images: ImageLike,
    target: int | list[int] | torch.Tensor | None = None,
    method: str = "integrated_gradients",
    stage: int = -1,
    settings: AttributionSettings | None = None,
) -> Attribution:
    """Attribute the target logit of ``model`` to the pixels of ``images`` with one Captum method.

    Args:
        model: an hvit model (any ``nn.Module`` classifier for methods other than Grad-CAM). It runs in
            eval mode; its mode is restored afterwards.
        images: one image or a batch (see `hvit.explain.prepare_images`).
        target: class index (or one per image); ``None`` explains the predicted class.
        method: one of `METHODS` (a few aliases such as "ig" and "gradcam" are accepted).
        stage: Grad-CAM's stage (0-based, negative from the end).
        settings: method knobs (`AttributionSettings`).

    Returns:
        `Attribution` with ``map`` (B, H, W) aligned with the model input.
    """
    # Captum is imported here, not with the module: its first import takes a second, and the apps
    # import this module (`default_cam_stage`, `AttributionSettings`) long before anyone asks for a map.
    from captum.attr import (
        GradientShap,
        InputXGradient,
        IntegratedGradients,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    method = canonical_method(method)
    cfg = settings or AttributionSettings()
    x = prepare_images(model, images)
    tgt = resolve_targets(model, x, target)
    delta, note, stage_out = None, None, None
    # Captum needs gradients: switch them on even if the caller (a UI callback) switched them off.
    with torch.enable_grad(), eval_mode(model), _frozen_parameters(model):
        if method == "saliency":
            raw = Saliency(model).attribute(x.detach().requires_grad_(), target=tgt, abs=True)
        elif method == "input_x_gradient":
            raw = InputXGradient(model).attribute(x.detach().requires_grad_(), target=tgt)
        elif method == "integrated_gradients":
            raw, delta = IntegratedGradients(model).attribute(
                x,
                baselines=make_baseline(model, x, cfg.baseline),
                target=tgt,
                n_steps=cfg.n_steps,
                internal_batch_size=cfg.internal_batch_size,
                return_convergence_delta=True,
            )
            delta = delta.detach().cpu()
        elif method == "smoothgrad":
            stdev = cfg.noise_level * float(x.max() - x.min())
            raw = NoiseTunnel(Saliency(model)).attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=cfg.nt_samples,
                nt_samples_batch_size=cfg.nt_samples_batch_size,
                stdevs=stdev,
                target=tgt,
                abs=True,
            )
        elif method == "gradient_shap":
            # Baselines: the reference image and one of pure noise, drawn per image (the reference
            # may depend on the image). GradientShap has no internal batch size, so its samples are
            # drawn in chunks and averaged (each chunk is an unbiased estimate of the expectation).
            reference = make_baseline(model, x, cfg.baseline)
            shap = GradientShap(model)
            chunks = _in_chunks(cfg.shap_samples, cfg.shap_samples_batch_size)
            per_image = []
            for i in range(x.shape[0]):
                baselines = torch.cat([reference[i : i + 1], torch.randn_like(x[i : i + 1])])
                per_image.append(
                    sum(
                        k
                        * shap.attribute(
                            x[i : i + 1],
                            baselines=baselines,
                            n_samples=k,
                            stdevs=cfg.shap_stdev,
                            target=tgt[i : i + 1],
                        )
                        for k in chunks
                    )
                    / cfg.shap_samples
                )
            raw = torch.cat(per_image)
        elif method == "occlusion":
            side = min(x.shape[-2:])
            window = cfg.occlusion_window or max(2, side // 8)
            step = cfg.occlusion_stride or max(1, window // 2)
            raw = Occlusion(model).attribute(
                x,
                sliding_window_shapes=(x.shape[1], window, window),
                strides=(x.shape[1], step, step),
                baselines=0.0,
                target=tgt,
                perturbations_per_eval=cfg.perturbations_per_eval,
            )
        else:  # grad_cam
            stage_out = stage % len(model.stages)
            pixel_map, note = _grad_cam(model, x, tgt, stage_out)
            raw = None
    if raw is not None:
        raw = raw.detach()
        if method == "occlusion":
            pixel_map = raw.mean(1)  # every channel of a window gets the same value: keep its units
        else:
            pixel_map = raw.sum(1)  # (B, H, W); for saliency/SmoothGrad a sum of absolute values
    return Attribution(
        pixel_map.detach().float().cpu(), method, tgt.cpu(), method in SIGNED_METHODS, stage_out, delta, note
    )


def attribute(
    model: nn.Module,
    image: ImageLike,
    target: int | list[int] | torch.Tensor | None = None,
    method: str = "integrated_gradients",
    stage: int = -1,
    settings: AttributionSettings | None = None,
) -> torch.Tensor:
    """An attribution map aligned with the input, from one of Captum's methods.

    Args:
        model: an hvit model.
        image: a PIL image, a path, an array, or a tensor: (C, H, W) / (B, C, H, W), uint8 pixels or an
            already preprocessed float batch.
        target: the class to explain (``None``: the predicted class).
        method: "saliency", "integrated_gradients", "input_x_gradient", "gradient_shap", "smoothgrad",
            "occlusion" or "grad_cam" (see the table in this module's docstring).
        stage: the stage whose output Grad-CAM uses (0-based, -1 the last).
        settings: `AttributionSettings` (integration steps, samples, batch sizes, occlusion window).

    Returns:
        (H, W) for one image, (B, H, W) for a batch, at the model's input resolution. Signed for
        integrated gradients, input x gradient, GradientSHAP and occlusion; never normalised.
    """
    result = compute_attribution(model, image, target, method, stage, settings)
    single = not (isinstance(image, torch.Tensor) and image.ndim == 4)
    return result.map[0] if single else result.map
