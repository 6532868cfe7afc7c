"""What every training run leaves behind: curves, confusion matrix, classification report, metrics JSON.

Shared by the CNN trainer and the GA+RF pipeline so all models are reported alike.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: workstations and CI may have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402

from edge_fer.evaluate import metrics  # noqa: E402


def split_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix for one split.

    Computed by the device's own :func:`edge_fer.evaluate.metrics`, so a run's metrics.json and
    ``edge-fer eval`` report the same figures in the same format.
    """
    result = metrics(np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64), tuple(labels)).to_dict()
    del result["labels"]  # metrics.json names them once, at the top
    return result


def metadata_figures(split: str, accuracy: float, macro_f1: float, n: int) -> dict[str, Any]:
    """One split's figures under the names a model's metadata keeps them (``test_accuracy``, ...), rounded:
    the model card, ``edge-fer info`` and the README's checks read these names."""
    return {f"{split}_accuracy": round(accuracy, 4), f"{split}_macro_f1": round(macro_f1, 4), f"n_{split}": n}


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix as a seaborn heatmap (rows: true class)."""
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(labels)))).astype(np.float64)
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    sns.heatmap(cm, annot=True, fmt=".2f", cmap="Blues", xticklabels=labels, yticklabels=labels,
                vmin=0, vmax=1, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, train against val."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], style,
                        label=(prefix or "train_").rstrip("_"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_commit() -> str | None:
    """The commit of the working tree that produced a run (None outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_reports(out_dir: Path, labels: Sequence[str], val: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray] | None, extra: dict[str, Any],
                  history: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """Write report files into ``out_dir`` and return the metrics dict (also saved as metrics.json).

    ``val`` and ``test`` are ``(y_true, y_pred)``; the confusion matrix and classification
    report describe test when it exists (the once-at-the-end number), else val.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"labels": list(labels), "val": split_metrics(*val, labels)}
    if test is not None:
        metrics["test"] = split_metrics(*test, labels)
    shown_name, shown = ("test", test) if test is not None else ("val", val)
    text = classification_report(shown[0], shown[1], labels=list(range(len(labels))), target_names=list(labels),
                                 digits=4, zero_division=0)
    (out_dir / "classification_report.txt").write_text(f"split: {shown_name}\n\n{text}")
    plot_confusion(shown[0], shown[1], labels, out_dir / "confusion_matrix.png",
                   f"{extra.get('model', 'model')} on {shown_name} "
                   f"(acc {metrics[shown_name]['accuracy']:.3f})")
    if history:
        plot_history(history, out_dir / "curves.png")
    metrics.update(extra)
    metrics["git_commit"] = git_commit()
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
