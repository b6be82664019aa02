"""The non-UI helpers the classroom app relies on (`hvit.demo`): zip checks, costs, scores, live training."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hvit import demo
from hvit.registry import model_config


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def _zip(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in names:
            z.writestr(name, _png())
    return buf.getvalue()


def test_zip_in_the_dataset_layout_is_unpacked(tmp_path: Path) -> None:
    data = _zip(
        [f"mine/train/{c}/{i}.png" for c in ("cat", "dog") for i in range(3)] + ["mine/val/cat/9.png"]
    )
    root = demo.extract_dataset_zip(data, tmp_path)
    assert root == tmp_path / "mine"
    assert demo.folder_classes(root) == ["cat", "dog"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["../evil/train/a/1.png", "train/b/1.png"], "unsafe path"),
        (["/abs/train/a/1.png"], "unsafe path"),
        (["train/a/1.png"], "at least two"),
        (["images/a/1.png", "images/b/1.png", "other/x.png"], "expected layout"),
    ],
)
def test_bad_zips_are_refused_in_words(tmp_path: Path, names: list[str], message: str) -> None:
    with pytest.raises(demo.DatasetZipError, match=message):
        demo.extract_dataset_zip(_zip(names), tmp_path)
    assert not any(tmp_path.parent.glob("evil"))


def test_not_a_zip_and_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(demo.DatasetZipError, match="not a readable zip"):
        demo.extract_dataset_zip(b"plain text", tmp_path)
    monkeypatch.setattr(demo.zip_upload, "MAX_UNZIPPED_BYTES", 10)
    with pytest.raises(demo.DatasetZipError, match="expands to"):
        demo.extract_dataset_zip(_zip(["train/a/1.png", "train/b/1.png"]), tmp_path)


_LAYOUT = ["train/cat/1.png", "train/dog/1.png"]


def _patched(data: bytes, local: tuple[int, bytes], central: tuple[int, bytes]) -> bytes:
    """``data`` with bytes replaced at an offset of every local header (PK 3 4) and every central
    directory entry (PK 1 2): how a member's flags or method are rewritten by hand."""
    out = bytearray(data)
    for signature, (offset, value) in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        start = out.find(signature)
        while start != -1:
            out[start + offset : start + offset + len(value)] = value
            start = out.find(signature, start + 4)
    return bytes(out)


def _stored(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in names:
            z.writestr(name, _png())
    return buf.getvalue()


def _refused(data: bytes, dest: Path, message: str) -> None:
    """The zip is refused with ``message`` and leaves no folder behind."""
    with pytest.raises(demo.DatasetZipError, match=message):
        demo.extract_dataset_zip(data, dest)
    assert not dest.exists()


def test_encrypted_members_are_refused(tmp_path: Path) -> None:
    # zipfile cannot write encrypted members: set the "encrypted" flag (bit 0 of the general purpose
    # flags, at offset 6 of a local header and 8 of a central entry) of plain stored members.
    data = _patched(_stored(_LAYOUT), (6, b"\x01\x00"), (8, b"\x01\x00"))
    _refused(data, tmp_path / "x", r"member 'train/cat/1.png' is encrypted \(password-protected\); zip")


def test_unreadable_compression_methods_are_refused(tmp_path: Path) -> None:
    data = _patched(_stored(_LAYOUT), (8, b"\x09\x00"), (10, b"\x09\x00"))  # 9: Deflate64
    _refused(data, tmp_path / "x", "uses a compression method this server cannot read")


def test_a_damaged_member_is_found_before_anything_is_written(tmp_path: Path) -> None:
    data = bytearray(_stored(_LAYOUT + ["train/dog/2.png"]))
    png = _png()
    at = data.rfind(png)  # the last member's bytes, stored as they are
    data[at + len(png) // 2] ^= 0xFF
    _refused(bytes(data), tmp_path / "x", r"member 'train/dog/2.png' is damaged \(Bad CRC-32")


def test_a_zip_bomb_is_refused_by_its_compression_ratio(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in _LAYOUT:
            z.writestr(name, _png())
        z.writestr("train/cat/flat.bmp", bytes(20 * 2**20))  # 20 MiB of zeros: about 20 KB zipped
    data = buf.getvalue()
    assert len(data) < 100_000
    _refused(data, tmp_path / "x", r"expands to 20 MiB, \d+ times its size \(the limit is 100\)")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (_LAYOUT + ["train/cat/1.png/2.png"], "both a file and a folder named 'train/cat/1.png'"),
        (_LAYOUT + ["train/dog/1.png"], "contains 'train/dog/1.png' twice"),
        (_LAYOUT + [f"train/dog/{'x' * 300}.png"], "a name too long to unpack .*304 characters"),
        (_LAYOUT + ["train/dog/" + "d/" * 40 + "1.png"], "a path 43 folders deep"),
    ],
    ids=["file-and-folder", "twice", "long-name", "deep"],
)
def test_conflicting_or_unwieldy_names_are_refused(tmp_path: Path, names: list[str], message: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        data = _zip(names)
    _refused(data, tmp_path / "x", message)


def test_links_are_refused(tmp_path: Path) -> None:
    import stat

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in _LAYOUT:
            z.writestr(name, _png())
        link = zipfile.ZipInfo("train/dog/2.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    _refused(buf.getvalue(), tmp_path / "x", r"contains a link \('train/dog/2.png'\); only plain files")


def test_too_many_members_and_a_layout_problem_found_after_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A class folder without images passes the zip checks but not the data set reader: still refused,
    # in the reader's words, with the server's folder left out of the message, and nothing left behind.
    data = _zip(_LAYOUT + ["train/notes/readme.png.txt"])
    _refused(data, tmp_path / "x", r"^class folder 'train/notes' holds no image files")
    monkeypatch.setattr(demo.zip_upload, "MAX_ZIP_FILES", 2)
    _refused(data, tmp_path / "y", "the zip holds 3 files and folders; the limit is 2")


def test_macos_extras_are_left_out(tmp_path: Path) -> None:
    data = _zip([f"mine/{n}" for n in _LAYOUT] + ["__MACOSX/mine/train/cat/._1.png", "mine/.DS_Store"])
    root = demo.extract_dataset_zip(data, tmp_path / "x")
    assert root == tmp_path / "x" / "mine"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["mine"]
    assert not (root / ".DS_Store").exists()


def test_a_failure_while_unpacking_removes_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = demo.zip_upload._decompress
    written: list[str] = []

    def disk_fills_up(archive, member, out=None):  # noqa: ANN001
        if out is not None and written:
            raise OSError(28, "No space left on device")
        real(archive, member, out)
        if out is not None:
            written.append(member.filename)

    monkeypatch.setattr(demo.zip_upload, "_decompress", disk_fills_up)
    _refused(_zip(_LAYOUT), tmp_path / "x", r"could not be unpacked on the server \(\[Errno 28\] No space")
    assert written == ["train/cat/1.png"]


def test_an_unpacked_data_set_is_removed_when_done(tmp_path: Path) -> None:
    with demo.unpack_dataset_zip(_zip(_LAYOUT + ["train/cat/2.png"]), tmp_path) as unpacked:
        assert unpacked.classes == ["cat", "dog"]
        assert unpacked.folder.parent == tmp_path and (unpacked.root / "train" / "cat" / "2.png").is_file()
    assert not unpacked.folder.exists()
    unpacked.cleanup()  # again: nothing to do, no error
    with pytest.raises(demo.DatasetZipError, match="at least two"):
        demo.unpack_dataset_zip(_zip(["train/cat/1.png"]), tmp_path)
    assert not any(tmp_path.iterdir())  # the refused zip's folder is gone too
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty"):
        demo.extract_dataset_zip(_zip(_LAYOUT), tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_attention_cost_orders_the_three_attentions() -> None:
    cost = demo.attention_cost(model_config("pvt_v2_b0"), [224, 448, 896])
    glob, sra, lin = (cost[k]["gmacs"] for k in demo.ATTENTION_KINDS)
    assert all(g > s > 0 for g, s in zip(glob, sra, strict=True))
    # doubling the side: global attention x16 (N^2), linear SRA about x4 (N)
    assert glob[1] / glob[0] == pytest.approx(16, rel=0.05)
    assert lin[2] / lin[1] == pytest.approx(4, rel=0.05)


def test_pyramid_figure_draws_every_stage() -> None:
    from hvit.complexity import model_complexity

    fig = demo.pyramid_figure(model_complexity(model_config("hvit_nano_ms")))
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert all(f"stage {i}" in texts for i in range(1, 5))
    assert "head group 2" in texts  # multi-scale: one key grid per head group


def test_scores_against_a_mask() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    inside = np.zeros((8, 8))
    inside[3, 3] = 1.0
    rows = demo.map_scores({"hit": inside, "flat": np.ones((8, 8))}, mask)
    assert rows[0]["pointing game"] == 1.0 and rows[0]["mask mass"] == 1.0
    assert rows[1]["pointing game"] == 0.0 and rows[1]["mask mass"] == pytest.approx(rows[1]["chance"])
    assert demo.mask_at(mask, 16).shape == (16, 16) and demo.mask_at(mask, 16).sum() == 16


def test_live_training_runs_in_the_background_and_saves(tmp_path: Path) -> None:
    run = demo.LiveTraining(demo.TrainingRequest(epochs=1, train_images=32, val_images=16, batch_size=16))
    run.start()
    run.join(120)
    assert run.phase == "completed", run.message
    assert run.progress()["fraction"] == 1.0
    assert run.results["confusion"].sum() == 16
    from hvit.train import load_checkpoint

    path = tmp_path / "trained.safetensors"
    path.write_bytes(run.checkpoint_bytes())
    assert load_checkpoint(path).preprocessing.class_names == run.class_names


def test_training_curves_figure_draws_batches_epoch_means_and_validation():
    batches = [{"epoch": i / 4, "loss": 2.0 - i / 10, "accuracy": i / 10} for i in range(1, 9)]
    epochs = [
        {
            "epoch": e,
            "train_loss": 1.5 / e,
            "train_accuracy": 0.4 * e,
            "val_loss": 1.6 / e,
            "val_accuracy": 0.35 * e,
        }
        for e in (1, 2)
    ]
    fig = demo.training_curves_figure(batches, epochs)
    by_name = {}
    for trace in fig.data:
        by_name.setdefault(trace.name, []).append(trace)
    assert {k: len(v) for k, v in by_name.items()} == {
        "training (each batch)": 2,
        "training (epoch mean)": 2,
        "validation": 2,
    }
    loss_val, acc_val = by_name["validation"]
    assert list(loss_val.y) == [1.6, 0.8] and list(acc_val.y) == [0.35, 0.7] and list(acc_val.x) == [1, 2]
    assert list(by_name["training (each batch)"][1].y) == [b["accuracy"] for b in batches]
    # A run without validation (or before its first epoch ends) draws what it has, nothing invented.
    no_val = [{k: v for k, v in e.items() if not k.startswith("val_")} for e in epochs]
    assert {t.name for t in demo.training_curves_figure(batches, no_val).data} == {
        "training (each batch)",
        "training (epoch mean)",
    }
    assert {t.name for t in demo.training_curves_figure(batches, []).data} == {"training (each batch)"}
