"""The device package's import graph, read from the source: no cycle among edge_fer's modules, nothing of the
workstation or of TensorFlow, a classifier base that knows no plugin, and no branch on a model's kind outside
the plugins."""

from __future__ import annotations

import ast
from pathlib import Path

from support import ROOT

PACKAGE = ROOT / "edge_fer"
FORBIDDEN = ("training", "convert", "tensorflow", "keras", "tf_keras")
PLUGIN_MODULES = {"edge_fer.tflite", "edge_fer.ensemble", "edge_fer.garf"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return out


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every module ``name`` imports, at the top or inside a function (absolute names)."""
    package = name if name in {"edge_fer"} else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)  # from . import x
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: {m for m in _imports(name, tree, known) if m in known and m != name}
            for name, tree in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_edge_fer():
    edges = graph()
    assert "edge_fer.classifier" in edges["edge_fer.info"], "the graph reads relative imports"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_edge_fer_imports_nothing_of_the_workstation_nor_tensorflow():
    modules = _modules()
    bad = sorted((name, m) for name, tree in modules.items() for m in _imports(name, tree, set(modules))
                 if m.split(".")[0] in FORBIDDEN)
    assert not bad, bad


def test_the_classifier_base_knows_no_plugin_and_the_registry_is_built_from_them():
    from edge_fer.classifier import CLASSIFIERS, PLUGINS

    edges = graph()
    assert not edges["edge_fer.classifier_api"] & (PLUGIN_MODULES | {"edge_fer.classifier"})
    assert {p.__module__ for p in PLUGINS} == PLUGIN_MODULES
    assert CLASSIFIERS == {p.kind: p for p in PLUGINS} and len(CLASSIFIERS) == len(PLUGINS)


def test_no_branch_on_a_model_kind_outside_the_plugins():
    from edge_fer.classifier import CLASSIFIERS

    found = []
    for name, tree in _modules().items():
        if name in PLUGIN_MODULES:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                values = [node.left, *node.comparators]
                if any(isinstance(v, ast.Constant) and v.value in CLASSIFIERS for v in values):
                    found.append(f"{name}:{node.lineno}")
    assert not found, f"a model kind is compared outside its plugin: {found}"
