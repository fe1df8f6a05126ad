"""Repos and who may see them: finding a repo, the access rules, creating, deleting, changing
visibility, listing, and reading a repo at a revision (its files, a file, its refs and history).

Access rules (decided by :func:`.access.allowed`; here is only which error each refusal is):

* a repo the caller may not read (a private repo outside their namespaces, or outside a
  fine-grained token's scope) is the same ``404 RepoNotFound`` as a repo that does not exist;
* writing needs a token (``401`` without one), a write token (``403`` for a read-only one) and
  the right to write there (``403`` for a repo the caller may read but not change).

The functions take the caller's session; :class:`Repos` is the operations, each opening its own
session (see :mod:`lorahub.registry.hub`).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from lorahub.registry.database import Sessions, insert_ignore
from lorahub.registry.tables import User, utcnow

from . import trees
from .access import RepoRef, allowed, in_scope, private_view
from .auth import Identity
from .blobstore import BlobStore
from .catalogue_sync import CatalogueSync
from .errors import Conflict, Forbidden, RepoNotFound, Unauthorized
from .gitobj import git_blob_id
from .names import check_namespace, check_repo_name, check_repo_type, repo_key
from .tables import HubBlob, HubCommit, HubRef, HubRepo, HubRepoTag, HubSequence

log = logging.getLogger("lorahub.server")

GITATTRIBUTES = "".join(
    f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n"
    for suffix in (
        ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gz", ".h5", ".joblib", ".mlmodel", ".model",
        ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth",
        ".rar", ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst", ".png", ".jpg",
        ".jpeg", ".webp",
    )
).encode() + b"*tfevents* filter=lfs diff=lfs merge=lfs -text\n"


# -- access (in the caller's session) -------------------------------------------------------------


def find_repo(session: Session, repo_type: str, repo_id: str) -> HubRepo | None:
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        return None
    ns, name = repo_id.split("/")
    return session.exec(select(HubRepo).where(HubRepo.key == repo_key(repo_type, ns, name))).first()


def repo_by_public_id(session: Session, public_id: str) -> HubRepo | None:
    """The repo whose ``public_id`` (24 lower-case hex digits) this is, or None. No access check."""
    if not isinstance(public_id, str) or len(public_id) != 24 or not all(c in "0123456789abcdef" for c in public_id):
        return None
    return session.exec(select(HubRepo).where(HubRepo.public_id == public_id)).first()


def can_read(repo: HubRepo, ident: Identity | None) -> bool:
    return allowed(ident, "read", repo)


def check_allowed(ident: Identity | None, action: str, repo: HubRepo | RepoRef, label: str) -> None:
    """Raise the error a refused ``action`` on a readable repo (or a namespace) is."""
    if ident is None:
        raise Unauthorized("authentication required: send a write token (Authorization: Bearer lh_...)")
    if allowed(ident, action, repo):
        return
    if not ident.can_write:
        raise Forbidden("this token is read-only: create a write token with `lorahub token create --user NAME`")
    if ident.scopes is not None and not in_scope(ident, repo.namespace, repo.name):
        raise Forbidden(f"this token is limited to other repos than {label}")
    raise Forbidden(f"you ({ident.name}) cannot {action} {label}")


def get_repo(
    session: Session, repo_type: str, repo_id: str, ident: Identity | None, *, write: bool = False, action: str | None = None
) -> HubRepo:
    """The repo, if ``ident`` may read it and do ``action`` (``write`` for ``write=True``) on it; else the
    error the rules say."""
    action = action or ("write" if write else "read")
    if action not in ("read", "xet-read") and ident is None:
        raise Unauthorized("authentication required: send a write token (Authorization: Bearer lh_...)")
    repo = find_repo(session, repo_type, repo_id)
    if repo is None or not allowed(ident, "read", repo):
        raise RepoNotFound(repo_id)
    if action not in ("read", "xet-read"):
        check_allowed(ident, action, repo, f"the repo '{repo.namespace}/{repo.name}'")
    return repo


def list_repos(
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
    """One page of the repos ``ident`` may see; ``(repos, more)``."""
    stmt = select(HubRepo).where(HubRepo.repo_type == repo_type)
    view = private_view(ident)
    if not view.everything:
        visible = [HubRepo.private == sa.false()]
        if view.namespaces:
            visible.append(HubRepo.namespace_lower.in_(view.namespaces))
        if view.repos:
            # key is "type/namespace/name", lower case
            visible.append(HubRepo.key.in_([f"{repo_type}/{r}" for r in view.repos]))
        stmt = stmt.where(sa.or_(*visible))
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


def next_pk(s: Session, counter_name: str, model: Any) -> int:
    """The next primary key of ``model``'s table: one past both the last one handed out (``hub_sequences``
    row ``counter_name``) and the largest in use, so that no id is ever given twice, even after a delete.
    Runs in the creating write transaction (SQLite: the write lock; PostgreSQL: the counter row's lock)."""
    counter = sa.update(HubSequence).where(HubSequence.name == counter_name).values(value=HubSequence.value + 1)
    value = s.execute(counter.returning(HubSequence.value)).scalar_one_or_none()
    if value is None:  # a database whose counter row is missing: start from the ids in use
        insert_ignore(s, HubSequence, [{"name": counter_name, "value": 0}], ["name"])
        value = s.execute(counter.returning(HubSequence.value)).scalar_one()
    top = s.execute(sa.select(sa.func.coalesce(sa.func.max(model.id), 0))).scalar_one()
    if value <= top:
        value = int(top) + 1
        s.execute(sa.update(HubSequence).where(HubSequence.name == counter_name).values(value=value))
    return int(value)


def next_repo_pk(s: Session) -> int:
    """The next repo primary key (:func:`next_pk` on the counter ``hub_repos``)."""
    return next_pk(s, "hub_repos", HubRepo)


# -- the operations (each opens its own session) -------------------------------------------------


class Repos:
    def __init__(self, sessions: Sessions, store: BlobStore, sync: CatalogueSync) -> None:
        self.sessions = sessions
        self.store = store
        self.sync = sync

    def create(
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
        check_allowed(ident, "create", RepoRef(namespace=ns, name=name, private=bool(private)), f"repos in the namespace '{ns}'")
        key = repo_key(rt, ns, name)
        for attempt in range(5):
            with self.sessions.write() as s:
                existing = s.exec(select(HubRepo).where(HubRepo.key == key)).first()
                if existing is not None:
                    raise Conflict("You already created this model repo", extra={"repo": existing})
                owner = s.exec(select(User).where(sa.func.lower(User.name) == ns.lower())).first()
                if owner is None:
                    raise Forbidden(f"no user named '{ns}'")
                now = utcnow()
                repo = HubRepo(
                    id=next_repo_pk(s),
                    public_id=secrets.token_hex(12),
                    repo_type=rt,
                    namespace=owner.name if owner.name.lower() == ns.lower() else ns,
                    name=name,
                    namespace_lower=ns.lower(),
                    key=key,
                    owner_id=owner.id,
                    created_by=ident.user_id,
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
                files = {".gitattributes": trees.FileEntry(blob.size, blob.sha256, blob.git_sha1 or git_blob_id(GITATTRIBUTES), False)}
                oid = trees.insert_commit(s, repo, None, files, "initial commit", "", ident, now)
                s.add(HubRef(repo_id=repo.id, name=trees.DEFAULT_BRANCH, commit_oid=oid, updated_at=now))
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

    def delete(self, ident: Identity | None, repo_type: str | None, repo_id: str) -> None:
        rt = check_repo_type(repo_type)
        with self.sessions.write() as s:
            repo = get_repo(s, rt, repo_id, ident, action="delete")
            self.sync.unindex(s, repo)
            s.delete(repo)
            s.commit()

    def update_settings(self, ident: Identity | None, repo_type: str, repo_id: str, private: bool | None) -> HubRepo:
        with self.sessions.write() as s:
            repo = get_repo(s, repo_type, repo_id, ident, action="settings")
            if private is not None and bool(private) != repo.private:
                repo.private = bool(private)
                s.add(repo)
                s.flush()
                self.sync.reindex(s, repo)
            s.commit()
            return repo

    def listing(
        self, ident: Identity | None, *, with_files: bool, **query: Any
    ) -> tuple[list[HubRepo], dict[int, dict[str, trees.FileEntry]], bool]:
        """A page of :func:`list_repos` (``query``: its keyword arguments); ``(repos, files of their
        main heads (empty unless with_files), more)``."""
        with self.sessions.read() as s:
            repos, more = list_repos(s, ident, **query)
            files = trees.head_files(s, repos) if with_files else {}
        return repos, files, more

    def revision(
        self, ident: Identity | None, repo_type: str, repo_id: str, revision: str | None
    ) -> tuple[HubRepo, HubCommit, dict[str, trees.FileEntry]]:
        """The repo, the commit ``revision`` names and its files."""
        with self.sessions.read() as s:
            repo = get_repo(s, repo_type, repo_id, ident)
            commit = trees.resolve_revision(s, repo, revision)
            return repo, commit, trees.files_of(s, commit)

    def file(
        self, ident: Identity | None, repo_type: str, repo_id: str, revision: str, path: str
    ) -> tuple[HubRepo, HubCommit, trees.FileEntry | None]:
        """The repo, the commit and the file at ``path`` (None when there is none, or no path)."""
        with self.sessions.read() as s:
            repo = get_repo(s, repo_type, repo_id, ident)
            commit = trees.resolve_revision(s, repo, revision)
            entry = trees.file_at(s, commit, path) if path else None
        return repo, commit, entry

    def refs(self, ident: Identity | None, repo_type: str, repo_id: str) -> list[HubRef]:
        with self.sessions.read() as s:
            return trees.refs_of(s, get_repo(s, repo_type, repo_id, ident))

    def history(self, ident: Identity | None, repo_type: str, repo_id: str, revision: str) -> list[HubCommit]:
        with self.sessions.read() as s:
            repo = get_repo(s, repo_type, repo_id, ident)
            return trees.history(s, repo, trees.resolve_revision(s, repo, revision))

    def by_public_id(self, public_id: str) -> HubRepo | None:
        """The repo of an upload URL (no access check: the URL's signature is the check)."""
        with self.sessions.read() as s:
            return repo_by_public_id(s, public_id)

    def count_download(self, repo_pk: int) -> None:
        try:
            with self.sessions.read() as s:
                s.execute(sa.update(HubRepo).where(HubRepo.id == repo_pk).values(downloads=HubRepo.downloads + 1))
                s.commit()
        except Exception:  # noqa: BLE001 - statistics never fail a download
            log.debug("could not count a download", exc_info=True)


__all__ = ["GITATTRIBUTES", "Repos", "can_read", "check_allowed", "find_repo", "get_repo", "list_repos", "repo_by_public_id"]
