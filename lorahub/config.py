"""Where lorahub keeps its state: ``$LORAHUB_HOME`` (default ``~/.cache/lorahub``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The lorahub home folder, created on first use."""
    env = os.environ.get("LORAHUB_HOME")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "lorahub"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    path = home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def debug() -> bool:
    return os.environ.get("LORAHUB_DEBUG", "").strip() not in ("", "0", "false", "False")
