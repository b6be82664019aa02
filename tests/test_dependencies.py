"""Every import is declared where it belongs, and the set-up commands agree with each other.

A fresh virtual environment gets only what is declared, so an import that works here merely because
something else pulled its package in (or because the machine's Python carries it) would break there.
Each part of the repository may import only from the lists that install with it:

    hvit/         pyproject.toml `dependencies` (what `pip install hvit` brings)
    app/, pages/  those + the `app` extra
    tests/        those + the `dev` extra

Imports are read from the source (ast), at module level and inside functions alike, and mapped to the
distribution that provides them with `importlib.metadata.packages_distributions`.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = {
    "hvit": ("runtime",),
    "app": ("runtime", "app"),
    "pages": ("runtime", "app"),
    "tests": ("runtime", "app", "dev"),
}
# Imports the library makes only inside a function, for a feature that needs an extra (documented where
# they are made). Anything else under hvit/ must be a runtime dependency.
LAZY_OPTIONAL = {
    ("hvit/bench/app.py", "streamlit"): "app",  # `python -m hvit.bench app` times the app
    ("hvit/demo/training_queue.py", "streamlit"): "app",  # asks Streamlit whether a job's tab is open
    ("hvit/bench/browser.py", "playwright"): "dev",  # `python -m hvit.bench browser` drives Chromium
    ("hvit/bench/classroom.py", "playwright"): "dev",  # `python -m hvit.bench classroom` likewise
    ("hvit/bench/space.py", "gradio_client"): "dev",  # `python -m hvit.bench space` calls the Space's API
    ("hvit/bench/figures.py", "playwright"): "dev",  # `python -m hvit.bench figures` draws in Chromium
}
DEV_ONLY = {"pytest", "ruff", "playwright", "gradio-client"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


@cache
def declared() -> dict[str, set[str]]:
    """Distribution names per list: ``runtime``, then one entry per optional extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lists = {"runtime": project["dependencies"], **project["optional-dependencies"]}
    return {key: {_requirement_name(r) for r in reqs} for key, reqs in lists.items()}


def _requirements_txt() -> dict[str, str]:
    """requirements.txt: normalised name -> the whole line."""
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    return {_requirement_name(ln): ln for ln in lines if ln}


def _local_modules(folder: Path) -> set[str]:
    """Modules a file of ``folder`` imports from the repository itself (hvit, app/common.py, tests/helpers.py)."""
    local = {"hvit"}
    for d in (ROOT / "app", ROOT / "pages", ROOT / "tests", folder):
        local |= {p.stem for p in d.glob("*.py")}
    return local


def third_party_imports(path: Path, local: set[str]) -> list[tuple[str, int, bool]]:
    """(top-level module, line, inside a function) for every non-stdlib, non-local import of ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(n) for n in ast.walk(node) if n is not node}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in local:
                found.append((top, node.lineno, id(node) in in_function))
    return found


def undeclared_imports(part: str) -> list[str]:
    """Every import of ``part`` (a top folder) not provided by a distribution its lists declare."""
    providers = packages_distributions()
    allowed = set().union(*(declared()[key] for key in PARTS[part]))
    folder = ROOT / part
    local = _local_modules(folder)
    problems = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for module, line, lazy in third_party_imports(path, local):
            dists = {_normalise(d) for d in providers.get(module, [])}
            where = f"{rel}:{line} imports {module!r}"
            if not dists:
                hint = (
                    "it is declared: run the README's set-up command"
                    if _normalise(module) in allowed
                    else "declare it, then run the README's set-up command"
                )
                problems.append(f"{where}, which no installed distribution provides; {hint}")
                continue
            extra = LAZY_OPTIONAL.get((rel, module))
            if dists & allowed or (extra is not None and lazy and dists & declared()[extra]):
                continue
            home = PARTS[part][-1]  # the list that belongs to this part
            problems.append(
                f"{where} (distribution {', '.join(sorted(dists))}), which {part}/ does not declare: "
                f"add it to pyproject.toml {'dependencies' if home == 'runtime' else f'extra [{home}]'}"
            )
    return problems


@pytest.mark.parametrize("part", list(PARTS))
def test_every_import_is_a_declared_direct_dependency(part):
    problems = undeclared_imports(part)
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def test_the_check_catches_an_undeclared_import(tmp_path, monkeypatch):
    # A package that is installed (gradio needs it) but that nothing declares: works here, would
    # break in a fresh environment built from the declarations.
    fake = tmp_path / "hvit"
    fake.mkdir()
    (fake / "uses_yaml.py").write_text(
        "def read(text):\n    import yaml\n\n    return yaml.safe_load(text)\n"
    )
    (fake / "fine.py").write_text("import torch\nimport hvit.model\nfrom . import uses_yaml\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(declared(), "runtime", {"torch"})
    assert undeclared_imports("hvit") == [
        "hvit/uses_yaml.py:2 imports 'yaml' (distribution pyyaml), which hvit/ does not declare: "
        "add it to pyproject.toml dependencies"
    ]


def test_lazy_optional_imports_are_inside_functions_and_declared_in_their_extra():
    for (rel, module), extra in LAZY_OPTIONAL.items():
        imports = [i for i in third_party_imports(ROOT / rel, {"hvit"}) if i[0] == module]
        assert imports and all(lazy for _, _, lazy in imports), (
            f"{rel}: import {module} only inside a function"
        )
        assert _normalise(module) in declared()[extra]


def test_the_space_installs_what_it_runs_and_no_test_tools():
    requirements = _requirements_txt()
    # app/gradio_app.py runs without hvit installed: it needs hvit's runtime dependencies and Gradio.
    assert declared()["runtime"] | {"gradio"} == set(requirements)
    assert not DEV_ONLY & set(requirements)
    assert DEV_ONLY <= declared()["dev"]
    # One Gradio version everywhere: the Space's front matter, requirements.txt and the app extra.
    (gradio_app_pin,) = [
        r
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
            "app"
        ]
        if _requirement_name(r) == "gradio"
    ]
    sdk = re.search(r"^sdk_version: (\S+)$", (ROOT / "README.md").read_text(), re.M).group(1)
    assert requirements["gradio"] == gradio_app_pin == f"gradio=={sdk}"


def _readme_command(after: str) -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(re.escape(after) + r".*?```bash\n(.*?)\n```", readme, re.S)
    assert block, f"no bash block after {after!r} in the README"
    return block.group(1).strip()


def test_ci_runs_the_readme_test_command_word_for_word():
    ci = [
        ln
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln and not ln.startswith(("#", "set ", "cd ", "export "))
    ]
    test_command = _readme_command("Install and run the tests")
    assert ci == [test_command]
    # A clean room: a new virtual environment without system packages, cleared first, with both extras.
    assert test_command.startswith("python3 -m venv --clear .venv && . .venv/bin/activate && ")
    assert '-r requirements.txt -e ".[app,dev]"' in test_command
    assert test_command.endswith("ruff check . && python -m pytest -q")
    # The app command installs the same, less the development tools, and starts the app.
    app_command = _readme_command("start the classroom app")
    assert app_command == (
        'python3 -m venv .venv && . .venv/bin/activate && python -m pip install -r requirements.txt -e ".[app]" '
        "&& streamlit run app/main.py"
    )
