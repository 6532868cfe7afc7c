"""``python -m convert``: turn a trained Keras model into the TFLite files the device runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_fer.errors import DataError, EdgeFerError, ModelError, exit_status

from . import FORMATS, INTEGER_FORMATS
from .options import add_view_options, view_choice

DESCRIPTION = """\
Convert a trained Keras model to TensorFlow Lite for the Raspberry Pi, check the result
against the original, and write the metadata the device needs to run it.

For each format, OUT gets:
  NAME_FORMAT.tflite       the model; its batch size is dynamic, so the device classifies
                           all faces of a frame in one call
  NAME_FORMAT.json         metadata: labels, input size, pixel scaling, quantization,
                           test-time views and temperature (chosen on val), accuracy,
                           training run, sha256 (edge-fer reads this)
  NAME_FORMAT.verify.json  TFLite vs Keras accuracy on val and test, agreement between
                           them, the views tried, file size, and milliseconds per face
                           (1 thread)
  NAME_FORMAT.calibration.json, .png
                           the temperature's fit: calibration error and NLL on val and
                           test before and after, reliability diagrams

Formats: int8 (default; smallest, usually fastest on a Pi CPU, needed for the Edge TPU), uint8 (int8 with
uint8 input/output), float16, dynamic (int8 weights, float maths), float32 (reference).
int8/uint8 are calibrated on --calibration-samples training faces, spread over classes.
"""

EPILOG = """\
examples:
  python -m convert --run runs/edge-cnn
      int8 model of a training run, checked on the dataset the run was trained on
  python -m convert --run runs/edge-cnn --format all --limit 500
      every format, quickly checked on 500 val and 500 test faces
  python -m convert --keras my.keras --data fer2013.npz --out models --name mine
  python -m convert --run runs/edge-cnn --edgetpu
      also NAME_int8_b1.tflite (batch 1, as the Coral compiler requires), its op check,
      and NAME_int8_b1_edgetpu.tflite when edgetpu_compiler is installed (x86-64 Linux)
  python -m convert calibrate --model edge_fer/models/default.json --data fer2013.npz
      fit the temperature of an existing network on val and store it in its metadata
      (conversion fits it for every model it writes)
  python -m convert views --model edge_fer/models/default.json --data fer2013.npz
      choose an existing network's test-time views (mirror, zooms) on val within
      --max-ms-per-face, then refit its temperature (conversion chooses them for every model)
  python -m convert --run runs/edge-cnn --ship
      make the int8 model edge-fer's default (edge_fer/models/default.tflite, replacing
      whatever was shipped, an ensemble included), copy the run's reports to docs/model/
      and write its card there (README.md; python -m convert card rewrites it)

errors are printed as one line starting with "error:" and exit with status 2.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m convert", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, metavar="DIR",
                     help="training run folder (from 'python -m training train'): converts DIR/model.keras")
    src.add_argument("--keras", type=Path, metavar="FILE", help="a .keras or .h5 model file instead of a run folder")
    p.add_argument("--data", type=Path, metavar="PATH",
                   help="labelled faces: FER2013 .npz, FER2013 CSV or image folder; train calibrates, val and "
                        "test verify (default: the dataset recorded in the run's metrics.json)")
    p.add_argument("--format", default="int8", choices=(*FORMATS, "all"), help="what to write (default: int8)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: the model's folder)")
    p.add_argument("--name", default="model", help="file name stem: writes NAME_FORMAT.tflite (default: model)")
    p.add_argument("--calibration-samples", type=int, default=500, metavar="N",
                   help="training faces used to calibrate int8/uint8 (default: 500)")
    p.add_argument("--limit", type=int, metavar="N", help="verify on the first N val and N test faces only")
    add_view_options(p)
    p.add_argument("--temperature", type=float, metavar="T",
                   help="take this temperature instead of fitting one on val (a model that trained on val, "
                        "--fit-on train+val, takes its train-only twin's)")
    p.add_argument("--edgetpu", action="store_true",
                   help="also write a batch-1 model for the Coral Edge TPU, list ops that would run on the CPU, "
                        "and compile it if edgetpu_compiler is on the PATH")
    p.add_argument("--ship", action="store_true",
                   help="copy the int8 model and its .json to edge_fer/models/default.*, reports to docs/model/")
    return p


def run(args: argparse.Namespace) -> None:
    """Check the arguments (cheaply, before TensorFlow loads), then convert, verify and ship."""
    if args.run is not None and not args.run.is_dir():
        raise ModelError(f"run folder not found: {args.run}")
    keras_path = args.keras or args.run / "model.keras"
    if not keras_path.is_file():
        raise ModelError(f"Keras model not found: {keras_path}")
    formats = FORMATS if args.format == "all" else (args.format,)
    if args.edgetpu and not set(formats) & set(INTEGER_FORMATS):
        raise EdgeFerError("--edgetpu needs a full-integer model: use --format int8, uint8 or all")
    if args.ship and "int8" not in formats:
        raise EdgeFerError("--ship ships the int8 model: use --format int8 or all")
    if args.calibration_samples < 1 or (args.limit is not None and args.limit < 1):
        raise EdgeFerError("--calibration-samples and --limit must be at least 1")
    mirror, scales = view_choice(args)
    if args.temperature is not None and not 0 < args.temperature < float("inf"):
        raise EdgeFerError("--temperature must be a positive number")

    if _trained_on_val(keras_path) and ("auto" in (args.flip_average, args.view_scales) or args.temperature is None):
        raise EdgeFerError(f"{keras_path.parent} trained on val (--fit-on train+val), so val cannot choose its views "
                           f"or temperature: give --flip-average, --view-scales and --temperature as converted for "
                           f"its train-only twin")

    from .export import RunInfo, export  # imports TensorFlow
    from .verify import view_candidates

    candidates = view_candidates(mirror, scales)

    info = RunInfo.read(keras_path)
    data = args.data or info.data
    if data is None:
        raise DataError(f"no --data given and {keras_path.parent} has no metrics.json naming the training data")
    if not data.exists():
        raise DataError(f"dataset not found: {data}" + ("" if args.data else " (from the run's metrics.json; "
                                                        "pass --data)"))
    from training.common.data import DEFAULT_SEED, load_splits

    from training.common.runs import load_keras

    model = load_keras(keras_path)
    # A val split carved from train (datasets without one) must be the one training carved.
    splits = load_splits(data, seed=int(info.config.get("seed", DEFAULT_SEED)))
    results = export(model, splits, args.out or keras_path.parent, args.name, formats, info.source(model),
                     scaling=info.scaling, calibration_samples=args.calibration_samples, limit=args.limit,
                     edgetpu=args.edgetpu, views=candidates, max_ms=args.max_ms_per_face,
                     temperature=args.temperature)
    for r in results:
        print(f"wrote {r.path} (+ .json, .verify.json)" + (f", {r.edgetpu.model.name}" if r.edgetpu else ""),
              file=sys.stderr)
    if args.ship:
        from .ship import ship

        int8 = next(r for r in results if r.fmt == "int8")
        if info.run_dir is None:
            print(f"warning: {keras_path.parent} has no metrics.json; shipping the model without run reports",
                  file=sys.stderr)
        for path in ship(int8.path, info.run_dir):
            print(f"shipped {path}", file=sys.stderr)


def _trained_on_val(keras_path: Path) -> bool:
    """The run's metrics.json says val was among its training faces (``--fit-on train+val``)."""
    try:
        return bool(json.loads((keras_path.parent / "metrics.json").read_text()).get("val_seen_in_training"))
    except (OSError, ValueError, AttributeError):
        return False  # no readable metrics: RunInfo reports a broken file in its own words


def main(argv: list[str] | None = None) -> int:
    """``python -m convert``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["calibrate"]:  # fit the temperature of an existing network (no TensorFlow)
        from .calibrate import main as calibrate_main

        return calibrate_main(argv[1:])
    if argv[:1] == ["card"]:  # rewrite the shipped model's card (no TensorFlow)
        from .card import main as card_main

        return card_main(argv[1:])
    if argv[:1] == ["views"]:  # choose the test-time views of an existing network (no TensorFlow)
        from .views import main as views_main

        return views_main(argv[1:])
    return exit_status(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
