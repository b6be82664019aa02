"""One training queue for the whole server, so a class can share one machine.

Every browser session that asks to train puts a `LiveTraining` run into the same `TrainingQueue`
(`training_queue()` returns the server's one). At most ``max_jobs`` runs train at once, in the order
they were asked for; the others wait and can see their place and an expected wait. A monitor thread
checks every ``poll_s`` seconds:

- a run whose browser session has ended (the tab was closed) is stopped, or leaves the queue;
- a session that has ended loses its uploaded data sets (their folders are deleted) once none of its
  runs still reads them;
- a free slot goes to the next waiting run.

Threads. ``torch.set_num_threads`` sets the calling thread's OpenMP team size (measured with torch's
OpenMP build: a job thread that sets 1 leaves the server's threads at 2), so each job sets its own share,
``threads_per_job = cores // max_jobs``, at its start. The default is one job per two cores, each with
two threads: on a 2-core machine one run at a time with both cores. Two runs at once there each get
one core, so the second finishes no sooner and the first later; and a run with more threads than its
share spin-waits against the other (tens of images/s instead of hundreds).

Priority. Each run's thread (and the OpenMP threads torch starts for it) runs at nice ``nice`` (10 by
default, `hvit.demo.priority`): on a machine a class shares, a click's work gets the CPU before a run,
and the run trains with what is left. Runs still share among themselves by their thread counts.

A server-wide budget keeps the waiting and running jobs within ``memory_budget`` bytes (each job's
estimate: `estimate_job_bytes`) and the extracted uploads within ``disk_budget`` bytes; beyond it,
`submit` and `track_upload` raise `TrainingQueueFull` with a message saying what is in use.

Settings (environment variables, read when the server's queue is first created):

- ``HVIT_TRAIN_JOBS``: runs training at once (default ``max(1, cores // 2)``);
- ``HVIT_TRAIN_THREADS``: torch threads per run (default ``max(1, cores // jobs)``);
- ``HVIT_TRAIN_NICE``: the runs' CPU priority, 0 (as high as the pages) to 19 (default 10);
- ``HVIT_TRAIN_MEMORY_MB``: memory budget of the queued and running jobs (default a quarter of RAM);
- ``HVIT_TRAIN_DISK_MB``: disk budget of the extracted uploads (default 2048).
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hvit.demo.live_training import TrainingRequest
from hvit.demo.priority import check_nice

MIB = 2**20
DEFAULT_IMAGES_PER_SEC = 300.0  # a classroom preset on two laptop cores; replaced by measured rates


class Trainable(Protocol):
    """What the queue runs: `LiveTraining` (tests use a stand-in)."""

    request: TrainingRequest
    phase: str

    def start(self, num_threads: int | None = None, nice: int | None = None) -> None: ...
    def stop(self) -> None: ...
    def progress(self) -> dict[str, float]: ...

    @property
    def finished(self) -> bool: ...


class TrainingQueueFull(RuntimeError):
    """The server's training budget is used up; the message says by what and what to do."""


@dataclass
class Job:
    """One run in the queue.

    Attributes:
        run: the `LiveTraining` (or any `Trainable`).
        session_id: the browser session that asked for it.
        memory_bytes: its share of the memory budget (`estimate_job_bytes`).
        state: "waiting", "running" or "ended".
        submitted, started, ended: ``time.monotonic()`` stamps (``None`` until they happen).
        number: its place in the order of submission (1 for the first job of the server).
    """

    run: Trainable
    session_id: str
    memory_bytes: int
    number: int
    state: str = "waiting"
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    ended: float | None = None


def estimate_job_bytes(request: TrainingRequest, img_size: int = 64) -> int:
    """A generous estimate of one run's memory: its data set in memory, the model and the optimiser.

    Images are held as float32 tensors (generated shapes are; folders are decoded on the fly, so this
    overestimates them), and 256 MiB cover a classroom preset's weights, gradients, AdamW state,
    activations of a batch and torch's allocator slack.
    """
    images = request.train_images + request.val_images
    return images * 3 * img_size * img_size * 4 + 256 * MIB


def folder_bytes(path: str | Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def streamlit_session_active(session_id: str) -> bool:
    """Whether a Streamlit browser session is still connected (True outside a Streamlit server).

    Streamlit has no "session ended" hook (streamlit/streamlit#8545): polling the runtime is the way.
    """
    from streamlit import runtime

    if not runtime.exists():
        return True
    return runtime.get_instance().is_active_session(session_id)


class TrainingQueue:
    """First come, first served training for a whole server, within a thread, memory and disk budget.

    Args:
        max_jobs: runs training at once.
        threads_per_job: torch threads each run uses (``torch.set_num_threads`` in its thread).
        memory_budget: bytes the waiting and running jobs may use together (`estimate_job_bytes`).
        disk_budget: bytes the tracked uploads may use on disk together.
        is_active: ``session_id -> bool``; a job or upload of a session that is no longer active is
            cancelled or removed (default: `streamlit_session_active`).
        poll_s: how often the monitor thread checks; ``None``: no thread (call `sweep` yourself).
        nice: CPU priority of the runs' threads, 0 (normal) to 19 (lowest): clicks come first.
    """

    def __init__(
        self,
        max_jobs: int = 1,
        threads_per_job: int = 1,
        memory_budget: int = 1024 * MIB,
        disk_budget: int = 2048 * MIB,
        is_active: Callable[[str], bool] = streamlit_session_active,
        poll_s: float | None = 0.5,
        nice: int = 10,
    ) -> None:
        if max_jobs < 1 or threads_per_job < 1:
            raise ValueError(
                f"max_jobs and threads_per_job must be at least 1, got {max_jobs} and {threads_per_job}"
            )
        self.max_jobs, self.threads_per_job, self.nice = max_jobs, threads_per_job, check_nice(nice)
        self.memory_budget, self.disk_budget = memory_budget, disk_budget
        self.is_active = is_active
        self.poll_s = poll_s
        self.jobs: list[Job] = []  # waiting and running, in the order of submission
        self.history: list[Job] = []  # ended jobs, oldest first (the most recent 100)
        self.uploads: dict[str, dict[Path, int]] = {}  # session -> folder -> bytes
        self._released: set[tuple[str, Path]] = set()  # uploads to delete once no run reads them
        self.images_per_sec = DEFAULT_IMAGES_PER_SEC
        self._numbers = itertools.count(1)
        self._lock = threading.RLock()
        self._monitor: threading.Thread | None = None

    @classmethod
    def from_environment(cls) -> TrainingQueue:
        """A queue with the settings of the ``HVIT_TRAIN_*`` environment variables (module docstring)."""
        cores = os.cpu_count() or 1
        jobs = _env_int("HVIT_TRAIN_JOBS", max(1, cores // 2))
        threads = _env_int("HVIT_TRAIN_THREADS", max(1, cores // jobs))
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        memory = _env_int("HVIT_TRAIN_MEMORY_MB", ram // 4 // MIB) * MIB
        disk = _env_int("HVIT_TRAIN_DISK_MB", 2048) * MIB
        nice = _env_int("HVIT_TRAIN_NICE", 10, minimum=0, maximum=19)
        return cls(jobs, threads, memory, disk, nice=nice)

    # ----- jobs ------------------------------------------------------------------------------------------

    def submit(self, run: Trainable, session_id: str, memory_bytes: int | None = None) -> Job:
        """Queue ``run`` for ``session_id``; it starts when a slot is free (at once if one is).

        Raises:
            TrainingQueueFull: the job would take the queue past its memory budget.
        """
        need = estimate_job_bytes(run.request) if memory_bytes is None else memory_bytes
        with self._lock:
            self.sweep()  # retire the runs that have ended since the last check: their budget is free
            used = sum(j.memory_bytes for j in self.jobs)
            if used + need > self.memory_budget:
                raise TrainingQueueFull(
                    f"The server's training budget is full: {len(self.jobs)} run(s) already use about "
                    f"{used / MIB:.0f} MiB of the {self.memory_budget / MIB:.0f} MiB allowed, and this run "
                    f"needs about {need / MIB:.0f} MiB. Try again when a run has finished, choose fewer "
                    "training images, or ask the teacher to raise HVIT_TRAIN_MEMORY_MB."
                )
            run.phase = "queued"
            job = Job(run, session_id, need, next(self._numbers))
            self.jobs.append(job)
            self._start_waiting()
        self._ensure_monitor()
        return job

    def cancel(self, run: Trainable) -> None:
        """Stop ``run`` (running) or take it out of the queue (waiting)."""
        run.stop()
        self.sweep()

    def job_of(self, run: Trainable) -> Job | None:
        with self._lock:
            return next((j for j in self.jobs + self.history if j.run is run), None)

    def position(self, run: Trainable) -> int:
        """0 while ``run`` trains; its place among the waiting runs (1 = next) while it waits; -1 else."""
        with self._lock:
            waiting = [j for j in self.jobs if j.state == "waiting"]
            for place, job in enumerate(waiting, start=1):
                if job.run is run:
                    return place
            return 0 if any(j.run is run and j.state == "running" for j in self.jobs) else -1

    def expected_wait(self, run: Trainable) -> float:
        """Seconds until ``run`` should start: the running runs' time left and the waiting runs ahead.

        Every slot frees when its run ends (its own estimate of the time left, once it has one); the
        runs ahead take the earliest free slot in turn, each for its images at the measured rate.
        """
        with self._lock:
            slots = sorted(self._left(j) for j in self.jobs if j.state == "running")
            slots += [0.0] * (self.max_jobs - len(slots))
            for job in self.jobs:
                if job.state != "waiting":
                    continue
                slots.sort()
                if job.run is run:
                    return slots[0]
                slots[0] += self._duration(job.run.request)
            return 0.0

    def _duration(self, request: TrainingRequest) -> float:
        return request.epochs * (request.train_images + request.val_images) / self.images_per_sec

    def _left(self, job: Job) -> float:
        eta = job.run.progress().get("eta_seconds", float("nan"))
        if eta == eta:  # not NaN: the trainer has measured its speed
            return max(0.0, eta)
        return self._duration(job.run.request)

    def _start_waiting(self) -> None:
        running = sum(j.state == "running" for j in self.jobs)
        for job in self.jobs:
            if running >= self.max_jobs:
                break
            if job.state == "waiting":
                job.state, job.started = "running", time.monotonic()
                job.run.start(num_threads=self.threads_per_job, nice=self.nice)
                running += 1

    # ----- uploads ---------------------------------------------------------------------------------------

    def track_upload(self, session_id: str, folder: str | Path) -> None:
        """Count an extracted upload of ``session_id`` against the disk budget; removed with the session.

        Raises:
            TrainingQueueFull: the uploads would exceed the disk budget (``folder`` is then deleted).
        """
        folder = Path(folder)
        size = folder_bytes(folder)
        with self._lock:
            used = sum(sum(f.values()) for f in self.uploads.values())
            if used + size > self.disk_budget:
                shutil.rmtree(folder, ignore_errors=True)
                raise TrainingQueueFull(
                    f"The server's space for uploaded data sets is full: {used / MIB:.1f} MiB of "
                    f"{self.disk_budget / MIB:.1f} MiB are in use and this upload needs {size / MIB:.1f} MiB. "
                    "Try a smaller zip, try again when another session has ended, or ask the teacher to raise "
                    "HVIT_TRAIN_DISK_MB."
                )
            self.uploads.setdefault(session_id, {})[folder] = size
        self._ensure_monitor()

    def release_upload(self, session_id: str, folder: str | Path) -> None:
        """Delete an upload its session no longer needs (replaced or cleared); while a run still reads
        it, the deletion waits for that run to end."""
        with self._lock:
            folder = Path(folder)
            if folder in self.uploads.get(session_id, {}):
                self._released.add((session_id, folder))
            self._delete_released()

    def _delete_released(self) -> None:
        for session_id, folder in list(self._released):
            if not self._in_use(folder):
                self._released.discard((session_id, folder))
                self.uploads.get(session_id, {}).pop(folder, None)
                shutil.rmtree(folder, ignore_errors=True)

    def _in_use(self, folder: Path) -> bool:
        """Whether a run that has not ended trains on ``folder`` (or a folder inside it)."""
        for job in self.jobs:
            dataset = Path(job.run.request.dataset)
            if not job.run.finished and (dataset == folder or folder in dataset.parents):
                return True
        return False

    def upload_bytes(self) -> int:
        with self._lock:
            return sum(sum(f.values()) for f in self.uploads.values())

    # ----- the monitor ---------------------------------------------------------------------------------------

    def sweep(self) -> None:
        """One check: stop the runs of ended sessions, retire ended runs, delete unneeded uploads, and
        start waiting runs in the free slots."""
        with self._lock:
            sessions = {j.session_id for j in self.jobs} | set(self.uploads)
            gone = {s for s in sessions if not self.is_active(s)}
            for job in self.jobs:
                if job.session_id in gone and not job.run.finished:
                    job.run.stop()
            for job in list(self.jobs):
                if job.state == "waiting" and job.run.finished:  # stopped before it started
                    self._retire(job)
                elif job.state == "running" and job.run.finished:
                    self._retire(job)
            for session in gone:
                if not any(j.session_id == session for j in self.jobs):
                    for folder in self.uploads.pop(session, {}):
                        self._released.discard((session, folder))
                        shutil.rmtree(folder, ignore_errors=True)
            self._delete_released()
            self._start_waiting()

    def _retire(self, job: Job) -> None:
        self.jobs.remove(job)
        job.ended = time.monotonic()
        if job.state == "running" and job.run.phase == "completed" and job.started is not None:
            images = job.run.request.epochs * (job.run.request.train_images + job.run.request.val_images)
            self.images_per_sec = 0.5 * self.images_per_sec + 0.5 * images / max(
                1e-3, job.ended - job.started
            )
        job.state = "ended"
        self.history = [*self.history, job][-100:]

    def _ensure_monitor(self) -> None:
        if self.poll_s is None:
            return
        with self._lock:
            if self._monitor is None or not self._monitor.is_alive():
                self._monitor = threading.Thread(target=self._watch, name="hvit-training-queue", daemon=True)
                self._monitor.start()

    def _watch(self) -> None:
        while True:
            time.sleep(self.poll_s)
            try:
                self.sweep()
            except Exception:  # a monitor that dies would leave every later job waiting forever
                import logging

                logging.getLogger("hvit.demo").exception("training queue check failed")
            with self._lock:
                if not self.jobs and not self.uploads:
                    self._monitor = None
                    return


def _env_int(name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {number}")
    return number


_QUEUE: TrainingQueue | None = None
_QUEUE_LOCK = threading.Lock()


def training_queue() -> TrainingQueue:
    """The server's one queue (created from the environment on first use)."""
    global _QUEUE
    with _QUEUE_LOCK:
        if _QUEUE is None:
            _QUEUE = TrainingQueue.from_environment()
        return _QUEUE
