"""Unpack a zip someone else made, within bounds: the one zip extractor of lorahub.

A member is written only when its name is a plain relative path (:func:`member_parts`): never
absolute, never climbing (``..``), no hidden part (``.git``, ``.DS_Store``), no macOS resource forks
(``__MACOSX``), no part that is a ``.git`` folder on some file system (``git~1``, ``.GIT.``, names
with the code points HFS+ ignores: :func:`lorahub.hub.paths.is_git_alias`), no NUL. The number of
members, their total size and each large member's compression ratio (zip bombs) are checked on the
whole listing before anything is written, and the sizes again on the bytes as they are decompressed.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError
from .hub.paths import is_git_alias

#: Default bounds: members kept, their total uncompressed size, and the compression ratio of any member
#: over 1 MiB.
MAX_FILES = 1000
MAX_BYTES = 2 << 30
MAX_RATIO = 100


def member_parts(name: str) -> tuple[str, ...] | None:
    """The parts of a zip member's name, or None for one never written: a folder, a path that is absolute
    or climbs (``..``), a hidden part (``.git``, ``.DS_Store``), macOS resource forks, a ``.git`` alias."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return None
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if not parts or norm.endswith("/"):
        return None
    for p in parts:
        if p == ".." or p.startswith(".") or p == "__MACOSX" or "\x00" in p or is_git_alias(p):
            return None
    return parts


def extract_zip(zf: zipfile.ZipFile, dest: Path, *, keep: Callable[[str], bool] | None = None,
                max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES, max_ratio: float = MAX_RATIO) -> int:
    """Extract the members of ``zf`` that :func:`member_parts` accepts (and ``keep``, given the name's
    lower-case suffix) into ``dest``; returns the file count. Bounds as in the module docstring."""
    root = dest.resolve()
    chosen = []
    total = 0
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = member_parts(info.filename)
        if parts is None or (keep is not None and not keep(Path(parts[-1]).suffix.lower())):
            continue
        if info.file_size > (1 << 20) and info.file_size > max_ratio * max(info.compress_size, 1):
            raise UsageError(f"{info.filename}: compressed {info.file_size // max(info.compress_size, 1)}:1, "
                             "refused (a zip bomb?)")
        total += info.file_size
        chosen.append((info, parts))
        if len(chosen) > max_files:
            raise UsageError(f"the zip holds more than {max_files} files")
        if total > max_bytes:
            raise UsageError(f"the zip unpacks to more than {max_bytes >> 20} MiB")
    written = 0
    for info, parts in chosen:
        target = (root / Path(*parts)).resolve()
        if root not in target.parents:  # pragma: no cover - member_parts already refuses these
            raise UsageError(f"{info.filename}: the zip names a path outside its folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            left = info.file_size
            while chunk := src.read(1 << 20):
                left -= len(chunk)
                written += len(chunk)
                if left < 0 or written > max_bytes:
                    raise UsageError(f"{info.filename}: unpacks to more than it declares")
                dst.write(chunk)
    return len(chosen)


def extract_zip_file(path: str | os.PathLike[str], dest: Path, *, keep: Callable[[str], bool] | None = None,
                     **bounds: float) -> int:
    """:func:`extract_zip` of the zip file at ``path``; a file that is not a readable zip is a
    :class:`~lorahub.errors.UsageError` naming only the file's name."""
    try:
        with zipfile.ZipFile(path) as zf:
            return extract_zip(zf, dest, keep=keep, **bounds)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError):
        raise UsageError(f"{Path(path).name}: not a readable zip file") from None


__all__ = ["MAX_BYTES", "MAX_FILES", "MAX_RATIO", "extract_zip", "extract_zip_file", "member_parts"]
