"""The workstation command ``python -m convert calibrate`` (its report needs the train extra's matplotlib).

Apart from the device's temperature tests (test_calibration.py), so that pi-check, which runs the
device tests on the Raspberry Pi OS stack, leaves it out as it leaves out every workstation command.
"""

import json
import subprocess
import sys

from edge_fer.metadata import load_metadata
from support import FIXTURES, ROOT, assert_one_line_error, copy_model
from synthetic import write_npz

TINY = FIXTURES / "tiny_int8.tflite"


def test_calibrate_command_writes_the_temperature_and_a_report(tmp_path):
    model = copy_model(TINY, tmp_path)
    data = write_npz(tmp_path / "d.npz", {"val": 140, "test": 70})
    proc = subprocess.run([sys.executable, "-m", "convert", "calibrate", "--model", str(model.with_suffix(".json")),
                           "--data", str(data)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "temperature" in proc.stdout and "test ECE" in proc.stdout
    meta = load_metadata(model)  # the sha256 of the unchanged .tflite still holds
    fit = meta.extra["temperature_fit"]
    assert meta.temperature != 1.0 and fit["split"] == "val" and fit["n"] == 140
    assert fit["val"]["nll_after"] <= fit["val"]["nll_before"] + 1e-4
    report = json.loads((tmp_path / "m.calibration.json").read_text())
    assert report["temperature"] == meta.temperature and len(report["after"]["test"]["bins"]) == 15
    assert (tmp_path / "m.calibration.png").stat().st_size > 5000


def test_calibrate_mistakes_are_one_line(tmp_path):
    calibrate = [sys.executable, "-m", "convert", "calibrate"]
    no_val = write_npz(tmp_path / "d.npz", {"test": 20})
    for args, fragment in ((["--model", str(tmp_path / "x.json"), "--data", str(no_val)], "model not found"),
                           (["--model", str(TINY), "--data", str(no_val)], "no val split"),
                           (["--model", str(TINY), "--data", str(tmp_path / "nope.npz")], "dataset not found")):
        proc = subprocess.run([*calibrate, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert_one_line_error(proc, fragment)
