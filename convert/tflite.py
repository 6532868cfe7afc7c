"""Keras -> TFLite in the five formats the device can run.

The input stays what training fed the model: ``(batch, h, w, 1)`` floats from
:func:`edge_fer.preprocess.scale_pixels`. Full-integer formats (``int8``/``uint8``) quantize
that input too, so the device maps pixels straight to int8 through a lookup table. The batch
dimension is left dynamic (``-1`` in the input's ``shape_signature``) so the device classifies
every face of a frame in one invoke; ``batch_size=1`` pins it for the Edge TPU compiler.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from edge_fer.datasets import LabeledFaces
from edge_fer.errors import ModelError
from edge_fer.interpreter import quiet_native_stderr
from edge_fer.labels import FER2013_LABELS
from edge_fer.preprocess import DEFAULT_SCALING, Scaling, scale_pixels

from training.common.runs import first_line
from training.common.tf_env import keras, tf

from . import FORMATS, INTEGER_FORMATS


def input_size(model: keras.Model, n_labels: int = len(FER2013_LABELS)) -> tuple[int, int]:
    """The model's ``(h, w)``, after checking it takes gray faces and emits one score per label."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 1 or None in shape[1:3]:
        raise ModelError(f"model {model.name!r} takes {shape}; expected (batch, h, w, 1) gray faces")
    outputs = model.output_shape[-1]
    if outputs != n_labels:
        raise ModelError(f"model {model.name!r} outputs {outputs} scores; expected {n_labels} "
                         f"({', '.join(FER2013_LABELS)})")
    return int(shape[1]), int(shape[2])


def calibration_faces(train: LabeledFaces, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training faces drawn evenly across classes, so rare classes shape the int8 ranges too.

    Each class gets an equal share (all of it when it is smaller); the rest is filled at random.
    """
    rng = np.random.default_rng(seed)
    n = min(n, len(train))
    classes = np.unique(train.y)
    share = n // len(classes)
    picked = [rng.choice(idx, min(share, len(idx)), replace=False)
              for idx in (np.flatnonzero(train.y == c) for c in classes)]
    chosen = np.concatenate(picked)
    rest = np.setdiff1d(np.arange(len(train)), chosen)
    chosen = np.concatenate([chosen, rng.choice(rest, n - len(chosen), replace=False)])
    return train.x[rng.permutation(chosen)]


def strip_softmax(model: keras.Model) -> tuple[keras.Model, bool]:
    """The model without its final Softmax layer, and whether there was one to strip.

    The device applies the softmax in numpy instead (7 numbers per face, nothing to save).
    Two reasons: TFLite's int8 SOFTMAX is the one op XNNPACK does not run, and it is compiled
    differently on aarch64 (a uint16 lookup table) than on x86, so with it a Pi's outputs
    differ from the workstation's by 1 LSB; without it they are bit-identical (scripts/pi-check).
    And the int8 logits keep more resolution than int8 probabilities in steps of 1/256.
    """
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return keras.Model(model.inputs, last.input, name=model.name), True
    return model, False


def to_tflite(model: keras.Model, fmt: str, calibration: np.ndarray | None = None,
              scaling: Scaling = DEFAULT_SCALING, batch_size: int | None = None, logits: bool = False) -> bytes:
    """Convert ``model`` to ``fmt`` (see :data:`FORMATS`); ``calibration`` are uint8 faces ``(n, h, w)``.

    ``batch_size=None`` keeps the batch dynamic; 1 gives the static shape the Edge TPU needs.
    ``logits=True`` drops a final Softmax layer (see :func:`strip_softmax`).
    """
    if fmt not in FORMATS:
        raise ModelError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    if logits:
        model, _ = strip_softmax(model)
    if batch_size is not None:
        fixed = keras.Input(model.input_shape[1:], batch_size=batch_size)
        model = keras.Model(fixed, model(fixed), name=model.name)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif fmt in INTEGER_FORMATS:
        if calibration is None or len(calibration) == 0:
            raise ModelError(f"{fmt} conversion needs calibration faces")
        x = scale_pixels(calibration, scaling)[..., None]
        converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, fmt)
    try:
        with _quiet():
            return converter.convert()
    except Exception as exc:  # ConverterError, RuntimeError from calibration, ...
        shape = "batch 1" if batch_size else "dynamic batch"
        raise ModelError(f"{fmt} conversion ({shape}) of {model.name!r} failed: {first_line(exc)}") from None


@contextlib.contextmanager
def _quiet():
    """Keep converter chatter off the console; failures still surface as the exception's message.

    Keras' export prints to ``sys.stdout``, the calibrator prints from C++ to file descriptor 2,
    and the converter warns about input statistics that full-integer conversion does not need.
    """
    with quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
