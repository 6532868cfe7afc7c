"""The importable parts of the developer commands: ``scripts/pi-check`` and ``scripts/soak.py`` are thin entry points
over these modules, so the tests import them like any module."""
