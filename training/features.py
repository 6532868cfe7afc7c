"""Backbones that turn faces into feature vectors, and an on-disk cache of their features.

    python -m training features --data ../shared/data/fer2013.npz --backbone cnn \\
        --cnn runs/edge-cnn-w24 --out features/cnn-w24

Every backbone takes what the CNNs take, gray faces ``(batch, h, w, 1)`` scaled by
:func:`edge_fer.preprocess.scale_pixels`, so one TFLite input contract serves the device:

- ``xception``: Keras ``Xception(include_top=False, pooling="avg")``, 2048 features. The face
  is resized to ``--size`` (at least 71, Xception's minimum), replicated to 3 channels and
  mapped to Xception's -1..1 range inside the graph. ``--weights imagenet`` downloads the
  ImageNet weights once (or finds them in ``~/.keras/models``), ``--weights PATH`` loads a
  local ``.h5``, ``--weights none`` keeps random weights (tests only: the features are noise).
- ``cnn``: the penultimate layer of this project's trained CNN (the input of its last Dense
  layer; 8 x width features for edge-cnn), or ``--layer NAME``; a 4-D output is average-pooled.

The cache folder holds ``SPLIT.npy`` (float32 features), ``SPLIT_y.npy`` and ``manifest.json``
naming what produced them (backbone, weights file hash, dataset hash); a cache whose manifest
does not match the request is recomputed rather than silently reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_fer.errors import DataError, EdgeFerError, ModelError
from edge_fer.metadata import sha256_of
from edge_fer.preprocess import DEFAULT_SCALING, Scaling, scale_pixels

from .common.data import DEFAULT_SEED
from .common.runs import first_line, recorded_scaling

BACKBONES = ("xception", "cnn")
CACHE_FORMAT = "edge-fer-features/1"
XCEPTION_MIN_SIZE = 71


@dataclass(frozen=True)
class BackboneSpec:
    """What identifies a backbone: enough to rebuild it, and to tell two feature caches apart."""

    name: str  # "xception" or "cnn"
    weights: str  # xception: "imagenet", "none" or a .h5 path; cnn: the .keras/.h5 model
    size: int = XCEPTION_MIN_SIZE  # xception: side the face is resized to inside the graph
    layer: str | None = None  # cnn: feature layer (default: the input of the last Dense layer)
    weights_sha256: str | None = None  # of the weights/model file, when it is a file

    @classmethod
    def resolve(cls, name: str, weights: str | None = None, cnn: str | Path | None = None, size: int = 71,
                layer: str | None = None) -> "BackboneSpec":
        """Check a backbone request before TensorFlow loads; a CNN run folder means its model.keras."""
        if name not in BACKBONES:
            raise EdgeFerError(f"unknown backbone {name!r}: choose from {', '.join(BACKBONES)}")
        if name == "cnn":
            if cnn is None:
                raise EdgeFerError("--backbone cnn needs --cnn RUN_DIR (or a .keras/.h5 model file)")
            path = Path(cnn) / "model.keras" if Path(cnn).is_dir() else Path(cnn)
            if not path.is_file():
                raise ModelError(f"CNN model not found: {path}")
            return cls("cnn", str(path), size=0, layer=layer, weights_sha256=sha256_of(path))
        if size < XCEPTION_MIN_SIZE:
            raise EdgeFerError(f"--size {size}: Xception needs at least {XCEPTION_MIN_SIZE}x{XCEPTION_MIN_SIZE}")
        weights = weights or "imagenet"
        if weights in ("imagenet", "none"):
            return cls("xception", weights, size)
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"Xception weights not found: {path} (use imagenet, none or a local .h5 file)")
        if path.suffix.lower() not in (".h5", ".hdf5"):
            raise ModelError(f"Xception weights must be a .h5 file, not {path.name}")
        return cls("xception", str(path), size, weights_sha256=sha256_of(path))

    @property
    def label(self) -> str:
        """A short human name, e.g. ``xception-71 (imagenet)`` or ``cnn edge_cnn`` ."""
        if self.name == "xception":
            return f"xception-{self.size} ({Path(self.weights).name if self.weights_sha256 else self.weights})"
        return f"cnn {Path(self.weights).parent.name or Path(self.weights).name}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_backbone(spec: BackboneSpec):
    """The Keras feature extractor for ``spec``: scaled gray faces in, a flat feature vector out."""
    from .common.runs import load_keras
    from .common.tf_env import keras

    if spec.name == "cnn":
        return _cnn_features(load_keras(spec.weights), spec.layer)
    layers = keras.layers
    inputs = keras.Input((48, 48, 1), name="face")
    x = layers.Resizing(spec.size, spec.size, interpolation="bilinear", name="to_xception_size")(inputs)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(2.0, offset=-1.0, name="to_xception_range")(x)  # 0..1 -> -1..1, Xception's "tf" mode
    weights = None if spec.weights == "none" else spec.weights
    try:
        base = keras.applications.Xception(include_top=False, weights=weights, input_shape=(spec.size, spec.size, 3),
                                           pooling="avg")
    except Exception as exc:  # download failures, wrong or corrupt weight files
        hint = " (no network? pass --weights PATH to a local .h5)" if weights == "imagenet" else ""
        raise ModelError(f"cannot build Xception with weights {spec.weights}: {first_line(exc)}{hint}") from None
    return keras.Model(inputs, base(x), name=f"xception{spec.size}_features")


def _cnn_features(model, layer: str | None):
    """The CNN cut at ``layer``'s output, or at the input of its last Dense layer (the classifier head)."""
    from .common.tf_env import keras

    if layer is not None:
        try:
            out = model.get_layer(layer).output
        except ValueError:
            raise ModelError(f"{model.name} has no layer {layer!r}; layers: "
                             f"{', '.join(lay.name for lay in model.layers)}") from None
    else:
        dense = [lay for lay in model.layers if isinstance(lay, keras.layers.Dense)]
        if not dense:
            raise ModelError(f"{model.name} has no Dense classification head; name the feature layer with --layer")
        out = dense[-1].input
    if len(out.shape) == 4:
        out = keras.layers.GlobalAveragePooling2D(name="feature_pool")(out)
    if len(out.shape) != 2:
        raise ModelError(f"feature layer output has shape {tuple(out.shape)}; expected (batch, features)")
    return keras.Model(model.input, out, name=f"{model.name}_features")


def extract(model, faces: np.ndarray, scaling: Scaling = DEFAULT_SCALING, batch_size: int = 256,
            desc: str = "features", progress: bool = True) -> np.ndarray:
    """Features of uint8 faces ``(n, h, w)``, in batches, with a progress bar on stderr."""
    from tqdm import tqdm

    if tuple(faces.shape[1:]) != tuple(model.input_shape[1:3]):
        raise ModelError(f"{model.name} takes {model.input_shape[1]}x{model.input_shape[2]} faces, "
                         f"the data has {faces.shape[1]}x{faces.shape[2]}")
    out = np.empty((len(faces), model.output_shape[-1]), np.float32)
    with tqdm(total=len(faces), desc=desc, unit="face", disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(faces), batch_size):
            x = scale_pixels(faces[i : i + batch_size], scaling)[..., None]
            out[i : i + len(x)] = np.asarray(model(x, training=False))
            bar.update(len(x))
    return out


@dataclass
class FeatureSet:
    """Cached features per split, and the manifest that produced them."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    manifest: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])


def data_identity(path: str | Path, limit: int | None = None) -> dict[str, Any]:
    """The dataset as the cache manifest records it: a file's sha256, a folder's file listing size."""
    path = Path(path)
    if path.is_file():
        return {"path": str(path), "sha256": sha256_of(path), "limit": limit}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {"path": str(path), "files": len(files), "bytes": sum(p.stat().st_size for p in files), "limit": limit}


def faces_identity(faces) -> dict[str, Any]:
    """A split as the cache manifest records it: its size and a digest of its faces and labels, so a val
    carved with another seed (a dataset without one) is another split, not a cache hit."""
    digest = hashlib.sha256(np.ascontiguousarray(faces.x).tobytes())
    digest.update(np.asarray(faces.y, np.int64).tobytes())
    return {"n": len(faces), "sha256": digest.hexdigest()[:16]}


def cached_features(cache_dir: Path, spec: BackboneSpec, data: str | Path, splits: dict[str, Any],
                    scaling: Scaling, limit: int | None = None, batch_size: int = 256,
                    progress: bool = True) -> FeatureSet:
    """The features of ``splits`` (name -> LabeledFaces) from ``cache_dir``, extracting them if the cache misses."""
    want = {"format": CACHE_FORMAT, "backbone": spec.to_dict(), "data": data_identity(data, limit),
            "scaling": scaling.to_dict(), "splits": {name: faces_identity(faces) for name, faces in splits.items()}}
    manifest_path = cache_dir / "manifest.json"
    if manifest_path.exists():
        try:
            have = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            have = {}
        if {k: have.get(k) for k in want} == want:
            print(f"features: using the cache in {cache_dir}", file=sys.stderr)
            return FeatureSet({s: np.load(cache_dir / f"{s}.npy") for s in splits},
                              {s: np.load(cache_dir / f"{s}_y.npy") for s in splits}, have)
        print(f"features: {cache_dir} holds features of something else; recomputing", file=sys.stderr)
    model = build_backbone(spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    xs, ys = {}, {}
    for name, faces in splits.items():
        xs[name] = extract(model, faces.x, scaling, batch_size, desc=f"{name} features", progress=progress)
        ys[name] = faces.y.astype(np.int64)
        np.save(cache_dir / f"{name}.npy", xs[name])
        np.save(cache_dir / f"{name}_y.npy", ys[name])
    manifest = {**want, "dim": int(model.output_shape[-1]), "seconds": round(time.time() - started, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")  # last: a partial cache never matches
    return FeatureSet(xs, ys, manifest)


def add_backbone_arguments(p: argparse.ArgumentParser) -> None:
    """The options that pick a backbone, shared by ``features`` and ``garf``."""
    g = p.add_argument_group("backbone")
    g.add_argument("--backbone", choices=BACKBONES, default="xception",
                   help="xception (ImageNet features) or cnn (this project's trained CNN); default: xception")
    g.add_argument("--weights", default="imagenet", metavar="imagenet|none|PATH",
                   help="xception weights: imagenet (downloaded once to ~/.keras/models), a local .h5, or none "
                        "(random; for tests)")
    g.add_argument("--cnn", type=Path, metavar="RUN_OR_FILE",
                   help="backbone cnn: a training run folder (uses its model.keras) or a .keras/.h5 file")
    g.add_argument("--layer", metavar="NAME", help="backbone cnn: feature layer (default: input of the last Dense)")
    g.add_argument("--size", type=int, default=XCEPTION_MIN_SIZE,
                   help=f"xception: resize faces to SIZE x SIZE inside the graph (>= {XCEPTION_MIN_SIZE}; "
                        f"cost grows with SIZE^2)")
    g.add_argument("--batch-size", type=int, default=256, help="faces per extraction batch")


def backbone_spec(args: argparse.Namespace) -> BackboneSpec:
    return BackboneSpec.resolve(args.backbone, args.weights, args.cnn, args.size, args.layer)


def backbone_scaling(spec: BackboneSpec) -> Scaling:
    """The pixel scaling the backbone expects: a CNN's from its run's metrics.json, else 0..1."""
    metrics = Path(spec.weights).parent / "metrics.json"
    if spec.name != "cnn" or not metrics.is_file():
        return DEFAULT_SCALING
    try:
        return recorded_scaling(json.loads(metrics.read_text()))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{metrics}: unreadable pixel scaling ({exc})") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FER2013 .npz, CSV (emotion,pixels,Usage) or image folder")
    p.add_argument("--out", required=True, type=Path, help="cache folder (SPLIT.npy, SPLIT_y.npy, manifest.json)")
    p.add_argument("--limit", type=int, default=None, help="only the first N faces of each split (smoke tests)")
    add_backbone_arguments(p)


def load_data_splits(data: str, limit: int | None, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """train/val(/test) as LabeledFaces, cut to ``limit`` faces each; val carved like the CNN trainer's."""
    from edge_fer.datasets import LabeledFaces

    from .common.data import load_splits

    if not Path(data).exists():
        raise DataError(f"dataset not found: {data}")
    s = load_splits(data, seed=seed)
    out = {"train": s.train, "val": s.val, **({"test": s.test} if s.test is not None else {})}
    if limit:
        out = {k: LabeledFaces(v.x[:limit], v.y[:limit], v.labels) for k, v in out.items()}
    return out


def run(args: argparse.Namespace) -> FeatureSet:
    spec = backbone_spec(args)
    splits = load_data_splits(args.data, args.limit)
    fs = cached_features(args.out, spec, args.data, splits, backbone_scaling(spec), args.limit, args.batch_size)
    sizes = ", ".join(f"{k} {v.shape[0]}" for k, v in fs.x.items())
    print(f"{args.out}: {fs.dim} features from {spec.label} ({sizes})")
    return fs
