"""The JSON file that travels next to every model: labels, input size, scaling, figures.

``convert`` writes it, the device reads it. A model is ``NAME.tflite`` (or another
artifact) and its metadata is ``NAME.json`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError
from .labels import FER2013_LABELS
from .preprocess import DEFAULT_MARGIN, DEFAULT_SCALING, Scaling
from .views import Views, parse_scales

FORMAT = "edge-fer-model/1"


@dataclass
class ModelMetadata:
    """What the device needs to feed a model and read its output."""

    labels: tuple[str, ...] = FER2013_LABELS
    input_size: tuple[int, int] = (48, 48)  # height, width
    scaling: Scaling = DEFAULT_SCALING
    face_margin: float = DEFAULT_MARGIN
    kind: str = "tflite"  # which classifier backend loads the model
    flip_average: bool = False  # average each face with its mirror image (chosen on val at conversion)
    view_scales: tuple[float, ...] = (1.0,)  # zooms averaged per face, 1.0 = as cut (chosen with flip_average)
    output: str = "probabilities"  # or "logits": the softmax runs in numpy on the device (see convert.tflite)
    temperature: float = 1.0  # divides the logits before the softmax, fitted on val (convert.calibrate); tflite only
    quantization: str = "float32"
    sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def views(self) -> Views:
        """The test-time views every face goes through (:mod:`edge_fer.views`)."""
        return Views(self.view_scales, self.flip_average)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["input_size"] = list(self.input_size)
        d["view_scales"] = list(self.view_scales)
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "metadata") -> "ModelMetadata":
        """Check every field of a metadata object: a malformed one is one ModelError naming ``where`` and the field."""

        def field_of(name: str, convert, default, expected: str):
            raw = d.get(name, default)
            try:
                return convert(raw)
            except (TypeError, ValueError, KeyError):
                raise ModelError(f"{where}: {name!r} must be {expected}, not {_as_json(raw)}") from None

        if "labels" not in d:
            raise ModelError(f"{where}: no 'labels' list")
        labels = field_of("labels", _strings, None, "a list of label names")
        if not labels:
            raise ModelError(f"{where}: 'labels' is empty")
        h, w = field_of("input_size", _size, (48, 48), "[height, width], two positive whole numbers")
        scaling = field_of("scaling", _scaling, {}, 'an object like {"mean": 0.0, "std": 255.0}')
        if scaling.std == 0:
            raise ModelError(f"{where}: scaling std must not be 0")
        output = str(d.get("output", "probabilities"))
        if output not in ("probabilities", "logits"):
            raise ModelError(f"{where}: 'output' must be 'probabilities' or 'logits', not {output!r}")
        temperature = field_of("temperature", _positive, 1.0, "a positive number")
        view_scales = parse_scales(d.get("view_scales", [1.0]), f"{where}: 'view_scales'")
        sha256 = d.get("sha256")
        if sha256 is not None and not isinstance(sha256, str):
            raise ModelError(f"{where}: 'sha256' must be a hex string or null, not {_as_json(sha256)}")
        return cls(labels=labels, input_size=(h, w), scaling=scaling, view_scales=view_scales,
                   face_margin=field_of("face_margin", _finite, DEFAULT_MARGIN, "a number"),
                   kind=str(d.get("kind", "tflite")),
                   flip_average=field_of("flip_average", _bool, False, "true or false"),
                   output=output, temperature=temperature,
                   quantization=str(d.get("quantization", "unknown")), sha256=sha256,
                   metrics=field_of("metrics", _object, {}, "a JSON object"),
                   source=field_of("source", _object, {}, "a JSON object"),
                   extra=field_of("extra", _object, {}, "a JSON object"))


def _as_json(raw: Any, limit: int = 60) -> str:
    """A value as the file spells it (null, not None), cut short."""
    try:
        text = json.dumps(raw)
    except (TypeError, ValueError):
        text = repr(raw)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _strings(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, (list, tuple)) or not all(isinstance(x, str) for x in raw):
        raise TypeError(raw)
    return tuple(raw)


def _number(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):  # "0.1", null, true: hand edits, not numbers
        raise TypeError(raw)
    return float(raw)


def _finite(raw: Any) -> float:
    value = _number(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _positive(raw: Any) -> float:
    value = _finite(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


def _size(raw: Any) -> tuple[int, int]:
    h, w = (_number(v) for v in raw)
    if not all(v.is_integer() and v > 0 for v in (h, w)):
        raise ValueError(raw)
    return int(h), int(w)


def _scaling(raw: Any) -> Scaling:
    if not isinstance(raw, dict):
        raise TypeError(raw)
    return Scaling(_finite(raw.get("mean", 0.0)), _finite(raw.get("std", 255.0)))


def _bool(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise TypeError(raw)
    return raw


def _object(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TypeError(raw)
    return dict(raw)


def metadata_path(model_path: str | Path) -> Path:
    """``models/x.tflite`` -> ``models/x.json``; a path with no file name (``.``, ``/``) is one ModelError."""
    path = Path(model_path)
    if path.name in ("", ".", ".."):
        raise ModelError(f"{model_path} is not a model file: name one, such as models/NAME.tflite")
    return path.with_suffix(".json")


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: Path, expected: str | None, listed_in: str, why: str) -> None:
    """One ModelError (``path does not match the sha256 in listed_in: why``) when ``path``'s sum is not
    ``expected``; no check when nothing is expected. Every model kind checks its files this way."""
    if expected and sha256_of(path) != expected:
        raise ModelError(f"{path} does not match the sha256 in {listed_in}: {why}")


def load_metadata(model_path: str | Path, verify_sha: bool = True) -> ModelMetadata:
    """Read and check the metadata beside ``model_path``.

    Without a metadata file a model falls back to the FER2013 defaults (labels in FER
    order, 48x48, 0..1 scaling), so a model from elsewhere still runs; the output-size
    check in the classifier then catches a mismatch.
    """
    model_path = Path(model_path)
    if model_path.is_dir():
        raise ModelError(f"{model_path} is a folder, not a model file: name one, such as {model_path / 'NAME.tflite'}")
    path = metadata_path(model_path)
    if not path.exists():
        return ModelMetadata()
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model metadata {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: metadata must be a JSON object")
    meta = ModelMetadata.from_dict(raw, str(path))
    if verify_sha and model_path.exists():
        check_sha256(model_path, meta.sha256, path.name,
                     "the file is corrupt or was replaced (re-run the conversion, or delete the sha256 field)")
    return meta


def save_metadata(model_path: str | Path, meta: ModelMetadata) -> Path:
    """Write ``meta`` beside ``model_path``, filling in the model's sha256."""
    meta.sha256 = sha256_of(model_path)
    path = metadata_path(model_path)
    path.write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return path
