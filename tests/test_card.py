"""The shipped model's card (docs/model/README.md), written by ``python -m convert card`` and at shipping."""

import json
import shutil
import subprocess
import sys

from convert import SHIPPED_DOCS
from convert.card import card
from training.common.runs import training_command
from edge_fer.classifier import MODELS_DIR
from edge_fer.metadata import load_metadata
from support import ROOT


def test_the_committed_card_is_the_one_the_shipped_files_give():
    """Rewriting the card from the committed reports changes nothing: the card matches the model."""
    assert (SHIPPED_DOCS / "README.md").read_text() == card(SHIPPED_DOCS, MODELS_DIR / "default.tflite")
    meta = load_metadata(MODELS_DIR / "default.tflite")
    text = (SHIPPED_DOCS / "README.md").read_text()
    assert f"{meta.metrics['test_accuracy']:.2%}" in text and meta.views.per_face() in text


def test_a_run_made_outside_git_still_gets_a_card(tmp_path):
    """metrics.json records git_commit null when the run's code was not a git checkout (a copy on the GPU machine)."""
    docs = tmp_path / "docs"
    shutil.copytree(SHIPPED_DOCS, docs)
    metrics = json.loads((docs / "metrics.json").read_text())
    (docs / "metrics.json").write_text(json.dumps({**metrics, "git_commit": None}))
    assert "code at ?." in card(docs, MODELS_DIR / "default.tflite")


def test_the_card_gives_the_commands_that_made_the_run_here_or_on_a_gpu_machine(tmp_path):
    """A run landed from a GPU machine names scripts/device-train's steps and the data it packed, not the
    machine's unpacked copy; a run trained here gives its own training command."""
    docs = tmp_path / "docs"
    shutil.copytree(SHIPPED_DOCS, docs)
    record = {"command": "scripts/device-train train --minutes 6.5 --out results --run s32='--width 32'",
              "run": "s32", "data": "../shared/data/fer2013.npz", "backend": "jax", "out": "results"}
    (docs / "device_train.json").write_text(json.dumps(record))
    (docs / "train_config.json").write_text(json.dumps({"data": "/tmp/r/fer2013-trainval.npz", "out": "/tmp/r/s32"}))
    text = card(docs, MODELS_DIR / "default.tflite")
    assert "Data: `../shared/data/fer2013.npz` (train and val carried to the GPU machine" in text
    assert "/tmp/r" not in text
    assert ("scripts/device-train pack\n  scripts/device-train train --minutes 6.5 --out results --run s32='--width 32'"
            "\n  scripts/device-train land results\n  python -m convert --run runs/s32 "
            "--data ../shared/data/fer2013.npz --edgetpu --ship") in text
    (docs / "device_train.json").write_text(json.dumps({**record, "out": "$OUT"}))  # the machine's tooling set it
    assert "\n  scripts/device-train land RESULTS   # the folder the call's files came back to\n" in card(
        docs, MODELS_DIR / "default.tflite")
    (docs / "device_train.json").unlink()
    (docs / "train_config.json").write_text(json.dumps({"data": "d.npz", "width": 32, "out": "runs/w32"}))
    text = card(docs, MODELS_DIR / "default.tflite")
    assert "python -m training train --data d.npz --width 32 --out runs/w32\n" in text
    assert "python -m convert --run runs/w32 --edgetpu --ship" in text and "device-train" not in text


def test_the_card_of_a_final_fit_says_val_was_trained_on(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(SHIPPED_DOCS, docs)
    metrics = json.loads((docs / "metrics.json").read_text())
    (docs / "metrics.json").write_text(json.dumps({**metrics, "val_seen_in_training": True}))
    text = card(docs, MODELS_DIR / "default.tflite")
    assert "fitted on train and val (PublicTest)" in text and "not held out" in text
    assert "the last epoch kept" in text and "best on val at epoch" not in text


def test_the_training_command_spells_out_every_recorded_setting():
    config = {"command": "train", "data": "d.npz", "width": 32, "lr": None, "no_augment": False,
              "resume": True, "epochs": 150, "lr_schedule": "cosine", "peak_lr": 0.001, "resumed_at_epochs": [28]}
    assert training_command(config) == ("python -m training train --data d.npz --width 32 --epochs 150 "
                                        "--lr-schedule cosine")


def test_card_command_takes_no_arguments():
    proc = subprocess.run([sys.executable, "-m", "convert", "card", "extra"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "usage: python -m convert card" in proc.stderr


def test_the_card_of_a_run_started_from_a_shipped_network_counts_its_epochs_too(tmp_path):
    """--init: the network began as another run's, so the card names it and adds its epochs to the total."""
    docs = tmp_path / "docs"
    shutil.copytree(SHIPPED_DOCS, docs)
    metrics = json.loads((docs / "metrics.json").read_text())
    init = {"path": "/tmp/s32.tflite", "sha256": "1c9346937f6f" + "0" * 52, "run": "runs/gpu1/s32", "epochs": 89,
            "git_commit": "2500a4e871aaadca"}
    (docs / "metrics.json").write_text(json.dumps({**metrics, "init": init}))
    own = len((docs / "history.csv").read_text().strip().splitlines()) - 1
    text = card(docs, MODELS_DIR / "default.tflite")
    assert (f"- Started from `/tmp/s32.tflite`, sha256 1c9346937f6f, itself 89 epochs of run `runs/gpu1/s32` "
            f"(code at 2500a4e871); this run trained it {own} more epochs") in text
    assert f"**{89 + own} epochs in all**" in text
