"""The CNN architectures, selectable by name.

Every layer here converts to full-integer int8 TFLite and maps to the Edge TPU
(Conv2D, DepthwiseConv2D, FullyConnected, pooling, Add, ReLU, Softmax); ``convert``'s op
check verifies it on the converted model. Augmentation is not part of these models, so the
exported graph is inference only.
"""

from __future__ import annotations

from typing import Callable

from .tf_env import keras

layers = keras.layers


def seed_cnn(input_shape=(48, 48, 1), n_classes: int = 7) -> keras.Model:
    """The seeds' network: four Conv-BN-ReLU-MaxPool-Dropout blocks, dense 256 and 512 (about 4.4M params)."""
    inputs = keras.Input(input_shape)
    x = inputs
    for filters, kernel in ((64, 3), (128, 5), (512, 3), (512, 3)):
        x = layers.Conv2D(filters, kernel, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    for units in (256, 512):
        x = layers.Dense(units)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(0.25)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
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


def edge_cnn(input_shape=(48, 48, 1), n_classes: int = 7, width: int = 32, dropout: float = 0.3) -> keras.Model:
    """This project's design for accuracy per millisecond on a Pi.

    Plain 3x3 convolutions (the fastest int8 kernels in XNNPACK and native on the Edge TPU),
    doubled widths at each of four resolutions, BN folded into the convs at conversion,
    and a global-average-pooling head instead of a large dense layer, so most of the
    compute goes where the pixels are and the model stays small (about 1.2M params at width 32).
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for stage, filters in enumerate((width, width * 2, width * 4, width * 8)):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        if stage >= 1:
            x = layers.Dropout(dropout * stage / 3)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(n_classes)(x)
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
