"""Repo file paths that must never reach a disk: ``.git`` under every name a file system gives it.

A repo file ``sub/.git/config`` that a client writes to disk turns ``sub`` into a git repository
whose config the repo's author chose (``core.fsmonitor = <command>`` runs on the next
``git status``). File systems know ``.git`` under more names than ``.git``; like git itself
(``is_ntfs_dotgit``, ``is_hfs_dotgit`` in git's ``path.c``, CVE-2014-9390, CVE-2019-1353) a
segment is a ``.git`` alias when, after removing the code points HFS+ ignores (U+200C, U+200D,
U+200E, U+200F, U+202A-U+202E, U+206A-U+206F, U+FEFF) and folding case (NTFS, APFS, HFS+ and FAT
are case-insensitive), it is

* ``.git``, also followed by dots and spaces (Windows drops them: ``.git.``, ``.git ``);
* ``.git`` followed by an NTFS stream (``.git::$INDEX_ALLOCATION``, ``.git:$I30:$INDEX_ALLOCATION``);
* ``git~1`` (or any ``git~N``): the 8.3 short name NTFS gives ``.git``.

The Hub server refuses such paths in commits (``lorahub.registry.hub.names``), ``lorahub pull``
refuses a repo that lists one before downloading anything, and ``lorahub push`` never uploads one.
"""

from __future__ import annotations

import re
import unicodedata

#: Code points HFS+ ignores when it compares names (git's ``next_hfs_char``).
HFS_IGNORED = frozenset(
    "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"
)
_SHORT_NAME = re.compile(r"^git~[0-9]+$")


def is_git_alias(segment: str) -> bool:
    """Whether one path segment names a ``.git`` folder on some file system."""
    if not isinstance(segment, str) or not segment:
        return False
    name = "".join(ch for ch in segment if ch not in HFS_IGNORED)
    name = unicodedata.normalize("NFKC", name).casefold()
    name = name.split(":", 1)[0]  # an NTFS stream names the folder itself
    name = name.rstrip(". ")  # Windows drops trailing dots and spaces
    return name == ".git" or _SHORT_NAME.match(name) is not None


def git_alias_in(path: str) -> str | None:
    """The first segment of ``path`` (``/`` or ``\\`` separated) that is a ``.git`` alias, or None."""
    if not isinstance(path, str):
        return None
    for segment in re.split(r"[/\\]", path):
        if is_git_alias(segment):
            return segment
    return None


def local_path_problem(path: object) -> str | None:
    """Why a repo file path must not be written under a local folder, or None when it may.

    Looser than the server's rules (a path the Hugging Face Hub accepts is fine), strict where a
    write could land outside the folder or inside a ``.git`` folder."""
    if not isinstance(path, str) or not path:
        return "empty path"
    if "\x00" in path:
        return "NUL character"
    if path.startswith("/") or "\\" in path or re.match(r"^[A-Za-z]:", path):
        return "absolute path or backslash"
    segments = path.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        return "empty, '.' or '..' segment"
    alias = git_alias_in(path)
    if alias is not None:
        return f"{alias!r} is a '.git' folder on some file systems"
    return None


__all__ = ["HFS_IGNORED", "git_alias_in", "is_git_alias", "local_path_problem"]
