"""The server's training queue: order, the budget, cancellation when a session ends, clean-up of files.

The queue's runs are stand-ins whose end the test decides (no timing), and ``is_active`` is injected,
so every test is deterministic; the last one runs a real (tiny) `LiveTraining` through the monitor.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from hvit.demo import LiveTraining, TrainingQueue, TrainingQueueFull, TrainingRequest
from hvit.demo.training_queue import MIB, estimate_job_bytes

STARTED: list[str] = []


class FakeRun:
    """A run that starts when told, ends when the test says so, and stops at once when asked."""

    def __init__(self, name: str, images: int = 300, dataset: str = "shapes") -> None:
        self.name = name
        self.request = TrainingRequest(dataset=dataset, epochs=1, train_images=images, val_images=0)
        self.phase = "ready"
        self.threads: int | None = None
        self.nice: int | None = None
        self.eta = math.nan

    def start(self, num_threads: int | None = None, nice: int | None = None) -> None:
        self.phase, self.threads, self.nice = "running", num_threads, nice
        STARTED.append(self.name)

    def stop(self) -> None:
        if not self.finished:
            self.phase = "stopped"

    def complete(self) -> None:
        self.phase = "completed"

    @property
    def finished(self) -> bool:
        return self.phase in ("completed", "stopped", "failed")

    def progress(self) -> dict[str, float]:
        return {"eta_seconds": self.eta}


@pytest.fixture(autouse=True)
def _clear_started():
    STARTED.clear()


def _queue(active=lambda s: True, **kwargs) -> TrainingQueue:  # noqa: ANN001
    return TrainingQueue(is_active=active, poll_s=None, **{"max_jobs": 1, "threads_per_job": 2, **kwargs})


def test_runs_start_in_the_order_they_were_asked_for_with_their_thread_share():
    q = _queue()
    a, b, c = FakeRun("a"), FakeRun("b", images=600), FakeRun("c")
    for run in (a, b, c):
        q.submit(run, "s", memory_bytes=1)
    assert STARTED == ["a"] and a.threads == 2 and a.nice == 10  # below the pages' priority by default
    assert (b.phase, c.phase) == ("queued", "queued")
    assert [q.position(r) for r in (a, b, c)] == [0, 1, 2]
    a.eta = 10.0  # a's own estimate of its time left; b takes 600 images at the default 300 images/s
    assert q.expected_wait(b) == 10.0
    assert q.expected_wait(c) == 12.0
    a.complete()
    q.sweep()
    assert STARTED == ["a", "b"] and q.position(a) == -1 and q.position(c) == 1
    b.complete()
    q.sweep()
    assert STARTED == ["a", "b", "c"]
    assert [j.run.name for j in q.history] == ["a", "b"]


def test_two_slots_run_two_jobs_and_the_third_waits():
    q = _queue(max_jobs=2, threads_per_job=1)
    runs = [FakeRun(n) for n in "abc"]
    for run in runs:
        q.submit(run, "s", memory_bytes=1)
    assert STARTED == ["a", "b"] and runs[2].phase == "queued"
    assert q.expected_wait(runs[2]) == 1.0  # both slots free after their estimated 300 / 300 s
    runs[1].complete()
    q.sweep()
    assert STARTED == ["a", "b", "c"]


def test_the_memory_budget_refuses_a_job_with_a_clear_message_until_one_ends():
    q = _queue(memory_budget=3 * MIB)
    runs = [FakeRun(n) for n in "abcd"]
    for run in runs[:3]:
        q.submit(run, "s", memory_bytes=MIB)
    with pytest.raises(TrainingQueueFull, match=r"3 run\(s\) already use about 3 MiB of the 3 MiB allowed"):
        q.submit(runs[3], "s", memory_bytes=MIB)
    assert runs[3].phase == "ready" and len(q.jobs) == 3
    runs[0].complete()
    q.submit(runs[3], "s", memory_bytes=MIB)  # the ended run's share is free again
    assert [j.run.name for j in q.jobs] == ["b", "c", "d"]


def test_estimate_grows_with_the_images_and_covers_the_model():
    small = estimate_job_bytes(TrainingRequest(train_images=60, val_images=30))
    large = estimate_job_bytes(TrainingRequest(train_images=6000, val_images=150))
    assert 256 * MIB < small < large and large - small == (6150 - 90) * 3 * 64 * 64 * 4


def test_a_closed_session_stops_its_running_job_and_leaves_the_queue():
    active = {"s1", "s2"}
    q = _queue(active=lambda s: s in active)
    a, b, c = FakeRun("a"), FakeRun("b"), FakeRun("c")
    q.submit(a, "s1", memory_bytes=1)
    q.submit(b, "s2", memory_bytes=1)
    q.submit(c, "s1", memory_bytes=1)
    active.discard("s1")  # the tab of s1 was closed
    q.sweep()
    assert a.phase == "stopped" and c.phase == "stopped"
    assert STARTED == ["a", "b"]  # c never started; b took the slot
    assert [j.run.name for j in q.jobs] == ["b"]


def test_the_owner_can_take_a_waiting_job_out_of_the_queue():
    q = _queue()
    a, b, c = FakeRun("a"), FakeRun("b"), FakeRun("c")
    for run in (a, b, c):
        q.submit(run, "s", memory_bytes=1)
    q.cancel(b)
    assert b.phase == "stopped" and q.position(c) == 1
    q.cancel(a)
    assert STARTED == ["a", "c"]


def _folder(tmp_path: Path, name: str, size: int) -> Path:
    folder = tmp_path / name
    (folder / "train" / "cat").mkdir(parents=True)
    (folder / "train" / "cat" / "0.png").write_bytes(b"x" * size)
    return folder


def test_uploads_are_deleted_when_replaced_over_budget_or_when_the_session_ends(tmp_path: Path):
    active = {"s1", "s2"}
    q = _queue(active=lambda s: s in active, disk_budget=MIB)
    first, second = _folder(tmp_path, "first", 400 * 1024), _folder(tmp_path, "second", 400 * 1024)
    q.track_upload("s1", first)
    q.track_upload("s2", second)
    assert q.upload_bytes() == 800 * 1024
    too_big = _folder(tmp_path, "big", 300 * 1024)
    with pytest.raises(
        TrainingQueueFull, match=r"0\.8 MiB of 1\.0 MiB are in use and this upload needs 0\.3 MiB"
    ):
        q.track_upload("s2", too_big)
    assert not too_big.exists() and q.upload_bytes() == 800 * 1024

    # s1 trains on its upload, then closes the tab: the folder stays while the run reads it
    run = FakeRun("a", dataset=str(first / "train"))
    q.submit(run, "s1", memory_bytes=1)
    q.release_upload("s1", first)  # replaced while a run reads it: kept
    assert first.exists()
    active.discard("s1")
    q.sweep()  # the run is told to stop (the stand-in stops at once) and retires; then the folder goes
    assert run.phase == "stopped" and not first.exists() and q.upload_bytes() == 400 * 1024

    # s2 replaces its upload while training on it: deleted once the run has ended
    run = FakeRun("b", dataset=str(second))
    q.submit(run, "s2", memory_bytes=1)
    q.release_upload("s2", second)
    assert second.exists()
    run.complete()
    q.sweep()
    assert not second.exists() and q.upload_bytes() == 0


def test_a_real_run_stops_and_frees_its_slot_when_its_session_ends():
    active = {"s1", "s2"}
    q = TrainingQueue(max_jobs=1, threads_per_job=1, is_active=lambda s: s in active, poll_s=0.05)
    run = LiveTraining(TrainingRequest(epochs=50, train_images=64, val_images=16, batch_size=16))
    waiting = LiveTraining(TrainingRequest(epochs=1, train_images=32, val_images=16, batch_size=16))
    q.submit(run, "s1")
    q.submit(waiting, "s2")
    assert run.phase in ("preparing", "running") and waiting.phase == "queued"
    active.discard("s1")
    run.join(120)
    assert run.phase == "stopped" and len(run.epochs) < 50
    assert run.nice == 10  # its thread ran below the pages' priority
    for _ in range(600):  # the monitor gives it the slot within its poll interval
        if waiting.phase != "queued":
            break
        time.sleep(0.1)
    waiting.join(120)
    assert waiting.phase == "completed", waiting.message


def test_a_background_thread_lowers_its_own_priority_only():
    import os
    import threading

    from hvit.demo.priority import lower_this_thread

    seen = {}

    def work() -> None:
        seen["ok"] = lower_this_thread(7)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == {"ok": True, "nice": 7}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller is untouched
    with pytest.raises(ValueError, match="from 0 .* to 19"):
        lower_this_thread(20)


def test_the_priority_setting_is_checked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HVIT_TRAIN_NICE", "25")
    with pytest.raises(ValueError, match="HVIT_TRAIN_NICE must be at most 19, got 25"):
        TrainingQueue.from_environment()
    monkeypatch.setenv("HVIT_TRAIN_NICE", "0")
    assert TrainingQueue.from_environment().nice == 0
    with pytest.raises(ValueError, match="nice must be from 0"):
        TrainingQueue(nice=-1, poll_s=None)
