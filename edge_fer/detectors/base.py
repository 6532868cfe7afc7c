"""The one interface every face detector plugin implements; it knows no plugin.

A detector takes a gray or BGR frame and returns :class:`Detection` objects in full-frame
pixels, largest first. Plugins that predict facial keypoints (BlazeFace) fill
``landmarks``, so the crop can be rotated upright (``preprocess.align_face``); Haar leaves
them empty. ``detect_near`` re-finds tracked faces in small windows around their last
boxes: the pipeline calls it between full-frame passes because it is cheaper, and the
default here (run ``detect`` on each window) suits any plugin whose cost grows with pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..preprocess import Box
from ..tracker import iou

Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One face: an axis-aligned box, a score in 0..1 (1.0 where the backend gives none) and keypoints.

    ``landmarks`` follow MediaPipe's order where present: the eye on the image's left, the other
    eye, nose tip, mouth centre, and the two ear tragions.
    """

    box: Box
    score: float = 1.0
    landmarks: tuple[Point, ...] = ()

    @property
    def eyes(self) -> tuple[Point, Point] | None:
        return (self.landmarks[0], self.landmarks[1]) if len(self.landmarks) >= 2 else None

    def scaled(self, fx: float, fy: float | None = None) -> Detection:
        """The same face in a frame ``fx`` times as wide and ``fy`` (default ``fx``) times as tall: colour and
        gray may differ in size, and in aspect ratio. A tiny box may round to a width or height of 0: see
        :meth:`within`."""
        fy = fx if fy is None else fy
        if fx == 1.0 and fy == 1.0:
            return self
        x, y, w, h = self.box
        return Detection((int(round(x * fx)), int(round(y * fy)), int(round(w * fx)), int(round(h * fy))),
                         self.score, tuple((px * fx, py * fy) for px, py in self.landmarks))

    def within(self, width: int, height: int) -> bool:
        """At least a pixel of the box lies inside a ``width`` x ``height`` frame: a crop can be cut from it.
        Not so for a face gone off the edge, or a box that scaling rounded to nothing. The box itself is
        left as it is (the crop clips it; alignment turns about its own centre)."""
        x, y, w, h = self.box
        return min(width, x + w) - max(0, x) >= 1 and min(height, y + h) - max(0, y) >= 1

    def shifted(self, dx: int, dy: int) -> Detection:
        """The same face in a frame whose origin lies ``(dx, dy)`` pixels further up and left."""
        x, y, w, h = self.box
        return Detection((x + dx, y + dy, w, h), self.score,
                         tuple((px + dx, py + dy) for px, py in self.landmarks))


class Detector(ABC):
    """A face detector plugin: a registry ``key``, a typed ``config_cls`` and the two calls the pipeline makes."""

    key: ClassVar[str]
    config_cls: ClassVar[type]
    wants_color: ClassVar[bool] = False  # finds more faces in BGR than in gray: sources are asked for colour

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.config_cls()

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces of a whole gray or BGR frame, in its pixels, largest first."""

    def detect_near(self, image: np.ndarray, boxes: list[Box]) -> list[Detection | None]:
        """Re-find each tracked face in a window twice its size around its last box; None where it is gone."""
        height, width = image.shape[:2]
        found: list[Detection | None] = []
        for box in boxes:
            x, y, w, h = box
            pad = max(w, h) // 2
            x0, y0 = max(0, x - pad), max(0, y - pad)
            x1, y1 = min(width, x + w + pad), min(height, y + h + pad)
            if x1 <= x0 or y1 <= y0:  # the box lies outside this frame: nothing to search
                found.append(None)
                continue
            found.append(best_overlap([d.shifted(x0, y0) for d in self.detect(image[y0:y1, x0:x1])], box))
        return found


def best_overlap(detections: list[Detection], box: Box) -> Detection | None:
    """The detection overlapping ``box`` most (a tracked face found again), or None where none overlaps it."""
    overlap, best = max(((iou(d.box, box), d) for d in detections), key=lambda pair: pair[0], default=(0.0, None))
    return best if overlap > 0 else None


def largest_first(detections: list[Detection], max_faces: int = 0) -> list[Detection]:
    """Sort by box area, largest first, and keep ``max_faces`` of them (0: all)."""
    ordered = sorted(detections, key=lambda d: d.box[2] * d.box[3], reverse=True)
    return ordered[:max_faces] if max_faces else ordered
