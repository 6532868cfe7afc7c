"""``python -m convert views``: choose an existing network's test-time views on val, within the time budget.

Conversion chooses the views (mirror and zooms, :mod:`edge_fer.views`) for every model it writes;
this command makes the same choice for a model already converted, such as the shipped default,
without TensorFlow. Val chooses among the candidates that fit ``--max-ms-per-face``; test is only
reported. The model file stays as it is; its metadata gets the views, the int8 figures measured
with them (the float and agreement figures of the conversion, measured with other views, are
dropped rather than left to mislead) and a temperature refitted through them, since averaging more
views softens the scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from edge_fer.classifier import TFLiteClassifier
from edge_fer.errors import ModelError, exit_status
from edge_fer.metadata import load_metadata, save_metadata

from training.common.reports import metadata_figures, split_metrics

from .calibrate import calibrate, network, reports_for, store, val_and_test, write_report
from .options import add_view_options, view_choice
from .verify import choose_views, ms_per_face, view_candidates, with_views

_CONVERSION_ONLY = ("float_", "agreement_")  # metrics that need the Keras model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m convert views", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Choose a TFLite network's test-time views (mirror, zooms) on val within a time budget,\n"
                    "store them in its metadata with the int8 figures measured through them, and refit its\n"
                    "temperature; test is reported, never used to choose.",
        epilog="example:\n  python -m convert views --model edge_fer/models/default.json "
               "--data ../shared/data/fer2013.npz")
    p.add_argument("--model", type=Path, required=True, metavar="FILE", help="a network's .tflite or .json")
    p.add_argument("--data", type=Path, required=True, metavar="PATH",
                   help="labelled faces with a val split (chooses) and optionally a test split (reported)")
    add_view_options(p)
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="where STEM.views.json and the calibration report go (default: docs/model for the "
                        "shipped model, else the model's folder)")
    return p


def run(args: argparse.Namespace) -> None:
    mirror, scales = view_choice(args)
    model = network(args.model)
    meta = load_metadata(model)
    if meta.kind != TFLiteClassifier.kind:
        raise ModelError(f"{model}: views are chosen for one TFLite network, not kind {meta.kind!r}")
    data = val_and_test(args.data, meta, "choose the views on")
    candidates = view_candidates(mirror, scales)
    views, tried = choose_views(model, meta, data["val"], candidates, args.max_ms_per_face)
    chosen = with_views(meta, views)
    clf = TFLiteClassifier(model, metadata=replace(chosen))
    metrics = {k: v for k, v in meta.metrics.items() if not k.startswith(_CONVERSION_ONLY)}
    for name, faces in data.items():
        m = split_metrics(faces.y, clf.predict(faces.x).argmax(axis=1), meta.labels)
        metrics.update(metadata_figures(name, m["accuracy"], m["macro_f1"], m["n"]))
    metrics["ms_per_face"] = round(ms_per_face(model, chosen, data["val"].x[:1]), 3)
    choice = {"fitted_on": "val", "max_ms_per_face": args.max_ms_per_face, "tried": tried}
    save_metadata(model, replace(chosen, metrics=metrics, extra={**meta.extra, "views_choice": choice}))
    report_dir = reports_for(model, args.report)
    report_dir.mkdir(parents=True, exist_ok=True)
    views_json = report_dir / f"{model.stem}.views.json"
    views_json.write_text(json.dumps({"model": model.name, "chosen": views.describe(), **choice,
                                      "metrics": metrics}, indent=2) + "\n")
    for t in tried:
        print(f"  {t['views']:<32} val {t['val_accuracy']:.4f}  {t['ms_per_face']:.2f} ms/face"
              + ("" if t["within_budget"] else "  (over budget)"))
    print(f"{model.name}: views {views.describe()}; " + "; ".join(
        f"{s} {metrics[f'{s}_accuracy']:.4f}" for s in data) + f"; {metrics['ms_per_face']:.2f} ms/face")
    fit = calibrate(model, data["val"], data.get("test"))
    written = [views_json, store(model, fit), *write_report(fit, report_dir / model.stem)]
    print(fit.line())
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return exit_status(run, build_parser().parse_args(argv))
