"""The JSON file that travels next to every model: labels, input size, scaling, figures.

``convert`` writes it, the device reads it. A model is ``NAME.tflite`` (or another
artifact) and its metadata is ``NAME.json`` beside it.
"""

from __future__ import annotations

import hashlib
import json
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
        try:
            labels = tuple(str(x) for x in d["labels"])
            h, w = (int(v) for v in d.get("input_size", (48, 48)))
            sc = d.get("scaling", {})
            scaling = Scaling(float(sc.get("mean", 0.0)), float(sc.get("std", 255.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: malformed metadata ({exc!r})") from None
        if not labels:
            raise ModelError(f"{where}: 'labels' is empty")
        output = str(d.get("output", "probabilities"))
        if output not in ("probabilities", "logits"):
            raise ModelError(f"{where}: 'output' must be 'probabilities' or 'logits', not {output!r}")
        if scaling.std == 0:
            raise ModelError(f"{where}: scaling std must not be 0")
        try:
            temperature = float(d.get("temperature", 1.0))
        except (TypeError, ValueError):
            temperature = float("nan")
        if not 0 < temperature < float("inf"):
            raise ModelError(f"{where}: 'temperature' must be a positive number, not {d.get('temperature')!r}")
        view_scales = parse_scales(d.get("view_scales", [1.0]), f"{where}: 'view_scales'")
        return cls(labels=labels, input_size=(h, w), scaling=scaling, view_scales=view_scales,
                   face_margin=float(d.get("face_margin", DEFAULT_MARGIN)), kind=str(d.get("kind", "tflite")),
                   flip_average=bool(d.get("flip_average", False)), output=output, temperature=temperature,
                   quantization=str(d.get("quantization", "unknown")), sha256=d.get("sha256"),
                   metrics=dict(d.get("metrics", {})), source=dict(d.get("source", {})),
                   extra=dict(d.get("extra", {})))


def metadata_path(model_path: str | Path) -> Path:
    """``models/x.tflite`` -> ``models/x.json``."""
    return Path(model_path).with_suffix(".json")


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
