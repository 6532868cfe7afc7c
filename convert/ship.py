"""Make a converted model the one ``edge-fer`` runs when no ``--model`` is given.

The model and its metadata are copied byte for byte (the metadata's sha256 stays valid), and
the run's human-readable reports go to ``docs/model/`` so the repository documents the model
it ships.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edge_fer.classifier import DEFAULT_MODEL
from edge_fer.metadata import load_metadata, metadata_path

from training.train import copy_run_reports

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs" / "model"


def ship(model_path: Path, run_dir: Path | None, model_dest: Path = DEFAULT_MODEL,
         docs_dir: Path = DOCS_DIR) -> list[Path]:
    """Copy ``model_path`` (+ its ``.json``) to ``model_dest`` and the run's reports to ``docs_dir``.

    Returns what was written: the model, its metadata, and ``docs_dir``.
    """
    model_dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model_path, model_dest)
    shutil.copy2(metadata_path(model_path), metadata_path(model_dest))
    load_metadata(model_dest)  # re-checks the sha256 of the copy
    docs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model_path.with_suffix(".verify.json"), docs_dir / f"{model_dest.stem}.verify.json")
    if run_dir is not None:
        copy_run_reports(run_dir, docs_dir)
    return [model_dest, metadata_path(model_dest), docs_dir]
