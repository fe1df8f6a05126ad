"""The commit algorithm: an NDJSON commit request becomes a landed commit, or nothing.

Commits: the new file list is computed from the branch head and the operations, the added files
are checked (see :mod:`.policy`), then one transaction inserts the commit and its files and
moves the branch with a compare-and-swap (``UPDATE ... WHERE commit_oid = <old head>``). When the
head moved meanwhile, a commit that named a ``parentCommit`` gets ``409``; one without is rebuilt
on the new head (what the Hub does) inside the landing transaction, with the branch row locked
(``SELECT ... FOR UPDATE``; SQLite's write lock), so it cannot lose the race again however many clients
push at once, and no landed commit is ever lost or silently undone. On the
main branch the same transaction updates the repo's card data and tags and its registry adapter
(see :mod:`.catalogue_sync`), so a search finds a pushed adapter as soon as the commit call returns.

A refused (or failed) commit leaves none of the blobs it wrote behind: they are removed under a
lock that landing commits also take, unless something recorded or stored them again meanwhile.
:class:`Commits` opens every session the algorithm uses (see :mod:`lorahub.registry.hub`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select

from lorahub.registry.database import Sessions, insert_ignore, retry_busy
from lorahub.registry.tables import utcnow

from . import card_tags, policy, trees
from .auth import Identity
from .blobstore import BlobStore
from .catalogue_sync import CatalogueSync
from .config import HubConfig
from .errors import BadRequest, Conflict, EntryNotFound, HubApiError, PayloadTooLarge
from .faults import fault_point
from .gitobj import git_blob_id, is_commit_id, is_sha256, lfs_pointer_info
from .names import check_path, normalization_clash, repo_id_of
from .repos import get_repo
from .tables import HubBlob, HubCommit, HubFile, HubRef, HubRepo, HubRepoObject, HubRepoTag
from .trees import FileEntry

log = logging.getLogger("lorahub.server")


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


#: A commit without parentCommit is rebuilt on the new head this many times at most under contention.
COMMIT_ATTEMPTS = 25


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.2, 0.01 * (attempt + 1))))


class Commits:
    def __init__(self, sessions: Sessions, store: BlobStore, config: HubConfig, sync: CatalogueSync) -> None:
        self.sessions = sessions
        self.store = store
        self.config = config
        self.sync = sync

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
        return policy.check_files(self.store, base, files)

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
        with self.sessions.read() as s:
            repo = get_repo(s, repo_type, repo_id, ident, write=True)
            trees.resolve_revision(s, repo, revision)  # 404 RevisionNotFound early
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
            with self.sessions.read() as s:
                ref = s.exec(select(HubRef).where(HubRef.repo_id == repo.id, HubRef.name == branch)).first()
            if ref is None:
                raise BadRequest(f"can only commit to a branch; {revision!r} is a commit id (use create_pr)")
        last_error: Exception | None = None
        started = time.monotonic()
        for attempt in range(COMMIT_ATTEMPTS):
            with self.sessions.read() as s:
                repo = get_repo(s, repo_type, repo_id, ident, write=True)
                head = trees.resolve_revision(s, repo, revision if create_pr else branch)
                if plan.parent is not None and plan.parent != head.oid:
                    raise Conflict(
                        f"A commit has happened since. Please refresh and try again. (parentCommit {plan.parent} is not "
                        f"the head {head.oid} of {branch})"
                    )
                base_files = trees.files_of(s, head)
                self._resolve_lfs(s, repo, plan)
            files = self._apply(base_files, plan.ops)
            # A new file stored as Xet chunks is rebuilt once for its checks and its fingerprints.
            with self.store.holding(op.entry.sha256 for op in plan.ops if op.kind == "lfsFile" and op.entry is not None):
                card, adapters, readme = self._check_content(base_files, files)
                hashes = self._fingerprints(adapters) if not create_pr and branch == trees.DEFAULT_BRANCH else {}
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
                if not retry_busy(exc, started):
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
            with self.sessions.write() as s:
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
        if not self.config.index_adapters or not adapters:
            return {}
        with self.sessions.read() as s:
            known = self.sync.known_hashes(s, {sha for _p, _, _, sha in adapters})
        return self.sync.fingerprints(adapters, known)

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
        with self.sessions.write() as s:
            repo = get_repo(s, repo_type, repo_id, ident, write=True)
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
                    base_files = trees.files_of(s, head)
                    files = self._apply(base_files, plan.ops)
                    card, adapters, readme = self._check_content(base_files, files)
                    hashes = self._fingerprints(adapters) if branch == trees.DEFAULT_BRANCH else {}
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
            oid = trees.insert_commit(
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
                target = branch or trees.DEFAULT_BRANCH
            if target == trees.DEFAULT_BRANCH:
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
                    self.sync.index(s, repo, oid, title, card, readme, adapters, hashes)
            if lfs_oids:
                insert_ignore(
                    s, HubRepoObject, [{"repo_id": repo.id, "sha256": o, "created_at": now} for o in lfs_oids], ["repo_id", "sha256"]
                )
            s.commit()
        return CommitResult(oid=oid, branch=target, pr_num=pr_num, repo_id=repo_id_of(repo))


class _HeadMoved(HubApiError):
    status = 409

    def __init__(self) -> None:
        super().__init__("the branch head moved")


__all__ = ["COMMIT_ATTEMPTS", "CommitResult", "Commits"]
