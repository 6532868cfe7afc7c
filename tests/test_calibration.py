"""Temperature scaling: in the metadata, applied on the device by real TFLite models, fitted by the command."""

import json

import numpy as np
import pytest

from edge_fer.calibration import RawOutputs, calibration, fit_temperature
from edge_fer.classifier import TFLiteClassifier
from edge_fer.errors import ModelError
from edge_fer.metadata import ModelMetadata, load_metadata
from edge_fer.views import Views
from support import FIXTURES, SHIPPED_NETWORK, copy_model, run_cli
from synthetic import faces, write_npz

TINY = FIXTURES / "tiny_int8.tflite"  # a probability output, metadata written before temperatures existed


def entropy(p):
    return -(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=1)


def test_temperature_defaults_to_one_and_round_trips(tmp_path):
    assert "temperature" not in json.loads(TINY.with_suffix(".json").read_text())
    assert load_metadata(TINY).temperature == 1.0
    meta = ModelMetadata.from_dict({**load_metadata(TINY).to_dict(), "temperature": 1.7})
    assert meta.temperature == 1.7 and meta.to_dict()["temperature"] == 1.7


@pytest.mark.parametrize("bad", [0, -1.0, "warm", None, float("nan")])
def test_bad_temperature_is_refused(tmp_path, bad):
    model = copy_model(TINY, tmp_path, temperature=bad)
    with pytest.raises(ModelError, match="'temperature' must be a positive number"):
        load_metadata(model)


@pytest.mark.parametrize("src", [TINY, SHIPPED_NETWORK], ids=["probabilities-output", "shipped-logits"])
def test_temperature_above_one_flattens_the_device_probabilities(tmp_path, src):
    x, _ = faces(40, seed=3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = TFLiteClassifier(copy_model(src, tmp_path / "a", temperature=1.0)).predict(x)
    warm = TFLiteClassifier(copy_model(src, tmp_path / "b", temperature=3.0)).predict(x)
    np.testing.assert_allclose(warm.sum(axis=1), 1.0, atol=1e-5)
    assert (warm.max(axis=1) <= plain.max(axis=1) + 1e-6).all()
    assert entropy(warm).mean() > entropy(plain).mean() + 0.05


def test_the_fit_sees_exactly_what_predict_returns():
    """RawOutputs.probs(T) must be the device's predict with T in the metadata, mirror and zoom passes included."""
    x, _ = faces(30, seed=4)
    meta = load_metadata(SHIPPED_NETWORK)
    assert meta.output == "logits"
    meta.flip_average, meta.view_scales = True, (1.0, 0.9)  # four passes averaged, whatever the shipped views
    clf = TFLiteClassifier(SHIPPED_NETWORK, metadata=meta)
    raw = RawOutputs.of(clf, x, batch=7)
    for t in (0.7, 1.0, 2.5):
        clf.metadata.temperature = t
        np.testing.assert_allclose(raw.probs(t), clf.predict(x), atol=1e-5)


def test_ece_and_nll_on_known_cases():
    y = np.zeros(10, np.int64)
    calibrated = np.tile([0.8, 0.2], (10, 1))
    y_cal = np.array([0] * 8 + [1] * 2)  # confidence 0.8, right 8 times in 10
    assert calibration(calibrated, y_cal).ece == pytest.approx(0.0)
    sure = np.tile([1.0, 0.0], (10, 1))
    half = np.array([0] * 5 + [1] * 5)
    c = calibration(sure, half)
    assert c.ece == pytest.approx(0.5) and c.accuracy == 0.5 and sum(b["count"] for b in c.bins) == 10
    assert calibration(calibrated, y).nll == pytest.approx(-np.log(0.8))


def test_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 7)).astype(np.float32)
    p = np.exp(logits / 2.0)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(7, p=row) for row in p])
    t = fit_temperature(RawOutputs(logits, "logits", Views()), y)
    assert t == pytest.approx(2.0, rel=0.1)


def test_eval_reports_ece(tmp_path):
    data = write_npz(tmp_path / "d.npz", {"test": 70})
    proc = run_cli("eval", "--data", str(data), "--model", str(TINY), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert 0 <= result["ece"] <= 1 and result["nll"] > 0
    table = run_cli("eval", "--data", str(data), "--model", str(TINY))
    assert "ECE " in table.stdout and "15 bins" in table.stdout
