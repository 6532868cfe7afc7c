"""Is the ``score`` a confidence? Expected calibration error, NLL, and the temperature that fixes them.

A network trained to high accuracy is usually over-confident: among faces it scores 0.9, far
fewer than 90% are right. Temperature scaling divides its logits by one number fitted on val;
the chosen class never changes on a single pass, only how sure the model says it is. Fitting
runs on what the device computes (the int8 model's own outputs, test-time views averaged as
:class:`~edge_fer.tflite.TFLiteClassifier` does), in numpy only, so it needs no TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .tflite import TFLiteClassifier, probabilities
from .views import Views

ECE_BINS = 15
_SEARCH = np.geomspace(0.2, 10.0, 161)  # temperatures tried; then refined around the best


@dataclass
class Calibration:
    """How well the top probability matches the share of right answers, on one labelled set."""

    ece: float  # expected calibration error, top label, ECE_BINS equal-width bins
    nll: float  # mean negative log-likelihood of the true class
    accuracy: float
    n: int
    bins: list[dict[str, float]]  # per bin: lo, hi, count, confidence, accuracy (the reliability diagram)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration(probs: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> Calibration:
    """ECE (top label: |accuracy - confidence| per confidence bin, weighted by the bin's share) and NLL."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    right = (pred == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # bins are (lo, hi]
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        c = float(conf[mask].mean()) if count else 0.0
        a = float(right[mask].mean()) if count else 0.0
        ece += count * abs(a - c)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "confidence": c,
                     "accuracy": a})
    n = len(y)
    return Calibration(ece=ece / max(n, 1), nll=nll(probs, y), accuracy=float(right.mean()) if n else 0.0, n=n,
                       bins=bins)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (probabilities floored at 1e-7, as Keras clips)."""
    if len(y) == 0:
        return 0.0
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)).mean())


@dataclass
class RawOutputs:
    """A network's dequantized output rows for a set of faces, every test-time view of them."""

    scores: np.ndarray  # (views.count * n, k), view by view
    output: str
    views: Views

    @classmethod
    def of(cls, classifier: TFLiteClassifier, faces: np.ndarray, batch: int = 256) -> "RawOutputs":
        """Run the model once; every temperature is then a cheap numpy pass over these rows."""
        x = classifier.metadata.views.expand(faces)
        scores = np.concatenate([classifier.outputs(x[i : i + batch]) for i in range(0, len(x), batch)])
        return cls(scores, classifier.metadata.output, classifier.metadata.views)

    def probs(self, temperature: float) -> np.ndarray:
        """What ``TFLiteClassifier.predict`` returns with this temperature in the metadata."""
        return self.views.fold(probabilities(self.scores, self.output, temperature))


def fit_temperature(raw: RawOutputs, y: np.ndarray) -> float:
    """The temperature with the lowest NLL on ``y``: a log-spaced search, then a golden-section refinement."""
    losses = [nll(raw.probs(t), y) for t in _SEARCH]
    i = int(np.argmin(losses))
    lo, hi = np.log(_SEARCH[max(i - 1, 0)]), np.log(_SEARCH[min(i + 1, len(_SEARCH) - 1)])
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(30):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(raw.probs(float(np.exp(a))), y) < nll(raw.probs(float(np.exp(b))), y):
            hi = b
        else:
            lo = a
    return round(float(np.exp((lo + hi) / 2)), 4)
