"""The TFLite plugin: one network of gray faces, run by the interpreter package (LiteRT or tflite-runtime).

:class:`TFLiteModel` feeds a network uint8 faces and reads its output back as floats (the GA+RF
plugin's feature extractor is one); :class:`TFLiteClassifier` is that plus the probability
read-out, the kind ``"tflite"`` and the default for a model without metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classifier_api import ClassifierPlugin
from .errors import ModelError
from .interpreter import make_interpreter
from .metadata import ModelMetadata, load_metadata

log = logging.getLogger(__name__)


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
        self.model_path = Path(model_path)
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


class TFLiteClassifier(TFLiteModel, ClassifierPlugin):
    """A TFLite emotion model: one output per label, probabilities or logits (as its metadata says)."""

    kind = "tflite"

    def __init__(self, model_path: str | Path, num_threads: int | None = None,
                 edgetpu: bool = False, metadata: ModelMetadata | None = None):
        super().__init__(model_path, num_threads, edgetpu, metadata)
        self.labels = self.metadata.labels
        if self.n_outputs != len(self.labels):
            raise ModelError(f"{self.model_path}: model outputs {self.n_outputs} classes but its labels list "
                             f"{len(self.labels)} ({', '.join(self.labels)})")

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities for a uint8 batch ``(n, h, w)``, its test-time views averaged; every view of every
        face in one invoke when the model allows it."""
        views = self.metadata.views
        scores = self.outputs(views.expand(faces))
        return views.fold(probabilities(scores, self.metadata.output, self.metadata.temperature))

    @classmethod
    def entry(cls, path: Path) -> Path:
        """A network's metadata names it: users pass ``NAME.json`` or ``NAME.tflite``."""
        return path.with_suffix(".tflite") if path.suffix == ".json" else path

    @classmethod
    def files(cls, model_path: Path, meta: ModelMetadata) -> list[Path]:
        return [cls.entry(model_path)]


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
