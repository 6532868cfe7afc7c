"""``python -m convert calibrate``: fit a network's temperature on val and store it in its metadata.

The fit runs on the converted model through the device's own classifier (int8 outputs, the
test-time views the metadata names), never on Keras floats, so the stored temperature calibrates
exactly the ``score`` the device prints. Val chooses the temperature; test is only reported,
before and after, as expected calibration error (ECE) and NLL, with a reliability diagram.
Conversion (:mod:`convert.export`) calls :func:`calibrate` for every model it writes; this
command does the same for a model that already exists, such as the shipped default.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_fer.calibration import Calibration, RawOutputs, calibration, fit_temperature
from edge_fer.classifier import MODELS_DIR, TFLiteClassifier
from edge_fer.datasets import LabeledFaces, available_splits, load_split
from edge_fer.errors import DataError, ModelError, exit_status
from edge_fer.evaluate import check_labels
from edge_fer.metadata import ModelMetadata, load_metadata, save_metadata

from . import SHIPPED_DOCS


@dataclass
class CalibrationReport:
    """The fitted temperature and, per split, calibration at temperature 1 and at the fitted one."""

    model: str
    temperature: float
    fitted_on: str
    before: dict[str, Calibration]
    after: dict[str, Calibration]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature, "fitted_on": self.fitted_on,
                "before": {k: v.to_dict() for k, v in self.before.items()},
                "after": {k: v.to_dict() for k, v in self.after.items()}}

    def summary(self) -> dict[str, dict[str, float]]:
        """The figures kept in the model's metadata (``extra.temperature_fit``), rounded."""
        out: dict[str, Any] = {"split": self.fitted_on, "n": self.before["val"].n}
        for split in self.before:
            b, a = self.before[split], self.after[split]
            out[split] = {"ece_before": round(b.ece, 4), "ece_after": round(a.ece, 4),
                          "nll_before": round(b.nll, 4), "nll_after": round(a.nll, 4),
                          "accuracy_before": round(b.accuracy, 4), "accuracy_after": round(a.accuracy, 4)}
        return out

    def line(self) -> str:
        how = "given, not fitted" if self.fitted_on == "given" else f"fitted on {self.fitted_on}"
        parts = [f"{self.model}: temperature {self.temperature:.4f} ({how})"]
        parts += [f"{split} ECE {self.before[split].ece:.4f} -> {self.after[split].ece:.4f}, "
                  f"NLL {self.before[split].nll:.4f} -> {self.after[split].nll:.4f}" for split in self.before]
        return "; ".join(parts)


def calibrate(model_path: Path, val: LabeledFaces, test: LabeledFaces | None = None,
              temperature: float | None = None) -> CalibrationReport:
    """Fit the temperature of the TFLite network ``model_path`` on ``val``; report val and test before/after.

    A given ``temperature`` is taken instead of fitted (a model that trained on val takes its
    train-only twin's): the report then says so."""
    meta = load_metadata(model_path)
    if meta.kind != TFLiteClassifier.kind:
        raise ModelError(f"{model_path}: a temperature is fitted for one TFLite network, not kind {meta.kind!r} "
                         f"(an ensemble's members each carry their own)")
    classifier = TFLiteClassifier(model_path, num_threads=1, metadata=replace(meta, temperature=1.0))
    check_labels(classifier.labels, val.labels)
    raw = {"val": (RawOutputs.of(classifier, val.x), val.y)}
    if test is not None:
        raw["test"] = (RawOutputs.of(classifier, test.x), test.y)
    fitted_on = "val" if temperature is None else "given"
    temperature = fit_temperature(*raw["val"]) if temperature is None else temperature
    return CalibrationReport(model=model_path.name, temperature=temperature, fitted_on=fitted_on,
                             before={s: calibration(r.probs(1.0), y) for s, (r, y) in raw.items()},
                             after={s: calibration(r.probs(temperature), y) for s, (r, y) in raw.items()})


def store(model_path: Path, report: CalibrationReport) -> Path:
    """Write the temperature (and its figures) into the metadata; the model file and its sha256 stay as they are."""
    meta = load_metadata(model_path)
    meta.temperature = report.temperature
    meta.extra = {**meta.extra, "temperature_fit": report.summary()}
    return save_metadata(model_path, meta)


def write_report(report: CalibrationReport, stem: Path) -> list[Path]:
    """``STEM.calibration.json`` (every figure and bin) and ``STEM.calibration.png`` (reliability diagrams)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path = stem.with_name(stem.name + ".calibration.json")
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    png_path = stem.with_name(stem.name + ".calibration.png")
    plot_reliability(report, png_path)
    return [json_path, png_path]


def plot_reliability(report: CalibrationReport, path: Path) -> None:
    """Accuracy against confidence per bin, before and after, on the reported split (test when given)."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    split = "test" if "test" in report.before else "val"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for ax, (title, cal) in zip(axes, (("temperature 1", report.before[split]),
                                       (f"temperature {report.temperature:.3f}", report.after[split]))):
        bins = [b for b in cal.bins if b["count"]]
        centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
        width = 1.0 / len(cal.bins)
        ax.bar(centers, [b["accuracy"] for b in bins], width=width * 0.95, color="#4c72b0", label="accuracy")
        ax.bar(centers, [abs(b["confidence"] - b["accuracy"]) for b in bins],
               bottom=[min(b["confidence"], b["accuracy"]) for b in bins], width=width * 0.95, fill=False,
               edgecolor="#c44e52", hatch="//", label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_title(f"{title}: ECE {cal.ece:.4f}, NLL {cal.nll:.3f}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy ({split}, n={report.before[split].n})")
    axes[0].legend(loc="upper left")
    fig.suptitle(f"{report.model}: reliability on {split}, temperature "
                 + ("given" if report.fitted_on == "given" else f"fitted on {report.fitted_on}"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reports_for(model: Path, given: Path | None) -> Path:
    """Where a command's reports on ``model`` go: ``given``, else docs/model for the shipped model, else its folder."""
    return given or (SHIPPED_DOCS if model.resolve().parent == MODELS_DIR else model.parent)


def network(path: Path) -> Path:
    """Users pass a network's ``.json`` or its ``.tflite``: the ``.tflite`` is what is calibrated."""
    path = TFLiteClassifier.entry(path)
    if not path.is_file():
        raise ModelError(f"model not found: {path} (one TFLite network: NAME.tflite or NAME.json)")
    return path


def val_and_test(data: Path, meta: ModelMetadata, purpose: str) -> dict[str, LabeledFaces]:
    """The ``val`` faces (required: they ``purpose``) and ``test`` faces (if any) of ``data``, sized and labelled
    for the network ``meta`` describes."""
    splits = available_splits(data)
    if "val" not in splits:
        raise DataError(f"{data} has no val split to {purpose} (found: {', '.join(splits)})")
    return {s: load_split(data, s, meta.input_size, meta.labels) for s in ("val", "test") if s in splits}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m convert calibrate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit a TFLite network's temperature on val through the device's classifier and store it in\n"
                    "its metadata; report ECE (15 bins, top label) and NLL on val and test, before and after.",
        epilog="example:\n  python -m convert calibrate --model edge_fer/models/default.json "
               "--data ../shared/data/fer2013.npz")
    p.add_argument("--model", type=Path, required=True, metavar="FILE", help="a network's .tflite or .json")
    p.add_argument("--data", type=Path, required=True, metavar="PATH",
                   help="labelled faces with a val split (fits) and optionally a test split (reported)")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="where the .calibration.json/.png go (default: docs/model for the shipped model, "
                        "else the model's folder)")
    return p


def run(args: argparse.Namespace) -> None:
    model = network(args.model)
    data = val_and_test(args.data, load_metadata(model), "fit the temperature on")
    report = calibrate(model, data["val"], data.get("test"))
    written = [store(model, report), *write_report(report, reports_for(model, args.report) / model.stem)]
    print(report.line())
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return exit_status(run, build_parser().parse_args(argv))

