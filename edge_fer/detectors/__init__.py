"""Face detector plugins behind one interface (:class:`~.base.Detector`), frigate-style.

Each plugin module holds one class with a registry ``key`` and a typed config dataclass;
:data:`DETECTORS` is built from those classes, and :func:`make_detector` builds one by key
from plain options (command line, TOML). One settings set serves every plugin, so each
takes the options its config has (``det_width`` means nothing to BlazeFace, which always
sees the whole frame at its input size).
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any, Callable

from ..errors import EdgeFerError, ModelError
from .base import Detection, Detector
from .blazeface import BlazeFaceDetector
from .blazeface_full import BlazeFaceFullDetector
from .fetch import ModelMissing, fetch
from .haar import HaarDetector

log = logging.getLogger(__name__)

DETECTORS: dict[str, type[Detector]] = {cls.key: cls for cls in (HaarDetector, BlazeFaceDetector,
                                                                 BlazeFaceFullDetector)}


def takes(key: str, option: str) -> bool:
    """Whether the ``key`` detector's config has ``option`` (``det_width`` means nothing to BlazeFace)."""
    return option in {f.name for f in fields(DETECTORS[key].config_cls)}


def make_detector(key: str, **options: Any) -> Detector:
    """Build the ``key`` detector from the options its config has; None keeps the plugin's default."""
    try:
        cls = DETECTORS[key]
    except KeyError:
        raise EdgeFerError(f"unknown detector {key!r}: use one of {', '.join(DETECTORS)}") from None
    names = {f.name for f in fields(cls.config_cls)}
    return cls(cls.config_cls(**{k: v for k, v in options.items() if v is not None and k in names}))


def open_detector(key: str, *, fallback: bool = False, progress: Callable[[str], None] = log.warning,
                  **options: Any) -> Detector:
    """:func:`make_detector`, fetching a missing model file on first use (one progress line).

    If the fetch fails (offline, read-only cache) and ``fallback`` is set (the detector is the
    default, not the user's choice), Haar is used instead with one warning line, so a fresh
    install still runs; otherwise the one-line error names the fetch command.
    """
    try:
        return make_detector(key, **options)
    except ModelMissing:
        pass
    try:
        fetch(progress=progress)
        return make_detector(key, **options)
    except ModelError as exc:
        if not fallback:
            raise
        progress(f"the {key} detector is unavailable, using haar instead: {exc}")
        return make_detector("haar", **options)


__all__ = ["DETECTORS", "Detection", "Detector", "make_detector", "open_detector", "takes"]
