"""The classifier plugins in the device package's import graph: a classifier base that knows no plugin, a
registry built from them, and no branch on a model's kind outside the plugins. (No cycle, nothing of the
workstation or of TensorFlow: tests/test_layers.py, for the whole graph.)"""

from __future__ import annotations

import ast

from scripts.devtools import layers
from support import ROOT

PACKAGE = ROOT / "edge_fer"
PLUGIN_MODULES = {"edge_fer.tflite", "edge_fer.ensemble", "edge_fer.garf"}


def _modules() -> dict[str, ast.Module]:
    return {layers.module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def graph() -> dict[str, set[str]]:
    """edge_fer's modules and the edge_fer modules each imports (tests/test_layers.py checks the cycles and the
    one-way doors of the whole graph)."""
    return {m: deps for m, deps in layers.Graph.read().edges.items() if m.split(".")[0] == "edge_fer"}


def test_the_graph_reads_relative_and_lazy_imports():
    assert "edge_fer.classifier" in graph()["edge_fer.info"]


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
