"""Check a converted model against its Keras original, through the device's own classifier.

The ``.tflite`` is run with :class:`edge_fer.classifier.TFLiteClassifier`, so what is verified
is the path the Pi takes: lookup-table input quantization, batching, output dequantization.
Accuracy is reported on val and test; test is reported only, never used to choose anything.
The one choice made here, mirror averaging (``flip_average`` in the metadata), is made on val.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_fer.bench import ms_per_face as bench_ms_per_face
from edge_fer.classifier import TFLiteClassifier
from edge_fer.datasets import LabeledFaces
from edge_fer.metadata import ModelMetadata
from edge_fer.preprocess import scale_pixels

from training.common.reports import split_metrics


@dataclass
class Reference:
    """One labelled split and the float Keras model's classes on it, plain and mirror-averaged (computed once)."""

    faces: LabeledFaces
    keras_pred: np.ndarray
    keras_pred_flip: np.ndarray


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
    ms_per_face: float  # median, 1 thread, batch 1, through TFLiteClassifier.predict (mirror included if on)
    batchable: bool
    backend: str
    flip_average: bool
    flip_val_accuracy: dict[str, float]  # val accuracy with mirror averaging "off" and "on", when chosen here
    splits: dict[str, SplitCheck]

    def metrics(self) -> dict[str, Any]:
        """The flat figures folded into the model's metadata."""
        out: dict[str, Any] = {}
        for name, s in self.splits.items():
            out.update({f"{name}_accuracy": round(s.accuracy, 4), f"{name}_macro_f1": round(s.macro_f1, 4),
                        f"float_{name}_accuracy": round(s.float_accuracy, 4),
                        f"agreement_{name}": round(s.agreement, 4), f"n_{name}": s.n})
        out.update(ms_per_face=round(self.ms_per_face, 3), size_bytes=self.size_bytes)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One human line: size, speed, and per split TFLite accuracy (Keras accuracy, agreement)."""
        parts = [f"{self.model}: {self.quantization}, {self.size_bytes / 1024:.1f} KiB, "
                 f"{self.ms_per_face:.2f} ms/face, batch {'dynamic' if self.batchable else 'fixed'}, "
                 f"mirror averaging {'on' if self.flip_average else 'off'}"]
        parts += [f"{name} {s.accuracy:.4f} (keras {s.float_accuracy:.4f}, agree {s.agreement:.1%})"
                  for name, s in self.splits.items()]
        return "; ".join(parts)


def reference(model, faces: LabeledFaces, meta: ModelMetadata) -> Reference:
    """The float model's classes on ``faces``, fed exactly as in training, without and with its mirror."""
    x = scale_pixels(faces.x, meta.scaling)[..., None]
    probs = model.predict(x, batch_size=256, verbose=0)
    mirrored = model.predict(x[:, :, ::-1], batch_size=256, verbose=0)
    return Reference(faces, probs.argmax(axis=1), (probs + mirrored).argmax(axis=1))


def verify(model_path: Path, meta: ModelMetadata, references: dict[str, Reference], timing_runs: int = 300,
           flip_average: bool | None = None) -> Verification:
    """Accuracy, agreement, size and single-thread speed of ``model_path`` (described by ``meta``).

    ``flip_average=None`` decides mirror averaging on the val reference: on only when it raises
    val accuracy, since it doubles the work per face.
    """
    clf = TFLiteClassifier(model_path, metadata=replace(meta))
    flip_val_accuracy = {}
    if flip_average is None:
        val = references["val"].faces
        for setting in ("off", "on"):
            clf.metadata.flip_average = setting == "on"
            flip_val_accuracy[setting] = float((clf.predict(val.x).argmax(axis=1) == val.y).mean())
        flip_average = flip_val_accuracy["on"] > flip_val_accuracy["off"]
    clf.metadata.flip_average = flip_average
    splits = {}
    for name, ref in references.items():
        pred = clf.predict(ref.faces.x).argmax(axis=1)
        keras_pred = ref.keras_pred_flip if flip_average else ref.keras_pred
        m = split_metrics(ref.faces.y, pred, meta.labels)
        splits[name] = SplitCheck(n=m["n"], accuracy=m["accuracy"], macro_f1=m["macro_f1"],
                                  float_accuracy=float((keras_pred == ref.faces.y).mean()),
                                  agreement=float((keras_pred == pred).mean()), per_class=m["per_class"])
    face = references["val"].faces.x[:1]
    return Verification(model=model_path.name, quantization=meta.quantization, size_bytes=clf.size_bytes,
                        ms_per_face=ms_per_face(model_path, clf.metadata, face, timing_runs),
                        batchable=clf.batchable, backend=clf.backend, flip_average=flip_average,
                        flip_val_accuracy=flip_val_accuracy, splits=splits)


def ms_per_face(model_path: Path, meta: ModelMetadata, face: np.ndarray, runs: int = 300, warmup: int = 20) -> float:
    """Median milliseconds of one single-thread, batch-1 ``predict``, timed as ``edge-fer bench`` times it."""
    return bench_ms_per_face(TFLiteClassifier(model_path, num_threads=1, metadata=meta), runs, face, warmup)
