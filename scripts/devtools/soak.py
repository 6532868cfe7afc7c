"""Soak test: run the service path (`edge-fer run --loop`) for many frames; check memory and latency stay flat.

    python scripts/soak.py                                    # 20,000 frames of ../shared/media/video_woman_talking.mp4
    python scripts/soak.py --video clip.mp4 --frames 5000     # or a video made from the shipped sample when absent
    python scripts/soak.py --mqtt-host 127.0.0.1 --mqtt-port 1883   # publish to a broker on the way

It builds the same :class:`edge_fer.service.Service` that ``edge-fer run --source VIDEO --loop
--output none`` builds (default detector settings) and records, per frame, the loop's latency
(capture + detect + classify + outputs) and the process CPU time (which, unlike the latency,
other load on the machine does not inflate), and every ``--sample`` frames the resident set
size (``/proc/self/statm``). Start figures are taken after ``--warmup`` frames (allocator
pools and caches fill first); latency is compared over the first and the last ``--window``
frames (p50: frames between detections; p90: frames with a detection). Prints one JSON line;
exit status 1 when RSS grew by more than ``--max-rss-growth-mb`` or the end p50 or p90
latency is more than ``--max-latency-ratio`` times the start one; a user mistake (a video that
does not open, too few frames for the windows) is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from edge_fer.errors import EdgeFerError, exit_status

ROOT = Path(__file__).resolve().parents[2]

SHARED_VIDEO = ROOT.parent / "shared" / "media" / "video_woman_talking.mp4"


def rss_mb() -> float:
    """The current resident set size in MiB (Linux); the peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_video(folder: Path, frames: int = 120) -> Path:
    """A 640x480 clip made from the shipped sample photo (the face drifts), for machines without media."""
    import cv2
    import numpy as np

    image = cv2.imread(str(ROOT / "edge_fer" / "samples" / "astronaut.jpg"))
    w, h, side = 640, 480, 360
    face = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    path = folder / "soak_sample.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (w, h))
    for i in range(frames):
        canvas = np.full((h, w, 3), 90, np.uint8)
        x = 60 + (i % 60) * 2
        canvas[60:60 + side, x:x + side] = face
        writer.write(canvas)
    writer.release()
    return path


def soak(video: Path, frames: int = 20000, warmup: int = 500, window: int = 1000, sample: int = 250,
         extra: dict | None = None) -> dict:
    """Run ``frames`` frames of ``video`` in a loop through the service; the figures as a dict."""
    if frames < warmup + 2 * window:  # said before the run, not after it
        raise EdgeFerError(f"{frames} frames are too few: need at least warmup + 2 * window = {warmup + 2 * window}")
    from edge_fer.config import resolve
    from edge_fer.service import Service

    settings = resolve({"source": str(video), "loop": True, "output": "none", "max_frames": frames, **(extra or {})},
                       environ={})
    import numpy as np

    # Preallocated, so the measurement itself does not grow the process (Python lists of floats would).
    latencies = np.zeros(frames)
    cpu = np.zeros(frames)  # process CPU seconds per frame: the work done, whatever else the machine runs
    rss: list[tuple[int, float]] = [(0, rss_mb())] + [(0, 0.0)] * (frames // sample + 2)
    state = {"n": 0, "cpu": time.process_time(), "samples": 1}

    class Probe(Service):
        def _on_frame(self, result) -> None:
            super()._on_frame(result)
            n = state["n"]
            if n >= frames:
                return
            now = time.process_time()
            latencies[n] = result.timings.get("total", 0.0)
            cpu[n] = now - state["cpu"]
            state["cpu"] = now
            state["n"] = n = n + 1
            if n % sample == 0 or n == warmup or n == frames:
                rss[state["samples"]] = (n, rss_mb())
                state["samples"] += 1

    t0 = time.perf_counter()
    summary, extra_lines = Probe(settings).run()
    seconds = time.perf_counter() - t0
    n = state["n"]
    latencies, cpu, rss = latencies[:n].tolist(), cpu[:n].tolist(), rss[:state["samples"]]
    if n < warmup + 2 * window:
        raise EdgeFerError(f"only {n} frames ran: need at least warmup + 2 * window = {warmup + 2 * window}")

    def median_ms(values: list[float]) -> float:
        s = sorted(values)
        return round(1000 * s[len(s) // 2], 3)

    def p90_ms(values: list[float]) -> float:
        s = sorted(values)
        return round(1000 * s[int(len(s) * 0.9)], 3)

    start = latencies[warmup:warmup + window]
    end = latencies[-window:]
    rss_start = next(mb for n, mb in rss if n >= warmup)
    rss_end = rss[-1][1]
    return {
        "video": str(video), "frames": summary.frames, "seconds": round(seconds, 1),
        "fps": round(summary.frames / seconds, 1), "faces_in": summary.frames_with_faces,
        "rss_mb": {"before": round(rss[0][1], 1), "start": round(rss_start, 1), "end": round(rss_end, 1),
                   "growth": round(rss_end - rss_start, 2), "max": round(max(mb for _, mb in rss), 1)},
        "latency_ms": {"start_p50": median_ms(start), "end_p50": median_ms(end),
                       "start_p90": p90_ms(start), "end_p90": p90_ms(end),
                       "start_mean": round(1000 * sum(start) / len(start), 3),
                       "end_mean": round(1000 * sum(end) / len(end), 3),
                       "ratio_p50": round(median_ms(end) / max(median_ms(start), 1e-6), 3),
                       "ratio_p90": round(p90_ms(end) / max(p90_ms(start), 1e-6), 3)},
        "cpu_ms_per_frame": {"start_p50": median_ms(cpu[warmup:warmup + window]), "end_p50": median_ms(cpu[-window:]),
                             "start_mean": round(1000 * sum(cpu[warmup:warmup + window]) / window, 3),
                             "end_mean": round(1000 * sum(cpu[-window:]) / window, 3)},
        "window": window, "warmup": warmup, "summary": [summary.line(), *extra_lines],
        "rss_samples": [(n, round(mb, 1)) for n, mb in rss],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/soak.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=None, help=f"default: {SHARED_VIDEO} if present, else a sample clip")
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=250, help="measure RSS every N frames")
    ap.add_argument("--max-rss-growth-mb", type=float, default=10.0)
    ap.add_argument("--max-latency-ratio", type=float, default=1.5)
    ap.add_argument("--mqtt-host", default=None)
    ap.add_argument("--mqtt-port", type=int, default=None)
    ap.add_argument("--samples", action="store_true", help="include every RSS sample in the output")
    args = ap.parse_args(argv)
    verdict = {"status": 0}
    return exit_status(run, args, verdict) or verdict["status"]


def run(args: argparse.Namespace, verdict: dict) -> None:
    """The soak and its JSON line; ``verdict["status"]`` becomes 1 when memory or latency grew too much."""
    extra = {}
    if args.mqtt_host:
        extra.update(mqtt_host=args.mqtt_host, device_id="soak")
        if args.mqtt_port:
            extra["mqtt_port"] = args.mqtt_port
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or (SHARED_VIDEO if SHARED_VIDEO.exists() else sample_video(Path(tmp)))
        result = soak(video, args.frames, args.warmup, args.window, args.sample, extra)
    lat = result["latency_ms"]
    ok = (result["rss_mb"]["growth"] <= args.max_rss_growth_mb
          and lat["ratio_p50"] <= args.max_latency_ratio and lat["ratio_p90"] <= args.max_latency_ratio)
    result["verdict"] = "pass" if ok else "FAIL"
    if not args.samples:
        result.pop("rss_samples")
    print(json.dumps(result))
    verdict["status"] = 0 if ok else 1
