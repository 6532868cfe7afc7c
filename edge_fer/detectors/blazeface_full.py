"""BlazeFace full-range: MediaPipe's 192x192 model for faces up to about 5 m (one dense 48x48 anchor grid).

The same letterboxing, decoding and weighted NMS as the short-range model; only the
anchor layout and the model file differ.
"""

from __future__ import annotations

from .blazeface import BlazeFaceDetector
from .ssd import FULL_RANGE


class BlazeFaceFullDetector(BlazeFaceDetector):
    key = "blazeface-full"
    spec = FULL_RANGE
    model_name = "face_detection_full_range.tflite"
