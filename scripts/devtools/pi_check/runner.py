"""Running the device path on the host (the x86 reference) or under qemu, each process in its own group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from .common import CPUS, HERE, REPO

LIVE: set[subprocess.Popen] = set()  # running emulated/reference processes, each in its own process group
LIVE_LOCK = threading.Lock()

# ---------------------------------------------------------------------------------------------- running


class Runner:
    """Runs the device path on the host (x86 reference) or in the emulated root for one CPU model."""

    def __init__(self, root: Path | None, model: str | None, tools: dict[str, str], python: str, work: Path):
        self.root, self.model, self.tools, self.work = root, model, tools, work
        self.label = model or "x86"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "QEMU_", "VIRTUAL_ENV", "CONDA")) and k not in ("LD_PRELOAD",
                                                                                              "LD_LIBRARY_PATH")}
        env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1",
                   PYTHONUNBUFFERED="1", PI_CHECK_CPU=self.label)
        if root is None:
            self.python = [python]
        else:
            env.update(PYTHONPATH=f"{root / 'site'}{os.pathsep}{REPO}", QEMU_LD_PREFIX=str(root / "views" / model),
                       QEMU_CPU=CPUS[model][0], PYTHONPYCACHEPREFIX=str(root / "pycache"), LC_ALL="C.UTF-8")
            env.pop("PYTHONDONTWRITEBYTECODE")  # bytecode goes to ROOT/pycache (PYTHONPYCACHEPREFIX), not the repo
            self.python = [tools["qemu"], str(root / "sysroot" / "usr" / "bin" / "python3.11")]
        self.env = env

    def run(self, args: list[str], timeout: float, binfmt: bool = False) -> subprocess.CompletedProcess:
        cmd = [*self.python, *map(str, args)]
        if binfmt:  # the process may start aarch64 subprocesses (the tests do): give it its own binfmt_misc
            cmd = [self.tools["unshare"], "--user", "--map-root-user", "--mount", "sh", str(HERE / "binfmt.sh"),
                   self.tools["qemu"], *cmd[1:]]
        # Own process group: a timeout or an interrupt ends the process and everything it started.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                                cwd=REPO, start_new_session=True)
        with LIVE_LOCK:
            LIVE.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
            return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            _kill(proc)
            out, err = proc.communicate()
            return subprocess.CompletedProcess(cmd, 124, out, err + f"\n(timed out after {timeout:.0f} s)")
        finally:
            if proc.returncode is None:  # interrupted: the leader is not reaped yet, so its group id is ours
                _kill(proc)
            with LIVE_LOCK:
                LIVE.discard(proc)

    def json(self, args: list[str], timeout: float) -> dict:
        p = self.run(args, timeout)
        if p.returncode != 0:
            raise StepError(_tail(p))
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise StepError(f"no JSON from {' '.join(map(str, args[:2]))}: {_tail(p)}") from None


def _kill(proc: subprocess.Popen) -> None:
    """End a process group started by Runner.run (its leader may be gone while children live on)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_all() -> None:
    with LIVE_LOCK:
        for proc in list(LIVE):
            if proc.returncode is None:
                _kill(proc)


def _tail(p: subprocess.CompletedProcess) -> str:
    rows = [r for r in (p.stderr or p.stdout or "").splitlines() if r.strip()]
    return f"exit {p.returncode}: " + (rows[-1].strip() if rows else "no output")


class StepError(Exception):
    """A check failed: recorded in the verdict, the run goes on."""

