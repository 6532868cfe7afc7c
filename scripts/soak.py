#!/usr/bin/env python3
"""Soak test of the service path: memory and latency over many frames (see scripts/devtools/soak.py).

    python scripts/soak.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.devtools.soak import main  # noqa: E402  (the checkout's root goes on the path first)

if __name__ == "__main__":
    sys.exit(main())
