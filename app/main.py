"""The hvit classroom: how a hierarchical vision transformer sees, in four pages.

Run from the repository root, offline:

    streamlit run app/main.py

This file starts the server. `streamlit run` finds the `st.App` below and serves its script,
``app/navigation.py`` (the home page, the model chooser in the sidebar and the navigation to the pages
in ``pages/``). Before the server answers anyone, `lifespan` imports what every page needs and loads
the default model, so the first student to open the app does not wait for it; then the rest of the
imports and the warm-up (``app/common.py``) run in the background while the class reads.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

APP_DIR = Path(__file__).resolve().parent
NAVIGATION = APP_DIR / "navigation.py"


@asynccontextmanager
async def lifespan(app: st.App) -> AsyncIterator[dict]:
    """What the server does once, before its first answer and after its last one.

    Start: import `common` (Streamlit, torch, hvit, plotly, pandas) and load the default shipped model
    into the server's cache (the first sessions copy it from there), then start the background imports
    and the warm-up (they begin once the first page is served). Stop: let the warm-up finish its
    current step.

    Yields:
        ``{"model_in_use": ...}``: the default model as the warm-up got it (Streamlit keeps it in
        ``app.state``), or ``None`` when its file is missing (the server starts anyway, and the sidebar
        says what is wrong).
    """
    if str(APP_DIR) not in sys.path:  # `streamlit run app/main.py` puts it there; uvicorn might not
        sys.path.insert(0, str(APP_DIR))
    print("hvit: loading torch, hvit and the classroom model before the first page…", flush=True)
    start = time.perf_counter()
    import common

    try:
        in_use = common.load_default_model()
    except FileNotFoundError as err:  # start anyway: the sidebar says the same and offers other models
        print(f"hvit: the default model is unavailable, starting without it: {err}", flush=True)
        in_use = None
    loaded = "" if in_use is None else f" ({in_use.key})"
    print(f"hvit: ready in {time.perf_counter() - start:.1f} s{loaded}", flush=True)
    common.import_in_background()
    if in_use is not None:
        common.warm_up(in_use)
    try:
        yield {"model_in_use": in_use}
    finally:
        common.stop_warm_up()


app = st.App(NAVIGATION, lifespan=lifespan)
