"""``python -m training``: the workstation CLI (``edge-fer-train`` once installed)."""

from __future__ import annotations

import argparse
import sys

from edge_fer.errors import EdgeFerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-fer-train", description="Train and report on edge-fer models.")
    sub = parser.add_subparsers(dest="command", required=True)
    from . import train

    p = sub.add_parser("train", help="train a CNN on FER2013 and write a run folder",
                       description=train.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_arguments(p)
    p.set_defaults(func=train.run)
    from . import features, garf

    p = sub.add_parser("features", help="extract and cache backbone features (Xception or the trained CNN)",
                       description=features.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    features.add_arguments(p)
    p.set_defaults(func=features.run)
    p = sub.add_parser("garf", help="GA feature selection + RandomForest on backbone features, with device files",
                       description=garf.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    garf.add_arguments(p)
    p.set_defaults(func=garf.run)
    from . import ensemble, tune

    p = sub.add_parser("tune", help="Keras Tuner search (random or hyperband); writes a config for train --config",
                       description=tune.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tune.add_arguments(p)
    p.set_defaults(func=tune.run)
    p = sub.add_parser("ensemble", help="average or stack TFLite models (tree, logistic) into one device model",
                       description=ensemble.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ensemble.add_arguments(p)
    p.set_defaults(func=ensemble.run)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except EdgeFerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
