#!/usr/bin/env python3
"""Write labelled faces as whole "photos": each face enlarged and placed on a bigger canvas, in class folders.

``edge-fer eval --detect`` needs photos in which the detector has to find the face; this turns a
cropped set (FER2013's test split) into one, so the detector's misses and the detector-box crop
are measured on faces whose labels are known. The canvas is mid-gray or blurred noise, and
each face lands at a random (seeded) place, so no fixed position helps the detector.

    python scripts/padded_faces.py --data ../shared/data/fer2013.npz --limit 1000 --out /tmp/padded
    edge-fer eval --detect --data /tmp/padded
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_fer.datasets import load_split
from edge_fer.errors import EdgeFerError, exit_status


def canvas(kind: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A ``(height, width)`` uint8 background: flat mid-gray, or noise blurred into soft blotches."""
    width, height = size
    if kind == "gray":
        return np.full((height, width), 128, np.uint8)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 6)
    noise = (noise - noise.mean()) / (noise.std() + 1e-6)
    return np.clip(128 + 40 * noise, 0, 255).astype(np.uint8)


def pad_face(face: np.ndarray, kind: str, size: tuple[int, int], face_px: int, rng: np.random.Generator) -> np.ndarray:
    """``face`` scaled to ``face_px`` square and pasted at a random place on a fresh canvas."""
    image = canvas(kind, size, rng)
    big = cv2.resize(face, (face_px, face_px), interpolation=cv2.INTER_CUBIC)
    x = int(rng.integers(0, size[0] - face_px + 1))
    y = int(rng.integers(0, size[1] - face_px + 1))
    image[y : y + face_px, x : x + face_px] = big
    return image


def run(args: argparse.Namespace) -> None:
    width, height = args.size
    if args.face_px < 1 or args.face_px > min(width, height):
        raise EdgeFerError(f"--face-px must lie in 1..{min(width, height)} for a {width}x{height} canvas")
    faces = load_split(args.data, args.split)
    n = min(args.limit or len(faces), len(faces))
    rng = np.random.default_rng(args.seed)
    for i in range(n):
        folder = args.out / faces.labels[int(faces.y[i])]
        folder.mkdir(parents=True, exist_ok=True)
        image = pad_face(faces.x[i], args.canvas, (width, height), args.face_px, rng)
        if not cv2.imwrite(str(folder / f"{args.split}_{i:05d}.png"), image):
            raise EdgeFerError(f"cannot write {folder}")
    print(f"wrote {n} {width}x{height} photos of {args.split} faces ({args.face_px} px, {args.canvas} canvas) "
          f"to {args.out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="labelled faces (.npz, FER2013 CSV or folder)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--limit", type=int, default=1000, help="the first N faces of the split (0: all)")
    p.add_argument("--out", type=Path, required=True, help="folder to write OUT/<label>/*.png into")
    p.add_argument("--canvas", choices=("noise", "gray"), default="noise")
    p.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    p.add_argument("--face-px", type=int, default=96, help="side of the enlarged face")
    p.add_argument("--seed", type=int, default=0)
    return exit_status(run, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
