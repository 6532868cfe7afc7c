"""``python -m training``: the workstation CLI, run from a checkout (``pip install -e '.[train]'`` for its
dependencies). The entry point sits above every layer: it loads the command's module by name."""

from __future__ import annotations

import argparse
import importlib
import sys

from edge_fer.errors import exit_status

# subcommand -> (module with add_arguments/run, one-line help)
COMMANDS = {
    "train": ("training.train", "train a CNN on FER2013 and write a run folder"),
    "features": ("training.features", "extract and cache backbone features (Xception or the trained CNN)"),
    "garf": ("training.pipelines.garf", "GA feature selection + RandomForest on backbone features, with device files"),
    "tune": ("training.tune", "Keras Tuner search (random or hyperband); writes a config for train --config"),
    "ensemble": ("training.pipelines.ensemble", "average or stack TFLite models (tree, logistic) into one device model"),
    "throughput": ("training.throughput", "measure samples/s of one training step per width and batch size (plan a long run)"),
    "compare": ("training.compare", "A/B of device models or converted runs on val, with a paired-bootstrap interval"),
    "unfold": ("training.unfold", "an int8 edge-cnn .tflite (the shipped model) back into a trainable Keras network"),
    "status": ("training.status", "where a run stands: epochs, best val, time per epoch, whether it trains, how to go on"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="Train and report on edge-fer models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    args = parser.parse_args(argv)
    return exit_status(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
