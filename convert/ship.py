"""Make a model the one ``edge-fer`` runs when no ``--model`` is given.

``edge_fer/models/`` holds the shipped model and nothing else: either one network
(``default.tflite`` + ``default.json``) or an ensemble (``default.json`` of kind "ensemble" and
its member ``.tflite`` files, each with its ``.json``). Shipping one clears the other. Files are
copied byte for byte, so every sha256 in the metadata stays valid, and the human-readable
reports go to ``docs/model/`` so the repository documents the model it ships.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edge_fer.classifier import MODELS_DIR, load_classifier
from edge_fer.ensemble import EnsembleClassifier
from edge_fer.errors import ModelError
from edge_fer.metadata import load_metadata, metadata_path

from training.common.runs import copy_run_reports

from . import SHIPPED_DOCS
from .card import write_card

ENSEMBLE_REPORTS = ("results.md", "ensemble_report.json")


def _clear(models_dir: Path, docs_dir: Path) -> None:
    """Remove the previously shipped model and its reports, so no stale file can be mistaken for the default."""
    models_dir.mkdir(parents=True, exist_ok=True)
    for f in models_dir.iterdir():
        if f.is_file() and f.suffix in (".tflite", ".json"):
            f.unlink()
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    docs_dir.mkdir(parents=True)


def _copy_model(src: Path, dest: Path) -> None:
    shutil.copy2(src, dest)
    shutil.copy2(metadata_path(src), metadata_path(dest))


def ship(model_path: Path, run_dir: Path | None, models_dir: Path = MODELS_DIR,
         docs_dir: Path = SHIPPED_DOCS) -> list[Path]:
    """Ship one converted network: ``model_path`` (+ its ``.json``) becomes ``models_dir/default.tflite``.

    Returns what was written: the model, its metadata, and ``docs_dir`` (the run's reports).
    """
    _clear(models_dir, docs_dir)
    dest = models_dir / "default.tflite"
    _copy_model(model_path, dest)
    shutil.copy2(model_path.with_suffix(".verify.json"), docs_dir / "default.verify.json")
    for suffix in (".calibration.json", ".calibration.png"):  # the temperature fit (convert.calibrate)
        if model_path.with_suffix(suffix).exists():
            shutil.copy2(model_path.with_suffix(suffix), docs_dir / f"default{suffix}")
    load_metadata(dest)  # re-checks the sha256 of the copy
    if run_dir is not None:
        copy_run_reports(run_dir, docs_dir)
    write_card(docs_dir, dest)
    return [dest, metadata_path(dest), docs_dir]


def ship_ensemble(ensemble_json: Path, models_dir: Path = MODELS_DIR, docs_dir: Path = SHIPPED_DOCS) -> list[Path]:
    """Ship an ensemble written by ``training ensemble``: its JSON becomes ``models_dir/default.json``.

    The members are copied beside it under their own names; each member's run reports (its
    metadata's ``source.run``, when that folder is here) go to ``docs_dir/<member>/`` and the
    ensemble's results table to ``docs_dir``.
    """
    ensemble_json = Path(ensemble_json)
    ensemble = load_classifier(ensemble_json)  # members found, sha256s match
    if not isinstance(ensemble, EnsembleClassifier):
        raise ModelError(f"{ensemble_json}: not an ensemble (kind {ensemble.kind!r})")
    members = {}
    for m, member in zip(ensemble.member_paths, ensemble.members):
        if m.parent != ensemble_json.parent:
            raise ModelError(f"{ensemble_json}: member {m.name} is not in the ensemble's folder")
        members[m] = member.metadata
    _clear(models_dir, docs_dir)
    written = []
    for m, member_meta in members.items():
        _copy_model(m, models_dir / m.name)
        run = member_meta.source.get("run")
        if run and Path(run).is_dir():
            copy_run_reports(Path(run), docs_dir / m.stem)
        written += [models_dir / m.name, metadata_path(models_dir / m.name)]
    dest = models_dir / "default.json"
    shutil.copy2(ensemble_json, dest)
    load_classifier(dest)  # the shipped ensemble loads: members found, sha256s match
    for name in ENSEMBLE_REPORTS:
        if (ensemble_json.parent / name).exists():
            shutil.copy2(ensemble_json.parent / name, docs_dir / name)
    return [*written, dest, docs_dir]
