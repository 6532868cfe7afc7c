"""One frame in, faces with emotions out: detect (every N frames) -> track -> crop -> classify -> smooth.

Detection is the expensive stage, so it is scheduled: every ``detect_every`` frames the
tracked faces are re-found in small windows around their last boxes, and every
``full_detect_every`` frames (or whenever no face is tracked) the whole frame is searched
for new faces. Classification runs on every frame, all faces in one invoke.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .classifier_api import Classifier
from .detector import FaceDetector
from .preprocess import Box, prepare_faces
from .sources import Frame
from .tracker import Tracker

STAGES = ("capture", "detect", "preprocess", "classify", "output")


@dataclass
class FaceResult:
    box: Box
    emotion: str
    score: float
    probs: dict[str, float]
    track: int

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "emotion": self.emotion, "score": round(self.score, 4),
                "probs": {k: round(v, 4) for k, v in self.probs.items()}, "track": self.track}


@dataclass
class FrameResult:
    frame: int
    ts: float
    fps: float
    faces: list[FaceResult]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    detected: bool = False  # whether the detector ran on this frame

    def to_dict(self) -> dict[str, Any]:
        """The ``--output jsonl`` record (documented in the README)."""
        return {"frame": self.frame, "ts": round(self.ts, 3), "fps": round(self.fps, 1),
                "faces": [f.to_dict() for f in self.faces]}

    def state_dict(self, *, frames: int, dropped: int, uptime: float) -> dict[str, Any]:
        """The MQTT ``state`` payload (docs/service.md): the dominant face and the run's counters."""
        dom = self.dominant
        return {"ts": round(self.ts, 3),
                "emotion": dom.emotion if dom else None,
                "score": round(dom.score, 4) if dom else None,
                "probs": {k: round(v, 4) for k, v in dom.probs.items()} if dom else {},
                "faces": len(self.faces),
                "fps": round(self.fps, 1),
                "frames": frames,
                "dropped": dropped,
                "uptime": round(uptime, 1)}

    @property
    def dominant(self) -> FaceResult | None:
        """The largest face: the one a single-person display or the MQTT state reports."""
        return max(self.faces, key=lambda f: f.box[2] * f.box[3], default=None)


class Pipeline:
    def __init__(self, classifier: Classifier, detector: FaceDetector, tracker: Tracker | None = None,
                 detect_every: int = 3, full_detect_every: int = 30):
        if detect_every < 1 or full_detect_every < 1:
            raise ValueError("detect_every and full_detect_every must be at least 1")
        self.classifier, self.detector = classifier, detector
        self.tracker = tracker or Tracker()
        self.detect_every = detect_every
        self.full_detect_every = full_detect_every
        self._last_full = -full_detect_every
        self.margin = classifier.metadata.face_margin
        self._count = 0

    def process(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        detected = self._count % self.detect_every == 0
        if detected:
            tracks = self.tracker.active()
            if not tracks or self._count - self._last_full >= self.full_detect_every:
                # A full-frame pass finds new faces; in between, tracked faces are re-found locally.
                tracks = self.tracker.update(self.detector.detect(frame.gray))
                self._last_full = self._count
            else:
                near = self.detector.detect_near(frame.gray, [t.box for t in tracks])
                if any(b is None for b in near):  # a face was lost locally: look at the whole frame now
                    near = self.detector.detect(frame.gray)
                    self._last_full = self._count
                tracks = self.tracker.update([b for b in near if b is not None])
        else:
            tracks = self.tracker.visible()
        self._count += 1
        t1 = time.perf_counter()
        timings["detect"] = t1 - t0
        faces = prepare_faces(frame.gray, [t.box for t in tracks], self.classifier.input_size, self.margin)
        t2 = time.perf_counter()
        timings["preprocess"] = t2 - t1
        probs = self.classifier.predict(faces)
        results = []
        labels = self.classifier.labels
        for track, p in zip(tracks, probs):
            smooth = self.tracker.smooth(track, p)
            best = int(np.argmax(smooth))
            results.append(FaceResult(track.box, labels[best], float(smooth[best]),
                                      {label: float(v) for label, v in zip(labels, smooth)}, track.id))
        timings["classify"] = time.perf_counter() - t2
        return FrameResult(frame.index, frame.ts, 0.0, results, timings, detected)

    def process_still(self, frame: Frame) -> FrameResult:
        """An unrelated still image: detect every time, no tracking or smoothing across images."""
        t0 = time.perf_counter()
        faces = classify_image(self.classifier, self.detector, frame.gray)
        return FrameResult(frame.index, frame.ts, 0.0, faces, {"classify": time.perf_counter() - t0}, True)


def classify_image(classifier: Classifier, detector: FaceDetector, gray: np.ndarray) -> list[FaceResult]:
    """All faces of a still image, unsmoothed (``predict`` and image folders)."""
    boxes = detector.detect(gray)
    probs = classifier.predict(prepare_faces(gray, boxes, classifier.input_size, classifier.metadata.face_margin))
    out = []
    for i, (box, p) in enumerate(zip(boxes, probs), start=1):
        best = int(np.argmax(p))
        out.append(FaceResult(box, classifier.labels[best], float(p[best]),
                              {label: float(v) for label, v in zip(classifier.labels, p)}, i))
    return out
