"""Test-time views: a face classified as cut, slightly zoomed out, and mirrored, the answers averaged.

A network trained on shifted, zoomed and mirrored faces answers a little differently for each
small change of framing; averaging a few framings added 0.6-1.1 points of FER2013 val over the
mirror alone on three networks, but 0.03 on test for the one measured there (docs/results.md,
2026-11-30), at one network pass per view: a choice to make per network, on val. The views
belong to the model: its metadata names them (``flip_average``, ``view_scales``), conversion
chooses them on val within a time budget, and evaluation, calibration and the device all go
through :meth:`Views.expand` and :meth:`Views.fold`, so they compute the same thing. A zoom is
made on the cut face itself (:func:`edge_fer.preprocess.zoom_faces`), never on the camera frame,
so a dataset face and a camera face take one path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelError
from .preprocess import zoom_faces

# The zoom sets conversion chooses among (zooming out helped on val, zooming in less); pi-check
# checks that an Arm device cuts the same pixels for each of them.
ZOOM_CANDIDATES = ((1.0,), (1.0, 0.95), (1.0, 0.9))


def parse_scales(raw: Any, where: str) -> tuple[float, ...]:
    """Zooms as metadata or a command line gives them: distinct numbers from 0.5 to 2; else one ModelError."""
    try:
        scales = () if isinstance(raw, str) else tuple(float(s) for s in raw)
    except (TypeError, ValueError):
        scales = ()
    if not scales or len(set(scales)) != len(scales) or not all(0.5 <= s <= 2.0 for s in scales):
        raise ModelError(f"{where} must list distinct zooms from 0.5 to 2.0 (such as 1,0.95), not {raw!r}")
    return scales


@dataclass(frozen=True)
class Views:
    """The framings a model averages: each zoom in ``scales`` (1.0 = as cut), each also mirrored when ``mirror``."""

    scales: tuple[float, ...] = (1.0,)
    mirror: bool = False

    @property
    def count(self) -> int:
        """Network passes per face."""
        return len(self.scales) * (2 if self.mirror else 1)

    def expand(self, faces: np.ndarray) -> np.ndarray:
        """Every view of a uint8 batch ``(n, h, w)`` in one batch, view by view (``(count * n, h, w)``)."""
        if self.scales == (1.0,) and not self.mirror:
            return faces
        views = [faces if s == 1.0 else zoom_faces(faces, s) for s in self.scales]
        if self.mirror:
            views += [v[:, :, ::-1] for v in views]
        return np.concatenate(views)

    def fold(self, rows: np.ndarray) -> np.ndarray:
        """Each face's rows from :meth:`expand`'s batch averaged into one."""
        if self.count == 1:
            return rows
        return rows.reshape(self.count, -1, rows.shape[-1]).mean(axis=0)

    def describe(self) -> str:
        """``"zoom 1/0.95, mirrored (4 views)"``: how ``edge-fer info`` and conversion name them."""
        zooms = "/".join(f"{s:g}" for s in self.scales)
        return f"zoom {zooms}{', mirrored' if self.mirror else ''} ({self.count} view{'s' if self.count > 1 else ''})"

    def per_face(self) -> str:
        """What each face goes through, for a sentence: ``"zoom 1, mirrored (2 views) averaged per face"``."""
        return "one view per face (as cut, no mirror)" if self.count == 1 else f"{self.describe()} averaged per face"
