"""What every kind of emotion classifier offers, and what a kind (a plugin) declares; it knows no plugin.

Modelled on frigate's detector plugins: one class per kind of model behind one interface, each
declaring its key and the typed form of its own configuration, and a registry assembled from the
plugins (:mod:`edge_fer.classifier`). A plugin is a :class:`ClassifierPlugin` subclass in its own
module (:mod:`edge_fer.tflite`, :mod:`edge_fer.ensemble`, :mod:`edge_fer.garf`) that answers for
everything that differs between kinds, so no code outside it asks for a ``kind``:

- ``kind``: the metadata's ``"kind"`` that selects it;
- its typed metadata: the plugin parses its part of the metadata (``extra``) into a dataclass of its own;
- :meth:`~ClassifierPlugin.entry` and :meth:`~ClassifierPlugin.files`: which file to load when a
  user names one of the model's files, and every file the model is made of (``edge-fer info`` sizes
  them, shipping and the Pi probe copy or run them);
- :meth:`~ClassifierPlugin.info`: its lines in ``edge-fer info``;
- the constructor ``(model_path, num_threads=None, edgetpu=False, metadata=None)`` loads it, and
  :meth:`~ClassifierPlugin.predict` classifies.

A plugin that needs an optional extra (scikit-learn for GA+RF) imports it on use, so the registry
can import every plugin on a device without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from .metadata import ModelMetadata


class Classifier(Protocol):
    """What the pipeline needs: a uint8 batch of faces ``(n, h, w)`` in, probabilities ``(n, len(labels))`` out."""

    labels: tuple[str, ...]
    input_size: tuple[int, int]
    metadata: ModelMetadata
    backend: str

    def predict(self, faces: np.ndarray) -> np.ndarray: ...


class ClassifierPlugin(ABC):
    """One kind of model: its key, its files and info, and the classifier itself (see the module doc)."""

    kind: ClassVar[str]
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    metadata: ModelMetadata
    backend: str
    model_path: Path

    @abstractmethod
    def __init__(self, model_path: str | Path, num_threads: int | None = None, edgetpu: bool = False,
                 metadata: ModelMetadata | None = None) -> None:
        """Load the model at ``model_path`` (``metadata``: already read by the registry, else read here)."""

    @abstractmethod
    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` for a uint8 batch ``(n, h, w)``."""

    @property
    @abstractmethod
    def size_bytes(self) -> int:
        """Bytes of every file the model loads."""

    @classmethod
    def entry(cls, path: Path) -> Path:
        """The file to load when the user names ``path`` (one of the model's files); by default ``path``."""
        return path

    @classmethod
    @abstractmethod
    def files(cls, model_path: Path, meta: ModelMetadata) -> list[Path]:
        """Every file the model is made of, the one to load first; raises ModelError if its metadata cannot say."""

    @classmethod
    def info(cls, model_path: Path, meta: ModelMetadata) -> list[str]:
        """Lines of its own for ``edge-fer info`` (``"members    a.tflite, b.tflite"``); by default none."""
        return []
