"""Accuracy, macro-F1, per-class figures and the confusion matrix, in numpy only.

The device has no scikit-learn, so ``edge-fer eval`` computes its metrics here; the
definitions match scikit-learn's defaults: the F1 of a class with no predictions or no
support is 0, and macro-F1 averages over the classes that occur in the labels or the
answers (a folder of happy and sad photos is not marked down for the five classes it lacks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from .calibration import Calibration, calibration
from .classifier_api import Classifier
from .datasets import LabeledFaces
from .errors import ModelError


@dataclass
class EvalResult:
    accuracy: float
    macro_f1: float
    n: int
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    labels: tuple[str, ...]
    calibration: Calibration | None = None  # how far the scores are from confidences (when probabilities are known)

    def to_dict(self) -> dict[str, Any]:
        d = {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n, "per_class": self.per_class,
             "confusion": self.confusion, "labels": list(self.labels)}
        if self.calibration is not None:
            d.update(ece=self.calibration.ece, nll=self.calibration.nll)
        return d

    def table(self) -> str:
        lines = [f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
        for name, m in self.per_class.items():
            lines.append(f"{name:<10} {m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:7.4f} {int(m['support']):8d}")
        lines.append(f"\naccuracy {self.accuracy:.4f}   macro-F1 {self.macro_f1:.4f}   n {self.n}")
        if self.calibration is not None:
            lines.append(f"ECE {self.calibration.ece:.4f} ({len(self.calibration.bins)} bins, top label)   "
                         f"NLL {self.calibration.nll:.4f}")
        return "\n".join(lines)


def metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> EvalResult:
    k = len(labels)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(labels)}
    n = int(len(y_true))
    seen = (support > 0) | (predicted > 0)
    macro_f1 = float(f1[seen].mean()) if seen.any() else 0.0
    return EvalResult(float(tp.sum() / n) if n else 0.0, macro_f1, n, per_class, cm.tolist(), labels)


def predict_all(classifier: Classifier, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Probabilities for a uint8 face array, in batches."""
    return np.concatenate([classifier.predict(x[i : i + batch]) for i in range(0, len(x), batch)])


def check_labels(labels: Sequence[str], data_labels: Sequence[str], whose: str = "model") -> None:
    """One clear error, before any face is classified, when a model's labels are not the data's (in order):
    an accuracy over mismatched classes would be a number with no meaning."""
    if tuple(labels) != tuple(data_labels):
        raise ModelError(f"{whose} labels ({', '.join(labels)}) differ from the data's ({', '.join(data_labels)})")


def evaluate(classifier: Classifier, data: LabeledFaces) -> EvalResult:
    check_labels(classifier.labels, data.labels)
    probs = predict_all(classifier, data.x)
    result = metrics(data.y, probs.argmax(1), classifier.labels)
    result.calibration = calibration(probs, data.y)
    return result


def confusion_image(result: EvalResult, cell: int = 64) -> np.ndarray:
    """A row-normalised confusion-matrix heatmap drawn with OpenCV (no matplotlib on the device)."""
    cm = np.array(result.confusion, np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k, pad = len(result.labels), 90
    img = np.full((pad + k * cell + 30, pad + k * cell + 10, 3), 255, np.uint8)
    for i in range(k):
        for j in range(k):
            v = norm[i, j]
            color = tuple(int(255 - v * c) for c in (40, 120, 200))  # white -> blue
            x0, y0 = pad + j * cell, pad + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), color, -1)
            cv2.putText(img, f"{v:.2f}", (x0 + 12, y0 + cell // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (255, 255, 255) if v > 0.5 else (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, result.labels[i][:8], (4, pad + i * cell + cell // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, result.labels[i][:7], (pad + i * cell + 4, pad - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"true (rows) vs predicted   acc {result.accuracy:.3f}  n {result.n}",
                (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def bar_chart(probs: dict[str, float], width: int = 420, row: int = 28) -> np.ndarray:
    """Horizontal bars of one face's probabilities (the seeds' ``emotion_analysis`` plot)."""
    img = np.full((row * len(probs) + 20, width, 3), 255, np.uint8)
    best = max(probs, key=probs.get)
    for i, (name, p) in enumerate(probs.items()):
        y = 10 + i * row
        cv2.putText(img, name, (6, y + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        x1 = 90 + int(p * (width - 160))
        cv2.rectangle(img, (90, y + 4), (x1, y + row - 4), (60, 160, 60) if name == best else (180, 130, 70), -1)
        cv2.putText(img, f"{p:.2f}", (x1 + 6, y + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img
