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
    #: ``Host`` names answered besides the public URL's, ``localhost`` and IP addresses (see .hosts).
    allowed_hosts: list[str] = field(default_factory=list)
    #: Browser origins allowed to read answers (CORS, no credentials); none by default.
    cors_origins: list[str] = field(default_factory=list)

    @property
    def blob_dir(self) -> Path:
        return Path(self.data_dir) / "blobs"


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
