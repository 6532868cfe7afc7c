"""Import TensorFlow the way every workstation tool here needs it.

TensorFlow 2.19-2.21 crashes in ``fit`` on this project's CPUs (``free(): invalid size``,
then a segfault) on a strided 1x1 Conv2D, which mini-Xception's residual branches use,
unless oneDNN's graph rewrites are off. The variable is read once, at import, so it must
be set before the first ``import tensorflow`` anywhere in the process.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep INFO/WARNING C++ chatter out of reports

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

__all__ = ["tf", "keras"]
