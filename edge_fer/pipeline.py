"""One frame in, faces with emotions out: detect (every N frames) -> track -> crop -> classify -> smooth.

Detection is the expensive stage, so it is scheduled: every ``detect_every`` frames the
tracked faces are re-found in small windows around their last boxes, and every
``full_detect_every`` frames (or whenever no face is tracked) the whole frame is searched
for new faces. Classification runs on every frame, all faces in one invoke. Where the
detector gives eye positions (BlazeFace) and ``align`` is on, each face is turned upright
before it is cropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .classifier_api import Classifier
from .detectors import Detection, Detector
from .preprocess import Box, prepare_faces, to_gray
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
    def __init__(self, classifier: Classifier, detector: Detector, tracker: Tracker | None = None,
                 detect_every: int = 3, full_detect_every: int = 30, align: bool = True):
        if detect_every < 1 or full_detect_every < 1:
            raise ValueError("detect_every and full_detect_every must be at least 1")
        self.classifier, self.detector = classifier, detector
        self.tracker = tracker or Tracker()
        self.detect_every = detect_every
        self.full_detect_every = full_detect_every
        self._last_full = -full_detect_every
        self.margin = classifier.metadata.face_margin
        self.align = align
        self._count = 0
        self._size: tuple[int, ...] | None = None  # the gray frame's shape: tracked boxes hold only at it

    def reset(self) -> None:
        """Forget the tracked faces and start the detection schedule over: the next frame gets a full-frame
        pass. Called when the frame size changes (a stream reconnecting at another resolution) and by the
        run loop after a frame that failed."""
        self.tracker.reset()
        self._count = 0
        self._last_full = -self.full_detect_every

    def process(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if frame.gray.shape != self._size:
            if self._size is not None:
                self.reset()  # boxes of the old size would be searched and cropped outside the new frame
            self._size = frame.gray.shape
        detected = self._count % self.detect_every == 0
        if detected:
            tracks = self.tracker.active()
            if not tracks or self._count - self._last_full >= self.full_detect_every:
                # A full-frame pass finds new faces; in between, tracked faces are re-found locally.
                tracks = self._update(detect(self.detector, frame))
                self._last_full = self._count
            else:
                image, (fx, fy) = detector_view(self.detector, frame)
                height, width = frame.gray.shape[:2]
                windows = [scale_box(t.box, 1 / fx, 1 / fy) for t in tracks]  # in the detector's pixels
                mapped = (None if d is None else d.scaled(fx, fy) for d in self.detector.detect_near(image, windows))
                near = [d if d is not None and d.within(width, height) else None for d in mapped]
                if any(d is None for d in near):  # a face was lost locally: look at the whole frame now
                    near = detect(self.detector, frame)
                    self._last_full = self._count
                tracks = self._update([d for d in near if d is not None])
        else:
            tracks = self.tracker.visible()
        self._count += 1
        t1 = time.perf_counter()
        timings["detect"] = t1 - t0
        faces = prepare_faces(frame.gray, [t.box for t in tracks], self.classifier.input_size, self.margin,
                              [t.eyes for t in tracks] if self.align else None)
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

    def _update(self, detections: list[Detection]) -> list:
        return self.tracker.update([d.box for d in detections], [d.eyes for d in detections])

    def process_still(self, frame: Frame) -> FrameResult:
        """An unrelated still image: detect every time, no tracking or smoothing across images."""
        t0 = time.perf_counter()
        faces = classify_image(self.classifier, self.detector, frame, self.align)
        return FrameResult(frame.index, frame.ts, 0.0, faces, {"classify": time.perf_counter() - t0}, True)


def detector_view(detector: Detector, frame: Frame) -> tuple[np.ndarray, tuple[float, float]]:
    """The image the detector looks at (colour where it wants it and the source gave it, else gray) and
    the factors ``(fx, fy)`` from its pixels to the gray frame's, in which boxes are reported. Across and
    down apart: a colour image of another aspect ratio than the gray one must not misplace boxes."""
    if detector.wants_color and frame.color is not None:
        return frame.color, (frame.gray.shape[1] / frame.color.shape[1], frame.gray.shape[0] / frame.color.shape[0])
    return frame.gray, (1.0, 1.0)


def scale_box(box: Box, fx: float, fy: float | None = None) -> Box:
    """``box`` in a frame ``fx`` times as wide and ``fy`` (default ``fx``) times as tall."""
    fy = fx if fy is None else fy
    if fx == 1.0 and fy == 1.0:
        return box
    x, y, w, h = box
    return int(round(x * fx)), int(round(y * fy)), int(round(w * fx)), int(round(h * fy))


def detect(detector: Detector, frame: Frame) -> list[Detection]:
    """Faces of the whole frame, in gray-frame pixels; a box with less than a pixel inside the frame (off the
    edge, or rounded to nothing by the scaling) is dropped, since no crop could be taken from it."""
    image, (fx, fy) = detector_view(detector, frame)
    height, width = frame.gray.shape[:2]
    return [d for d in (d.scaled(fx, fy) for d in detector.detect(image)) if d.within(width, height)]


def classify_image(classifier: Classifier, detector: Detector, frame: Frame | np.ndarray,
                   align: bool) -> list[FaceResult]:
    """All faces of a still image (a Frame, or a gray or BGR array), unsmoothed (``predict`` and image folders)."""
    if isinstance(frame, np.ndarray):
        frame = Frame(0, 0.0, to_gray(frame), frame if frame.ndim == 3 else None)
    found = detect(detector, frame)
    gray = frame.gray
    boxes = [d.box for d in found]
    probs = classifier.predict(prepare_faces(gray, boxes, classifier.input_size, classifier.metadata.face_margin,
                                             [d.eyes for d in found] if align else None))
    out = []
    for i, (box, p) in enumerate(zip(boxes, probs), start=1):
        best = int(np.argmax(p))
        out.append(FaceResult(box, classifier.labels[best], float(p[best]),
                              {label: float(v) for label, v in zip(classifier.labels, p)}, i))
    return out
