"""The web view of ``edge-fer run --http``: page, MJPEG stream, snapshot, state, events, metrics, health.

Split by concern: :mod:`.frames` (the newest frame and its JPEG, made only while someone
watches), :mod:`.metrics` (Prometheus), :mod:`.server` (routes, tokens, the HTTP server).
Its settings are the ``[http]`` section of :mod:`edge_fer.config`. Endpoints and metrics are
listed in docs/service.md.
"""

from .metrics import RunFacts
from .server import WebView

__all__ = ["RunFacts", "WebView"]
