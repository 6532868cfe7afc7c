"""Check a converted model against its Keras original, through the device's own classifier.

The ``.tflite`` is run with :class:`edge_fer.classifier.TFLiteClassifier`, so what is verified
is the path the Pi takes: lookup-table input quantization, batching, output dequantization.
Accuracy is reported on val and test; test is reported only, never used to choose anything.
The one choice made here, the test-time views (mirror and zooms, :mod:`edge_fer.views`), is made
on val: the most accurate candidate whose single-thread time per face fits the budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_fer.bench import ms_per_face as bench_ms_per_face
from edge_fer.classifier import TFLiteClassifier
from edge_fer.datasets import LabeledFaces
from edge_fer.metadata import ModelMetadata
from edge_fer.preprocess import Scaling, scale_pixels
from edge_fer.views import ZOOM_CANDIDATES, Views

from training.common.reports import metadata_figures, split_metrics

from . import MAX_MS_PER_FACE


def view_candidates(mirror: bool | None = None, scales: Sequence[float] | None = None) -> list[Views]:
    """The views conversion chooses from (``None``: both mirror settings / every zoom set), fewest passes first."""
    mirrors = (False, True) if mirror is None else (mirror,)
    zoom_sets = ZOOM_CANDIDATES if scales is None else (tuple(scales),)
    return sorted((Views(z, m) for z in zoom_sets for m in mirrors), key=lambda v: v.count)


@dataclass
class Reference:
    """One labelled split and the float Keras model checked against, its answers per view computed once."""

    faces: LabeledFaces
    model: Any  # a keras.Model (typed loosely: this module loads without TensorFlow)
    scaling: Scaling
    _pred: dict[Views, np.ndarray] = field(default_factory=dict, repr=False)

    def pred(self, views: Views) -> np.ndarray:
        """The float model's classes with ``views`` averaged as the device averages them (the int8 model and
        its batch-1 twin ask for the same views: computed once)."""
        if views not in self._pred:
            x = scale_pixels(views.expand(self.faces.x), self.scaling)[..., None]
            self._pred[views] = views.fold(self.model.predict(x, batch_size=256, verbose=0)).argmax(axis=1)
        return self._pred[views]


@dataclass
class SplitCheck:
    n: int
    accuracy: float
    macro_f1: float
    float_accuracy: float  # the Keras model's
    agreement: float  # share of faces where TFLite and Keras pick the same class
    per_class: dict[str, dict[str, float]]


@dataclass
class Verification:
    model: str
    quantization: str
    size_bytes: int
    ms_per_face: float  # median, 1 thread, batch 1, through TFLiteClassifier.predict (every view included)
    batchable: bool
    backend: str
    views: Views
    views_tried: list[dict[str, Any]]  # each candidate's val accuracy and ms/face, when chosen here
    splits: dict[str, SplitCheck]

    def metrics(self) -> dict[str, Any]:
        """The flat figures folded into the model's metadata."""
        out: dict[str, Any] = {}
        for name, s in self.splits.items():
            out.update({**metadata_figures(name, s.accuracy, s.macro_f1, s.n),
                        f"float_{name}_accuracy": round(s.float_accuracy, 4),
                        f"agreement_{name}": round(s.agreement, 4)})
        out.update(ms_per_face=round(self.ms_per_face, 3), size_bytes=self.size_bytes)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One human line: size, speed, and per split TFLite accuracy (Keras accuracy, agreement)."""
        parts = [f"{self.model}: {self.quantization}, {self.size_bytes / 1024:.1f} KiB, "
                 f"{self.ms_per_face:.2f} ms/face, batch {'dynamic' if self.batchable else 'fixed'}, "
                 f"views {self.views.describe()}"]
        parts += [f"{name} {s.accuracy:.4f} (keras {s.float_accuracy:.4f}, agree {s.agreement:.1%})"
                  for name, s in self.splits.items()]
        return "; ".join(parts)


def reference(model, faces: LabeledFaces, meta: ModelMetadata) -> Reference:
    """The float model on ``faces``, fed exactly as in training (its answers are computed as views ask)."""
    return Reference(faces, model, meta.scaling)


def with_views(meta: ModelMetadata, views: Views) -> ModelMetadata:
    """A copy of ``meta`` that averages ``views``."""
    return replace(meta, flip_average=views.mirror, view_scales=views.scales)


def choose_views(model_path: Path, meta: ModelMetadata, val: LabeledFaces, candidates: Sequence[Views],
                 max_ms: float = MAX_MS_PER_FACE, timing_runs: int = 300) -> tuple[Views, list[dict[str, Any]]]:
    """The best candidate on val among those within ``max_ms`` per face (one thread, batch 1).

    Candidates come fewest passes first. One with more passes than the best so far replaces it only
    when its val accuracy is higher by more than twice the standard error of the paired difference,
    so extra work is bought with accuracy, not with val's noise (each candidate tried is another
    draw). Test never takes part. A single candidate is taken as given, unmeasured.
    """
    if len(candidates) == 1:
        return candidates[0], []
    clf = TFLiteClassifier(model_path, metadata=replace(meta))
    best: tuple[Views, np.ndarray] | None = None
    tried = []
    for views in candidates:
        ms = ms_per_face(model_path, with_views(meta, views), val.x[:1], timing_runs)
        clf.metadata = with_views(meta, views)
        right = clf.predict(val.x).argmax(axis=1) == val.y
        tried.append({"views": views.describe(), "scales": list(views.scales), "mirror": views.mirror,
                      "val_accuracy": round(float(right.mean()), 4), "ms_per_face": round(ms, 3),
                      "within_budget": ms <= max_ms})
        if ms <= max_ms and (best is None or _beats(right, best[1], views.count > best[0].count)):
            best = views, right
    return (best[0] if best else candidates[0]), tried


def _beats(right: np.ndarray, best: np.ndarray, costs_more: bool) -> bool:
    """``right`` is more accurate than ``best`` (per-face hits on the same faces), clearly so if it ``costs_more``."""
    gain = float(right.mean() - best.mean())
    if not costs_more:
        return gain > 0
    diff = right.astype(np.float64) - best
    return gain > 2 * float(diff.std()) / np.sqrt(len(diff))


def verify(model_path: Path, meta: ModelMetadata, references: dict[str, Reference], timing_runs: int = 300,
           candidates: Sequence[Views] | None = None, max_ms: float = MAX_MS_PER_FACE) -> Verification:
    """Accuracy, agreement, size and single-thread speed of ``model_path`` (described by ``meta``).

    The test-time views are chosen on the val reference among ``candidates`` (default: every
    candidate) within ``max_ms`` per face (:func:`choose_views`).
    """
    views, tried = choose_views(model_path, meta, references["val"].faces, candidates or view_candidates(),
                                max_ms, timing_runs)
    clf = TFLiteClassifier(model_path, metadata=with_views(meta, views))
    splits = {}
    for name, ref in references.items():
        pred = clf.predict(ref.faces.x).argmax(axis=1)
        keras_pred = ref.pred(views)
        m = split_metrics(ref.faces.y, pred, meta.labels)
        splits[name] = SplitCheck(n=m["n"], accuracy=m["accuracy"], macro_f1=m["macro_f1"],
                                  float_accuracy=float((keras_pred == ref.faces.y).mean()),
                                  agreement=float((keras_pred == pred).mean()), per_class=m["per_class"])
    face = references["val"].faces.x[:1]
    return Verification(model=model_path.name, quantization=meta.quantization, size_bytes=clf.size_bytes,
                        ms_per_face=ms_per_face(model_path, clf.metadata, face, timing_runs),
                        batchable=clf.batchable, backend=clf.backend, views=views, views_tried=tried,
                        splits=splits)


def ms_per_face(model_path: Path, meta: ModelMetadata, face: np.ndarray, runs: int = 300, warmup: int = 20) -> float:
    """Median milliseconds of one single-thread, batch-1 ``predict``, timed as ``edge-fer bench`` times it."""
    return bench_ms_per_face(TFLiteClassifier(model_path, num_threads=1, metadata=meta), runs, face, warmup)
