"""Training data: FER2013 splits through ``edge_fer.datasets``, FER+ and teacher soft targets, class weights.

Splits follow the dataset: train = Training (fit), val = PublicTest (early stopping, model
choice), test = PrivateTest (reported once at the end, never used to fit or choose).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_fer.datasets import LabeledFaces, available_splits, load_split
from edge_fer.errors import DataError
from edge_fer.labels import FER2013_LABELS

# FER+ vote columns -> FER2013 class index; contempt, unknown and NF have no FER class.
FERPLUS_TO_FER = {"neutral": 6, "happiness": 3, "surprise": 5, "sadness": 4, "anger": 0, "disgust": 1, "fear": 2}


@dataclass
class Splits:
    train: LabeledFaces
    val: LabeledFaces
    test: LabeledFaces | None


# Every workstation command's default seed: it carves val from a dataset without one, so commands that
# meet the same run must carve the same faces (conversion reads the run's own seed back).
DEFAULT_SEED = 1234


def load_splits(path: str | Path, size=(48, 48), val_fraction: float = 0.1, seed: int = DEFAULT_SEED) -> Splits:
    """Load train/val/test; a dataset without a val split gets one carved from train (stratified)."""
    found = available_splits(path)
    if "train" not in found:
        raise DataError(f"{path} has no training split (found: {', '.join(found) or 'nothing'})")
    train = load_split(path, "train", size)
    if "val" in found:
        val = load_split(path, "val", size)
    else:
        train, val = _carve_val(train, val_fraction, seed)
    test = load_split(path, "test", size) if "test" in found else None
    return Splits(train, val, test)


def _carve_val(train: LabeledFaces, fraction: float, seed: int) -> tuple[LabeledFaces, LabeledFaces]:
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in np.unique(train.y):
        idx = np.flatnonzero(train.y == c)
        val_idx.extend(rng.choice(idx, max(1, int(len(idx) * fraction)), replace=False))
    mask = np.zeros(len(train), bool)
    mask[val_idx] = True
    return (LabeledFaces(train.x[~mask], train.y[~mask], train.labels),
            LabeledFaces(train.x[mask], train.y[mask], train.labels))


def ferplus_targets(votes_path: str | Path, split: str, fer_labels: np.ndarray, mix: float) -> np.ndarray:
    """Soft targets: ``(1 - mix) * one_hot(FER label) + mix * FER+ vote distribution``.

    Rows whose votes are unreliable (see the data README) or fall only on contempt/unknown/NF
    keep their one-hot FER target.
    """
    n_classes = len(FER2013_LABELS)
    one_hot = np.eye(n_classes, dtype=np.float32)[fer_labels]
    try:
        with np.load(votes_path) as data:
            votes, reliable = data[f"{split}_votes"].astype(np.float32), data[f"{split}_reliable"]
            columns = [str(c) for c in data["vote_columns"]]
        indices = {fer_class: columns.index(col) for col, fer_class in FERPLUS_TO_FER.items()}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise DataError(f"--ferplus {votes_path}: not a FER+ votes file ({split}_votes, {split}_reliable and "
                        f"vote_columns naming {', '.join(FERPLUS_TO_FER)}): {exc}") from None
    if len(votes) != len(fer_labels):
        raise DataError(f"{votes_path}: {len(votes)} {split} rows, but the dataset has {len(fer_labels)}")
    dist = np.zeros((len(votes), n_classes), np.float32)
    for fer_class, column in indices.items():
        dist[:, fer_class] = votes[:, column]
    total = dist.sum(axis=1, keepdims=True)
    usable = reliable & (total[:, 0] > 0)
    dist = np.where(usable[:, None], dist / np.maximum(total, 1), one_hot)
    return (1 - mix) * one_hot + mix * dist


def teacher_targets(model_path: str | Path, x: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """A trained model's probabilities for each uint8 face in ``x``: soft targets for distillation.

    The teacher is anything ``edge_fer`` loads (an int8 TFLite model, an ensemble), run through the
    device's own path (its preprocessing, test-time views, combiner), so a student learns what
    the deployed teacher says, not a float twin of it. An ensemble too slow for the Pi's budget
    can teach a single network that fits it. A ``.npy`` is such probabilities computed already,
    row for row with ``x``: ``scripts/device-train pack --teacher`` carries them to a GPU machine
    that has no interpreter.
    """
    if Path(model_path).suffix == ".npy":
        return _stored_targets(Path(model_path), len(x), len(labels))
    from edge_fer.classifier import load_classifier
    from edge_fer.evaluate import check_labels, predict_all

    teacher = load_classifier(model_path)
    check_labels(teacher.labels, labels, f"teacher {model_path}:")
    if tuple(teacher.input_size) != tuple(x.shape[1:3]):
        raise DataError(f"teacher {model_path} takes {teacher.input_size[0]}x{teacher.input_size[1]} faces, "
                        f"the data has {x.shape[1]}x{x.shape[2]}")
    return predict_all(teacher, x).astype(np.float32)


def float_teacher(models: list[Path], x: np.ndarray) -> np.ndarray:
    """The mean probabilities of trained float networks (``model.keras`` files) for uint8 faces ``x``, each
    face averaged with its mirror: a teacher where no interpreter runs (``scripts/device-train teach``)."""
    from edge_fer.preprocess import DEFAULT_SCALING, scale_pixels

    from .keras_env import keras

    faces = scale_pixels(x, DEFAULT_SCALING)[..., None]
    total = np.zeros((len(x), len(FER2013_LABELS)), np.float64)
    for path in models:
        network = keras.models.load_model(path)
        for view in (faces, faces[:, :, ::-1]):
            total += network.predict(view, batch_size=1024, verbose=0)
    return (total / (2 * len(models))).astype(np.float32)


def _stored_targets(path: Path, n: int, n_classes: int) -> np.ndarray:
    try:
        probs = np.load(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"teacher {path}: cannot read it ({exc})") from None
    if probs.shape != (n, n_classes) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(f"teacher {path}: expected probabilities for {n} training faces and {n_classes} classes "
                        f"(rows summing to 1), found an array of shape {probs.shape}")
    return probs.astype(np.float32)


def class_weights(y: np.ndarray, n_classes: int, power: float = 0.5) -> np.ndarray:
    """Inverse-frequency weights raised to ``power`` (0.5 damps them), normalised to mean 1 per sample."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** power
    return (w / (w[y].mean())).astype(np.float32)
