"""The tuned configuration: what ``python -m training tune`` writes and ``train --config`` reads.

Its own module, below both: the trainer reads it before TensorFlow loads (the architecture decides how
TensorFlow is set up), and the search builds on the trainer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_fer.errors import EdgeFerError

CONFIG_FORMAT = "edge-fer-train-config/1"


@dataclass
class TunedConfig:
    """A configuration for ``train --config``: architecture, its keyword arguments, learning rate."""

    arch: str
    model: dict[str, Any]
    lr: float
    val_accuracy: float | None = None
    search: dict[str, Any] = field(default_factory=dict)  # where it came from: algorithm, trial, budget

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"format": CONFIG_FORMAT, **asdict(self)}, indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> "TunedConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise EdgeFerError(f"config not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EdgeFerError(f"cannot read config {path}: {exc}") from None
        ok = (isinstance(raw, dict) and raw.get("format") == CONFIG_FORMAT and isinstance(raw.get("arch"), str)
              and isinstance(raw.get("model"), dict) and isinstance(raw.get("lr"), (int, float)) and raw["lr"] > 0)
        if not ok:
            raise EdgeFerError(f"{path} is not a tuned config ({CONFIG_FORMAT} with arch, model and a positive lr)")
        return cls(raw["arch"], raw["model"], float(raw["lr"]), raw.get("val_accuracy"), raw.get("search", {}))
