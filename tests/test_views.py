"""Test-time views (mirror and zooms, edge_fer.views): the same pixels and the same average everywhere."""

import json

import numpy as np
import pytest

from edge_fer.calibration import RawOutputs
from edge_fer.classifier import TFLiteClassifier, load_classifier
from edge_fer.errors import ModelError
from edge_fer.metadata import ModelMetadata, load_metadata
from edge_fer.preprocess import zoom_faces
from edge_fer.views import Views
from support import FIXTURES, copy_model

TINY = FIXTURES / "tiny_int8.tflite"


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def test_zoom_one_is_the_face_and_zoom_out_shrinks_it_about_the_centre():
    x = faces(3)
    np.testing.assert_array_equal(zoom_faces(x, 1.0), x)
    square = np.zeros((1, 48, 48), np.uint8)
    square[0, 16:32, 16:32] = 200  # a 16-pixel square centred on the face
    half = zoom_faces(square, 0.5)[0]
    rows = np.flatnonzero(half.max(axis=1) == 200)
    assert (rows.min(), rows.max()) == (20, 27)  # 8 pixels, still centred (23.5 +- 4)
    np.testing.assert_array_equal(half, half.T)  # a square stays a square, no drift along either axis
    flat = np.full((2, 48, 48), 90, np.uint8)
    np.testing.assert_array_equal(zoom_faces(flat, 0.8), flat)  # the border repeats the edge, no black frame


def test_expand_then_fold_averages_each_face_over_its_views():
    x = faces(5)
    views = Views((1.0, 0.9), mirror=True)
    batch = views.expand(x)
    assert views.count == 4 and batch.shape == (20, 48, 48)
    np.testing.assert_array_equal(batch[:5], x)
    np.testing.assert_array_equal(batch[5:10], zoom_faces(x, 0.9))
    np.testing.assert_array_equal(batch[10:15], x[:, :, ::-1])
    np.testing.assert_array_equal(batch[15:], zoom_faces(x, 0.9)[:, :, ::-1])
    rows = np.arange(20 * 3, dtype=np.float64).reshape(20, 3)
    np.testing.assert_allclose(views.fold(rows), (rows[:5] + rows[5:10] + rows[10:15] + rows[15:]) / 4)
    assert Views().expand(x) is x and Views().count == 1
    np.testing.assert_array_equal(Views((0.9,)).expand(x), zoom_faces(x, 0.9))  # one view, still zoomed
    assert views.describe() == "zoom 1/0.9, mirrored (4 views)"


def test_the_classifier_averages_its_views_in_one_batch(tmp_path):
    model = copy_model(TINY, tmp_path, flip_average=True, view_scales=[1.0, 0.95])
    clf = load_classifier(model)
    x = faces(6, seed=1)
    single = load_classifier(TINY)
    expected = np.mean([single.predict(v) for v in (x, zoom_faces(x, 0.95), x[:, :, ::-1],
                                                    zoom_faces(x, 0.95)[:, :, ::-1])], axis=0)
    np.testing.assert_allclose(clf.predict(x), expected, atol=1e-6)
    np.testing.assert_allclose(clf.predict(x[:, :, ::-1]), clf.predict(x), atol=1e-6)  # mirror-symmetric


def test_the_temperature_fit_sees_the_same_views(tmp_path):
    model = copy_model(TINY, tmp_path, flip_average=True, view_scales=[1.0, 0.9], output="probabilities")
    clf = TFLiteClassifier(model)
    x = faces(11, seed=2)
    np.testing.assert_allclose(RawOutputs.of(clf, x, batch=5).probs(1.0), clf.predict(x), atol=1e-6)


def test_views_travel_in_the_metadata_and_bad_ones_are_one_clear_error(tmp_path):
    meta = ModelMetadata(flip_average=True, view_scales=(1.0, 0.95))
    again = ModelMetadata.from_dict(json.loads(json.dumps(meta.to_dict())))
    assert again.views == Views((1.0, 0.95), True)
    assert load_metadata(TINY).views == Views()  # older metadata: one view
    for bad in ([], [1.0, 1.0], [0.1], "1", [None]):
        with pytest.raises(ModelError, match="'view_scales' must list distinct zooms") as err:
            ModelMetadata.from_dict({**meta.to_dict(), "view_scales": bad}, "m.json")
        assert "\n" not in str(err.value)
