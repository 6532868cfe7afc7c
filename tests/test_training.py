"""The dataset loaders training shares with the device, the trainer on synthetic data, and its user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_fer.datasets import available_splits, load_split
from edge_fer.errors import DataError, EdgeFerError
from edge_fer.labels import FER2013_LABELS
from support import ROOT, SHIPPED_NETWORK
from synthetic import faces, write_csv, write_folder, write_npz
from training.common.data import load_splits


def test_npz_with_split_keys(tmp_path):
    path = write_npz(tmp_path / "d.npz", {"train": 30, "val": 14, "test": 21})
    assert available_splits(path) == ["train", "val", "test"]
    val = load_split(path, "val")
    assert val.x.shape == (14, 48, 48) and val.x.dtype == np.uint8
    assert val.labels == FER2013_LABELS and set(val.y) == set(range(7))


def test_npz_with_plain_x_y_serves_every_split(tmp_path):
    x, y = faces(20)
    np.savez(tmp_path / "d.npz", x=x[..., None].astype(np.float32) / 255.0, y=y)  # (n, h, w, 1) floats in 0..1
    test = load_split(tmp_path / "d.npz", "test")
    assert test.x.shape == (20, 48, 48) and test.x.dtype == np.uint8
    assert np.abs(test.x.astype(int) - x).max() <= 1


def test_fer2013_csv(tmp_path):
    path = write_csv(tmp_path / "fer.csv", {"Training": 21, "PublicTest": 7, "PrivateTest": 14})
    assert available_splits(path) == ["train", "val", "test"]
    assert [len(load_split(path, s)) for s in ("train", "val", "test")] == [21, 7, 14]
    assert load_split(path, "train").x.shape[1:] == (48, 48)


def test_csv_without_usage_is_one_split(tmp_path):
    path = write_csv(tmp_path / "fer.csv", {"Training": 9}, columns=("emotion", "pixels"))
    assert len(load_split(path, "test")) == 9


def test_folder_with_split_subfolders(tmp_path):
    write_folder(tmp_path / "Training", 14)
    write_folder(tmp_path / "PrivateTest", 7, seed=1)
    assert available_splits(tmp_path) == ["train", "test"]
    train = load_split(tmp_path, "train")
    assert train.x.shape == (14, 48, 48) and train.x.dtype == np.uint8  # 64x64 colour resized to gray 48x48
    assert len(load_split(tmp_path, "test")) == 7
    with pytest.raises(DataError, match="no 'val' folder"):
        load_split(tmp_path, "val")


def test_bare_class_folders_are_one_split(tmp_path):
    write_folder(tmp_path, 21, color=False, size=(48, 48))
    got = load_split(tmp_path, "val")
    assert len(got) == 21 and sorted(set(got.y)) == list(range(7))


def test_load_splits_carves_a_stratified_val_from_train(tmp_path):
    write_folder(tmp_path / "train", 70)
    splits = load_splits(tmp_path, val_fraction=0.2)
    assert splits.test is None
    assert len(splits.train) + len(splits.val) == 70
    assert np.bincount(splits.val.y, minlength=7).tolist() == [2] * 7


@pytest.mark.slow
def test_training_writes_a_complete_run_folder(trained_run):
    run_dir, metrics = trained_run
    for name in ("model.keras", "model.h5", "last.keras", "history.csv", "curves.png", "confusion_matrix.png",
                 "classification_report.txt", "metrics.json", "train_config.json"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["model"] == "edge-cnn" and saved["epochs"] == 1 and saved["train_images"] == 210
    assert saved["val"]["n"] == 70 and saved["test"]["n"] == 70
    assert saved["scaling"] == {"mean": 0.0, "std": 255.0} and saved["input_size"] == [48, 48]
    assert "git_commit" in saved


@pytest.mark.slow
@pytest.mark.parametrize("form", ["csv", "folder"])
def test_training_on_csv_and_image_folders(tmp_path, train_tiny, form):
    """The other two forms train too; a folder without a val split gets one carved from train."""
    if form == "csv":
        data = write_csv(tmp_path / "fer.csv", {"Training": 140, "PublicTest": 14, "PrivateTest": 14})
    else:
        data = write_folder(tmp_path / "faces" / "train", 140).parent
        write_folder(tmp_path / "faces" / "test", 14, seed=3)
    metrics = train_tiny(data, tmp_path / "run", limit=140)
    assert metrics["test"]["n"] == 14 and (tmp_path / "run" / "model.keras").is_file()
    # The folder's val is carved from its 140 training faces: 10% of each class.
    assert metrics["val"]["n"] == 14 and metrics["train_images"] == (140 if form == "csv" else 126)


def _bad_inputs(tmp_path):
    x, y = faces(14)
    np.savez(tmp_path / "range.npz", train_x=x, train_y=y + 3)
    np.savez(tmp_path / "empty.npz", train_x=np.zeros((0, 48, 48), np.uint8), train_y=np.zeros(0, np.int64))
    write_csv(tmp_path / "cols.csv", {"Training": 7}, columns=("emotion", "image", "Usage"))
    return {
        "missing": (tmp_path / "nope.npz", "dataset not found"),
        "wrong CSV column": (tmp_path / "cols.csv", "missing column(s) pixels"),
        "labels out of range": (tmp_path / "range.npz", "must lie in 0..6"),
        "empty split": (tmp_path / "empty.npz", "is empty"),
    }


@pytest.mark.parametrize("case", [
    "missing",
    "wrong CSV column", "labels out of range", "empty split"])
def test_bad_data_is_a_one_line_error(tmp_path, capsys, case):
    pytest.importorskip("training.common.tf_env", reason="needs TensorFlow")  # imports TF the project way
    from training.__main__ import main

    data, fragment = _bad_inputs(tmp_path)[case]
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--verbose", "0"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0] and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_data_is_one_line_in_a_real_process(tmp_path):
    """As a process, stderr is the file descriptor: TensorFlow's start-up banner must not come before the error."""
    from support import assert_one_line_error

    proc = subprocess.run([sys.executable, "-m", "training", "train", "--data", str(tmp_path / "nope.npz"),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert_one_line_error(proc, "dataset not found")


def test_run_metrics_match_scikit_learn():
    """metrics.json's figures come from edge_fer's numpy metrics; they must be scikit-learn's (class 6 never predicted)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    from training.common.reports import split_metrics

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 7, 500), rng.integers(0, 6, 500)
    m = split_metrics(y_true, y_pred, FER2013_LABELS)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=range(7), average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(7), zero_division=0)
    got = np.array([[c["precision"], c["recall"], c["f1"], c["support"]] for c in m["per_class"].values()])
    np.testing.assert_allclose(got, np.stack([p, r, f, s], 1))
    assert np.array(m["confusion"]).sum() == 500 and m["n"] == 500
    few_true, few_pred = rng.integers(0, 2, 50), rng.integers(0, 3, 50)  # classes 3-6 occur nowhere
    assert split_metrics(few_true, few_pred, FER2013_LABELS)["macro_f1"] == pytest.approx(
        f1_score(few_true, few_pred, average="macro", zero_division=0))


def _train_args(data, out, *extra):
    import argparse

    from training import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(["--data", str(data), "--out", str(out), "--arch", "edge-cnn", "--width", "4",
                              "--batch-size", "64", "--limit", "210", "--verbose", "0", *extra])


@pytest.mark.slow
def test_a_resumed_cosine_run_follows_the_schedule_over_its_total_epochs(tmp_path):
    """A long run spans sessions: stopped after 1 of 3 epochs and resumed, it gets the uninterrupted run's rates."""
    from training import train

    data = write_npz(tmp_path / "d.npz", {"train": 210, "val": 70})
    out = tmp_path / "run"
    train.run(_train_args(data, out, "--epochs", "1", "--lr-schedule", "cosine", "--lr", "0.01",
                          "--label-smoothing", "0.1", "--seed", "7", "--patience", "5"))
    assert json.loads((out / "train_config.json").read_text())["peak_lr"] == 0.01
    metrics = train.run(_train_args(data, out, "--epochs", "3", "--resume"))  # schedule and rate: the run's own
    recorded = json.loads((out / "train_config.json").read_text())  # and so is every option left out
    assert (recorded["label_smoothing"], recorded["seed"], recorded["patience"]) == (0.1, 7, 5)
    rates = train.read_history(out / "history.csv")["learning_rate"]
    assert len(rates) == 3 and metrics["epochs"] == 3 and metrics["lr_schedule"] == "cosine"
    assert rates == pytest.approx([train.cosine_lr(p, 0.01) for p in (0, 0.5, 1)], rel=1e-5)
    assert json.loads((out / "train_config.json").read_text())["resumed_at_epochs"] == [1]
    assert train.cosine_lr(0, 1) == 1 and train.cosine_lr(1, 1) == pytest.approx(0.01) == train.cosine_lr(7, 1)


@pytest.mark.slow
def test_resume_with_a_new_rate_restarts_the_plateau_schedule_from_it(trained_run, tmp_path):
    import shutil

    from training import train

    run_dir, _ = trained_run
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    data = json.loads((run_dir / "metrics.json").read_text())["data"]
    train.run(_train_args(data, out, "--epochs", "2", "--resume", "--lr", "0.005"))
    rates = train.read_history(out / "history.csv")["learning_rate"]
    assert len(rates) == 2 and rates[1] == pytest.approx(0.005)


@pytest.mark.parametrize("case", ["no folder", "no checkpoint", "corrupt checkpoint", "corrupt history",
                                  "cosine-minutes without a budget", "other optimizer", "erasing out of range",
                                  "a run there already", "other width", "tail longer than the run",
                                  "init and resume", "init missing"])
def test_a_partial_or_corrupt_run_folder_is_a_one_line_error(tmp_path, capsys, case):
    """What a killed session can leave behind: one line that says what is wrong and what to do, no traceback."""
    from training.__main__ import main

    data = write_npz(tmp_path / "d.npz", {"train": 28, "val": 14})
    out = tmp_path / "run"
    if case not in ("no folder", "cosine-minutes without a budget", "erasing out of range", "init missing"):
        out.mkdir()
        (out / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.2,1.9,0.2,1.9\n")
        (out / "train_config.json").write_text('{"lr_schedule": "cosine", "peak_lr": 0.001, "width": 4}')
        (out / "last.keras").write_bytes(b"PK\x03\x04 cut short")
    if case == "no checkpoint":
        (out / "last.keras").unlink()
    if case == "corrupt history":
        (out / "history.csv").write_text("epoch,accuracy,loss\n0,0.2,\n")
    extra = {"cosine-minutes without a budget": ["--lr-schedule", "cosine-minutes"],
             "other optimizer": ["--resume", "--optimizer", "sgd"],  # the run trains with adam (recorded default)
             "erasing out of range": ["--erasing", "1.5"], "a run there already": [],  # forgot --resume
             "other width": ["--resume", "--width", "8"],
             "tail longer than the run": ["--resume", "--average-last", "5"],
             "init and resume": ["--resume", "--init", str(SHIPPED_NETWORK)],
             "init missing": ["--init", str(tmp_path / "nope.tflite")]}.get(case, ["--resume"])
    argv = ["train", "--data", str(data), "--out", str(out), "--width", "4", "--epochs", "3", "--verbose", "0",
            *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    fragment = {"no folder": "no run folder", "no checkpoint": "last.keras missing",
                "corrupt checkpoint": "cannot read checkpoint", "corrupt history": "unreadable history.csv",
                "cosine-minutes without a budget": "--max-minutes", "other optimizer": "trains with adam, not sgd",
                "erasing out of range": "--erasing 1.5", "a run there already": "holds a run already: continue it "
                "with --resume", "other width": "has --width 4, which its checkpoint fixes: drop --width",
                "tail longer than the run": "--average-last 5", "init and resume": "--init starts a new run",
                "init missing": "nope.tflite: no such file"}[case]
    assert fragment in err[0], err[0]


@pytest.mark.parametrize("votes", ["missing", "not an npz", "no vote columns"])
def test_a_bad_ferplus_votes_file_is_a_one_line_error(tmp_path, capsys, votes):
    from training.__main__ import main

    data = write_npz(tmp_path / "d.npz", {"train": 28, "val": 14})
    path = tmp_path / "votes.npz"
    if votes == "not an npz":
        path.write_text("emotion,pixels\n")
    if votes == "no vote columns":
        np.savez(path, train_votes=np.zeros((28, 10)), train_reliable=np.ones(28, bool))
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--ferplus", str(path), "--verbose", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --ferplus {path}: not a FER+ votes file"), err


@pytest.mark.slow
def test_distilling_from_a_teacher_mixes_its_device_probabilities(trained_run, tmp_path):
    """--teacher runs the teacher through edge_fer (preprocessing, combiner) and records it in metrics.json; its
    answers stay in the run folder, so a resume needs neither its files nor the time to run it again."""
    import argparse
    import shutil

    from edge_fer.classifier import load_classifier
    from support import FIXTURES
    from training import train
    from training.common.data import teacher_targets

    teacher = FIXTURES / "tiny_int8.tflite"
    x, _ = faces(21)
    soft = teacher_targets(teacher, x, FER2013_LABELS)
    np.testing.assert_allclose(soft, load_classifier(teacher).predict(x), rtol=1e-6)
    np.testing.assert_allclose(soft.sum(1), 1, rtol=1e-5)

    run_dir, _ = trained_run
    data = json.loads((run_dir / "metrics.json").read_text())["data"]
    shutil.copy(teacher, tmp_path / "t.tflite")
    shutil.copy(teacher.with_suffix(".json"), tmp_path / "t.json")

    def session(*extra: str) -> dict:
        parser = argparse.ArgumentParser()
        train.add_arguments(parser)
        return train.run(parser.parse_args(["--data", data, "--out", str(tmp_path / "run"), "--verbose", "0",
                                            *extra]))

    metrics = session("--width", "4", "--epochs", "1", "--batch-size", "64", "--limit", "210",
                      "--teacher", str(tmp_path / "t.tflite"), "--teacher-mix", "0.7")
    assert metrics["teacher"] == str(tmp_path / "t.tflite") and metrics["teacher_mix"] == 0.7
    assert (tmp_path / "run" / "model.keras").exists()
    kept = np.load(tmp_path / "run" / "teacher.npy")  # the teacher's answers for the 210 training faces
    assert kept.shape == (210, 7)
    np.testing.assert_allclose(kept.sum(1), 1, rtol=1e-5)
    # A later session goes on from what the run kept: the teacher's files may be gone by then.
    (tmp_path / "t.tflite").unlink()
    metrics = session("--resume", "--epochs", "2")
    assert metrics["epochs"] == 2 and metrics["teacher_mix"] == 0.7


@pytest.mark.parametrize("case", ["mix out of range", "labels differ", "corrupt teacher"])
def test_a_bad_teacher_is_a_one_line_error(tmp_path, capsys, case):
    import shutil

    from support import FIXTURES
    from training.__main__ import main

    data = write_npz(tmp_path / "d.npz", {"train": 28, "val": 14})
    teacher, mix, fragment = FIXTURES / "tiny_int8.tflite", "0.5", ""
    if case == "mix out of range":
        mix, fragment = "1.5", "give a share between 0 and 1"
    elif case == "labels differ":
        teacher = tmp_path / "t.tflite"
        shutil.copy(FIXTURES / "tiny_int8.tflite", teacher)
        meta = json.loads((FIXTURES / "tiny_int8.json").read_text())
        meta["labels"] = ["anger", *meta["labels"][1:]]
        (tmp_path / "t.json").write_text(json.dumps(meta))
        fragment = "differ from the data's"
    else:
        teacher = tmp_path / "t.tflite"
        teacher.write_bytes(b"not a model")
        fragment = "t.tflite"
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--verbose", "0",
               "--teacher", str(teacher), "--teacher-mix", mix])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resume_past_the_last_epoch_is_a_one_line_error(trained_run, tmp_path, capsys):
    """--epochs is the last epoch number, so a resumed run needs more than it already has."""
    import shutil

    from training.__main__ import main

    run_dir, _ = trained_run
    shutil.copytree(run_dir, tmp_path / "run")
    data = json.loads((run_dir / "metrics.json").read_text())["data"]
    rc = main(["train", "--data", data, "--out", str(tmp_path / "run"), "--resume", "--epochs", "1"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "already has 1 epoch and" in lines[0] and "--epochs 31" in lines[0], lines


@pytest.mark.slow
def test_resume_keeps_the_run_s_augmentation_setting(trained_run, tmp_path, capsys):
    """The checkpoint holds the augmentation layers (or not): a resume that flips --no-augment is an error."""
    import shutil

    from training.__main__ import main

    run_dir, _ = trained_run
    shutil.copytree(run_dir, tmp_path / "run")
    data = json.loads((run_dir / "metrics.json").read_text())["data"]
    rc = main(["train", "--data", data, "--out", str(tmp_path / "run"), "--resume", "--epochs", "5",
               "--no-augment"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and lines[-1].startswith("error: ") and "drop --no-augment" in lines[-1], lines


def test_face_augment_leaves_faces_alone_outside_training_and_at_zero_ranges():
    from training.augment import FaceAugment

    x = np.random.default_rng(0).random((4, 48, 48, 1), np.float32)
    assert np.array_equal(np.asarray(FaceAugment(seed=1)(x, training=False)), x)
    still = FaceAugment(flip=False, shift=0, rotate=0, zoom=0, brightness=0, contrast=0, seed=1)
    np.testing.assert_allclose(np.asarray(still(x, training=True)), x, atol=1e-5)  # the resampling is exact


def test_face_augment_mirrors_about_the_centre():
    from training.augment import FaceAugment

    x = np.random.default_rng(1).random((32, 48, 48, 1), np.float32)
    flip = FaceAugment(shift=0, rotate=0, zoom=0, brightness=0, contrast=0, seed=2)
    out = np.asarray(flip(x, training=True))
    same = np.isclose(out, x, atol=1e-5).all(axis=(1, 2, 3))
    mirrored = np.isclose(out, x[:, :, ::-1], atol=1e-5).all(axis=(1, 2, 3))
    assert (same ^ mirrored).all() and 4 < mirrored.sum() < 28


def test_face_augment_varies_faces_within_the_pixel_range_and_round_trips_its_config():
    from training.augment import FaceAugment

    x, _ = faces(16)
    x = x[..., None].astype(np.float32) / 255
    layer = FaceAugment(seed=3)
    first, second = np.asarray(layer(x, training=True)), np.asarray(layer(x, training=True))
    assert first.shape == x.shape and first.min() >= 0 and first.max() <= 1
    assert not np.allclose(first, x) and not np.allclose(first, second)  # a new draw per batch
    copy = FaceAugment.from_config(layer.get_config())
    assert (copy.shift, copy.rotate, copy.zoom, copy.seed) == (0.1, 14.4, 0.1, 3)


def test_random_erasing_puts_one_noise_rectangle_on_the_chosen_faces():
    from training.augment import FaceAugment

    x = np.full((64, 48, 48, 1), 0.5, np.float32)
    only = dict(flip=False, shift=0, rotate=0, zoom=0, brightness=0, contrast=0)
    erase = FaceAugment(**only, erasing=0.5, seed=4)
    changed = ~np.isclose(np.asarray(erase(x, training=True)), 0.5).reshape(64, 48, 48)
    share = changed.mean(axis=(1, 2))
    hit = share > 0
    assert 16 < hit.sum() < 48  # about half the faces
    assert (share[hit] <= 0.22).all() and np.median(share[hit]) > 0.02  # 2-20% of the face, up to rounding
    for face in changed[hit]:  # one axis-aligned rectangle: its bounding box is (almost) all noise
        rows, cols = np.flatnonzero(face.any(axis=1)), np.flatnonzero(face.any(axis=0))
        box = face[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.mean() > 0.95
    assert FaceAugment.from_config(erase.get_config()).erasing == 0.5


@pytest.mark.slow
def test_sgd_with_nesterov_and_erasing_train_and_are_recorded(tmp_path):
    from training import train

    data = write_npz(tmp_path / "d.npz", {"train": 210, "val": 70})
    out = tmp_path / "run"
    metrics = train.run(_train_args(data, out, "--epochs", "1", "--optimizer", "sgd", "--erasing", "0.5"))
    assert (metrics["optimizer"], metrics["erasing"], metrics["hyperparameters"]["lr"]) == ("sgd", 0.5, 0.01)
    checkpoint = train.load_checkpoint(out / "last.keras")
    assert checkpoint.optimizer.name.lower() == "sgd" and checkpoint.optimizer.nesterov
    assert checkpoint.get_layer("augment").erasing == 0.5
    resumed = train.run(_train_args(data, out, "--epochs", "2", "--resume"))  # keeps its optimizer
    assert resumed["optimizer"] == "sgd" and resumed["epochs"] == 2


@pytest.mark.slow
def test_device_train_on_jax_without_tensorflow_then_convert_here(tmp_path):
    """scripts/device-train, all three steps: pack faces here, train on JAX with no TensorFlow, land here.

    A lent GPU machine holds JAX and PyTorch but no TensorFlow, DEAP or Keras Tuner. The train
    half runs under an import hook that makes those unimportable (not ``sys.modules[name] =
    None``: Keras asks whether a name is in sys.modules), and the run it brings back converts
    to int8 with TensorFlow and runs on the device path like any run trained here.
    """
    pytest.importorskip("jax")
    pytest.importorskip("training.common.tf_env", reason="needs TensorFlow")
    from edge_fer.classifier import load_classifier

    data = write_npz(tmp_path / "d.npz", {"train": 280, "val": 70, "test": 70})
    script = str(ROOT / "scripts" / "device-train")
    from support import FIXTURES

    subprocess.run([sys.executable, script, "pack", "--data", str(data), "--dest", str(tmp_path / "pack"),
                    "--no-wheels", "--teacher", str(FIXTURES / "tiny_int8.tflite")], check=True, capture_output=True,
                   timeout=120)
    assert not list((tmp_path / "pack").glob("test*")), "test faces never leave the workstation"
    teacher = tmp_path / "pack" / "teacher.npy"  # the teacher's answers travel, not its runtime
    assert np.load(teacher).shape == (280, 7)
    hook = tmp_path / "no_tensorflow"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'deap', 'keras_tuner'):\n"
        "            raise ModuleNotFoundError(f'no {name} here')\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, script, "train", "--pack", str(tmp_path / "pack"), "--runs", str(tmp_path / "there"),
         "--out", str(out), "--epochs", "1", "--minutes", "10", "--backend", "jax",
         "--run", f"tiny=--width 4 --batch-size 64 --teacher {teacher}",
         "--deadline", "12"],  # not the default 3 minutes: on a busy 2-core machine one epoch may take longer
        env={**os.environ, "PYTHONPATH": str(hook), "OUT": ""}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "tiny: exit 0, 1 epochs, best val" in proc.stdout, proc.stdout
    assert [f.name for f in out.iterdir()] == ["tiny.tar.gz"]  # one file per run: a call brings back 8
    taught = tmp_path / "taught.npy"  # the runs just trained there teach the next call's students
    proc = subprocess.run(
        [sys.executable, script, "teach", "--pack", str(tmp_path / "pack"), "--runs", str(tmp_path / "there"),
         "--members", "tiny", "--out", str(taught), "--backend", "jax"],
        env={**os.environ, "PYTHONPATH": str(hook)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 networks' average for 280 train faces" in proc.stdout, proc.stdout + proc.stderr
    from edge_fer.preprocess import scale_pixels
    from training.common.keras_env import keras

    network = keras.models.load_model(tmp_path / "there" / "tiny" / "model.keras")
    x = scale_pixels(load_splits(data).train.x)[..., None]
    expected = (network.predict(x, verbose=0) + network.predict(x[:, :, ::-1], verbose=0)) / 2
    assert np.allclose(np.load(taught), expected, atol=1e-4)  # the network and its mirror, as the device averages
    auto = subprocess.run(  # the default backend choice wants a GPU: none here, so no training on the CPU
        [sys.executable, script, "train", "--pack", str(tmp_path / "pack"), "--runs", str(tmp_path / "there2"),
         "--out", str(tmp_path / "out2"), "--run", "tiny=--width 4"],
        env={**os.environ, "PYTHONPATH": str(hook)}, capture_output=True, text=True, timeout=300)
    assert auto.returncode == 2 and "no Keras backend sees a GPU" in auto.stderr, auto.stdout + auto.stderr
    land = [sys.executable, script, "land", str(out), "--runs", str(tmp_path / "runs"), "--data", str(data)]
    subprocess.run(land, check=True, capture_output=True, timeout=600)  # extract, convert, Edge TPU op check
    run = tmp_path / "runs" / "tiny"
    log = (run / "train.log").read_text()
    assert " here" not in log  # nothing tried TensorFlow, DEAP or Keras Tuner
    assert "--lr-schedule cosine --epochs 1 --max-minutes 10" in log  # --epochs: a cosine over epochs, capped
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and metrics["epochs"] == 1 and "test" not in metrics
    assert metrics["teacher"] == str(teacher) and metrics["teacher_mix"] == 0.5
    record = json.loads((run / "device_train.json").read_text())  # how it was made there, for the card
    assert record["run"] == "tiny" and record["backend"] == "jax" and Path(record["data"]).name == "d.npz"
    assert record["command"].startswith("scripts/device-train train --pack ")
    assert not (run / "best.keras").exists()  # only what the trip back needs
    verify = json.loads((run / "model_int8.verify.json").read_text())
    assert "test" in verify["splits"]  # scored here, where the test faces are
    clf = load_classifier(run / "model_int8.tflite", num_threads=1)
    assert clf.metadata.quantization == "int8" and clf.predict(load_splits(data).val.x).shape == (70, 7)


@pytest.mark.slow
def test_device_train_deadline_stops_runs_and_land_uses_the_best_checkpoint(trained_run, tmp_path):
    """A run still going at --deadline is stopped and sent back; land makes model.keras of best.keras."""
    import tarfile

    pytest.importorskip("jax")
    script = str(ROOT / "scripts" / "device-train")
    data = write_npz(tmp_path / "d.npz", {"train": 280, "val": 70, "test": 70})
    subprocess.run([sys.executable, script, "pack", "--data", str(data), "--dest", str(tmp_path / "pack"),
                    "--no-wheels"], check=True, capture_output=True, timeout=120)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, script, "train", "--pack", str(tmp_path / "pack"), "--runs", str(tmp_path / "there"),
         "--out", str(out), "--backend", "jax", "--deadline", "0.01", "--run", "slow=--width 4"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "slow failed or were stopped" in proc.stderr, proc.stdout + proc.stderr
    assert "slow: still training at the deadline, stopped" in proc.stdout
    with tarfile.open(out / "slow.tar.gz") as tar:
        assert "slow/train.log" in tar.getnames()

    run_dir, _ = trained_run  # as if stopped after its best epoch: best.keras, no model.keras
    archives = tmp_path / "back"
    archives.mkdir()
    with tarfile.open(archives / "cut.tar.gz", "w:gz") as tar:
        for f in ("best.keras", "metrics.json", "history.csv", "train_config.json"):
            tar.add(run_dir / f, arcname=f"cut/{f}")
    land = subprocess.run([sys.executable, script, "land", str(archives), "--runs", str(tmp_path / "runs"),
                           "--data", json.loads((run_dir / "metrics.json").read_text())["data"], "--no-edgetpu"],
                          capture_output=True, text=True, timeout=600)
    assert land.returncode == 0, land.stderr[-2000:]
    assert (tmp_path / "runs" / "cut" / "model.keras").exists()
    assert (tmp_path / "runs" / "cut" / "model_int8.tflite").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["pack", "--data", "{tmp}/nope.npz"], "dataset not found"),
    (["train", "--pack", "{tmp}", "--out", "{tmp}/out", "--run", "a="], "no faces in"),
    (["land", "{tmp}"], "no run archives"),
    (["teach", "--runs", "{tmp}", "--members", "t1", "--out", "{tmp}/t.npy"], "no trained network at"),
    (["train", "--pack", "{tmp}", "--out", "{tmp}/out", "--run", "a b=--width 8"], "distinct names"),
    (["train", "--pack", "{tmp}", "--out", "{tmp}/out", *[f"--run=r{i}=" for i in range(9)]], "at most 8 runs"),
])
def test_device_train_bad_input_is_one_line(tmp_path, argv, fragment):
    from support import assert_one_line_error

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "device-train"),
                           *(a.format(tmp=tmp_path) for a in argv)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert_one_line_error(proc, fragment)


@pytest.mark.slow
def test_the_last_epochs_are_averaged_into_one_network_kept_only_if_better_on_val(tmp_path):
    """--average-last K: the tail's weights are kept across a resume, averaged when the run ends, chosen on val."""
    import numpy as np

    from training import train
    from training.common.keras_env import keras

    data = write_npz(tmp_path / "d.npz", {"train": 210, "val": 70})
    out = tmp_path / "run"
    args = ("--lr-schedule", "cosine", "--average-last", "2")
    first = train.run(_train_args(data, out, "--epochs", "2", *args, "--max-minutes", "0.0001"))  # stops after 1
    assert first["weight_average"] is None and sorted(p.name for p in (out / "tail").iterdir()) == [
        "epoch-001.weights.h5"]  # a run cut short averages nothing yet
    metrics = train.run(_train_args(data, out, "--epochs", "3", *args, "--resume"))
    tail = sorted(p.name for p in (out / "tail").iterdir())
    assert tail == ["epoch-001.weights.h5", "epoch-002.weights.h5", "epoch-003.weights.h5"]
    avg = metrics["weight_average"]
    assert avg["epochs"] == [2, 3] and avg["chosen"] == (avg["val_accuracy"] > avg["best_epoch_val_accuracy"])
    network = keras.models.load_model(out / "model.keras")
    expected = train.average_weights(keras.models.clone_model(network), [out / "tail" / n for n in tail[1:]])
    same = all(np.allclose(a, b) for a, b in zip(network.get_weights(), expected.get_weights()))
    assert same == avg["chosen"]


@pytest.mark.slow
def test_a_checkpoint_write_cut_short_leaves_the_last_whole_one_to_resume_from(tmp_path):
    """A session can end while the trainer writes last.keras: the write goes to a partial name and is renamed
    into place, so the run still resumes, from the checkpoint before."""
    from training import train
    from training.common.runs import save_whole

    data = write_npz(tmp_path / "d.npz", {"train": 210, "val": 70})
    out = tmp_path / "run"
    train.run(_train_args(data, out, "--epochs", "1", "--lr-schedule", "cosine"))
    whole = (out / "last.keras").read_bytes()

    def interrupted(path):
        path.write_bytes(whole[: len(whole) // 2])
        raise KeyboardInterrupt  # Ctrl-C, or the end of the session, halfway through the write

    with pytest.raises(KeyboardInterrupt):
        save_whole(out / "last.keras", interrupted)
    assert (out / "last.keras").read_bytes() == whole
    assert train.run(_train_args(data, out, "--epochs", "2", "--resume"))["epochs"] == 2
    assert not list(out.glob("partial-*"))  # the next whole write took the partial name's place


def test_the_best_checkpoint_is_written_only_when_val_improves_on_the_run_s_best(tmp_path):
    from training.common.keras_env import keras
    from training.train import checkpoint_callback

    best = tmp_path / "best.keras"
    callback = checkpoint_callback(best, 0.5)  # a resumed run whose best epoch so far scored 0.5
    callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    callback.on_epoch_end(0, {"val_accuracy": 0.4})
    assert not best.exists()
    callback.on_epoch_end(1, {"val_accuracy": 0.6})
    assert best.exists()
    best.unlink()
    callback.on_epoch_end(2, {"val_accuracy": 0.55})  # better than 0.5, not than 0.6
    assert not best.exists()
    callback.on_epoch_end(3, {"val_accuracy": 0.7})
    assert keras.models.load_model(best).count_params() == 3


@pytest.mark.slow
def test_a_resumed_session_draws_new_augmentations_and_orders(tmp_path):
    """A checkpoint does not keep the random streams: a resumed session must not replay the first epochs' images."""
    from training import train

    data = write_npz(tmp_path / "d.npz", {"train": 210, "val": 70})
    out = tmp_path / "run"
    train.run(_train_args(data, out, "--epochs", "1", "--lr-schedule", "cosine"))
    checkpoint = train.load_checkpoint(out / "last.keras")
    augment = checkpoint.get_layer("augment")
    x = np.random.default_rng(0).random((8, 48, 48, 1), np.float32)
    replayed = np.asarray(augment(x, training=True))  # a loaded layer starts its stream over ...
    train.fresh_streams(augment, 1234, 1)
    fresh = np.asarray(augment(x, training=True))
    assert not np.allclose(replayed, fresh)  # ... and a resumed session starts a new one
    train.fresh_streams(augment, 1234, 1)
    np.testing.assert_allclose(np.asarray(augment(x, training=True)), fresh)  # reproducibly


def test_status_says_where_a_run_stands_and_how_to_go_on(tmp_path, capsys):
    from training.__main__ import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text("epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
                                     "0,0.40,0.001,1.5,0.45,1.4\n1,0.50,0.0009,1.3,0.52,1.3\n2,0.55,0.0008,1.2,0.50,1.3\n")
    (run / "train_config.json").write_text(json.dumps(
        {"command": "train", "data": "d.npz", "out": str(run), "width": 32, "epochs": 10, "lr_schedule": "cosine",
         "resume": True, "no_augment": False, "peak_lr": 0.001, "resumed_at_epochs": [1]}))
    (run / "last.keras").write_bytes(b"a checkpoint")
    (run / "train.log").write_text("Epoch 1/10\n225/225 - 150s - 666ms/step - accuracy: 0.4\n"
                                   "Epoch 2/10\n225/225 - 170s - 755ms/step - accuracy: 0.5\n"
                                   "Epoch 3/10\n225/225 - 160s - 711ms/step - accuracy: 0.55\n")
    assert main(["status", str(run), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["epochs_done"], s["epochs_total"], s["best_epoch"], s["best_val_accuracy"]) == (3, 10, 2, 0.52)
    assert s["seconds_per_epoch"] == 160 and s["training_now"] is False
    assert s["resume_command"].startswith(f"nohup nice -n 10 python -m training train --data d.npz --out {run} "
                                          "--width 32 --epochs 10 --lr-schedule cosine --resume")
    assert main(["status", str(run)]) == 0
    text = capsys.readouterr().out
    assert "epoch 3 of 10 (cosine), about 0.3 h left at 2.7 min/epoch; not training" in text
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: no run folder {tmp_path / 'nope'}"
    (run / "last.keras").unlink()  # a run landed from the GPU machine keeps no checkpoint to go on from
    assert main(["status", str(run)]) == 0
    assert f"cannot continue: no last.keras in {run}" in capsys.readouterr().out
    config = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**config, "patience": 1}))  # epoch 3 did not beat epoch 2
    assert main(["status", str(run)]) == 0
    assert f"stopped early, no better val for its patience: python -m convert --run {run}" in capsys.readouterr().out
    # A process whose command line trains into this folder (a stand-in that only sleeps) counts as training it.
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "training", "train", "--out",
                                run.name], cwd=tmp_path)
    try:
        from training.status import status

        deadline = time.monotonic() + 30  # the child may not show its command line the moment it starts
        while not status(run).training_now and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status(run).training_now
    finally:
        trainer.kill()
        trainer.wait()


def test_a_teacher_can_come_as_stored_probabilities(tmp_path):
    """What `scripts/device-train pack --teacher` carries: the teacher's probabilities, row for row; a wrong file
    is one clear error."""
    from edge_fer.errors import DataError
    from edge_fer.labels import FER2013_LABELS
    from training.common.data import teacher_targets

    x, _ = faces(12)
    probs = np.random.default_rng(0).dirichlet(np.ones(7), 12)
    np.save(tmp_path / "t.npy", probs)
    np.testing.assert_allclose(teacher_targets(tmp_path / "t.npy", x, FER2013_LABELS), probs, rtol=1e-6)
    np.save(tmp_path / "short.npy", probs[:5])
    with pytest.raises(DataError, match=r"expected probabilities for 12 training faces and 7 classes"):
        teacher_targets(tmp_path / "short.npy", x, FER2013_LABELS)
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(DataError, match="cannot read it"):
        teacher_targets(tmp_path / "junk.npy", x, FER2013_LABELS)


@pytest.mark.slow
def test_a_final_fit_on_train_and_val_keeps_the_last_epoch_and_says_val_was_seen(tmp_path):
    from training import train

    data = write_npz(tmp_path / "d.npz", {"train": 210, "val": 70})
    out = tmp_path / "run"
    metrics = train.run(_train_args(data, out, "--epochs", "2", "--lr-schedule", "cosine", "--fit-on", "train+val"))
    assert metrics["fit_on"] == "train+val" and metrics["val_seen_in_training"] is True
    assert metrics["train_images"] == 280 and metrics["best_epoch"] == 2  # the last epoch, whatever val says
    with pytest.raises(EdgeFerError, match="fits on train\\+val, not train"):
        train.run(_train_args(data, out, "--epochs", "3", "--resume", "--fit-on", "train"))
    with pytest.raises(EdgeFerError, match="plain labels"):
        train.run(_train_args(data, tmp_path / "r2", "--fit-on", "train+val", "--teacher", str(tmp_path / "t.npy")))


def test_a_reader_that_stops_reading_is_not_an_error(tmp_path):
    """`python -m training status RUN | head -1`: the pipe closes before the output is written; no traceback."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.4,1.5,0.45,1.4\n")
    (run / "train_config.json").write_text('{"epochs": 5, "lr_schedule": "cosine"}')
    (run / "last.keras").write_bytes(b"a checkpoint")
    proc = subprocess.Popen([sys.executable, "-m", "training", "status", str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the child has started: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "Error" not in err, err


def _int8_logits(model: Path, x: np.ndarray) -> np.ndarray:
    """The int8 model's raw outputs (logits), dequantised, for uint8 faces: no views, no temperature."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [len(x), *x.shape[1:], 1])
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    scale, zero = inp["quantization"]
    interpreter.set_tensor(inp["index"], np.round(x[..., None] / 255.0 / scale + zero).astype(np.int8))
    interpreter.invoke()
    scale, zero = out["quantization"]
    return (interpreter.get_tensor(out["index"]).astype(np.float32) - zero) * scale


@pytest.mark.slow
def test_the_shipped_int8_model_unfolds_into_a_keras_network_that_computes_what_it_does(tmp_path, capsys):
    """A run's float network stays on the machine that trained it: the shipped int8 model is the way back."""
    from edge_fer.preprocess import scale_pixels
    from training.__main__ import main
    from training.common.keras_env import keras

    data = write_npz(tmp_path / "d.npz", {"train": 160, "val": 70, "test": 70}, seed=5)
    assert main(["unfold", str(SHIPPED_NETWORK), "--data", str(data), "--out", str(tmp_path / "s.keras")]) == 0
    assert "s.keras: 1,176,359 parameters; float, one pass: val " in capsys.readouterr().out  # width 32
    network = keras.models.load_model(tmp_path / "s.keras")
    x = load_split(data, "train").x
    logits = keras.Model(network.inputs, network.get_layer(index=-2).output).predict(
        scale_pixels(x)[..., None], verbose=0)
    int8 = _int8_logits(SHIPPED_NETWORK, x)
    assert np.corrcoef(logits.ravel(), int8.ravel())[0, 1] > 0.98  # int8 activations round; the weights are its own
    assert (logits.argmax(1) == int8.argmax(1)).mean() >= 0.9
    assert main(["unfold", str(data), "--data", str(data), "--out", str(tmp_path / "x.keras")]) == 2  # not a model
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot load model {data}"), err


@pytest.mark.slow
def test_a_run_started_from_a_model_trains_on_from_its_weights(tmp_path, capsys):
    """--init: a new run from the shipped network (unfolded); a width that does not fit it is one line."""
    from training import train
    from training.__main__ import main

    data = write_npz(tmp_path / "d.npz", {"train": 70, "val": 70})
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "narrow"), "--width", "4", "--epochs", "1",
            "--verbose", "0", "--init", str(SHIPPED_NETWORK)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is an edge-cnn network of width 32: give --arch edge-cnn --width 32" in err[0], err
    import shutil

    out, start = tmp_path / "run", tmp_path / "start.tflite"
    shutil.copyfile(SHIPPED_NETWORK, start)
    shutil.copyfile(SHIPPED_NETWORK.with_suffix(".json"), start.with_suffix(".json"))
    args = _train_args(data, out, "--width", "32", "--epochs", "1", "--lr", "1e-9", "--init", str(start))
    metrics = train.run(args)
    from edge_fer.metadata import load_metadata

    shipped = load_metadata(SHIPPED_NETWORK).source
    assert metrics["init"]["path"] == str(start) and metrics["init"]["epochs"] == shipped["epochs"]
    from training.common.runs import training_command

    assert "--init-record" not in training_command(json.loads((out / "train_config.json").read_text()))
    from training.common.keras_env import keras
    from edge_fer.preprocess import scale_pixels

    x = load_split(data, "val").x
    trained = keras.models.load_model(out / "model.keras")
    logits = keras.Model(trained.inputs, trained.get_layer(index=-2).output).predict(
        scale_pixels(x)[..., None], verbose=0)
    assert (logits.argmax(1) == _int8_logits(SHIPPED_NETWORK, x).argmax(1)).mean() >= 0.9  # a rate of 1e-9: as it began
    start.unlink()  # a later session: the file the run started from is gone, its record stays
    assert train.run(_train_args(data, out, "--width", "32", "--epochs", "2", "--resume"))["init"] == metrics["init"]
