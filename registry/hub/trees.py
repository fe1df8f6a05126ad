"""Revisions and their trees: resolving a revision, a commit's files, listing a tree, a repo's
history and refs, and writing one commit with its file list.

A commit stores its whole file list (``hub_files``), so the tree of any revision is one indexed
query. The functions that read or write the database take the caller's session (see
:mod:`lorahub.registry.hub` for who owns sessions); the tree listings are pure.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, select

from .errors import EntryNotFound, RevisionNotFound
from .gitobj import commit_id, is_commit_id, tree_id
from .tables import HubCommit, HubFile, HubRef, HubRepo

if TYPE_CHECKING:  # pragma: no cover
    from .auth import Identity

DEFAULT_BRANCH = "main"


@dataclass
class FileEntry:
    size: int
    sha256: str
    git_oid: str
    lfs: bool


class TreeItem(NamedTuple):
    """One entry of a tree listing: a file (``file``; ``oid`` its git oid) or a folder (``file`` is
    None; ``oid`` the :func:`~.gitobj.tree_id` of the files below it)."""

    path: str
    file: FileEntry | None
    oid: str


def _file(path: str, f: FileEntry) -> TreeItem:
    return TreeItem(path, f, f.git_oid)


# -- reading -------------------------------------------------------------------------------


def resolve_revision(session: Session, repo: HubRepo, revision: str | None) -> HubCommit:
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


def files_of(session: Session, commit: HubCommit) -> dict[str, FileEntry]:
    rows = session.execute(
        sa.select(HubFile.path, HubFile.size, HubFile.sha256, HubFile.git_oid, HubFile.lfs).where(
            HubFile.commit_id == commit.id
        )
    ).all()
    return {r.path: FileEntry(int(r.size), r.sha256, r.git_oid, bool(r.lfs)) for r in rows}


def file_at(session: Session, commit: HubCommit, path: str) -> FileEntry | None:
    r = session.execute(
        sa.select(HubFile.size, HubFile.sha256, HubFile.git_oid, HubFile.lfs).where(
            HubFile.commit_id == commit.id, HubFile.path == path
        )
    ).first()
    return FileEntry(int(r.size), r.sha256, r.git_oid, bool(r.lfs)) if r is not None else None


def head_files(session: Session, repos: list[HubRepo]) -> dict[int, dict[str, FileEntry]]:
    """The files of each repo's main head (``hub_repos.sha``), in one query."""
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


def history(session: Session, repo: HubRepo, head: HubCommit, limit: int = 1000) -> list[HubCommit]:
    """``head`` and its ancestors, newest first (at most ``limit``)."""
    rows = {c.oid: c for c in session.exec(select(HubCommit).where(HubCommit.repo_id == repo.id)).all()}
    out = []
    cur: HubCommit | None = head
    while cur is not None and len(out) < limit:
        out.append(cur)
        cur = rows.get(cur.parent_oid) if cur.parent_oid else None
    return out


def refs_of(session: Session, repo: HubRepo) -> list[HubRef]:
    """The repo's refs (branches and ``refs/pr/N``), by name."""
    return list(session.exec(select(HubRef).where(HubRef.repo_id == repo.id).order_by(HubRef.name)).all())


# -- tree listings (pure) ------------------------------------------------------------------------


def tree_entries(files: dict[str, FileEntry], path: str, recursive: bool) -> list[TreeItem]:
    """Every tree item under folder ``path`` ("" = root); see :func:`tree_page`."""
    return tree_page(files, path, recursive, 0, None)[0]


def tree_page(
    files: dict[str, FileEntry], path: str, recursive: bool, cursor: int, limit: int | None
) -> tuple[list[TreeItem], int]:
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
            return [_file(path, files[path])][cursor : None if limit is None else cursor + limit], 1
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
    oids = folder_oids(below, {p for p in page if names[p] is None})
    items = [_file(p, f) if (f := names[p]) is not None else TreeItem(p, None, oids[p]) for p in page]
    return items, len(ordered)


def folder_oids(files: list[tuple[str, FileEntry]], folders: set[str]) -> dict[str, str]:
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


def paths_info(files: dict[str, FileEntry], paths: list[str]) -> list[TreeItem]:
    """Items of the named files and folders (unknown paths are left out), in the order asked."""
    wanted = [p.strip("/") for p in paths]
    folders = {p for p in wanted if p not in files}
    oids = folder_oids(list(files.items()), folders)  # only folders that hold files
    out = []
    for p in wanted:
        if p in files:
            out.append(_file(p, files[p]))
        elif p in oids:
            out.append(TreeItem(p, None, oids[p]))
    return out


# -- writing ---------------------------------------------------------------------------------


def next_commit_pk(s: Session) -> int | None:
    """The primary key of a new commit, never one a commit ever had: commit ids name model versions in the
    Civitai-compatible API (:mod:`lorahub.registry.hub.civitai`). PostgreSQL's sequence never goes back
    (None: let it choose, without a counter row every commit would lock); SQLite gives the largest rowid
    + 1, which a deleted repo's newest commits would hand out again, so the ``hub_sequences`` counter
    ``hub_commits`` does it (the caller holds SQLite's write lock)."""
    if s.get_bind().dialect.name == "postgresql":
        return None
    from .repos import next_pk

    return next_pk(s, "hub_commits", HubCommit)


def insert_commit(
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
    """Insert a commit of ``files`` on ``parent`` and its file list; its oid. Moves no ref."""
    tree = tree_id([(p, f.git_oid) for p, f in files.items()])
    oid = commit_id(
        repo_key=repo.key, parent=parent, tree=tree, author=ident.name, title=title, message=message, nanos=time.time_ns()
    )
    derived = derived or {"tags": [], "pipeline_tag": None, "library_name": None}
    c = HubCommit(
        id=next_commit_pk(s),
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


__all__ = [
    "DEFAULT_BRANCH",
    "FileEntry",
    "TreeItem",
    "file_at",
    "files_of",
    "folder_oids",
    "head_files",
    "history",
    "insert_commit",
    "paths_info",
    "refs_of",
    "resolve_revision",
    "tree_entries",
    "tree_page",
]
