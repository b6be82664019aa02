"""The classroom app's server entry (`app/main.py`): what it loads before its first answer, and what the
app's shared module leaves for later."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"


def _server_entry():
    """app/main.py as `streamlit run` loads it (a module beside app/navigation.py)."""
    if str(APP) not in sys.path:
        sys.path.insert(0, str(APP))
    spec = importlib.util.spec_from_file_location("hvit_app_main", APP / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_streamlit_run_serves_the_navigation_script_through_st_app() -> None:
    from streamlit.web.server.app_discovery import discover_asgi_app

    # what `streamlit run app/main.py` looks for before it runs anything: an st.App named `app`
    found = discover_asgi_app(APP / "main.py")
    assert found.is_asgi_app and found.import_string == "main:app"
    main = _server_entry()
    assert isinstance(main.app, st.App)
    assert main.app.script_path == APP / "navigation.py" and main.app.script_path.is_file()
    assert main.app._user_lifespan is main.lifespan


def test_the_lifespan_loads_the_model_the_first_page_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started before the first request: the default model is read once, and the first session gets a
    copy of it from the server's cache instead of reading the file again."""
    monkeypatch.setenv("HVIT_WARM_UP", "0")
    main = _server_entry()
    import common
    from hvit import demo

    common._shipped_original.clear()
    reads: list[str] = []
    real = demo.load_shipped_model

    def counting(name: str) -> torch.nn.Module:
        reads.append(name)
        return real(name)

    monkeypatch.setattr(demo, "load_shipped_model", counting)
    # recorded, not run: they would import torchvision into, and stop the warm-up of, the test process
    imports: list[bool] = []
    stops: list[bool] = []
    monkeypatch.setattr(common, "import_in_background", lambda: imports.append(True))
    monkeypatch.setattr(common, "stop_warm_up", lambda: stops.append(True))
    threads_before = len(common._warm_threads)

    async def start_and_stop() -> dict:
        async with main.lifespan(main.app) as state:
            assert reads == [demo.SHIPPED_MODELS[demo.SHIPPED]]  # loaded before the server answers
            assert imports == [True]  # torchvision and Captum: after the model, in the background
            assert not stops
            return state

    state = asyncio.run(start_and_stop())
    assert stops == [True]  # the server's shutdown stops the warm-up
    started = state["model_in_use"]
    assert started.key == "shipped:hvit_classroom.safetensors" and not started.model.training
    assert len(common._warm_threads) == threads_before  # HVIT_WARM_UP=0: no warm-up

    at = AppTest.from_file(str(APP / "navigation.py"), default_timeout=90).run()
    assert not at.exception
    in_use = at.session_state["model_in_use"]
    assert in_use.key == started.key  # the key the warm-up fills the caches under
    assert reads == [demo.SHIPPED_MODELS[demo.SHIPPED]]  # no second read from disk
    assert in_use.model is not started.model  # but a copy of its own (hooks set by one session stay there)
    for (name, ours), theirs in zip(
        in_use.model.state_dict().items(), started.model.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs), name


def test_background_work_waits_for_the_first_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first page is served before the imports and the warm-up begin (or after a timeout)."""
    if str(APP) not in sys.path:
        sys.path.insert(0, str(APP))
    import common

    events: list[str] = []

    class Gate:  # stands in for the event: records the wait instead of blocking
        def wait(self, timeout: float) -> bool:
            events.append(f"wait {timeout}")
            return False

    monkeypatch.setattr(common, "_first_page_served", Gate())
    common._after_first_page(lambda: events.append("work"))()
    assert events == [f"wait {common.FIRST_PAGE_WAIT_S}", "work"]
    monkeypatch.setattr(common, "_warm_stop", threading.Event())
    common._warm_stop.set()  # the server is stopping: the work is not started
    common._after_first_page(lambda: events.append("late work"))()
    assert "late work" not in events

    # every script run of the app says it has answered
    served = threading.Event()
    monkeypatch.setattr(common, "_first_page_served", served)
    at = AppTest.from_file(str(APP / "navigation.py"), default_timeout=90).run()
    assert not at.exception and served.is_set()


def test_a_missing_default_model_does_not_stop_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVIT_WARM_UP", "0")
    main = _server_entry()
    import common
    from hvit import demo

    monkeypatch.setattr(common, "import_in_background", lambda: None)
    monkeypatch.setattr(common, "stop_warm_up", lambda: None)

    def missing(name: str) -> Path:
        raise FileNotFoundError(f"shipped model {name!r} is missing")

    monkeypatch.setattr(demo, "shipped_checkpoint", missing)

    async def start_and_stop() -> dict:
        async with main.lifespan(main.app) as state:
            return state

    assert asyncio.run(start_and_stop()) == {"model_in_use": None}
    at = AppTest.from_file(str(APP / "navigation.py"), default_timeout=90).run()
    assert not at.exception and "model_in_use" not in at.session_state
    assert any("shipped model 'hvit_classroom' is missing" in e.value for e in at.error)


def test_the_server_start_leaves_torchvision_captum_and_dynamo_for_later() -> None:
    # A fresh interpreter doing what the server does before its first answer; the pages import these
    # on first use (seconds each; torch._dynamo was imported by the checkpoint's meta-device check).
    code = (
        "import sys; sys.path[:0] = ['app', '.']; import common, json; common.load_default_model(); "
        "print(json.dumps({m: m in sys.modules for m in "
        "('torch', 'hvit.demo', 'torchvision', 'captum', 'torch._dynamo')}))"
    )
    env = {**os.environ, "HVIT_WARM_UP": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {
        "torch": True,
        "hvit.demo": True,
        "torchvision": False,
        "captum": False,
        "torch._dynamo": False,
    }
