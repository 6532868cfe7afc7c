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
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except EdgeFerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
