"""Shared pytest fixtures: everything runs on CPU, offline, with deterministic seeds."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The app's background warm-up (app/common.py `warm_up`) would compute a dozen images' maps behind
# every app test; tests/test_app_home.py checks it on its own.
os.environ.setdefault("HVIT_WARM_UP", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model training tests: they gain nothing from a second
    thread, and on a busy 2-core machine OpenMP threads spin-waiting for each other make every step
    many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
