"""Workstation side of edge-fer: Keras -> TFLite conversion, verification, Edge TPU checks, shipping.

It imports TensorFlow (through :mod:`training.tf_env`) and :mod:`edge_fer`; ``edge_fer`` never
imports it, so the device stays free of TensorFlow. The constants here load without TensorFlow,
so the CLI can parse and reject arguments before paying for that import.
"""

FORMATS = ("int8", "uint8", "float16", "dynamic", "float32")
INTEGER_FORMATS = ("int8", "uint8")  # full-integer: the only ones the Edge TPU can run
