"""The parts a command builds from its settings: the classifier, the face detector, the pipeline.

One place, so ``run``, ``predict``, ``bench`` and ``eval`` build them alike from the same sections
of :class:`~edge_fer.config.Settings`; a new detector or classifier setting is wired here once.
"""

from __future__ import annotations

from .classifier import Classifier, load_classifier
from .config import ClassifierSettings, DetectorSettings, Settings
from .detectors import Detector, open_detector, takes
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


def detector_label(d: DetectorSettings, running: str | None = None) -> str:
    """``haar det_width=320``, ``blazeface-full min_score=0.5``: the detector and the setting of its that
    tells bench rows apart (also the web view's detector fact). ``running`` is the key of the detector
    that was built, where it may differ (BlazeFace's models missing offline: Haar runs in its place)."""
    key = running or d.detector
    label = f"{key} " + (f"det_width={d.det_width}" if takes(key, "det_width") else f"min_score={d.min_score:g}")
    return label if key == d.detector else f"{label} (in place of {d.detector}, whose models are missing)"


def make_pipeline(s: Settings, classifier: Classifier) -> Pipeline:
    """The detector and tracker of ``s`` around ``classifier`` (built apart, so a reload can keep the model)."""
    t = s.tracking
    return Pipeline(classifier, make_detector(s), Tracker(TrackerConfig(smoothing=t.smoothing)),
                    t.detect_every, t.full_detect_every, align=s.detector.align)
