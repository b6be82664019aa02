"""How long the explanations take: attention extraction, Grad-CAM, Saliency, integrated gradients.

    python -m hvit.bench explain [--repeats 5] [--models shipped pvt_v2_b0] [--size 224]

For each model (the shipped shapes model at its own size, registry models at ``--size`` with random
weights: timing does not depend on the weights) it reports the median time of one image's attention
extraction, Grad-CAM on the last stage, Saliency and 32-step integrated gradients, each also as a
multiple of one plain forward pass measured alternately in the same process, and the fastest run
(absolute times on a shared 2-core machine are noisy: other processes' load lands on some runs). Targets for ``pvt_v2_b0`` at 224 px:
extraction and Grad-CAM under 0.5 s, 32-step IG under 3 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence

import torch

from hvit.bench import alternating_times

TARGETS_S = {"pvt_v2_b0": {"attention extraction": 0.5, "Grad-CAM": 0.5, "IG (32 steps)": 3.0}}


def _load(name: str, size: int) -> tuple[torch.nn.Module, int, str]:
    if name == "shipped":
        from hvit.assets import SHAPES_MODEL, shipped_checkpoint
        from hvit.train import load_checkpoint

        model = load_checkpoint(shipped_checkpoint(SHAPES_MODEL)).eval()
        return model, model.preprocessing.img_size, "shipped shapes model"
    from hvit.registry import create_model

    return create_model(name).eval(), size, f"{name} (random weights)"


def bench_model(
    model: torch.nn.Module, size: int, repeats: int, ig_steps: int = 32
) -> dict[str, list[float]]:
    """Seconds of every timed run of each explanation of one (1, 3, size, size) image and of a plain
    forward pass."""
    from hvit.explain import extract_attention
    from hvit.explain.attribution import AttributionSettings, compute_attribution

    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        target = int(model(x).argmax())
    ig = AttributionSettings(n_steps=ig_steps, internal_batch_size=ig_steps)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    return alternating_times(
        {
            "forward": forward,
            "attention extraction": lambda: extract_attention(model, x),
            "Grad-CAM": lambda: compute_attribution(
                model, x, target, "grad_cam", stage=-2 if _cls(model) else -1
            ),
            "Saliency": lambda: compute_attribution(model, x, target, "saliency"),
            f"IG ({ig_steps} steps)": lambda: compute_attribution(
                model, x, target, "integrated_gradients", settings=ig
            ),
        },
        repeats=repeats,
    )


def _cls(model: torch.nn.Module) -> bool:
    # A class-token model's last-stage Grad-CAM is zero by construction; time the stage before it.
    return bool(model.stages[-1].num_prefix_tokens)


def run(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the benchmark and print one table per model; returns ``{model: {operation: median s}}``."""
    p = argparse.ArgumentParser(prog="python -m hvit.bench explain", description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=["shipped", "pvt_v2_b0"], help="'shipped' and/or registry names"
    )
    p.add_argument("--size", type=int, default=224, help="image side for registry models (default 224)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per operation (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="also write the results to this JSON file")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    results: dict[str, dict[str, float]] = {}
    print(
        f"{a.repeats} alternating runs per operation, batch 1, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    )
    for name in a.models:
        try:
            model, size, label = _load(name, a.size)
        except FileNotFoundError as err:
            print(f"\n{name}: skipped ({err})")
            continue
        runs = bench_model(model, size, a.repeats)
        times = {op: statistics.median(ts) for op, ts in runs.items()}
        results[name] = times
        print(f"\n{label} at {size} px")
        print(
            "| operation | median s | fastest s | median / forward | target (median) |\n|---|---|---|---|---|"
        )
        for op, t in times.items():
            target = TARGETS_S.get(name, {}).get(op)
            verdict = "" if target is None else f"< {target} s: {'met' if t < target else 'NOT met'}"
            print(f"| {op} | {t:.3f} | {min(runs[op]):.3f} | {t / times['forward']:.1f} | {verdict} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m hvit.bench explain``); exit status 0."""
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
