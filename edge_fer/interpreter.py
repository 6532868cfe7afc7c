"""Find a TFLite interpreter: LiteRT first, then tflite-runtime, then TensorFlow's.

On a Pi only the first two exist; TensorFlow's is a last resort for workstations and is
imported only when nothing else is installed, so the device path never pulls it in.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ModelError

log = logging.getLogger(__name__)

# (backend name, module, attribute holding the Interpreter, attribute holding load_delegate)
BACKENDS = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "Interpreter", "load_delegate"),
    ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter", "load_delegate"),
    ("tensorflow", "tensorflow.lite", "Interpreter", None),
)
EDGETPU_LIBRARY = "libedgetpu.so.1"


@dataclass
class Backend:
    name: str
    interpreter_cls: Callable[..., Any]
    load_delegate: Callable[..., Any] | None


def find_backend(preferred: str | None = None) -> Backend:
    """The first importable interpreter package (or ``preferred``, if given)."""
    tried = []
    for name, module, attr, delegate_attr in BACKENDS:
        if preferred and name != preferred:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            tried.append(f"{name} ({exc.__class__.__name__})")
            log.debug("interpreter backend %s unavailable: %s", name, exc)
            continue
        if name == "tensorflow":
            delegate = getattr(mod.experimental, "load_delegate", None)
        else:
            delegate = getattr(mod, delegate_attr)
        return Backend(name, getattr(mod, attr), delegate)
    if preferred:
        raise ModelError(f"interpreter backend {preferred!r} is not installed")
    raise ModelError("no TFLite interpreter installed: pip install ai-edge-litert")


def make_interpreter(model_path: str | Path, num_threads: int | None = None, edgetpu: bool = False,
                     backend: Backend | None = None, graph_ops: bool = False) -> tuple[Any, Backend]:
    """Build an interpreter for ``model_path``; every failure becomes a one-line ModelError.

    ``graph_ops``: without the default delegate (XNNPACK), which would take the graph's ops over, so
    that the op list shows the model's own ops (reading a model's structure, not running it fast).
    """
    backend = backend or find_backend()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model not found: {model_path}")
    delegates = []
    if edgetpu:
        if backend.load_delegate is None:
            raise ModelError(f"the {backend.name} backend cannot load the Edge TPU delegate")
        try:
            delegates.append(backend.load_delegate(EDGETPU_LIBRARY))
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"Edge TPU delegate {EDGETPU_LIBRARY} could not be loaded "
                             f"(install libedgetpu1-std and plug in the Coral): {exc}") from None
    options = {}
    if graph_ops:
        resolvers = importlib.import_module(backend.interpreter_cls.__module__).OpResolverType
        options["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with quiet_native_stderr():
            interpreter = backend.interpreter_cls(model_path=str(model_path), num_threads=num_threads,
                                                  experimental_delegates=delegates or None, **options)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelError(f"cannot load model {model_path}: {first}") from None
    return interpreter, backend


@contextlib.contextmanager
def quiet_native_stderr():
    """Hold back what native code prints to file descriptor 2 (the runtime's "INFO: Created TensorFlow
    Lite XNNPACK delegate", the converter's calibration chatter) so ``--output jsonl`` users and logs
    see only our lines; what was caught is passed on at debug level."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (e.g. captured by a test runner)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                log.debug("runtime: %s", line)


def edgetpu_available() -> bool:
    """Whether the Edge TPU runtime library can be loaded (does not need a device to be plugged in)."""
    import ctypes

    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
        return True
    except OSError:
        return False
