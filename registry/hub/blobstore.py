"""Content-addressed blob storage.

Every file a repo holds (regular or LFS) is stored once, by the SHA-256 of its content, at
``<root>/sha256/ab/cd/<64 hex>``. A blob is written to ``<root>/tmp/`` first, fsynced, its
SHA-256 (and size) checked against what the client announced, and only then renamed into place
(and the folder fsynced): a blob path exists only when the blob is complete and correct. A crash
leaves at most a ``tmp/*.part`` file, which :meth:`LocalBlobStore.sweep_tmp` removes.

A file uploaded through the Xet CAS has no blob file: its bytes live once, as the CAS's chunks
(shared with every other file holding them). The store reads those through its
:class:`ChunkSource` (:meth:`LocalBlobStore.attach_chunks`): ``exists``, ``size`` and ``open`` (a
seekable reader rebuilding any byte range from the chunks it spans) answer for both kinds alike;
``local_path`` is the blob file's path (None for a chunk-backed blob), and whoever needs a real file
(the adapter checks, the fingerprints) asks :meth:`LocalBlobStore.materialized`, which rebuilds a
chunk-backed blob into ``tmp/`` for as long as it is held.

The interface is deliberately narrow (:class:`BlobStore`: ``begin``/``put_stream``/``put_bytes``,
``open``, ``exists``, ``size``, ``delete`` and optionally ``local_path``) so that an object store
can implement it later: ``begin()`` returns a :class:`BlobWriter` fed chunk by chunk and
committed with the expected hash.

:class:`BlobCache` keeps what was computed from a blob (the server's checks, its fingerprints) by
its sha256.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from .errors import BadRequest, HubApiError, PayloadTooLarge, StorageError
from .gitobj import is_sha256

log = logging.getLogger("lorahub.server.storage")


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    git_sha1: str | None  # git blob id of the content, when it was computed
    created: bool  # False when an identical blob was already stored


class BlobWriter(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def commit(self, expected_sha256: str | None = None) -> StoredBlob: ...
    def abort(self) -> None: ...


def sweep_parts(tmp: Path, older_than_s: float) -> int:
    """Remove the ``tmp/*.part`` files (uploads cut off) older than ``older_than_s``; return how many."""
    n = 0
    now = time.time()
    for p in tmp.glob("*.part") if tmp.is_dir() else ():
        try:
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                n += 1
        except OSError:
            continue
    return n


class BlobStore(Protocol):
    def begin(self, *, expected_size: int | None = None, max_size: int | None = None, git_sha1: bool = False) -> BlobWriter: ...
    def open(self, sha256: str) -> BinaryIO: ...
    def exists(self, sha256: str) -> bool: ...
    def size(self, sha256: str) -> int: ...
    def delete(self, sha256: str) -> None: ...
    def local_path(self, sha256: str) -> Path | None: ...
    def materialized(self, sha256: str) -> AbstractContextManager[Path]: ...
    def holding(self, shas: Iterable[str]) -> AbstractContextManager[None]: ...


class ChunkSource(Protocol):
    """Where blobs stored as chunks are read from (the Xet CAS, :class:`.cas.XetCas`)."""

    def chunked_size(self, sha256: str) -> int | None: ...
    def open_chunked(self, sha256: str) -> BinaryIO | None: ...


class SizeMismatch(BadRequest):
    pass


class HashMismatch(BadRequest):
    pass


#: Errors that mean "the blob storage cannot take this now" -> 507 Insufficient Storage, which
#: huggingface_hub does not retry (it retries 500/503 five times first), with a readable message.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS: "read-only", errno.EACCES: "not writable (permission denied)", errno.EPERM: "not writable (permission denied)"}


def _storage_error(exc: OSError, action: str) -> HubApiError:
    log.error("%s: %s (%s)", action, exc.strerror or exc, getattr(exc, "filename", None) or "blob storage")
    if exc.errno in _FULL:
        return StorageError(f"{action}: the server's blob storage is full")
    if exc.errno in _NOT_WRITABLE:
        return StorageError(f"{action}: the server's blob storage is {_NOT_WRITABLE[exc.errno]}")
    return StorageError(f"{action}: storage error ({exc.strerror or exc})", status=500)


class _LocalWriter:
    def __init__(self, store: LocalBlobStore, expected_size: int | None, max_size: int | None, git_sha1: bool) -> None:
        self._store = store
        self._expected = expected_size
        self._max = max_size
        self._sha = hashlib.sha256()
        self._git = None
        if git_sha1:
            if expected_size is None:
                raise ValueError("git_sha1 needs expected_size")
            self._git = hashlib.sha1(b"blob %d\0" % expected_size, usedforsecurity=False)
        self._size = 0
        self._tmp = store.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            try:
                self._fh = open(self._tmp, "xb")  # noqa: SIM115 - closed in commit/abort
            except FileNotFoundError:  # tmp/ removed under the running server: make it again (not the root:
                store.tmp_dir.mkdir(exist_ok=True)  # a vanished mount must fail, not fill the disk under it)
                self._fh = open(self._tmp, "xb")  # noqa: SIM115
        except OSError as exc:
            raise _storage_error(exc, "cannot store the upload") from None
        self._done = False

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._size += len(chunk)
        limit = self._expected if self._expected is not None else self._max
        if limit is not None and self._size > limit:
            self.abort()
            if self._expected is not None:
                raise SizeMismatch(f"upload is larger than the announced {self._expected} bytes")
            raise PayloadTooLarge(f"upload exceeds the server's limit of {self._max} bytes")
        self._sha.update(chunk)
        if self._git is not None:
            self._git.update(chunk)
        try:
            self._fh.write(chunk)
        except OSError as exc:
            self.abort()
            raise _storage_error(exc, "cannot store the upload") from None

    def commit(self, expected_sha256: str | None = None) -> StoredBlob:
        try:
            if self._expected is not None and self._size != self._expected:
                raise SizeMismatch(f"upload has {self._size} bytes, {self._expected} were announced")
            digest = self._sha.hexdigest()
            if expected_sha256 is not None and digest != expected_sha256.lower():
                raise HashMismatch(f"upload's sha256 is {digest}, not the announced {expected_sha256}")
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
            except OSError as exc:
                raise _storage_error(exc, "cannot store the upload") from None
            final = self._store.path_of(digest)
            created = not final.exists()
            if created:
                try:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.chmod(self._tmp, 0o444)
                    os.replace(self._tmp, final)
                    _fsync_dir(final.parent)
                except OSError as exc:
                    raise _storage_error(exc, "cannot store the upload") from None
            else:
                # Stored again: a fresh mtime tells `lorahub registry check --repair` the blob is in
                # use, so an orphan being reused is not removed under the commit that reuses it.
                try:
                    os.utime(final)
                except OSError:
                    pass
            self._done = True
            return StoredBlob(
                sha256=digest,
                size=self._size,
                git_sha1=self._git.hexdigest() if self._git is not None else None,
                created=created,
            )
        finally:
            self.abort()

    def abort(self) -> None:
        try:
            if not self._fh.closed:
                self._fh.close()
        except OSError:
            pass
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError:
            pass


class LocalBlobStore:
    """Blobs in a local folder (``<data>/blobs``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.objects = self.root / "sha256"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)
        self.chunks: ChunkSource | None = None
        self._held: dict[str, list] = {}  # sha256 -> [tmp path, holders]: chunk-backed blobs rebuilt in tmp/
        self._held_lock = threading.Lock()

    def attach_chunks(self, source: ChunkSource) -> None:
        """Serve the blobs stored as chunks (Xet uploads) from ``source``."""
        self.chunks = source

    def path_of(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise BadRequest(f"not a sha256: {sha256[:80]!r}")
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    # -- writing -------------------------------------------------------------------------

    def begin(self, *, expected_size: int | None = None, max_size: int | None = None, git_sha1: bool = False) -> BlobWriter:
        return _LocalWriter(self, expected_size, max_size, git_sha1)

    def put_stream(
        self,
        chunks: Iterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
        git_sha1: bool = False,
    ) -> StoredBlob:
        w = self.begin(expected_size=expected_size, max_size=max_size, git_sha1=git_sha1)
        try:
            for chunk in chunks:
                w.write(chunk)
        except BaseException:
            w.abort()
            raise
        return w.commit(expected_sha256)

    def put_bytes(self, data: bytes, *, expected_sha256: str | None = None) -> StoredBlob:
        return self.put_stream([data], expected_sha256=expected_sha256, expected_size=len(data), git_sha1=True)

    # -- reading -------------------------------------------------------------------------

    def open(self, sha256: str) -> BinaryIO:
        """The blob's bytes: its file, else (stored as chunks) a seekable reader over its chunks."""
        try:
            return open(self.path_of(sha256), "rb")  # noqa: SIM115
        except FileNotFoundError:
            fh = self.chunks.open_chunked(sha256) if self.chunks is not None else None
            if fh is None:
                raise
            return fh

    def exists(self, sha256: str) -> bool:
        if self.path_of(sha256).is_file():
            return True
        return self.chunks is not None and self.chunks.chunked_size(sha256) is not None

    def size(self, sha256: str) -> int:
        try:
            return self.path_of(sha256).stat().st_size
        except FileNotFoundError:
            n = self.chunks.chunked_size(sha256) if self.chunks is not None else None
            if n is None:
                raise
            return n

    def local_path(self, sha256: str) -> Path | None:
        """The blob file's path; None for a blob stored only as chunks (see :meth:`materialized`)."""
        p = self.path_of(sha256)
        if self.chunks is not None and not p.is_file() and self.chunks.chunked_size(sha256) is not None:
            return None
        return p

    @contextmanager
    def materialized(self, sha256: str) -> Iterator[Path]:
        """A real file with the blob's bytes while held: the blob file, or for a blob stored as
        chunks a copy rebuilt in ``tmp/`` (shared by its holders, removed by the last one; a crash
        leaves a ``tmp/*.part`` that the sweep removes). FileNotFoundError when neither."""
        p = self.path_of(sha256)
        if p.is_file() or self.chunks is None or self.chunks.chunked_size(sha256) is None:
            yield p
            return
        entry = self._hold(sha256)
        try:
            with entry[2]:
                if entry[0] is None:
                    entry[0] = self._rebuild(sha256)
            yield entry[0]
        finally:
            self._release(sha256, entry)

    @contextmanager
    def holding(self, shas: Iterable[str]) -> Iterator[None]:
        """Keep what :meth:`materialized` rebuilds for these blobs until the block ends (a commit
        checks and then fingerprints a file: one rebuild for both)."""
        held = [(sha, self._hold(sha)) for sha in sorted(set(shas))]
        try:
            yield
        finally:
            for sha, entry in held:
                self._release(sha, entry)

    def _hold(self, sha256: str) -> list:
        with self._held_lock:
            entry = self._held.get(sha256)
            if entry is None:
                entry = self._held[sha256] = [None, 0, threading.Lock()]  # [rebuilt file, holders, lock]
            entry[1] += 1
            return entry

    def _release(self, sha256: str, entry: list) -> None:
        with self._held_lock:
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                self._held.pop(sha256, None)
        if last and entry[0] is not None:
            entry[0].unlink(missing_ok=True)

    def _rebuild(self, sha256: str) -> Path:
        assert self.chunks is not None
        src = self.chunks.open_chunked(sha256)
        if src is None:
            raise FileNotFoundError(sha256)
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            with src, open(tmp, "xb") as out:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _storage_error(exc, "cannot rebuild a blob from its chunks") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def delete(self, sha256: str) -> None:
        p = self.path_of(sha256)
        try:
            p.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(p.parent)

    # -- maintenance ---------------------------------------------------------------------

    def sweep_tmp(self, older_than_s: float = 24 * 3600) -> int:
        """Remove leftover ``tmp/*.part`` files older than ``older_than_s``; return how many."""
        return sweep_parts(self.tmp_dir, older_than_s)

    def iter_blobs(self) -> Iterable[str]:
        for p in self.objects.glob("*/*/*"):
            if is_sha256(p.name):
                yield p.name


class BlobCache:
    """A bounded, thread-safe map of what was computed from a blob (a check, fingerprints), keyed by
    its sha256: blobs never change, so an entry is never stale; the least recently used go first."""

    def __init__(self, size: int = 2048) -> None:
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
