"""What the command lines (``python -m hvit.train``, ``python -m hvit.explain.evaluate``) share: argument
types that refuse bad values with a sentence, checks of the device and of output files made before any
data or model is built, and one way to end with a message instead of a traceback.

Exit statuses follow the Unix convention: 0 success, 1 a failure while working (a damaged checkpoint, a
data folder without images), 2 a usage error (a bad argument, an output that cannot be written, a device
this machine does not have), 130 interrupted. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

__all__ = [
    "UsageError",
    "add_debug_flag",
    "check_device",
    "check_output_file",
    "device_memory_bytes",
    "float_in",
    "int_in",
    "reporting_errors",
]


class UsageError(Exception):
    """An argument that cannot work: the command line stops with status 2 and this message."""


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``lo`` to ``hi`` (inclusive; no upper bound when ``None``)."""
    valid = f"a whole number >= {lo:,}" if hi is None else f"a whole number from {lo:,} to {hi:,}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {valid}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value:,} is out of range; give {valid}")
        return value

    parse.__name__ = "int"  # argparse names the type in some of its own messages
    return parse


def float_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in the interval ``lo``..``hi`` (ends open or closed)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one in {interval}") from None
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo)
        if not ok or not (value < hi if hi_open else value <= hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give a number in {interval}")
        return value

    parse.__name__ = "float"
    return parse


def add_debug_flag(parser: argparse.ArgumentParser, default: object = False) -> None:
    """``--debug``: show the Python traceback of a failure instead of a one-line message."""
    parser.add_argument(
        "--debug", action="store_true", default=default, help="on failure, show the Python traceback"
    )


def check_device(text: str) -> torch.device:
    """``auto`` (the GPU when there is one), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, if this machine has it.

    Raises:
        UsageError: not a device name, or a device this machine does not have.
    """
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hint = "use --device auto (a GPU when there is one, else the CPU) or --device cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text!r} is not a device; {hint}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {text}: this machine has no CUDA GPU that PyTorch can use; {hint}")
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"--device {text}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(
                f"--device {text}: this machine has no Apple GPU (MPS) that PyTorch can use; {hint}"
            )
    elif device.type != "cpu":
        raise UsageError(f"--device {text!r} is not supported; {hint}")
    return device


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` (the GPU's, or the machine's RAM for the CPU), or ``None`` if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


def check_output_file(path: str | Path, flag: str, *, overwrite: bool = True) -> Path:
    """Check, before any work, that ``path`` can be written as a file.

    Args:
        path: the file the command will write.
        flag: the option that names it (``--output``), for the message.
        overwrite: whether an existing file may be replaced.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        UsageError: ``path`` is a folder, exists and ``overwrite`` is false, or its folder cannot be
            created or written (tested by creating and removing a temporary file there).
    """
    path = Path(path).expanduser()
    if path.is_dir() or str(path).endswith(os.sep):
        raise UsageError(f"{flag} {path} is a folder; give a file name, e.g. {flag} {path / 'out'}")
    if path.exists() and not overwrite:
        raise UsageError(
            f"{flag} {path} already exists; give another file name, or add --overwrite to replace it"
        )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the first folder that exists: created later
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(
            f"{flag} {path}: {folder} is a file, not a folder, so nothing can be written under it"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".hvit-write-test-")
    except OSError as e:
        raise UsageError(
            f"{flag} {path}: the folder {folder} cannot be written ({e.strerror or e}); choose another location"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def reporting_errors(prog: str, debug: bool = False) -> Iterator[None]:
    """Turn an exception into ``prog: error: message`` on stderr and a non-zero exit (see the module doc).

    ``ValueError`` (which includes `hvit.train.CheckpointError`) and ``OSError`` are the errors hvit raises
    with a message written for people; anything else is reported as unexpected, with the way to see more.
    With ``debug`` the exception propagates, traceback included.
    """
    try:
        yield
    except (SystemExit, GeneratorExit):
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:
        if debug:
            raise
        if isinstance(e, UsageError):
            print(f"{prog}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        if isinstance(e, (ValueError, OSError)):
            message = (
                str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}"
            )
            print(f"{prog}: error: {message or type(e).__name__}", file=sys.stderr)
        else:
            print(
                f"{prog}: error: unexpected {type(e).__name__}: {e}\n"
                "This is probably a bug in hvit: run again with --debug to see where it happened, and report it.",
                file=sys.stderr,
            )
        raise SystemExit(1) from None
