"""Settings of ``lorahub serve`` (from the command line; see :func:`lorahub.registry.server.run.serve`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lorahub.registry.hub.config import GiB, MiB

#: Database file name inside the data folder when no database URL is given.
SQLITE_NAME = "lorahub-server.sqlite"


def default_data_dir() -> Path:
    from lorahub.config import home

    return home() / "server"


def server_database_url(data_dir: Path, url: str | None = None) -> str:
    """``url``, else ``$LORAHUB_DATABASE_URL``, else SQLite in the data folder; normalised."""
    from lorahub.registry.database import database_url

    raw = url or os.environ.get("LORAHUB_DATABASE_URL", "").strip() or f"sqlite:///{Path(data_dir).resolve() / SQLITE_NAME}"
    return database_url(raw)


@dataclass
class ServerSettings:
    data_dir: Path
    database_url: str
    #: Base URL the server is reached at (registry source keys, stored URLs). Responses use the request's own.
    public_url: str = "http://127.0.0.1:8000"
    max_upload_size: int = 20 * GiB
    max_commit_bytes: int = 64 * MiB
    #: Largest JSON body of the other routes (create repo, preupload, LFS batch, validate-yaml).
    max_json_bytes: int = 8 * MiB
    index_adapters: bool = True
    #: Serve the lorahub web UI (the Space, lorahub.space) at ``/``: only when asked (``--ui``).
    ui: bool = False
    #: Endpoints the web UI may push to besides this hub and the Hugging Face Hub (``--ui-push-endpoint``).
    ui_push_endpoints: tuple[str, ...] = ()
    #: Largest file the web UI accepts (``--ui-max-file-size``; None: ``$LORAHUB_UI_MAX_FILE_SIZE`` or 1 GiB).
    ui_max_file_size: int | None = None
    #: ``Host`` names answered besides the public URL's, ``localhost`` and IP addresses (see .hosts).
    allowed_hosts: list[str] = field(default_factory=list)
    #: Browser origins allowed to read answers (CORS, no credentials); none by default.
    cors_origins: list[str] = field(default_factory=list)

    @property
    def blob_dir(self) -> Path:
        return Path(self.data_dir) / "blobs"


def parse_size(text: str | int) -> int:
    """``"20G"``, ``"500M"``, ``"1048576"`` -> bytes (binary units)."""
    if isinstance(text, int):
        return text
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 500M, 20G)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value * mult)


def check_origin(value: str) -> str:
    """A ``--cors-origin``: ``scheme://host[:port]`` (no path), or ``*``; normalised (no trailing slash)."""
    from urllib.parse import urlsplit

    text = value.strip().rstrip("/")
    if text == "*":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment or parts.username:
        raise ValueError(f"not an origin: {value!r} (scheme://host[:port], e.g. https://app.example.com)")
    return text
