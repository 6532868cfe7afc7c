"""``edge-fer bench``: per-stage latency and end-to-end FPS, one row per model and thread count.

Each configuration runs the real loop (source -> detect -> preprocess -> classify ->
output to nowhere) over the same frames; warm-up frames are left out. ms/face is measured
separately as the median of single-face invokes, the number that matters on a Pi.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .classifier_api import Classifier
from .errors import EdgeFerError, SourceError
from .pipeline import STAGES
from .sources import Frame, FrameTimeout, Source
from .preprocess import to_gray

SAMPLE_IMAGE = Path(__file__).resolve().parent / "samples" / "astronaut.jpg"


@dataclass
class BenchRow:
    model: str
    backend: str
    size_mb: float
    threads: int | None
    ms_per_face: float
    fps: float
    frames: int
    frames_with_faces: int
    stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> p50/p90/p99
    status: str = "ok"

    def to_dict(self) -> dict:
        return asdict(self)


def percentiles(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0}
    ms = np.array(values_s) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 3) for q in (50, 90, 99)}


def ms_per_face(classifier: Classifier, repeats: int = 300, face: np.ndarray | None = None,
                warmup: int = 20) -> float:
    """Median latency of a one-face ``predict`` (LUT, invoke, dequantize), after warm-up."""
    if face is None:
        face = np.random.default_rng(0).integers(0, 256, (1, *classifier.input_size), dtype=np.uint8)
    for _ in range(warmup):
        classifier.predict(face)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        classifier.predict(face)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def drifting_sample(count: int, size: tuple[int, int], *, fill: int, scale: float, amplitude: tuple[int, int],
                    period: tuple[float, float], first: int = 0) -> Iterator[np.ndarray]:
    """BGR frames of the shipped sample photo drifting over a gray canvas: a real face that moves,
    for benchmarks, tests and checks on machines without a camera or media.

    ``size`` is (width, height); the photo fills ``scale`` of it; frame ``i`` is shifted by
    ``amplitude * (sin(i / period), cos(i / period))`` pixels from the centre.
    """
    image = cv2.imread(str(SAMPLE_IMAGE))
    w, h = size
    s = min(h / image.shape[0], w / image.shape[1]) * scale
    small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    for i in range(first, first + count):
        canvas = np.full((h, w, 3), fill, np.uint8)
        dx = (w - sw) // 2 + int(amplitude[0] * np.sin(i / period[0]))
        dy = (h - sh) // 2 + int(amplitude[1] * np.cos(i / period[1]))
        canvas[dy : dy + sh, dx : dx + sw] = small
        yield canvas


def write_sample_video(path: str | Path, frames: int = 40, size: tuple[int, int] = (480, 360),
                       fps: float = 15.0) -> Path:
    """A real MP4 (mp4v) of :func:`drifting_sample` frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for canvas in drifting_sample(frames, size, fill=80, scale=0.85, amplitude=(8, 5), period=(6, 7)):
        writer.write(canvas)
    writer.release()
    return Path(path)


class SyntheticSource:
    """Frames made from the shipped sample photo, shifted a little each frame, for machines without media."""

    live = False

    def __init__(self, frames: int = 300, size: tuple[int, int] = (640, 480), need_color: bool = False):
        self.need_color = need_color  # keep the BGR frame, as a camera or video source does when asked
        self._frames = enumerate(drifting_sample(frames, size, fill=90, scale=0.9, amplitude=(10, 6),
                                                 period=(15, 20), first=1), start=1)
        self.name = f"synthetic ({SAMPLE_IMAGE.name}, {size[0]}x{size[1]})"

    def read(self) -> Frame | None:
        for index, frame in self._frames:
            return Frame(index, time.time(), to_gray(frame), frame if self.need_color else None)
        return None

    def close(self) -> None:
        pass


class _Buffered:
    """Replays frames decoded once, so every configuration sees the same frames and decode cost is
    still measured (it is timed once and added back as the capture stage)."""

    live = False

    def __init__(self, frames: list[Frame], capture_s: list[float], name: str):
        self.frames, self.capture_s, self.name, self.i = frames, capture_s, name, 0

    def read(self) -> Frame | None:
        if self.i >= len(self.frames):
            return None
        self.i += 1
        return self.frames[self.i - 1]

    def close(self) -> None:
        pass


def decode_all(source: Source, limit: int | None, patience: int = 5) -> _Buffered:
    """Read up to ``limit`` frames of ``source`` (then close it), timing each read.

    A live source that has no frame in time (:class:`FrameTimeout`) is asked again, as the run
    loop does; ``patience`` such misses in a row are one SourceError, since a stalling source
    cannot be benchmarked. A frame read after a miss is timed from its own read.
    """
    frames, capture, misses = [], [], 0
    try:
        while limit is None or len(frames) < limit:
            t = time.perf_counter()
            try:
                frame = source.read()
            except FrameTimeout as exc:
                misses += 1
                if misses >= patience:
                    raise SourceError(f"{exc} ({misses} times in a row, after {len(frames)} frames): "
                                      f"bench needs a source that delivers frames") from None
                continue
            misses = 0
            if frame is None:
                break
            capture.append(time.perf_counter() - t)
            frames.append(frame)
    finally:
        source.close()
    return _Buffered(frames, capture, source.name)


def format_table(rows: list[BenchRow]) -> str:
    mw = max([28, *(len(r.model) for r in rows)])
    head = f"{'model':<{mw}} {'backend':<15} {'size MB':>7} {'threads':>7} {'ms/face':>8} {'p50 ms':>7} " \
           f"{'p99 ms':>7} {'FPS':>7} {'faces':>9}  status"
    out = [head, "-" * len(head)]
    for r in rows:
        total = r.stages_ms.get("total", {})
        out.append(f"{r.model:<{mw}} {r.backend:<15} {r.size_mb:7.2f} {str(r.threads or 'auto'):>7} "
                   f"{r.ms_per_face:8.3f} {total.get('p50', 0):7.2f} {total.get('p99', 0):7.2f} {r.fps:7.1f} "
                   f"{r.frames_with_faces:>4}/{r.frames:<4}  {r.status}")
    return "\n".join(out)


def format_stages(row: BenchRow) -> str:
    lines = [f"stages for {row.model} (threads {row.threads or 'auto'}), ms:  {'p50':>7} {'p90':>7} {'p99':>7}"]
    for stage in (*STAGES, "total"):
        if stage in row.stages_ms:
            p = row.stages_ms[stage]
            lines.append(f"  {stage:<12} {'':>27}{p['p50']:7.3f} {p['p90']:7.3f} {p['p99']:7.3f}")
    return "\n".join(lines)


def bench_one(make_run: Callable[[], tuple[Classifier, Callable]], buffered: _Buffered, label: str,
              threads: int | None, warmup: int) -> BenchRow:
    """Run one configuration over the buffered frames. ``make_run`` builds (classifier, run function);
    ``run(source, on_frame)`` runs the loop, calling ``on_frame`` with each frame's result. The row's
    figures, its frame counts included, leave the ``warmup`` frames out."""
    try:
        classifier, run = make_run()
    except EdgeFerError as exc:
        return BenchRow(label, "-", 0.0, threads, 0.0, 0.0, 0, 0, status=f"error: {exc}")
    buffered.i = 0
    with_faces: list[bool] = []  # per frame, warm-up included
    summary = run(buffered, lambda result: with_faces.append(bool(result.faces)))
    timings = summary.timings
    capture = buffered.capture_s[warmup: warmup + len(timings)]
    for t, c in zip(timings, capture):
        t["total"] += c - t.get("capture", 0.0)
        t["capture"] = c
    stages = {s: percentiles([t[s] for t in timings if s in t]) for s in (*STAGES, "total")}
    total_s = sum(t["total"] for t in timings)
    size = getattr(classifier, "size_bytes", 0) / 1e6
    return BenchRow(label, classifier.backend, round(size, 3), threads, round(ms_per_face(classifier), 3),
                    round(len(timings) / total_s, 1) if total_s else 0.0, len(with_faces[warmup:]),
                    sum(with_faces[warmup:]), stages)
