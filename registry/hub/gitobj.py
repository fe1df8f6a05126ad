"""The ids the Hub protocol uses.

- A regular file's oid is its git blob id: SHA-1 of ``b"blob <len>\\0" + content``.
- An LFS file is addressed by the SHA-256 of its content; its git blob is the LFS pointer text
  (three newline-terminated lines), whose git blob id is the file's tree ``oid`` and whose length
  is ``pointerSize``.
- A commit id is 40 hex digits: here the SHA-1 of a canonical text naming the repo, the parent,
  the tree (sorted paths and blob ids), the author, the message and the time. Not a real git
  commit object (the server does not speak the git protocol), but unique and stable.
"""

from __future__ import annotations

import hashlib
import re

HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")

LFS_POINTER_VERSION = "https://git-lfs.github.com/spec/v1"


def git_blob_id(data: bytes) -> str:
    h = hashlib.sha1(b"blob %d\0" % len(data), usedforsecurity=False)
    h.update(data)
    return h.hexdigest()


def git_blob_hasher(size: int):  # noqa: ANN201 - a hashlib object
    """A SHA-1 already fed with the git blob header for a blob of ``size`` bytes."""
    h = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    return h


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version {LFS_POINTER_VERSION}\noid sha256:{sha256}\nsize {size}\n".encode("ascii")


def lfs_pointer_info(sha256: str, size: int) -> tuple[str, int]:
    """``(git blob id of the pointer, pointer size)``."""
    ptr = lfs_pointer(sha256, size)
    return git_blob_id(ptr), len(ptr)


def tree_id(entries: list[tuple[str, str]]) -> str:
    """A stable id for a set of ``(path, git oid)`` entries (used for folders and commits)."""
    h = hashlib.sha1(usedforsecurity=False)
    for path, oid in sorted(entries):
        h.update(path.encode("utf-8") + b"\0" + oid.encode("ascii") + b"\n")
    return h.hexdigest()


def commit_id(*, repo_key: str, parent: str | None, tree: str, author: str, title: str, message: str, nanos: int) -> str:
    text = "\n".join(
        [f"repo {repo_key}", f"tree {tree}", f"parent {parent or ''}", f"author {author} {nanos}", "", title, "", message]
    )
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and HEX64.match(value) is not None


def is_commit_id(value: object) -> bool:
    return isinstance(value, str) and HEX40.match(value) is not None
