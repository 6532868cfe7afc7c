"""Haar-cascade face detection on a downscaled gray frame (OpenCV's frontal-face cascade).

Detection cost grows with pixel count, so frames are shrunk to ``det_width`` before the
cascade runs and boxes are mapped back to full resolution. Faces are returned largest
first, so ``max_faces`` keeps the most prominent ones.

Where a face is already tracked, :meth:`HaarDetector.detect_near` looks for it again only
in a small window around its last box, scaled so the face is just above the cascade's
24-pixel window and limited to a narrow range of sizes: about a tenth of the cost of a
full-frame pass. The pipeline alternates the two (see ``Pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError
from ..preprocess import Box, to_gray
from .base import Detection, Detector, largest_first

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"


def cascade_path(name: str = DEFAULT_CASCADE) -> Path:
    """Resolve a cascade file: a path as given, else OpenCV's bundled ``cv2.data.haarcascades``."""
    path = Path(name)
    if path.exists():
        return path
    data_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if data_dir and (Path(data_dir) / name).exists():
        return Path(data_dir) / name
    raise ModelError(f"Haar cascade {name} not found (opencv-python-headless>=4.8,<5 ships it; 5.x does not)")


@dataclass
class HaarConfig:
    det_width: int = 320          # detection runs on a frame this wide (0: full resolution)
    scale_factor: float = 1.1     # cascade pyramid step
    min_neighbors: int = 5        # higher: fewer false positives, more misses
    min_size: int = 24            # smallest face in detection pixels (the cascade window is 24)
    max_faces: int = 0            # 0: no limit
    equalize: bool = False        # histogram equalisation before detection (helps in dim light)
    roi_face: int = 36            # in a tracked-face search, the face is scaled to about this many pixels
    cascade: str = DEFAULT_CASCADE


class HaarDetector(Detector):
    key = "haar"
    config_cls = HaarConfig
    config: HaarConfig

    def __init__(self, config: HaarConfig | None = None):
        super().__init__(config)
        if not hasattr(cv2, "CascadeClassifier"):
            raise ModelError("this OpenCV has no CascadeClassifier: install opencv-python-headless>=4.8,<5")
        path = cascade_path(self.config.cascade)
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ModelError(f"cannot load Haar cascade {path}")

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Face boxes in full-frame pixels, largest first (no landmarks, no scores)."""
        c = self.config
        gray = to_gray(image)
        height, width = gray.shape[:2]
        scale = 1.0
        small = gray
        if c.det_width and width > c.det_width:
            scale = width / c.det_width
            small = cv2.resize(gray, (c.det_width, max(1, int(round(height / scale)))), interpolation=cv2.INTER_AREA)
        if c.equalize:
            small = cv2.equalizeHist(small)
        found = self.cascade.detectMultiScale(small, scaleFactor=c.scale_factor, minNeighbors=c.min_neighbors,
                                              minSize=(c.min_size, c.min_size))
        return largest_first([Detection((int(round(x * scale)), int(round(y * scale)), int(round(w * scale)),
                                         int(round(h * scale)))) for x, y, w, h in (found if len(found) else [])],
                             c.max_faces)

    def detect_near(self, image: np.ndarray, boxes: list[Box]) -> list[Detection | None]:
        """Re-find each tracked face near its last box, within a narrow range of sizes; None where it is not found."""
        c = self.config
        gray = to_gray(image)
        height, width = gray.shape[:2]
        found: list[Detection | None] = []
        for x, y, w, h in boxes:
            pad = int(0.4 * max(w, h))
            x0, y0 = max(0, x - pad), max(0, y - pad)
            x1, y1 = min(width, x + w + pad), min(height, y + h + pad)
            if x1 <= x0 or y1 <= y0 or min(w, h) < 1:  # a box outside this frame (or an empty one): not here
                found.append(None)
                continue
            roi = gray[y0:y1, x0:x1]
            scale = min(1.0, c.roi_face / max(w, h))
            if scale < 1.0:
                if min(np.rint(np.array(roi.shape[:2]) * scale)) < 1:  # a sliver at the edge shrinks to nothing
                    found.append(None)
                    continue
                roi = cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if c.equalize:
                roi = cv2.equalizeHist(roi)
            side = max(w, h) * scale
            lo, hi = max(c.min_size, int(side * 0.65)), max(c.min_size + 1, int(side * 1.5))
            hits = self.cascade.detectMultiScale(roi, scaleFactor=c.scale_factor, minNeighbors=c.min_neighbors,
                                                 minSize=(lo, lo), maxSize=(hi, hi))
            if not len(hits):
                found.append(None)
                continue
            bx, by, bw, bh = max(hits, key=lambda b: b[2] * b[3])
            found.append(Detection((x0 + int(round(bx / scale)), y0 + int(round(by / scale)),
                                    int(round(bw / scale)), int(round(bh / scale)))))
        return found
