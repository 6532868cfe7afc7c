"""Keras -> TFLite conversion, verification through the device classifier, the Edge TPU op check, the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("training.common.tf_env", reason="needs TensorFlow")  # imports TF the project way

from convert import FORMATS  # noqa: E402
from convert.__main__ import main  # noqa: E402
from convert.edgetpu import check_ops  # noqa: E402
from convert.export import export  # noqa: E402
from convert.ship import ship  # noqa: E402
from convert.tflite import calibration_faces, to_tflite  # noqa: E402
from edge_fer.classifier import TFLiteClassifier, load_classifier  # noqa: E402
from edge_fer.datasets import LabeledFaces  # noqa: E402
from edge_fer.errors import ModelError  # noqa: E402
from edge_fer.labels import FER2013_LABELS  # noqa: E402
from edge_fer.metadata import load_metadata  # noqa: E402
from edge_fer.preprocess import DEFAULT_SCALING, scale_pixels  # noqa: E402
from support import FIXTURES, ROOT, assert_one_line_error  # noqa: E402
from synthetic import faces, write_csv, write_npz  # noqa: E402
from training.common.data import load_splits  # noqa: E402
from training.common.tf_env import keras  # noqa: E402

pytestmark = pytest.mark.slow
INT8_OUTPUTS = ("model_int8.tflite", "model_int8.json", "model_int8.verify.json")


def tiny_model(activation: str = "relu", n_classes: int = 7) -> keras.Model:
    layers = keras.layers
    inputs = keras.Input((48, 48, 1))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = layers.LeakyReLU(0.1)(x) if activation == "leaky" else layers.ReLU()(x)
    x = layers.MaxPooling2D(4)(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dense(n_classes)(layers.Flatten()(x))
    return keras.Model(inputs, layers.Softmax()(x), name=f"tiny_{activation}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("data") / "d.npz", {"train": 420, "val": 140, "test": 140})


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory, data):
    """A tiny CNN trained to near-certainty on the synthetic faces, saved as .keras."""
    keras.utils.set_random_seed(0)
    train = load_splits(data).train
    model = tiny_model()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(scale_pixels(train.x)[..., None], train.y, epochs=6, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data, keras_file):
    """Every format of the tiny model, converted and verified once for the module."""
    out = tmp_path_factory.mktemp("exported")
    model = keras.models.load_model(keras_file)
    results = export(model, load_splits(data), out, "tiny", FORMATS, {"keras": str(keras_file)},
                     calibration_samples=70, timing_runs=20)
    return model, {r.fmt: r for r in results}


@pytest.mark.parametrize("fmt", FORMATS)
def test_converted_model_runs_on_the_device_path(exported, data, fmt):
    model, results = exported
    result = results[fmt]
    clf = load_classifier(result.path, num_threads=1)  # reads the metadata beside it and checks its sha256
    assert clf.batchable and result.verification.batchable
    assert clf.labels == FER2013_LABELS and clf.input_size == (48, 48)
    assert clf.metadata.scaling == DEFAULT_SCALING and clf.metadata.quantization == fmt
    val = load_splits(data).val
    probs = clf.predict(val.x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    keras_pred = model.predict(scale_pixels(val.x)[..., None], verbose=0).argmax(1)
    assert (probs.argmax(1) == keras_pred).mean() >= 0.95
    in_dtype = clf.interpreter.get_input_details()[0]["dtype"]
    assert np.dtype(in_dtype) == {"int8": np.int8, "uint8": np.uint8}.get(fmt, np.float32)
    # The final Softmax is left to the device (bit-identical outputs on aarch64 and x86).
    assert clf.metadata.output == "logits"
    if fmt in ("int8", "uint8"):
        assert "SOFTMAX" not in check_ops(result.path).ops


def test_metadata_and_verify_report_carry_the_figures(exported):
    _, results = exported
    result = results["int8"]
    meta = load_metadata(result.path)
    for key in ("val_accuracy", "test_accuracy", "test_macro_f1", "float_test_accuracy", "agreement_test",
                "ms_per_face", "size_bytes"):
        assert key in meta.metrics, key
    assert meta.metrics["size_bytes"] == result.path.stat().st_size
    assert meta.metrics["agreement_test"] >= 0.95 and meta.metrics["n_test"] == 140
    assert meta.extra["batch"] == "dynamic" and meta.extra["calibration"]["samples"] == 70
    report = json.loads(result.verify_path.read_text())
    assert report["splits"]["test"]["accuracy"] == pytest.approx(meta.metrics["test_accuracy"], abs=1e-4)
    assert report["edgetpu_op_check"]["dynamic_batch"] is True
    assert "edgetpu_op_check" not in json.loads(results["float32"].verify_path.read_text())


def test_conversion_fits_the_temperature_on_val(exported):
    _, results = exported
    path = results["int8"].path
    meta = load_metadata(path)
    fit = meta.extra["temperature_fit"]
    assert meta.temperature > 0 and fit["split"] == "val" and fit["n"] == 140
    assert fit["val"]["nll_after"] <= fit["val"]["nll_before"] + 1e-4
    report = json.loads(path.with_suffix(".calibration.json").read_text())
    assert report["temperature"] == meta.temperature and set(report["after"]) == {"val", "test"}
    assert path.with_suffix(".calibration.png").is_file()


def test_views_are_chosen_on_val_within_the_budget_or_forced(exported, keras_file, data, tmp_path, capsys):
    _, results = exported
    v = results["int8"].verification
    tried = {t["views"]: t for t in v.views_tried}
    assert len(tried) == 6 and v.views.describe() in tried  # mirror off/on x zooms 1, 1/0.95, 1/0.9
    assert tried[v.views.describe()]["within_budget"]
    meta = load_metadata(results["int8"].path)
    assert (meta.flip_average, meta.view_scales) == (v.views.mirror, v.views.scales)
    # Forced views are taken as given; a budget below any model's time leaves only the one-pass candidate.
    assert main(["--keras", str(keras_file), "--data", str(data), "--out", str(tmp_path), "--format", "float32",
                 "--flip-average", "on", "--view-scales", "1,0.9", "--limit", "20"]) == 0, capsys.readouterr().err
    meta = load_metadata(tmp_path / "model_float32.tflite")
    assert meta.flip_average and meta.view_scales == (1.0, 0.9) and meta.metrics["agreement_val"] >= 0.9
    assert json.loads((tmp_path / "model_float32.verify.json").read_text())["views_tried"] == []
    assert main(["--keras", str(keras_file), "--data", str(data), "--out", str(tmp_path), "--format", "float32",
                 "--max-ms-per-face", "0.000001", "--limit", "20", "--name", "slow"]) == 0, capsys.readouterr().err
    meta = load_metadata(tmp_path / "slow_float32.tflite")
    assert not meta.flip_average and meta.view_scales == (1.0,)


def test_calibration_is_drawn_evenly_across_classes():
    y = np.r_[np.full(1000, 3), np.repeat([0, 2, 4, 5, 6], 20), np.full(4, 1)]
    train = LabeledFaces(np.broadcast_to(y[:, None, None], (len(y), 48, 48)).astype(np.uint8), y)  # face = label
    counts = np.bincount(calibration_faces(train, 70)[:, 0, 0], minlength=7)
    assert counts.sum() == 70 and counts[1] == 4  # a rare class gives all it has; the rest is filled at random
    assert all(counts[c] >= 10 for c in (0, 2, 4, 5, 6)) and counts[3] >= 10
    assert len(calibration_faces(train, 5000)) == len(y)


def test_batch_one_model_for_the_edge_tpu_maps_fully(data):
    cal = load_splits(data).train.x[:20]
    dynamic = check_ops(to_tflite(tiny_model(), "int8", cal))
    fixed = check_ops(to_tflite(tiny_model(), "int8", cal, batch_size=1))
    assert dynamic.dynamic_batch and not dynamic.maps_fully
    assert fixed.maps_fully and fixed.cpu_ops == [] and not fixed.dynamic_batch
    assert fixed.ops["CONV_2D"] == 2 and fixed.ops["FULLY_CONNECTED"] == 1


def test_op_check_flags_leaky_relu_and_float_tensors(data):
    cal = load_splits(data).train.x[:20]
    leaky = check_ops(to_tflite(tiny_model("leaky"), "int8", cal, batch_size=1))
    assert [c.op for c in leaky.cpu_ops] == ["LEAKY_RELU"] and leaky.cpu_ops[0].reason == "not an Edge TPU op"
    assert "LEAKY_RELU" in leaky.summary()
    float_model = check_ops(to_tflite(tiny_model(), "float32", batch_size=1))
    assert len(float_model.cpu_ops) == sum(float_model.ops.values())
    assert {c.reason for c in float_model.cpu_ops} == {"float32 tensors"}
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        check_ops(b"definitely not a model")


def test_convert_a_training_run_with_edgetpu(trained_run, tmp_path, capsys, monkeypatch):
    """``--run`` alone: data comes from the run's metrics.json, the source summary from the run."""
    run_dir, metrics = trained_run
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler here
    rc = main(["--run", str(run_dir), "--out", str(tmp_path), "--edgetpu", "--limit", "35",
               "--calibration-samples", "40"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "warning: edgetpu_compiler is not on the PATH" in err and "Traceback" not in err
    for name in (*INT8_OUTPUTS, "model_int8_b1.tflite", "model_int8_b1.json", "model_int8_b1.verify.json"):
        assert (tmp_path / name).is_file(), name
    meta = load_metadata(tmp_path / "model_int8.tflite")
    assert meta.source["run"] == str(run_dir) and meta.source["arch"] == "edge-cnn"
    assert meta.source["params"] == metrics["params"] and meta.source["epochs"] == 1
    assert "git_commit" in meta.source and meta.metrics["n_val"] == 35
    assert TFLiteClassifier(tmp_path / "model_int8.tflite").batchable
    b1 = TFLiteClassifier(tmp_path / "model_int8_b1.tflite")
    assert not b1.batchable and b1.metadata.extra["batch"] == 1
    assert check_ops(tmp_path / "model_int8_b1.tflite").maps_fully  # edge-cnn: conv, pool, mean, dense, softmax


FAKE_COMPILER = """#!/bin/sh
# Stand-in for edgetpu_compiler -s -o OUT MODEL: copies MODEL to OUT/<stem>_edgetpu.tflite.
stem=$(basename "$4" .tflite)
cp "$4" "$3/${stem}_edgetpu.tflite"
echo "Edge TPU Compiler version 16.0.384591198 (test stand-in)"
echo "Number of operations that will run on Edge TPU: 8"
echo "Number of operations that will run on CPU: 0"
"""


def test_edgetpu_compiler_output_gets_metadata(keras_file, data, tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "edgetpu_compiler"
    fake.write_text(FAKE_COMPILER)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    rc = main(["--keras", str(keras_file), "--data", str(data), "--out", str(out), "--format", "uint8",
               "--edgetpu", "--limit", "20", "--calibration-samples", "35"])
    err = capsys.readouterr().err
    assert rc == 0, err
    compiled = out / "model_uint8_b1_edgetpu.tflite"
    meta = load_metadata(compiled)  # sha256 checked
    assert meta.extra["edgetpu_compiled"] and meta.extra["compiled_from"] == "model_uint8_b1.tflite"
    assert "ms_per_face" not in meta.metrics and meta.quantization == "uint8"
    log = (out / "model_uint8_b1_edgetpu.compile.log").read_text()
    assert "Number of operations that will run on Edge TPU: 8" in log
    assert "compiled model_uint8_b1_edgetpu.tflite" in err and "warning" not in err


def test_ship_copies_model_metadata_and_reports(exported, trained_run, tmp_path):
    _, results = exported
    run_dir, _ = trained_run
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "stale_member.tflite").write_bytes(b"an earlier shipped ensemble's member")
    dest = tmp_path / "models" / "default.tflite"
    ship(results["int8"].path, run_dir, models_dir=tmp_path / "models", docs_dir=tmp_path / "docs")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["default.json", "default.tflite"]
    assert load_metadata(dest).quantization == "int8"
    assert load_classifier(dest).labels == FER2013_LABELS
    for name in ("default.verify.json", "default.calibration.json", "default.calibration.png", "metrics.json",
                 "confusion_matrix.png", "curves.png", "classification_report.txt", "train_config.json"):
        assert (tmp_path / "docs" / name).is_file(), name
    card = (tmp_path / "docs" / "README.md").read_text()  # the model card, from the files beside it
    epochs = len((run_dir / "history.csv").read_text().splitlines()) - 1
    assert f"**{epochs} epochs in all**" in card and "python -m training train --data" in card
    assert "| test |" in card and "Per class on test" in card and "temperature **" in card
    assert "(curves.png)" in card and "(confusion_matrix.png)" in card


@pytest.fixture
def bad_inputs(tmp_path, keras_file, data):
    wrong_outputs = tmp_path / "five.keras"
    tiny_model(n_classes=5).save(wrong_outputs)
    (tmp_path / "junk.keras").write_text("not a model")
    write_csv(tmp_path / "cols.csv", {"Training": 7}, columns=("emotion", "image", "Usage"))
    return {
        "missing model": (["--keras", str(tmp_path / "nope.keras"), "--data", str(data)], "Keras model not found"),
        "missing run": (["--run", str(tmp_path / "nope")], "run folder not found"),
        "missing data": (["--keras", str(keras_file), "--data", str(tmp_path / "nope.npz")], "dataset not found"),
        "no data": (["--keras", str(keras_file)], "no --data given"),
        "edgetpu float": (["--keras", str(keras_file), "--data", str(data), "--format", "float32", "--edgetpu"],
                          "--edgetpu needs a full-integer model"),
        "ship float": (["--keras", str(keras_file), "--data", str(data), "--format", "float16", "--ship"],
                       "--ship ships the int8 model"),
        "junk model": (["--keras", str(tmp_path / "junk.keras"), "--data", str(data)], "cannot load Keras model"),
        "wrong outputs": (["--keras", str(wrong_outputs), "--data", str(data)], "outputs 5 scores"),
        "bad csv": (["--keras", str(keras_file), "--data", str(tmp_path / "cols.csv")], "not a FER2013 CSV"),
        "bad zooms": (["--keras", str(keras_file), "--data", str(data), "--view-scales", "1,0.1"],
                      "--view-scales must list distinct zooms"),
        "no budget": (["--keras", str(keras_file), "--data", str(data), "--max-ms-per-face", "0"],
                      "--max-ms-per-face must be a positive"),
    }


@pytest.mark.parametrize("case", ["missing model", "missing run", "missing data", "no data", "edgetpu float",
                                  "ship float", "junk model", "wrong outputs", "bad csv", "bad zooms", "no budget"])
def test_user_mistakes_are_one_line_errors(bad_inputs, tmp_path, capsys, case):
    argv, fragment = bad_inputs[case]
    rc = main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0]


def test_cli_process_reports_a_missing_model_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "convert", "--keras", str(tmp_path / "x.keras")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert_one_line_error(proc, "Keras model not found")
    assert proc.returncode == 2


def test_help_explains_outputs_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--run", "--keras", "--edgetpu", "--ship", "NAME_FORMAT.verify.json", "examples:"):
        assert text in out


@pytest.mark.parametrize("name", ["tiny_int8", "tiny_float32"])
def test_committed_fixtures_are_small_and_valid(name):
    path = FIXTURES / f"{name}.tflite"
    assert path.stat().st_size < 100_000
    clf = load_classifier(path)
    assert clf.batchable and clf.metadata.quantization == name.split("_")[1]
    assert clf.predict(faces(3)[0]).shape == (3, 7)


def test_a_model_that_trained_on_val_takes_its_views_and_temperature_as_given(keras_file, data, tmp_path, capsys):
    """--fit-on train+val: val cannot choose, so conversion wants the train-only twin's choices spelled out."""
    import shutil

    run = tmp_path / "final"
    run.mkdir()
    shutil.copy(keras_file, run / "model.keras")
    (run / "metrics.json").write_text(json.dumps({"data": str(data), "fit_on": "train+val",
                                                  "val_seen_in_training": True}))
    argv = ["--run", str(run), "--format", "float32", "--limit", "20"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trained on val (--fit-on train+val)" in err and "--temperature" in err
    assert main([*argv, "--flip-average", "on", "--view-scales", "1", "--temperature", "1.3"]) == 0
    meta = load_metadata(run / "model_float32.tflite")
    assert meta.temperature == 1.3 and meta.extra["temperature_fit"]["split"] == "given"
    assert meta.flip_average and meta.view_scales == (1.0,)
    assert json.loads((run / "model_float32.calibration.json").read_text())["fitted_on"] == "given"
