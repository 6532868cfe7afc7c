"""A light IoU tracker with per-track probability smoothing.

The detector runs only every few frames; between detections faces keep their last box, and a
track keeps its id across detections while its boxes overlap. Smoothing the class
probabilities per track (EMA or a sliding window) stops labels from flickering when the
frame-to-frame prediction is noisy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import count

import numpy as np

from .preprocess import Box, Eyes


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: Box
    misses: int = 0                      # consecutive detections that did not find this face
    hits: int = 1                        # detections that found it
    probs: np.ndarray | None = None      # smoothed probabilities
    history: deque = field(default_factory=deque)
    eyes: Eyes | None = None             # eye positions from the latest detection, where the detector gives them


@dataclass
class TrackerConfig:
    iou_threshold: float = 0.3
    min_hits: int = 2            # detections before a new face is reported (filters one-off false faces)
    max_misses: int = 2          # detections a face may be missed before its track ends
    coast: int = 1               # missed detections a confirmed face is still reported (at its last box)
    smoothing: str = "ema"       # ema, window or none
    alpha: float = 0.4           # EMA weight of the newest frame
    window: int = 5              # frames averaged by the window smoother


class Tracker:
    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        if self.config.smoothing not in ("ema", "window", "none"):
            raise ValueError(f"unknown smoothing {self.config.smoothing!r}: use ema, window or none")
        self.tracks: list[Track] = []
        self._ids = count(1)

    def update(self, boxes: list[Box], eyes: list[Eyes | None] | None = None) -> list[Track]:
        """Match fresh detections to tracks (greedy, highest IoU first); return the live tracks.

        ``eyes``, parallel to ``boxes``, travels with each box so a face can be aligned.
        """
        first = not self.tracks
        eyes = eyes if eyes is not None else [None] * len(boxes)
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)),
                       reverse=True)
        used_t, used_b = set(), set()
        for score, ti, bi in pairs:
            if score < self.config.iou_threshold:
                break
            if ti in used_t or bi in used_b:
                continue
            self.tracks[ti].box, self.tracks[ti].eyes, self.tracks[ti].misses = boxes[bi], eyes[bi], 0
            self.tracks[ti].hits += 1
            used_t.add(ti)
            used_b.add(bi)
        for ti, track in enumerate(self.tracks):
            if ti not in used_t:
                track.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.config.max_misses]
        born_hits = self.config.min_hits if first else 1
        self.tracks += [Track(next(self._ids), b, hits=born_hits, history=deque(maxlen=self.config.window),
                              eyes=eyes[bi])
                        for bi, b in enumerate(boxes) if bi not in used_b]
        return self.visible()

    def reset(self) -> None:
        """Forget every track; ids go on counting, so a face found again is a new track, not an old one's."""
        self.tracks = []

    def active(self) -> list[Track]:
        """Tracks to look for at the next detection: new ones, and confirmed ones still reported."""
        return [t for t in self.tracks if t.misses == 0 or (t.misses <= self.config.coast and self._confirmed(t))]

    def visible(self) -> list[Track]:
        """Confirmed tracks: the faces to classify and report.

        A new face is reported once it has been detected ``min_hits`` times (except at
        start-up, when nothing is tracked yet and every face is taken at once), which keeps
        one-off false detections out. A confirmed face missed by ``coast`` detections or fewer
        is still reported at its last box, so one missed detection does not blank the face.
        """
        return [t for t in self.tracks if self._confirmed(t) and t.misses <= self.config.coast]

    def _confirmed(self, track: Track) -> bool:
        return track.hits >= self.config.min_hits

    def smooth(self, track: Track, probs: np.ndarray) -> np.ndarray:
        c = self.config
        if c.smoothing == "ema":
            track.probs = probs if track.probs is None else c.alpha * probs + (1 - c.alpha) * track.probs
        elif c.smoothing == "window":
            track.history.append(probs)
            track.probs = np.mean(track.history, axis=0)
        else:
            track.probs = probs
        return track.probs
