"""Workstation side of edge-fer: Keras -> TFLite conversion, verification, Edge TPU checks, shipping.

It stands on the workstation's common part (:mod:`training.common`: TensorFlow set-up, data, run
folders, reports) and :mod:`edge_fer`, and on nothing else of :mod:`training`; only the commands
above it (:mod:`training.pipelines`) import it. ``edge_fer`` never imports it, so the device stays
free of TensorFlow. The constants here load without TensorFlow,
so the CLI can parse and reject arguments before paying for that import.
"""

from pathlib import Path

FORMATS = ("int8", "uint8", "float16", "dynamic", "float32")
INTEGER_FORMATS = ("int8", "uint8")  # full-integer: the only ones the Edge TPU can run
MAX_MS_PER_FACE = 2.0  # budget for a face on one Pi-class thread, every test-time view included
SHIPPED_DOCS = Path(__file__).resolve().parents[1] / "docs" / "model"  # the shipped model's card and reports
