"""``lorahub registry check``: do the database and the blob store of ``lorahub serve`` agree?

:func:`check_storage` reads the ``hub_*`` tables (one snapshot), then walks ``<data>/blobs`` and
hashes every blob file (streamed, 1 MiB at a time, in a few threads), and every blob stored only
as Xet chunks (a file uploaded through Xet: no blob file, its bytes rebuilt from its chunks), and
reports
(:class:`~lorahub.schemas.hub.StorageIssue`, severity in brackets):

* ``missing`` [error]: a blob that a commit (``hub_files``), an upload (``hub_repo_objects``) or a
  ``hub_blobs`` row names has no file;
* ``corrupt`` [error]: a blob file whose SHA-256 is not its name (bit rot, a truncated copy), or a
  chunk-backed blob that cannot be rebuilt (a chunk missing or corrupt) or does not hash to its name;
* ``size_mismatch`` [error]: the database records another size than the verified file has;
* ``unrecorded`` [error]: a referenced blob file without its ``hub_blobs`` row;
* ``orphan_blob`` / ``orphan_file`` [orphan]: a blob (with / without its row) that no commit uses,
  e.g. uploaded but never committed, written by a commit that crashed, or left by a deleted repo;
* ``orphan_object`` [orphan]: an LFS upload to a repo that no commit of that repo uses, while the
  blob itself is in use elsewhere;
* ``stale_part`` [orphan]: an unfinished upload (``blobs/tmp/*.part``);
* ``stray`` [orphan]: a file under ``blobs/sha256/`` that is not a blob at its place.

The Xet CAS (``<data>/xet``, see :mod:`.cas`): every chunk file is decoded and its hash checked
against its name; ``xet_missing_chunk`` [error]: a xorb row names a chunk without a file;
``xet_corrupt_chunk`` [error]: a chunk file whose bytes do not hash to its name (moved to
``blobs/quarantine/`` by ``--repair``); ``xet_missing_xorb`` [error]: a registered file names a xorb
without its row; ``xet_orphan_chunk`` [orphan]: a chunk file no xorb names (a xorb upload that
crashed before its row was written); ``xet/tmp/*.part`` are ``stale_part``. The report counts the
xorbs, files, chunk-backed blobs, chunks, and the bytes the chunk store saved (files' sizes minus
distinct chunks).

Anything that would be an orphan but is younger than the grace period (default 24 h: the row's
``created_at``, the file's mtime and the upload's time all count) is ``pending`` and left alone:
an upload or a commit may be in progress. A blob stored again touches the file's mtime
(:mod:`.blobstore`), so a reused orphan turns young again.

Without ``repair`` nothing is written: the check can run while the server runs. With ``repair``:
orphans are removed (each in its own short transaction that re-checks, in SQL, that nothing
references the row and that it is still old; the file is unlinked after that commit, if its mtime
is still old), stale ``.part`` files deleted, corrupt blobs and stray files *moved* to
``blobs/quarantine/`` (never deleted), a missing ``hub_blobs`` row recorded. Nothing that a commit
references is ever removed: a missing or corrupt blob that a commit uses stays an error (after the
quarantine, pushing the same file again stores it again). The one race left: an LFS object
uploaded more than the grace period ago and committed exactly while ``--repair`` removes it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lorahub._readbuf import read_buffers
from lorahub.errors import RegistryError, UsageError
from lorahub.registry.tables import utcnow
from lorahub.schemas.hub import StorageCheck, StorageIssue

from .blobstore import _fsync_dir
from .gitobj import is_sha256
from .tables import HubBlob, HubCommit, HubFile, HubRepo, HubRepoObject

#: Orphans younger than this are "pending" (an upload or commit may be in progress).
DEFAULT_GRACE_S = 24 * 3600.0
QUARANTINE = "quarantine"
CHUNK = 1 << 20
MAX_REFS = 5

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str | float | int) -> float:
    """``"24h"``, ``"30m"``, ``"90s"``, ``"2d"``, ``"0"`` -> seconds."""
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"duration must not be negative: {text}")
        return float(text)
    m = _DURATION.match(str(text))
    if m is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 0, 90s, 30m, 24h, 2d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()]


@dataclass
class _Link:
    repo_id: int
    created_at: datetime
    used: bool  # a commit of the same repo names the blob


@dataclass
class _Blob:
    sha256: str
    file: Path | None = None
    mtime: float | None = None
    size: int | None = None  # bytes read while hashing (on disk)
    digest: str | None = None
    read_error: str | None = None
    row: bool = False
    row_size: int | None = None
    row_created: datetime | None = None
    commit_refs: int = 0
    ref_sizes: tuple[int, int] | None = None
    links: list[_Link] = field(default_factory=list)
    #: Stored as Xet chunks, without a blob file: ``[(chunk hex, unpacked length), ...]`` in ``chunk_dir``
    chunks: list[tuple[str, int]] | None = None
    chunk_dir: Path | None = None

    def open(self) -> BinaryIO:
        if self.file is not None:
            return open(self.file, "rb")  # noqa: SIM115
        assert self.chunks is not None and self.chunk_dir is not None
        from .cas import open_chunks

        return open_chunks(self.chunk_dir, self.chunks)


def check_storage(
    data_dir: str | os.PathLike[str] | None = None,
    database: str | None = None,
    *,
    repair: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
    workers: int | None = None,
) -> StorageCheck:
    """Check (and with ``repair``, repair) the ``lorahub serve`` data folder ``data_dir``.

    ``data_dir`` and ``database`` default as for ``lorahub serve`` (``$LORAHUB_HOME/server``;
    ``$LORAHUB_DATABASE_URL``, else SQLite inside the data folder).
    """
    from sqlalchemy.engine import make_url

    from lorahub.registry.database import is_sqlite, make_engine
    from lorahub.registry.server.settings import default_data_dir, server_database_url

    data = Path(data_dir).expanduser() if data_dir else default_data_dir()
    blob_dir = data / "blobs"
    if not blob_dir.is_dir():
        raise UsageError(f"{data}: not a lorahub serve data folder (no blobs/ in it)", hint="give the server's --data DIR")
    url = server_database_url(data, database)
    if is_sqlite(url):
        db = make_url(url).database
        if not db or not Path(db).expanduser().is_file():
            raise UsageError(f"no database at {db}", hint="give the server's --database URL")
    engine = make_engine(url)
    try:
        return check_store(engine, blob_dir, data_dir=data, repair=repair, grace_s=grace_s, workers=workers)
    finally:
        engine.dispose()


def check_store(
    engine: Engine,
    blob_dir: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    repair: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
    workers: int | None = None,
) -> StorageCheck:
    """:func:`check_storage` on an engine and a blob folder."""
    from lorahub.registry.database import display_url

    started = time.monotonic()
    grace_s = parse_duration(grace_s)
    blob_dir = Path(blob_dir)
    shown = display_url(engine.url.render_as_string(hide_password=False))
    try:
        has_tables = sa.inspect(engine).has_table(HubBlob.__tablename__)
    except (sa.exc.OperationalError, sa.exc.DBAPIError) as exc:
        raise RegistryError(f"database {shown}: {str(exc).strip().splitlines()[0]}") from None
    if not has_tables:
        raise RegistryError(
            f"{shown} has no hub tables", hint="not a lorahub serve database, or not migrated yet: start `lorahub serve` once"
        )
    now_dt, now_ts = utcnow(), time.time()
    cutoff_dt, cutoff_ts = now_dt - timedelta(seconds=grace_s), now_ts - grace_s
    report = StorageCheck(
        data_dir=str(data_dir if data_dir is not None else blob_dir.parent),
        blob_dir=str(blob_dir),
        database=shown,
        repair=repair,
        grace_seconds=grace_s,
        ok=True,
    )
    # The database first, then the files: a row is always written after its file, so every row
    # of the snapshot has its file on disk by the time the folder is walked.
    blobs = _read_database(engine)
    xet_dir = (Path(data_dir) if data_dir is not None else blob_dir.parent) / "xet"
    xet_state = _read_xet(engine)
    report.blob_rows = sum(1 for b in blobs.values() if b.row)
    report.referenced = sum(1 for b in blobs.values() if b.commit_refs)
    objects = blob_dir / "sha256"
    strays = _walk_objects(objects, blobs)
    report.blob_files = sum(1 for b in blobs.values() if b.file is not None)
    if xet_state is not None:
        report.chunked_blobs = _mark_chunked(blobs, xet_state, xet_dir / "chunks")
    report.bytes_verified = _verify(blobs, workers)
    repo_names = _repo_names(engine, {ln.repo_id for b in blobs.values() for ln in b.links})
    fixer = _Fixer(engine, blob_dir, cutoff_dt, cutoff_ts) if repair else None

    issues: list[StorageIssue] = []
    for sha in sorted(blobs):
        issues += _classify(engine, blobs[sha], cutoff_dt, cutoff_ts, repo_names, fixer)
    for path, size in strays:
        issue = StorageIssue(
            kind="stray", severity="orphan", path=_rel(path, blob_dir), size=size,
            message="not a blob at its place (blobs are sha256/ab/cd/<sha256>)",
        )
        if fixer is not None and fixer.quarantine(path, issue):
            issue.fixed = True
        issues.append(issue)
    issues += _parts(blob_dir / "tmp", blob_dir, now_ts, cutoff_ts, fixer)
    if xet_state is not None:
        issues += _check_xet(xet_state, xet_dir, blob_dir, report, now_ts, cutoff_ts, fixer)

    report.issues = issues
    report.errors = sum(1 for i in issues if i.severity == "error" and not i.fixed)
    report.orphans = sum(1 for i in issues if i.severity == "orphan" and not i.fixed)
    report.pending = sum(1 for i in issues if i.severity == "pending")
    report.repaired = sum(1 for i in issues if i.fixed)
    report.ok = report.errors == 0
    report.seconds = round(time.monotonic() - started, 3)
    return report


# -- reading --------------------------------------------------------------------------------


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def _used_expr(repo_id_col: sa.ColumnElement, sha_col: sa.ColumnElement) -> sa.ColumnElement:
    """EXISTS: a commit of repo ``repo_id_col`` names blob ``sha_col``."""
    return (
        sa.select(sa.literal(1))
        .select_from(HubFile.__table__.join(HubCommit.__table__, HubCommit.id == HubFile.commit_id))
        .where(HubCommit.repo_id == repo_id_col, HubFile.sha256 == sha_col)
        .exists()
    )


def _read_database(engine: Engine) -> dict[str, _Blob]:
    blobs: dict[str, _Blob] = {}

    def get(sha: str) -> _Blob:
        b = blobs.get(sha)
        if b is None:
            b = blobs[sha] = _Blob(sha)
        return b

    with _snapshot(engine) as conn:
        for sha, size, created in conn.execute(sa.select(HubBlob.sha256, HubBlob.size, HubBlob.created_at)):
            b = get(sha)
            b.row, b.row_size, b.row_created = True, int(size), created
        refs = sa.select(
            HubFile.sha256, sa.func.count(), sa.func.min(HubFile.size), sa.func.max(HubFile.size)
        ).group_by(HubFile.sha256)
        for sha, n, lo, hi in conn.execute(refs):
            b = get(sha)
            b.commit_refs, b.ref_sizes = int(n), (int(lo), int(hi))
        o = HubRepoObject.__table__.c
        links = sa.select(o.repo_id, o.sha256, o.created_at, _used_expr(o.repo_id, o.sha256).label("used"))
        for repo_id, sha, created, used in conn.execute(links):
            get(sha).links.append(_Link(int(repo_id), created, bool(used)))
    return blobs


def _read_xet(engine: Engine) -> tuple[dict[str, list[list]], list[tuple[str, str, int, list[list]]]] | None:
    """The xorbs (hash -> chunk listing) and the files registered through Xet (file hash, sha256,
    size, terms); None before the Xet tables exist."""
    import json

    from .tables import HubXetFile, HubXetXorb

    if not sa.inspect(engine).has_table(HubXetXorb.__tablename__):
        return None
    with _snapshot(engine) as conn:
        xorbs = {h: json.loads(c) for h, c in conn.execute(sa.select(HubXetXorb.hash, HubXetXorb.chunks))}
        files = [
            (h, sha, int(size), json.loads(t))
            for h, sha, size, t in conn.execute(sa.select(HubXetFile.file_hash, HubXetFile.sha256, HubXetFile.size, HubXetFile.terms))
        ]
    return xorbs, files


def _mark_chunked(blobs: dict[str, _Blob], xet_state: tuple, chunk_dir: Path) -> int:
    """Mark the blobs the database names that have no blob file but are stored as Xet chunks (a
    file registered through Xet whose xorbs all have rows); return how many."""
    xorbs, files = xet_state
    n = 0
    for _fh, sha, _size, terms in files:
        b = blobs.get(sha)
        if b is None or b.file is not None or b.chunks is not None:
            continue
        if any(xh not in xorbs for xh, *_ in terms):
            continue  # xet_missing_xorb says why; the blob is missing
        b.chunks = [(c[0], int(c[1])) for xh, start, end, _ in terms for c in xorbs[xh][start:end]]
        b.chunk_dir = chunk_dir
        n += 1
    return n


def _walk_objects(objects: Path, blobs: dict[str, _Blob]) -> list[tuple[Path, int]]:
    """Record the well-placed blob files in ``blobs``; return the strays (path, size)."""
    strays: list[tuple[Path, int]] = []
    if not objects.is_dir():
        return strays
    for dirpath, dirnames, filenames in os.walk(objects):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            rel = path.relative_to(objects).parts
            if stat.S_ISREG(st.st_mode) and is_sha256(name) and rel == (name[:2], name[2:4], name):
                b = blobs.get(name) or blobs.setdefault(name, _Blob(name))
                b.file, b.mtime = path, st.st_mtime
            else:
                strays.append((path, st.st_size))
    return strays


def _hash_file(b: _Blob) -> tuple[str, int]:
    """SHA-256 and size of the blob's bytes (its file, or rebuilt from its chunks)."""
    h = hashlib.sha256()
    total = 0
    with read_buffers(1, CHUNK) as (buf,), memoryview(buf) as view, b.open() as fh:
        while True:
            n = fh.readinto(view)
            if not n:
                break
            h.update(view[:n])
            total += n
    return h.hexdigest(), total


def _verify(blobs: dict[str, _Blob], workers: int | None) -> int:
    todo = [b for b in blobs.values() if b.file is not None or b.chunks is not None]

    def one(b: _Blob) -> int:
        try:
            b.digest, b.size = _hash_file(b)
        except FileNotFoundError as exc:
            if b.file is not None:
                b.file = None  # removed meanwhile
            else:
                b.read_error = f"chunk file {Path(exc.filename or '?').name} is missing"
            return 0
        except OSError as exc:
            b.read_error = exc.strerror or str(exc)
            return 0
        return b.size

    n = workers or min(4, os.cpu_count() or 1)
    if n <= 1 or len(todo) < 2:
        return sum(one(b) for b in todo)
    with ThreadPoolExecutor(n, thread_name_prefix="lorahub-check") as pool:  # hashlib releases the GIL
        return sum(pool.map(one, todo))


def _repo_names(engine: Engine, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(sa.select(HubRepo.id, HubRepo.repo_type, HubRepo.namespace, HubRepo.name).where(HubRepo.id.in_(ids)))
        return {r.id: f"{r.repo_type}/{r.namespace}/{r.name}" for r in rows}


def _commit_refs(engine: Engine, sha: str) -> list[str]:
    stmt = (
        sa.select(HubRepo.repo_type, HubRepo.namespace, HubRepo.name, HubCommit.oid, HubFile.path)
        .select_from(HubFile)
        .join(HubCommit, HubCommit.id == HubFile.commit_id)
        .join(HubRepo, HubRepo.id == HubCommit.repo_id)
        .where(HubFile.sha256 == sha)
        .order_by(HubCommit.id.desc())
        .limit(MAX_REFS)
    )
    with engine.connect() as conn:
        return [f"{r.repo_type}/{r.namespace}/{r.name}@{r.oid[:12]}:{r.path}" for r in conn.execute(stmt)]


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# -- classifying ------------------------------------------------------------------------------


def _classify(
    engine: Engine,
    b: _Blob,
    cutoff_dt: datetime,
    cutoff_ts: float,
    repo_names: dict[int, str],
    fixer: _Fixer | None,
) -> list[StorageIssue]:
    sha = b.sha256
    path = f"sha256/{sha[:2]}/{sha[2:4]}/{sha}"
    uploads = [f"{repo_names.get(ln.repo_id, f'repo #{ln.repo_id}')} (upload)" for ln in b.links[:MAX_REFS]]

    def refs() -> list[str]:
        return (_commit_refs(engine, sha) if b.commit_refs else []) + uploads[: max(0, MAX_REFS - min(b.commit_refs, MAX_REFS))]

    used_by = f"{b.commit_refs} committed file(s)" if b.commit_refs else None

    chunked = b.file is None and b.chunks is not None
    if chunked:
        path = None  # no blob file: its bytes are Xet chunks (xet/chunks/), each checked by _check_xet
    bad_file = (b.file is not None or chunked) and (b.read_error is not None or b.digest != sha)
    if bad_file:
        why = f"cannot be read ({b.read_error})" if b.read_error else f"its content hashes to {b.digest}, not its name"
        what = "blob stored as Xet chunks" if chunked else "blob"
        issue = StorageIssue(kind="corrupt", severity="error", sha256=sha, path=path, size=b.size, message=f"{what} {why}",
                             references=refs())
        if fixer is not None and b.file is not None and fixer.quarantine(b.file, issue):
            if b.commit_refs:
                issue.message += f"; {used_by} still name it: push the file again to store it again"
            else:
                issue.fixed = fixer.drop_unused(sha)
        elif b.commit_refs:
            issue.message += f" ({used_by} name it)"
        return [issue]

    if b.file is None and not chunked:  # named by the database, no file
        issue = StorageIssue(kind="missing", severity="error", sha256=sha, path=path, references=refs(),
                             message="blob file is missing" + (f": {used_by} name it" if used_by else
                                                              " (only an upload record or a hub_blobs row names it)"))
        if fixer is not None and not b.commit_refs and fixer.drop_unused(sha):
            issue.action, issue.fixed = "removed", True
        return [issue]

    assert b.size is not None
    out: list[StorageIssue] = []
    sizes = {s for s in ((b.row_size,) if b.row else ()) + (b.ref_sizes or ()) if s is not None}
    if sizes - {b.size}:
        out.append(StorageIssue(
            kind="size_mismatch", severity="error", sha256=sha, path=path, size=b.size, references=refs(),
            message=f"the file has {b.size} bytes (content verified), the database records {sorted(sizes - {b.size})}",
        ))
    young = (
        (b.mtime or 0) >= cutoff_ts
        or (b.row and b.row_created is not None and b.row_created >= cutoff_dt)
        or any(ln.created_at >= cutoff_dt for ln in b.links)
    )
    if b.commit_refs or (b.links and not b.row):
        if not b.row:
            issue = StorageIssue(kind="unrecorded", severity="error", sha256=sha, path=path, size=b.size,
                                 references=refs(), message="the blob is referenced but has no hub_blobs row")
            if fixer is not None and fixer.record(b):
                issue.action, issue.fixed = "recorded", True
            out.append(issue)
        for ln in b.links:
            if ln.used or ln.created_at >= cutoff_dt or not b.commit_refs:
                continue
            repo = repo_names.get(ln.repo_id, f"repo #{ln.repo_id}")
            issue = StorageIssue(kind="orphan_object", severity="orphan", sha256=sha, path=path, size=b.size,
                                 references=[f"{repo} (upload)"],
                                 message=f"uploaded to {repo} on {ln.created_at:%Y-%m-%d %H:%M}, no commit of it uses the object")
            if fixer is not None and fixer.drop_link(ln.repo_id, sha):
                issue.action, issue.fixed = "removed", True
            out.append(issue)
        return out

    # Nothing commits this blob: an orphan, or pending while young.
    kind = "orphan_blob" if b.row else "orphan_file"
    what = (
        f"uploaded to {', '.join(u.removesuffix(' (upload)') for u in uploads)} but never committed" if b.links
        else "stored but no commit uses it" if b.row
        else "a blob file without hub_blobs row that nothing references (an interrupted upload or commit)"
    )
    if young:
        out.append(StorageIssue(kind=kind, severity="pending", sha256=sha, path=path, size=b.size, references=uploads,
                                message=f"{what}; younger than the grace period, left alone"))
        return out
    issue = StorageIssue(kind=kind, severity="orphan", sha256=sha, path=path, size=b.size, references=uploads, message=what)
    if fixer is not None and fixer.remove_orphan(b):
        issue.action, issue.fixed = "removed", True
    out.append(issue)
    return out


def _parts(tmp: Path, blob_dir: Path, now_ts: float, cutoff_ts: float, fixer: _Fixer | None) -> list[StorageIssue]:
    out: list[StorageIssue] = []
    if not tmp.is_dir():
        return out
    for path in sorted(tmp.glob("*.part")):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        age = max(0.0, now_ts - st.st_mtime)
        old = st.st_mtime < cutoff_ts
        issue = StorageIssue(
            kind="stale_part", severity="orphan" if old else "pending", path=_rel(path, blob_dir), size=st.st_size,
            message=f"unfinished upload, last written {_ago(age)} ago" + ("" if old else "; younger than the grace period, left alone"),
        )
        if old and fixer is not None and fixer.remove_part(path):
            issue.action, issue.fixed = "removed", True
        out.append(issue)
    return out


def _check_xet(
    xet_state: tuple, xet_dir: Path, blob_dir: Path, report: StorageCheck, now_ts: float, cutoff_ts: float, fixer: _Fixer | None
) -> list[StorageIssue]:
    from . import xet

    xorbs, files = xet_state
    report.xet_xorbs, report.xet_files = len(xorbs), len(files)
    named: dict[str, int] = {}
    for chunks in xorbs.values():
        for h, n, _ in chunks:
            named[h] = n
    issues: list[StorageIssue] = []
    chunk_dir = xet_dir / "chunks"
    on_disk: dict[str, Path] = {}
    if chunk_dir.is_dir():
        for path in chunk_dir.glob("*/*"):
            if xet.is_hex_hash(path.name) and path.parent.name == path.name[:2]:
                on_disk[path.name] = path
    report.xet_chunks = len(on_disk)
    for h, path in sorted(on_disk.items()):
        try:
            record = path.read_bytes()
            st = path.stat()
        except OSError:
            continue
        report.xet_chunk_bytes += len(record)
        try:
            good = xet.chunk_hash(xet.decode_record(record)) == xet.hash_of_hex(h)
        except xet.XetFormatError:
            good = False
        rel = _rel(path, blob_dir)
        if not good:
            issue = StorageIssue(kind="xet_corrupt_chunk", severity="error", path=rel, size=len(record),
                                 message="chunk file whose bytes do not hash to its name")
            if fixer is not None and fixer.quarantine(path, issue):
                issue.fixed = h not in named
            issues.append(issue)
        elif h not in named:
            old = st.st_mtime < cutoff_ts
            issue = StorageIssue(
                kind="xet_orphan_chunk", severity="orphan" if old else "pending", path=rel, size=len(record),
                message="chunk file that no xorb names" + ("" if old else "; younger than the grace period, left alone"),
            )
            if old and fixer is not None and fixer.remove_part(path):
                issue.action, issue.fixed = "removed", True
            issues.append(issue)
    for xh, chunks in sorted(xorbs.items()):
        for h, _, _ in chunks:
            if h not in on_disk:
                issues.append(StorageIssue(kind="xet_missing_chunk", severity="error", path=_rel(chunk_dir / h[:2] / h, blob_dir),
                                           message=f"xorb {xh} names chunk {h}, which has no file"))
    used: set[str] = set()
    logical = 0
    for fh, _sha, size, terms in files:
        logical += size
        for xh, start, end, _ in terms:
            if xh not in xorbs:
                issues.append(StorageIssue(kind="xet_missing_xorb", severity="error", message=f"file {fh} names xorb {xh}, which the database does not have"))
                continue
            used.update(c[0] for c in xorbs[xh][start:end])
    report.xet_bytes_saved = max(0, logical - sum(named.get(h, 0) for h in used))
    issues += _parts(xet_dir / "tmp", blob_dir, now_ts, cutoff_ts, fixer)
    return issues


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# -- repairing --------------------------------------------------------------------------------


class _Rollback(Exception):
    pass


class _Fixer:
    """The repairs, each in its own short write transaction that re-checks its condition in SQL."""

    def __init__(self, engine: Engine, blob_dir: Path, cutoff_dt: datetime, cutoff_ts: float) -> None:
        self.engine = engine.execution_options(lorahub_write=True)  # SQLite: BEGIN IMMEDIATE
        self.blob_dir = blob_dir
        self.cutoff_dt = cutoff_dt
        self.cutoff_ts = cutoff_ts

    def _tx(self, fn: Callable[[Connection], bool]) -> bool:
        try:
            with self.engine.begin() as conn:
                if not fn(conn):
                    raise _Rollback
        except _Rollback:
            return False
        return True

    @staticmethod
    def _named_by_commit(conn: Connection, sha: str) -> bool:
        return conn.execute(sa.select(HubFile.id).where(HubFile.sha256 == sha).limit(1)).first() is not None

    def drop_link(self, repo_id: int, sha: str) -> bool:
        """Remove an old upload record of ``repo_id`` that no commit of that repo uses."""
        o = HubRepoObject.__table__.c

        def fn(conn: Connection) -> bool:
            res = conn.execute(
                sa.delete(HubRepoObject.__table__).where(
                    o.repo_id == repo_id, o.sha256 == sha, o.created_at < self.cutoff_dt, ~_used_expr(o.repo_id, o.sha256)
                )
            )
            return res.rowcount == 1

        return self._tx(fn)

    def drop_unused(self, sha: str) -> bool:
        """Remove the upload records and the row of a blob that has no (good) file and no commit uses."""

        def fn(conn: Connection) -> bool:
            if self._named_by_commit(conn, sha):
                return False
            conn.execute(sa.delete(HubRepoObject.__table__).where(HubRepoObject.sha256 == sha))
            conn.execute(sa.delete(HubBlob.__table__).where(HubBlob.sha256 == sha))
            return True

        return self._tx(fn)

    def remove_orphan(self, b: _Blob) -> bool:
        """Remove an old orphan's upload records and row (re-checked in SQL), then its file if still old."""
        sha = b.sha256
        o = HubRepoObject.__table__.c

        def fn(conn: Connection) -> bool:
            if self._named_by_commit(conn, sha):
                return False
            conn.execute(sa.delete(HubRepoObject.__table__).where(o.sha256 == sha, o.created_at < self.cutoff_dt))
            if conn.execute(sa.select(o.repo_id).where(o.sha256 == sha).limit(1)).first() is not None:
                return False  # a fresh upload record appeared
            res = conn.execute(sa.delete(HubBlob.__table__).where(HubBlob.sha256 == sha, HubBlob.created_at < self.cutoff_dt))
            if b.row and res.rowcount != 1:
                return False
            if not b.row and conn.execute(sa.select(HubBlob.sha256).where(HubBlob.sha256 == sha)).first() is not None:
                return False  # recorded meanwhile
            return True

        if not self._tx(fn):
            return False
        if b.file is not None:
            return self._unlink_if_old(b.file)
        return True

    def record(self, b: _Blob) -> bool:
        """Add the missing ``hub_blobs`` row of a verified blob (file or chunks)."""
        assert b.size is not None
        git = hashlib.sha1(b"blob %d\0" % b.size, usedforsecurity=False)
        try:
            with b.open() as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    git.update(chunk)
        except OSError:
            return False
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        row = {"sha256": b.sha256, "size": b.size, "git_sha1": git.hexdigest(), "created_at": utcnow()}

        def fn(conn: Connection) -> bool:
            conn.execute(insert(HubBlob.__table__).values([row]).on_conflict_do_nothing(index_elements=["sha256"]))
            return True

        return self._tx(fn)

    def _unlink_if_old(self, path: Path) -> bool:
        try:
            if path.stat().st_mtime >= self.cutoff_ts:
                return False  # stored again meanwhile: in use
            path.unlink()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        _fsync_dir(path.parent)
        return True

    def remove_part(self, path: Path) -> bool:
        return self._unlink_if_old(path)

    def quarantine(self, path: Path, issue: StorageIssue) -> bool:
        """Move ``path`` to ``blobs/quarantine/`` (never deleted); set the issue's action."""
        target_dir = self.blob_dir / QUARANTINE
        target = target_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        try:
            target_dir.mkdir(exist_ok=True)
            os.replace(path, target)
        except OSError:
            return False
        _fsync_dir(path.parent)
        _fsync_dir(target_dir)
        issue.action = "quarantined"
        issue.message += f"; moved to {_rel(target, self.blob_dir)}"
        if issue.kind == "stray":
            issue.fixed = True
        return True


__all__ = ["DEFAULT_GRACE_S", "QUARANTINE", "check_storage", "check_store", "parse_duration"]
