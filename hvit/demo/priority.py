"""Background work that yields the CPU to the people clicking.

A server for a class runs two kinds of work: answers to clicks, which someone is waiting for, and
background work (a queued training run, the warm-up of the caches), which nobody watches second by
second. On Linux every thread is a task with its own nice value, so a background thread can lower its
own priority without touching the server's other threads: the scheduler then gives a click's work the
CPU first and the background thread what is left. Threads a thread creates afterwards (torch's OpenMP
team, started on the thread's first parallel region) inherit its nice value.
"""

from __future__ import annotations

import os
import threading

__all__ = ["check_nice", "lower_this_thread"]


def check_nice(nice: int) -> int:
    """``nice`` if it is a nice value a thread may take (0 normal to 19 lowest), else ``ValueError``."""
    if not 0 <= nice <= 19:
        raise ValueError(f"nice must be from 0 (normal) to 19 (lowest priority), got {nice}")
    return nice


def lower_this_thread(nice: int) -> bool:
    """Give the calling thread (only) the nice value ``nice`` (0 normal, 19 the lowest priority).

    Call it at the start of the thread, before the thread's first torch operation, so that the OpenMP
    threads torch starts for it inherit the value.

    Args:
        nice: 0 to 19 (an unprivileged process may only lower its priority).

    Returns:
        ``True`` if the thread now runs at ``nice``; ``False`` where that is not possible (not Linux, or
        a value the system refuses): the thread then runs at normal priority.

    Raises:
        ValueError: ``nice`` outside 0..19.
    """
    check_nice(nice)
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        return False
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == nice
