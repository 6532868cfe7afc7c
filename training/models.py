"""The CNN architectures, selectable by name.

Every layer here converts to full-integer int8 TFLite and maps to the Edge TPU
(Conv2D, DepthwiseConv2D, FullyConnected, pooling, Add, ReLU, Softmax); ``convert``'s op
check verifies it on the converted model. The one exception is ``activation="leaky_relu"``
(edge-cnn, seed-cnn): LEAKY_RELU is not an Edge TPU op, so each one splits the graph
between TPU and CPU (see docs/ensembles.md). Augmentation is not part of these models (the
trainer wraps it around them for ``fit``), so the exported graph is inference only. Keyword
arguments are the hyperparameters that ``training tune`` searches and ``train --config``
reads; their defaults are the hand-picked designs.
"""

from __future__ import annotations

import inspect
from typing import Callable

from .common.keras_env import keras

layers = keras.layers
ACTIVATIONS = ("relu", "leaky_relu")
LEAKY_SLOPE = 0.1  # the usual slope in CNNs (Keras defaults to 0.3)


def _activation(name: str) -> keras.layers.Layer:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose from {', '.join(ACTIVATIONS)}")
    return layers.ReLU() if name == "relu" else layers.LeakyReLU(negative_slope=LEAKY_SLOPE)


def _l2(factor: float):
    return keras.regularizers.l2(factor) if factor else None


def seed_cnn(input_shape=(48, 48, 1), n_classes: int = 7, filters: int = 64, kernel: int = 3,
             wide_kernel: int = 5, dropout: float = 0.25, l2: float = 0.0, activation: str = "relu") -> keras.Model:
    """The seeds' network: four Conv-BN-act-MaxPool-Dropout blocks, dense 256 and 512 (about 4.4M params).

    Block widths are ``filters`` x (1, 2, 8, 8) (64, 128, 512, 512 by default); the second block
    uses ``wide_kernel``, the others ``kernel``, as the seeds' 3, 5, 3, 3.
    """
    reg = _l2(l2)
    inputs = keras.Input(input_shape)
    x = inputs
    for scale, k in ((1, kernel), (2, wide_kernel), (8, kernel), (8, kernel)):
        x = layers.Conv2D(filters * scale, k, padding="same", kernel_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = _activation(activation)(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    for units in (256, 512):
        x = layers.Dense(units, kernel_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = _activation(activation)(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(n_classes)(x)
    outputs = layers.Softmax()(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


def mini_xception(input_shape=(48, 48, 1), n_classes: int = 7, l2: float = 0.01) -> keras.Model:
    """Arriaga et al. 2017: residual depthwise-separable blocks, global pooling head (about 60k params)."""
    reg = keras.regularizers.l2(l2)
    inputs = keras.Input(input_shape)
    x = inputs
    for _ in range(2):
        x = layers.Conv2D(8, 3, use_bias=False, kernel_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    for filters in (16, 32, 64, 128):
        residual = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
        residual = layers.BatchNormalization()(residual)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, depthwise_regularizer=reg,
                                   pointwise_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, depthwise_regularizer=reg,
                                   pointwise_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Add()([x, residual])
    x = layers.Conv2D(n_classes, 3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Softmax()(x)
    return keras.Model(inputs, outputs, name="mini_xception")


def edge_cnn(input_shape=(48, 48, 1), n_classes: int = 7, width: int = 32, dropout: float = 0.3, kernel: int = 3,
             l2: float = 0.0, activation: str = "relu") -> keras.Model:
    """This project's design for accuracy per millisecond on a Pi.

    Plain 3x3 convolutions (the fastest int8 kernels in XNNPACK and native on the Edge TPU),
    doubled widths at each of four resolutions, BN folded into the convs at conversion,
    and a global-average-pooling head instead of a large dense layer, so most of the
    compute goes where the pixels are and the model stays small (about 1.2M params at width 32).
    """
    reg = _l2(l2)
    inputs = keras.Input(input_shape)
    x = inputs
    for stage, filters in enumerate((width, width * 2, width * 4, width * 8)):
        for _ in range(2):
            x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, kernel_regularizer=reg)(x)
            x = layers.BatchNormalization()(x)
            x = _activation(activation)(x)
        x = layers.MaxPooling2D(2)(x)
        if stage >= 1:
            x = layers.Dropout(dropout * stage / 3)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(n_classes, kernel_regularizer=reg)(x)
    outputs = layers.Softmax()(x)
    return keras.Model(inputs, outputs, name="edge_cnn")


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "edge-cnn": edge_cnn,
    "seed-cnn": seed_cnn,
    "mini-xception": mini_xception,
}


def build(name: str, input_shape=(48, 48, 1), n_classes: int = 7, **kwargs) -> keras.Model:
    """Build an architecture by its CLI name."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](input_shape, n_classes, **kwargs)


def hyperparameters(name: str) -> tuple[str, ...]:
    """The keyword arguments architecture ``name`` accepts (what a tuned config may set)."""
    return tuple(inspect.signature(ARCHITECTURES[name]).parameters)[2:]
