"""The Hub API's JSON views of the Hub's state: a repo (``/api/models/...``, listings), tree
items (``/tree``, ``paths-info``), commits and refs, shaped as huggingface_hub reads them.

Pure functions of what :mod:`lorahub.registry.hub` returns; no database, no HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from lorahub.registry.hub.gitobj import lfs_pointer_info
from lorahub.registry.hub.names import repo_id_of
from lorahub.registry.hub.tables import HubCommit, HubRef, HubRepo
from lorahub.registry.hub.trees import FileEntry, TreeItem
from lorahub.registry.tables import iso


def repo_json(
    repo: HubRepo,
    *,
    commit: HubCommit | None = None,
    files: dict[str, FileEntry] | None = None,
    blobs: bool = False,
    card_data: bool = True,
) -> dict[str, Any]:
    """A repo's info: at ``commit`` (else its main head); with ``siblings`` when ``files`` are given
    (their sizes, blob ids and LFS data with ``blobs``); ``cardData`` unless ``card_data`` is False."""
    rid = repo_id_of(repo)
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


def tree_item(item: TreeItem) -> dict[str, Any]:
    """One entry of ``/tree`` and ``paths-info``: a file (with its LFS data) or a folder."""
    f = item.file
    if f is None:
        return {"type": "directory", "oid": item.oid, "size": 0, "path": item.path}
    out: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": item.path}
    if f.lfs:
        _, psize = lfs_pointer_info(f.sha256, f.size)
        out["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": psize}
    return out


def tree_items(items: list[TreeItem]) -> list[dict[str, Any]]:
    return [tree_item(i) for i in items]


def commit_json(c: HubCommit) -> dict[str, Any]:
    """One entry of ``/commits``."""
    return {
        "id": c.oid,
        "title": c.title,
        "message": c.message,
        "authors": [{"user": c.author_name}] if c.author_name else [],
        "date": iso(c.created_at),
    }


def refs_json(refs: list[HubRef]) -> dict[str, Any]:
    """The ``/refs`` answer: branches and pull requests (no tags or converts)."""
    branches = [
        {"name": r.name, "ref": f"refs/heads/{r.name}", "targetCommit": r.commit_oid}
        for r in refs
        if not r.name.startswith("refs/")
    ]
    prs = [{"name": r.name, "ref": r.name, "targetCommit": r.commit_oid} for r in refs if r.name.startswith("refs/pr/")]
    return {"branches": branches, "converts": [], "tags": [], "pullRequests": prs}


__all__ = ["commit_json", "refs_json", "repo_json", "tree_item", "tree_items"]
