"""The GA+RF model's device files: the backbone as TFLite, the forest artifact, their metadata, a check.

``python -m training garf`` calls :func:`export_garf` once the forest is trained, then
:func:`verify_garf`, which runs the files through :class:`edge_fer.garf.GARFClassifier`, the
device's own path (TFLite features, mask, forest), so the figures in the metadata are the Pi's
numbers on this machine's CPU. The backbone keeps the CNNs' input contract, ``(batch, h, w, 1)``
scaled faces with a dynamic batch, so it converts with :func:`convert.tflite.to_tflite`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np

from edge_fer.bench import ms_per_face
from edge_fer.errors import ModelError
from edge_fer.garf import KIND, GARFClassifier, artifact_files
from edge_fer.metadata import ModelMetadata, metadata_path, sha256_of
from edge_fer.preprocess import Scaling

from training.common.reports import metadata_figures, split_metrics

from . import FORMATS, INTEGER_FORMATS
from .edgetpu import check_ops
from .tflite import to_tflite


@dataclass
class GARFExport:
    metadata: Path  # NAME.json: what --model takes (NAME.joblib works too)
    forest: Path
    backbone: Path
    backbone_format: str  # int8 where it converts, else float32


def export_backbone(model, path: Path, calibration: np.ndarray, scaling: Scaling, fmt: str = "int8") -> str:
    """Write ``model`` as TFLite to ``path``; an integer format that fails to convert falls back to float32.

    Returns the format written.
    """
    if fmt not in FORMATS:
        raise ModelError(f"unknown backbone format {fmt!r}: choose from {', '.join(FORMATS)}")
    try:
        path.write_bytes(to_tflite(model, fmt, calibration, scaling))
        return fmt
    except ModelError as exc:
        if fmt not in INTEGER_FORMATS:
            raise
        print(f"warning: {exc}; writing the backbone as float32 instead", file=sys.stderr)
        path.write_bytes(to_tflite(model, "float32"))
        return "float32"


def export_garf(out_dir: Path, name: str, artifact: dict[str, Any], backbone, calibration: np.ndarray,
                scaling: Scaling, fmt: str = "int8", source: dict[str, Any] | None = None) -> GARFExport:
    """Write ``NAME.joblib`` (``artifact``), ``NAME.backbone.tflite`` and ``NAME.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    forest_path, backbone_path = artifact_files(json_path)
    joblib.dump(artifact, forest_path, compress=3)
    written = export_backbone(backbone, backbone_path, calibration, scaling, fmt)
    # The device finds the files by name (NAME.joblib, NAME.backbone.tflite), so a renamed trio still loads.
    extra: dict[str, Any] = {
        "backbone": {**artifact["backbone"], "format": written},
        "features": {"before": int(len(artifact["mask"])), "after": int(artifact["mask"].sum())},
        "forest": {"trees": len(artifact["forest"].estimators_), "sklearn": artifact["sklearn_version"]},
        "sha256": {"forest": sha256_of(forest_path), "backbone": sha256_of(backbone_path)},
    }
    if written in INTEGER_FORMATS:
        extra["backbone"]["edgetpu_op_check"] = check_ops(backbone_path).summary()
    meta = ModelMetadata(labels=tuple(artifact["labels"]), input_size=tuple(backbone.input_shape[1:3]),
                         scaling=scaling, kind=KIND, quantization=written, source=source or {}, extra=extra)
    write_metadata(json_path, meta)
    return GARFExport(json_path, forest_path, backbone_path, written)


def write_metadata(json_path: Path, meta: ModelMetadata) -> None:
    """Save metadata with no top-level sha256: it covers two files, listed in ``extra["sha256"]``.

    (A top-level sha256 would be checked against whichever file ``--model`` names, and
    ``--model NAME.json`` must work too.)
    """
    metadata_path(json_path).write_text(json.dumps(replace(meta, sha256=None).to_dict(), indent=2) + "\n")


def verify_garf(json_path: Path, references: dict[str, tuple[Any, np.ndarray]], timing_runs: int = 100) -> dict:
    """Device-path figures, folded into the metadata's ``metrics`` and returned.

    ``references`` maps a split name to ``(faces, the workstation forest's predictions)``. Val
    decides mirror averaging, on only when it raises val accuracy (the CNNs' choice in
    :mod:`convert.verify` also weighs zoomed views against time; the forest's stays mirror or
    not). Then per split: accuracy, macro-F1, and agreement with the workstation
    forest (both unmirrored: what int8 features change); and single-thread, batch-1
    milliseconds per face, whole and backbone only.
    """
    clf = GARFClassifier(json_path)
    plain = {name: clf.predict(faces.x).argmax(axis=1) for name, (faces, _) in references.items()}
    out: dict[str, Any] = {"backend": clf.backend}
    if "val" in references:
        val = references["val"][0]
        clf.metadata.flip_average = True
        mirrored = clf.predict(val.x).argmax(axis=1)
        flip = {"off": float((plain["val"] == val.y).mean()), "on": float((mirrored == val.y).mean())}
        clf.metadata.flip_average = flip["on"] > flip["off"]
        out["flip_val_accuracy"] = {k: round(v, 4) for k, v in flip.items()}
    out["flip_average"] = clf.metadata.flip_average
    for name, (faces, float_pred) in references.items():
        pred = clf.predict(faces.x).argmax(axis=1) if clf.metadata.flip_average else plain[name]
        m = split_metrics(faces.y, pred, clf.labels)
        out.update({**metadata_figures(name, m["accuracy"], m["macro_f1"], m["n"]),
                    f"agreement_{name}": round(float((plain[name] == float_pred).mean()), 4)})
    single = GARFClassifier(json_path, num_threads=1, metadata=clf.metadata)
    out["ms_per_face"] = round(ms_per_face(single, timing_runs), 3)
    backbone = SimpleNamespace(predict=single.backbone.outputs, input_size=single.input_size)
    out["backbone_ms_per_face"] = round(ms_per_face(backbone, timing_runs), 3)
    out["size_bytes"] = single.size_bytes
    figures = {k: v for k, v in out.items() if k not in ("backend", "flip_average")}
    write_metadata(json_path, replace(clf.metadata, metrics={**clf.metadata.metrics, **figures}))
    return out
