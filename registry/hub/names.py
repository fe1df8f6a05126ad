"""What a repo id, a user name and a file path may look like.

Repo names follow the Hub's rules (huggingface_hub ``validate_repo_id``), restricted to ASCII:
letters, digits, ``_``, ``-`` and ``.``; start and end with a letter, digit or ``_``; at most 96
characters; no ``--`` or ``..``; not ending in ``.git``. User names (namespaces) use the same
alphabet, at most 42 characters, and some words are reserved because they are URL prefixes of
the server (``api``, ``datasets``, ...).

File paths are relative POSIX paths: no empty, ``.`` or ``..`` segment, no leading ``/``, no
backslash, no control, invisible formatting (zero-width, bidirectional override), line-separator,
private-use or unassigned character, at most 1024 bytes of UTF-8 and 255 per segment, at most 64
segments, and no segment that is a ``.git`` folder under any name a file system gives it
(``.GIT``, ``sub/.git``, ``git~1``, ``.git.``, ``.git::$INDEX_ALLOCATION``; the rule of
:mod:`lorahub.hub.paths`, which ``lorahub pull`` and ``push`` apply too). Names Windows cannot
store are refused too, since clients download files under their repo path: the device names
(``CON``, ``NUL``, ``COM1``, ``aux.txt``, ...), the characters ``< > : " | ? *`` (``a:b`` would
write an NTFS stream) and segments ending in ``.`` or a space. Two paths of one tree may not differ only by Unicode normalisation (NFC/NFD
``é``: the same name on screen), see :func:`normalization_clash`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from lorahub.hub.paths import git_alias_in

from .errors import BadRequest

REPO_TYPES = ("model", "dataset", "space")
#: URL prefix of file routes per repo type (``/{prefix}{ns}/{name}/resolve/...``).
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}

_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$")
_USER = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,40}[A-Za-z0-9_])?$")

#: Namespaces that would collide with the server's own URL space.
RESERVED_NAMESPACES = frozenset(
    {
        "api", "models", "datasets", "spaces", "kernels", "docs", "redoc", "openapi.json", "lorahub",
        "static", "assets", "settings", "login", "logout", "join", "new", "organizations", "health",
        "healthz", "search", "admin", "root", "system", "anonymous", "null", "none", "undefined",
    }
)

MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_SEGMENTS = 64

_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\ufeff")
#: Unicode categories refused in paths: controls, format (zero-width, bidi), line/paragraph
#: separators, surrogates, private use, unassigned.
_BAD_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"))
_WINDOWS_CHARS = frozenset('<>:"|?*')
_WINDOWS_DEVICE = re.compile(r"^(?:con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3])(?:\..*)?$", re.IGNORECASE)


def _name_ok(value: str, pattern: re.Pattern[str]) -> bool:
    return (
        isinstance(value, str)
        and pattern.match(value) is not None
        and "--" not in value
        and ".." not in value
        and not value.lower().endswith(".git")
    )


def check_user_name(name: str) -> str:
    if not _name_ok(name, _USER) or name.lower() in RESERVED_NAMESPACES:
        raise BadRequest(
            f"invalid user name {_show(name)}: use 1-42 ASCII letters, digits, '_', '-' or '.', "
            "starting and ending with a letter or digit (some words are reserved)"
        )
    return name


def check_repo_name(name: str) -> str:
    if not _name_ok(name, _NAME):
        raise BadRequest(
            f"invalid repo name {_show(name)}: use 1-96 ASCII letters, digits, '_', '-' or '.', "
            "starting and ending with a letter or digit, without '--', '..' or a '.git' ending"
        )
    return name


def split_repo_id(repo_id: str) -> tuple[str, str]:
    """``"ns/name"`` -> ``("ns", "name")``, both checked. Repos always have a namespace here."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise BadRequest(f"invalid repo id {_show(repo_id)}: expected 'namespace/name'")
    ns, name = repo_id.split("/")
    check_namespace(ns)
    check_repo_name(name)
    return ns, name


def check_namespace(ns: str) -> str:
    if not _name_ok(ns, _USER) or ns.lower() in RESERVED_NAMESPACES:
        raise BadRequest(f"invalid namespace {_show(ns)}")
    return ns


def check_repo_type(repo_type: str | None) -> str:
    rt = repo_type or "model"
    if rt not in REPO_TYPES:
        raise BadRequest(f"invalid repo type {_show(rt)}: expected one of {', '.join(REPO_TYPES)}")
    return rt


def repo_key(repo_type: str, namespace: str, name: str) -> str:
    """``hub_repos.key``: ``type/namespace/name``, lower case (one repo per name, whatever its case)."""
    return f"{repo_type}/{namespace}/{name}".lower()


def repo_id_of(repo: object) -> str:
    """The repo id (``namespace/name``) of a ``hub_repos`` row."""
    return f"{repo.namespace}/{repo.name}"  # type: ignore[attr-defined]


def check_path(path: object, *, what: str = "path") -> str:
    """Return ``path`` if it is an acceptable file path inside a repo, else raise BadRequest."""
    if not isinstance(path, str) or not path:
        raise BadRequest(f"invalid {what}: empty or not a string")
    problem = path_problem(path)
    if problem:
        raise BadRequest(f"invalid {what} {_show(path)}: {problem}")
    return path


def path_problem(path: str) -> str | None:
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if len(raw) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    if path.startswith("/"):
        return "absolute paths are not allowed"
    if "\\" in path:
        return "backslashes are not allowed"
    alias = git_alias_in(path)
    if alias is not None:
        return f"{_show(alias, 40)} is a '.git' folder on some file systems (case, 8.3 names, trailing dots, streams)"
    for ch in path:
        if ch in _BIDI or unicodedata.category(ch) in _BAD_CATEGORIES:
            return "control, invisible, unassigned or bidirectional-override characters are not allowed"
        if ch in _WINDOWS_CHARS:
            return 'the characters < > : " | ? * are not allowed (Windows cannot store them)'
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS:
        return f"more than {MAX_SEGMENTS} folder levels"
    for seg in segments:
        if seg == "":
            return "empty path segment (leading, trailing or double '/')"
        if seg in (".", ".."):
            return "'.' and '..' segments are not allowed"
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes"
        if seg != seg.strip() and seg.strip() == "":
            return "blank path segment"
        if seg.endswith((".", " ")):
            return "a path segment may not end with '.' or a space (Windows drops them)"
        if _WINDOWS_DEVICE.match(seg):
            return f"{seg!r} is a device name on Windows"
    return None


def normalization_clash(paths: Iterable[str]) -> tuple[str, str] | None:
    """Two of ``paths`` that differ only by Unicode normalisation (``"e\\u0301"`` and ``"\\u00e9"``: one
    name on screen, two files), or None."""
    paths = list(paths)
    if all(p.isascii() or unicodedata.is_normalized("NFC", p) for p in paths):
        return None  # a clash needs a path that is not NFC
    seen: dict[str, str] = {}
    for p in paths:
        key = p if p.isascii() else unicodedata.normalize("NFC", p)
        other = seen.setdefault(key, p)
        if other != p:
            return other, p
    return None


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
