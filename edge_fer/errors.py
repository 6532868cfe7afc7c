"""User-facing errors.

Anything raised as :class:`EdgeFerError` is a user mistake or an environment problem
(missing file, wrong model, camera that does not open). The CLI prints its message as
one line on stderr and exits non-zero instead of showing a traceback.
"""


class EdgeFerError(Exception):
    """A problem the user can fix; the message is shown as-is, on one line."""


class ModelError(EdgeFerError):
    """A model or its metadata is missing, corrupt or inconsistent."""


class SourceError(EdgeFerError):
    """A camera, video, image or folder cannot be opened or read."""


class DataError(EdgeFerError):
    """A labelled dataset (npz, CSV, image folder) is missing or malformed."""
