"""GA+RF: the GA on a problem with known informative features, backbones and their feature cache,
the pipeline's artifact, the device path through the CLI, and the user errors on both sides."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edge_fer.errors import EdgeFerError, ModelError
from support import ROOT, SAMPLE, assert_one_line_error, run_cli
from synthetic import faces

pytest.importorskip("sklearn", reason="the GA+RF workstation side needs scikit-learn")
pytest.importorskip("deap", reason="the GA needs DEAP")

from training.ga import ForestFitness, GAConfig, select_features  # noqa: E402

INFORMATIVE = 5


def informative_problem():
    """40 features of which only the first 5 carry the class (16 clusters over a 5-D hypercube)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=600, n_features=40, n_informative=INFORMATIVE, n_redundant=0, n_repeated=0,
                               n_classes=4, n_clusters_per_class=4, class_sep=2.0, shuffle=False, random_state=0)
    rows = np.random.default_rng(0).permutation(len(y))  # shuffle rows only: columns 0-4 stay the informative ones
    return x[rows], y[rows]


@pytest.mark.slow
def test_ga_finds_the_informative_features():
    x, y = informative_problem()
    fitness = ForestFitness(x[:300], y[:300], x[300:], y[300:], trees=10, penalty=0.2, seed=0)
    result = select_features(fitness, 40, GAConfig(population=20, generations=15, patience=8, seed=0))
    selected = set(np.flatnonzero(result.mask).tolist())
    assert set(range(INFORMATIVE)) <= selected, selected
    assert len(selected) <= 12, selected  # a random start keeps about 20 of 40
    history = result.history
    assert history[0]["generation"] == 0 and len(history) >= 2
    assert all(later["best_fitness"] >= earlier["best_fitness"] for earlier, later in zip(history, history[1:]))
    assert {"best_fitness", "best_accuracy", "best_size", "mean_fitness", "mean_size"} <= set(history[-1])


@pytest.mark.slow
def test_ga_is_seeded_and_parallel_fitness_changes_nothing():
    x, y = informative_problem()
    fitness = ForestFitness(x[:200], y[:200], x[300:450], y[300:450], trees=5, penalty=0.1, seed=0)
    serial = select_features(fitness, 40, GAConfig(population=8, generations=2, seed=3))
    again = select_features(fitness, 40, GAConfig(population=8, generations=2, seed=3))
    parallel = select_features(fitness, 40, GAConfig(population=8, generations=2, seed=3, jobs=2))
    for other in (again, parallel):
        assert np.array_equal(serial.mask, other.mask)
        assert [r["best_fitness"] for r in serial.history] == [r["best_fitness"] for r in other.history]


@pytest.mark.slow
def test_ga_stops_when_fitness_stalls():
    result = select_features(lambda mask: (1.0, 1.0), 10, GAConfig(population=4, generations=20, patience=2))
    assert result.stopped_early and len(result.history) == 3


# --- backbones and the feature cache (TensorFlow) -------------------------------------------------


def test_backbone_requests_are_checked_before_tensorflow(tmp_path):
    from training.features import BackboneSpec

    with pytest.raises(ModelError, match="Xception weights not found"):
        BackboneSpec.resolve("xception", str(tmp_path / "missing.h5"))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ModelError, match="must be a .h5 file"):
        BackboneSpec.resolve("xception", str(tmp_path / "w.txt"))
    with pytest.raises(EdgeFerError, match="at least 71"):
        BackboneSpec.resolve("xception", "none", size=48)
    with pytest.raises(EdgeFerError, match="needs --cnn"):
        BackboneSpec.resolve("cnn")
    with pytest.raises(ModelError, match="CNN model not found"):
        BackboneSpec.resolve("cnn", cnn=tmp_path)


@pytest.mark.slow
def test_xception_features_with_random_weights():
    pytest.importorskip("training.common.tf_env", reason="needs TensorFlow")
    from training.features import BackboneSpec, build_backbone, extract

    model = build_backbone(BackboneSpec.resolve("xception", "none"))
    assert model.input_shape == (None, 48, 48, 1)  # resize and gray->RGB live inside the graph
    x, _ = faces(4)
    feats = extract(model, x, batch_size=3, progress=False)
    assert feats.shape == (4, 2048) and feats.dtype == np.float32 and np.isfinite(feats).all()
    np.testing.assert_allclose(feats[3:], extract(model, x[3:], progress=False), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cnn_backbone_is_the_penultimate_layer(trained_run):
    from training.common.runs import load_keras
    from edge_fer.preprocess import scale_pixels
    from training.features import BackboneSpec, build_backbone, extract
    from training.common.tf_env import keras

    run_dir, _ = trained_run
    backbone = build_backbone(BackboneSpec.resolve("cnn", cnn=run_dir))
    model = load_keras(run_dir / "model.keras")
    x, _ = faces(6)
    feats = extract(backbone, x, progress=False)
    assert feats.shape == (6, 8 * 4)  # edge-cnn at width 4: 8 x width pooled channels
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, bias = dense.get_weights()
    logits = feats @ kernel + bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True),
                               model.predict(scale_pixels(x)[..., None], verbose=0), atol=1e-4)


@pytest.mark.slow
def test_feature_cache_is_reused_only_for_the_same_request(trained_run, tmp_path, monkeypatch):
    from edge_fer.preprocess import DEFAULT_SCALING
    from training import features

    run_dir, metrics = trained_run
    spec = features.BackboneSpec.resolve("cnn", cnn=run_dir)
    splits = features.load_data_splits(metrics["data"], limit=9)
    first = features.cached_features(tmp_path, spec, metrics["data"], splits, DEFAULT_SCALING, 9, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["backbone"]["weights_sha256"] == spec.weights_sha256 and manifest["dim"] == 32
    assert manifest["data"]["sha256"] and first.x["val"].shape == (9, 32)

    def no_rebuild(_spec):
        raise AssertionError("the backbone was rebuilt")

    monkeypatch.setattr(features, "build_backbone", no_rebuild)
    again = features.cached_features(tmp_path, spec, metrics["data"], splits, DEFAULT_SCALING, 9, progress=False)
    np.testing.assert_array_equal(first.x["train"], again.x["train"])
    fewer = features.load_data_splits(metrics["data"], limit=5)
    with pytest.raises(AssertionError, match="rebuilt"):
        features.cached_features(tmp_path, spec, metrics["data"], fewer, DEFAULT_SCALING, 5, progress=False)
    shuffled = {name: type(faces)(faces.x[::-1], faces.y[::-1], faces.labels) for name, faces in splits.items()}
    with pytest.raises(AssertionError, match="rebuilt"):  # the same sizes, other faces (val carved by another seed)
        features.cached_features(tmp_path, spec, metrics["data"], shuffled, DEFAULT_SCALING, 9, progress=False)


# --- the pipeline and the device path --------------------------------------------------------------


@pytest.fixture(scope="module")
def garf_run(trained_run, tmp_path_factory):
    """``(out_dir, metrics, data)`` of a small ``garf`` run on the tiny trained CNN's features."""
    from training.pipelines import garf

    run_dir, run_metrics = trained_run
    out = tmp_path_factory.mktemp("garf") / "run"
    parser = argparse.ArgumentParser()
    garf.add_arguments(parser)
    args = parser.parse_args([
        "--data", run_metrics["data"], "--backbone", "cnn", "--cnn", str(run_dir), "--out", str(out),
        "--population", "6", "--generations", "2", "--fitness-trees", "5", "--trees", "15", "--jobs", "1",
        "--calibration-samples", "30", "--timing-runs", "5"])
    return out, garf.run(args), run_metrics["data"]


@pytest.mark.slow
def test_pipeline_writes_reports_and_device_files(garf_run):
    out, metrics, _ = garf_run
    for name in ("metrics.json", "confusion_matrix.png", "classification_report.txt", "ga_history.csv",
                 "ga_history.png", "garf_config.json", "model.json", "model.joblib", "model.backbone.tflite"):
        assert (out / name).is_file(), name
    assert metrics["features_before"] == 32 and metrics["features_after"] == len(metrics["selected"]) > 0
    assert metrics["test"]["accuracy"] > 0.5 and metrics["cnn_alone"]["test"] is not None
    assert set(metrics["all_features_forest"]) == {"val", "test"}
    device = metrics["device"]
    assert device["backbone_format"] == "int8" and device["ms_per_face"] > 0
    assert device["agreement_test"] >= 0.9  # int8 TFLite features vs the Keras ones the forest was fitted on
    assert set(device["flip_val_accuracy"]) == {"off", "on"}  # val decides mirror averaging, as for the CNNs
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "ga-rf" and meta["metrics"]["test_accuracy"] == device["test_accuracy"]
    assert meta["flip_average"] == device["flip_average"]


@pytest.mark.slow
def test_artifact_round_trip(garf_run, tmp_path):
    import joblib

    from edge_fer.classifier import load_classifier
    from edge_fer.garf import load_artifact

    out, metrics, _ = garf_run
    artifact = load_artifact(out / "model.joblib")
    assert np.flatnonzero(artifact["mask"]).tolist() == metrics["selected"]
    assert artifact["labels"] == metrics["labels"] and artifact["backbone"]["name"] == "cnn"
    joblib.dump(artifact, tmp_path / "copy.joblib")
    back = load_artifact(tmp_path / "copy.joblib")
    x = np.random.default_rng(0).normal(size=(5, int(artifact["mask"].sum())))
    np.testing.assert_array_equal(back["forest"].predict_proba(x), artifact["forest"].predict_proba(x))

    clf = load_classifier(out / "model.joblib", num_threads=1)
    assert clf.metadata.kind == "ga-rf" and clf.input_size == (48, 48)
    x, _ = faces(5, seed=4)
    forest_probs = artifact["forest"].predict_proba
    clf.metadata.flip_average = False
    probs = clf.predict(x)
    assert probs.shape == (5, 7) and np.allclose(probs.sum(1), 1.0)
    np.testing.assert_allclose(probs, forest_probs(clf.features(x)), atol=1e-6)
    clf.metadata.flip_average = True
    mirrored = (forest_probs(clf.features(x)) + forest_probs(clf.features(x[:, :, ::-1]))) / 2
    np.testing.assert_allclose(clf.predict(x), mirrored, atol=1e-6)
    assert clf.predict(x[:0]).shape == (0, 7)


@pytest.mark.slow
def test_device_cli_eval_and_predict(garf_run):
    out, metrics, data = garf_run
    proc = run_cli("eval", "--data", data, "--model", str(out / "model.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(metrics["device"]["test_accuracy"], abs=1e-4)
    proc = run_cli("predict", "--model", str(out / "model.joblib"), "--json", str(SAMPLE))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)["faces"]
    assert found and sum(found[0]["probs"].values()) == pytest.approx(1.0, abs=1e-3)  # probabilities are rounded
    proc = run_cli("info", "--model", str(out / "model.joblib"), "--json")
    model = json.loads(proc.stdout)["model"]
    trio = [str(out / f"model{suffix}") for suffix in (".json", ".joblib", ".backbone.tflite")]
    assert model["exists"] and model["files"] == trio
    assert model["details"][0].startswith(f"ga-rf      {len(metrics['selected'])} of 32 cnn backbone features")


def _copy_model(src, dst_dir):
    """The three files of ``src/model.*`` renamed to ``dst_dir/m.*`` (a renamed trio still loads)."""
    for suffix in (".json", ".joblib", ".backbone.tflite"):
        shutil.copy(src / f"model{suffix}", dst_dir / f"m{suffix}")
    return dst_dir / "m.json", json.loads((dst_dir / "m.json").read_text())


@pytest.mark.slow
def test_broken_artifacts_are_clear_errors(garf_run, tmp_path):
    import joblib

    from edge_fer.classifier import load_classifier

    out, _, data = garf_run
    with pytest.raises(ModelError, match="model not found"):
        load_classifier(tmp_path / "nothing.joblib")
    model, meta = _copy_model(out, tmp_path)
    load_classifier(model)  # the renamed copy loads

    meta["labels"] = ["a", "b", "c", "d", "e", "f", "g"]  # metadata for other labels than the forest's
    model.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"trained for labels \(angry, .*\) but its metadata lists \(a, b"):
        load_classifier(model)

    from sklearn.ensemble import RandomForestClassifier

    artifact = joblib.load(tmp_path / "m.joblib")  # a consistent model of 3 other labels: FER data is refused
    k = int(artifact["mask"].sum())
    artifact["forest"] = RandomForestClassifier(3, random_state=0).fit(np.eye(k)[np.arange(9) % k], np.arange(9) % 3)
    artifact["labels"] = meta["labels"] = ["calm", "tense", "tired"]
    joblib.dump(artifact, tmp_path / "m.joblib")
    meta["extra"]["sha256"].pop("forest")
    model.write_text(json.dumps(meta))
    assert load_classifier(model).predict(faces(2)[0]).shape == (2, 3)
    assert_one_line_error(run_cli("eval", "--data", data, "--model", str(model)), "must lie in 0..2")

    model, _ = _copy_model(out, tmp_path)
    (tmp_path / "m.joblib").write_bytes((tmp_path / "m.joblib").read_bytes()[:-10])
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_classifier(model)
    (tmp_path / "m.joblib").unlink()
    with pytest.raises(ModelError, match=r"model not found: .*m\.joblib"):
        load_classifier(model)


@pytest.mark.slow
def test_missing_scikit_learn_names_the_extra(garf_run):
    out, _, data = garf_run
    code = ("import sys; sys.modules['sklearn'] = None; from edge_fer.cli import main; "
            f"sys.argv = ['edge-fer', 'eval', '--data', {data!r}, '--model', {str(out / 'model.json')!r}]; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert_one_line_error(proc, "needs scikit-learn", "pip install scikit-learn joblib")


def test_training_cli_rejects_missing_weights(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "training", "garf", "--data", str(tmp_path / "d.npz"), "--out",
                           str(tmp_path / "o"), "--weights", str(tmp_path / "nope.h5")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert_one_line_error(proc, "Xception weights not found")
