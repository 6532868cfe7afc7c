"""The newest frame from the vision loop and, only while someone watches, its annotated JPEG.

The loop's side (:meth:`FrameHub.write`) stores a reference to the frame and its result and,
when a viewer waits, wakes the encoder: no copy, no drawing, no encoding happens in the loop.
A separate thread draws the boxes and encodes a JPEG of the newest frame, at most ``fps``
times per second and only while a stream or snapshot client is connected. Every viewer
takes the newest JPEG when it is ready for one, so a slow viewer skips frames instead of
holding anything back.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import cv2

from ..outputs import annotate, frame_image
from ..pipeline import FrameResult
from ..sources import Frame

log = logging.getLogger(__name__)


class FrameHub:
    """A sink for the loop that serves annotated JPEGs of the newest frame on demand."""

    def __init__(self, fps: float = 10.0, quality: int = 80):
        self.period = 1.0 / fps
        self.quality = quality
        self._latest: tuple[int, FrameResult, Frame] | None = None
        self._seq = 0                 # frames handed over by the loop
        self._cond = threading.Condition()
        self._watchers = 0            # stream clients and snapshot requests waiting now
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0            # JPEGs made so far; a viewer waits for a higher one
        self._jpeg_of = 0             # the frame the current JPEG shows
        self.shown: FrameResult | None = None  # the result drawn on the current JPEG
        self._closed = False
        self.encoded = 0
        self._failed: set[str] = set()  # kinds of encoding failure logged already (each once)
        self._thread = threading.Thread(target=self._encode_loop, name="http-jpeg", daemon=True)
        self._thread.start()

    # --- the loop's side ------------------------------------------------------------------------------------------

    def write(self, result: FrameResult, frame: Frame) -> None:
        """Keep a reference to the newest frame; wake the encoder only if someone watches."""
        self._seq += 1
        self._latest = (self._seq, result, frame)
        if self._watchers:
            with self._cond:
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(1.0)

    # --- the viewers' side ----------------------------------------------------------------------------------------

    @contextmanager
    def watching(self) -> Iterator[None]:
        """While inside, JPEGs are made (at most ``fps`` per second) of new frames."""
        with self._cond:
            self._watchers += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._watchers -= 1

    def next_jpeg(self, after: int, timeout: float) -> tuple[int, bytes] | None:
        """The newest JPEG once it is newer than number ``after``: (its number, bytes), or None on timeout/close."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._jpeg_seq > after, timeout)
            if self._closed or self._jpeg_seq <= after or self._jpeg is None:
                return None
            return self._jpeg_seq, self._jpeg

    def latest_jpeg(self) -> tuple[int, bytes] | None:
        """The newest JPEG made, (its number, bytes), however old; None before the first or once closed."""
        with self._cond:
            if self._closed or self._jpeg is None:
                return None
            return self._jpeg_seq, self._jpeg

    def snapshot(self, timeout: float) -> bytes | None:
        """A JPEG of the newest frame: the one made already if it shows that frame, else a fresh one."""
        with self._cond:
            if self._jpeg is not None and self._latest is not None and self._jpeg_of == self._latest[0]:
                return self._jpeg
            after = self._jpeg_seq
        with self.watching():
            got = self.next_jpeg(after, timeout)
        return got[1] if got else None

    # --- the encoder thread ---------------------------------------------------------------------------------------

    def _due(self) -> bool:
        return self._closed or (self._watchers > 0 and self._latest is not None and self._latest[0] != self._jpeg_of)

    def _encode_loop(self) -> None:
        next_at = 0.0
        while True:
            with self._cond:
                self._cond.wait_for(self._due)
                if self._closed:
                    return
                wait = next_at - time.monotonic()
                if wait > 0:  # the rate cap: a close ends the wait at once
                    self._cond.wait_for(lambda: self._closed, wait)
                    if self._closed:
                        return
                seq, result, frame = self._latest
            next_at = time.monotonic() + self.period
            jpeg = None
            try:
                image = annotate(frame_image(frame), result, frame.gray.shape[:2])
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if ok:
                    jpeg = buf.tobytes()
            except Exception as exc:  # one bad frame, whatever the failure, must not end the view
                self._encode_failed(seq, result, exc)
            with self._cond:
                if jpeg is not None:
                    self._jpeg, self._jpeg_of, self.shown = jpeg, seq, result
                    self._jpeg_seq += 1
                    self.encoded += 1
                else:
                    self._jpeg_of = seq  # skip this frame, wait for the next
                self._cond.notify_all()

    def _encode_failed(self, seq: int, result: FrameResult, exc: Exception) -> None:
        """Log a frame the encoder skips: each kind of failure once as a warning, again only at debug level."""
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        frame = getattr(result, "frame", seq)
        if kind in self._failed:
            log.debug("http: cannot encode frame %s: %s: %s", frame, type(exc).__name__, exc)
            return
        self._failed.add(kind)
        log.warning("http: cannot encode frame %s: %s: %s (frames that fail like this are skipped; "
                    "later ones are logged at debug level)", frame, type(exc).__name__, exc,
                    exc_info=not isinstance(exc, cv2.error))
