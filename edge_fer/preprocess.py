"""The one preprocessing contract: face crop -> gray -> resize -> scale.

Training, conversion, evaluation and the device all go through these functions, so a
model sees the same pixels in every place. The scaling (``mean``/``std``) is stored in
each model's metadata; :func:`scale_pixels` applies it.

Where a detector gives eye positions, :func:`align_face` cuts the same box (same margin)
out of the frame turned about the box centre so the eyes lie level: FER2013's faces are
upright, and a tilted head otherwise reaches the classifier tilted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the full frame
Eyes = tuple[tuple[float, float], tuple[float, float]]  # the two eye centres in frame pixels


@dataclass(frozen=True)
class Scaling:
    """``float_pixel = (uint8_pixel - mean) / std``; the default maps 0..255 to 0..1."""

    mean: float = 0.0
    std: float = 255.0

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


DEFAULT_SCALING = Scaling()
DEFAULT_MARGIN = 0.0


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return an 8-bit single-channel view of a BGR, BGRA or already-gray image."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """Grow ``box`` by ``margin`` (a fraction of its size) on every side, clipped to the frame."""
    x, y, w, h = box
    dx, dy = int(round(w * margin)), int(round(h * margin))
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def crop_face(gray: np.ndarray, box: Box, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Cut one face out of a gray frame; the margin is a fraction of the box size."""
    height, width = gray.shape[:2]
    x, y, w, h = expand_box(box, margin, width, height)
    if w == 0 or h == 0:
        raise ValueError(f"face box {box} lies outside the {width}x{height} frame")
    return gray[y : y + h, x : x + w]


def eye_angle(eyes: Eyes) -> float:
    """The tilt of the line through the eyes, in degrees (positive: the face leans clockwise on screen)."""
    (ax, ay), (bx, by) = sorted(eyes)
    return float(np.degrees(np.arctan2(by - ay, bx - ax)))


def align_face(gray: np.ndarray, box: Box, eyes: Eyes, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """:func:`crop_face`'s crop, taken from the frame turned about the box centre so the eyes are level.

    Only the crop's pixels are computed (one affine warp into a box-sized image); pixels that
    come from outside the frame repeat its edge, as a border would.
    """
    height, width = gray.shape[:2]
    x, y, w, h = expand_box(box, margin, width, height)
    if w == 0 or h == 0:
        raise ValueError(f"face box {box} lies outside the {width}x{height} frame")
    bx, by, bw, bh = box
    rotation = cv2.getRotationMatrix2D((bx + bw / 2, by + bh / 2), eye_angle(eyes), 1.0)
    rotation[:, 2] -= (x, y)
    return cv2.warpAffine(gray, rotation, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize_face(face: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a gray face to ``(height, width)``; INTER_AREA shrinks without aliasing."""
    h, w = size
    if face.shape[:2] == (h, w):
        return face
    shrinking = face.shape[0] >= h and face.shape[1] >= w
    return cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def prepare_faces(
    gray: np.ndarray, boxes: Sequence[Box], size: tuple[int, int], margin: float = DEFAULT_MARGIN,
    eyes: Sequence[Eyes | None] | None = None,
) -> np.ndarray:
    """Crop and resize every box of a gray frame into a uint8 batch ``(n, h, w)``; boxes with eyes
    given are aligned (:func:`align_face`)."""
    batch = np.empty((len(boxes), size[0], size[1]), dtype=np.uint8)
    for i, box in enumerate(boxes):
        pair = eyes[i] if eyes is not None else None
        face = crop_face(gray, box, margin) if pair is None else align_face(gray, box, pair, margin)
        batch[i] = resize_face(face, size)
    return batch


def prepare_images(images: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Turn already-cropped faces (any size, gray or colour) into a uint8 batch ``(n, h, w)``."""
    if isinstance(images, np.ndarray) and images.ndim == 3 and images.shape[1:] == tuple(size):
        return images.astype(np.uint8, copy=False)
    batch = np.empty((len(images), size[0], size[1]), dtype=np.uint8)
    for i, image in enumerate(images):
        batch[i] = resize_face(to_gray(image), size)
    return batch


def zoom_faces(faces: np.ndarray, scale: float) -> np.ndarray:
    """A uint8 batch ``(n, h, w)`` zoomed about each face's centre by ``scale``, same size (below 1 zooms out,
    the edge pixels repeated): the extra framings of :class:`edge_fer.views.Views`. Bilinear in OpenCV's
    fixed-point arithmetic, so an x86 workstation and an Arm Pi give the same pixels."""
    n, h, w = faces.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, scale)
    out = np.empty_like(faces)
    for i in range(n):
        out[i] = cv2.warpAffine(np.ascontiguousarray(faces[i]), m, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    return out


def scale_pixels(pixels: np.ndarray, scaling: Scaling = DEFAULT_SCALING) -> np.ndarray:
    """Map uint8 pixels to the float range the model was trained on."""
    return (pixels.astype(np.float32) - np.float32(scaling.mean)) / np.float32(scaling.std)
