#!/usr/bin/env python3
"""Frames per second of edge-fer against the peer package ``fer`` on the same decoded frames.

Both are timed on frames decoded once up front, so only detection + classification is compared:
fer's ``FER().detect_emotions`` (Haar on the full frame + its quantized TFLite mini-Xception, through
``tf.lite.Interpreter``) and edge-fer's ``Pipeline.process`` with its defaults (``--detector`` picks
another face detector).

    pip install --no-deps fer==25.10.3 && pip install tensorflow-cpu   # fer's own deps minus torch/moviepy
    python scripts/compare_fer.py ../shared/media/video_woman_talking.mp4
"""

from __future__ import annotations

import argparse
import json
import time

import cv2


def frames_of(path: str) -> list:
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


def time_fer(frames: list) -> tuple[float, int]:
    from fer.fer import FER

    detector = FER()  # Haar cascade + TFLite model, the package's defaults
    detector.detect_emotions(frames[0])
    found = 0
    t = time.perf_counter()
    for frame in frames:
        found += bool(detector.detect_emotions(frame))
    return len(frames) / (time.perf_counter() - t), found


def time_edge_fer(frames: list, detector: str | None) -> tuple[float, int]:
    from edge_fer.build import make_classifier, make_pipeline
    from edge_fer.config import resolve
    from edge_fer.preprocess import to_gray
    from edge_fer.sources import Frame

    settings = resolve({"detector": detector} if detector else {}, {}, read_secrets=False)
    pipeline = make_pipeline(settings, make_classifier(settings.classifier))
    color = pipeline.detector.wants_color  # as a source gives frames to this detector
    found = 0
    t = time.perf_counter()
    for i, image in enumerate(frames, start=1):
        found += bool(pipeline.process(Frame(i, 0.0, to_gray(image), image if color else None)).faces)
    return len(frames) / (time.perf_counter() - t), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--detector", default=None, help="edge-fer's face detector (default: its default)")
    args = parser.parse_args()
    frames = frames_of(args.video)
    fps_e, found_e = time_edge_fer(frames, args.detector)
    fps_f, found_f = time_fer(frames)
    print(f"{'package':<10} {'FPS':>8} {'frames with a face':>20}")
    print(f"{'fer':<10} {fps_f:8.1f} {found_f:>13}/{len(frames)}")
    print(f"{'edge-fer':<10} {fps_e:8.1f} {found_e:>13}/{len(frames)}")
    print(f"speed-up {fps_e / fps_f:.1f}x")
    print(json.dumps({"video": args.video, "frames": len(frames), "fer_fps": round(fps_f, 1),
                      "edge_fer_fps": round(fps_e, 1), "fer_faces": found_f, "edge_fer_faces": found_e}))


if __name__ == "__main__":
    main()
