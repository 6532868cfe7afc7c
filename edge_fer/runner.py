"""The run loop: read, process, write, until the source ends, a limit is hit or a stop is asked.

A transient fault (a live camera that delivers no frame for a while, a sink that fails
once, a frame of a live source that detection or classification fails on) is logged and
the loop goes on; only the stop event, the limits, the end of a file source, a user-facing
:class:`~edge_fer.errors.EdgeFerError` or a frame of a file that cannot be processed end it
(a file's frames are the same on every run: that fault is a bug to see, not to skip).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .errors import EdgeFerError, SourceError
from .outputs import Sink
from .pipeline import FrameResult, Pipeline
from .sources import Frame, FrameTimeout, Source

log = logging.getLogger(__name__)


# While ``max_fps`` makes the loop sleep, ``on_wait`` runs at least this often (seconds): a third of the
# 30 s systemd watchdog of systemd/edge-fer.service would do; this leaves room for a shorter one.
WAIT_BEAT = 5.0


@dataclass
class RunSummary:
    frames: int = 0
    frames_with_faces: int = 0
    skipped: int = 0  # frames of a live source that processing failed on (logged, left out of ``frames``)
    seconds: float = 0.0
    stopped_by: str = "end of source"
    timings: list[dict[str, float]] = field(default_factory=list)  # per frame, when collected

    @property
    def mean_fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.mean_fps:.1f} fps), "
                f"faces in {self.frames_with_faces}, "
                + (f"{self.skipped} skipped (processing failed, logged), " if self.skipped else "")
                + f"stopped by {self.stopped_by}")


def run_loop(source: Source, pipeline: Pipeline, sinks: Sequence[Sink], *, max_frames: int | None = None,
             duration: float | None = None, stop: threading.Event | None = None, still: bool = False,
             collect_timings: bool = False, on_frame: Callable[[FrameResult], None] | None = None,
             warmup: int = 0, on_idle: Callable[[FrameTimeout], None] | None = None,
             max_fps: float | None = None, on_wait: Callable[[], object] | None = None,
             wait_beat: float = WAIT_BEAT) -> RunSummary:
    """Process frames until done. ``warmup`` frames are processed but left out of the summary's timings.

    ``on_frame`` runs after every processed frame (the service feeds systemd's watchdog there,
    so a source that delivers nothing stops the feeding); ``on_idle`` runs when a live source
    had no frame in time. ``max_fps`` caps the rate by sleeping (a stop ends the sleep at once);
    ``on_wait`` runs every ``wait_beat`` seconds of that sleep when it follows a processed frame
    (a read that timed out does not use up its turn: the next read is tried at once; after a
    skipped frame it is not called), so feeding the watchdog there as well keeps a service under a
    slow cap alive without ever feeding it for a camera that delivers nothing.
    A sink that raises anything but an :class:`EdgeFerError` is logged (once per kind of
    error) and the loop goes on. So does a frame of a live source that the pipeline raises on:
    it is skipped (counted in ``skipped``), the pipeline's tracking starts over, and the error is
    logged once per kind; on a file source the error ends the loop.
    """
    stop = stop or threading.Event()
    summary = RunSummary()
    started = time.perf_counter()
    interval = 0.0  # moving average of the time between frames: its inverse is the FPS (an average of
    last = started  # per-frame rates would overstate it whenever frames come unevenly)
    period = 1.0 / max_fps if max_fps else 0.0
    next_at = started
    sink_errors: set[tuple[str, str]] = set()
    frame_errors: set[str] = set()
    live = bool(getattr(source, "live", False))
    beat = False  # whether the rate-limit sleep may call on_wait: only right after a processed frame
    while not stop.is_set():
        if max_frames is not None and summary.frames >= max_frames:
            summary.stopped_by = f"--max-frames {max_frames}"
            break
        if duration is not None and time.perf_counter() - started >= duration:
            summary.stopped_by = f"--duration {duration:g}"
            break
        if period:
            wait = next_at - time.perf_counter()
            if wait > 0 and _sleep(stop, wait, on_wait if beat else None, wait_beat):
                summary.stopped_by = "signal"
                break
        t0 = time.perf_counter()
        try:
            frame = source.read()
        except FrameTimeout as exc:
            log.debug("%s", exc)
            if on_idle is not None:
                on_idle(exc)
            continue
        if frame is None:
            break
        if period:
            next_at = max(next_at, t0 - period) + period
        t1 = time.perf_counter()
        try:
            result = pipeline.process_still(frame) if still else pipeline.process(frame)
        except EdgeFerError:
            raise
        except Exception as exc:
            if not live:
                raise
            summary.skipped += 1
            kind = type(exc).__name__
            if kind not in frame_errors:  # once per kind: a fault on every frame must not flood the journal
                frame_errors.add(kind)
                log.error("processing frame %d of %s failed: %r; skipping it and going on (logged once)",
                          frame.index, source.name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            pipeline.reset()  # whatever tracked state led to it is not carried into the next frame
            beat = False
            continue
        now = time.perf_counter()
        if summary.frames == 0:  # no frame before it: under --max-fps its time from the start is only its
            interval = max(now - last, period)  # own processing, which would start the FPS at several times the cap
        else:
            interval = 0.9 * interval + 0.1 * (now - last)
        last = now
        result.fps = 1.0 / max(interval, 1e-6)
        for sink in sinks:
            try:
                sink.write(result, frame)
            except (EdgeFerError, BrokenPipeError):
                raise
            except Exception as exc:  # a transient fault of one output must not end the loop
                kind = (type(sink).__name__, type(exc).__name__)
                if kind not in sink_errors:
                    sink_errors.add(kind)
                    log.error("output %s failed: %r; going on (logged once)", kind[0], exc)
        t2 = time.perf_counter()
        result.timings["capture"] = t1 - t0
        result.timings["output"] = t2 - now
        result.timings["total"] = t2 - t0
        summary.frames += 1
        summary.frames_with_faces += bool(result.faces)
        if collect_timings and summary.frames > warmup:
            summary.timings.append(result.timings)
        beat = True
        if on_frame is not None:
            on_frame(result)
        if any(getattr(s, "quit", False) for s in sinks):
            summary.stopped_by = "window closed"
            break
    else:
        summary.stopped_by = "signal"
    summary.seconds = time.perf_counter() - started
    return summary


def _sleep(stop: threading.Event, seconds: float, beat: Callable[[], object] | None, every: float) -> bool:
    """Wait ``seconds`` (True at once when ``stop`` is set), calling ``beat`` every ``every`` seconds of it."""
    if beat is None:
        return stop.wait(seconds)
    end = time.perf_counter() + seconds
    while (left := end - time.perf_counter()) > 0:
        if stop.wait(min(left, every)):
            return True
        beat()
    return False


class LoopingSource:
    """A file source started over whenever it ends (``--loop``): frames keep counting up.

    ``reopen`` makes a fresh source (a new decoder each pass, so nothing accumulates); a
    source that ends without a single frame ends the loop instead of spinning.
    """

    def __init__(self, reopen: Callable[[], Source], first: Source | None = None):
        self._reopen = reopen
        self.inner = first if first is not None else reopen()
        self.name = self.inner.name
        self.live = False
        self.fps = getattr(self.inner, "fps", 0.0)
        self._index = 0
        self._in_pass = 0

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            if self._in_pass == 0:
                return None
            self.inner.close()
            try:
                self.inner = self._reopen()
            except SourceError:
                self.inner = _Ended()
                raise
            self._in_pass = 0
            frame = self.inner.read()
            if frame is None:
                return None
        self._in_pass += 1
        self._index += 1
        frame.index = self._index
        return frame

    def close(self) -> None:
        self.inner.close()


class _Ended:
    name = "ended"
    live = False

    def read(self) -> None:
        return None

    def close(self) -> None:
        pass
