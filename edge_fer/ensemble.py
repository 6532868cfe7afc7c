"""The ensemble classifier: several TFLite emotion models on the same faces, combined into one answer.

An ensemble is one metadata file beside its member models, all written by ``python -m training ensemble``:

    NAME.json      metadata (``kind: "ensemble"``): labels, input size, figures, and in ``extra``
                     members:  [{"file": "a_int8.tflite", "sha256": "..."}, ...]  (relative to NAME.json)
                     combiner: {"kind": "average", "weights": [...]}
                               {"kind": "tree", "classes", "children_left", "children_right", "feature",
                                "threshold", "value"}
                               {"kind": "logistic", "classes", "coef", "intercept"}
    a_int8.tflite  each member with its own metadata (a_int8.json), as ``convert`` wrote it

``--model NAME.json`` loads it like any model: this is the ``"ensemble"`` plugin of
:mod:`edge_fer.classifier_api`. Every member runs through its own
:class:`~edge_fer.tflite.TFLiteClassifier` (its scaling, quantization and mirror averaging) on
the same uint8 batch, so members must share labels, input size and face margin. The combiner
sees the members' probabilities side by side, ``(n, members x labels)`` in member order. The
stacked combiners were fitted by scikit-learn on the workstation and are stored as plain
arrays: a tree's predict is a walk over its node arrays, logistic regression a matrix product
and a softmax, so the device needs numpy only, and the JSON holds no pickle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from .classifier_api import ClassifierPlugin
from .errors import ModelError
from .metadata import ModelMetadata, check_sha256, load_metadata, metadata_path
from .tflite import TFLiteClassifier

log = logging.getLogger(__name__)

KIND = "ensemble"
COMBINERS = ("average", "tree", "logistic")


class Combiner(Protocol):
    kind: str

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        """Member probabilities ``(n, members, labels)`` -> ensemble probabilities ``(n, labels)``."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Average:
    """Weighted mean of the members' probabilities (uniform weights: plain averaging)."""

    weights: np.ndarray  # (members,), summing to 1
    kind: str = "average"

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        return np.einsum("nmk,m->nk", probs, self.weights)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": self.weights.tolist()}


@dataclass(frozen=True)
class Tree:
    """A fitted decision tree over the stacked probabilities, as scikit-learn's ``tree_`` arrays.

    Leaves have ``children_left == -1``; ``value`` rows are class distributions over ``classes``
    (label indices; a class missing from the fitting data has no column and gets 0).
    """

    classes: np.ndarray  # (c,) label indices
    children_left: np.ndarray  # (nodes,)
    children_right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray  # float64, compared with float32 features as scikit-learn does
    value: np.ndarray  # (nodes, c)
    n_labels: int
    kind: str = "tree"

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        x = probs.reshape(len(probs), -1).astype(np.float32)
        rows = np.arange(len(x))
        node = np.zeros(len(x), np.int64)
        while True:  # children always have larger ids (checked on load), so this ends
            left = self.children_left[node]
            inner = left >= 0
            if not inner.any():
                break
            go_left = x[rows, np.where(inner, self.feature[node], 0)] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, left, self.children_right[node]), node)
        return _columns(self.value[node], self.classes, self.n_labels)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": self.classes.tolist(), "children_left": self.children_left.tolist(),
                "children_right": self.children_right.tolist(), "feature": self.feature.tolist(),
                "threshold": self.threshold.tolist(), "value": self.value.tolist()}


@dataclass(frozen=True)
class Logistic:
    """Multinomial logistic regression over the stacked probabilities: ``softmax(x @ coef.T + intercept)``."""

    classes: np.ndarray  # (c,) label indices
    coef: np.ndarray  # (c, members x labels); one row for two classes, as scikit-learn stores it
    intercept: np.ndarray  # (c,) or (1,)
    n_labels: int
    kind: str = "logistic"

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        z = probs.reshape(len(probs), -1).astype(np.float64) @ self.coef.T + self.intercept
        if z.shape[1] == 1:  # binary: scikit-learn's sigmoid is a softmax over (0, z)
            z = np.concatenate([np.zeros_like(z), z], axis=1)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return _columns(e / e.sum(axis=1, keepdims=True), self.classes, self.n_labels)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": self.classes.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist()}


def _columns(probs: np.ndarray, classes: np.ndarray, n_labels: int) -> np.ndarray:
    out = np.zeros((len(probs), n_labels), np.float32)
    out[:, classes] = probs
    return out


def combiner_from_dict(d: Any, n_members: int, n_labels: int, where: str = "ensemble") -> Combiner:
    """Rebuild and check a combiner from its JSON form; any inconsistency is a one-line ModelError."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in COMBINERS:
        raise ModelError(f"{where}: unknown combiner {kind!r} (known: {', '.join(COMBINERS)})")
    n_features = n_members * n_labels
    try:
        if kind == "average":
            weights = np.asarray(d["weights"], np.float64)
            if weights.shape != (n_members,) or (weights < 0).any() or not np.isclose(weights.sum(), 1):
                raise ValueError(f"{n_members} non-negative weights summing to 1 expected")
            return Average(weights)
        classes = np.asarray(d["classes"], np.int64)
        if classes.ndim != 1 or len(classes) < 2 or classes.min() < 0 or classes.max() >= n_labels:
            raise ValueError(f"classes must be at least 2 label indices below {n_labels}")
        if kind == "logistic":
            coef, intercept = np.asarray(d["coef"], np.float64), np.asarray(d["intercept"], np.float64)
            rows = 1 if len(classes) == 2 else len(classes)
            if coef.shape != (rows, n_features) or intercept.shape != (rows,):
                raise ValueError(f"coef {coef.shape} / intercept {intercept.shape} do not fit {len(classes)} "
                                 f"classes over {n_features} inputs")
            return Logistic(classes, coef, intercept, n_labels)
        tree = Tree(classes, *(np.asarray(d[k], np.int64) for k in ("children_left", "children_right", "feature")),
                    np.asarray(d["threshold"], np.float64), np.asarray(d["value"], np.float64), n_labels)
        _check_tree(tree, n_features)
        return tree
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: malformed {kind} combiner ({exc})") from None


def _check_tree(t: Tree, n_features: int) -> None:
    n = len(t.children_left)
    if n == 0 or any(a.shape != (n,) for a in (t.children_right, t.feature, t.threshold)):
        raise ValueError("node arrays must be non-empty and of one length")
    if t.value.shape != (n, len(t.classes)):
        raise ValueError(f"value must be (nodes, classes) = ({n}, {len(t.classes)})")
    ids, inner = np.arange(n), t.children_left >= 0
    if ((inner & ((t.children_left <= ids) | (t.children_right <= ids) | (t.children_right >= n)
                  | (t.children_left >= n) | (t.feature < 0) | (t.feature >= n_features))).any()
            or (~inner & (t.children_right >= 0)).any()):
        raise ValueError(f"children must point forward inside the tree and features lie below {n_features}")


def check_members(members: Sequence[Any], names: Sequence[str]) -> None:
    """Members (anything with ``labels``, ``input_size`` and ``metadata.face_margin``) must see faces alike."""
    first, name0 = members[0], names[0]
    for m, name in zip(members[1:], names[1:]):
        if tuple(m.labels) != tuple(first.labels):
            raise ModelError(f"ensemble members disagree on labels: {name0} has ({', '.join(first.labels)}) "
                             f"but {name} has ({', '.join(m.labels)})")
        if tuple(m.input_size) != tuple(first.input_size):
            raise ModelError(f"ensemble members take different input sizes: {name0} "
                             f"{first.input_size[0]}x{first.input_size[1]}, {name} {m.input_size[0]}x{m.input_size[1]}"
                             f" (members share one face crop)")
        if m.metadata.face_margin != first.metadata.face_margin:
            raise ModelError(f"ensemble members crop faces differently: face_margin {first.metadata.face_margin} "
                             f"in {name0}, {m.metadata.face_margin} in {name}")


@dataclass(frozen=True)
class Member:
    """One member as the ensemble's metadata lists it; the sha256 catches a member replaced after the fact."""

    file: str                 # relative to the ensemble's JSON
    sha256: str | None = None


@dataclass(frozen=True)
class EnsembleSpec:
    """The ensemble's part of its metadata (``extra``): its members, and their combiner in JSON form."""

    members: tuple[Member, ...]
    combiner: Any  # checked against the members by combiner_from_dict when the ensemble loads

    @classmethod
    def from_metadata(cls, model_path: str | Path, meta: ModelMetadata) -> EnsembleSpec:
        members = meta.extra.get("members")
        if not isinstance(members, list) or not members or not all(
                isinstance(m, dict) and isinstance(m.get("file"), str) for m in members):
            raise ModelError(f"{metadata_path(model_path).name}: an ensemble needs extra.members, a list of "
                             f"{{\"file\": ...}}")
        return cls(tuple(Member(m["file"], m.get("sha256")) for m in members), meta.extra.get("combiner"))

    def paths(self, model_path: str | Path) -> list[Path]:
        """The member model files, in member order."""
        return [metadata_path(model_path).parent / m.file for m in self.members]


class EnsembleClassifier(ClassifierPlugin):
    """Members' probabilities -> combiner: the ``"ensemble"`` plugin."""

    kind = KIND

    def __init__(self, model_path: str | Path, num_threads: int | None = None, edgetpu: bool = False,
                 metadata: ModelMetadata | None = None):
        self.model_path = metadata_path(model_path)
        self.metadata = metadata or load_metadata(model_path)
        where = self.model_path.name
        spec = EnsembleSpec.from_metadata(self.model_path, self.metadata)
        self.member_paths = spec.paths(self.model_path)
        if self.metadata.views.count > 1:
            raise ModelError(f"{where}: test-time views (mirror, zoom) are set on each member, not on the ensemble")
        for path, m in zip(self.member_paths, spec.members):
            if not path.is_file():
                raise ModelError(f"{where}: member model not found: {path}")
            check_sha256(path, m.sha256, where, "the member was replaced (re-run 'python -m training ensemble')")
        self.members = [TFLiteClassifier(p, num_threads, edgetpu) for p in self.member_paths]
        names = [p.name for p in self.member_paths]
        check_members(self.members, names)
        self.labels = self.metadata.labels
        self.input_size = self.members[0].input_size
        if tuple(self.members[0].labels) != tuple(self.labels) or tuple(self.metadata.input_size) != self.input_size:
            raise ModelError(f"{where}: its labels or input size differ from its members' ({names[0]})")
        self.combiner = combiner_from_dict(spec.combiner, len(self.members), len(self.labels), where)
        self.backend = f"{self.members[0].backend}+{self.combiner.kind}"
        log.info("ensemble %s: %d members, %s", where, len(self.members), self.combiner.kind)

    def member_probs(self, faces: np.ndarray) -> np.ndarray:
        """Each member's probabilities, ``(n, members, labels)``."""
        return np.stack([m.predict(faces) for m in self.members], axis=1)

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, len(labels))`` for a uint8 batch ``(n, h, w)``."""
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return self.combiner(self.member_probs(faces)).astype(np.float32)

    @property
    def size_bytes(self) -> int:
        return self.model_path.stat().st_size + sum(m.size_bytes for m in self.members)

    @classmethod
    def files(cls, model_path: Path, meta: ModelMetadata) -> list[Path]:
        """The ensemble's JSON, then its members."""
        return [metadata_path(model_path), *EnsembleSpec.from_metadata(model_path, meta).paths(model_path)]

    @classmethod
    def info(cls, model_path: Path, meta: ModelMetadata) -> list[str]:
        spec = EnsembleSpec.from_metadata(model_path, meta)
        combiner = spec.combiner.get("kind") if isinstance(spec.combiner, dict) else None
        return [f"members    {', '.join(m.file for m in spec.members)}", f"combiner   {combiner}"]
