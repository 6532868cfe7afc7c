"""Where results go: console line, JSON lines, nothing, an annotated video, a window.

Each sink has ``write(result, frame)`` and ``close()``; the loop calls every configured
sink, so outputs combine freely (``--output jsonl --record out.mp4``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Protocol, TextIO

import cv2
import numpy as np

from .errors import EdgeFerError, SourceError
from .pipeline import FrameResult
from .sources import Frame

COLORS = {"angry": (0, 0, 255), "disgust": (0, 128, 0), "fear": (128, 0, 128), "happy": (0, 215, 255),
          "sad": (255, 0, 0), "surprise": (0, 165, 255), "neutral": (200, 200, 200)}


class Sink(Protocol):
    def write(self, result: FrameResult, frame: Frame) -> None: ...

    def close(self) -> None: ...


def describe(result: FrameResult) -> str:
    """``12.3 fps | 1 face | #1 happy 0.91`` — the console's line."""
    faces = ", ".join(f"#{f.track} {f.emotion} {f.score:.2f}" for f in result.faces) or "-"
    n = len(result.faces)
    return f"frame {result.frame:6d} | {result.fps:6.1f} fps | {n} face{'s' if n != 1 else ' '} | {faces}"


class ConsoleSink:
    """A live line on a terminal (rewritten in place); one line per second when piped to a log; a line per
    image, named, for images."""

    def __init__(self, stream: TextIO | None = None, interval: float = 1.0):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.interval = interval
        self._last = 0.0
        self._live = False  # a line rewritten in place is open on the terminal

    def write(self, result: FrameResult, frame: Frame) -> None:
        if self.tty and not frame.name:
            self.stream.write("\r" + describe(result).ljust(100))
            self.stream.flush()
            self._live = True
            return
        now = time.monotonic()
        if frame.name or now - self._last >= self.interval:  # each image (of a folder) on a line of its own
            self.stream.write((f"{frame.name}: " if frame.name else "") + describe(result) + "\n")
            self.stream.flush()
            self._last = now

    def close(self) -> None:
        if self._live:
            self.stream.write("\n")
            self.stream.flush()


class JsonlSink:
    """One JSON object per frame on stdout (schema in the README)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def write(self, result: FrameResult, frame: Frame) -> None:
        record = result.to_dict()
        if frame.name:
            record["image"] = frame.name
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def annotate(image: np.ndarray, result: FrameResult, gray_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Draw boxes and ``#track emotion score`` labels on a BGR image; boxes are rescaled when gray and colour
    sizes differ."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    sx = sy = 1.0
    if gray_shape is not None and gray_shape != out.shape[:2]:
        sy, sx = out.shape[0] / gray_shape[0], out.shape[1] / gray_shape[1]
    thickness = max(1, round(out.shape[1] / 400))
    for face in result.faces:
        x, y, w, h = face.box
        x, y, w, h = int(x * sx), int(y * sy), int(w * sx), int(h * sy)
        color = COLORS.get(face.emotion, (0, 255, 0))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thickness)
        text = f"#{face.track} {face.emotion} {face.score:.2f}"
        scale = 0.4 * thickness + 0.2
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = max(th + 4, y - 4)
        cv2.rectangle(out, (x, ty - th - 4), (x + tw + 4, ty + 2), color, -1)
        cv2.putText(out, text, (x + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return out


def frame_image(frame: Frame) -> np.ndarray:
    """The frame in colour: its BGR image, or the gray one converted (sources skip colour when nothing needs it)."""
    return frame.color if frame.color is not None else cv2.cvtColor(frame.gray, cv2.COLOR_GRAY2BGR)


class RecordSink:
    """An annotated MP4 (mp4v), sized from the first frame."""

    def __init__(self, path: Path, fps: float = 15.0):
        self.path, self.fps = Path(path), fps or 15.0
        if not self.path.parent.exists():
            raise SourceError(f"cannot record to {self.path}: folder {self.path.parent} does not exist")
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] = (0, 0)  # width, height of the video

    def write(self, result: FrameResult, frame: Frame) -> None:
        image = annotate(frame_image(frame), result, frame.gray.shape[:2])
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise SourceError(f"cannot write video {self.path}")
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class DisplaySink:
    """A window with boxes and labels; needs an OpenCV build with GUI support and a display."""

    def __init__(self, title: str = "edge-fer"):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise EdgeFerError("--display needs a screen and OpenCV with GUI support "
                               "(pip install opencv-python instead of opencv-python-headless)") from None
        self.quit = False

    def write(self, result: FrameResult, frame: Frame) -> None:
        cv2.imshow(self.title, annotate(frame_image(frame), result, frame.gray.shape[:2]))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.quit = True

    def close(self) -> None:
        cv2.destroyAllWindows()
