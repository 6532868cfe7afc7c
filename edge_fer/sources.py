"""Frame sources: OpenCV cameras, picamera2, video files and streams, image files and folders.

Live sources (cameras, network streams) are read in a thread that keeps only the newest
frame, so a slow consumer skips frames instead of falling behind. Files are read in order
so every frame is processed. Each frame carries its gray image (what detection and the
classifier use) and, where cheap or needed, its colour image (for display and recording).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import cv2
import numpy as np

from .errors import SourceError
from .preprocess import to_gray

log = logging.getLogger(__name__)

# OpenCV's own WARN lines (e.g. "can't open camera by index") would come before our one-line
# error; our messages say the same thing in the user's terms.
try:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # builds without the logging utilities
    pass

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")


@dataclass
class Frame:
    index: int
    ts: float                      # capture time, seconds since the epoch
    gray: np.ndarray               # uint8 (h, w): detection and classification run on this
    color: np.ndarray | None = None  # BGR, possibly at another resolution than gray
    name: str = ""                 # file name for image sources


class Source(Protocol):
    name: str
    live: bool

    def read(self) -> Frame | None:
        """The next frame, or None when the source has ended."""

    def close(self) -> None: ...


class _LatestFrame:
    """Run ``grab`` in a thread; ``get`` returns the newest result it has not returned before.

    A failing grab is retried with exponential backoff (0.1 s up to 5 s) and logged once
    per change of state, so an unplugged camera neither ends the loop nor floods the log.
    """

    def __init__(self, grab: Callable[[], tuple[np.ndarray, np.ndarray | None] | None],
                 reopen: Callable[[], None] | None, name: str):
        self._grab, self._reopen, self.name = grab, reopen, name
        self._cond = threading.Condition()
        self._latest: tuple[int, float, np.ndarray, np.ndarray | None] | None = None
        self._seq = self._taken = 0
        self._stop = False
        self.failing = False
        self.reconnects = 0  # times frames came back after a failure (a metric of the web view)
        self._thread = threading.Thread(target=self._loop, name=f"capture-{name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        delay = 0.1
        while not self._stop:
            try:
                got = self._grab()
            except Exception as exc:  # a driver error is a transient fault here, not the end of the loop
                log.debug("grab from %s raised %r", self.name, exc)
                got = None
            if got is None:
                if not self.failing:
                    log.warning("camera %s: read failed, retrying with backoff", self.name)
                    self.failing = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                if self._reopen is not None:
                    try:
                        self._reopen()
                    except Exception as exc:
                        log.debug("reopen of %s failed: %r", self.name, exc)
                continue
            if self.failing:
                log.warning("camera %s: frames are back", self.name)
                self.failing, delay = False, 0.1
                self.reconnects += 1
            with self._cond:
                self._seq += 1
                self._latest = (self._seq, time.time(), got[0], got[1])
                self._cond.notify_all()

    def get(self, timeout: float) -> tuple[float, np.ndarray, np.ndarray | None] | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > self._taken or self._stop, timeout):
                return None
            if self._stop or self._latest is None:
                return None
            self._taken, ts, gray, color = self._latest
            return ts, gray, color

    @property
    def stopped(self) -> bool:
        return self._stop

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=2.0)


class FrameTimeout(Exception):
    """A live source had no new frame in time: a transient fault; the loop goes on (and stops feeding the watchdog)."""


class LiveSource:
    """A live capture: frames are the newest available; a missing frame is waited for, not fatal."""

    live = True

    def __init__(self, name: str, reader: _LatestFrame, on_close: Callable[[], None], frame_timeout: float = 1.0):
        self.name, self._reader, self._on_close = name, reader, on_close
        self.frame_timeout = frame_timeout
        self._index = 0

    def read(self) -> Frame | None:
        """The newest frame; raises :class:`FrameTimeout` if none arrives in ``frame_timeout`` seconds."""
        got = self._reader.get(self.frame_timeout)
        if got is None:
            if self._reader.stopped:
                return None
            raise FrameTimeout(f"no frame from {self.name} within {self.frame_timeout:.1f} s")
        ts, gray, color = got
        self._index += 1
        return Frame(self._index, ts, gray, color)

    @property
    def reconnects(self) -> int:
        return self._reader.reconnects

    def close(self) -> None:
        self._reader.stop()
        self._on_close()


def _open_capture(target: int | str, width: int | None, height: int | None) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(target)
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    return cap


def open_camera(index: int, width: int | None = None, height: int | None = None,
                need_color: bool = False) -> LiveSource:
    """An OpenCV camera (V4L2 on Linux) read in a newest-frame thread."""
    cap = _open_capture(index, width, height)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"camera {index} does not open (is it connected, and is the user in the 'video' group?)")
    ok, _ = cap.read()
    if not ok:
        cap.release()
        raise SourceError(f"camera {index} opened but delivers no frames")
    state = {"cap": cap}

    def grab():
        ok, image = state["cap"].read()
        if not ok:
            return None
        return to_gray(image), (image if need_color else None)

    def reopen():
        state["cap"].release()
        state["cap"] = _open_capture(index, width, height)

    reader = _LatestFrame(grab, reopen, f"camera{index}")
    return LiveSource(f"camera {index}", reader, lambda: state["cap"].release())


def open_stream(url: str, need_color: bool = False) -> LiveSource:
    """A network stream (RTSP/HTTP): live, so newest frame only."""
    cap = cv2.VideoCapture(url)
    if not cap.isOpened():
        raise SourceError(f"cannot open stream {url}")
    state = {"cap": cap}

    def grab():
        ok, image = state["cap"].read()
        return (to_gray(image), image if need_color else None) if ok else None

    def reopen():
        state["cap"].release()
        state["cap"] = cv2.VideoCapture(url)

    return LiveSource(url, _LatestFrame(grab, reopen, url), lambda: state["cap"].release())


LORES_WIDTH = 320  # the gray frame of a Pi camera: detection and classification need no more


def lores_size(main: tuple[int, int], width: int = LORES_WIDTH) -> tuple[int, int]:
    """The lores stream's ``(width, height)`` for a ``main`` size: ``width`` wide (no wider than main) and
    main's aspect ratio, both even (YUV420 halves each for its colour planes). The ISP scales lores from
    the same field of view as main, so the same aspect ratio keeps faces unstretched and boxes in place."""
    mw, mh = main
    w = max(2, min(width, mw) // 2 * 2)
    h = max(2, int(round(w * mh / mw / 2)) * 2)
    return w, h


def open_picamera(camera_num: int = 0, size: tuple[int, int] = (640, 480), lores: tuple[int, int] | None = None,
                  need_color: bool = False) -> LiveSource:
    """A Raspberry Pi camera via picamera2 (from apt: ``sudo apt install python3-picamera2``).

    The cheap path: the ISP produces a small YUV420 "lores" stream whose Y plane *is* the
    gray image, so no colour conversion or resize runs on the CPU. The full-size BGR "main"
    stream is copied out only when a display or a recording needs it. ``lores`` defaults to
    :func:`lores_size` of ``size``.
    """
    lores = lores or lores_size(size)
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise SourceError(f"picamera2 is not available ({exc}): on Raspberry Pi OS run "
                          f"'sudo apt install python3-picamera2' and create the venv with --system-site-packages") \
            from None
    try:
        cam = Picamera2(camera_num)
        config = cam.create_video_configuration(main={"size": size, "format": "RGB888"},
                                                lores={"size": lores, "format": "YUV420"})
        cam.configure(config)
        cam.start()
    except Exception as exc:  # libcamera raises RuntimeError/IndexError for a missing camera
        raise SourceError(f"Pi camera {camera_num} does not start: {exc}") from None
    lw, lh = lores

    def grab():
        if need_color:
            (main, yuv), _ = cam.capture_arrays(["main", "lores"])
            return np.ascontiguousarray(yuv[:lh, :lw]), main
        yuv = cam.capture_array("lores")
        return np.ascontiguousarray(yuv[:lh, :lw]), None

    def close():
        cam.stop()
        cam.close()

    return LiveSource(f"picamera {camera_num}", _LatestFrame(grab, None, f"picamera{camera_num}"), close)


class VideoFileSource:
    """A video file, read in order (every frame is processed)."""

    live = False

    def __init__(self, path: Path, need_color: bool = False):
        self.name = str(path)
        self.need_color = need_color
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise SourceError(f"cannot read video {path} (not a video, or a codec OpenCV lacks)")
        ok, first = self.cap.read()
        if not ok:
            self.cap.release()
            raise SourceError(f"cannot read video {path}: no frames could be decoded")
        self._pending: np.ndarray | None = first
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._index = 0

    def read(self) -> Frame | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self.cap.read()
            if not ok:
                return None
        self._index += 1
        return Frame(self._index, time.time(), to_gray(image), image if self.need_color else None)

    def close(self) -> None:
        self.cap.release()


class ImageSource:
    """One image or every image of a folder (sorted by name), each a frame."""

    live = False

    def __init__(self, paths: list[Path], name: str):
        self.name, self.paths = name, paths
        self._it: Iterator[tuple[int, Path]] = enumerate(paths, start=1)

    def read(self) -> Frame | None:
        for index, path in self._it:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f"cannot read image {path}")
            return Frame(index, time.time(), to_gray(image), image, name=path.name)
        return None

    def close(self) -> None:
        pass


def open_source(spec: str | int, width: int | None = None, height: int | None = None,
                need_color: bool = False) -> Source:
    """Open a camera index, ``picamera[:N]``, a stream URL, a video or image file, or an image folder."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isascii() and spec.isdigit()):
        return open_camera(int(spec), width, height, need_color)
    if spec == "picamera" or spec.startswith("picamera:"):
        number = spec.split(":", 1)[1] if ":" in spec else "0"
        if not (number.isascii() and number.isdigit()):
            raise SourceError(f"picamera:N needs a camera number (0, 1, ...), got {spec!r}")
        num = int(number)
        size = (width or 640, height or 480)
        return open_picamera(num, size=size, need_color=need_color)
    if spec.lower().startswith(STREAM_SCHEMES):
        return open_stream(spec, need_color)
    if "://" in spec:
        raise SourceError(f"unknown source scheme in {spec!r}: use a camera index, picamera, a file, "
                          f"a folder, or rtsp/http(s)/udp/tcp/rtmp URL")
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SourceError(f"no images in folder {path}")
        return ImageSource(images, str(path))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([path], str(path))
    return VideoFileSource(path, need_color)
