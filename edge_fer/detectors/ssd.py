"""MediaPipe's SSD post-processing for BlazeFace, in numpy: anchors, box decoding, weighted NMS.

The network predicts, per anchor, a box and six keypoints as offsets from the anchor centre
(in input pixels) and one logit. MediaPipe's ``SsdAnchorsCalculator`` lays the anchors out
from a few options; with fixed-size anchors only the centres matter. Overlapping boxes are
not dropped but averaged, weighted by score ("weighted NMS", BlazeFace's tie resolution),
which steadies boxes from frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RAW_SCORE_LIMIT = 80.0  # MediaPipe clips logits at 100; 80 keeps exp() inside float32


@dataclass(frozen=True)
class AnchorSpec:
    """The ``SsdAnchorsCalculatorOptions`` that matter for BlazeFace (fixed anchor size, offsets 0.5)."""

    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float

    def anchors(self) -> np.ndarray:
        """Anchor centres ``(n, 2)`` as fractions of the input, in the network's output order.

        Layers that share a stride share one feature map; each cell gets two anchors per such
        layer when an interpolated scale is used (ratio 1.0), else one.
        """
        centres = []
        layer = 0
        while layer < len(self.strides):
            stride = self.strides[layer]
            last = layer
            repeats = 0
            while last < len(self.strides) and self.strides[last] == stride:
                last += 1
                repeats += 2 if self.interpolated_scale_aspect_ratio == 1.0 else 1
            cells = self.input_size // stride
            grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
            ys, xs = np.meshgrid(grid, grid, indexing="ij")
            cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
            centres.append(np.repeat(cell_centres, repeats, axis=0))
            layer = last
        return np.concatenate(centres).astype(np.float32)


# mediapipe/modules/face_detection/face_detection_short_range_common.pbtxt and ..._full_range_common.pbtxt
SHORT_RANGE = AnchorSpec(128, (8, 16, 16, 16), 1.0)
FULL_RANGE = AnchorSpec(192, (4,), 0.0)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int,
           min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and keypoints above ``min_score``, as fractions of the input square.

    Returns ``points (k, 8, 2)`` (row 0: xmin, ymin; row 1: xmax, ymax; rows 2-7: keypoints)
    and ``scores (k,)``. Boxes with no area are dropped.
    """
    logits = np.clip(raw_scores.reshape(-1).astype(np.float32), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    raw = raw_boxes.reshape(len(anchors), -1, 2)[keep].astype(np.float32) / np.float32(input_size)
    centre = raw[:, 0] + anchors[keep]
    half = raw[:, 1] / 2
    points = np.empty_like(raw)
    points[:, 0] = centre - half
    points[:, 1] = centre + half
    points[:, 2:] = raw[:, 2:] + anchors[keep][:, None, :]
    valid = np.all(points[:, 1] > points[:, 0], axis=1)
    return points[valid], scores[keep][valid]


def iou_matrix(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(2, 2)`` corner box with each of ``boxes (n, 2, 2)``."""
    lo = np.maximum(box[0], boxes[:, 0])
    hi = np.minimum(box[1], boxes[:, 1])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[1] - box[0])
    areas = np.prod(boxes[:, 1] - boxes[:, 0], axis=1)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(points: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge each cluster of boxes overlapping the best remaining one by IoU > ``threshold`` into
    their score-weighted mean (box and keypoints); the cluster keeps its best score."""
    order = np.argsort(-scores, kind="stable")
    points, scores = points[order], scores[order]
    merged_points, merged_scores = [], []
    remaining = np.arange(len(scores))
    while len(remaining):
        top = remaining[0]
        overlap = iou_matrix(points[top, :2], points[remaining, :2]) > threshold
        overlap[0] = True
        cluster = remaining[overlap]
        weights = scores[cluster][:, None, None]
        merged_points.append((points[cluster] * weights).sum(axis=0) / weights.sum())
        merged_scores.append(scores[top])
        remaining = remaining[~overlap]
    if not merged_points:
        return np.empty((0, *points.shape[1:]), np.float32), np.empty(0, np.float32)
    return np.stack(merged_points).astype(np.float32), np.array(merged_scores, np.float32)
