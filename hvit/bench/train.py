"""Training speed on this machine: images per second, and the time the shipped recipe takes to 95%.

    python -m hvit.bench train [--models hvit_nano,hvit_nano_stem] [--skip-target] [--json out.json]

1. **Images/s** of one training step (forward, backward, the trainer's AdamW) for small presets at their own input
   size, on random images: the model's cost alone. Measured with 1 and with all CPU threads, in
   alternation, because on a busy 2-core machine two spin-waiting threads can be slower than one.
   Also the trainer's end-to-end rate on the shapes set, data pipeline included.
2. **Time to target**: the shipped model's exact command line (read from the checkpoint in
   ``hvit/assets/``), run by the same code as ``python -m hvit.train``, until validation accuracy first
   reaches the target. Generating the images is timed separately.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from hvit.bench import alternating_medians


def step_images_per_sec(name: str, batch: int, repeats: int, threads: list[int]) -> dict[int, float]:
    """Training images/s of preset ``name`` on random inputs, for each torch thread count."""
    import hvit.registry as registry
    from hvit.train import build_optimizer

    torch.manual_seed(0)
    model = registry.create_model(name, num_classes=6)
    opt = build_optimizer(model, {"lr": 1e-3})  # the trainer's optimiser (fused AdamW where available)
    size = model.config.img_size
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 6, (batch,))

    def step(n: int) -> None:
        torch.set_num_threads(n)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    medians = alternating_medians({str(n): (lambda n=n: step(n)) for n in threads}, repeats=repeats, warmup=2)
    return {int(n): batch / t for n, t in medians.items()}


def _shipped_args(path: Path) -> argparse.Namespace:
    from hvit.train import read_checkpoint
    from hvit.train.cli import build_parser

    stored = read_checkpoint(path).extra.get("cli")
    if not stored:
        raise SystemExit(f"{path} holds no command line: it was not trained by python -m hvit.train")
    return argparse.Namespace(**{**vars(build_parser().parse_args([])), **stored})


def time_to_target(args: argparse.Namespace, target: float, max_epochs: int | None) -> dict[str, Any]:
    """Run ``args`` (a `hvit.train.cli` namespace) until validation accuracy >= ``target``."""
    from hvit.train.cli import prepare_run

    args = argparse.Namespace(**vars(args))
    args.output, args.resume = None, None
    if max_epochs:
        args.epochs = max_epochs
    t0 = time.perf_counter()
    trainer = prepare_run(args)
    setup = time.perf_counter() - t0
    curve: list[tuple[float, float]] = []
    reached: dict[str, float] = {}
    start = 0.0

    class Watch:
        def on_epoch_end(self, trainer: Any, logs: dict[str, float]) -> None:
            curve.append((time.perf_counter() - start, logs["val_accuracy"]))
            if logs["val_accuracy"] >= target and not reached:
                reached.update(seconds=curve[-1][0], epoch=logs["epoch"], accuracy=logs["val_accuracy"])
                trainer.request_stop()

    trainer.add_callbacks([Watch()])
    start = time.perf_counter()
    trainer.fit()
    return {
        "setup_seconds": setup,
        "reached": bool(reached),
        **({f"target_{k}": v for k, v in reached.items()}),
        "curve": [{"seconds": round(s, 2), "val_accuracy": a} for s, a in curve],
        "train_images_per_sec": trainer.history[-1]["images_per_sec"] if trainer.history else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvit.bench train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default="hvit_nano,hvit_nano_stem,hvit_micro,hvit_nano_ms", help="comma-separated presets"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model and thread count")
    parser.add_argument(
        "--checkpoint", help="checkpoint whose command line to time (default: the shipped shapes model)"
    )
    parser.add_argument("--target", type=float, default=0.95, help="validation accuracy to reach")
    parser.add_argument(
        "--max-epochs", type=int, help="cap the timed run (default: the shipped run's epochs)"
    )
    parser.add_argument("--skip-target", action="store_true", help="only measure images/s")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    cores = torch.get_num_threads()
    threads = sorted({1, cores})
    results: dict[str, Any] = {"torch": torch.__version__, "threads_available": cores, "images_per_sec": {}}
    print(f"training step, batch {args.batch}, torch {torch.__version__}, {cores} CPU threads available")
    print("| model | input | " + " | ".join(f"img/s, {n} thread{'s' * (n > 1)}" for n in threads) + " |")
    print("|---|---|" + "---|" * len(threads))
    import hvit.registry as registry

    for name in args.models.split(","):
        rates = step_images_per_sec(name, args.batch, args.repeats, threads)
        results["images_per_sec"][name] = rates
        size = registry.model_config(name).img_size
        print(f"| {name} | {size} px | " + " | ".join(f"{rates[n]:.0f}" for n in threads) + " |")
    torch.set_num_threads(cores)

    if not args.skip_target:
        from hvit.assets import SHAPES_MODEL, shipped_checkpoint

        shipped = _shipped_args(
            Path(args.checkpoint) if args.checkpoint else shipped_checkpoint(SHAPES_MODEL)
        )
        torch.set_num_threads(shipped.threads or cores)  # as the shipped command ran
        print(
            f"\ntime to {args.target:.0%} validation accuracy with the shipped command line ({shipped.model} on "
            f"{shipped.dataset}, {torch.get_num_threads()} thread(s)):"
        )
        run = time_to_target(shipped, args.target, args.max_epochs)
        results["time_to_target"] = run
        for point in run["curve"]:
            print(f"  {point['seconds']:7.1f} s  val accuracy {point['val_accuracy']:.4f}")
        if run["reached"]:
            print(
                f"reached {run['target_accuracy']:.4f} after epoch {int(run['target_epoch'])}: {run['target_seconds']:.1f} s of "
                f"training + {run['setup_seconds']:.1f} s generating data and building the model = "
                f"{run['target_seconds'] + run['setup_seconds']:.1f} s in all"
            )
        else:
            print(f"did not reach {args.target:.0%} within {len(run['curve'])} epochs")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
