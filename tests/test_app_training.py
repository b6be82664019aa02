"""AppTest of the live training page: start, live curves, stop, results, "use this model"."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

NAVIGATION = str(Path(__file__).resolve().parents[1] / "app" / "navigation.py")
PAGE = "../pages/2_training.py"


def _page() -> AppTest:
    at = AppTest.from_file(NAVIGATION, default_timeout=90).run()
    return at.switch_page(PAGE).run()


def _tiny(at: AppTest, epochs: int = 1) -> None:
    at.number_input(key="train_epochs").set_value(epochs)
    at.select_slider(key="train_images").set_value(60)
    at.select_slider(key="train_val_images").set_value(30)
    at.select_slider(key="train_batch").set_value(32)


def _wait(at: AppTest, done, timeout: float = 150.0) -> None:  # noqa: ANN001 - a predicate on the run
    start = time.monotonic()
    while not done(at.session_state["train_run"]):
        assert time.monotonic() - start < timeout, "training did not reach the expected state in time"
        time.sleep(0.5)
        at.run()
    at.run()


def test_one_epoch_on_a_tiny_set_shows_curves_and_results() -> None:
    at = _page()
    assert not at.exception and not at.error
    _tiny(at)
    at.button(key="train_start").click().run()
    assert at.session_state["train_run"].running
    _wait(at, lambda run: run.finished)
    run = at.session_state["train_run"]
    assert run.phase == "completed", run.message
    assert not at.exception and not at.error
    assert len(run.epochs) == 1 and run.batches
    assert len(run.snapshots) == 2  # before training and after the epoch
    # when it ended, on the server's clock, and how long it took (from Start)
    assert run.started_at is not None and run.started_at <= run.ended_at <= time.time()
    ended = time.strftime("%H:%M:%S", time.localtime(run.ended_at))
    done = [s.value for s in at.success if "Training completed" in s.value]
    assert done and done[0].startswith(f"Training completed at {ended}, after "), done
    # curves, the attention snapshots and the confusion matrix
    assert len(at.get("plotly_chart")) == 3
    assert at.get("download_button")
    # "use this model": every page now uses it
    at.button(key="train_use").click().run()
    assert at.session_state["model_source"] == "trained"
    assert at.session_state["model_in_use"].key == f"trained:{run.run_id}"
    at.switch_page("../pages/3_attention.py").run()
    assert at.session_state["model_in_use"].model is run.model
    assert not at.exception


def test_stop_ends_the_run_and_keeps_the_model() -> None:
    at = _page()
    _tiny(at, epochs=20)
    at.button(key="train_start").click().run()
    _wait(at, lambda run: run.batches)
    at.button(key="train_stop").click().run()
    _wait(at, lambda run: run.finished)
    run = at.session_state["train_run"]
    assert run.phase == "stopped" and len(run.epochs) < 20
    assert any("stopped" in w.value for w in at.warning)
    assert at.button(key="train_start")  # ready for a new run


def test_sessions_do_not_share_training() -> None:
    first, second = _page(), _page()
    _tiny(first)
    first.button(key="train_start").click().run()
    second.run()
    assert "train_run" not in second.session_state
    first.session_state["train_run"].stop()
    first.session_state["train_run"].join(60)


def test_offline_download_fails_with_a_message(monkeypatch) -> None:  # noqa: ANN001
    import hvit.data.classic as classic

    def offline(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("MNIST is not in the data folder and could not be downloaded (offline)")

    monkeypatch.setattr(classic, "load_classic", offline)
    monkeypatch.setattr("hvit.data.load.load_classic", offline)
    at = _page()
    at.selectbox(key="train_dataset").select("mnist").run()
    at.button(key="train_start").click().run()
    _wait(at, lambda run: run.finished)
    assert not at.exception
    assert any("could not be downloaded" in e.value for e in at.error)


def _zip_upload(at: AppTest, data: bytes) -> None:
    at.selectbox(key="train_dataset").select("zip").run()
    at.file_uploader(key="train_zip").set_value(("mine.zip", data, "application/zip")).run()


def test_a_bad_zip_is_answered_in_words_and_leaves_nothing_behind(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import io
    import tempfile
    import zipfile

    from PIL import Image

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the page unpacks uploads
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in ("train/cat/1.png", "train/dog/1.png"):
            z.writestr(name, png.getvalue())
    good = buf.getvalue()
    encrypted = bytearray(good)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag
        at = encrypted.find(signature)
        while at != -1:
            encrypted[at + offset] |= 1
            at = encrypted.find(signature, at + 4)

    at = _page()
    _zip_upload(at, bytes(encrypted))
    assert not at.exception
    assert [e.value for e in at.error] == [
        "This zip cannot be used: the zip's member 'train/cat/1.png' is encrypted (password-protected); "
        "zip the data set folder again with a standard tool (no password, default compression)"
    ]
    assert at.button(key="train_start").disabled
    assert not list(tmp_path.glob("hvit-zip-*")), list(tmp_path.iterdir())  # the refused upload is gone
    _zip_upload(at, good)
    assert not at.exception and not at.error
    assert any("2 classes (cat, dog)" in s.value for s in at.success)
    assert not at.button(key="train_start").disabled
