"""Detection benchmark: recall, precision and ms/frame of a face detector on annotated photos.

The folder holds images and an ``annotations.json`` (``{"images": [{"file", "boxes", "ignore"}]}``,
boxes ``[x, y, w, h]`` in image pixels), such as ``../shared/data/faces-detect/``. Matching
follows that set's README so its Haar baseline is reproduced: detections and faces pair
one-to-one, greedily by falling IoU, down to the IoU threshold (0.4); a detection left over
is no false face if it falls on an ``ignore`` region (IoU at least the threshold, or at
least half of its area inside). Images are decoded once and given to each detector as
the pipeline gives frames: colour to a detector that wants it, else gray.
"""

from __future__ import annotations

import json
import reprlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .detectors import Detector
from .errors import EdgeFerError
from .preprocess import Box, to_gray
from .tracker import iou

MIN_HEIGHT = 40  # recall is also given for faces at least this tall (smaller ones fall below Haar's window at 640)


@dataclass
class Annotated:
    name: str
    color: np.ndarray              # BGR
    boxes: list[Box]
    ignore: list[Box]


@dataclass
class FaceScore:
    """One detector's figures on one annotated folder."""

    detector: str
    settings: str
    images: int
    faces: int
    tp: int
    fp: int
    recall: float
    precision: float
    recall_large: float        # recall on faces at least MIN_HEIGHT px tall
    median_iou: float          # of matched pairs
    ms_per_image: float        # median detect() time

    def to_dict(self) -> dict:
        return asdict(self)


def load_annotated(folder: Path) -> list[Annotated]:
    """Decode every annotated image of ``folder`` once (BGR, as frame sources read them)."""
    index = folder / "annotations.json"
    try:
        entries = json.loads(index.read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeFerError(f"{index}: not a readable annotations.json with an 'images' list ({exc})") from None
    if not isinstance(entries, list):
        raise EdgeFerError(f"{index}: 'images' must be a list of {{\"file\", \"boxes\", \"ignore\"}} objects")
    out = []
    for number, entry in enumerate(entries, start=1):
        name, boxes, ignore = _entry(entry, f"{index}: image {number}")
        image = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if image is None:
            raise EdgeFerError(f"cannot read image {folder / name} listed in {index}")
        out.append(Annotated(name, image, boxes, ignore))
    if not out:
        raise EdgeFerError(f"{index} lists no images")
    return out


def _entry(entry: object, where: str) -> tuple[str, list[Box], list[Box]]:
    """One item of the ``images`` list, checked: its file name, face boxes and ignore regions."""
    if not isinstance(entry, dict):
        raise EdgeFerError(f"{where} must be an object with 'file' and 'boxes', not {reprlib.repr(entry)}")
    name = entry.get("file")
    if not isinstance(name, str) or not name:
        raise EdgeFerError(f"{where}: 'file' must be a file name, not {name!r}")
    return name, _boxes(entry.get("boxes"), f"{where} ({name}): 'boxes'"), \
        _boxes(entry.get("ignore", []), f"{where} ({name}): 'ignore'")


def _boxes(raw: object, where: str) -> list[Box]:
    """A list of ``[x, y, w, h]`` boxes in pixels; anything else is one EdgeFerError."""
    def is_box(b: object) -> bool:
        return (isinstance(b, (list, tuple)) and len(b) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b))

    if not isinstance(raw, list) or not all(is_box(b) for b in raw):
        raise EdgeFerError(f"{where} must be a list of [x, y, w, h] boxes, not {reprlib.repr(raw)}")
    return [tuple(b) for b in raw]


def inside_fraction(box: Box, region: Box) -> float:
    """The share of ``box``'s area that lies inside ``region``."""
    x, y, w, h = box
    rx, ry, rw, rh = region
    ix = max(0, min(x + w, rx + rw) - max(x, rx))
    iy = max(0, min(y + h, ry + rh) - max(y, ry))
    return ix * iy / (w * h) if w * h > 0 else 0.0


def match(detections: list[Box], truth: Annotated, threshold: float) -> tuple[list[tuple[int, float]], int]:
    """Greedy one-to-one matching by falling IoU; returns (matched face index, IoU) pairs and the false faces."""
    pairs = sorted(((iou(d, t), di, ti) for di, d in enumerate(detections) for ti, t in enumerate(truth.boxes)),
                   reverse=True)
    used_d: set[int] = set()
    used_t: set[int] = set()
    matched = []
    for score, di, ti in pairs:
        if score < threshold:
            break
        if di in used_d or ti in used_t:
            continue
        used_d.add(di)
        used_t.add(ti)
        matched.append((ti, score))
    false = sum(1 for di, d in enumerate(detections) if di not in used_d
                and not any(iou(d, r) >= threshold or inside_fraction(d, r) >= 0.5 for r in truth.ignore))
    return matched, false


def score_detector(detector: Detector, label: str, settings: str, images: list[Annotated],
                   threshold: float = 0.4) -> FaceScore:
    """Run ``detector`` on every image and match its boxes (see the module docstring)."""
    tp = fp = faces = large = large_tp = 0
    ious, times = [], []
    for item in images:
        image = item.color if detector.wants_color else to_gray(item.color)
        t = time.perf_counter()
        found = detector.detect(image)
        times.append(time.perf_counter() - t)
        matched, false = match([d.box for d in found], item, threshold)
        hit = {ti for ti, _ in matched}
        tp, fp, faces = tp + len(matched), fp + false, faces + len(item.boxes)
        ious += [s for _, s in matched]
        tall = [ti for ti, b in enumerate(item.boxes) if b[3] >= MIN_HEIGHT]
        large, large_tp = large + len(tall), large_tp + sum(ti in hit for ti in tall)
    return FaceScore(label, settings, len(images), faces, tp, fp, round(tp / faces, 3) if faces else 0.0,
                     round(tp / (tp + fp), 3) if tp + fp else 0.0, round(large_tp / large, 3) if large else 0.0,
                     round(float(np.median(ious)), 3) if ious else 0.0, round(float(np.median(times)) * 1000, 2))


def format_scores(rows: list[tuple[FaceScore, float | None]], threshold: float) -> str:
    """One table: the detection figures, and the video's end-to-end FPS where it was measured."""
    head = (f"{'detector':<15} {'settings':<16} {'recall':>6} {'prec.':>6} {'TP':>4} {'FP':>4} "
            f"{'rec>=40px':>9} {'ms/image':>8} {'video FPS':>9}")
    out = [f"IoU {threshold}; ms/image: median detect() on the annotated images; video FPS: end-to-end",
           head, "-" * len(head)]
    for s, fps in rows:
        out.append(f"{s.detector:<15} {s.settings:<16} {s.recall:6.3f} {s.precision:6.3f} {s.tp:>4} {s.fp:>4} "
                   f"{s.recall_large:9.3f} {s.ms_per_image:8.2f} {'-' if fps is None else f'{fps:.1f}':>9}")
    return "\n".join(out)

