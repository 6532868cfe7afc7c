"""Run folders: the Keras model a run saved, its ``history.csv``, its human-readable reports.

Training writes run folders; conversion, the feature extractors and ``scripts/device-train`` read them.
Nothing here imports TensorFlow at import time: ``scripts/device-train`` reads histories on a machine that
may train on JAX without it.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from edge_fer.errors import ModelError


def first_line(exc: BaseException) -> str:
    """The first line of a TensorFlow/Keras exception (theirs run to pages), for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def load_keras(path: str | Path):
    """Load a ``.keras``/``.h5`` model for inference; any failure is a one-line ModelError."""
    from .tf_env import keras

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Keras model not found: {path}")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
        raise ModelError(f"cannot load Keras model {path}: {first_line(exc)}") from None


def read_history(path: Path) -> dict[str, list[float]]:
    """A run's history.csv as one list per column (epoch numbers left out)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {}) if k != "epoch"}


def copy_run_reports(run_dir: Path, dest: Path) -> None:
    """Copy a run's human-readable reports (not its weights) to ``dest``, e.g. docs/."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "confusion_matrix.png", "curves.png", "classification_report.txt", "history.csv"):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, dest / name)
