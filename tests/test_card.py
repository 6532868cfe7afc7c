"""The shipped model's card (docs/model/README.md), written by ``python -m convert card`` and at shipping."""

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
    assert f"{meta.metrics['test_accuracy']:.2%}" in text and meta.views.describe() in text


def test_the_training_command_spells_out_every_recorded_setting():
    config = {"command": "train", "data": "d.npz", "width": 32, "lr": None, "no_augment": False,
              "resume": True, "epochs": 150, "lr_schedule": "cosine", "peak_lr": 0.001, "resumed_at_epochs": [28]}
    assert training_command(config) == ("python -m training train --data d.npz --width 32 --epochs 150 "
                                        "--lr-schedule cosine")


def test_card_command_takes_no_arguments():
    proc = subprocess.run([sys.executable, "-m", "convert", "card", "extra"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "usage: python -m convert card" in proc.stderr
