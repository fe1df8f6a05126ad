"""The Hub operations, independent of HTTP: repos, preupload, LFS batch, commits, trees, resolve.

Every public method takes the caller's :class:`~.auth.Identity` (or ``None`` for anonymous) and
raises :class:`~.errors.HubError` subclasses that carry the HTTP status and ``X-Error-Code``.

Access rules:

* a public repo is readable by anyone; a private repo only by its owner (and admins): everyone
  else gets the same ``404 RepoNotFound`` as for a repo that does not exist;
* writing needs a token (``401`` without one), a write token (``403`` for a read-only one) and
  the repo's namespace (``403`` for another user's public repo, ``404`` for their private one).

Commits: the new file list is computed from the branch head and the operations, the added files
are checked (see :mod:`.policy`), then one transaction inserts the commit and its files and
moves the branch with a compare-and-swap (``UPDATE ... WHERE commit_oid = <old head>``). When the
head moved meanwhile, a commit that named a ``parentCommit`` gets ``409``; one without is rebuilt
on the new head (what the Hub does) inside the landing transaction, with the branch row locked
(``SELECT ... FOR UPDATE``; SQLite's write lock), so it cannot lose the race again however many clients
push at once, and no landed commit is ever lost or silently undone. On the
main branch the same transaction updates the repo's card data and tags and its registry adapter,
so a search finds a pushed adapter as soon as the commit call returns.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select

from lorahub.errors import YamlError
from lorahub.hub.card import MAX_CARD_BYTES, check_card, parse_card
from lorahub.registry.tables import User, utcnow
from lorahub.schemas.registry import hub_source_key

from . import card_tags, policy
from .auth import Identity
from .blobstore import LocalBlobStore
from .errors import (
    BadRequest,
    Conflict,
    EntryNotFound,
    Forbidden,
    HubError,
    InvalidContent,
    PayloadTooLarge,
    RepoNotFound,
    RevisionNotFound,
    Unauthorized,
)
from .faults import fault_point
from .gitobj import commit_id, git_blob_id, is_commit_id, is_sha256, lfs_pointer_info, tree_id
from .names import (
    URL_PREFIX,
    check_namespace,
    check_path,
    check_repo_name,
    check_repo_type,
    normalization_clash,
)
from .tables import HubBlob, HubCommit, HubFile, HubRef, HubRepo, HubRepoObject, HubRepoTag, HubSequence

log = logging.getLogger("lorahub.server")

MiB = 1 << 20
GiB = 1 << 30

DEFAULT_BRANCH = "main"

#: Files the Hub stores with LFS whatever their size (besides binary content and size >= threshold).
LFS_SUFFIXES = frozenset(
    ".safetensors .bin .ckpt .pt .pth .onnx .pb .h5 .msgpack .npy .npz .pkl .pickle .joblib .model .gguf .ggml "
    ".tflite .ot .arrow .parquet .zip .gz .tgz .xz .bz2 .zst .tar .7z .rar .png .jpg .jpeg .gif .webp .bmp .tif "
    ".tiff .mp3 .mp4 .wav .ogg .flac .webm .avi .mov .pdf".split()
)

GITATTRIBUTES = "".join(
    f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n"
    for suffix in (
        ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gz", ".h5", ".joblib", ".mlmodel", ".model",
        ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth",
        ".rar", ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst", ".png", ".jpg",
        ".jpeg", ".webp",
    )
).encode() + b"*tfevents* filter=lfs diff=lfs merge=lfs -text\n"


@dataclass
class HubConfig:
    #: Largest LFS object (bytes) accepted by the batch API and the upload route.
    max_upload_size: int = 20 * GiB
    #: Largest NDJSON commit body (regular files travel inline, base64).
    max_commit_bytes: int = 64 * MiB
    #: Largest regular (non-LFS) file.
    max_regular_file: int = 10 * MiB
    #: Files at least this big are LFS.
    lfs_threshold: int = 10 * MiB
    #: Most operations in one commit / objects in one LFS batch.
    max_operations: int = 25_000
    max_batch_objects: int = 1000
    #: Index committed adapters into the registry (``adapters`` tables).
    index_adapters: bool = True
    #: Base URL used in registry source keys and adapter URLs (``lorahub serve --public-url``).
    public_url: str = "http://127.0.0.1:8000"


@dataclass
class FileEntry:
    size: int
    sha256: str
    git_oid: str
    lfs: bool


@dataclass
class CommitResult:
    oid: str
    branch: str
    pr_num: int | None = None
    repo_id: str | None = None


@dataclass
class _Op:
    kind: str  # file | lfsFile | deletedFile | deletedFolder
    path: str
    entry: FileEntry | None = None


@dataclass
class _Plan:
    summary: str = ""
    description: str = ""
    parent: str | None = None
    ops: list[_Op] = field(default_factory=list)
    regular_blobs: dict[str, tuple[int, str]] = field(default_factory=dict)  # sha256 -> (size, git sha1)
    #: Content of the regular files (stored again at landing if a refused commit's cleanup removed it).
    regular_data: dict[str, bytes] = field(default_factory=dict)
    #: Blobs this commit wrote to the store (none was there before): sha256 -> mtime_ns after writing.
    created_blobs: dict[str, int] = field(default_factory=dict)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def repo_key(repo_type: str, namespace: str, name: str) -> str:
    return f"{repo_type}/{namespace}/{name}".lower()


def _dialect_insert(session: Session):  # noqa: ANN202
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def insert_ignore(session: Session, model: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    insert = _dialect_insert(session)
    session.execute(insert(model.__table__).values(rows).on_conflict_do_nothing(index_elements=keys))


#: A commit without parentCommit is rebuilt on the new head this many times at most under contention.
COMMIT_ATTEMPTS = 25


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.2, 0.01 * (attempt + 1))))


def _is_busy(exc: OperationalError) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


def _retry_busy(exc: OperationalError, started: float) -> bool:
    """Try again after SQLite's "database is locked"? Only while less than one busy timeout has passed:
    a lock held past a whole timeout (a stuck writer) fails the request with 503 instead of waiting it
    out again and again."""
    from lorahub.registry.database import busy_timeout_ms

    return _is_busy(exc) and time.monotonic() - started < busy_timeout_ms() / 1000


class HubService:
    def __init__(self, engine: Engine, store: LocalBlobStore, config: HubConfig | None = None) -> None:
        self.engine = engine
        self.store = store
        self.config = config or HubConfig()
        self._write_engine = engine.execution_options(lorahub_write=True)

    # -- sessions ---------------------------------------------------------------------------

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session whose transaction takes SQLite's write lock up front (``BEGIN IMMEDIATE``)."""
        with Session(self._write_engine, expire_on_commit=False) as s:
            yield s

    # -- repos ------------------------------------------------------------------------------

    def find_repo(self, session: Session, repo_type: str, repo_id: str) -> HubRepo | None:
        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            return None
        ns, name = repo_id.split("/")
        return session.exec(select(HubRepo).where(HubRepo.key == repo_key(repo_type, ns, name))).first()

    @staticmethod
    def repo_by_public_id(session: Session, public_id: str) -> HubRepo | None:
        """The repo whose ``public_id`` (24 lower-case hex digits) this is, or None. No access check."""
        if not isinstance(public_id, str) or len(public_id) != 24 or not all(c in "0123456789abcdef" for c in public_id):
            return None
        return session.exec(select(HubRepo).where(HubRepo.public_id == public_id)).first()

    @staticmethod
    def can_read(repo: HubRepo, ident: Identity | None) -> bool:
        if not repo.private:
            return True
        return ident is not None and (ident.user_id == repo.owner_id or ident.is_admin)

    def get_repo(self, session: Session, repo_type: str, repo_id: str, ident: Identity | None, *, write: bool = False) -> HubRepo:
        if write and ident is None:
            raise Unauthorized("authentication required: send a write token (Authorization: Bearer lh_...)")
        repo = self.find_repo(session, repo_type, repo_id)
        if repo is None or not self.can_read(repo, ident):
            raise RepoNotFound(repo_id)
        if write:
            assert ident is not None
            if not ident.can_write:
                raise Forbidden("this token is read-only: create a write token with `lorahub token create --user NAME`")
            if not ident.may_write_namespace(repo.namespace):
                raise Forbidden(f"you ({ident.name}) cannot write to the namespace '{repo.namespace}'")
        return repo

    @staticmethod
    def repo_id_of(repo: HubRepo) -> str:
        return f"{repo.namespace}/{repo.name}"

    def create_repo(
        self, ident: Identity | None, *, repo_type: str | None, name: str, organization: str | None, private: bool
    ) -> tuple[HubRepo, bool]:
        """Create a repo (with an initial commit holding ``.gitattributes``); ``(repo, created)``.

        An existing repo raises :class:`Conflict` with the repo in ``extra["repo"]``.
        """
        rt = check_repo_type(repo_type)
        if ident is None:
            raise Unauthorized("authentication required to create a repo: send a write token")
        if isinstance(name, str) and "/" in name and organization is None:
            organization, name = name.split("/", 1)
        ns = organization or ident.name
        check_namespace(ns)
        check_repo_name(name)
        if not ident.can_write:
            raise Forbidden("this token is read-only")
        if not ident.may_write_namespace(ns):
            raise Forbidden(f"you ({ident.name}) cannot create repos in the namespace '{ns}'")
        key = repo_key(rt, ns, name)
        for attempt in range(5):
            with self.write_session() as s:
                existing = s.exec(select(HubRepo).where(HubRepo.key == key)).first()
                if existing is not None:
                    raise Conflict("You already created this model repo", extra={"repo": existing})
                owner = s.exec(select(User).where(sa.func.lower(User.name) == ns.lower())).first()
                if owner is None:
                    raise Forbidden(f"no user named '{ns}'")
                now = utcnow()
                repo = HubRepo(
                    id=self._next_repo_pk(s),
                    public_id=secrets.token_hex(12),
                    repo_type=rt,
                    namespace=owner.name if owner.name.lower() == ns.lower() else ns,
                    name=name,
                    namespace_lower=ns.lower(),
                    key=key,
                    owner_id=owner.id,
                    private=bool(private),
                    created_at=now,
                    updated_at=now,
                )
                s.add(repo)
                try:
                    s.flush()
                except IntegrityError:
                    s.rollback()
                    continue
                blob = self.store.put_bytes(GITATTRIBUTES)
                insert_ignore(
                    s, HubBlob, [{"sha256": blob.sha256, "size": blob.size, "git_sha1": blob.git_sha1, "created_at": now}], ["sha256"]
                )
                files = {".gitattributes": FileEntry(blob.size, blob.sha256, blob.git_sha1 or git_blob_id(GITATTRIBUTES), False)}
                oid = self._insert_commit(s, repo, None, files, "initial commit", "", ident, now)
                s.add(HubRef(repo_id=repo.id, name=DEFAULT_BRANCH, commit_oid=oid, updated_at=now))
                repo.sha = oid
                repo.tags = "[]"
                s.add(repo)
                try:
                    s.commit()
                except IntegrityError:
                    s.rollback()
                    if attempt == 4:
                        raise
                    continue
                return repo, True
        raise Conflict("another conflicting operation is in progress")

    @staticmethod
    def _next_repo_pk(s: Session) -> int:
        """The next repo primary key: one past both the last one handed out (``hub_sequences``) and
        the largest in use, so that no id is ever given twice, even after a delete. Runs in the
        creating write transaction (SQLite: the write lock; PostgreSQL: the counter row's lock)."""
        counter = sa.update(HubSequence).where(HubSequence.name == "hub_repos").values(value=HubSequence.value + 1)
        value = s.execute(counter.returning(HubSequence.value)).scalar_one_or_none()
        if value is None:  # a database whose counter row is missing: start from the ids in use
            insert_ignore(s, HubSequence, [{"name": "hub_repos", "value": 0}], ["name"])
            value = s.execute(counter.returning(HubSequence.value)).scalar_one()
        top = s.execute(sa.select(sa.func.coalesce(sa.func.max(HubRepo.id), 0))).scalar_one()
        if value <= top:
            value = int(top) + 1
            s.execute(sa.update(HubSequence).where(HubSequence.name == "hub_repos").values(value=value))
        return int(value)

    def delete_repo(self, ident: Identity | None, repo_type: str | None, repo_id: str) -> None:
        rt = check_repo_type(repo_type)
        with self.write_session() as s:
            repo = self.get_repo(s, rt, repo_id, ident, write=True)
            self._unindex(s, repo)
            s.delete(repo)
            s.commit()

    def update_settings(self, ident: Identity | None, repo_type: str, repo_id: str, private: bool | None) -> HubRepo:
        with self.write_session() as s:
            repo = self.get_repo(s, repo_type, repo_id, ident, write=True)
            if private is not None and bool(private) != repo.private:
                repo.private = bool(private)
                s.add(repo)
                s.flush()
                self._reindex(s, repo)
            s.commit()
            return repo

    # -- revisions and trees ----------------------------------------------------------------

    def resolve_revision(self, session: Session, repo: HubRepo, revision: str | None) -> HubCommit:
        rev = revision or DEFAULT_BRANCH
        name = rev[len("refs/heads/"):] if rev.startswith("refs/heads/") else rev
        ref = session.exec(select(HubRef).where(HubRef.repo_id == repo.id, HubRef.name == name)).first()
        oid = ref.commit_oid if ref is not None else (rev.lower() if is_commit_id(rev.lower()) else None)
        if oid is None:
            raise RevisionNotFound(rev)
        commit = session.exec(select(HubCommit).where(HubCommit.repo_id == repo.id, HubCommit.oid == oid)).first()
        if commit is None:
            raise RevisionNotFound(rev)
        return commit

    def files_of(self, session: Session, commit: HubCommit) -> dict[str, FileEntry]:
        rows = session.execute(
            sa.select(HubFile.path, HubFile.size, HubFile.sha256, HubFile.git_oid, HubFile.lfs).where(
                HubFile.commit_id == commit.id
            )
        ).all()
        return {r.path: FileEntry(int(r.size), r.sha256, r.git_oid, bool(r.lfs)) for r in rows}

    def file_at(self, session: Session, commit: HubCommit, path: str) -> FileEntry | None:
        r = session.execute(
            sa.select(HubFile.size, HubFile.sha256, HubFile.git_oid, HubFile.lfs).where(
                HubFile.commit_id == commit.id, HubFile.path == path
            )
        ).first()
        return FileEntry(int(r.size), r.sha256, r.git_oid, bool(r.lfs)) if r is not None else None

    # -- info -------------------------------------------------------------------------------

    def repo_info(
        self, session: Session, repo: HubRepo, commit: HubCommit, *, base_url: str, blobs: bool = False
    ) -> dict[str, Any]:
        files = self.files_of(session, commit)
        return self.repo_json(repo, commit=commit, files=files, base_url=base_url, blobs=blobs, full=True)

    def repo_json(
        self,
        repo: HubRepo,
        *,
        commit: HubCommit | None = None,
        files: dict[str, FileEntry] | None = None,
        base_url: str,
        blobs: bool = False,
        full: bool = False,
        card_data: bool = True,
    ) -> dict[str, Any]:
        rid = self.repo_id_of(repo)
        if commit is not None:
            card = json.loads(commit.card_data) if commit.card_data else None
            tags = json.loads(commit.tags or "[]")
            pipeline, library, sha, last = commit.pipeline_tag, commit.library_name, commit.oid, commit.created_at
        else:
            card = json.loads(repo.card_data) if repo.card_data else None
            tags = json.loads(repo.tags or "[]")
            pipeline, library, sha, last = repo.pipeline_tag, repo.library_name, repo.sha, repo.updated_at
        out: dict[str, Any] = {
            "_id": repo.public_id,
            "id": rid,
            "author": repo.namespace,
            "sha": sha,
            "lastModified": iso(last),
            "createdAt": iso(repo.created_at),
            "private": bool(repo.private),
            "gated": False,
            "disabled": False,
            "downloads": int(repo.downloads or 0),
            "likes": int(repo.likes or 0),
            "tags": tags,
        }
        if repo.repo_type == "model":
            out["modelId"] = rid
            if pipeline:
                out["pipeline_tag"] = pipeline
            if library:
                out["library_name"] = library
        if card is not None and card_data:
            out["cardData"] = card
        if files is not None:
            siblings = []
            for path in sorted(files):
                f = files[path]
                sib: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sib["size"] = f.size
                    sib["blobId"] = f.git_oid
                    if f.lfs:
                        _, psize = lfs_pointer_info(f.sha256, f.size)
                        sib["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": psize}
                siblings.append(sib)
            out["siblings"] = siblings
            out["usedStorage"] = sum(f.size for f in files.values())
        return out

    def list_repos(
        self,
        session: Session,
        ident: Identity | None,
        *,
        repo_type: str,
        search: str | None,
        author: str | None,
        filters: list[str],
        pipeline_tag: str | None,
        sort: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[HubRepo], bool]:
        stmt = select(HubRepo).where(HubRepo.repo_type == repo_type)
        if ident is None:
            stmt = stmt.where(HubRepo.private == sa.false())
        elif not ident.is_admin:
            stmt = stmt.where(sa.or_(HubRepo.private == sa.false(), HubRepo.owner_id == ident.user_id))
        if search:
            term = search.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            # key is "type/namespace/name": match inside "namespace/name" only
            stmt = stmt.where(HubRepo.key.like(f"{repo_type}/%{term}%", escape="\\"))
        if author:
            stmt = stmt.where(HubRepo.namespace_lower == author.lower())
        for tag in filters[:20]:
            sub = sa.select(HubRepoTag.repo_id).where(HubRepoTag.repo_id == HubRepo.id, HubRepoTag.tag == tag)
            stmt = stmt.where(sub.exists())
        if pipeline_tag:
            stmt = stmt.where(HubRepo.pipeline_tag == pipeline_tag)
        order = {
            "downloads": HubRepo.downloads,
            "likes": HubRepo.likes,
            "lastModified": HubRepo.updated_at,
            "last_modified": HubRepo.updated_at,
            "createdAt": HubRepo.created_at,
            "created_at": HubRepo.created_at,
            "trendingScore": HubRepo.downloads,
            "trending_score": HubRepo.downloads,
        }.get(sort or "", None)
        if order is not None:
            stmt = stmt.order_by(order.desc(), HubRepo.id.desc())
        else:
            stmt = stmt.order_by(HubRepo.id.desc())
        rows = list(session.exec(stmt.offset(offset).limit(limit + 1)).all())
        return rows[:limit], len(rows) > limit

    def head_files(self, session: Session, repos: list[HubRepo]) -> dict[int, dict[str, FileEntry]]:
        out: dict[int, dict[str, FileEntry]] = {r.id: {} for r in repos}
        if not repos:
            return out
        shas = {r.sha: r.id for r in repos if r.sha}
        rows = session.execute(
            sa.select(HubCommit.repo_id, HubFile.path, HubFile.size, HubFile.sha256, HubFile.git_oid, HubFile.lfs)
            .join(HubCommit, HubCommit.id == HubFile.commit_id)
            .where(HubCommit.repo_id.in_(list(out)), HubCommit.oid.in_(list(shas)))
        ).all()
        for r in rows:
            out[r.repo_id][r.path] = FileEntry(int(r.size), r.sha256, r.git_oid, bool(r.lfs))
        return out

    @staticmethod
    def tree_entries(files: dict[str, FileEntry], path: str, recursive: bool) -> list[dict[str, Any]]:
        """Every tree item under folder ``path`` ("" = root); see :meth:`tree_page`."""
        return HubService.tree_page(files, path, recursive, 0, None)[0]

    @staticmethod
    def tree_page(
        files: dict[str, FileEntry], path: str, recursive: bool, cursor: int, limit: int | None
    ) -> tuple[list[dict[str, Any]], int]:
        """``(items[cursor:cursor+limit], total)`` of the tree under folder ``path`` ("" = root),
        sorted by path; raises EntryNotFound for a missing folder.

        Linear: one pass collects the names (a file's folders are its path's prefixes), the page
        is cut from the sorted names, and only the folders on the page get their oid (one more
        pass over the files below them). Computing every folder's oid by scanning every file was
        quadratic: 7 s for ``?limit=1`` at 4,000 folders."""
        prefix = f"{path}/" if path else ""
        below = [(p, f) for p, f in files.items() if p.startswith(prefix)] if prefix else list(files.items())
        if path and not below:
            if path in files:
                return [_file_item(path, files[path])][cursor : None if limit is None else cursor + limit], 1
            raise EntryNotFound(f"{path} does not exist at this revision")
        names: dict[str, FileEntry | None] = {}  # path -> file, or None for a folder
        for p, f in below:
            rest = p[len(prefix):]
            if "/" not in rest:
                names[p] = f
                continue
            if recursive:
                names[p] = f
                cut = rest.find("/")
                while cut != -1:
                    names.setdefault(prefix + rest[:cut], None)
                    cut = rest.find("/", cut + 1)
            else:
                names.setdefault(prefix + rest[: rest.find("/")], None)
        ordered = sorted(names)
        page = ordered[cursor:] if limit is None else ordered[cursor : cursor + limit]
        oids = HubService._folder_oids(below, {p for p in page if names[p] is None})
        items = [
            _file_item(p, f) if (f := names[p]) is not None else {"type": "directory", "oid": oids[p], "size": 0, "path": p}
            for p in page
        ]
        return items, len(ordered)

    @staticmethod
    def _folder_oids(files: list[tuple[str, FileEntry]], folders: set[str]) -> dict[str, str]:
        """The oid (:func:`tree_id` of the files below) of each folder in ``folders`` that holds a
        file; one pass over ``files``, each file adding itself to its ancestor folders that are wanted."""
        if not folders:
            return {}
        entries: dict[str, list[tuple[str, str]]] = {d: [] for d in folders}
        for p, f in files:
            cut = p.find("/")
            while cut != -1:
                got = entries.get(p[:cut])
                if got is not None:
                    got.append((p, f.git_oid))
                cut = p.find("/", cut + 1)
        return {d: tree_id(e) for d, e in entries.items() if e}

    @staticmethod
    def paths_info(files: dict[str, FileEntry], paths: list[str]) -> list[dict[str, Any]]:
        """Items of the named files and folders (unknown paths are left out), in the order asked."""
        wanted = [p.strip("/") for p in paths]
        folders = {p for p in wanted if p not in files}
        oids = HubService._folder_oids(list(files.items()), folders)  # only folders that hold files
        out = []
        for p in wanted:
            if p in files:
                out.append(_file_item(p, files[p]))
            elif p in oids:
                out.append({"type": "directory", "oid": oids[p], "size": 0, "path": p})
        return out

    def commits_of(self, session: Session, repo: HubRepo, head: HubCommit, limit: int = 1000) -> list[dict[str, Any]]:
        rows = {c.oid: c for c in session.exec(select(HubCommit).where(HubCommit.repo_id == repo.id)).all()}
        out = []
        cur: HubCommit | None = head
        while cur is not None and len(out) < limit:
            out.append(
                {
                    "id": cur.oid,
                    "title": cur.title,
                    "message": cur.message,
                    "authors": [{"user": cur.author_name}] if cur.author_name else [],
                    "date": iso(cur.created_at),
                }
            )
            cur = rows.get(cur.parent_oid) if cur.parent_oid else None
        return out

    def refs_of(self, session: Session, repo: HubRepo) -> dict[str, Any]:
        refs = session.exec(select(HubRef).where(HubRef.repo_id == repo.id).order_by(HubRef.name)).all()
        branches = [
            {"name": r.name, "ref": f"refs/heads/{r.name}", "targetCommit": r.commit_oid}
            for r in refs
            if not r.name.startswith("refs/")
        ]
        prs = [{"name": r.name, "ref": r.name, "targetCommit": r.commit_oid} for r in refs if r.name.startswith("refs/pr/")]
        return {"branches": branches, "converts": [], "tags": [], "pullRequests": prs}

    def count_download(self, repo_pk: int) -> None:
        try:
            with self.session() as s:
                s.execute(sa.update(HubRepo).where(HubRepo.id == repo_pk).values(downloads=HubRepo.downloads + 1))
                s.commit()
        except Exception:  # noqa: BLE001 - statistics never fail a download
            log.debug("could not count a download", exc_info=True)

    # -- preupload and LFS ------------------------------------------------------------------

    def upload_mode(self, path: str, size: int, sample: bytes) -> str:
        if size <= 0:
            return "regular"
        if PurePosixPath(path).suffix.lower() in LFS_SUFFIXES or size >= self.config.lfs_threshold:
            return "lfs"
        if b"\0" in sample:
            return "lfs"
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(sample) - 3:  # not just a character cut by the 512-byte sample
                return "lfs"
        return "regular"

    def preupload(
        self, session: Session, repo: HubRepo, revision: str, files: list[Any], *, create_pr: bool
    ) -> list[dict[str, Any]]:
        commit = self.resolve_revision(session, repo, revision)
        if not isinstance(files, list) or len(files) > self.config.max_operations:
            raise BadRequest(f"'files' must be a list of at most {self.config.max_operations} entries")
        current = self.files_of(session, commit)
        shas = [f.sha256 for f in current.values() if not f.lfs]
        git_of: dict[str, str] = {}
        if shas:
            for sha, g in session.execute(sa.select(HubBlob.sha256, HubBlob.git_sha1).where(HubBlob.sha256.in_(shas))):
                if g:
                    git_of[sha] = g
        out = []
        for item in files:
            if not isinstance(item, dict):
                raise BadRequest("each file must be an object with path, sample and size")
            path = check_path(item.get("path"))
            size = item.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"{path}: 'size' must be a non-negative integer")
            try:
                sample = base64.b64decode(item.get("sample") or "", validate=True)[:512]
            except (binascii.Error, ValueError, TypeError):
                raise BadRequest(f"{path}: 'sample' is not base64") from None
            mode = self.upload_mode(path, size, sample)
            entry: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            cur = current.get(path)
            if cur is not None:
                if mode == "lfs":
                    entry["oid"] = cur.sha256
                else:
                    entry["oid"] = cur.git_oid if not cur.lfs else git_of.get(cur.sha256)
                    if entry["oid"] is None:
                        del entry["oid"]
            out.append(entry)
        return out

    def lfs_batch(self, session: Session, repo: HubRepo, body: Any) -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
        """``(objects, to_sign)``: the batch answer objects; ``to_sign`` lists (oid, size) needing upload URLs."""
        if not isinstance(body, dict):
            raise BadRequest("LFS batch body must be a JSON object")
        op = body.get("operation")
        if op != "upload":
            raise BadRequest("only the 'upload' operation is supported (download through /resolve/)")
        transfers = body.get("transfers") or ["basic"]
        if not isinstance(transfers, list) or "basic" not in transfers:
            raise BadRequest("only the 'basic' transfer is supported")
        if body.get("hash_algo", "sha256") != "sha256":
            raise BadRequest("only hash_algo sha256 is supported")
        objects = body.get("objects")
        if not isinstance(objects, list) or len(objects) > self.config.max_batch_objects:
            raise BadRequest(f"'objects' must be a list of at most {self.config.max_batch_objects} entries")
        oids = [o.get("oid") for o in objects if isinstance(o, dict) and is_sha256(o.get("oid"))]
        linked = set()
        if oids:
            linked = {
                r[0]
                for r in session.execute(
                    sa.select(HubRepoObject.sha256).where(HubRepoObject.repo_id == repo.id, HubRepoObject.sha256.in_(oids))
                )
            }
        out: list[dict[str, Any]] = []
        to_sign: list[tuple[str, int]] = []
        for o in objects:
            oid = o.get("oid") if isinstance(o, dict) else None
            size = o.get("size") if isinstance(o, dict) else None
            shown_oid = oid if isinstance(oid, str) else ""
            shown_size = size if isinstance(size, int) and not isinstance(size, bool) else 0
            if not is_sha256(oid):
                out.append({"oid": shown_oid[:64], "size": shown_size, "error": {"code": 422, "message": "oid must be 64 lower-case hex (sha256)"}})
                continue
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                out.append({"oid": oid, "size": shown_size, "error": {"code": 422, "message": "size must be a non-negative integer"}})
                continue
            if size > self.config.max_upload_size:
                out.append(
                    {"oid": oid, "size": size, "error": {"code": 413, "message": f"object of {size} bytes exceeds the server's limit of {self.config.max_upload_size} bytes"}}
                )
                continue
            if oid in linked and self.store.exists(oid) and self.store.size(oid) == size:
                out.append({"oid": oid, "size": size})
                continue
            out.append({"oid": oid, "size": size})
            to_sign.append((oid, size))
        return out, to_sign

    def record_upload(self, repo_pk: int, stored: Any) -> None:
        fault_point("upload-before-record")  # inert outside crash tests (see .faults)
        now = utcnow()
        started = time.monotonic()
        for attempt in range(5):
            try:
                with self.write_session() as s:
                    insert_ignore(
                        s,
                        HubBlob,
                        [{"sha256": stored.sha256, "size": stored.size, "git_sha1": stored.git_sha1, "created_at": now}],
                        ["sha256"],
                    )
                    insert_ignore(s, HubRepoObject, [{"repo_id": repo_pk, "sha256": stored.sha256, "created_at": now}], ["repo_id", "sha256"])
                    s.commit()
                return
            except OperationalError as exc:
                if not _retry_busy(exc, started) or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def object_linked(self, session: Session, repo_pk: int, oid: str) -> bool:
        return (
            session.execute(
                sa.select(HubRepoObject.sha256).where(HubRepoObject.repo_id == repo_pk, HubRepoObject.sha256 == oid)
            ).first()
            is not None
        )

    # -- commits ----------------------------------------------------------------------------

    def parse_commit(self, repo: HubRepo, body: bytes, plan: _Plan | None = None) -> _Plan:
        """Parse an NDJSON commit body into ``plan``; stores regular file contents as blobs (the
        ones it writes are in ``plan.created_blobs``, also when it raises)."""
        plan = plan if plan is not None else _Plan()
        seen_header = False
        n_ops = 0
        lines = body.split(b"\n")
        # Counted first: a commit over the limit is refused before any of its files is stored.
        if sum(1 for raw in lines if raw.strip()) > self.config.max_operations + 1:  # + the header line
            raise PayloadTooLarge(f"a commit may hold at most {self.config.max_operations} operations")
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except (ValueError, RecursionError):
                raise BadRequest(f"commit line {lineno} is not valid JSON") from None
            if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
                raise BadRequest(f"commit line {lineno}: expected {{\"key\": ..., \"value\": {{...}}}}")
            key, value = item.get("key"), item["value"]
            if key == "header":
                if seen_header:
                    raise BadRequest("commit has two header lines")
                seen_header = True
                summary = value.get("summary")
                description = value.get("description") or ""
                parent = value.get("parentCommit")
                if summary is not None and not isinstance(summary, str):
                    raise BadRequest("header.summary must be a string")
                if not isinstance(description, str):
                    raise BadRequest("header.description must be a string")
                if parent is not None and not is_commit_id(parent):
                    raise BadRequest("header.parentCommit must be a 40-hex commit id")
                plan.summary = (summary or "").strip()[:1000]
                plan.description = description[:65536]
                plan.parent = parent
                continue
            n_ops += 1
            if n_ops > self.config.max_operations:
                raise PayloadTooLarge(f"a commit may hold at most {self.config.max_operations} operations")
            if key == "file":
                path = check_path(value.get("path"))
                if value.get("encoding", "base64") != "base64":
                    raise BadRequest(f"{path}: only base64 file content is supported")
                content = value.get("content")
                if not isinstance(content, str):
                    raise BadRequest(f"{path}: 'content' must be a base64 string")
                if len(content) > (self.config.max_regular_file * 4) // 3 + 8:
                    raise PayloadTooLarge(
                        f"{path}: regular files are limited to {self.config.max_regular_file} bytes; upload it with LFS"
                    )
                try:
                    data = base64.b64decode(content, validate=True)
                except (binascii.Error, ValueError):
                    raise BadRequest(f"{path}: 'content' is not valid base64") from None
                if len(data) > self.config.max_regular_file:
                    raise PayloadTooLarge(f"{path}: regular files are limited to {self.config.max_regular_file} bytes")
                blob = self.store.put_bytes(data)
                if blob.created or blob.sha256 in plan.created_blobs:
                    plan.created_blobs[blob.sha256] = self._mtime_ns(blob.sha256)
                plan.regular_blobs[blob.sha256] = (blob.size, blob.git_sha1 or git_blob_id(data))
                plan.regular_data[blob.sha256] = data
                plan.ops.append(_Op("file", path, FileEntry(blob.size, blob.sha256, blob.git_sha1 or git_blob_id(data), False)))
            elif key == "lfsFile":
                path = check_path(value.get("path"))
                if value.get("algo", "sha256") != "sha256":
                    raise BadRequest(f"{path}: only sha256 LFS objects are supported")
                oid = value.get("oid")
                if not is_sha256(oid):
                    raise BadRequest(f"{path}: 'oid' must be 64 lower-case hex")
                size = value.get("size")
                if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                    raise BadRequest(f"{path}: 'size' must be a non-negative integer")
                plan.ops.append(_Op("lfsFile", path, FileEntry(size if size is not None else -1, oid, "", True)))
            elif key in ("deletedFile", "deletedFolder"):
                raw_path = value.get("path")
                if isinstance(raw_path, str) and key == "deletedFolder":
                    raw_path = raw_path.rstrip("/")
                path = check_path(raw_path)
                plan.ops.append(_Op(key, path))
            else:
                raise BadRequest(f"commit line {lineno}: unknown operation {str(key)[:40]!r}")
        if not seen_header:
            raise BadRequest("commit has no header line")
        return plan

    def _resolve_lfs(self, session: Session, repo: HubRepo, plan: _Plan) -> None:
        oids = {op.entry.sha256 for op in plan.ops if op.kind == "lfsFile" and op.entry is not None}
        if not oids:
            return
        linked = {
            r[0]
            for r in session.execute(
                sa.select(HubRepoObject.sha256).where(HubRepoObject.repo_id == repo.id, HubRepoObject.sha256.in_(list(oids)))
            )
        }
        for op in plan.ops:
            if op.kind != "lfsFile" or op.entry is None:
                continue
            e = op.entry
            if e.sha256 not in linked or not self.store.exists(e.sha256):
                raise BadRequest(
                    f"{op.path}: LFS object {e.sha256} was not uploaded to this repo (upload it through the LFS batch API first)"
                )
            actual = self.store.size(e.sha256)
            if e.size not in (-1, actual):
                raise BadRequest(f"{op.path}: LFS object {e.sha256} has {actual} bytes, the commit says {e.size}")
            e.size = actual
            e.git_oid = lfs_pointer_info(e.sha256, actual)[0]

    @staticmethod
    def _apply(base: dict[str, FileEntry], ops: list[_Op]) -> dict[str, FileEntry]:
        files = dict(base)
        for op in ops:
            if op.kind in ("file", "lfsFile"):
                assert op.entry is not None
                files[op.path] = op.entry
            elif op.kind == "deletedFile":
                if op.path not in files:
                    raise EntryNotFound(f"A file with this name doesn't exist: {op.path}")
                del files[op.path]
            else:  # deletedFolder
                prefix = op.path + "/"
                gone = [p for p in files if p.startswith(prefix)]
                if not gone:
                    raise EntryNotFound(f"A folder with this name doesn't exist: {op.path}")
                for p in gone:
                    del files[p]
        paths = set(files)
        for p in paths:
            parts = p.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d in paths:
                    raise BadRequest(f"{p}: '{d}' is a file, so it cannot be a folder too")
        clash = normalization_clash(paths)
        if clash is not None:
            raise BadRequest(
                f"invalid path {clash[1]!r}: it differs from {clash[0]!r} only by Unicode normalisation (NFC/NFD)"
            )
        return files

    def _check_content(
        self, base: dict[str, FileEntry], files: dict[str, FileEntry]
    ) -> tuple[dict[str, Any] | None, list[tuple[str, int, Any, str]], str | None]:
        """Check changed files; return (card, adapters [(path, size, report, sha256)], readme text)."""
        tree = set(files)
        changed = [p for p, f in files.items() if base.get(p) is None or base[p].sha256 != f.sha256]
        for p in changed:
            policy.refuse_by_name(p)
        card = None
        readme = None
        adapters: list[tuple[str, int, Any, str]] = []
        for p, f in files.items():
            is_new = p in changed
            if not is_new and not policy.is_weights_path(p) and p != "README.md":
                continue
            local = self.store.local_path(f.sha256)
            if local is None:  # pragma: no cover - object stores come later
                continue
            component = policy.is_model_component(p, tree)
            if is_new or policy.is_weights_path(p):
                res = policy.check_blob(p, f.sha256, local, component=component)
                if not res.ok:
                    if is_new:
                        if policy.is_weights_path(p) and not component:
                            raise InvalidContent(policy.refusal_message(p, res.errors))
                        raise InvalidContent(f"{p}: {'; '.join(res.errors[:3])}")
                    continue  # an old file that newer rules refuse: kept, not indexed
                if res.is_adapter:
                    adapters.append((p, f.size, res.report, f.sha256))
        if "README.md" in files:
            f = files["README.md"]
            if f.size <= MAX_CARD_BYTES:
                local = self.store.local_path(f.sha256)
                text = local.read_bytes().decode("utf-8", errors="replace") if local else ""
                readme = text
                try:
                    card = parse_card(text)
                except YamlError as exc:
                    if "README.md" in changed:
                        raise BadRequest(str(exc)) from None
                    card = None
                if card is not None and "README.md" in changed:
                    errors, _ = check_card(text)
                    if errors:
                        raise BadRequest("Invalid metadata in README.md: " + "; ".join(errors))
        return card, adapters, readme

    def commit(
        self,
        ident: Identity | None,
        repo_type: str,
        repo_id: str,
        revision: str,
        body: bytes,
        *,
        create_pr: bool = False,
    ) -> CommitResult:
        with self.session() as s:
            repo = self.get_repo(s, repo_type, repo_id, ident, write=True)
            self.resolve_revision(s, repo, revision)  # 404 RevisionNotFound early
        assert ident is not None
        plan = _Plan()
        try:
            return self._commit(ident, repo_type, repo_id, revision, repo, body, plan, create_pr)
        except BaseException:
            # A refused (or failed) commit leaves none of the blobs it wrote behind.
            self._discard_blobs(plan)
            raise

    def _commit(
        self,
        ident: Identity,
        repo_type: str,
        repo_id: str,
        revision: str,
        repo: HubRepo,
        body: bytes,
        plan: _Plan,
        create_pr: bool,
    ) -> CommitResult:
        self.parse_commit(repo, body, plan)
        branch: str | None = None
        if not create_pr:
            branch = revision[len("refs/heads/"):] if revision.startswith("refs/heads/") else revision
            with self.session() as s:
                ref = s.exec(select(HubRef).where(HubRef.repo_id == repo.id, HubRef.name == branch)).first()
            if ref is None:
                raise BadRequest(f"can only commit to a branch; {revision!r} is a commit id (use create_pr)")
        last_error: Exception | None = None
        started = time.monotonic()
        for attempt in range(COMMIT_ATTEMPTS):
            with self.session() as s:
                repo = self.get_repo(s, repo_type, repo_id, ident, write=True)
                head = self.resolve_revision(s, repo, revision if create_pr else branch)
                if plan.parent is not None and plan.parent != head.oid:
                    raise Conflict(
                        f"A commit has happened since. Please refresh and try again. (parentCommit {plan.parent} is not "
                        f"the head {head.oid} of {branch})"
                    )
                base_files = self.files_of(s, head)
                self._resolve_lfs(s, repo, plan)
            files = self._apply(base_files, plan.ops)
            card, adapters, readme = self._check_content(base_files, files)
            hashes = self._fingerprints(adapters) if not create_pr and branch == DEFAULT_BRANCH else {}
            fault_point("commit-before-land")  # inert outside crash tests (see .faults)
            try:
                result = self._land(
                    repo_type, repo_id, ident, plan, head.oid, branch, files, card, adapters, hashes, readme, create_pr
                )
                fault_point("commit-after-land")
                return result
            except _HeadMoved as exc:
                last_error = exc
                if plan.parent is not None:
                    raise Conflict(
                        "A commit has happened since. Please refresh and try again. "
                        f"(parentCommit {plan.parent} is no longer the head of {branch})"
                    ) from None
                _backoff(attempt)
                continue
            except OperationalError as exc:
                if not _retry_busy(exc, started):
                    raise
                last_error = exc
                _backoff(attempt)
                continue
            except IntegrityError as exc:  # a PR number or commit id taken concurrently: try again
                last_error = exc
                _backoff(attempt)
                continue
        raise Conflict("another conflicting operation is in progress; try again") from last_error

    def _mtime_ns(self, sha256: str) -> int:
        path = self.store.local_path(sha256)
        try:
            return path.stat().st_mtime_ns if path is not None else 0
        except OSError:
            return 0

    def _blob_lock(self, s: Session) -> None:
        """Serialise blob cleanup with commits landing (SQLite: the write transaction does;
        PostgreSQL: a table lock that conflicts with the inserts of :meth:`_land`)."""
        if s.get_bind().dialect.name == "postgresql":
            s.execute(sa.text("LOCK TABLE hub_blobs IN SHARE ROW EXCLUSIVE MODE"))
        else:
            s.execute(sa.select(1))  # BEGIN IMMEDIATE

    def _discard_blobs(self, plan: _Plan) -> None:
        """Remove the blobs a refused commit wrote, unless something records them meanwhile (a
        ``hub_blobs`` row, a commit's file) or stored them again (the file's mtime moved: another
        commit is on its way with the same content; its landing stores the blob again if it is gone)."""
        if not plan.created_blobs:
            return
        shas = sorted(plan.created_blobs)
        try:
            with self.write_session() as s:
                self._blob_lock(s)
                used: set[str] = set()
                for i in range(0, len(shas), 500):
                    part = shas[i : i + 500]
                    used.update(s.execute(sa.select(HubBlob.sha256).where(HubBlob.sha256.in_(part))).scalars())
                    used.update(s.execute(sa.select(HubFile.sha256).where(HubFile.sha256.in_(part)).distinct()).scalars())
                for sha in shas:
                    if sha not in used and self._mtime_ns(sha) == plan.created_blobs[sha]:
                        self.store.delete(sha)
                s.rollback()
        except Exception:  # noqa: BLE001 - never hide the commit's own error; `registry check` finds the rest
            log.warning("could not remove the blobs of a refused commit", exc_info=True)

    def _fingerprints(self, adapters: list[tuple[str, int, Any, str]]) -> dict[str, dict[str, str]]:
        """Fingerprints of the adapters to index: cached by sha256, else known to the registry, else computed.

        A repo's every adapter is re-indexed on each commit, so the registry is asked once for all of them
        (one query per adapter was most of a commit's time in a repo of 150 adapters)."""
        hashes: dict[str, dict[str, str]] = {}
        if not self.config.index_adapters or not adapters:
            return hashes
        known = self._known_hashes({sha for _p, _, _, sha in adapters})
        for _p, _, _, sha in adapters:
            local = self.store.local_path(sha)
            if local is not None and sha not in hashes:
                hashes[sha] = policy.fingerprints(sha, local, known.get(sha))
        return hashes

    def _known_hashes(self, shas: set[str]) -> dict[str, dict[str, str]]:
        from lorahub.registry.tables import AdapterFile
        from lorahub.schemas.registry import HASH_FIELDS

        cols = [getattr(AdapterFile, c) for c in HASH_FIELDS]
        wanted = sorted(shas)
        out: dict[str, dict[str, str]] = {}
        with self.session() as s:
            for i in range(0, len(wanted), 500):
                rows = s.execute(
                    sa.select(AdapterFile.sha256, *cols).where(
                        AdapterFile.sha256.in_(wanted[i : i + 500]), AdapterFile.blake3.is_not(None)
                    )
                )
                for sha, *values in rows:
                    out.setdefault(sha, {c: v for c, v in zip(HASH_FIELDS, values, strict=True) if v})
        return out

    def _insert_commit(
        self,
        s: Session,
        repo: HubRepo,
        parent: str | None,
        files: dict[str, FileEntry],
        title: str,
        message: str,
        ident: Identity,
        now: datetime,
        *,
        card: dict[str, Any] | None = None,
        derived: dict[str, Any] | None = None,
    ) -> str:
        tree = tree_id([(p, f.git_oid) for p, f in files.items()])
        oid = commit_id(
            repo_key=repo.key, parent=parent, tree=tree, author=ident.name, title=title, message=message, nanos=time.time_ns()
        )
        derived = derived or {"tags": [], "pipeline_tag": None, "library_name": None}
        c = HubCommit(
            repo_id=repo.id,
            oid=oid,
            parent_oid=parent,
            title=title,
            message=message,
            author_id=ident.user_id,
            author_name=ident.name,
            created_at=now,
            card_data=json.dumps(card, ensure_ascii=False) if card is not None else None,
            tags=json.dumps(derived["tags"], ensure_ascii=False),
            pipeline_tag=(derived.get("pipeline_tag") or None) and str(derived["pipeline_tag"])[:64],
            library_name=(derived.get("library_name") or None) and str(derived["library_name"])[:64],
        )
        s.add(c)
        s.flush()
        rows = [
            {"commit_id": c.id, "path": p, "size": f.size, "sha256": f.sha256, "git_oid": f.git_oid, "lfs": f.lfs}
            for p, f in sorted(files.items())
        ]
        for i in range(0, len(rows), 1000):
            s.execute(sa.insert(HubFile.__table__), rows[i : i + 1000])
        return oid

    def _land(
        self,
        repo_type: str,
        repo_id: str,
        ident: Identity,
        plan: _Plan,
        base_oid: str,
        branch: str | None,
        files: dict[str, FileEntry],
        card: dict[str, Any] | None,
        adapters: list[tuple[str, int, Any, str]],
        hashes: dict[str, dict[str, str]],
        readme: str | None,
        create_pr: bool,
    ) -> CommitResult:
        now = utcnow()
        title = plan.summary or "Upload files"
        with self.write_session() as s:
            repo = self.get_repo(s, repo_type, repo_id, ident, write=True)
            if not create_pr and plan.parent is None:
                # Lock the branch (SQLite: BEGIN IMMEDIATE holds the write lock already) and, when its head
                # moved since it was read, rebuild the commit on the new head under that lock: a commit
                # without parentCommit never loses the race again (optimistic retries alone could run out
                # under many concurrent pushers: 409 "another conflicting operation" under load).
                current = s.execute(
                    sa.select(HubRef.commit_oid).where(HubRef.repo_id == repo.id, HubRef.name == branch).with_for_update()
                ).scalar_one_or_none()
                if current is not None and current != base_oid:
                    head = s.exec(select(HubCommit).where(HubCommit.repo_id == repo.id, HubCommit.oid == current)).one()
                    base_files = self.files_of(s, head)
                    files = self._apply(base_files, plan.ops)
                    card, adapters, readme = self._check_content(base_files, files)
                    hashes = self._fingerprints(adapters) if branch == DEFAULT_BRANCH else {}
                    base_oid = current
            has_st = any(policy.is_weights_path(p) for p in files)
            derived = card_tags.derive(card, has_safetensors=has_st, has_adapter=bool(adapters))
            if plan.regular_blobs:
                insert_ignore(
                    s,
                    HubBlob,
                    [{"sha256": k, "size": v[0], "git_sha1": v[1], "created_at": now} for k, v in plan.regular_blobs.items()],
                    ["sha256"],
                )
                # Under the lock the cleanup of a refused commit takes (see _discard_blobs): a blob
                # that another, refused, commit with the same content removed is stored again.
                for sha in plan.regular_blobs:
                    if not self.store.exists(sha):
                        self.store.put_bytes(plan.regular_data[sha], expected_sha256=sha)
            lfs_oids = {f.sha256 for f in files.values() if f.lfs}
            oid = self._insert_commit(
                s, repo, base_oid, files, title, plan.description, ident, now, card=card, derived=derived
            )
            pr_num = None
            if create_pr:
                pr_num = repo.next_pr
                res = s.execute(
                    sa.update(HubRepo).where(HubRepo.id == repo.id, HubRepo.next_pr == pr_num).values(next_pr=pr_num + 1)
                )
                if res.rowcount != 1:
                    s.rollback()
                    raise _HeadMoved()
                s.add(HubRef(repo_id=repo.id, name=f"refs/pr/{pr_num}", commit_oid=oid, updated_at=now))
                target = f"refs/pr/{pr_num}"
            else:
                res = s.execute(
                    sa.update(HubRef)
                    .where(HubRef.repo_id == repo.id, HubRef.name == branch, HubRef.commit_oid == base_oid)
                    .values(commit_oid=oid, updated_at=now)
                )
                if res.rowcount != 1:
                    s.rollback()
                    raise _HeadMoved()
                target = branch or DEFAULT_BRANCH
            if target == DEFAULT_BRANCH:
                repo.sha = oid
                repo.updated_at = now
                repo.card_data = json.dumps(card, ensure_ascii=False) if card is not None else None
                repo.tags = json.dumps(derived["tags"], ensure_ascii=False)
                repo.pipeline_tag = derived.get("pipeline_tag") and str(derived["pipeline_tag"])[:64]
                repo.library_name = derived.get("library_name") and str(derived["library_name"])[:64]
                s.add(repo)
                s.execute(sa.delete(HubRepoTag.__table__).where(HubRepoTag.repo_id == repo.id))
                tag_rows = [{"repo_id": repo.id, "tag": t[:200]} for t in dict.fromkeys(derived["tags"])]
                if tag_rows:
                    s.execute(sa.insert(HubRepoTag.__table__), tag_rows)
                if self.config.index_adapters:
                    self._index(s, repo, oid, title, card, readme, adapters, hashes)
            if lfs_oids:
                insert_ignore(
                    s, HubRepoObject, [{"repo_id": repo.id, "sha256": o, "created_at": now} for o in lfs_oids], ["repo_id", "sha256"]
                )
            s.commit()
        return CommitResult(oid=oid, branch=target, pr_num=pr_num, repo_id=self.repo_id_of(repo))

    # -- registry ---------------------------------------------------------------------------

    def _source_key(self, repo: HubRepo) -> str:
        return hub_source_key(self.config.public_url, self.repo_id_of(repo), URL_PREFIX[repo.repo_type])

    def _index(
        self,
        s: Session,
        repo: HubRepo,
        oid: str,
        title: str,
        card: dict[str, Any] | None,
        readme: str | None,
        adapters: list[tuple[str, int, Any, str]],
        hashes: dict[str, dict[str, str]],
    ) -> None:
        from lorahub.registry.drafts import hub_repo_draft
        from lorahub.registry.rows import delete_adapters, write_adapters
        from lorahub.registry.tables import Adapter

        conn = s.connection()
        if not adapters:
            ids = [r[0] for r in conn.execute(sa.select(Adapter.id).where(Adapter.source_key == self._source_key(repo)))]
            delete_adapters(conn, ids)
            return
        draft = hub_repo_draft(
            endpoint=self.config.public_url,
            repo_id=self.repo_id_of(repo),
            url_prefix=URL_PREFIX[repo.repo_type],
            namespace=repo.namespace,
            name=repo.name,
            private=repo.private,
            owner_id=repo.owner_id,
            downloads=int(repo.downloads or 0),
            created_at=repo.created_at,
            commit_oid=oid,
            commit_title=title,
            card=card,
            readme=readme,
            adapters=[(p, size, rep, hashes.get(sha) or {"sha256": sha}) for p, size, rep, sha in adapters],
        )
        write_adapters(conn, [draft])

    def _unindex(self, s: Session, repo: HubRepo) -> None:
        if not self.config.index_adapters:
            return
        from lorahub.registry.rows import delete_adapters
        from lorahub.registry.tables import Adapter

        conn = s.connection()
        ids = [r[0] for r in conn.execute(sa.select(Adapter.id).where(Adapter.source_key == self._source_key(repo)))]
        delete_adapters(conn, ids)

    def _reindex(self, s: Session, repo: HubRepo) -> None:
        """Re-index the main head (after a visibility change)."""
        if not self.config.index_adapters or not repo.sha:
            return
        head = s.exec(select(HubCommit).where(HubCommit.repo_id == repo.id, HubCommit.oid == repo.sha)).first()
        if head is None:
            return
        files = self.files_of(s, head)
        card, adapters, readme = self._check_content(files, files)
        hashes = {}
        for _, _, _, sha in adapters:
            local = self.store.local_path(sha)
            if local is not None:
                hashes[sha] = policy.fingerprints(sha, local, None)
        self._index(s, repo, head.oid, head.title, card, readme, adapters, hashes)


class _HeadMoved(HubError):
    status = 409

    def __init__(self) -> None:
        super().__init__("the branch head moved")


def _file_item(path: str, f: FileEntry) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": path}
    if f.lfs:
        _, psize = lfs_pointer_info(f.sha256, f.size)
        item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": psize}
    return item


__all__ = ["CommitResult", "FileEntry", "HubConfig", "HubService", "iso"]
