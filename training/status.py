"""Where a run stands: ``python -m training status runs/w32-long``.

A long run spans sessions, so the next session starts by asking where it stopped: epochs done of
the total its schedule spans, the best val epoch, the last epoch's figures, the time an epoch
took lately (from its ``train.log``), whether a process is training it now, and the one command
that continues it. Reads files only: no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_fer.errors import EdgeFerError

from .common.runs import read_run, training_command
from .train import RUN_DEFAULTS

_EPOCH_LINE = re.compile(r"^\d+/\d+ - (\d+)s - ")  # Keras --verbose 2: "225/225 - 145s - 646ms/step - ..."


@dataclass
class RunStatus:
    run: str
    epochs_done: int
    epochs_total: int
    schedule: str
    best_epoch: int | None
    best_val_accuracy: float | None
    last: dict[str, float]
    seconds_per_epoch: float | None  # median of the last five epochs the log timed
    training_now: bool
    stopped_early: bool  # no better val in the run's --patience epochs: EarlyStopping ended it
    resume_command: str | None  # None when the folder has no last.keras to go on from

    def lines(self) -> list[str]:
        left = 0 if self.stopped_early else self.epochs_total - self.epochs_done
        eta = (f", about {left * self.seconds_per_epoch / 3600:.1f} h left at "
               f"{self.seconds_per_epoch / 60:.1f} min/epoch" if self.seconds_per_epoch and left > 0 else "")
        last = ", ".join(f"{k} {v:.4g}" for k, v in self.last.items())
        convert = f"python -m convert --run {self.run} --edgetpu"
        if left <= 0:
            step = f"  {'stopped early, no better val for its patience' if self.stopped_early else 'done'}: {convert}"
        elif self.resume_command is None:
            step = f"  cannot continue: no last.keras in {self.run} (a landed run); convert it: {convert}"
        else:
            step = f"  continue: {self.resume_command}"
        return [f"{self.run}: epoch {self.epochs_done} of {self.epochs_total} ({self.schedule}){eta}; "
                f"{'training now' if self.training_now else 'not training'}",
                f"  best val {self.best_val_accuracy:.4f} at epoch {self.best_epoch}; last epoch: {last}"
                if self.best_epoch else "  no epoch finished yet", step]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders (from 'python -m training train')")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of text")


def status(run: Path) -> RunStatus:
    history, config = read_run(run, resuming=False)
    val = history.get("val_accuracy", [])
    best = max(range(len(val)), key=val.__getitem__) if val else None
    last = {k: history[k][-1] for k in ("accuracy", "val_accuracy", "learning_rate") if history.get(k)}
    log = run / "train.log"
    times = [int(m.group(1)) for line in (log.read_text(errors="replace").splitlines() if log.is_file() else [])
             if (m := _EPOCH_LINE.match(line))][-5:]
    now = _training_now(run)
    patience = int(config.get("patience") or RUN_DEFAULTS["patience"])
    return RunStatus(run=str(run), epochs_done=len(history.get("loss", [])), epochs_total=int(config.get("epochs", 0)),
                     schedule=str(config.get("lr_schedule", "?")), best_epoch=None if best is None else best + 1,
                     best_val_accuracy=None if best is None else val[best], last=last,
                     seconds_per_epoch=float(sorted(times)[len(times) // 2]) if times else None,
                     training_now=now,
                     stopped_early=not now and best is not None and len(val) - (best + 1) >= patience,
                     resume_command=f"nohup nice -n 10 {training_command(config)} --resume >> {run}/train.log 2>&1 &"
                     if (run / "last.keras").is_file() else None)


def _training_now(run: Path) -> bool:
    """A process on this machine runs ``training train`` with ``--out`` this run (Linux /proc; else False)."""
    target = run.resolve()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if "training" in argv and "train" in argv and "--out" in argv:
            out = argv[argv.index("--out") + 1] if argv.index("--out") + 1 < len(argv) else ""
            if (cwd / out).resolve() == target:
                return True
    return False


def run(args: argparse.Namespace) -> None:
    for path in args.runs:
        if not path.is_dir():
            raise EdgeFerError(f"no run folder {path}")
        s = status(path)
        print(json.dumps(asdict(s)) if args.json else "\n".join(s.lines()))
