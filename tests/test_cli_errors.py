"""Both command lines answer every bad invocation with a sentence on stderr and a non-zero status,
before any data or model is built, and never with a traceback (unless --debug asks for it)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hvit.command_line as command_line
from hvit.explain import evaluate
from hvit.train import cli
from hvit.train.checkpoint import _DIGEST_PLACEHOLDER

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a data set or a model is built: the checks must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("data or a model was built before the arguments were checked")

    monkeypatch.setattr(cli, "prepare_run", forbidden)
    monkeypatch.setattr("hvit.registry.create_model", forbidden)
    monkeypatch.setattr("hvit.data.make_shapes", forbidden)


def run_main(main, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return info.value.code, err


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "a_file.txt"
    path.write_text("not a folder")
    return path


TRAIN_USAGE_ERRORS = [
    (["--img-size", "0"], "argument --img-size: 0 is out of range; give a whole number from 8 to 8,192"),
    (["--img-size", "100000"], "argument --img-size: 100,000 is out of range"),
    (["--img-size", "big"], "argument --img-size: 'big' is not a whole number"),
    (["--threads", "-1"], "argument --threads: -1 is out of range; give a whole number from 1 to 1,024"),
    (["--val-size", "0"], "argument --val-size: 0 is out of range; give a whole number >= 1"),
    (["--train-size", "0"], "argument --train-size: 0 is out of range"),
    (["--epochs", "0"], "argument --epochs: 0 is out of range"),
    (["--batch-size", "-4"], "argument --batch-size: -4 is out of range"),
    (["--lr", "nan"], "argument --lr: nan is out of range; give a number in (0, inf)"),
    (["--beta2", "1"], "argument --beta2: 1 is out of range; give a number in [0, 1)"),
    (["--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["--device", "banana"], "--device 'banana' is not a device; use --device auto"),
    (["--output", "."], "--output . is a folder; give a file name"),
    (["--dataset", "/no/such/folder"], "--dataset '/no/such/folder' is neither a built-in data set"),
    (["--img-size", "8192", "--model", "pvt_large"], "needs at least"),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), TRAIN_USAGE_ERRORS, ids=[" ".join(a) for a, _ in TRAIN_USAGE_ERRORS]
)
def test_train_usage_errors_exit_2_before_any_work(argv, fragment, capsys, no_work, tmp_path):
    code, err = run_main(cli.main, [*argv, "--no-progress"], capsys)
    assert code == 2
    assert fragment in err
    assert err.startswith(("python -m hvit.train: error:", "usage: python -m hvit.train"))


def test_train_device_cuda_without_cuda(capsys, no_work, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_main(cli.main, ["--device", "cuda"], capsys)
    assert code == 2 and "--device cuda: this machine has no CUDA GPU that PyTorch can use" in err


def test_train_outputs_that_cannot_be_written(capsys, no_work, a_file, monkeypatch, tmp_path):
    code, err = run_main(cli.main, ["--output", str(a_file / "run.safetensors")], capsys)
    assert code == 2 and f"{a_file} is a file, not a folder" in err

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # a read-only folder (root ignores chmod)
    code, err = run_main(cli.main, ["--output", str(tmp_path / "new" / "run.safetensors")], capsys)
    assert code == 2 and f"the folder {tmp_path} cannot be written (Permission denied)" in err
    assert not (tmp_path / "new").exists()  # nothing created on the way


def test_an_existing_checkpoint_is_kept_unless_overwrite(capsys, no_work, tmp_path):
    out = tmp_path / "run.safetensors"
    out.write_bytes(b"an earlier run")
    code, err = run_main(cli.main, ["--output", str(out)], capsys)
    assert code == 2 and "already exists; give another file name, or add --overwrite to replace it" in err
    assert out.read_bytes() == b"an earlier run"
    args = cli.build_parser().parse_args(["--output", str(out), "--overwrite", "--device", "cpu"])
    assert cli.check_args(args) == torch.device("cpu")  # allowed: the run would replace it
    args = cli.build_parser().parse_args(["--output", str(out), "--resume", str(out), "--device", "cpu"])
    assert cli.check_args(args) == torch.device("cpu")  # resuming a run writes to its own checkpoint


def test_a_damaged_resume_checkpoint_fails_at_load_with_a_message(capsys, no_work, tmp_path):
    from safetensors.torch import save

    from hvit.train.checkpoint import _seal

    meta = {"format": "hvit.checkpoint", "format_version": "2", "sha256": _DIGEST_PLACEHOLDER,
            "model": '{"class": "x.Net", "config": null}', "trainer": '{"epoch": "one"}'}  # fmt: skip
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(_seal(save({"model/w": torch.zeros(2)}, metadata=meta)))
    code, err = run_main(cli.main, ["--resume", str(damaged)], capsys)
    assert code == 1 and "trainer is {'epoch': 'one'}, but it must be an object with the keys epoch" in err


def test_a_folder_that_leaves_nothing_to_train_on_is_an_error(capsys, tmp_path):
    image = tmp_path / "one" / "train" / "cat" / "0.png"
    image.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    argv = ["--model", "hvit_nano", "--dataset", str(tmp_path / "one"), "--img-size", "16", "--epochs", "1",
            "--output", str(tmp_path / "run.safetensors"), "--no-progress", "--device", "cpu"]  # fmt: skip
    code, err = run_main(cli.main, argv, capsys)
    assert code == 1
    assert "holds only 1 training image(s), and all of them are held out for validation" in err
    assert not (tmp_path / "run.safetensors").exists()


EVALUATE_USAGE_ERRORS = [
    (
        ["--num-images", "0"],
        "argument --num-images: 0 is out of range; give a whole number from 1 to 100,000",
    ),
    (["--batch-size", "0"], "argument --batch-size: 0 is out of range"),
    (["--steps", "0"], "argument --steps: 0 is out of range"),
    (["--threads", "-1"], "argument --threads: -1 is out of range"),
    (["--model", "nope"], "argument --model: invalid choice: 'nope'"),
    (["--json", "."], "--json . is a folder; give a file name"),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), EVALUATE_USAGE_ERRORS, ids=[" ".join(a) for a, _ in EVALUATE_USAGE_ERRORS]
)
def test_evaluate_usage_errors_exit_2_before_any_work(argv, fragment, capsys, no_work, monkeypatch):
    monkeypatch.setattr("hvit.train.load_checkpoint", lambda *a, **k: pytest.fail("model loaded"))
    code, err = run_main(evaluate.main, argv, capsys)
    assert code == 2 and fragment in err


def test_evaluate_checks_its_json_before_loading_anything(capsys, no_work, a_file, tmp_path):
    # The checkpoint does not exist either: the --json problem is found first, before any loading.
    argv = ["--checkpoint", str(tmp_path / "missing.safetensors"), "--json", str(a_file / "report.json")]
    code, err = run_main(evaluate.main, argv, capsys)
    assert code == 2 and f"{a_file} is a file, not a folder" in err
    code, err = run_main(evaluate.main, argv[:2], capsys)
    assert code == 1 and "missing.safetensors' does not exist" in err


def test_evaluate_unknown_methods_are_named_before_images_are_made(capsys, monkeypatch):
    monkeypatch.setattr("hvit.data.make_shapes", lambda *a, **k: pytest.fail("images made"))
    code, err = run_main(evaluate.main, ["--model", "hvit_nano", "--methods", "lime"], capsys)
    assert code == 2 and "--methods: unknown ['lime']; the methods of this model are ['saliency'" in err


def test_check_device_names_what_this_machine_has(monkeypatch):
    assert command_line.check_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(command_line.UsageError, match=r"has 1 CUDA GPU\(s\), cuda:0 to cuda:0"):
        command_line.check_device("cuda:3")
    with pytest.raises(command_line.UsageError, match="'meta' is not supported"):
        command_line.check_device("meta")


def _subprocess(module: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("module", "argv", "code", "fragment"),
    [
        ("hvit.train", ["--device", "banana"], 2, "--device 'banana' is not a device"),
        ("hvit.explain.evaluate", ["--checkpoint", "/no/such.safetensors"], 1, "does not exist"),
    ],
)
def test_real_command_lines_end_without_a_traceback(module, argv, code, fragment):
    done = _subprocess(module, *argv)
    assert done.returncode == code
    assert fragment in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_debug_shows_the_traceback():
    done = _subprocess("hvit.explain.evaluate", "--checkpoint", "/no/such.safetensors", "--debug")
    assert done.returncode == 1
    assert (
        "Traceback" in done.stderr
        and "FileNotFoundError: checkpoint '/no/such.safetensors' does not exist" in done.stderr
    )
