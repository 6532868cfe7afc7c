"""The TFLite classifier on real models: the shipped one and the small fixtures made by convert."""

import json
import shutil

import numpy as np
import pytest

from edge_fer.classifier import DEFAULT_MODEL, TFLiteClassifier, load_classifier
from edge_fer.errors import ModelError
from edge_fer.interpreter import find_backend, make_interpreter
from edge_fer.metadata import ModelMetadata, load_metadata, metadata_path, save_metadata
from support import FIXTURES, SHIPPED_NETWORK

MODELS = [DEFAULT_MODEL, SHIPPED_NETWORK, FIXTURES / "tiny_int8.tflite", FIXTURES / "tiny_float32.tflite"]


@pytest.fixture(params=list(dict.fromkeys(MODELS)), ids=lambda p: p.name)
def model_path(request):
    return request.param


def test_backend_prefers_litert():
    assert find_backend().name == "ai-edge-litert"


def test_probabilities_are_distributions(model_path):
    clf = load_classifier(model_path, num_threads=1)
    faces = np.random.default_rng(0).integers(0, 256, (5, *clf.input_size), dtype=np.uint8)
    probs = clf.predict(faces)
    assert probs.shape == (5, len(clf.labels))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    assert clf.predict(faces[:0]).shape == (0, len(clf.labels))


def test_batch_equals_one_by_one(model_path):
    clf = load_classifier(model_path, num_threads=1)
    faces = np.random.default_rng(1).integers(0, 256, (4, *clf.input_size), dtype=np.uint8)
    batch = clf.predict(faces)
    single = np.concatenate([clf.predict(faces[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(batch, single, atol=1e-6)


def test_input_quantization_follows_tensor_parameters():
    clf = load_classifier(FIXTURES / "tiny_int8.tflite")
    scale, zp = clf._in_q.scale, clf._in_q.zero_point
    px = np.arange(256, dtype=np.float32)
    expected = np.clip(np.round(px / 255.0 / scale + zp), -128, 127)
    np.testing.assert_array_equal(clf._lut.astype(np.float32), expected)
    assert clf._lut.dtype == np.int8


def test_shipped_model_has_metadata_and_batch_dimension():
    assert load_classifier().labels == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    meta = load_metadata(SHIPPED_NETWORK)
    assert meta.labels == load_classifier().labels and meta.sha256 and meta.quantization == "int8"
    assert TFLiteClassifier(SHIPPED_NETWORK).batchable


def _copy_model(tmp_path, src=SHIPPED_NETWORK):
    dst = tmp_path / "m.tflite"
    shutil.copy(src, dst)
    shutil.copy(metadata_path(src), metadata_path(dst))
    return dst


def test_wrong_label_count_is_refused(tmp_path):
    model = _copy_model(tmp_path)
    meta = json.loads(metadata_path(model).read_text())
    meta["labels"] = meta["labels"][:6]
    metadata_path(model).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="outputs 7 classes but its labels list 6"):
        load_classifier(model)


def test_corrupt_model_is_refused(tmp_path):
    model = _copy_model(tmp_path)
    data = bytearray(model.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_classifier(model)
    model.write_bytes(b"not a flatbuffer")
    metadata_path(model).unlink()
    with pytest.raises(ModelError, match="cannot load model"):
        load_classifier(model)


def test_missing_model_and_bad_metadata(tmp_path):
    with pytest.raises(ModelError, match="model not found"):
        load_classifier(tmp_path / "nope.tflite")
    model = _copy_model(tmp_path)
    metadata_path(model).write_text("{not json")
    with pytest.raises(ModelError, match="cannot read model metadata"):
        load_classifier(model)
    metadata_path(model).write_text(json.dumps({"labels": [], "input_size": [48, 48]}))
    with pytest.raises(ModelError, match="'labels' is empty"):
        load_classifier(model)


def test_unknown_kind_is_refused(tmp_path):
    model = _copy_model(tmp_path)
    meta = json.loads(metadata_path(model).read_text())
    meta["kind"] = "quantum"
    metadata_path(model).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unknown model kind 'quantum'"):
        load_classifier(model)


def test_metadata_round_trip(tmp_path):
    model = _copy_model(tmp_path)
    meta = ModelMetadata(labels=("a", "b"), input_size=(32, 32), face_margin=0.1, metrics={"x": 1})
    save_metadata(model, meta)
    back = load_metadata(model)
    assert back.labels == ("a", "b") and back.input_size == (32, 32) and back.face_margin == 0.1
    assert back.metrics == {"x": 1} and back.sha256 == meta.sha256


def test_model_without_metadata_uses_fer_defaults(tmp_path):
    model = tmp_path / "bare.tflite"
    shutil.copy(SHIPPED_NETWORK, model)
    clf = load_classifier(model)
    assert clf.labels[3] == "happy"


def test_edgetpu_without_runtime_is_a_clear_error():
    with pytest.raises(ModelError, match="libedgetpu.so.1"):
        make_interpreter(SHIPPED_NETWORK, edgetpu=True)


def test_flip_average_is_symmetric(tmp_path):
    model = _copy_model(tmp_path, FIXTURES / "tiny_int8.tflite")
    meta = load_metadata(model)
    meta.flip_average = True
    save_metadata(model, meta)
    clf = load_classifier(model)
    faces = np.random.default_rng(2).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(clf.predict(faces), clf.predict(faces[:, :, ::-1]), atol=1e-6)
    plain = load_classifier(FIXTURES / "tiny_int8.tflite")
    expected = (plain.predict(faces) + plain.predict(faces[:, :, ::-1])) / 2
    np.testing.assert_allclose(clf.predict(faces), expected, atol=1e-6)


def test_logits_models_get_their_softmax_on_the_device(tmp_path):
    model = _copy_model(tmp_path, FIXTURES / "tiny_float32.tflite")
    meta = load_metadata(model)
    meta.output = "logits"
    save_metadata(model, meta)
    clf = load_classifier(model)
    faces = np.random.default_rng(3).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    raw = clf.outputs(faces)
    expected = np.exp(raw) / np.exp(raw).sum(1, keepdims=True)
    np.testing.assert_allclose(clf.predict(faces), expected, rtol=1e-5)
    meta.output = "scores"
    save_metadata(model, meta)
    with pytest.raises(ModelError, match="'output' must be"):
        load_classifier(model)


def test_a_networks_metadata_file_loads_the_network():
    """``--model x.json`` for a single network (not an ensemble) means ``x.tflite``: users pass either file."""
    clf = load_classifier(metadata_path(SHIPPED_NETWORK), num_threads=1)
    assert isinstance(clf, TFLiteClassifier) and clf.metadata.sha256 == load_metadata(SHIPPED_NETWORK).sha256
