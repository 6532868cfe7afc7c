"""``edge-fer info``: what this machine offers the device path (versions, backend, delegates, cameras, model)."""

from __future__ import annotations

import glob
import importlib.util
import platform
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from . import __version__
from .classifier import DEFAULT_MODEL, find_plugin
from .errors import EdgeFerError
from .interpreter import EDGETPU_LIBRARY, edgetpu_available, find_backend
from .metadata import load_metadata
from .views import Views


def _version(dist: str) -> str | None:
    try:
        return pkg_metadata.version(dist)
    except pkg_metadata.PackageNotFoundError:
        return None


def _face_models() -> dict[str, str | None]:
    """Where each BlazeFace model file is (None: not fetched yet)."""
    from .detectors.fetch import MODEL_FILES, find_model

    found: dict[str, str | None] = {}
    for name in MODEL_FILES:
        try:
            found[name] = str(find_model(name))
        except EdgeFerError:
            found[name] = None
    return found


def collect(model: Path | None = None) -> dict[str, Any]:
    import cv2
    import numpy

    model = Path(model) if model else DEFAULT_MODEL
    data: dict[str, Any] = {
        "edge_fer": __version__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "haar_cascades": bool(getattr(getattr(cv2, "data", None), "haarcascades", None)),
        "interpreters": {name: _version(name) for name in ("ai-edge-litert", "tflite-runtime", "tensorflow")},
        "picamera2": importlib.util.find_spec("picamera2") is not None,
        "delegates": {"edgetpu": edgetpu_available(), "edgetpu_library": EDGETPU_LIBRARY},
        "cameras": sorted(glob.glob("/dev/video*")),
        "face_models": _face_models(),
    }
    try:
        data["backend"] = find_backend().name
    except EdgeFerError as exc:
        data["backend"] = f"none ({exc})"
    try:
        plugin, path = find_plugin(model)
        meta = load_metadata(path)
        files = plugin.files(path, meta)
        data["model"] = {"path": str(model), "exists": all(f.is_file() for f in files),
                         "size_bytes": sum(f.stat().st_size for f in files if f.is_file()),
                         "files": [str(f) for f in files], "details": plugin.info(path, meta), **meta.to_dict()}
    except EdgeFerError as exc:
        data["model"] = {"path": str(model), "error": str(exc)}
    return data


def format_info(data: dict[str, Any]) -> str:
    interp = ", ".join(f"{k} {v}" for k, v in data["interpreters"].items() if v) or "none"
    m = data["model"]
    lines = [
        f"edge-fer     {data['edge_fer']} (Python {data['python']}, {data['machine']})",
        f"numpy        {data['numpy']}",
        f"opencv       {data['opencv']} (Haar cascades: {'yes' if data['haar_cascades'] else 'MISSING'})",
        f"interpreter  {data['backend']}   [installed: {interp}]",
        f"edge tpu     {'libedgetpu found' if data['delegates']['edgetpu'] else 'no libedgetpu.so.1'}",
        f"picamera2    {'available' if data['picamera2'] else 'not installed (apt install python3-picamera2 on a Pi)'}",
        f"cameras      {', '.join(data['cameras']) or 'none found'}",
        *(f"face model   {name}: {path or 'not fetched (edge-fer models fetch)'}"
          for name, path in data["face_models"].items()),
        f"model        {m['path']}",
    ]
    if "error" in m:
        lines.append(f"  error      {m['error']}")
    else:
        metrics = m.get("metrics", {})
        acc = metrics.get("test_accuracy")
        lines += [
            f"  labels     {', '.join(m['labels'])}",
            f"  input      {m['input_size'][0]}x{m['input_size'][1]} gray, scaling (x - {m['scaling']['mean']:g}) "
            f"/ {m['scaling']['std']:g}",
            f"  quantized  {m['quantization']}, {((m['size_bytes'] or 0) / 1e6):.2f} MB",
            f"  views      {Views(tuple(m['view_scales']), m['flip_average']).per_face()}",
            *(f"  {line}" for line in m["details"]),
        ]
        if acc is not None:
            lines.append(f"  accuracy   {acc:.4f} on FER2013 test (PrivateTest)")
    return "\n".join(lines)
