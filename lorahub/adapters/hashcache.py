"""The fingerprint cache: ``$LORAHUB_HOME/cache/fingerprints.sqlite``.

One row per real path, valid while the file's size, mtime, ctime, inode and
device are those recorded. Anything else (a touched, rewritten, replaced or
moved-over file) is a miss and the caller re-hashes and overwrites the row.

The cache is an optimisation, never a source of errors:

* SQLite in WAL mode with a busy timeout, so concurrent ``lorahub`` processes
  read while one writes; a write that still cannot get the lock is dropped.
* A cache file that is corrupt, not a database, or of another layout version
  is deleted and rebuilt silently; if even that fails the cache is switched
  off for the rest of the process.
* Nothing but the standard library is imported (the cached path of
  ``lorahub fingerprint`` must stay fast).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Bump when the stored record changes meaning or shape: older rows are dropped.
CACHE_VERSION = 3  # 2: short Civitai ids (autov1/2/3, crc32) upper case; 3: AutoV1 of files <= 1 MiB

FILENAME = "fingerprints.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    path      TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    ctime_ns  INTEGER NOT NULL,
    inode     INTEGER NOT NULL,
    device    INTEGER NOT NULL,
    report    TEXT NOT NULL,
    hashed_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of one file."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str | os.PathLike[str], st: os.stat_result | None = None) -> FileKey:
        real = os.path.realpath(os.fspath(path))
        if st is None:
            st = os.stat(real)
        return cls(real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """True for "malformed" / "not a database" errors (not for busy, locked, read-only, full)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def default_path() -> Path:
    from lorahub.config import cache_dir

    return cache_dir() / FILENAME


class HashCache:
    """A connection to the cache file. ``get``/``put`` never raise."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._disabled = False

    @classmethod
    def open_default(cls) -> HashCache:
        try:
            return cls(default_path())
        except OSError:  # $LORAHUB_HOME not creatable: a cache that does nothing
            cache = cls(os.devnull)
            cache._disabled = True
            return cache

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is not None or self._disabled:
            return self._conn
        for attempt in range(2):
            try:
                self._conn = self._open()
                return self._conn
            except sqlite3.DatabaseError as exc:
                self._drop_connection()
                # Corrupt or not a database: rebuild once. Locked beyond the
                # timeout, read-only, ...: leave the file alone, run uncached.
                if not _is_corrupt(exc) or attempt == 1 or not self._rebuild():
                    break
            except OSError:
                break
        self._disabled = True
        return None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            with contextlib.suppress(sqlite3.OperationalError):  # read-only folder: stay in rollback mode
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != CACHE_VERSION:
                # A new file or another layout: (re)build it under the write lock, and look again once it is
                # held. Connections opened side by side (threads, processes) all see the version unset; the
                # one that gets the lock second must not drop the table the first built and has filled.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if conn.execute("PRAGMA user_version").fetchone()[0] != CACHE_VERSION:
                        conn.execute("DROP TABLE IF EXISTS fingerprints")
                        conn.execute(_SCHEMA)
                        conn.execute(f"PRAGMA user_version={CACHE_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            conn.execute(_SCHEMA)
            # Touch the table so that a corrupt file fails here, not later.
            conn.execute("SELECT count(*) FROM (SELECT 1 FROM fingerprints LIMIT 1)").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None

    def _rebuild(self) -> bool:
        """Delete the cache file (and its WAL/SHM companions). True when it is gone."""
        ok = True
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(str(self.path) + suffix)
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok

    def _recover(self) -> None:
        """A query failed with a database error: rebuild the file once, else switch off."""
        self._drop_connection()
        if self._rebuild():
            try:
                self._conn = self._open()
                return
            except (sqlite3.DatabaseError, OSError):
                self._drop_connection()
        self._disabled = True

    def close(self) -> None:
        self._drop_connection()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rows ---------------------------------------------------------------------------------

    def get(self, key: FileKey) -> dict[str, Any] | None:
        """The stored record for exactly this version of the file, or None."""
        conn = self._connect()
        if conn is None:
            return None
        try:
            row = conn.execute(
                "SELECT size, mtime_ns, ctime_ns, inode, device, report FROM fingerprints WHERE path = ?",
                (key.path,),
            ).fetchone()
        except sqlite3.DatabaseError as exc:  # locked beyond the timeout: a miss
            if _is_corrupt(exc):
                self._recover()
            return None
        if row is None or tuple(row[:5]) != (key.size, key.mtime_ns, key.ctime_ns, key.inode, key.device):
            return None
        try:
            record = json.loads(row[5])
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def put(self, key: FileKey, record: dict[str, Any]) -> bool:
        """Store ``record`` for this version of the file. False when it could not be stored."""
        conn = self._connect()
        if conn is None:
            return False
        try:
            conn.execute(
                "INSERT OR REPLACE INTO fingerprints (path, size, mtime_ns, ctime_ns, inode, device, report, hashed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.path,
                    key.size,
                    key.mtime_ns,
                    key.ctime_ns,
                    key.inode,
                    key.device,
                    json.dumps(record, separators=(",", ":"), ensure_ascii=False),
                    time.time(),
                ),
            )
        except sqlite3.DatabaseError as exc:  # locked, read-only, disk full: skip
            if _is_corrupt(exc):
                self._recover()
            return False
        return True

    def forget(self, path: str | os.PathLike[str]) -> None:
        conn = self._connect()
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute("DELETE FROM fingerprints WHERE path = ?", (os.path.realpath(os.fspath(path)),))

    def prune(self) -> int:
        """Drop rows whose file no longer exists; returns how many."""
        conn = self._connect()
        if conn is None:
            return 0
        try:
            paths = [r[0] for r in conn.execute("SELECT path FROM fingerprints")]
            gone = [(p,) for p in paths if not os.path.exists(p)]
            conn.executemany("DELETE FROM fingerprints WHERE path = ?", gone)
        except sqlite3.Error:
            return 0
        return len(gone)

    def __len__(self) -> int:
        conn = self._connect()
        if conn is None:
            return 0
        try:
            return int(conn.execute("SELECT count(*) FROM fingerprints").fetchone()[0])
        except sqlite3.Error:
            return 0


class ThreadCaches:
    """A :class:`HashCache` connection per thread, for files hashed side by side (a connection is used by the
    thread that opened it); :meth:`close` closes them all. ``enabled=False``: :meth:`get` gives None (no
    cache)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[HashCache] = []

    def get(self) -> HashCache | None:
        """This thread's connection (opened on first use)."""
        if not self.enabled:
            return None
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = HashCache.open_default()
            with self._lock:
                self._opened.append(cache)
        return cache

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for cache in opened:
            cache.close()

    def __enter__(self) -> ThreadCaches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
