"""A lever's A/B on val, through the device path: the first model is the baseline (A), every other one
gets its accuracy gain over it on the same val faces, with a paired-bootstrap 95% interval.

A model is a device model (``.tflite`` or ``.json`` with its metadata; an ensemble or GA+RF as well) or a
run folder, which means its converted ``model_int8.tflite`` (``python -m convert --run DIR`` first).
Each classifies as the device does (int8, its own test-time views and temperature). Test is not
read: a lever is chosen on val, and the run that takes it reports test once.

    python -m training compare runs/levers/base runs/levers/erase runs/levers/smooth \\
        --data ../shared/data/fer2013.npz

prints one table, then one JSON line (``--json``: only the line).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_fer.classifier import load_classifier
from edge_fer.errors import EdgeFerError, ModelError
from edge_fer.evaluate import check_labels, metrics, predict_all

from .common.data import DEFAULT_SEED, load_splits
from .common.stats import bootstrap_gain, verdict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                   help="device models or run folders; the first is the baseline")
    p.add_argument("--data", required=True, type=Path, help="FER2013 .npz, CSV or image folder with a val split")
    p.add_argument("--limit", type=int, default=None, help="only the first N val faces (smoke tests)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap (and the val a dataset without one gets)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")


@dataclass
class Arm:
    """One model's figures on val, and its gain over the baseline (None for the baseline itself)."""

    name: str
    path: str
    accuracy: float
    macro_f1: float
    gain: tuple[float, float, float] | None
    verdict: str


def model_file(path: Path) -> Path:
    """A run folder means its converted int8 model; anything else is the model itself (load_classifier
    says when it is missing)."""
    if not path.is_dir():
        return path
    converted = path / "model_int8.tflite"
    if not converted.is_file():
        raise ModelError(f"{path} has no model_int8.tflite: run `python -m convert --run {path}` first")
    return converted


def compare(paths: list[Path], data: Path, limit: int | None = None,
            seed: int = DEFAULT_SEED) -> tuple[list[Arm], int]:
    """Each model's arm on val, and how many val faces they saw."""
    files = [model_file(p) for p in paths]  # every path checked before the faces load
    classifiers = [load_classifier(f) for f in files]
    val = load_splits(data, size=classifiers[0].input_size, seed=seed).val
    if limit:
        val.x, val.y = val.x[:limit], val.y[:limit]
    arms, baseline = [], None
    for path, clf in zip(paths, classifiers):
        check_labels(clf.labels, val.labels, f"{path}:")
        pred = predict_all(clf, val.x).argmax(1)
        correct = (pred == val.y).astype(np.float64)
        result = metrics(val.y, pred, tuple(val.labels))
        gain = None if baseline is None else bootstrap_gain(correct, baseline, seed)
        arms.append(Arm(path.name if path.is_dir() else path.stem, str(path), result.accuracy, result.macro_f1,
                        gain, "baseline" if gain is None else verdict(gain)))
        baseline = correct if baseline is None else baseline
    return arms, len(val.y)


def table(arms: list[Arm], n: int) -> str:
    rows = [f"val, {n} faces, device path; gain over {arms[0].name} with its paired-bootstrap 95% interval", "",
            f"{'model':<24} {'accuracy':>9} {'macro-F1':>9}  {'gain (points)':<26} verdict"]
    for a in arms:
        gain = "" if a.gain is None else f"{a.gain[0] * 100:+.2f} [{a.gain[1] * 100:+.2f}, {a.gain[2] * 100:+.2f}]"
        rows.append(f"{a.name:<24} {a.accuracy:>9.2%} {a.macro_f1:>9.2%}  {gain:<26} {a.verdict}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> list[Arm]:
    if len(args.models) < 2:
        raise EdgeFerError("compare needs a baseline and at least one other model")
    if args.limit is not None and args.limit < 1:
        raise EdgeFerError("--limit must be at least 1")
    arms, n = compare(args.models, args.data, args.limit, args.seed)
    if not args.json:
        print(table(arms, n))
        print()
    print(json.dumps({"data": str(args.data), "split": "val", "n": n, "arms": [asdict(a) for a in arms]}))
    return arms
