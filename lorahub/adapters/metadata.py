"""Rewriting the ``__metadata__`` of a safetensors file, and nothing else.

:func:`set_metadata` re-serialises the header (every tensor entry kept with its
dtype, shape and data_offsets, in file order) and copies the data region
``[8+N, EOF)`` byte for byte with the kernel's copy (``copy_file_range`` /
``sendfile``). So the tensor SHA-256 (kohya ``sshs_model_hash``, Civitai AutoV3)
is unchanged, while the whole-file hashes (SHA256, AutoV2, CRC32, BLAKE3) change
with the header. The new file replaces the target atomically: a failure at any
point leaves the original byte-identical.

Values are strings only, as the safetensors format requires. Numbers, booleans,
null, arrays and objects are refused (:class:`MetadataError`) rather than
converted: ``str(True)`` is ``"True"`` to kohya but ``"true"`` to JSON, so the
caller must say which text it means (quote it, or JSON-encode a structure into a
string).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._atomic import atomic_writer
from ..errors import AdapterFileError, InvalidAdapterError, MetadataError
from .header import SafetensorsHeader, layout_problems, read_header
from .writer import encode_header


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw ``__metadata__`` object of a safetensors file (empty when there is none)."""
    return dict(read_header(path).metadata)


def check_updates(updates: Mapping[Any, Any], *, source: str = "metadata") -> dict[str, str]:
    """Keys and values must be strings; keys non-empty. Raises :class:`MetadataError`."""
    out: dict[str, str] = {}
    for key, value in updates.items():
        if not isinstance(key, str) or not key:
            raise MetadataError(f"{source}: key {key!r} is not a non-empty string")
        if not isinstance(value, str):
            kind = {bool: "a boolean", int: "a number", float: "a number", type(None): "null",
                    list: "an array", dict: "an object"}.get(type(value), f"a {type(value).__name__}")
            raise MetadataError(
                f"{source}: value of '{key}' is {kind}, not a string",
                hint="safetensors metadata values are strings: quote it, e.g. \"1e-4\" or \"True\", "
                "or JSON-encode a structure into a string",
            )
        out[key] = value
    return out


def _check_file(header: SafetensorsHeader) -> None:
    problems = list(header.problems) + layout_problems(header)
    if problems:
        raise InvalidAdapterError(header.path, problems)


def new_metadata(
    current: Mapping[str, Any],
    updates: Mapping[str, str],
    *,
    remove: Iterable[str] = (),
    replace: bool = False,
    path: str = "",
) -> dict[str, str]:
    """The metadata after ``remove`` then ``updates`` (onto nothing when ``replace``)."""
    updates = check_updates(updates)
    remove = list(remove)
    both = sorted(set(remove) & set(updates))
    if both:
        raise MetadataError(f"'{both[0]}' is both set and removed")
    md: dict[str, Any] = {} if replace else dict(current)
    for key in remove:
        md.pop(key, None)
    md.update(updates)
    bad = [k for k, v in md.items() if not isinstance(v, str)]
    if bad:
        raise MetadataError(
            f"{path}: existing metadata value of '{bad[0]}' is a {type(md[bad[0]]).__name__}, not a string",
            hint=f"remove it (--remove {bad[0]}) or rewrite all metadata (--replace)",
        )
    return md


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int) -> None:
    """Copy ``count`` bytes of ``src_fd`` from ``offset`` to the current position of ``dst_fd``."""
    done = 0
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            while done < count:
                n = copy_file_range(src_fd, dst_fd, count - done, offset + done)
                if n == 0:
                    break
                done += n
        except OSError:  # cross-device on old kernels, unsupported file systems: fall back
            pass
    if done < count and hasattr(os, "sendfile"):
        try:
            while done < count:
                n = os.sendfile(dst_fd, src_fd, offset + done, count - done)
                if n == 0:
                    break
                done += n
        except OSError:
            pass
    if done < count:
        os.lseek(src_fd, offset + done, os.SEEK_SET)
        with open(src_fd, "rb", closefd=False) as src, open(dst_fd, "wb", closefd=False) as dst:
            remaining = count - done
            while remaining:
                block = src.read(min(remaining, 8 << 20))
                if not block:
                    break
                dst.write(block)
                remaining -= len(block)
            done = count - remaining
    if done != count:
        raise OSError(f"copied {done} of {count} data bytes: the file changed while it was copied")


def set_metadata(
    path: str | os.PathLike[str],
    updates: Mapping[str, str] | None = None,
    *,
    remove: Iterable[str] = (),
    replace: bool = False,
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Rewrite the metadata of ``path`` (in place, or into ``out``); returns the written path.

    ``remove`` deletes keys (missing keys are ignored), ``updates`` sets keys,
    ``replace`` drops every existing key first. The file must be valid (header
    and layout), else :class:`InvalidAdapterError`; values must be strings,
    else :class:`MetadataError`.
    """
    src = os.fspath(path)
    header = read_header(src)
    _check_file(header)
    md = new_metadata(header.metadata, updates or {}, remove=remove, replace=replace, path=src)
    entries = {
        t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
        for t in header.tensors.values()
    }
    new_header = encode_header(entries, md)
    target = Path(os.fspath(out)) if out is not None else Path(src)
    data_len = header.data_len
    try:
        fd = os.open(src, os.O_RDONLY)
    except OSError as exc:
        raise AdapterFileError(src, f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if st.st_size != header.file_size:
            raise MetadataError(f"{src}: the file changed while it was read; try again")
        head = os.pread(fd, 8 + header.header_len, 0)
        if len(head) != 8 + header.header_len or int.from_bytes(head[:8], "little") != header.header_len:
            raise MetadataError(f"{src}: the file changed while it was read; try again")
        try:
            with atomic_writer(target) as fh:
                fh.write(new_header)
                fh.flush()
                _copy_range(fd, fh.fileno(), header.data_start, data_len)
                fh.seek(0, os.SEEK_END)
                after = os.fstat(fd)
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                    raise MetadataError(f"{src}: the file changed while it was copied; nothing was written")
                if fh.tell() != len(new_header) + data_len:
                    raise MetadataError(f"{src}: short copy; nothing was written")
        except OSError as exc:
            raise AdapterFileError(str(target), f"cannot write: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return target


def copy_with_metadata(src: str | os.PathLike[str], dst: str | os.PathLike[str], metadata: Mapping[str, str]) -> Path:
    """``dst`` = ``src`` with its metadata replaced by ``metadata``."""
    return set_metadata(src, metadata, replace=True, out=dst)


__all__ = ["check_updates", "copy_with_metadata", "new_metadata", "read_metadata", "set_metadata"]
