"""A trainable Keras network from an int8 ``edge-cnn`` TFLite model: the way back from a shipped model.

A run's float network stays in its run folder, which is never committed (runs are large and
belong to the machine that trained them: a GPU run's lives where it was landed). The int8 model
ships, and every weight is in it: each convolution's kernel with its batch normalisation folded
in, per-channel int8, and its bias. Unfolding puts them back into the network the trainer
builds, so the shipped model can be trained further (``python -m training train --init
edge_fer/models/default.tflite``) instead of trained again from nothing.

    python -m training unfold edge_fer/models/default.tflite --data ../shared/data/fer2013.npz --out s32.keras

writes the Keras network and prints its float accuracy, one pass, on val and test.

Batch normalisation comes back with statistics measured on the faces given: each BN layer gets
the mean and variance of its convolution's output there, and a scale and shift that undo them,
so in inference the network computes exactly what the int8 model's dequantised weights compute,
and in training (batch statistics) very nearly that. The int8 rounding of the weights (at most
half a step of each channel's scale) stays; training starts from there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_fer.errors import ModelError
from edge_fer.interpreter import make_interpreter
from edge_fer.metadata import load_metadata
from edge_fer.preprocess import DEFAULT_SCALING

# Ops an edge-cnn model holds besides its weighted layers (QUANTIZE/DEQUANTIZE: float-I/O conversions).
WEIGHTLESS_OPS = {"MAX_POOL_2D", "MEAN", "QUANTIZE", "DEQUANTIZE", "SOFTMAX", "RESHAPE"}


@dataclass(frozen=True)
class FoldedLayer:
    """One weighted op of the int8 model, dequantised, in Keras' layout (Conv2D: kh, kw, in, out; Dense: in, out)."""

    kind: str  # "conv" or "dense"
    kernel: np.ndarray
    bias: np.ndarray


def _dequantized(interpreter, detail: dict) -> np.ndarray:
    """A constant tensor in float: ``(q - zero_point) * scale``, per channel along its quantised dimension."""
    values = interpreter.get_tensor(detail["index"]).astype(np.float32)
    q = detail["quantization_parameters"]
    scales, zeros = np.asarray(q["scales"], np.float32), np.asarray(q["zero_points"], np.float32)
    if scales.size == 0:
        return values
    shape = [1] * values.ndim
    shape[q["quantized_dimension"]] = -1
    return (values - zeros.reshape(shape)) * scales.reshape(shape)


def read_folded(model_path: str | Path) -> list[FoldedLayer]:
    """The convolutions and dense layers of an int8 TFLite model, in graph order; a ModelError if it holds others."""
    interpreter, _ = make_interpreter(model_path, graph_ops=True)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    layers = []
    for op in interpreter._get_ops_details():  # the op list: the only public view of a TFLite graph's structure
        name = op["op_name"]
        if name in ("CONV_2D", "FULLY_CONNECTED"):
            weights, bias = (_dequantized(interpreter, details[i]) for i in op["inputs"][1:3])
            if name == "CONV_2D":  # TFLite keeps (out, kh, kw, in)
                layers.append(FoldedLayer("conv", weights.transpose(1, 2, 3, 0), bias))
            else:  # (out, in)
                layers.append(FoldedLayer("dense", weights.T, bias))
        elif name not in WEIGHTLESS_OPS:
            raise ModelError(f"{model_path}: its {name} op has no place in an edge-cnn network, so it cannot be "
                             f"unfolded (give the run's model.keras instead)")
    return layers


def unfold(model_path: str | Path, faces: np.ndarray):
    """The Keras ``edge-cnn`` network of an int8 model, BN restored from ``faces`` (scaled, ``(n, h, w, 1)``).

    A ModelError when the model is not an edge-cnn network with the trainer's pixel scaling.
    """
    from .common.keras_env import keras
    from .models import edge_cnn

    scaling = load_metadata(model_path).scaling
    if scaling != DEFAULT_SCALING:
        raise ModelError(f"{model_path} scales pixels by {scaling.to_dict()}, the trainer by "
                         f"{DEFAULT_SCALING.to_dict()}: it cannot be trained further here")
    folded = read_folded(model_path)
    convs = [f for f in folded if f.kind == "conv"]
    dense = [f for f in folded if f.kind == "dense"]
    if not convs or len(dense) != 1:
        raise ModelError(f"{model_path} is not an edge-cnn network (convolutions, then one dense layer)")
    width = convs[0].kernel.shape[-1]
    network = edge_cnn(input_shape=faces.shape[1:], n_classes=dense[0].kernel.shape[1], width=width)
    conv_layers = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
    bn_layers = [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]
    expected = [tuple(layer.kernel.shape) for layer in conv_layers]
    if expected != [f.kernel.shape for f in convs]:
        raise ModelError(f"{model_path} is not an edge-cnn network of width {width}: its convolutions are "
                         f"{[f.kernel.shape for f in convs]}")
    for conv, bn, layer in zip(conv_layers, bn_layers, convs):
        conv.set_weights([layer.kernel])
        z = keras.Model(network.inputs, conv.output).predict(faces, batch_size=256, verbose=0)
        mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
        # gamma, beta, moving mean, moving variance: BN(z) = z + bias, what the folded op computes.
        bn.set_weights([np.sqrt(var + bn.epsilon), mean + layer.bias, mean, var])
    network.get_layer(index=-2).set_weights([dense[0].kernel, dense[0].bias])
    return network


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="an int8 edge-cnn .tflite (the shipped one, a converted run's)")
    p.add_argument("--data", required=True, help="FER2013 .npz, CSV or image folder: train faces restore BN, "
                                                 "val and test are scored")
    p.add_argument("--out", type=Path, required=True, help="the .keras file to write")


def run(args: argparse.Namespace) -> dict:
    """Unfold ``args.model`` into ``args.out``; returns (and prints) its float accuracy, one pass, per split."""
    from edge_fer.preprocess import scale_pixels

    from .common.data import load_splits

    splits = load_splits(args.data)
    network = unfold(args.model, scale_pixels(splits.train.x[:4096], DEFAULT_SCALING)[..., None])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    network.save(args.out)
    scores = {}
    for name, faces in (("val", splits.val), ("test", splits.test)):
        if faces is not None:
            p = network.predict(scale_pixels(faces.x, DEFAULT_SCALING)[..., None], batch_size=512, verbose=0)
            scores[name] = round(float((p.argmax(1) == faces.y).mean()), 4)
    print(f"{args.out}: {network.count_params():,} parameters; float, one pass: "
          + ", ".join(f"{k} {v:.2%}" for k, v in scores.items()))
    return scores
