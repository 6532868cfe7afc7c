"""Face detector plugins behind one interface (:class:`~.base.Detector`), frigate-style.

Each plugin module holds one class with a registry ``key`` and a typed config dataclass;
:data:`DETECTORS` is built from those classes, and :func:`make_detector` builds one by key
from plain options (command line, TOML). One settings set serves every plugin, so each
takes the options its config has (``det_width`` means nothing to BlazeFace, which always
sees the whole frame at its input size).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..errors import EdgeFerError
from .base import Detection, Detector
from .blazeface import BlazeFaceDetector
from .blazeface_full import BlazeFaceFullDetector
from .haar import HaarDetector

DETECTORS: dict[str, type[Detector]] = {cls.key: cls for cls in (HaarDetector, BlazeFaceDetector,
                                                                 BlazeFaceFullDetector)}


def make_detector(key: str, **options: Any) -> Detector:
    """Build the ``key`` detector from the options its config has; None keeps the plugin's default."""
    try:
        cls = DETECTORS[key]
    except KeyError:
        raise EdgeFerError(f"unknown detector {key!r}: use one of {', '.join(DETECTORS)}") from None
    names = {f.name for f in fields(cls.config_cls)}
    return cls(cls.config_cls(**{k: v for k, v in options.items() if v is not None and k in names}))


__all__ = ["DETECTORS", "Detection", "Detector", "make_detector"]
