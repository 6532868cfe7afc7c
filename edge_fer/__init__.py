"""edge-fer: real-time facial emotion recognition on small devices."""

__version__ = "0.1.0"
