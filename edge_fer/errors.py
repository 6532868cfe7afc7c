"""User-facing errors, and how a command line turns them into one line and an exit status.

Anything raised as :class:`EdgeFerError` is a user mistake or an environment problem
(missing file, wrong model, camera that does not open). The CLI prints its message as
one line on stderr and exits non-zero instead of showing a traceback.
"""

import os
import sys
from typing import Any, Callable


class EdgeFerError(Exception):
    """A problem the user can fix; the message is shown as-is, on one line."""


class ModelError(EdgeFerError):
    """A model or its metadata is missing, corrupt or inconsistent."""


class SourceError(EdgeFerError):
    """A camera, video, image or folder cannot be opened or read."""


class DataError(EdgeFerError):
    """A labelled dataset (npz, CSV, image folder) is missing or malformed."""


def exit_status(func: Callable[..., Any], *args: Any) -> int:
    """Run a command's work: 0 when it succeeds, 2 with one ``error: ...`` line on stderr for a user mistake.

    A reader that stops reading (``... | head``) is not a failure: what it wanted was written.
    """
    try:
        func(*args)
    except EdgeFerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor a second error when Python exits
    return 0
