"""Emotion classifiers behind one small interface.

A classifier takes a uint8 batch of faces ``(n, h, w)`` (already cropped and resized by
:mod:`edge_fer.preprocess`) and returns probabilities ``(n, len(labels))``. The TFLite
classifier is the default; other kinds (registered in :data:`CLASSIFIERS`) are picked by
the ``kind`` in a model's metadata, frigate-detector style.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from .errors import ModelError
from .interpreter import make_interpreter
from .metadata import ModelMetadata, load_metadata

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"


def _default_model() -> Path:
    """The shipped model: ``models/default.tflite`` when it is one network, ``models/default.json`` when it is
    a kind made of several files (an ensemble, its members beside it). ``python -m convert --ship`` and
    ``python -m training ensemble --ship`` write one or the other, never both."""
    single = MODELS_DIR / "default.tflite"
    return single if single.exists() else MODELS_DIR / "default.json"


DEFAULT_MODEL = _default_model()


class Classifier(Protocol):
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    metadata: ModelMetadata
    backend: str

    def predict(self, faces: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class _Quant:
    scale: float
    zero_point: int
    dtype: np.dtype

    @property
    def quantized(self) -> bool:
        return self.dtype != np.float32


def _quant_of(detail: dict) -> _Quant:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return _Quant(float(scale), int(zero_point), np.dtype(detail["dtype"]))


class TFLiteModel:
    """A TFLite model of gray faces: float32, int8 or uint8 input/output, read from the tensors' quantization.

    Pixels go in through one lookup table and output rows come back dequantized; the emotion
    classifier below is one such model, the GA+RF classifier's feature extractor another.
    """

    def __init__(self, model_path: str | Path, num_threads: int | None = None,
                 edgetpu: bool = False, metadata: ModelMetadata | None = None):
        self.model_path = Path(model_path)  # the shipped default is load_classifier's to resolve: it may be an ensemble
        self.metadata = metadata or load_metadata(self.model_path)
        self.interpreter, backend = make_interpreter(self.model_path, num_threads, edgetpu)
        self.backend = backend.name + ("+edgetpu" if edgetpu else "")
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"{self.model_path}: expected one input and one output tensor, "
                             f"found {len(inp)} and {len(out)}")
        self._in, self._out = inp[0], out[0]
        shape = self._in["shape"]
        if len(shape) != 4 or shape[3] != 1:
            raise ModelError(f"{self.model_path}: expected a (batch, h, w, 1) gray input, found {list(shape)}")
        self.input_size = (int(shape[1]), int(shape[2]))
        if tuple(self.metadata.input_size) != self.input_size:
            raise ModelError(f"{self.model_path}: model input is {self.input_size[0]}x{self.input_size[1]} but its "
                             f"metadata says {self.metadata.input_size[0]}x{self.metadata.input_size[1]}")
        self.n_outputs = int(self._out["shape"][-1])
        signature = self._in.get("shape_signature", shape)
        self.batchable = len(signature) > 0 and int(signature[0]) == -1
        self._in_q, self._out_q = _quant_of(self._in), _quant_of(self._out)
        self._lut = self._input_lut()
        self._batch = int(shape[0])
        self.outputs(np.zeros((1, *self.input_size), np.uint8))  # warm-up: first invoke pays one-off costs
        log.info("model %s on %s (%s in, %s out, batch %s)", self.model_path.name, self.backend,
                 self._in_q.dtype, self._out_q.dtype, "dynamic" if self.batchable else self._batch)

    def _input_lut(self) -> np.ndarray:
        """Map each uint8 pixel straight to the model's input value (scaling and quantization in one table)."""
        sc = self.metadata.scaling
        values = (np.arange(256, dtype=np.float32) - sc.mean) / sc.std
        q = self._in_q
        if not q.quantized:
            return values.astype(np.float32)
        if q.scale == 0:
            raise ModelError(f"{self.model_path}: quantized input without quantization parameters")
        info = np.iinfo(q.dtype)
        return np.clip(np.round(values / q.scale + q.zero_point), info.min, info.max).astype(q.dtype)

    def _set_batch(self, n: int) -> None:
        if n != self._batch:
            self.interpreter.resize_tensor_input(self._in["index"], [n, *self.input_size, 1])
            self.interpreter.allocate_tensors()
            self._batch = n

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out["index"])

    def outputs(self, faces: np.ndarray) -> np.ndarray:
        """Dequantized float32 output rows for a uint8 batch ``(n, h, w)``; one invoke per batch when allowed."""
        if len(faces) == 0:
            return np.zeros((0, self.n_outputs), np.float32)
        x = self._lut[faces][..., None]
        if self.batchable:
            self._set_batch(len(x))
            raw = self._invoke(x)
        else:
            raw = np.concatenate([self._invoke(x[i : i + 1]) for i in range(len(x))])
        q = self._out_q
        return (raw.astype(np.float32) - q.zero_point) * q.scale if q.quantized else raw.astype(np.float32)

    @property
    def size_bytes(self) -> int:
        return self.model_path.stat().st_size


class TFLiteClassifier(TFLiteModel):
    """A TFLite emotion model: one output per label, probabilities or logits (as its metadata says)."""

    def __init__(self, model_path: str | Path, num_threads: int | None = None,
                 edgetpu: bool = False, metadata: ModelMetadata | None = None):
        super().__init__(model_path, num_threads, edgetpu, metadata)
        self.labels = self.metadata.labels
        if self.n_outputs != len(self.labels):
            raise ModelError(f"{self.model_path}: model outputs {self.n_outputs} classes but its labels list "
                             f"{len(self.labels)} ({', '.join(self.labels)})")

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities for a uint8 batch ``(n, h, w)``; one invoke per batch when the model allows it."""
        n = len(faces)
        if self.metadata.flip_average:  # mirrors ride in the same invoke
            faces = np.concatenate([faces, faces[:, :, ::-1]])
        probs = probabilities(self.outputs(faces), self.metadata.output, self.metadata.temperature)
        return (probs[:n] + probs[n:]) / 2 if self.metadata.flip_average else probs


def probabilities(scores: np.ndarray, output: str, temperature: float = 1.0) -> np.ndarray:
    """One pass's calibrated probabilities from a network's output rows (``output``: "logits" or "probabilities").

    The temperature (metadata, fitted on val by ``python -m convert calibrate``) makes the top
    probability a confidence users can read: logits are divided by it before the softmax, and a
    probability output is raised to ``1/temperature`` and renormalised, which is the same thing.
    """
    if output == "logits":
        return _softmax(scores / temperature)
    probs = _normalize(scores)
    return probs if temperature == 1.0 else _normalize(probs ** (1.0 / temperature))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _normalize(scores: np.ndarray) -> np.ndarray:
    """Rows of non-negative scores summing to 1 (uniform where a row has nothing positive)."""
    probs = np.maximum(scores, 0.0)
    total = probs.sum(axis=1, keepdims=True)
    return np.where(total > 0, probs / np.where(total > 0, total, 1), 1.0 / probs.shape[1])


def _ga_rf(*args, **kwargs) -> Classifier:
    from .garf import GARFClassifier  # imported on use: it needs scikit-learn, an optional extra

    return GARFClassifier(*args, **kwargs)


def _ensemble(*args, **kwargs) -> Classifier:
    from .ensemble import EnsembleClassifier  # imported on use, like the other kinds beyond plain TFLite

    return EnsembleClassifier(*args, **kwargs)


CLASSIFIERS: dict[str, Callable[..., Classifier]] = {"tflite": TFLiteClassifier, "ga-rf": _ga_rf,
                                                     "ensemble": _ensemble}


def load_classifier(model_path: str | Path | None = None, num_threads: int | None = None,
                    edgetpu: bool = False) -> Classifier:
    """Load the model at ``model_path`` (default: the shipped one) with the classifier its metadata names."""
    path = Path(model_path) if model_path else DEFAULT_MODEL
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if path.suffix == ".json" and path.with_suffix(".tflite").exists() \
            and load_metadata(path, verify_sha=False).kind == "tflite":
        path = path.with_suffix(".tflite")  # a network's metadata names it: users pass either file
    meta = load_metadata(path)
    factory = CLASSIFIERS.get(meta.kind)
    if factory is None:
        raise ModelError(f"{path}: unknown model kind {meta.kind!r} (known: {', '.join(CLASSIFIERS)})")
    return factory(path, num_threads=num_threads, edgetpu=edgetpu, metadata=meta)
