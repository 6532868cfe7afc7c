"""The GA+RF classifier on the device: a TFLite feature extractor, a feature mask, a RandomForest.

A GA+RF model is three files side by side, all written by ``python -m training garf``:

    NAME.json             metadata (``kind: "ga-rf"``): labels, input size, scaling, figures,
                          and the sha256 of the two files below
    NAME.joblib           the mask (which backbone features the genetic algorithm kept), the
                          forest, the labels and the backbone's identity
    NAME.backbone.tflite  the backbone: gray faces ``(batch, h, w, 1)`` in, features out; an
                          Xception backbone resizes to 71x71 and replicates the channel inside
                          its graph, so the device feeds it exactly what it feeds a CNN

``--model NAME.joblib`` or ``--model NAME.json`` loads it: this is the ``"ga-rf"`` plugin of
:mod:`edge_fer.classifier_api`. The forest is a pickle: unpickling
runs code, so load only artifacts you made or trust. The sha256 check below catches a
corrupt or swapped file, not a malicious metadata file written alongside it.

scikit-learn and joblib are an optional extra (``edge-fer[garf]``), imported only here.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classifier_api import ClassifierPlugin
from .errors import ModelError
from .metadata import ModelMetadata, check_sha256, load_metadata, metadata_path
from .tflite import TFLiteModel

log = logging.getLogger(__name__)

KIND = "ga-rf"
FORMAT = "edge-fer-garf/1"
EXTRA_HINT = "pip install scikit-learn joblib (the checkout's 'garf' extra)"


def artifact_files(model_path: str | Path) -> tuple[Path, Path]:
    """``x/NAME.json`` or ``x/NAME.joblib`` -> ``(x/NAME.joblib, x/NAME.backbone.tflite)``."""
    base = Path(model_path).with_suffix("")
    return base.with_suffix(".joblib"), base.with_name(base.name + ".backbone.tflite")


@dataclass(frozen=True)
class GARFSpec:
    """The GA+RF part of its metadata (``extra``, written with the model): the two files' sha256 and its sizes."""

    forest_sha256: str | None = None
    backbone_sha256: str | None = None
    backbone: str = "?"                  # the backbone's name (cnn, xception)
    features: tuple[int, int] | None = None  # (kept, of)
    trees: int | None = None

    @classmethod
    def from_metadata(cls, meta: ModelMetadata) -> GARFSpec:
        extra = meta.extra
        sha, backbone, features = extra.get("sha256") or {}, extra.get("backbone") or {}, extra.get("features") or {}
        kept = (features.get("after"), features.get("before"))
        return cls(sha.get("forest"), sha.get("backbone"), str(backbone.get("name", "?")),
                   kept if None not in kept else None, (extra.get("forest") or {}).get("trees"))


def require_sklearn() -> Any:
    """Import joblib (and check scikit-learn, which unpickling the forest needs); one clear error if absent."""
    try:
        import joblib
        import sklearn.ensemble  # noqa: F401
    except ImportError as exc:
        missing = "scikit-learn" if (exc.name or "sklearn").startswith("sklearn") else exc.name
        raise ModelError(f"the ga-rf classifier needs scikit-learn and joblib ({missing} is not installed): "
                         f"{EXTRA_HINT}") from None
    return joblib


def load_artifact(path: str | Path) -> dict[str, Any]:
    """Unpickle a GA+RF artifact and check its shape; only for files you trust (see the module doc)."""
    joblib = require_sklearn()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            artifact = joblib.load(path)
    except Exception as exc:  # pickle, EOF, zlib and import errors alike: the file is not usable
        raise ModelError(f"cannot load GA+RF artifact {path}: {exc.__class__.__name__}: {exc}") from None
    for w in caught:
        if w.category.__name__ == "InconsistentVersionWarning":  # forest pickled by another scikit-learn
            log.warning("%s: %s", path.name, str(w.message).splitlines()[0])
    if not isinstance(artifact, dict) or artifact.get("format") != FORMAT:
        raise ModelError(f"{path} is not a GA+RF artifact ({FORMAT})")
    mask, forest = np.asarray(artifact["mask"], bool), artifact["forest"]
    if mask.ndim != 1 or not mask.any():
        raise ModelError(f"{path}: the feature mask is empty")
    if getattr(forest, "n_features_in_", None) != int(mask.sum()):
        raise ModelError(f"{path}: the forest takes {getattr(forest, 'n_features_in_', '?')} features "
                         f"but the mask selects {int(mask.sum())}")
    artifact["mask"] = mask
    return artifact


class GARFClassifier(ClassifierPlugin):
    """Backbone features -> mask -> forest probabilities: the ``"ga-rf"`` plugin."""

    kind = KIND

    def __init__(self, model_path: str | Path, num_threads: int | None = None, edgetpu: bool = False,
                 metadata: ModelMetadata | None = None):
        self.metadata = metadata or load_metadata(model_path)
        self.model_path, backbone_path = artifact_files(model_path)
        for path in (self.model_path, backbone_path):
            if not path.is_file():
                raise ModelError(f"model not found: {path} (a ga-rf model is NAME.json, NAME.joblib and "
                                 f"NAME.backbone.tflite side by side)")
        require_sklearn()
        spec = GARFSpec.from_metadata(self.metadata)
        for expected, path in ((spec.forest_sha256, self.model_path), (spec.backbone_sha256, backbone_path)):
            check_sha256(path, expected, "its metadata",
                         "the file is corrupt or was replaced (re-run 'python -m training garf')")
        artifact = load_artifact(self.model_path)
        self.labels = self.metadata.labels
        if tuple(artifact["labels"]) != tuple(self.labels):
            raise ModelError(f"{self.model_path.name} was trained for labels ({', '.join(artifact['labels'])}) "
                             f"but its metadata lists ({', '.join(self.labels)})")
        self.mask, self.forest = artifact["mask"], artifact["forest"]
        self._columns = np.asarray(self.forest.classes_, np.int64)
        if self._columns.min() < 0 or self._columns.max() >= len(self.labels):
            raise ModelError(f"{self.model_path}: forest classes {self._columns.tolist()} do not index "
                             f"{len(self.labels)} labels")
        self.forest.n_jobs = num_threads or 1  # one thread is fastest for the few faces of a frame
        self.backbone = TFLiteModel(backbone_path, num_threads, edgetpu, self.metadata)
        if self.backbone.n_outputs != len(self.mask):
            raise ModelError(f"{backbone_path.name} outputs {self.backbone.n_outputs} features but the mask in "
                             f"{self.model_path.name} has {len(self.mask)}")
        self.input_size = self.backbone.input_size
        self.backend = f"{self.backbone.backend}+sklearn"
        log.info("ga-rf model %s: %d of %d features, %d trees", self.model_path.name, int(self.mask.sum()),
                 len(self.mask), len(self.forest.estimators_))

    def features(self, faces: np.ndarray) -> np.ndarray:
        """The selected backbone features of a uint8 batch ``(n, h, w)``."""
        return self.backbone.outputs(faces)[:, self.mask]

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` for a uint8 batch ``(n, h, w)``."""
        views = self.metadata.views
        faces = views.expand(faces)
        probs = np.zeros((len(faces), len(self.labels)), np.float32)
        if len(faces):
            probs[:, self._columns] = self.forest.predict_proba(self.features(faces))
        return views.fold(probs)

    @property
    def size_bytes(self) -> int:
        return self.model_path.stat().st_size + self.backbone.size_bytes

    @classmethod
    def entry(cls, path: Path) -> Path:
        """Users pass ``NAME.json`` or ``NAME.joblib``; the metadata is the entry."""
        return metadata_path(path)

    @classmethod
    def files(cls, model_path: Path, meta: ModelMetadata) -> list[Path]:
        """The metadata, the forest and the backbone."""
        return [metadata_path(model_path), *artifact_files(model_path)]

    @classmethod
    def info(cls, model_path: Path, meta: ModelMetadata) -> list[str]:
        spec = GARFSpec.from_metadata(meta)
        kept = f"{spec.features[0]} of {spec.features[1]} " if spec.features else ""
        trees = f", {spec.trees} trees" if spec.trees else ""
        return [f"ga-rf      {kept}{spec.backbone} backbone features{trees} (needs scikit-learn: {EXTRA_HINT})"]
