"""Emotion classifiers: the registry of kinds, assembled from the plugins, and :func:`load_classifier`.

A model's metadata names its ``kind``; the plugin registered under it loads the model and answers
for its files and ``info`` lines (see :mod:`edge_fer.classifier_api`). To add a kind, write a
:class:`~edge_fer.classifier_api.ClassifierPlugin` in a module of its own and add it to
:data:`PLUGINS`. The tools (conversion, training, the Pi probe) take :class:`TFLiteClassifier`
and :class:`TFLiteModel` from here, with the rest of the family's public face.
"""

from __future__ import annotations

from pathlib import Path

from .classifier_api import Classifier, ClassifierPlugin
from .ensemble import EnsembleClassifier
from .errors import ModelError
from .garf import GARFClassifier
from .metadata import load_metadata
from .tflite import TFLiteClassifier, TFLiteModel

__all__ = ["CLASSIFIERS", "DEFAULT_MODEL", "MODELS_DIR", "PLUGINS", "Classifier", "ClassifierPlugin",
           "TFLiteClassifier", "TFLiteModel", "find_plugin", "load_classifier", "model_files"]

PLUGINS: tuple[type[ClassifierPlugin], ...] = (TFLiteClassifier, EnsembleClassifier, GARFClassifier)
CLASSIFIERS: dict[str, type[ClassifierPlugin]] = {plugin.kind: plugin for plugin in PLUGINS}

MODELS_DIR = Path(__file__).resolve().parent / "models"


def _default_model() -> Path:
    """The shipped model: ``models/default.tflite`` when it is one network, ``models/default.json`` when it is
    a kind made of several files (an ensemble, its members beside it). ``python -m convert --ship`` and
    ``python -m training ensemble --ship`` write one or the other, never both."""
    single = MODELS_DIR / "default.tflite"
    return single if single.exists() else MODELS_DIR / "default.json"


DEFAULT_MODEL = _default_model()


def find_plugin(model_path: str | Path | None = None) -> tuple[type[ClassifierPlugin], Path]:
    """The plugin of the kind a model's metadata names, and the file to load, for a model as the user
    named it (default: the shipped one); one clear error for a missing model or an unknown kind."""
    path = Path(model_path) if model_path else DEFAULT_MODEL
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    kind = load_metadata(path, verify_sha=False).kind
    plugin = CLASSIFIERS.get(kind)
    if plugin is None:
        raise ModelError(f"{path}: unknown model kind {kind!r} (known: {', '.join(CLASSIFIERS)})")
    return plugin, plugin.entry(path)


def model_files(model_path: str | Path | None = None) -> list[Path]:
    """Every file of a model (its plugin names them), the one to load first."""
    plugin, path = find_plugin(model_path)
    return plugin.files(path, load_metadata(path, verify_sha=False))


def load_classifier(model_path: str | Path | None = None, num_threads: int | None = None,
                    edgetpu: bool = False) -> ClassifierPlugin:
    """Load the model at ``model_path`` (default: the shipped one) with the plugin its metadata names."""
    plugin, path = find_plugin(model_path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    return plugin(path, num_threads=num_threads, edgetpu=edgetpu, metadata=load_metadata(path))
