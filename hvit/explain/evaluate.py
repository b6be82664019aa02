"""Score every explanation method on held-out shapes with ground-truth masks.

    python -m hvit.explain.evaluate                          # the shipped shapes model (hvit/assets)
    python -m hvit.explain.evaluate --checkpoint runs/my_model.safetensors
    python -m hvit.explain.evaluate --model hvit_nano --num-images 8      # untrained, a smoke test

The held-out images come from the generated set the checkpoint was trained on (``shapes``, or
``shapes-pair`` for a model trained on scenes with a decoy), at the model's input size.

For every attribution method (and every stage of Grad-CAM) and every attention view (rollout, the
attention each key receives per stage) it prints: pointing game, mask mass, deletion and insertion
AUC, the model-randomisation rank correlation and the run time per image. A "random map" row gives
chance levels. Maps explain the *true* class of each image; see `hvit.explain.faithfulness` for the
exact definitions.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hvit.command_line import (
    UsageError,
    add_debug_flag,
    check_output_file,
    device_memory_bytes,
    int_in,
    reporting_errors,
)
from hvit.explain._inputs import prepare_images
from hvit.explain.attribution import METHODS, AttributionSettings, compute_attribution
from hvit.explain.faithfulness import (
    deletion_insertion,
    mask_mass,
    pointing_game,
    randomized_copy,
    spearman,
)
from hvit.explain.rollout import attention_rollout
from hvit.explain.views import attention_views
from hvit.train.checkpoint import atomic_write_bytes

logger = logging.getLogger(__name__)

# A map maker: (model, preprocessed images (B, C, H, W), targets (B,)) -> (B, H, W) relevance.
MapFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
RANDOM_REFERENCE = "random map (chance)"


def _attribution_fn(method: str, stage: int = -1, settings: AttributionSettings | None = None) -> MapFn:
    def fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return compute_attribution(model, x, target, method, stage, settings).map

    return fn


def _rollout_fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return attention_rollout(model, x).to_image(-1)


def _received_fn(stage: int) -> MapFn:
    def fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        views = attention_views(model, x)
        return torch.stack([views.received_attention(stage, image_index=i) for i in range(x.shape[0])])

    return fn


def _random_fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.shape[0], x.shape[-2], x.shape[-1])


def explanation_methods(model: nn.Module, settings: AttributionSettings | None = None) -> dict[str, MapFn]:
    """Every method the evaluation scores, by display name: the attribution methods, Grad-CAM on each
    stage, attention rollout, the attention received in the last block of each stage, and a random
    map as a chance reference."""
    fns: dict[str, MapFn] = {}
    for method in METHODS:
        if method == "grad_cam":
            for s in range(len(model.stages)):
                fns[f"grad_cam stage {s + 1}"] = _attribution_fn(method, s, settings)
        else:
            fns[method] = _attribution_fn(method, settings=settings)
    fns["attention rollout"] = _rollout_fn
    for s in range(len(model.stages)):
        fns[f"attention received stage {s + 1}"] = _received_fn(s)
    fns[RANDOM_REFERENCE] = _random_fn
    return fns


@dataclass
class MethodScores:
    """Mean scores of one method over the evaluated images (NaN-free means; see ``rho_undefined``).

    Attributes:
        name: method name.
        pointing_game: share of images whose map maximum is inside the mask (higher is better).
        mask_mass: share of positive relevance inside the mask (higher is better).
        deletion_auc: area under the deletion curve (lower is better).
        insertion_auc: area under the insertion curve (higher is better).
        randomization_rho: Spearman correlation of |map| between trained and re-initialised model
            (lower is better; NaN when not computed).
        randomization_rho_signed: the same on the signed maps.
        rho_undefined: images whose correlation is undefined (a constant map), left out of the means.
        seconds_per_image: time to compute one map (trained model, batched).
    """

    name: str
    pointing_game: float
    mask_mass: float
    deletion_auc: float
    insertion_auc: float
    randomization_rho: float
    randomization_rho_signed: float
    rho_undefined: int
    seconds_per_image: float


@dataclass
class EvaluationReport:
    """Scores of every method plus what they should be compared with.

    Attributes:
        rows: one `MethodScores` per method.
        num_images: images evaluated.
        accuracy: the model's accuracy on them.
        mask_fraction: mean share of the image covered by the object (chance level of mask mass).
        curves: per method, the mean deletion and insertion curves ``{"fractions", "deletion", "insertion"}``.
        description: what was evaluated (checkpoint, split, seed).
    """

    rows: list[MethodScores]
    num_images: int
    accuracy: float
    mask_fraction: float
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    description: str = ""

    def best(self, metric: str = "pointing_game") -> MethodScores:
        """The non-reference row with the highest ``metric``."""
        rows = [r for r in self.rows if r.name != RANDOM_REFERENCE]
        return max(rows, key=lambda r: getattr(r, metric))

    def to_markdown(self) -> str:
        """The table as Markdown (for the README and the terminal)."""

        def f(v: float, digits: int = 3) -> str:
            return "n/a" if math.isnan(v) else f"{v:.{digits}f}"

        lines = [
            f"{self.description}".strip(),
            f"{self.num_images} images, model accuracy {self.accuracy:.3f}, object covers "
            f"{self.mask_fraction:.3f} of the image on average (chance level of mask mass).",
            "",
            "| method | pointing game ↑ | mask mass ↑ | deletion AUC ↓ | insertion AUC ↑ | randomisation ρ (abs / signed) ↓ | ms per image |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            rho = f"{f(r.randomization_rho, 2)} / {f(r.randomization_rho_signed, 2)}"
            if r.rho_undefined:
                rho += f" ({r.rho_undefined} undefined)"
            lines.append(
                f"| {r.name} | {f(r.pointing_game)} | {f(r.mask_mass)} | {f(r.deletion_auc)} | "
                f"{f(r.insertion_auc)} | {rho} | {1000 * r.seconds_per_image:.1f} |"
            )
        return "\n".join(line for line in lines if line is not None)

    def to_dict(self) -> dict:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}


def _nanmean(values: list[float]) -> tuple[float, int]:
    good = [v for v in values if not math.isnan(v)]
    return (sum(good) / len(good) if good else float("nan")), len(values) - len(good)


def evaluate_explanations(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    methods: Sequence[str] | None = None,
    batch_size: int = 16,
    steps: int = 16,
    randomization: bool = True,
    settings: AttributionSettings | None = None,
    seed: int = 0,
) -> EvaluationReport:
    """Score explanation methods against ground-truth masks.

    Args:
        model: a trained hvit classifier.
        images: (N, C, H, W) uint8 pixels (or preprocessed floats) of held-out images.
        labels: (N,) true classes; the maps explain these.
        masks: (N, H', W') bool object masks (resized to the model input if H' differs).
        methods: names from `explanation_methods` (default: all).
        batch_size: images per batch.
        steps: deletion / insertion steps.
        randomization: run the model-randomisation check (doubles the cost).
        settings: `AttributionSettings` for the Captum methods.
        seed: seed of the randomised model, the tie-breaking and the random reference.

    Returns:
        `EvaluationReport`.
    """
    fns = explanation_methods(model, settings)
    names = list(fns) if methods is None else list(methods)
    unknown = [n for n in names if n not in fns]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; available: {list(fns)}")
    random_model = randomized_copy(model, seed) if randomization else None
    model.eval()
    torch.manual_seed(seed)
    per: dict[str, dict[str, list]] = {
        n: {k: [] for k in ("pg", "mm", "del", "ins", "rho", "rhos", "t", "dc", "ic")} for n in names
    }
    correct, mask_total, fractions = 0, 0.0, None
    for start in range(0, len(labels), batch_size):
        x = prepare_images(model, images[start : start + batch_size])
        y = labels[start : start + batch_size].to(x.device)
        gt = masks[start : start + batch_size].bool()
        if gt.shape[-2:] != x.shape[-2:]:
            gt = (
                torch.nn.functional.interpolate(gt[:, None].float(), size=x.shape[-2:], mode="nearest")[:, 0]
                > 0.5
            )
        with torch.no_grad():
            correct += int((model(x).argmax(-1) == y).sum())
        mask_total += float(gt.float().mean((1, 2)).sum())
        for name in names:
            t0 = time.perf_counter()
            maps = fns[name](model, x, y)
            per[name]["t"].append(time.perf_counter() - t0)
            s = per[name]
            s["pg"] += pointing_game(maps, gt).tolist()
            s["mm"] += mask_mass(maps, gt).tolist()
            curves = deletion_insertion(model, x, maps.to(x.device), y, steps=steps, seed=seed + start)
            fractions = curves.fractions
            s["del"] += curves.deletion_auc.tolist()
            s["ins"] += curves.insertion_auc.tolist()
            s["dc"].append(curves.deletion.sum(0))
            s["ic"].append(curves.insertion.sum(0))
            if random_model is not None and name != RANDOM_REFERENCE:
                rmaps = fns[name](random_model, x, y)
                s["rho"] += spearman(maps, rmaps, absolute=True).tolist()
                s["rhos"] += spearman(maps, rmaps, absolute=False).tolist()
        logger.info("evaluated %d / %d images", min(start + batch_size, len(labels)), len(labels))
    n = len(labels)
    rows, curves_out = [], {}
    for name in names:
        s = per[name]
        rho, undefined = _nanmean(s["rho"]) if s["rho"] else (float("nan"), 0)
        rho_signed, _ = _nanmean(s["rhos"]) if s["rhos"] else (float("nan"), 0)
        rows.append(
            MethodScores(
                name,
                sum(s["pg"]) / n,
                sum(s["mm"]) / n,
                sum(s["del"]) / n,
                sum(s["ins"]) / n,
                rho,
                rho_signed,
                undefined,
                sum(s["t"]) / n,
            )
        )
        curves_out[name] = {
            "fractions": fractions.tolist(),
            "deletion": (sum(s["dc"]) / n).tolist(),
            "insertion": (sum(s["ic"]) / n).tolist(),
        }
    return EvaluationReport(rows, n, correct / n, mask_total / n, curves_out)


def _trained_on(path: str) -> str:
    """The generated data set a checkpoint was trained on ("shapes" when it says none or another)."""
    from hvit.data import SHAPE_SCENES
    from hvit.train import read_checkpoint

    dataset = read_checkpoint(path).extra.get("dataset")
    return dataset if dataset in SHAPE_SCENES.values() else "shapes"


PROG = "python -m hvit.explain.evaluate"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; every number is range-checked as it is parsed."""
    from hvit.registry import list_models

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="model checkpoint (default: the shipped shapes model)")
    src.add_argument("--model", choices=list_models(), metavar="MODEL",
                     help="a registry name with random weights instead (smoke test)")  # fmt: skip
    p.add_argument("--num-images", type=int_in(1, 100_000), default=100, help="held-out shapes images")
    p.add_argument("--split", default="test", help="shapes split to draw them from (default test)")
    p.add_argument("--seed", type=int_in(0), default=0, help="seed of the shapes set and of the checks")
    p.add_argument("--batch-size", type=int_in(1, 4096), default=16)
    p.add_argument("--steps", type=int_in(1, 1000), default=16, help="deletion / insertion steps")
    p.add_argument("--methods", nargs="*", help="only these methods (names as in the table)")
    p.add_argument("--no-randomization", action="store_true", help="skip the model-randomisation check")
    p.add_argument("--json", help="also write the report (with curves) to this JSON file")
    p.add_argument("--threads", type=int_in(1, 1024), default=None, help="torch CPU threads")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> EvaluationReport:
    """Command line: ``python -m hvit.explain.evaluate --checkpoint PATH`` prints the score table.

    Arguments and the ``--json`` file are checked before the model is loaded, the methods before any
    image is made. A failure prints what was wrong on stderr, without a traceback (``--debug`` shows it).

    Raises:
        SystemExit: 2 for a usage error, 1 for another failure (e.g. a damaged checkpoint).
    """
    a = build_parser().parse_args(argv)
    with reporting_errors(PROG, a.debug):
        return _run(a)


def _run(a: argparse.Namespace) -> EvaluationReport:
    if a.json:
        check_output_file(a.json, "--json")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)

    from hvit.data import SHAPE_SCENES, make_shapes

    dataset = "shapes"
    if a.model:
        from hvit.registry import create_model

        model, source = create_model(a.model, num_classes=6).eval(), f"{a.model} (random weights)"
    else:
        from hvit.assets import SHAPES_MODEL, shipped_checkpoint
        from hvit.train import load_checkpoint

        path = a.checkpoint or shipped_checkpoint(SHAPES_MODEL)
        model, source, dataset = load_checkpoint(path).eval(), str(path), _trained_on(path)
    available = list(explanation_methods(model))
    unknown = [m for m in a.methods or () if m not in available]
    if unknown:
        raise UsageError(f"--methods: unknown {unknown}; the methods of this model are {available}")
    size = model.preprocessing.img_size
    if size < 8:
        raise UsageError(f"the model takes {size} px images; the shapes test images need at least 8 px")
    memory = device_memory_bytes(torch.device("cpu"))
    needed = a.num_images * size * size * 4  # pixels and masks, made in memory
    if memory is not None and needed > memory // 2:
        raise UsageError(
            f"--num-images {a.num_images} at {size} px needs {needed / 2**30:.1f} GiB for the images alone, "
            f"more than half of this machine's {memory / 2**30:.1f} GiB: use fewer images"
        )
    scene = next(k for k, v in SHAPE_SCENES.items() if v == dataset)
    images, labels, masks = make_shapes(a.num_images, img_size=size, seed=a.seed, split=a.split, scene=scene)
    t0 = time.perf_counter()
    report = evaluate_explanations(
        model,
        images,
        labels,
        masks,
        methods=a.methods,
        batch_size=a.batch_size,
        steps=a.steps,
        randomization=not a.no_randomization,
        seed=a.seed,
    )
    report.description = (
        f"Model: {source}. Data: {dataset} '{a.split}' split, seed {a.seed}, {size} px, {a.num_images} images "
        f"({time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} CPU threads)."
    )
    print(report.to_markdown())
    if a.json:
        atomic_write_bytes(a.json, json.dumps(report.to_dict(), indent=1).encode())
    return report


if __name__ == "__main__":
    main()
