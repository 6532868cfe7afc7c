"""``edge-fer eval --detect``: accuracy on whole photos, through the device's own detector and face crop.

Cropped datasets such as FER2013 measure the classifier alone; users point a camera at whole
scenes. Here each photo of a folder of class folders (``<label>/*.jpg``) goes through
:func:`edge_fer.pipeline.classify_image`, the function ``predict`` and image folders use (same
detector, crop, margin and scaling), and the largest face is the photo's answer, as the
pipeline's ``dominant`` face is for a display or MQTT. A photo where no face is found is not
dropped: it counts as a wrong answer in the photo accuracy and is reported in its own row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .calibration import calibration
from .classifier_api import Classifier
from .datasets import labeled_files
from .detectors import Detector
from .errors import DataError
from .evaluate import EvalResult, metrics
from .pipeline import FrameResult, classify_image

NO_FACE = "no face"


@dataclass
class PhotoResult:
    """One photo's answer: the largest face's emotion, or no face at all."""

    file: str
    label: str
    faces: int  # faces the detector found
    emotion: str | None = None  # None: no face found
    score: float | None = None
    box: list[int] | None = None


@dataclass
class PhotoEvalResult:
    """Figures over the photos where a face was found (``faces``) and over all photos, no-face ones included."""

    faces: EvalResult  # the largest face of each photo with one, against the photo's label
    photos: list[PhotoResult]

    @property
    def n(self) -> int:
        return len(self.photos)

    @property
    def no_face(self) -> list[PhotoResult]:
        return [p for p in self.photos if p.emotion is None]

    @property
    def accuracy(self) -> float:
        """Right answers over all photos: a photo without a face is a wrong answer, not a missing one."""
        return sum(p.emotion == p.label for p in self.photos) / self.n if self.n else 0.0

    def no_face_by_class(self) -> dict[str, int]:
        return {label: sum(p.label == label for p in self.no_face) for label in self.faces.labels}

    def to_dict(self) -> dict[str, Any]:
        return {"photos": self.n, "no_face": len(self.no_face), "no_face_rate": len(self.no_face) / max(self.n, 1),
                "accuracy": self.accuracy, "no_face_by_class": self.no_face_by_class(),
                "faces": self.faces.to_dict(), "per_photo": [asdict(p) for p in self.photos]}

    def table(self, list_no_face: int = 10) -> str:
        f, by_class = self.faces, self.no_face_by_class()
        lines = [f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8} {NO_FACE:>8}"]
        for name, m in f.per_class.items():
            lines.append(f"{name:<10} {m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:7.4f} "
                         f"{int(m['support']):8d} {by_class[name]:8d}")
        missing = len(self.no_face)
        lines.append(f"{NO_FACE:<10} {'':9} {'':7} {'':7} {missing:8d}   photos where the detector found no face")
        lines.append(f"\nphotos {self.n}   with a face {f.n}   no face {missing} ({missing / max(self.n, 1):.1%})")
        lines.append(f"accuracy {self.accuracy:.4f} over all photos (no face counts as wrong)   "
                     f"{f.accuracy:.4f} over the {f.n} with a face   macro-F1 {f.macro_f1:.4f} (faces)")
        if f.calibration is not None and f.n:
            lines.append(f"ECE {f.calibration.ece:.4f} ({len(f.calibration.bins)} bins, top label, faces)   "
                         f"NLL {f.calibration.nll:.4f}")
        if self.no_face and list_no_face:
            shown = ", ".join(p.file for p in self.no_face[:list_no_face])
            more = len(self.no_face) - list_no_face
            lines.append(f"no face in: {shown}" + (f" and {more} more" if more > 0 else ""))
        return "\n".join(lines)


def photo_files(path: Path, split: str, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    """The labelled photos of a folder of class folders; a missing or empty folder is one clear DataError."""
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    if not path.is_dir():
        raise DataError(f"--detect evaluates a folder of class folders of photos (<label>/*.jpg), "
                        f"and {path} is not a folder")
    files = labeled_files(path, split, labels)
    if not files:
        raise DataError(f"{path} has no photos in class folders (expected {path}/<label>/*.jpg with labels "
                        f"{', '.join(labels)})")
    return files


def evaluate_photos(classifier: Classifier, detector: Detector, path: Path, split: str = "test",
                    align: bool = True) -> PhotoEvalResult:
    """Detect, crop (``align``: upright by the eyes) and classify each photo as ``predict`` does; the largest
    face answers for the photo."""
    labels = classifier.labels
    files = photo_files(path, split, labels)
    photos, probs, y = [], [], []
    for file, label in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"cannot read image {file}")
        found = classify_image(classifier, detector, image, align)
        face = FrameResult(0, 0.0, 0.0, found).dominant
        name = str(file.relative_to(path))
        if face is None:
            photos.append(PhotoResult(name, labels[label], 0))
            continue
        photos.append(PhotoResult(name, labels[label], len(found), face.emotion, round(face.score, 4),
                                  list(face.box)))
        probs.append([face.probs[k] for k in labels])
        y.append(label)
    y_true = np.array(y, np.int64)
    p = np.array(probs, np.float64).reshape(-1, len(labels))
    faces = metrics(y_true, p.argmax(1) if len(p) else y_true, labels)
    faces.calibration = calibration(p, y_true)
    return PhotoEvalResult(faces, photos)

