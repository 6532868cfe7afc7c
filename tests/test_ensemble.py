"""Ensembles: stacking with a known answer, numpy combiners against scikit-learn, the device artifact, bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from edge_fer.classifier import load_classifier
from edge_fer.ensemble import EnsembleClassifier, check_members, combiner_from_dict
from edge_fer.errors import ModelError
from edge_fer.evaluate import evaluate
from edge_fer.metadata import metadata_path
from support import FIXTURES, ROOT, assert_one_line_error, run_cli
from synthetic import write_npz

pytest.importorskip("sklearn", reason="fitting the meta-learners needs scikit-learn")

from training.__main__ import main  # noqa: E402
from training.common.data import load_splits  # noqa: E402
from training.pipelines.ensemble import export_logistic, export_tree, fit_combiners  # noqa: E402

MEMBERS = [FIXTURES / "tiny_int8.tflite", FIXTURES / "tiny_float32.tflite"]


def two_experts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Member A is confidently right on classes 0-3 and confidently wrong (the next class) on 4-6; B the reverse.

    Averaging cannot tell which member to trust, but the pair of answers names the class: a stacked
    meta-learner should be near perfect where averaging is near a coin flip on every face.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)

    def member(good: list[int]) -> np.ndarray:
        p = rng.dirichlet(np.ones(7), n) * 0.3
        p[np.arange(n), np.where(np.isin(y, good), y, (y + 1) % 7)] += 0.7
        return p

    return np.stack([member([0, 1, 2, 3]), member([4, 5, 6])], axis=1).astype(np.float32), y


@pytest.mark.slow
def test_stacking_learns_whom_to_trust_and_averaging_cannot():
    val, y_val = two_experts(700, seed=0)
    test, y_test = two_experts(700, seed=1)
    fitted = fit_combiners(val, y_val, ["average", "tree", "logistic"], folds=5, seed=0)
    acc = {k: float((f.combiner(test).argmax(1) == y_test).mean()) for k, f in fitted.items()}
    assert acc["tree"] > 0.97 and acc["logistic"] > 0.97 and acc["average"] < 0.6, acc
    assert fitted["tree"].cv_accuracy > 0.95 and fitted["average"].cv_accuracy < 0.6
    assert set(fitted["tree"].params) == {"max_depth", "min_samples_leaf", "criterion"}
    assert set(fitted["logistic"].params) == {"C"} and fitted["average"].params == {}
    assert np.allclose(fitted["average"].combiner(test), test.mean(axis=1))


@pytest.mark.parametrize("classes", [[1, 3, 5], [2, 6], list(range(7))])
def test_numpy_combiners_match_scikit_learn(classes):
    """The device's tree walk and softmax give scikit-learn's predict_proba, in label columns."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), (300, 2)).astype(np.float32)
    y = rng.choice(classes, 300)
    x = probs.reshape(300, -1)
    tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(x, y)
    logistic = LogisticRegression(max_iter=2000).fit(x, y)
    for model, export in ((tree, export_tree), (logistic, export_logistic)):
        combiner = export(model, 7)
        got = combiner(probs)
        assert np.allclose(got[:, classes], model.predict_proba(x), atol=1e-6)
        assert np.all(got[:, np.setdiff1d(np.arange(7), classes)] == 0)
        again = combiner_from_dict(json.loads(json.dumps(combiner.to_dict())), 2, 7)  # the JSON round trip
        assert np.array_equal(again(probs), got)


def test_member_checks_name_the_mismatch():
    def member(labels=("a", "b"), size=(48, 48), margin=0.0):
        return SimpleNamespace(labels=labels, input_size=size, metadata=SimpleNamespace(face_margin=margin))

    with pytest.raises(ModelError, match=r"disagree on labels: a.tflite has \(a, b\) but b.tflite has \(a, c\)"):
        check_members([member(), member(("a", "c"))], ["a.tflite", "b.tflite"])
    with pytest.raises(ModelError, match="different input sizes: a.tflite 48x48, b.tflite 32x32"):
        check_members([member(), member(size=(32, 32))], ["a.tflite", "b.tflite"])
    with pytest.raises(ModelError, match="crop faces differently"):
        check_members([member(), member(margin=0.2)], ["a.tflite", "b.tflite"])


@pytest.mark.parametrize("combiner, fragment", [
    ({"kind": "vote"}, "unknown combiner 'vote'"),
    ({"kind": "average", "weights": [0.7, 0.7]}, "weights summing to 1"),
    ({"kind": "logistic", "classes": [0, 1, 2], "coef": [[0.0] * 14] * 2, "intercept": [0, 0, 0]}, "do not fit"),
    ({"kind": "tree", "classes": [0, 9], "children_left": [-1], "children_right": [-1], "feature": [-2],
      "threshold": [-2.0], "value": [[1, 0]]}, "label indices below 7"),
    ({"kind": "tree", "classes": [0, 1], "children_left": [1, 0, -1], "children_right": [2, -1, -1],
      "feature": [0, 0, -2], "threshold": [0.5, 0.5, -2.0], "value": [[1, 0]] * 3}, "point forward"),
    ({"kind": "tree", "classes": [0, 1]}, "malformed tree combiner ('children_left')"),
])
def test_malformed_combiners_are_model_errors(combiner, fragment):
    with pytest.raises(ModelError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        combiner_from_dict(combiner, 2, 7)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``(out, data)``: an ensemble of the two committed fixture models, fitted on synthetic val."""
    tmp = tmp_path_factory.mktemp("ensemble")
    data = write_npz(tmp / "d.npz", {"train": 14, "val": 140, "test": 140})
    rc = main(["ensemble", "--members", *map(str, MEMBERS), "--data", str(data), "--out", str(tmp / "out"),
               "--name", "ens", "--timing-runs", "5"])
    assert rc == 0
    return tmp / "out", data


@pytest.mark.slow
def test_ensemble_writes_device_models_and_the_table(built):
    out, _ = built
    for name in ("ens_average.json", "ens_tree.json", "ens_logistic.json", "results.md", "ensemble_report.json",
                 "tiny_int8.tflite", "tiny_int8.json", "tiny_float32.tflite", "tiny_float32.json"):
        assert (out / name).is_file(), name
    table = (out / "results.md").read_text()
    assert table.count("| member |") == 2 and "| tree |" in table and "gain vs best member" in table
    report = json.loads((out / "ensemble_report.json").read_text())
    assert report["chosen"] in ("average", "tree", "logistic") and report["best_member"].startswith("tiny_")
    meta = json.loads((out / "ens_tree.json").read_text())
    assert meta["kind"] == "ensemble" and meta["quantization"] == "int8+float32" and meta["sha256"] is None
    assert [m["file"] for m in meta["extra"]["members"]] == ["tiny_int8.tflite", "tiny_float32.tflite"]
    assert meta["source"]["fitted_on"] == "val" and meta["source"]["folds"] == 5
    assert {"val_cv_accuracy", "test_accuracy", "test_macro_f1", "ms_per_face"} <= set(meta["metrics"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["average", "tree", "logistic"])
def test_artifact_round_trip_on_the_device_path(built, kind):
    """load_classifier(NAME.json) runs every member on one batch and combines; its test figure is the reported one."""
    out, data = built
    clf = load_classifier(out / f"ens_{kind}.json")
    assert isinstance(clf, EnsembleClassifier) and clf.input_size == (48, 48) and kind in clf.backend
    test = load_splits(data, seed=1234).test
    members = [load_classifier(m) for m in MEMBERS]
    probs = np.stack([m.predict(test.x) for m in members], axis=1)
    got = clf.predict(test.x)
    assert got.shape == (140, 7) and got.dtype == np.float32 and np.allclose(got.sum(1), 1, atol=1e-5)
    assert np.allclose(got, clf.combiner(probs), atol=1e-6)
    if kind == "average":
        assert np.allclose(got, probs.mean(axis=1), atol=1e-6)
    meta = json.loads((out / f"ens_{kind}.json").read_text())
    assert round(evaluate(clf, test).accuracy, 4) == meta["metrics"]["test_accuracy"]
    assert clf.predict(test.x[:0]).shape == (0, 7)
    assert clf.size_bytes > sum(m.stat().st_size for m in MEMBERS)


@pytest.mark.slow
def test_bench_compares_the_ensemble_with_a_single_model(built):
    out, _ = built
    proc = run_cli("bench", "--model", str(out / "ens_tree.json"), "--model", str(MEMBERS[0]), "--frames", "4",
                   "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [r["model"] for r in rows] == ["ens_tree.json", "tiny_int8.tflite"]
    assert all(r["status"] == "ok" and r["ms_per_face"] > 0 for r in rows)


@pytest.mark.slow
def test_device_needs_neither_scikit_learn_nor_tensorflow(built):
    out, data = built
    code = ("import sys; sys.modules['sklearn'] = sys.modules['tensorflow'] = None; from edge_fer.cli import main; "
            f"sys.argv = ['edge-fer', 'eval', '--data', {str(data)!r}, '--model', {str(out / 'ens_tree.json')!r}]; "
            "main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "accuracy" in proc.stdout, proc.stderr


def _broken(out, tmp_path, case):
    """A copy of the tree ensemble, broken one way."""
    dest = tmp_path / "e"
    shutil.copytree(out, dest)
    path = dest / "ens_tree.json"
    meta = json.loads(path.read_text())
    if case == "missing member":
        (dest / "tiny_float32.tflite").unlink()
    elif case == "replaced member":
        shutil.copy(dest / "tiny_int8.tflite", dest / "tiny_float32.tflite")
    elif case == "mirror on the ensemble":
        meta["flip_average"] = True
    elif case == "no members":
        meta["extra"]["members"] = []
    elif case == "relabelled ensemble":
        meta["labels"] = [*meta["labels"][:-1], "calm"]
    path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("case, fragment", [
    ("missing member", "member model not found"),
    ("replaced member", "does not match the sha256 in ens_tree.json"),
    ("mirror on the ensemble", "are set on each member, not on the ensemble"),
    ("no members", "needs extra.members"),
    ("relabelled ensemble", "labels or input size differ from its members'"),
])
@pytest.mark.slow
def test_broken_artifacts_are_one_line_errors(built, tmp_path, case, fragment):
    path = _broken(built[0], tmp_path, case)
    with pytest.raises(ModelError, match=fragment):
        load_classifier(path)
    proc = run_cli("eval", "--model", str(path), "--data", str(built[1]))
    assert_one_line_error(proc, fragment)


def _relabelled(tmp_path):
    """tiny_float32 with one label renamed: same outputs, different meaning."""
    dest = tmp_path / "relabelled.tflite"
    shutil.copy(MEMBERS[1], dest)
    meta = json.loads(metadata_path(MEMBERS[1]).read_text())
    meta["labels"][0] = "mad"
    metadata_path(dest).write_text(json.dumps(meta))
    return dest


@pytest.mark.parametrize("case, fragment", [
    ("different labels", "ensemble members disagree on labels"),
    ("one member", "needs two or more models"),
    ("missing member", "model not found"),
    ("same names", "share file and folder names"),
])
@pytest.mark.slow
def test_bad_members_are_one_line_errors(built, tmp_path, capsys, case, fragment):
    _, data = built
    members = {"different labels": [MEMBERS[0], _relabelled(tmp_path)], "one member": MEMBERS[:1],
               "missing member": [MEMBERS[0], tmp_path / "nope.tflite"], "same names": [MEMBERS[0], MEMBERS[0]]}[case]
    rc = main(["ensemble", "--members", *map(str, members), "--data", str(data), "--out", str(tmp_path / "o"),
               "--timing-runs", "1"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and lines[-1].startswith("error: ") and fragment in lines[-1], err
    assert "Traceback" not in err


@pytest.mark.slow
def test_members_with_different_input_sizes_are_refused(built, tmp_path, capsys):
    """A real 32x32 model beside a 48x48 one: the faces would be cropped twice, so the ensemble refuses."""
    pytest.importorskip("training.common.tf_env", reason="needs TensorFlow")
    from convert.tflite import to_tflite
    from edge_fer.metadata import ModelMetadata, save_metadata
    from training.common.tf_env import keras

    inputs = keras.Input((32, 32, 1))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inputs)))
    small = tmp_path / "small.tflite"
    small.write_bytes(to_tflite(model, "float32"))
    save_metadata(small, ModelMetadata(input_size=(32, 32)))
    rc = main(["ensemble", "--members", str(MEMBERS[0]), str(small), "--data", str(built[1]), "--out",
               str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ensemble members take different input sizes"), err
    assert "tiny_int8.tflite 48x48" in err[-1] and "small.tflite 32x32" in err[-1]


@pytest.mark.slow
def test_shipping_an_ensemble_replaces_the_shipped_model(built, tmp_path):
    """ship_ensemble: default.json (kind ensemble) + its members, nothing stale; ``--model`` not needed to load it."""
    from convert.ship import ship_ensemble

    out, data = built
    models, docs = tmp_path / "models", tmp_path / "docs"
    models.mkdir()
    for stale in ("default.tflite", "default.json", "old.tflite"):
        (models / stale).write_text("an earlier shipped model")
    ship_ensemble(out / "ens_average.json", models_dir=models, docs_dir=docs)
    assert sorted(p.name for p in models.iterdir()) == ["default.json", "tiny_float32.json", "tiny_float32.tflite",
                                                        "tiny_int8.json", "tiny_int8.tflite"]
    assert {"results.md", "ensemble_report.json"} <= {p.name for p in docs.iterdir()}
    clf = load_classifier(models / "default.json")
    test = load_splits(data, seed=1234).test
    assert np.allclose(clf.predict(test.x), load_classifier(out / "ens_average.json").predict(test.x))


@pytest.mark.slow
def test_ship_only_when_the_gain_is_beyond_the_noise(built, tmp_path, capsys):
    """``training ensemble --ship`` keeps the shipped model for a gain whose interval reaches 0, ships one above."""
    from training.pipelines.ensemble import Row, _ship

    out, _ = built
    models = tmp_path / "models"
    models.mkdir()
    (models / "default.tflite").write_text("the shipped single model")
    dest = {"models_dir": models, "docs_dir": tmp_path / "docs"}
    path = out / "ens_average.json"
    _ship(Row(path.name, "average", 0.5, None, (0.004, -0.002, 0.01), 0.1, path), path, **dest)
    assert (models / "default.tflite").exists() and "within the noise" in capsys.readouterr().err
    _ship(Row(path.name, "average", 0.5, None, (0.02, 0.01, 0.03), 0.1, path), path, **dest)
    assert not (models / "default.tflite").exists() and load_classifier(models / "default.json").labels


@pytest.mark.slow
def test_info_counts_every_file_of_the_ensemble(built):
    out, _ = built
    proc = run_cli("info", "--model", str(out / "ens_tree.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)["model"]
    assert model["kind"] == "ensemble" and model["exists"]
    assert model["size_bytes"] == sum(p.stat().st_size for p in [out / "ens_tree.json", *(out / m.name for m in MEMBERS)])
    assert model["files"] == [str(out / "ens_tree.json"), *(str(out / m.name) for m in MEMBERS)]
    assert model["details"] == [f"members    {', '.join(m.name for m in MEMBERS)}", "combiner   tree"]
