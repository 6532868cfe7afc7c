"""One conversion job: every requested format of one Keras model, verified, each with its metadata.

For a model written as ``OUT/NAME_FORMAT.tflite`` the job leaves beside it ``NAME_FORMAT.json``
(what the device reads) and ``NAME_FORMAT.verify.json`` (the full verification). With
``edgetpu=True`` each full-integer format also gets ``NAME_FORMAT_b1.tflite``: the same model
with a static batch of 1, because ``edgetpu_compiler`` rejects a dynamic batch; that file is
op-checked and, where the compiler is installed, compiled to ``NAME_FORMAT_b1_edgetpu.tflite``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_fer.datasets import LabeledFaces
from edge_fer.errors import ModelError
from edge_fer.labels import FER2013_LABELS
from edge_fer.metadata import ModelMetadata, load_metadata, save_metadata
from edge_fer.preprocess import DEFAULT_SCALING, Scaling
from edge_fer.views import Views

from training.common.data import Splits
from training.common.runs import recorded_scaling
from training.common.tf_env import keras, tf

from . import INTEGER_FORMATS, MAX_MS_PER_FACE
from .calibrate import calibrate, store, write_report
from .edgetpu import CompileResult, OpCheck, check_ops, compile_model, find_compiler, missing_compiler_message
from .tflite import calibration_faces, input_size, strip_softmax, to_tflite
from .verify import Reference, Verification, reference, verify, with_views


@dataclass
class RunInfo:
    """The training run behind a Keras file: its folder's ``metrics.json`` and ``train_config.json``, if any."""

    keras_path: Path
    metrics: dict[str, Any]
    config: dict[str, Any]

    @classmethod
    def read(cls, keras_path: Path) -> "RunInfo":
        found = []
        for name in ("metrics.json", "train_config.json"):
            path = keras_path.parent / name
            try:
                found.append(json.loads(path.read_text()) if path.exists() else {})
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelError(f"cannot read {path}: {exc}") from None
        return cls(keras_path, *found)

    @property
    def run_dir(self) -> Path | None:
        return self.keras_path.parent if self.metrics else None

    @property
    def data(self) -> Path | None:
        """The dataset the model was trained on, as the run recorded it."""
        data = self.metrics.get("data") or self.config.get("data")
        return Path(data) if data else None

    @property
    def scaling(self) -> Scaling:
        return recorded_scaling(self.metrics)

    def source(self, model: keras.Model) -> dict[str, Any]:
        """What the metadata says about where the model came from."""
        m = self.metrics
        return {"keras": str(self.keras_path), "run": str(self.run_dir) if self.run_dir else None,
                "arch": m.get("model", model.name), "params": m.get("params", int(model.count_params())),
                "epochs": m.get("epochs"), "best_epoch": m.get("best_epoch"), "git_commit": m.get("git_commit"),
                "data": m.get("data"), "keras_val_accuracy": m.get("val", {}).get("accuracy"),
                "keras_test_accuracy": m.get("test", {}).get("accuracy")}


@dataclass
class EdgeTpuOutput:
    model: Path  # the batch-1 full-integer model given to the compiler
    op_check: OpCheck
    compiled: CompileResult | None  # None when the compiler is not installed


@dataclass
class Exported:
    fmt: str
    path: Path
    verification: Verification
    op_check: OpCheck | None  # full-integer formats only
    edgetpu: EdgeTpuOutput | None = None

    @property
    def verify_path(self) -> Path:
        return self.path.with_suffix(".verify.json")


def export(model: keras.Model, splits: Splits, out_dir: Path, name: str, formats: Sequence[str],
           source: dict[str, Any], scaling: Scaling = DEFAULT_SCALING, calibration_samples: int = 500,
           limit: int | None = None, edgetpu: bool = False, views: Sequence[Views] | None = None,
           max_ms: float = MAX_MS_PER_FACE, temperature: float | None = None,
           timing_runs: int = 300) -> list[Exported]:
    """Convert ``model`` to each of ``formats`` in ``out_dir`` and verify each on val (and test).

    ``limit`` caps the val and test faces; val chooses the test-time views among ``views`` (default:
    every candidate of :func:`convert.verify.view_candidates`) within ``max_ms`` per face; the
    temperature is fitted on val unless ``temperature`` gives it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = ModelMetadata(labels=FER2013_LABELS, input_size=input_size(model), scaling=scaling, source=source,
                         output="logits" if strip_softmax(model)[1] else "probabilities")
    calibration = (calibration_faces(splits.train, calibration_samples)
                   if set(formats) & set(INTEGER_FORMATS) else None)
    references = {name: reference(model, faces if not limit else
                                  LabeledFaces(faces.x[:limit], faces.y[:limit], faces.labels), meta)
                  for name, faces in (("val", splits.val), ("test", splits.test)) if faces is not None}
    job = _Job(model, meta, calibration, references, timing_runs, max_ms, temperature)
    compiler = find_compiler() if edgetpu else None
    if edgetpu and compiler is None:
        _say(f"warning: {missing_compiler_message()}")
    results = []
    for fmt in formats:
        _say(f"converting to {fmt} ...")
        result = job.convert(fmt, out_dir / f"{name}_{fmt}.tflite", views)
        if not result.verification.batchable:
            _say(f"warning: {result.path.name} has a fixed batch size; the device will invoke it once per face")
        if edgetpu and fmt in INTEGER_FORMATS:
            result.edgetpu = job.edgetpu(result, compiler)
        results.append(result)
        print(result.verification.line(), flush=True)
    return results


@dataclass
class _Job:
    """What every file of one export shares: the model, base metadata, calibration faces, references."""

    model: keras.Model
    meta: ModelMetadata
    calibration: np.ndarray | None
    references: dict[str, Reference]
    timing_runs: int
    max_ms: float
    temperature: float | None

    def convert(self, fmt: str, path: Path, views: Sequence[Views] | None, batch_size: int | None = None) -> Exported:
        """Write ``path``, verify it, then write its metadata (figures folded in) and its ``.verify.json``."""
        path.write_bytes(to_tflite(self.model, fmt, self.calibration, self.meta.scaling, batch_size,
                                   logits=self.meta.output == "logits"))
        extra: dict[str, Any] = {"batch": batch_size or "dynamic", "converter": f"tensorflow {tf.__version__}"}
        if fmt in INTEGER_FORMATS:
            extra["calibration"] = {"split": "train", "samples": len(self.calibration), "stratified": True}
        meta = replace(self.meta, quantization=fmt, extra=extra)
        verification = verify(path, meta, self.references, self.timing_runs, views, self.max_ms)
        meta = replace(with_views(meta, verification.views), metrics=verification.metrics())
        save_metadata(path, meta)
        fit = calibrate(path, self.references["val"].faces,
                        self.references["test"].faces if "test" in self.references else None, self.temperature)
        store(path, fit)  # the temperature the device applies, fitted on val through the device's own path
        write_report(fit, path.with_suffix(""))
        op_check = check_ops(path) if fmt in INTEGER_FORMATS else None
        report = verification.to_dict()
        if op_check is not None:
            report["edgetpu_op_check"] = op_check.to_dict()
        result = Exported(fmt, path, verification, op_check)
        result.verify_path.write_text(json.dumps(report, indent=2) + "\n")
        return result

    def edgetpu(self, parent: Exported, compiler: str | None) -> EdgeTpuOutput:
        """The batch-1 twin of ``parent`` for ``edgetpu_compiler``, op-checked, and compiled when possible."""
        _say(f"converting to {parent.fmt} with batch 1 for the Edge TPU ...")
        b1 = self.convert(parent.fmt, parent.path.with_name(f"{parent.path.stem}_b1.tflite"),
                          [parent.verification.views], batch_size=1)
        _say(f"Edge TPU op check of {b1.path.name}: {b1.op_check.summary()}")
        if compiler is None:
            return EdgeTpuOutput(b1.path, b1.op_check, None)
        result = compile_model(b1.path, compiler)
        if result.model is None:
            _say(f"warning: {compiler} failed on {b1.path.name} (exit {result.returncode}); see {result.log}")
        else:
            # The TPU runs the same int8 graph, so the CPU accuracy is the best estimate; CPU timing is not.
            b1_meta = load_metadata(b1.path)
            metrics = {k: v for k, v in b1_meta.metrics.items() if k != "ms_per_face"}
            metrics["size_bytes"] = result.model.stat().st_size
            save_metadata(result.model, replace(b1_meta, metrics=metrics, extra={
                **b1_meta.extra, "edgetpu_compiled": True, "compiled_from": b1.path.name}))
            _say(f"compiled {result.model.name}: {result.summary} (log: {result.log.name})")
        return EdgeTpuOutput(b1.path, b1.op_check, result)


def _say(message: str) -> None:
    print(message, file=sys.stderr)
