"""The parts a command builds from its settings: the classifier, the face detector, the pipeline.

One place, so ``run``, ``predict``, ``bench`` and ``eval`` build them alike from the same sections
of :class:`~edge_fer.config.Settings`; a new detector or classifier setting is wired here once.
"""

from __future__ import annotations

from .classifier import Classifier, load_classifier
from .config import ClassifierSettings, Settings
from .detectors import Detector, open_detector
from .pipeline import Pipeline
from .tracker import Tracker, TrackerConfig


def make_classifier(s: ClassifierSettings) -> Classifier:
    return load_classifier(s.model, num_threads=s.threads, edgetpu=s.edgetpu)


def make_detector(s: Settings) -> Detector:
    """The chosen detector plugin with the settings it takes. A missing BlazeFace model is fetched on
    first use; if that fails, the default detector falls back to Haar with a warning, a chosen one stops."""
    d = s.detector
    return open_detector(d.detector, fallback="detector" not in s.origin, model=d.detector_model,
                         det_width=d.det_width, min_neighbors=d.min_neighbors, max_faces=d.max_faces,
                         min_score=d.min_score)


def make_pipeline(s: Settings, classifier: Classifier) -> Pipeline:
    """The detector and tracker of ``s`` around ``classifier`` (built apart, so a reload can keep the model)."""
    t = s.tracking
    return Pipeline(classifier, make_detector(s), Tracker(TrackerConfig(smoothing=t.smoothing)),
                    t.detect_every, t.full_detect_every, align=s.detector.align)
