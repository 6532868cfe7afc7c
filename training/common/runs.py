"""Run folders: the Keras model a run saved, its ``history.csv``, its human-readable reports.

Training writes run folders; conversion, the feature extractors and ``scripts/device-train`` read them.
Nothing here imports TensorFlow at import time: ``scripts/device-train`` reads histories on a machine that
may train on JAX without it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from edge_fer.errors import EdgeFerError, ModelError
from edge_fer.preprocess import DEFAULT_SCALING, Scaling


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


def save_whole(path: Path, save: Callable[[Path], None]) -> None:
    """Write ``path`` through ``save`` under a ``partial-`` name, then rename it into place.

    A long run spans sessions, and a session can end while a checkpoint is being written: the
    rename (atomic on one file system) leaves either the old file or the new one, never half of
    one, so ``--resume`` always finds a checkpoint it can read. The partial name keeps the
    suffix Keras checks (``.keras``, ``.weights.h5``).
    """
    partial = path.with_name("partial-" + path.name)
    save(partial)
    os.replace(partial, path)


def recorded_scaling(metrics: dict[str, Any]) -> Scaling:
    """The pixel scaling a run's metrics.json records (runs older than the record: edge_fer's default)."""
    sc = metrics.get("scaling")
    return Scaling(float(sc.get("mean", 0.0)), float(sc.get("std", 255.0))) if sc else DEFAULT_SCALING


def read_history(path: Path) -> dict[str, list[float]]:
    """A run's history.csv as one list per column (epoch numbers left out)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {}) if k != "epoch"}


_NOT_ARGS = ("command", "resume", "verbose", "peak_lr", "resumed_at_epochs", "func",
             "init_record")  # recorded, not options


def training_command(config: dict[str, Any]) -> str:
    """``python -m training train ...`` with every setting a run recorded in its train_config.json (defaults
    spelled out too), so the command that made a run, or continues it with ``--resume``, can be read back."""
    parts = ["python -m training train"]
    for key, value in config.items():
        if key in _NOT_ARGS or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {value}")
    return " ".join(parts)


def read_run(out: Path, resuming: bool = True) -> tuple[dict[str, list[float]], dict]:
    """The history and recorded configuration of a run folder; one clear error if it is not whole.

    A run to resume (a deadline, a killed session) has ``last.keras``, ``history.csv`` and
    ``train_config.json``; the checkpoint itself is read later, by Keras. A run only looked at
    (``resuming=False``: ``training status``) needs no checkpoint: a run landed from the GPU
    machine has none.
    """
    prefix = "--resume: " if resuming else ""
    if not out.is_dir():
        raise EdgeFerError(f"{prefix}no run folder {out}")
    needed = ("last.keras", "history.csv", "train_config.json")[0 if resuming else 1:]
    missing = [name for name in needed if not (out / name).is_file()]
    if missing:
        raise EdgeFerError(f"{prefix}{out} is not a whole run folder: {', '.join(missing)} missing"
                           + (" (start it again without --resume, or into a new --out)" if resuming else ""))
    try:
        history = read_history(out / "history.csv")
        recorded = json.loads((out / "train_config.json").read_text())
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise EdgeFerError(f"{prefix}{out} has an unreadable history.csv or train_config.json ({exc})") from None
    if not isinstance(recorded, dict):
        raise EdgeFerError(f"{prefix}{out / 'train_config.json'} is not a JSON object")
    return history, recorded


# How scripts/device-train made a run on a GPU machine: its command and the data it packed. The run's own
# train_config.json names the machine's unpacked copy, which a clone cannot reach, so the card reads this.
DEVICE_RECORD = "device_train.json"


def copy_run_reports(run_dir: Path, dest: Path) -> None:
    """Copy a run's human-readable reports (not its weights) to ``dest``, e.g. docs/."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "confusion_matrix.png", "curves.png", "classification_report.txt", "history.csv",
                 "train_config.json", DEVICE_RECORD):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, dest / name)
