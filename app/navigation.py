"""The classroom app's script: the home page, the model chooser in the sidebar (shared by every page of
a browser tab) and the navigation to the pages in the top-level ``pages/`` folder.

`app/main.py` serves it (``streamlit run app/main.py``) after loading what every page needs; tests run
it directly with ``AppTest.from_file("app/navigation.py")``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
ROOT = APP_DIR.parent
if str(APP_DIR) not in sys.path:  # `streamlit run app/main.py` puts it there; AppTest does not
    sys.path.insert(0, str(APP_DIR))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from hvit import demo  # noqa: E402

logger = logging.getLogger("hvit.app")

PAGES = [
    # file, title, icon, url path, what it teaches
    (
        "1_architecture.py",
        "Architecture explorer",
        ":material/account_tree:",
        "architecture",
        "Set image size, patch size and every stage's width, heads, MLP ratio, depth and spatial-reduction "
        "ratio, and watch the token pyramid, the cost table and the attention cost curves change. "
        "Teaches why a pyramid with spatial-reduction attention (SRA) is affordable at high resolution.",
    ),
    (
        "2_training.py",
        "Live training",
        ":material/model_training:",
        "training",
        "Train a small model on the shapes data set (or MNIST / CIFAR-10 when online, or your own zip) "
        "and watch loss, accuracy and an attention snapshot evolve epoch by epoch. Teaches what learning "
        "does to attention.",
    ),
    (
        "3_attention.py",
        "Attention and attributions",
        ":material/visibility:",
        "attention",
        "Pick a stage, block, head and query position and see where it looks, compare heads, follow "
        "attention through the stages (rollout) and compare Captum attributions with a ground-truth mask. "
        "Teaches how to read these maps and how to test them.",
    ),
    (
        "4_classroom.py",
        "Classroom walkthrough",
        ":material/school:",
        "classroom",
        "A guided lesson in six steps, from patches to the class decision, each with a formula and a live "
        "figure. The step is kept in the address bar, so a link reopens the same view.",
    ),
]


def home() -> None:
    """The home page: what the app is, what each page teaches, which model is loaded."""
    st.title("How a hierarchical vision transformer sees")
    st.markdown(
        "A **pyramid vision transformer** (PVT) cuts an image into patches, turns each patch into a *token*, "
        "and lets tokens exchange information through **attention**. Unlike the original ViT it works on a "
        "*pyramid* of ever coarser token grids, like a CNN, and its attention compares each query token "
        "with a **reduced key grid**, which keeps the cost manageable. This app lets you take the model "
        "apart, train it, and look inside it, all on this computer, without internet."
    )
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader("The pages")
        for file, title, icon, _, teaches in PAGES:
            with st.container(border=True):
                st.page_link(str(ROOT / "pages" / file), label=f"**{title}**", icon=icon)
                st.caption(teaches)
    with right:
        st.subheader("Model in use")
        in_use = common.model_in_use()
        with st.container(border=True):
            if in_use is None:
                st.info("No model is loaded: choose one in the sidebar (the shipped models work offline).")
            else:
                st.markdown(f"**{common.SOURCES[in_use.source]}**")
                st.caption(in_use.label)
                cfg = in_use.model.config
                cols = st.columns(3)
                cols[0].metric("Input", f"{in_use.model.preprocessing.img_size} px")
                cols[1].metric("Stages", cfg.num_stages)
                cols[2].metric("Classes", len(in_use.class_names))
                st.caption(demo.model_domain(in_use.model).summary())
        st.caption(
            "Change the model in the sidebar: every page uses it. A model you train on the training page "
            "stays in this browser tab only."
        )
        st.subheader("In class")
        st.markdown(
            "1. Start with the **Classroom walkthrough**, one step per idea.\n"
            "2. Open the **Architecture explorer** when someone asks *why does this cost so much?*\n"
            "3. Train for a minute on the **Live training** page, then *use this model* everywhere.\n"
            "4. Finish on **Attention and attributions**: which explanations can we trust?"
        )


def main() -> None:
    common.setup_page()
    pages = [st.Page(home, title="Home", icon=":material/home:", url_path="home", default=True)]
    pages += [
        st.Page(str(ROOT / "pages" / file), title=title, icon=icon, url_path=url)
        for file, title, icon, url, _ in PAGES
    ]
    navigation = st.navigation(pages, position="sidebar")
    in_use = common.model_sidebar()
    if in_use is not None and in_use.source == "shipped":
        common.warm_up(in_use)  # the class's next clicks, computed while it reads this page
    try:
        navigation.run()
    except Exception as err:  # the safety net: a message and a next step, never a traceback on the page
        logger.exception("page %s failed", navigation.title)
        st.error(
            f"This page hit an unexpected problem ({type(err).__name__}: {err}). Try another model or image "
            "in the sidebar, or reload the page; the details are in the terminal running Streamlit.",
            icon=":material/error:",
        )
    finally:
        common.page_served()  # the server's background work may begin


main()
