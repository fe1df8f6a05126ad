"""Every hash the community uses for an adapter file, from one read of the file.

Definitions (``docs/hashes.md`` says which tool shows which):

============== ==================================================== ==========
field          bytes hashed                                         output
============== ==================================================== ==========
sha256         whole file (the Hub's LFS oid)                       64 hex
autov1         SHA-256 of ``[0x100000, 0x110000)`` (A1111 old hash)  8 hex
autov2         = sha256                                             10 hex
tensor_sha256  SHA-256 of ``[8+N, EOF)`` (kohya ``sshs_model_hash``) 64 hex
autov3         = tensor_sha256                                      12 hex
crc32          whole file, CRC-32/ISO-HDLC (zlib)                   8 hex
blake3         whole file, BLAKE3-256                               64 hex
============== ==================================================== ==========

Conventions and edge cases, decided here once:

* **Case:** the 64-hex digests (sha256, tensor_sha256, blake3) are lower case, as
  sha256sum, the Hub's LFS oids and kohya write them; the short Civitai ids
  (autov1, autov2, autov3, crc32) are upper case, as Civitai shows them. Every
  comparison inside lorahub is case-insensitive: compare with :func:`same_hash`.
* **AutoV1 is computed exactly as the tools do**, over what
  ``f.seek(0x100000); f.read(0x10000)`` returns: AUTOMATIC1111
  (``modules/hashes.py``/``sd_models.model_hash``) and kohya-ss/sd-scripts
  (``library/train_util.py`` ``model_hash``) hash the possibly short read. A file
  between 1 MiB and 1 MiB + 64 KiB hashes the bytes that exist; a file of at
  most 1 MiB hashes nothing and gets ``E3B0C442`` (the SHA-256 of zero bytes),
  the value those tools print and store for every small file. It identifies no
  file, but a lookup by it must find what the tools would show (Civitai, whose
  scanner stores null below 2 MiB, is the exception).
* **Not a safetensors file** (no usable header, a pickle, an empty file): the
  whole-file hashes (sha256, autov1, autov2, crc32, blake3) are still reported,
  ``tensor_sha256``/``autov3`` are None, ``embedded_hash`` is ``absent`` and
  ``warnings`` says why. Hashing reads bytes only: a pickle is never unpickled,
  so fingerprinting one is harmless and lets it be looked up by SHA-256/AutoV2.
* **Empty data region** (a header and no tensor bytes): the tensor hash is the
  SHA-256 of zero bytes, as A1111 and kohya would compute it.
* ``embedded_hash``: the ``sshs_model_hash`` metadata value is ``absent``;
  ``unverifiable`` when it starts with ``0x`` (LyCORIS 4.x hashes tensors in
  state-dict order, which the file does not keep) or is not 64 hex digits;
  ``match`` when it equals the tensor hash ignoring case; else ``mismatch``.

Speed: one read of the file (``readinto`` into a small ring of page-aligned
buffers lent by :mod:`lorahub._readbuf`; the file is not mapped, so a file
truncated while it is read is an error, not a SIGBUS) feeds the hashers from
worker threads. The two SHA-256 values (the file's, its tensor data's) come from
one hasher where the CPU has the x86 SHA extensions: :mod:`lorahub._sha256x2`
(``lorahub/_sha256x2.c``, built by the install where a C compiler exists)
interleaves the two chains on one core, which costs about what one chain costs
(a chain is bound by the latency of the SHA round instruction), and leaves the
other core to BLAKE3, CRC32 and the sketch. Elsewhere they are two hashlib
hashers, which on two cores run in parallel. hashlib, zlib, blake3 and the
kernel release the GIL on large buffers; the scheduler hands each idle thread
whichever hasher is furthest behind (or the next read), which balances the work
without a fixed split. A ``sink`` must not keep the views it is handed: the
buffers are reused.

Results are cached by path, size, mtime, ctime and inode (see
:mod:`lorahub.adapters.hashcache`). The cached path imports neither pydantic
nor blake3: :func:`fingerprint_records` returns plain dicts shaped exactly like
:class:`lorahub.schemas.adapters.FingerprintReport`, which
:func:`fingerprint_file` and :func:`fingerprint_paths` return.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._readbuf import read_buffers
from ..errors import AdapterFileError, LorahubError

if TYPE_CHECKING:  # pragma: no cover
    from lorahub.schemas.adapters import FingerprintReport

#: Called with the number of bytes just processed.
Progress = Callable[[int], None]

AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000

#: Bytes per read; every hasher sees the file in slices of at most this size.
CHUNK_SIZE = 1 << 20
#: Buffers in the ring (read-ahead of the slowest hasher).
RING_BUFFERS = 8
#: Files up to this size are hashed in the calling thread: threads cost more than they save.
THREADED_MIN_SIZE = 8 << 20

_HEX = frozenset("0123456789abcdefABCDEF")


def same_hash(a: str | None, b: str | None) -> bool:
    """Compare two hex hashes (or prefixes of the same length) ignoring case."""
    return a is not None and b is not None and a.lower() == b.lower()


def embedded_hash_status(embedded: object, tensor_sha256: str | None) -> str:
    """``match``, ``mismatch``, ``absent`` or ``unverifiable`` (see the module docstring)."""
    if embedded is None:
        return "absent"
    if not isinstance(embedded, str):
        return "unverifiable"
    value = embedded.strip()
    if value[:2].lower() == "0x" or len(value) != 64 or not set(value) <= _HEX or tensor_sha256 is None:
        return "unverifiable"
    return "match" if same_hash(value, tensor_sha256) else "mismatch"


# --------------------------------------------------------------------------------------------
# The hashing engine


def _crc32_function() -> Callable[[Any, int], int]:
    """isal's CRC-32 (PCLMUL, ~4x zlib's) when installed, else zlib's: the same CRC-32/ISO-HDLC."""
    try:
        from isal.isal_zlib import crc32
    except ImportError:  # pragma: no cover - isal is a dependency, but optional at run time
        return zlib.crc32
    return crc32


class _Crc32:
    __slots__ = ("value", "_fn")

    def __init__(self, fn: Callable[[Any, int], int] | None = None) -> None:
        self.value = 0
        self._fn = fn or _crc32_function()

    def update(self, data: Any) -> None:
        self.value = self._fn(data, self.value)


class _Job:
    """One hasher fed the byte range ``[start, end)`` of the file, chunk by chunk."""

    __slots__ = ("name", "hasher", "start", "end", "next_chunk", "last_chunk", "busy")

    def __init__(self, name: str, hasher: Any, start: int, end: int, chunk: int) -> None:
        self.name = name
        self.hasher = hasher
        self.start = start
        self.end = end
        self.busy = False
        if end > start:
            self.next_chunk = start // chunk
            self.last_chunk = (end - 1) // chunk
        else:  # nothing to hash: finished from the start
            self.next_chunk = 0
            self.last_chunk = -1

    @property
    def done(self) -> bool:
        return self.next_chunk > self.last_chunk


class _FileChanged(Exception):
    pass


class Cancelled(LorahubError):
    """The hashing was stopped from outside (``cancel``): the caller is leaving, the values are not wanted."""


def _hash_file(
    fh: Any,
    size: int,
    jobs: list[_Job],
    *,
    chunk: int,
    workers: int,
    progress: Progress | None,
    cancel: threading.Event | None = None,
) -> None:
    """Read ``fh`` (positioned at 0) once, feeding every job its byte range (until ``cancel`` is set).

    The ring holds ``RING_BUFFERS`` chunks; chunk ``k`` lives in ``bufs[k % ring]``
    and is read only once every job is past chunk ``k - ring``. Any idle worker
    takes the next read if one is possible (reads are cheap and keep the ring
    full), else the unfinished job that is furthest behind and has its chunk.
    """
    nchunks = (size + chunk - 1) // chunk
    ring = max(2, min(RING_BUFFERS, nchunks))
    with read_buffers(ring, min(chunk, size)) as bufs:  # every worker has stopped when the block ends
        _hash_ring(fh, size, jobs, bufs, chunk=chunk, workers=workers, progress=progress, cancel=cancel)


def _hash_ring(fh: Any, size: int, jobs: list[_Job], bufs: list[Any], *, chunk: int, workers: int,
               progress: Progress | None, cancel: threading.Event | None = None) -> None:
    """:func:`_hash_file` with its ring of buffers (at least ``chunk`` bytes each, or the file's size)."""
    nchunks = (size + chunk - 1) // chunk
    ring = len(bufs)
    lens = [0] * ring
    cond = threading.Condition()
    state = {"read": 0, "reading": False, "error": None}
    # Progress follows the slowest job that spans the whole file.
    whole = [j for j in jobs if j.start == 0 and j.end == size] or jobs

    def min_needed() -> int:
        pending = [j.next_chunk for j in jobs if not j.done]
        return min(pending) if pending else nchunks

    def pick() -> tuple[str, Any] | None:
        if cancel is not None and cancel.is_set() and state["error"] is None:
            state["error"] = Cancelled("hashing stopped")
        if state["error"] is not None:
            return ("stop", None)
        r = state["read"]
        if not state["reading"] and r < nchunks and r < min_needed() + ring:
            state["reading"] = True
            return ("read", r)
        best = None
        for j in jobs:
            if not j.busy and not j.done and j.next_chunk < r and (best is None or j.next_chunk < best.next_chunk):
                best = j
        if best is not None:
            best.busy = True
            return ("hash", best)
        if all(j.done for j in jobs):
            return ("stop", None)
        return None

    def do_read(k: int) -> None:
        buf = bufs[k % ring]
        want = min(chunk, size - k * chunk)
        view = memoryview(buf)
        got = 0
        while got < want:
            n = fh.readinto(view[got:want])
            if not n:
                raise _FileChanged(f"file ended at byte {k * chunk + got} while it was read (it is {size} bytes)")
            got += n
        view.release()
        lens[k % ring] = want

    def do_hash(job: _Job) -> None:
        k = job.next_chunk
        cstart = k * chunk
        lo = max(job.start, cstart) - cstart
        hi = min(job.end, cstart + lens[k % ring]) - cstart
        view = memoryview(bufs[k % ring])
        try:
            job.hasher.update(view[lo:hi])
        finally:
            view.release()

    def worker() -> None:
        while True:
            with cond:
                task = pick()
                while task is None:
                    cond.wait()
                    task = pick()
            kind, arg = task
            if kind == "stop":
                return
            try:
                if kind == "read":
                    do_read(arg)
                else:
                    do_hash(arg)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                with cond:
                    if state["error"] is None:
                        state["error"] = exc
                    cond.notify_all()
                return
            with cond:
                if kind == "read":
                    state["reading"] = False
                    state["read"] += 1
                else:
                    arg.busy = False
                    arg.next_chunk += 1
                cond.notify_all()

    if workers <= 1 or nchunks <= 1:
        worker()
        if state["error"] is not None:
            raise state["error"]
        if progress is not None and size:
            progress(size)
        return

    threads = [threading.Thread(target=worker, name=f"lorahub-hash-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    reported = 0
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.1)
                if progress is not None:
                    done = min(min(j.next_chunk, j.last_chunk + 1) * chunk for j in whole)
                    done = min(done, size)
                    if done > reported:
                        progress(done - reported)
                        reported = done
    except BaseException:
        with cond:
            if state["error"] is None:
                state["error"] = KeyboardInterrupt()
            cond.notify_all()
        for t in threads:
            t.join()
        raise
    if state["error"] is not None:
        raise state["error"]
    if progress is not None and size > reported:
        progress(size - reported)


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


# --------------------------------------------------------------------------------------------
# One file


def _sha256_pair(offset: int) -> Any | None:
    """A hasher of both SHA-256 values at once (the file's and its bytes from ``offset`` on), interleaved on
    one core: :mod:`lorahub._sha256x2`, or None where it was not built (no C compiler at install) or the CPU
    has no SHA extensions; the two chains then run as two hashlib hashers."""
    try:
        from .._sha256x2 import AVAILABLE, Sha256Pair
    except ImportError:  # pragma: no cover - built by the install where a compiler exists
        return None
    return Sha256Pair(offset) if AVAILABLE else None


def _open(path: str) -> tuple[Any, os.stat_result]:
    from .header import open_regular

    return open_regular(path, buffering=0)


def _tensor_region(path: str, size: int, header: Any = None) -> tuple[int | None, object, list[str]]:
    """``(data_start or None, embedded sshs_model_hash or None, warnings)``; ``header``: the file's, when the
    caller has read it already."""
    from .header import read_header

    if header is None:
        try:
            header = read_header(path)
        except AdapterFileError as exc:
            return None, None, [f"no tensor hash: {exc.reason}"]
    if header.file_size != size:
        raise AdapterFileError(path, "changed while it was read (size differs); try again")
    md = header.metadata
    return header.data_start, md.get("sshs_model_hash"), []


def _compute(path: str, fh: Any, st: os.stat_result, progress: Progress | None, chunk: int,
             header: Any = None, sink: Any = None, threads: int | None = None,
             cancel: threading.Event | None = None) -> dict[str, Any]:
    import blake3

    size = st.st_size
    data_start, embedded, warnings = _tensor_region(path, size, header)
    crc = _Job("crc32", _Crc32(), 0, size, chunk)
    b3 = _Job("blake3", blake3.blake3(), 0, size, chunk)
    pair = _sha256_pair(data_start) if data_start is not None else None
    sha = tensor = None
    if pair is not None:  # both SHA-256 chains on one core
        jobs = [_Job("sha256+tensor_sha256", pair, 0, size, chunk), crc, b3]
    else:
        sha = _Job("sha256", hashlib.sha256(), 0, size, chunk)
        jobs = [sha, crc, b3]
        if data_start is not None:
            tensor = _Job("tensor_sha256", hashlib.sha256(), data_start, size, chunk)
            jobs.insert(1, tensor)
    # A1111 and kohya hash whatever seek(0x100000); read(0x10000) returns: nothing at all for a file of at
    # most 1 MiB (an empty range here: the job starts finished and hashes no bytes).
    autov1 = _Job("autov1", hashlib.sha256(), AUTOV1_OFFSET, min(size, AUTOV1_OFFSET + AUTOV1_LENGTH), chunk)
    jobs.append(autov1)
    if sink is not None and data_start is not None:
        jobs.append(_Job("sink", sink, data_start, size, chunk))
    workers = (threads or _workers()) if size >= THREADED_MIN_SIZE else 1
    try:
        _hash_file(fh, size, jobs, chunk=chunk, workers=workers, progress=progress, cancel=cancel)
    except _FileChanged as exc:
        raise AdapterFileError(path, f"changed while it was read: {exc}", hint="try again") from None
    except OSError as exc:
        raise AdapterFileError(path, f"cannot read: {exc.strerror or exc}") from None
    after = os.fstat(fh.fileno())
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise AdapterFileError(path, "changed while it was read", hint="try again")
    if pair is not None:
        whole, data = pair.digests()
        sha_hex, tensor_hex = whole.hex(), data.hex()
    else:
        assert sha is not None
        sha_hex = sha.hasher.hexdigest()
        tensor_hex = tensor.hasher.hexdigest() if tensor is not None else None
    return {
        "size": size,
        "sha256": sha_hex,
        "autov1": autov1.hasher.hexdigest()[:8].upper(),
        "autov2": sha_hex[:10].upper(),
        "autov3": tensor_hex[:12].upper() if tensor_hex is not None else None,
        "tensor_sha256": tensor_hex,
        "crc32": f"{crc.hasher.value:08X}",
        "blake3": b3.hasher.hexdigest(),
        "embedded_hash": embedded_hash_status(embedded, tensor_hex),
        "embedded_sshs_model_hash": embedded if isinstance(embedded, str) else None,
        "warnings": warnings,
    }


_RECORD_KEYS = frozenset(
    ["size", "sha256", "autov1", "autov2", "autov3", "tensor_sha256", "crc32", "blake3", "embedded_hash",
     "embedded_sshs_model_hash"]
)


def _record(path: str, body: dict[str, Any], cached: bool) -> dict[str, Any]:
    """A plain dict in the field order of FingerprintReport."""
    return {
        "path": path,
        "size": body["size"],
        "sha256": body["sha256"],
        "autov1": body["autov1"],
        "autov2": body["autov2"],
        "autov3": body["autov3"],
        "tensor_sha256": body["tensor_sha256"],
        "crc32": body["crc32"],
        "blake3": body["blake3"],
        "embedded_hash": body["embedded_hash"],
        "embedded_sshs_model_hash": body["embedded_sshs_model_hash"],
        "cached": cached,
        "warnings": list(body.get("warnings", [])),
    }


#: Files modified less than this long before hashing began are not cached: a
#: same-size rewrite within the file system's timestamp granularity would
#: otherwise look unchanged (git's "racily clean" problem).
RACY_WINDOW_NS = 2_000_000_000


def fingerprint_record(
    path: str | os.PathLike[str],
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
    cache: Any = None,
    header: Any = None,
    sink: Any = None,
    threads: int | None = None,
    cancel: threading.Event | None = None,
    _chunk: int = CHUNK_SIZE,
) -> dict[str, Any]:
    """Like :func:`fingerprint_file` but a plain dict (no pydantic import).

    ``header``: the file's :class:`~lorahub.adapters.header.SafetensorsHeader` when the caller has read it
    (it is not read again). ``sink``: an object whose ``update(view)`` is handed the file's data region
    (``[8 + N, EOF)``) in order, in slices, from the same read as the hashes, in a worker thread beside them
    (``lorahub index`` sketches ΔW so: :class:`lorahub.adapters.sketch.StreamSketch`); it must not raise, and
    it is fed only when the hashes are computed, not on a cache hit. ``threads``: how many threads hash the
    file (default: one per core, up to 4, for a file of at least :data:`THREADED_MIN_SIZE`); a caller that
    hashes files side by side gives each one (the files keep the cores busy, and one thread runs every
    hasher over a buffer while it is in the core's cache). ``cancel``: an event that, once set, stops the
    hashing at its next buffer with :class:`Cancelled` (:func:`map_files` hands one that it sets when its caller
    leaves).
    """
    spath = os.fspath(path)
    fh, st = _open(spath)
    with fh:
        own_cache = None
        key = None
        if use_cache:
            from .hashcache import FileKey, HashCache

            key = FileKey.of(spath, st)
            if cache is None:
                cache = own_cache = HashCache.open_default()
            try:
                hit = cache.get(key)
                if hit is not None and _RECORD_KEYS <= hit.keys():
                    if progress is not None and st.st_size:
                        progress(st.st_size)
                    return _record(spath, hit, cached=True)
                started = time.time_ns()
                body = _compute(spath, fh, st, progress, _chunk, header, sink, threads, cancel)
                if started - st.st_mtime_ns >= RACY_WINDOW_NS:
                    cache.put(key, body)
                return _record(spath, body, cached=False)
            finally:
                if own_cache is not None:
                    own_cache.close()
        body = _compute(spath, fh, st, progress, _chunk, header, sink, threads, cancel)
        return _record(spath, body, cached=False)


def fingerprint_file(
    path: str | os.PathLike[str],
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> FingerprintReport:
    """Fingerprint one file (any file: see the module docstring for non-safetensors).

    ``use_cache=False`` neither reads nor writes the cache. ``progress`` is called
    with byte counts as the file is hashed (the whole size at once on a cache hit).
    Raises :class:`AdapterFileError` for a missing/unreadable path or a file that
    changes while it is read.
    """
    from lorahub.schemas.adapters import FingerprintReport

    return FingerprintReport(**fingerprint_record(path, use_cache=use_cache, progress=progress))


# --------------------------------------------------------------------------------------------
# Many files


def expand_paths(paths: Iterable[str | os.PathLike[str]], *, pattern: str = "*.safetensors") -> list[str]:
    """Files named directly (any type) plus every ``pattern`` file under named folders, sorted.

    Raises :class:`AdapterFileError` for a path that does not exist.
    """
    out: list[str] = []
    seen: set[str] = set()
    for p in paths:
        sp = os.fspath(p)
        if os.path.isdir(sp):
            found = sorted(str(f) for f in Path(sp).rglob(pattern) if f.is_file())
        elif os.path.exists(sp):
            found = [sp]
        else:
            raise AdapterFileError(sp, "no such file or folder")
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


_T = TypeVar("_T")


def map_files(fn: Callable[[str, int | None, threading.Event | None], _T], paths: Sequence[str],
              workers: int | None = None) -> Iterator[_T]:
    """``fn(path, threads, cancel)`` of every path, in order, ``workers`` files at a time (default: a thread
    per core, up to 4; one after the other in the caller's thread for fewer than 4 files or one worker, each
    with ``threads=None`` and ``cancel=None``). ``fn`` hands both to :func:`fingerprint_record`.

    Side by side, a file that begins while others wait to begin is given ``threads=1``: the files keep the
    cores busy, and one thread runs every hasher over a buffer while it is in the core's cache; the last ones
    begun get None (the default threads), so that no core idles at the end. An exception from ``fn`` is raised
    where its path's result would come; files not begun by then are not. ``cancel`` is set when the iteration
    ends, however it ends (an error, the caller leaving, Ctrl-C): the files being hashed stop at their next
    buffer instead of being hashed to the end for nobody."""
    workers = workers or _workers()
    if workers <= 1 or len(paths) < 4:
        for path in paths:
            yield fn(path, None, None)
        return
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()
    queued = [len(paths)]  # files not yet begun
    cancel = threading.Event()

    def one(path: str) -> _T:
        with lock:
            queued[0] -= 1
            threads = 1 if queued[0] > 0 else None
        return fn(path, threads, cancel)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lorahub-files")
    try:
        yield from pool.map(one, paths)
    finally:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)


def iter_records(
    files: Iterable[str],
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
    workers: int | None = None,
    _chunk: int = CHUNK_SIZE,
) -> Iterator[dict[str, Any]]:
    """Fingerprint already-expanded ``files``, in order, several at a time (:func:`map_files`; a cache
    connection per thread). ``progress`` is called from the threads that hash, one call at a time."""
    from .hashcache import ThreadCaches

    lock = threading.Lock()
    report: Progress | None = None
    if progress is not None:
        def report(n: int) -> None:
            with lock:
                progress(n)

    with ThreadCaches(use_cache) as caches:

        def one(path: str, threads: int | None, cancel: threading.Event | None) -> dict[str, Any]:
            return fingerprint_record(path, use_cache=use_cache, progress=report, cache=caches.get(),
                                      threads=threads, cancel=cancel, _chunk=_chunk)

        yield from map_files(one, list(files), workers)


def fingerprint_records(
    paths: Iterable[str | os.PathLike[str]],
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Like :func:`fingerprint_paths` but plain dicts (no pydantic import)."""
    return list(iter_records(expand_paths(paths), use_cache=use_cache, progress=progress))


def fingerprint_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> list[FingerprintReport]:
    """Fingerprint files and folders (folders: every ``*.safetensors`` below them, recursively)."""
    from lorahub.schemas.adapters import FingerprintReport

    return [FingerprintReport(**r) for r in fingerprint_records(paths, use_cache=use_cache, progress=progress)]


__all__ = [
    "Cancelled",
    "AUTOV1_LENGTH",
    "AUTOV1_OFFSET",
    "embedded_hash_status",
    "expand_paths",
    "fingerprint_file",
    "fingerprint_paths",
    "fingerprint_record",
    "fingerprint_records",
    "iter_records",
    "map_files",
    "same_hash",
]
