"""`python -m training compare`: a lever's A/B on val through the device path, with a paired-bootstrap interval."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from support import FIXTURES, ROOT, SHIPPED_NETWORK, assert_one_line_error
from synthetic import write_npz
from training.__main__ import main
from training.common.stats import bootstrap_gain, verdict

SHIPPED = SHIPPED_NETWORK
TINY = FIXTURES / "tiny_int8.tflite"


def test_the_baseline_against_itself_and_another_model(tmp_path, capsys):
    data = write_npz(tmp_path / "d.npz", {"train": 14, "val": 120})
    run = tmp_path / "run"  # a run folder means its converted model
    run.mkdir()
    for suffix in (".tflite", ".json"):
        (run / f"model_int8{suffix}").write_bytes(SHIPPED.with_suffix(suffix).read_bytes())
    assert main(["compare", str(SHIPPED), str(run), str(TINY), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"val, 120 faces, device path; gain over {SHIPPED.stem}")
    report = json.loads(out.strip().splitlines()[-1])
    base, same, tiny = report["arms"]
    assert (base["verdict"], base["gain"], report["n"]) == ("baseline", None, 120)
    assert same["name"] == "run" and same["gain"] == [0.0, 0.0, 0.0] and same["verdict"] == "inside the noise"
    assert same["accuracy"] == base["accuracy"]
    assert tiny["gain"][1] <= tiny["gain"][0] <= tiny["gain"][2]
    assert tiny["gain"][0] == pytest.approx(tiny["accuracy"] - base["accuracy"])


def test_the_verdict_reads_the_interval():
    base = np.zeros(400)
    assert verdict(bootstrap_gain(np.ones(400), base)) == "above the noise"
    assert verdict(bootstrap_gain(base, np.ones(400))) == "below the noise"
    coin = np.random.default_rng(0).integers(0, 2, 400)
    assert verdict(bootstrap_gain(coin, coin[::-1].astype(np.float64))) == "inside the noise"


@pytest.mark.parametrize("case", ["unconverted run", "one model", "missing model", "other labels"])
def test_user_mistakes_are_one_line(tmp_path, case):
    data = write_npz(tmp_path / "d.npz", {"train": 14, "val": 20})
    other = tmp_path / "other.tflite"  # a network under other class names
    other.write_bytes(TINY.read_bytes())
    meta = json.loads(TINY.with_suffix(".json").read_text())
    (tmp_path / "other.json").write_text(json.dumps({**meta, "labels": ["anger", *meta["labels"][1:]]}))
    models = {"unconverted run": [str(SHIPPED), str(tmp_path)], "one model": [str(SHIPPED)],
              "missing model": [str(SHIPPED), str(tmp_path / "nope.tflite")],
              "other labels": [str(SHIPPED), str(other)]}[case]
    proc = subprocess.run([sys.executable, "-m", "training", "compare", *models, "--data", str(data)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    expected = {"unconverted run": "has no model_int8.tflite: run `python -m convert --run",
                "one model": "needs a baseline and at least one other model",
                "missing model": "model not found",
                "other labels": f"{other}: labels (anger, disgust"}[case]
    assert_one_line_error(proc, expected)
