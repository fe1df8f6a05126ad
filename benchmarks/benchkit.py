"""Small helpers the benchmark scripts share (``from benchkit import ...``: Python puts a script's
own folder first on ``sys.path``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def lorahub_cmd() -> list[str]:
    """How to run this environment's ``lorahub`` (the venv's script, else PATH, else ``-m``)."""
    script = Path(sys.executable).with_name("lorahub")
    if script.exists():
        return [str(script)]
    found = shutil.which("lorahub")
    return [found] if found else [sys.executable, "-m", "lorahub.cli"]


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no getloadavg on this platform
        return 0.0


def load_note(busy_above: float | None = None) -> str:
    """``load average 1.23 on 2 CPUs``, flagged when other work competes for the CPUs (above
    ``busy_above``; default half the CPUs): rerun such figures on an idle machine."""
    load, cpus = load_average(), os.cpu_count() or 1
    limit = 0.5 * cpus if busy_above is None else busy_above
    busy = "  (BUSY: other processes compete for the CPUs; rerun when idle)" if load > limit else ""
    return f"load average {load:.2f} on {cpus} CPUs{busy}"
