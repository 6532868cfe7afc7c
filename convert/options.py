"""Command-line options that several ``python -m convert`` commands share; loads without TensorFlow."""

from __future__ import annotations

import argparse

from edge_fer.errors import EdgeFerError
from edge_fer.views import parse_scales

from . import MAX_MS_PER_FACE


def add_view_options(p: argparse.ArgumentParser) -> None:
    """``--flip-average``, ``--view-scales`` and ``--max-ms-per-face``: which test-time views val may choose."""
    p.add_argument("--flip-average", choices=("auto", "on", "off"), default="auto",
                   help="classify each face with its mirror image too and average (twice the work); auto: "
                        "val decides, with --view-scales, within --max-ms-per-face (default: auto; test never "
                        "decides)")
    p.add_argument("--view-scales", default="auto", metavar="auto|Z[,Z...]",
                   help="zooms each face is also classified at, averaged (1 = as cut, 0.95 = zoomed out 5%%); "
                        "auto: val chooses among 1 / 1,0.95 / 1,0.9 (default: auto)")
    p.add_argument("--max-ms-per-face", type=float, default=MAX_MS_PER_FACE, metavar="MS",
                   help="time budget for the automatic choice of views: single-thread ms per face, every view "
                        f"included (default: {MAX_MS_PER_FACE:g})")


def view_choice(args: argparse.Namespace) -> tuple[bool | None, tuple[float, ...] | None]:
    """The mirror setting and zooms the options fix (None: val chooses); one error line for a bad value."""
    if not args.max_ms_per_face > 0:
        raise EdgeFerError("--max-ms-per-face must be a positive number of milliseconds")
    scales = None if args.view_scales == "auto" else parse_scales(args.view_scales.split(","), "--view-scales")
    return {"auto": None, "on": True, "off": False}[args.flip_average], scales
