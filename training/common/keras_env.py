"""Import Keras for training: on TensorFlow, unless ``KERAS_BACKEND`` names ``jax`` or ``torch``.

The trainer and the architectures use only Keras layers, Keras ops and numpy arrays, so
``python -m training train`` also runs on a GPU machine that holds PyTorch or JAX but no
TensorFlow (``scripts/device-train``). A ``.keras`` file carries no backend: conversion
to TFLite, which needs TensorFlow, reads it on the workstation as if it were trained there.
"""

import os

if os.environ.setdefault("KERAS_BACKEND", "tensorflow") == "tensorflow":
    from .tf_env import keras  # noqa: F401  (sets TensorFlow's oneDNN switch before it loads)
else:
    import keras  # noqa: F401

__all__ = ["keras"]
