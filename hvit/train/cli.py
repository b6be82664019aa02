"""``python -m hvit.train``: train a registered model on a built-in data set or a folder of images.

Examples::

    python -m hvit.train --model hvit_nano_stem --dataset shapes --epochs 10
    python -m hvit.train --model hvit_nano_stem --dataset ./my_images     # root/<split>/<class>/<image>
    python -m hvit.train --resume runs/hvit_nano_stem-shapes.safetensors  # continue an interrupted run
    torchrun --nproc_per_node=2 -m hvit.train --model hvit_nano_stem --dataset shapes

The model's preprocessing (input size, mean, std, class names) is set from the data and stored in the
checkpoint, so ``hvit.load_checkpoint(path)`` later rebuilds a ready model. Ctrl-C stops after the
current batch and writes a checkpoint that ``--resume`` continues exactly.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from hvit.command_line import (
    UsageError,
    add_debug_flag,
    check_device,
    check_output_file,
    device_memory_bytes,
    float_in,
    int_in,
    reporting_errors,
)
from hvit.config import MAX_SIDE
from hvit.data import (
    AUGMENTATIONS,
    BUILTIN_DATASETS,
    SHAPE_SCENES,
    build_transforms,
    dataset_stats,
    infer_domain,
    load_dataset,
)
from hvit.preprocessing import Preprocessing
from hvit.train.callbacks import ProgressBar
from hvit.train.checkpoint import CheckpointError, read_checkpoint
from hvit.train.config import TrainConfig
from hvit.train.distributed import DistInfo, cleanup_distributed, init_distributed
from hvit.train.trainer import HViTTrainer, NonFiniteLossError

__all__ = ["build_parser", "main", "prepare_run"]

logger = logging.getLogger("hvit.train")

# Transformers need many images to learn from scratch: with no --epochs, small data sets get more epochs.
_MIN_IMAGES = 60_000

# Settings that may change when resuming: they do not change what is computed.
_RESUMABLE_OVERRIDES = {
    "epochs", "workers", "device", "output", "threads", "progress", "data_dir", "resume", "overwrite", "debug",
}  # fmt: skip
# Arguments about this invocation only: not stored in the checkpoint's record of the run.
_NOT_STORED = ("resume", "overwrite", "debug")
PROG = "python -m hvit.train"


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The command-line parser. With ``suppress_defaults`` only the options actually given appear."""
    import hvit.registry as registry

    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = TrainConfig()

    def add(*flags: str, default: Any = None, **kw: Any) -> None:
        p.add_argument(*flags, default=argparse.SUPPRESS if suppress_defaults else default, **kw)

    positive, non_negative = int_in(1), int_in(0)
    add("--model", default="hvit_nano_stem", choices=registry.list_models(), metavar="MODEL",
        help="registered model: " + ", ".join(registry.list_models()))  # fmt: skip
    add(
        "--dataset",
        default="shapes",
        help=f"{' | '.join(BUILTIN_DATASETS)} | path to root/<split>/<class>/<image>",
    )
    add(
        "--data-dir",
        help="where MNIST / Fashion-MNIST / CIFAR-10 are (default $HVIT_DATA_DIR or ~/.cache/hvit/data)",
    )
    add("--img-size", type=int_in(8, MAX_SIDE), help="input size in pixels (default: the model's)")
    add("--train-size", type=positive, default=6000, help="shapes: generated training images")
    add("--val-size", type=positive, default=1000, help="shapes: generated validation images")
    add("--data-seed", type=non_negative, default=0, help="shapes: seed of the generated images")
    add(
        "--val-split",
        default="auto",
        help="folder: split to validate on; 'auto' = val, else test, else 10%% of train",
    )
    add(
        "--augment",
        choices=AUGMENTATIONS,
        help="training augmentation (default: strong for cifar10, else light)",
    )
    add(
        "--drop-path-rate",
        type=float_in(0, 1, hi_open=True),
        default=0.0,
        help="stochastic depth of the model",
    )
    add(
        "--epochs",
        type=positive,
        help=f"default: {d.epochs}, or more on small data sets, so that training sees at least {_MIN_IMAGES:,} images (at most 100 epochs)",
    )
    inf = math.inf
    add("--batch-size", type=positive, default=d.batch_size, help="per process")
    add("--lr", type=float_in(0, inf, lo_open=True, hi_open=True), default=d.lr, help="peak learning rate")
    add("--min-lr-ratio", type=float_in(0, 1), default=d.min_lr_ratio)
    add("--warmup-epochs", type=float_in(0, inf, hi_open=True), default=d.warmup_epochs)
    add("--beta2", type=float_in(0, 1, hi_open=True), default=d.beta2, help="AdamW's second-moment decay")
    add("--weight-decay", type=float_in(0, inf, hi_open=True), default=d.weight_decay)
    add("--label-smoothing", type=float_in(0, 1, hi_open=True), default=d.label_smoothing)
    add(
        "--grad-clip",
        type=float_in(0, inf, hi_open=True),
        default=d.grad_clip,
        help="max gradient norm; 0 disables",
    )
    add("--no-amp", dest="amp", action="store_false", default=True, help="disable bf16 autocast on CUDA")
    add("--seed", type=non_negative, default=d.seed)
    add("--workers", type=int_in(0, 256), default=d.workers, help="DataLoader worker processes")
    add("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    add("--threads", type=int_in(1, 1024), help="torch CPU threads per process (default: torch's choice)")
    add(
        "--output",
        help="checkpoint file (default runs/<model>-<dataset>.safetensors; with --resume, that file)",
    )
    add("--overwrite", action="store_true", default=False, help="replace an existing checkpoint at --output")
    add("--resume", help="checkpoint to continue from; the run's other settings are read from it")
    add("--no-progress", dest="progress", action="store_false", default=True, help="no progress bar")
    add_debug_flag(p, default=argparse.SUPPRESS if suppress_defaults else False)
    return p


def _dataset_label(dataset: str) -> str:
    return dataset if dataset in BUILTIN_DATASETS else Path(dataset).expanduser().resolve().name


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _resolve_val(args: argparse.Namespace, train_full: Dataset, val_full_for: Any) -> tuple[Dataset, Dataset]:
    """Folder data sets: validate on 'val', else 'test', else a fixed 10% of 'train'."""
    root = Path(args.dataset).expanduser()
    if args.val_split != "auto":
        return train_full, val_full_for(args.val_split)
    for split in ("val", "test"):
        if (root / split).is_dir():
            return train_full, val_full_for(split)
    # No validation folder: hold out 10% of train, the same images every time (seeded permutation).
    n = len(train_full)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed)).tolist()
    n_val = max(1, n // 10)
    logger.info("no 'val' or 'test' folder in %s: validating on %d held-out training images", root, n_val)
    return Subset(train_full, sorted(perm[n_val:])), Subset(val_full_for("train"), sorted(perm[:n_val]))


def _check_not_empty(args: argparse.Namespace, train_full: Dataset, train: Dataset, val: Dataset) -> None:
    """No silent no-ops: training on nothing, or validating on nothing, is an error that says why."""
    where = _dataset_label(args.dataset)
    if len(train_full) == 0:
        raise ValueError(f"the training split of {where} holds no images: there is nothing to train on")
    if len(train) == 0:
        raise ValueError(
            f"{where} holds only {len(train_full)} training image(s), and all of them are held out for "
            "validation (there is no 'val' or 'test' folder): add images to its train folder, or a val folder"
        )
    if len(val) == 0:
        raise ValueError(f"the validation split of {where} holds no images: add some, or choose --val-split")


def prepare_run(
    args: argparse.Namespace, dist: DistInfo | None = None, device: str | torch.device = "cpu"
) -> HViTTrainer:
    """Build data, model and trainer from parsed command-line arguments (shared with the benchmark).

    Returns:
        A trainer with ``train_data``, ``val_data``, a model whose ``preprocessing`` carries the
        class names, mean and std of the data, and ``trainer.extra["cli"]`` holding the arguments.
    """
    import hvit.registry as registry  # the command line picks a model by name; the trainer never does

    _seed_everything(args.seed)
    overrides: dict[str, Any] = {}
    if args.img_size:
        overrides["img_size"] = args.img_size
    if args.drop_path_rate:
        overrides["drop_path_rate"] = args.drop_path_rate
    img_size = registry.model_config(args.model, **overrides).img_size
    kind = args.dataset if args.dataset in BUILTIN_DATASETS else "folder"

    def load(split: str) -> Dataset:
        if kind.startswith("shapes"):
            n = args.train_size if split == "train" else args.val_size
            return load_dataset(kind, split, num_samples=n, seed=args.data_seed, img_size=img_size)
        return load_dataset(args.dataset, split, data_dir=args.data_dir)

    train_full = load("train")
    classes = list(train_full.classes)
    if kind == "folder":
        train_data, val_data = _resolve_val(args, train_full, load)
        val_base = val_data.dataset if isinstance(val_data, Subset) else val_data
        if list(val_base.classes) != classes:
            raise ValueError(
                f"the validation split's classes {val_base.classes} differ from the training split's {classes}"
            )
    else:
        train_data, val_data, val_base = train_full, load("val"), None
    _check_not_empty(args, train_full, train_data, val_data)

    if args.epochs is None:
        args.epochs = max(TrainConfig().epochs, min(100, math.ceil(_MIN_IMAGES / max(len(train_data), 1))))
    mean, std = dataset_stats(args.dataset, img_size=img_size, data_dir=args.data_dir)
    # A generated set names its domain; the classic sets and folders are recognised by their class names.
    domain = kind if kind in SHAPE_SCENES.values() else infer_domain(classes)
    preprocessing = Preprocessing(img_size=img_size, mean=mean, std=std, class_names=classes, domain=domain)
    augment = args.augment or ("strong" if kind == "cifar10" else "light")
    train_full.transform = build_transforms(preprocessing, train=True, augment=augment)
    (val_base or val_data).transform = build_transforms(preprocessing, train=False)

    model = registry.create_model(args.model, num_classes=len(classes), **overrides)
    model.preprocessing = preprocessing
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr_ratio=args.min_lr_ratio,
        warmup_epochs=min(args.warmup_epochs, args.epochs), beta2=args.beta2, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, grad_clip=args.grad_clip or None, amp=args.amp, seed=args.seed,
        workers=args.workers, checkpoint_path=args.output,
    )  # fmt: skip
    trainer = HViTTrainer(model, None, None, device, config, train_data=train_data, val_data=val_data)
    trainer.extra = {
        "cli": {k: v for k, v in vars(args).items() if k not in _NOT_STORED},
        "dataset": _dataset_label(args.dataset),
    }
    if dist is None or dist.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        logger.info(
            "%s (%.2f M parameters, %d px) on %s: %d classes, %d training / %d validation images, %s augmentation, %d epochs",
            args.model, n_params / 1e6, img_size, _dataset_label(args.dataset), len(classes), len(train_data), len(val_data), augment, args.epochs,
        )  # fmt: skip
    return trainer


def _check_stored_args(path: str, stored: Any) -> None:
    """The run's settings stored in a checkpoint pass the same checks as typed arguments."""
    if not isinstance(stored, dict):
        raise CheckpointError(f"checkpoint '{path}' has an invalid extra.cli: {stored!r:.80}, not a mapping")
    for action in build_parser()._actions:
        value = stored.get(action.dest)
        if value is None or action.dest not in stored:
            continue
        try:
            if action.type is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                    raise argparse.ArgumentTypeError(f"{value!r:.80} is not a single value")
                action.type(str(value))
            if action.choices is not None and value not in action.choices:
                raise argparse.ArgumentTypeError(f"{value!r:.80} is not one of {', '.join(action.choices)}")
            if action.type is None and action.choices is None and not isinstance(value, (str, bool)):
                raise argparse.ArgumentTypeError(f"{value!r:.80} is not a string or true/false")
        except argparse.ArgumentTypeError as e:
            raise CheckpointError(
                f"checkpoint '{path}' stores an invalid setting for {action.option_strings[0]}: {e}"
            ) from None


def _merge_resume(args: argparse.Namespace, explicit: argparse.Namespace) -> argparse.Namespace:
    ckpt = read_checkpoint(args.resume)
    stored = ckpt.extra.get("cli")
    if not stored:
        raise UsageError(
            f"{args.resume} was not written by python -m hvit.train, so its run cannot be resumed from the "
            "command line; resume it from Python with HViTTrainer.load_checkpoint"
        )
    _check_stored_args(args.resume, stored)
    merged = argparse.Namespace(**{**vars(args), **stored})
    for key, value in vars(explicit).items():
        if key in _RESUMABLE_OVERRIDES:
            setattr(merged, key, value)
        elif stored.get(key) != value:
            raise UsageError(
                f"--{key.replace('_', '-')} {value} differs from the resumed run's {stored.get(key)!r}; "
                f"a resumed run keeps its settings (only {', '.join(sorted(_RESUMABLE_OVERRIDES))} may change)"
            )
    merged.resume = args.resume
    merged.output = explicit.output if "output" in explicit else args.resume
    return merged


def check_args(args: argparse.Namespace) -> torch.device:
    """Every check that needs no data and no model, in one place, so a bad invocation fails in a second.

    Checks the device, the data set's name or folder, the output file (a file, writable, and not an
    existing checkpoint unless ``--overwrite`` or it is the run being resumed), the training settings
    and the model configuration, and refuses a run whose estimated memory exceeds the device's.
    Fills in the default ``args.output``.

    Returns:
        The device to train on.

    Raises:
        UsageError: what is wrong and what would work.
    """
    import hvit.registry as registry
    from hvit.complexity import model_complexity

    device = check_device(args.device)
    if args.dataset not in BUILTIN_DATASETS and not Path(args.dataset).expanduser().is_dir():
        raise UsageError(
            f"--dataset {args.dataset!r} is neither a built-in data set ({', '.join(BUILTIN_DATASETS)}) nor "
            "a folder of images laid out as root/<split>/<class>/<image>"
        )
    if args.output is None:
        args.output = f"runs/{args.model}-{_dataset_label(args.dataset)}.safetensors"
    resuming_it = bool(args.resume) and Path(args.output).resolve() == Path(args.resume).resolve()
    check_output_file(args.output, "--output", overwrite=args.overwrite or resuming_it)
    try:
        epochs = args.epochs or TrainConfig().epochs
        TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, min_lr_ratio=args.min_lr_ratio,
                    warmup_epochs=min(args.warmup_epochs, epochs), beta2=args.beta2,
                    weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                    grad_clip=args.grad_clip or None, seed=args.seed, workers=args.workers)  # fmt: skip
        overrides = {
            k: v for k, v in (("img_size", args.img_size), ("drop_path_rate", args.drop_path_rate)) if v
        }
        config = registry.model_config(args.model, **overrides)
    except ValueError as e:
        raise UsageError(str(e)) from None
    available = device_memory_bytes(device)
    needed = model_complexity(config).training_bytes(args.batch_size)
    if args.dataset == "shapes":  # generated in memory: pixels and masks
        needed += (args.train_size + args.val_size) * config.img_size**2 * 4
    if available is not None and needed > available:
        gib = 2**30
        raise UsageError(
            f"training {args.model} at {config.img_size} px with batches of {args.batch_size} needs at least "
            f"{needed / gib:,.1f} GiB, but the {device.type} has {available / gib:,.1f} GiB: use a smaller "
            "--img-size or --batch-size"
            + (" or fewer generated images (--train-size, --val-size)" if args.dataset == "shapes" else "")
        )
    return device


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Every argument, the output file and the device are checked before any data or model is built. A
    failure prints what was wrong and what to do on stderr, without a traceback (``--debug`` shows it).

    Returns:
        0 when the run finished or was stopped (resumable); 1 when training diverged.

    Raises:
        SystemExit: 2 for a usage error, 1 for another failure, 130 when interrupted while preparing.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    explicit = build_parser(suppress_defaults=True).parse_args(argv)
    with reporting_errors(PROG, args.debug):
        if args.resume:
            args = _merge_resume(args, explicit)
        check_args(args)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    dist, device = init_distributed(args.device)
    logging.basicConfig(
        level=logging.INFO if dist.is_main else logging.WARNING,
        format="[%(asctime)s] %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        trainer = prepare_run(args, dist, device)
        if args.resume:
            trainer.load_checkpoint(args.resume)
        if args.progress:
            trainer.add_callbacks([ProgressBar()])

        def on_sigint(signum: int, frame: Any) -> None:
            if dist.is_main:
                logger.warning("stopping after this batch (Ctrl-C again to abort without a checkpoint)")
            trainer.request_stop()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGINT, on_sigint)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            trainer.fit()
        if dist.is_main:
            if trainer.status == "stopped":
                logger.info(
                    "%s; checkpoint %s. Continue with: python -m hvit.train --resume %s",
                    trainer.message,
                    args.output,
                    args.output,
                )
            else:
                last = trainer.history[-1] if trainer.history else {}
                logger.info(
                    "done: val accuracy %.4f; checkpoint %s",
                    last.get("val_accuracy", float("nan")),
                    args.output,
                )
        return 0
    except NonFiniteLossError:
        return 1  # the trainer has logged what happened and which checkpoint was kept
    finally:
        cleanup_distributed()
