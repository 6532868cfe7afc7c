"""The parts a command builds from its settings: the classifier, the face detector, the pipeline.

One place, so ``run``, ``predict``, ``bench`` and ``eval`` build them alike from the same sections
of :class:`~edge_fer.config.Settings`; a new detector or classifier setting is wired here once.
"""

from __future__ import annotations

from .classifier import Classifier, load_classifier
from .config import ClassifierSettings, DetectorSettings, Settings
from .detector import DetectorConfig, FaceDetector
from .pipeline import Pipeline
from .tracker import Tracker, TrackerConfig


def make_classifier(s: ClassifierSettings) -> Classifier:
    return load_classifier(s.model, num_threads=s.threads, edgetpu=s.edgetpu)


def make_detector(s: DetectorSettings) -> FaceDetector:
    return FaceDetector(DetectorConfig(det_width=s.det_width, min_neighbors=s.min_neighbors, max_faces=s.max_faces))


def make_pipeline(s: Settings, classifier: Classifier) -> Pipeline:
    """The detector and tracker of ``s`` around ``classifier`` (built apart, so a reload can keep the model)."""
    t = s.tracking
    return Pipeline(classifier, make_detector(s.detector), Tracker(TrackerConfig(smoothing=t.smoothing)),
                    t.detect_every, t.full_detect_every)
