"""The house's one-way doors: the import graph (read from the source) and what the device install carries."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.devtools import layers

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_runs_down_to_up_or_across_layers():
    """edge_fer imports nothing of the workstation; convert and the trainer only the common part below them;
    only the pipelines (GA+RF, ensembles) import both."""
    assert layers.Graph.read().breaches() == []


def test_no_import_cycle_between_modules():
    graph = layers.Graph.read()
    assert {pkg: graph.cycles(pkg) for pkg in layers.ACYCLIC} == {pkg: [] for pkg in layers.ACYCLIC}


def test_the_cycle_finder_finds_cycles():
    graph = layers.Graph({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}, "q.e": {"q.e"}})
    assert graph.cycles("p") == [["p.a", "p.b", "p.c"]]
    assert layers.Graph({"p.a": {"p.b", "p.c"}, "p.b": {"p.c"}, "p.c": set()}).cycles("p") == []


def test_the_layers_themselves_form_no_cycle():
    order = list(dict.fromkeys(layers.LAYERS.values()))  # bottom to top
    for layer, allowed in layers.MAY_IMPORT.items():
        assert all(order.index(other) <= order.index(layer) for other in allowed), (layer, allowed)


def test_the_checker_sees_a_breach(tmp_path):
    """A lazy import of convert inside edge_fer, and a trainer module importing convert, are both caught."""
    for pkg in layers.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.tflite"))
    (tmp_path / "edge_fer" / "sneaky.py").write_text("def f():\n    from convert.ship import ship\n    import tensorflow\n")
    (tmp_path / "training" / "ga.py").write_text("from convert import tflite\n")
    breaches = layers.Graph.read(tmp_path).breaches()
    assert "edge_fer.sneaky (device) imports convert.ship (conversion)" in breaches
    assert "edge_fer.sneaky (device) imports tensorflow" in breaches
    assert "training.ga (trainer) imports convert.tflite (conversion)" in breaches


def test_the_device_wheel_holds_edge_fer_only(tmp_path):
    """`pip install edge-fer` on a Pi: site-packages gets edge_fer and its dist-info, and one command."""
    pytest.importorskip("pip", reason="building the wheel needs pip (pi-check's emulated root has none)")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", ".pi-root", "runs", "build",
                                                             "*.egg-info", "__pycache__", ".pytest_cache"))
    # Build with the setuptools at hand when there is one (no download); else pip fetches it as usual.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("edge_fer-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top = {name.split("/")[0] for name in names}
        dist_info = next(t for t in top if t.endswith(".dist-info"))
        entry_points = configparser.ConfigParser()
        entry_points.read_string(z.read(f"{dist_info}/entry_points.txt").decode())
    assert top == {"edge_fer", dist_info}, top
    assert dict(entry_points["console_scripts"]) == {"edge-fer": "edge_fer.cli:main"}
    assert "edge_fer/models/default.tflite" in names  # the shipped model travels with the package
