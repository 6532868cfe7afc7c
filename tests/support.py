"""Shared helpers for the device tests: paths, a real video made from the shipped sample, CLI runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edge_fer.bench import write_sample_video
from edge_fer.classifier import DEFAULT_MODEL, model_files

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MEDIA = SHARED / "media"
FER_NPZ = SHARED / "data" / "fer2013.npz"
SAMPLE = ROOT / "edge_fer" / "samples" / "astronaut.jpg"
FIXTURES = ROOT / "tests" / "fixtures"


def _shipped_network() -> Path:
    """The shipped single TFLite network: the default model, or the first member when an ensemble ships."""
    return next(f for f in model_files(DEFAULT_MODEL) if f.suffix == ".tflite")


SHIPPED_NETWORK = _shipped_network()


def make_video(path: Path, frames: int = 40, size: tuple[int, int] = (480, 360), fps: float = 15.0) -> Path:
    """A real MP4 (mp4v) of the shipped sample photo drifting across a gray canvas."""
    return write_sample_video(path, frames, size, fps)


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m edge_fer.cli ARGS`` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "edge_fer.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user mistake: non-zero exit, exactly one ``error:`` line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def copy_model(src, dest_dir, **changes):
    """``src`` and its metadata copied to ``dest_dir/m.*`` with ``changes`` written into the metadata."""
    dest = dest_dir / "m.tflite"
    shutil.copy(src, dest)
    meta = json.loads(src.with_suffix(".json").read_text())
    meta.update(changes)
    dest.with_suffix(".json").write_text(json.dumps(meta))
    return dest
