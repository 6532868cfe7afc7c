"""What every part of pi-check shares: where things are, the target stack, progress lines, the build log."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent  # probe.py, the pinned wheels, cpuinfo files, binfmt.sh
PROBE = HERE / "probe.py"
REQUIREMENTS = HERE / "requirements-aarch64.txt"
DESELECT = HERE / "deselect-under-emulation.txt"
SAMPLE = REPO / "edge_fer" / "samples" / "astronaut.jpg"
SHARED = REPO.parent / "shared"  # data/fer2013.npz and media/, used when present (--shared)
MEDIA_PHOTOS = ("photo_smiling_man.jpg", "photo_group_selfie_6people.jpg")
MEDIA_VIDEO = "video_webcam_man_expressions.mp4"

# What a Pi runs: Raspberry Pi OS bookworm takes python3.11 from Debian bookworm.
DEBIAN = "bookworm"
SOURCES = (f"http://deb.debian.org/debian {DEBIAN} main",
           f"http://deb.debian.org/debian {DEBIAN}-updates main",
           f"http://deb.debian.org/debian-security {DEBIAN}-security main")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
PACKAGES = ("python3.11", "libstdc++6")  # libstdc++: the wheels' C++ code links it, as on a Pi
GLIBC = 36  # bookworm's glibc 2.36: every manylinux_2_x tag up to it installs there
ROOT_FORMAT = 1  # bump when the layout of a built root changes

# CPU model -> (qemu -cpu, board); ROOT/proc/cpuinfo comes from cpuinfo-<model> here.
CPUS = {"pi4": ("cortex-a72", "Raspberry Pi 4"), "pi5": ("cortex-a76", "Raspberry Pi 5")}
# The device tests leave out files that need the workstation side.
# A test file that imports the workstation, or runs one of its commands, is no device test.
NOT_DEVICE = re.compile(r'^\s*(?:import|from)\s+(?:tensorflow|keras|training|convert|sklearn)\b|"-m", "(?:training|convert)"',
                        re.M)

QUIET = False  # -q: set by the command line; only the verdict is printed


class Fatal(Exception):
    """Could not run: one line on stderr, exit status 2."""


def say(msg: str) -> None:
    if not QUIET:
        print(f"pi-check: {msg}", file=sys.stderr, flush=True)


def _first(lines: str, *patterns: str) -> str:
    """The most telling line of a tool's output: the first matching a pattern, else the last non-empty one."""
    rows = [r.strip() for r in lines.splitlines() if r.strip()]
    for pat in patterns:
        for r in rows:
            if re.match(pat, r):
                return r
    return rows[-1] if rows else "no output"


class Log:
    """The build's tool output, kept in .pi-root/build.log so a one-line error can point at the details."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w")

    def run(self, cmd: list[str], what: str, patterns: tuple[str, ...] = (), fail_on: str | None = None,
            **kw) -> str:
        self.f.write(f"$ {' '.join(map(str, cmd))}\n")
        self.f.flush()
        try:
            p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               **kw)
        except OSError as exc:
            raise Fatal(f"{what} failed: {exc}") from None
        self.f.write(p.stdout + f"[exit {p.returncode}]\n")
        self.f.flush()
        if p.returncode != 0 or (fail_on and re.search(fail_on, p.stdout, re.M)):
            raise Fatal(f"{what} failed: {_first(p.stdout, *patterns)} (details: {self.path})")
        return p.stdout


# ---------------------------------------------------------------------------------------------- tools

