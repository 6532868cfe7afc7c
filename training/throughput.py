"""Measure training throughput (samples/s of one training step) before planning a long run.

    python -m training throughput --widths 24 32 48 --batch-sizes 64 128 256
    KERAS_BACKEND=jax python -m training throughput ...
    python -m training throughput --dtype-policy mixed_bfloat16 ...

The step measured is the one ``train`` runs: the edge-cnn behind ``FaceAugment``, Adam,
categorical cross-entropy, on random 48x48 faces. The backend comes from ``KERAS_BACKEND``
(and on TensorFlow, oneDNN from ``TF_ENABLE_ONEDNN_OPTS``, read once at import), so each
backend is one process; the command prints a table and one JSON line to collect.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Throughput:
    backend: str
    onednn: str
    dtype_policy: str
    width: int
    batch_size: int
    samples_per_s: float
    ms_per_step: float


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--widths", type=int, nargs="+", default=[24, 32, 48])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--steps", type=int, default=15, help="timed steps per configuration (after 3 warm-up steps)")
    p.add_argument("--dtype-policy", default="float32", help="Keras dtype policy, e.g. mixed_bfloat16")


def run(args: argparse.Namespace) -> list[Throughput]:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # train's default for edge-cnn
    from .common.keras_env import keras
    from .models import build
    from .train import with_augmentation

    keras.mixed_precision.set_dtype_policy(args.dtype_policy)
    rng = np.random.default_rng(0)
    rows = []
    for width in args.widths:
        for batch in args.batch_sizes:
            keras.utils.clear_session()
            model = with_augmentation(build("edge-cnn", (48, 48, 1), 7, width=width), seed=0)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy())
            x = rng.normal(size=(batch, 48, 48, 1)).astype(np.float32)
            y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, batch)]
            for _ in range(3):
                model.train_on_batch(x, y)
            started = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            seconds = (time.perf_counter() - started) / args.steps
            rows.append(Throughput(keras.backend.backend(), os.environ.get("TF_ENABLE_ONEDNN_OPTS", "-"),
                                   args.dtype_policy, width, batch, round(batch / seconds, 1),
                                   round(seconds * 1000, 1)))
            print(f"{rows[-1].backend:10s} onednn={rows[-1].onednn} {args.dtype_policy:15s} width {width:3d} "
                  f"batch {batch:4d}: {rows[-1].samples_per_s:8.1f} samples/s ({rows[-1].ms_per_step} ms/step)",
                  flush=True)
    print(json.dumps([asdict(r) for r in rows], separators=(",", ":")))
    return rows
