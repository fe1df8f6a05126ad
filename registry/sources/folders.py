"""Indexing folders of local ``.safetensors`` adapters.

One pass:

1. walk the given folders (symlinked folders followed once) and ``stat`` every
   ``*.safetensors`` file;
2. read every indexed local file of the database in **one** query;
3. a file whose path, size, mtime and inode are those stored is unchanged:
   nothing is read, nothing is written (re-indexing 1,000 unchanged files is a
   walk, one query and nothing else);
4. new or changed files are inspected (header only), fingerprinted (cached by
   path/size/mtime/inode) and sketched (their ΔW, :mod:`lorahub.adapters.sketch`), in a few threads;
5. a new path whose inode/size/mtime, or else whose SHA-256, belongs to an
   indexed file that no longer exists is a **move**: the adapter keeps its id;
6. indexed files under the scanned folders that are gone are **removed**;
7. everything is written in one transaction.

Re-indexing an unchanged folder imports neither SQLAlchemy nor the tables (a command's fast
start): the stored files are read on a :class:`~lorahub.registry.database.Raw` reader, and the
writing modules are imported only when there is something to write.
"""

from __future__ import annotations

import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lorahub.errors import LorahubError, UsageError
from lorahub.schemas.registry import HASH_FIELDS, IndexFailure, IndexSummary

if TYPE_CHECKING:  # pragma: no cover
    from ..catalogue import Registry
    from ..database import Raw
    from ..drafts import AdapterDraft

SUFFIX = ".safetensors"


@dataclass
class Stored:
    file_id: int
    adapter_id: int
    path: str
    size: int | None
    mtime_ns: int | None
    inode: int | None
    hashes: dict[str, str | None]


def walk(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], dict[str, os.stat_result], list[str]]:
    """``(roots, {real path: stat}, problems)`` of every ``.safetensors`` file under ``paths``."""
    roots: list[str] = []
    found: dict[str, os.stat_result] = {}
    problems: list[str] = []
    for p in paths:
        raw = os.path.expanduser(os.fspath(p))
        if not os.path.exists(raw):
            raise UsageError(f"{raw}: no such file or folder")
        real = os.path.realpath(raw)
        roots.append(real)
        if os.path.isfile(real):
            found[real] = os.stat(real)
            continue
        seen_dirs: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(real, followlinks=True, onerror=lambda e: problems.append(str(e))):
            rd = os.path.realpath(dirpath)
            if rd in seen_dirs:  # a symlink loop or a folder reached twice
                dirnames[:] = []
                continue
            seen_dirs.add(rd)
            dirnames.sort()
            for name in sorted(filenames):
                if not name.lower().endswith(SUFFIX):
                    continue
                full = os.path.realpath(os.path.join(dirpath, name))
                try:
                    st = os.stat(full)
                except OSError as exc:
                    problems.append(f"{full}: {exc.strerror or exc}")
                    continue
                if stat_mod.S_ISREG(st.st_mode):
                    found[full] = st
    return roots, found, problems


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _stored(raw: Raw) -> list[Stored]:
    cols = ", ".join(["f.id", "f.adapter_id", "f.path", "f.size", "f.mtime_ns", "f.inode", *(f"f.{c}" for c in HASH_FIELDS)])
    rows = raw.all(f"SELECT {cols} FROM adapter_files f JOIN adapters a ON a.id = f.adapter_id "
                   "WHERE a.source_kind = :local AND f.path IS NOT NULL", {"local": "local"})
    return [Stored(r[0], r[1], r[2], r[3], r[4], r[5], dict(zip(HASH_FIELDS, r[6:], strict=True))) for r in rows]


def _same(st: os.stat_result, s: Stored) -> bool:
    return (st.st_size, st.st_mtime_ns, st.st_ino) == (s.size, s.mtime_ns, s.inode)


def _analyse(paths: list[str], stats: dict[str, os.stat_result], workers: int | None,
             progress: Callable[[int], None] | None) -> dict[str, tuple[Any, dict[str, Any]] | str]:
    """``{path: (InspectReport, fingerprint record) or error text}``."""
    from lorahub.adapters.fingerprint import fingerprint_record, map_files
    from lorahub.adapters.formats import analyze
    from lorahub.adapters.hashcache import ThreadCaches
    from lorahub.adapters.header import read_header
    from lorahub.adapters.inspect import inspect_header

    caches = ThreadCaches()

    def one(path: str, threads: int | None, cancel: threading.Event | None) -> tuple[str, Any]:
        try:
            header = read_header(path)
            analysis = analyze(header)
            report = inspect_header(header, analysis)
            if report.format == "unknown" and report.modules == 0:
                return path, "not a LoRA adapter (no adapter weights found)"
            stream = _stream(header, analysis)
            record = dict(fingerprint_record(path, cache=caches.get(), header=header, sink=stream, threads=threads,
                                                cancel=cancel))
            record["sketch"] = _sketch(header, analysis, stream)
        except LorahubError as exc:
            return path, str(exc).removeprefix(f"{path}: ")
        except OSError as exc:
            return path, exc.strerror or str(exc)
        finally:
            if progress is not None:
                progress(1)
        return path, (report, record)

    with caches:  # side by side, each file hashed by one thread while others wait to begin (map_files)
        return dict(map_files(one, paths, workers))


def _stream(header: Any, analysis: Any) -> Any:
    """A :class:`~lorahub.adapters.sketch.StreamSketch` of the file of ``header``, fed by its fingerprint's
    read (None when there is nothing to sketch)."""
    from lorahub.adapters.sketch import StreamSketch

    try:
        stream = StreamSketch(header, analysis)
    except (LorahubError, ValueError):
        return None
    return stream if stream.wanted else None


def _sketch(header: Any, analysis: Any = None, stream: Any = None) -> bytes | None:
    """The serialised ΔW sketch of the file of ``header`` (:mod:`lorahub.adapters.sketch`), or None when its
    weights cannot be sketched (the file is indexed all the same: ``lorahub dupes --near`` then does not see it).
    ``stream``: the :func:`_stream` its fingerprint fed; when it was not fed (a cached fingerprint), the file's
    weights are read here."""
    from lorahub.adapters.sketch import sketch_header

    try:
        if stream is not None and stream.complete:
            return stream.result().to_bytes()
        return sketch_header(header, analysis).to_bytes()
    except (LorahubError, OSError, ValueError):
        return None


def _unsketched(registry: Registry, unchanged: list[Stored]) -> list[Stored]:
    """Unchanged files that have no sketch of the current version (indexed before sketches existed)."""
    if not unchanged:
        return []
    from lorahub.adapters.sketch import VERSION

    with registry.reading() as raw:
        have = {r[0] for r in raw.all("SELECT sha256 FROM adapter_sketches WHERE version = :v", {"v": VERSION})}
    return [s for s in unchanged if s.hashes.get("sha256") and s.hashes["sha256"] not in have]


def _backfill(files: list[Stored]) -> list[dict[str, Any]]:
    """Sketch rows for ``files`` (unchanged files indexed before sketches existed)."""
    if not files:
        return []
    from ..database import utcnow
    from ..rows import sketch_row

    now = utcnow()
    rows = {}
    from lorahub.adapters.header import read_header

    for s in files:
        try:
            data = _sketch(read_header(s.path))
        except (LorahubError, OSError):
            data = None
        sha = s.hashes["sha256"]
        if data is not None and sha:
            rows[sha] = sketch_row(sha, data, now)
    return list(rows.values())


def index_paths(registry: Registry, paths: Iterable[str | os.PathLike[str]], *,
                progress: Callable[[int], None] | None = None, workers: int | None = None) -> IndexSummary:
    started = time.perf_counter()
    roots, found, problems = walk(list(paths))
    summary = IndexSummary(scanned=len(found), database=registry.display_url)
    summary.failed.extend(IndexFailure(path=p.split(": ", 1)[0], error=p.split(": ", 1)[-1]) for p in problems)

    with registry.reading() as raw:
        stored = _stored(raw)
    by_path = {s.path: s for s in stored}

    todo: list[str] = []
    unchanged: list[Stored] = []
    for path, st in found.items():
        s = by_path.get(path)
        if s is not None and _same(st, s):
            summary.unchanged += 1
            unchanged.append(s)
        else:
            todo.append(path)
    backfill = _unsketched(registry, unchanged)

    # Indexed files that are not where they were: under a scanned root and not found,
    # or anywhere else and gone from the disk (checked lazily).
    vanished = {s.path: s for s in stored if s.path not in found and _under(s.path, roots)}
    elsewhere = [s for s in stored if s.path not in found and not _under(s.path, roots)]

    def gone(s: Stored) -> bool:
        return s.path in vanished or not os.path.exists(s.path)

    claimed: set[int] = set()
    moves: dict[str, Stored] = {}  # new path -> the stored file it was
    by_inode: dict[tuple[int | None, int | None, int | None], list[Stored]] = {}
    for s in [*vanished.values(), *elsewhere]:
        by_inode.setdefault((s.inode, s.size, s.mtime_ns), []).append(s)
    new_paths = [p for p in todo if p not in by_path]
    for path in new_paths:
        st = found[path]
        for s in by_inode.get((st.st_ino, st.st_size, st.st_mtime_ns), []):
            if s.file_id not in claimed and gone(s):
                claimed.add(s.file_id)
                moves[path] = s
                break

    analyse = [p for p in todo if p not in moves]
    results = _analyse(analyse, found, workers, progress)  # None: map_files' default, a thread per core up to 4
    if moves:
        # A renamed file keeps its fingerprints; its header is read again (cheap) for the new name.
        from lorahub.adapters.inspect import inspect_file

        for path, s in moves.items():
            try:
                results[path] = (inspect_file(path), dict(s.hashes))
            except LorahubError as exc:
                results[path] = str(exc)

    from ..drafts import local_file_draft

    by_sha: dict[str, list[Stored]] = {}
    for s in [*vanished.values(), *elsewhere]:
        if s.hashes.get("sha256"):
            by_sha.setdefault(s.hashes["sha256"], []).append(s)

    drafts: list[AdapterDraft] = []
    remove: set[int] = set()
    for path in todo:
        res = results.get(path)
        old = by_path.get(path)
        if isinstance(res, str) or res is None:
            summary.failed.append(IndexFailure(path=path, error=res or "not analysed"))
            if old is not None:  # it was indexed and is no longer a readable adapter
                remove.add(old.adapter_id)
            continue
        report, hashes = res
        draft = local_file_draft(path, found[path], report, hashes)
        if old is not None:
            draft.existing_id = old.adapter_id
            summary.updated += 1
        else:
            moved = moves.get(path)
            if moved is None:
                for s in by_sha.get(hashes.get("sha256") or "", []):
                    if s.file_id not in claimed and gone(s):
                        claimed.add(s.file_id)
                        moved = s
                        break
            if moved is not None:
                draft.existing_id = moved.adapter_id
                summary.moved += 1
            else:
                summary.added += 1
        drafts.append(draft)

    for s in vanished.values():
        if s.file_id not in claimed:
            remove.add(s.adapter_id)
    keep = {d.existing_id for d in drafts if d.existing_id is not None}
    remove -= keep
    summary.removed = len(remove)

    sketched = _backfill(backfill)
    if drafts or remove or sketched:
        from ..rows import delete_adapters, write_adapters, write_sketches

        with registry.writing() as conn:
            # Paths are unique: free the paths of rows about to be removed or moved first.
            if remove:
                delete_adapters(conn, sorted(remove))
            write_adapters(conn, drafts)
            if sketched:
                write_sketches(conn, sketched)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


__all__ = ["index_paths", "walk"]
