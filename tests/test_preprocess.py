import numpy as np
import pytest

from edge_fer.labels import FER2013_LABELS
from edge_fer.preprocess import Scaling, crop_face, expand_box, prepare_faces, prepare_images, scale_pixels, to_gray


def test_labels_are_fer2013_order():
    assert FER2013_LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_expand_box_clips_to_frame():
    assert expand_box((10, 10, 20, 20), 0.5, 100, 100) == (0, 0, 40, 40)
    assert expand_box((90, 90, 20, 20), 0.0, 100, 100) == (90, 90, 10, 10)


def test_crop_outside_frame_is_an_error():
    with pytest.raises(ValueError):
        crop_face(np.zeros((10, 10), np.uint8), (20, 20, 5, 5))


def test_prepare_faces_crops_and_resizes():
    gray = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    batch = prepare_faces(gray, [(0, 0, 96, 96), (100, 10, 50, 60)], (48, 48))
    assert batch.shape == (2, 48, 48) and batch.dtype == np.uint8
    assert batch[0, 0, 0] < batch[0, 0, -1]  # orientation kept


def test_prepare_images_accepts_colour_and_gray():
    colour = np.zeros((60, 60, 3), np.uint8)
    gray = np.full((48, 48), 7, np.uint8)
    batch = prepare_images([colour, gray], (48, 48))
    assert batch.shape == (2, 48, 48) and batch[1, 0, 0] == 7
    assert to_gray(np.zeros((5, 5, 4), np.uint8)).shape == (5, 5)


def test_scale_pixels_default_and_custom():
    px = np.array([0, 255], np.uint8)
    np.testing.assert_allclose(scale_pixels(px), [0.0, 1.0])
    np.testing.assert_allclose(scale_pixels(px, Scaling(127.5, 127.5)), [-1.0, 1.0])
