"""The workstation command ``python -m convert views``: an existing network's views chosen on val.

Kept apart from the device's view tests (test_views.py) because pi-check leaves out every
workstation command.
"""

import json
import subprocess
import sys

from edge_fer.metadata import load_metadata
from support import FIXTURES, ROOT, assert_one_line_error, copy_model
from synthetic import write_npz

TINY = FIXTURES / "tiny_int8.tflite"
VIEWS = [sys.executable, "-m", "convert", "views"]


def test_views_command_chooses_on_val_and_refits_the_temperature(tmp_path):
    model = copy_model(TINY, tmp_path, metrics={"float_val_accuracy": 0.5, "agreement_val": 0.9})
    data = write_npz(tmp_path / "d.npz", {"val": 140, "test": 70})
    proc = subprocess.run([*VIEWS, "--model", str(model.with_suffix(".json")), "--data", str(data)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = load_metadata(model)  # the model file is untouched: its sha256 still holds
    choice = meta.extra["views_choice"]
    assert choice["fitted_on"] == "val" and len(choice["tried"]) == 6
    chosen = next(t for t in choice["tried"] if t["views"] == meta.views.describe())
    assert chosen["within_budget"] and meta.metrics["val_accuracy"] == chosen["val_accuracy"]
    assert meta.metrics["n_test"] == 70 and "float_val_accuracy" not in meta.metrics  # Keras figures dropped
    assert meta.extra["temperature_fit"]["split"] == "val"
    assert f"views {meta.views.describe()}" in proc.stdout and "temperature" in proc.stdout
    report = json.loads((tmp_path / "m.views.json").read_text())
    assert report["chosen"] == meta.views.describe()
    forced = subprocess.run([*VIEWS, "--model", str(model), "--data", str(data), "--flip-average", "on",
                             "--view-scales", "1,0.9"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert forced.returncode == 0, forced.stderr
    assert load_metadata(model).views.describe() == "zoom 1/0.9, mirrored (4 views)"


def test_views_command_mistakes_are_one_line(tmp_path):
    data = write_npz(tmp_path / "d.npz", {"val": 20})
    no_val = write_npz(tmp_path / "t.npz", {"test": 20})
    for args, fragment in ((["--model", str(tmp_path / "x.json"), "--data", str(data)], "model not found"),
                           (["--model", str(TINY), "--data", str(no_val)], "no val split"),
                           (["--model", str(TINY), "--data", str(data), "--view-scales", "big"],
                            "--view-scales must list distinct zooms"),
                           (["--model", str(TINY), "--data", str(data), "--max-ms-per-face", "-1"],
                            "--max-ms-per-face must be a positive")):
        proc = subprocess.run([*VIEWS, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert_one_line_error(proc, fragment)
