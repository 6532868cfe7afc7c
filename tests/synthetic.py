"""Synthetic labelled faces in every form the dataset loaders read: .npz, FER2013 CSV, image folders.

A face's class sets its brightness, so a tiny CNN learns the set in a few seconds and a
converted model can be compared with its Keras original on confident predictions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from edge_fer.labels import FER2013_LABELS

N_CLASSES = len(FER2013_LABELS)


def faces(n: int, seed: int = 0, size: tuple[int, int] = (48, 48)) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 faces ``(n, h, w)`` and labels; every class appears when ``n >= 7``."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % N_CLASSES)
    x = 20 + 30 * y[:, None, None] + rng.integers(0, 25, (n, *size))
    return x.astype(np.uint8), y.astype(np.int64)


def write_npz(path: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    """An .npz with ``{split}_x``/``{split}_y`` arrays, e.g. ``sizes={"train": 300, "val": 70}``."""
    arrays = {}
    for i, (split, n) in enumerate(sizes.items()):
        arrays[f"{split}_x"], arrays[f"{split}_y"] = faces(n, seed + i)
    np.savez(path, **arrays)
    return path


def write_csv(path: Path, sizes: dict[str, int], seed: int = 0,
              columns: tuple[str, ...] = ("emotion", "pixels", "Usage")) -> Path:
    """A FER2013-style CSV; ``sizes`` keys are ``Usage`` values (Training, PublicTest, PrivateTest)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, (usage, n) in enumerate(sizes.items()):
            x, y = faces(n, seed + i)
            for img, label in zip(x, y):
                writer.writerow([int(label), " ".join(map(str, img.ravel())), usage][: len(columns)])
    return path


def write_folder(root: Path, n: int, seed: int = 0, size: tuple[int, int] = (64, 64), color: bool = True) -> Path:
    """``root/<label>/<i>.png`` for ``n`` faces; colour and 64x64 by default, so loaders must convert."""
    x, y = faces(n, seed, size)
    for i, (img, label) in enumerate(zip(x, y)):
        class_dir = root / FER2013_LABELS[label]
        class_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(class_dir / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if color else img)
    return root
