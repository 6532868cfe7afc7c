"""Labelled face sets in the three forms users have: ``.npz``, the FER2013 CSV, an image folder.

Used by ``edge-fer eval`` on the device and by the trainer on the workstation, so both read
data the same way. Only numpy and OpenCV are needed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError
from .labels import FER2013_LABELS
from .preprocess import prepare_images

SPLITS = ("train", "val", "test")
# FER2013's ``Usage`` column and the folder names people use, mapped to our split names.
CSV_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FOLDER_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "publictest": "val",
    "test": "test", "privatetest": "test",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass
class LabeledFaces:
    """Faces as a uint8 array ``(n, h, w)`` with integer labels indexing ``labels``."""

    x: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...] = FER2013_LABELS

    def __len__(self) -> int:
        return int(self.y.shape[0])


def load_split(path: str | Path, split: str, size: tuple[int, int] = (48, 48),
               labels: tuple[str, ...] = FER2013_LABELS) -> LabeledFaces:
    """Load one split (``train``, ``val`` or ``test``) of a dataset in any supported form."""
    path = Path(path)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    if path.is_dir():
        faces = _load_folder(path, split, size, labels)
    elif path.suffix.lower() == ".npz":
        faces = _load_npz(path, split, labels)
    elif path.suffix.lower() == ".csv":
        faces = _load_csv(path, split, labels)
    else:
        raise DataError(f"unsupported dataset {path}: expected a .npz, a FER2013 .csv or a folder")
    if len(faces) == 0:
        raise DataError(f"split {split!r} of {path} is empty")
    if faces.y.min() < 0 or faces.y.max() >= len(labels):
        raise DataError(f"labels in {path} ({split}) must lie in 0..{len(labels) - 1}, "
                        f"found {int(faces.y.min())}..{int(faces.y.max())}")
    if not path.is_dir():  # class numbers, not names: FER2013's numbering, by name, in the order asked for
        faces.y = _renumbered(faces.y, labels)
    if faces.x.shape[1:] != tuple(size):
        faces.x = prepare_images(faces.x, size)
    return faces


def _renumbered(y: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """FER2013's CSV and .npz number the classes in FER2013_LABELS' order; a model that names the same seven
    classes in another order (alphabetical, as Keras' folder loader makes them) gets each face's class by name,
    so ``eval`` scores it against the right one. Any other label set is taken as numbered in its own order."""
    if tuple(labels) == FER2013_LABELS or sorted(labels) != sorted(FER2013_LABELS):
        return y
    return np.array([labels.index(name) for name in FER2013_LABELS], np.int64)[y]


def available_splits(path: str | Path) -> list[str]:
    """The splits a dataset holds, in train/val/test order."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    if path.is_dir():
        found = {FOLDER_ALIASES[p.name.lower()] for p in path.iterdir()
                 if p.is_dir() and p.name.lower() in FOLDER_ALIASES}
        return [s for s in SPLITS if s in found]
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path) as data:
                return [s for s in SPLITS if f"{s}_x" in data.files]
        except Exception as exc:  # zipfile/pickle errors: say what is wrong with the file
            raise DataError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        with _open_csv(path) as (rows, _):
            found = {CSV_USAGE.get(row.get("Usage", ""), "") for row in rows}
        return [s for s in SPLITS if s in found]
    return []


def _load_npz(path: Path, split: str, labels: tuple[str, ...]) -> LabeledFaces:
    try:
        data = np.load(path)
    except Exception as exc:  # zipfile/pickle errors: say what is wrong with the file
        raise DataError(f"cannot read {path}: {exc}") from None
    with data:
        for kx, ky in ((f"{split}_x", f"{split}_y"), ("x", "y")):
            if kx in data.files and ky in data.files:
                x, y = data[kx], data[ky]
                break
        else:
            raise DataError(f"{path} has no {split}_x/{split}_y (or x/y) arrays; it has: {', '.join(data.files)}")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if y.ndim == 2 and y.shape[1] == 1:  # a column of class indices
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[1] == len(labels) and len(y):  # one-hot (or votes): the largest is the class
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool) or not (np.nan_to_num(y).max(1) > 0).all():
            raise DataError(f"{path}: y of shape {y.shape} is read as one-hot labels, but some rows mark no class")
        y = y.argmax(1)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: expected x of shape (n, h, w) and y of shape (n,), (n, 1) or one-hot "
                        f"(n, {len(labels)}), got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.number) or (len(y) and not np.array_equal(y, np.round(y))):
        raise DataError(f"{path}: y must hold whole class numbers 0..{len(labels) - 1} (dtype {y.dtype})")
    if x.dtype != np.uint8:
        x = np.clip(x * 255.0 if x.max() <= 1.0 else x, 0, 255).astype(np.uint8)
    return LabeledFaces(x, y.astype(np.int64), labels)


class _open_csv:
    """Context manager yielding (DictReader, file) after checking the FER2013 header."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        try:
            self.file = open(self.path, newline="")
        except OSError as exc:
            raise DataError(f"cannot read {self.path}: {exc.strerror}") from None
        reader = csv.DictReader(self.file)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or [])
        if missing:
            self.file.close()
            raise DataError(f"{self.path} is not a FER2013 CSV: missing column(s) {', '.join(sorted(missing))} "
                            f"(expected emotion,pixels,Usage)")
        return reader, self.file

    def __exit__(self, *exc):
        self.file.close()


def _load_csv(path: Path, split: str, labels: tuple[str, ...]) -> LabeledFaces:
    xs, ys = [], []
    with _open_csv(path) as (reader, _):
        has_usage = "Usage" in (reader.fieldnames or [])
        for line, row in enumerate(reader, start=2):
            usage = CSV_USAGE.get(row["Usage"]) if has_usage else split
            if usage != split:
                continue
            try:
                pixels = np.array(row["pixels"].split(), dtype=np.uint8)
                side = int(round(len(pixels) ** 0.5))
                if side * side != len(pixels):
                    raise ValueError(f"{len(pixels)} pixels is not a square image")
                xs.append(pixels.reshape(side, side))
                ys.append(int(row["emotion"]))
            except ValueError as exc:
                raise DataError(f"{path}:{line}: bad row ({exc})") from None
    if not xs:
        return LabeledFaces(np.zeros((0, 48, 48), np.uint8), np.zeros(0, np.int64), labels)
    return LabeledFaces(np.stack(xs), np.array(ys, dtype=np.int64), labels)


def _load_folder(path: Path, split: str, size: tuple[int, int], labels: tuple[str, ...]) -> LabeledFaces:
    xs, ys = [], []
    for file, label in labeled_files(path, split, labels):
        image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DataError(f"cannot read image {file}")
        xs.append(image)
        ys.append(label)
    x = prepare_images(xs, size) if xs else np.zeros((0, *size), np.uint8)
    return LabeledFaces(x, np.array(ys, dtype=np.int64), labels)


def labeled_files(path: Path, split: str, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    """``(image file, label index)`` of a folder of class folders (``<label>/*.jpg``), or of its split folder."""
    split_dirs = [p for p in path.iterdir() if p.is_dir() and FOLDER_ALIASES.get(p.name.lower()) == split]
    has_split_dirs = any(p.is_dir() and p.name.lower() in FOLDER_ALIASES for p in path.iterdir())
    if split_dirs:
        root = split_dirs[0]
    elif not has_split_dirs:
        root = path  # a bare <class>/*.png folder is one split
    else:
        raise DataError(f"{path} has no {split!r} folder")
    index = {name.lower(): i for i, name in enumerate(labels)}
    files = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if class_dir.name.lower() not in index:
            raise DataError(f"{class_dir}: folder name is not a label ({', '.join(labels)})")
        files += [(file, index[class_dir.name.lower()]) for file in sorted(class_dir.iterdir())
                  if file.suffix.lower() in IMAGE_SUFFIXES]
    return files
