"""The layers of hvit point one way, and no module of hvit/ imports itself back through others.

The graph is read from the source (ast), with every import: module level, inside functions, and under
``if TYPE_CHECKING:`` (a type-only import is still a dependency a reader has to follow). Layers, from
the bottom up, as drawn in the README's "Where things are" table:

1. core model: config, layers, model, complexity, registry, interchange, preprocessing (and `_lazy`,
   the first-use imports of the packages' public names);
2. data, training, explanations, shipped assets, command-line checks;
3. demo: what the two apps share, and the benchmarks (they time the apps' figures and pages too);
4. the apps (``app/``, ``pages/``), outside the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hvit"
CORE = ("config", "layers", "model", "complexity", "registry", "interchange", "preprocessing", "_lazy")
MIDDLE = ("data", "train", "metrics", "explain", "assets", "command_line")
DEMO = ("demo", "bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(path: Path, name: str, known: set[str]) -> set[str]:
    """hvit modules that ``path`` (module ``name``) imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from hvit.demo import inputs` imports the module hvit.demo.inputs; `from hvit.demo import
            # load_image` imports hvit.demo (whose __init__ then imports the rest).
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import hvit.demo.inputs.x`: the module part
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every hvit module -> the hvit modules it imports."""
    modules = _modules()
    return {name: _imported(path, name, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in(module: str, parts: tuple[str, ...]) -> bool:
    return any(module == f"hvit.{p}" or module.startswith(f"hvit.{p}.") for p in parts)


def test_the_graph_sees_module_level_function_level_and_relative_imports(tmp_path, monkeypatch):
    root = tmp_path / "hvit"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("import hvit.b\n")
    (root / "b.py").write_text("def f():\n    from hvit.sub import c\n")
    (root / "sub" / "__init__.py").write_text("from .c import x\n")
    (root / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hvit import a\n"
    )
    monkeypatch.setitem(globals(), "PACKAGE", root)
    graph = import_graph()
    assert graph == {
        "hvit": set(),
        "hvit.a": {"hvit.b"},
        "hvit.b": {"hvit.sub.c"},
        "hvit.sub": {"hvit.sub.c"},
        "hvit.sub.c": {"hvit.a"},
    }
    assert _cycles(graph) == [["hvit.a", "hvit.b", "hvit.sub.c"]]


def test_no_import_cycle_in_hvit():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    cycles = _cycles(graph)
    assert cycles == [], "import cycles (each list: modules that import each other round): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


@pytest.mark.parametrize(
    "layer, lower, forbidden",
    [("core model", CORE, MIDDLE + DEMO), ("data, training and explanations", MIDDLE, DEMO)],
)
def test_layers_import_only_downwards(layer, lower, forbidden):
    graph = import_graph()
    upward = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if _in(m, lower)
        for t in targets
        if _in(t, forbidden)
    )
    assert upward == [], f"the {layer} layer imports from a layer above it: {upward}"


def test_explain_imports_nothing_from_demo():
    graph = import_graph()
    from_demo = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if _in(m, ("explain",))
        for t in targets
        if _in(t, DEMO)
    )
    assert from_demo == [], f"hvit.explain is core and must not use the apps' helpers: {from_demo}"


def test_every_module_is_in_a_layer():
    top = {m.split(".")[1] for m in import_graph() if m != "hvit"}
    assert top == set(CORE + MIDDLE + DEMO), (
        "a new top-level module of hvit/ needs a layer here and in the README"
    )
