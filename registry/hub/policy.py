"""What the server accepts in a commit: the checks of committed files.

Checks (run on the stored blob, before the commit lands):

* pickle files are refused: they can run code when loaded, and lorahub never unpickles. By name
  (``.ckpt``, ``.pt``, ``.pth``, ``.pkl``, ``.pickle``) and, for every other file (``.bin``
  included, which may or may not be a PyTorch pickle), by content: bytes that start a pickle
  stream or a zip archive holding a ``.pkl`` (PyTorch's format) are refused whatever the name;
* a ``.safetensors`` file is validated as an **adapter** (``validate_file``; the commit is refused
  with the validator's first messages) unless it is part of a model or pipeline: a
  ``model_index.json`` at the repo root or a ``config.json`` beside it (a diffusers pipeline such
  as the embedded SD 1.x model, a transformers model). Those only need a sound safetensors
  layout (header, offsets, metadata), and are not indexed as adapters.

The valid adapters of a repo's main head become its catalogue entry
(:func:`lorahub.registry.drafts.hub_repo_draft`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lorahub.adapters.header import PICKLE_SUFFIXES, read_header, sniff_pickle

from .errors import InvalidContent

#: Suffixes that are pickles (refused by name); ``.bin`` is judged by its content.
REFUSED_SUFFIXES = tuple(sorted(set(PICKLE_SUFFIXES) - {".bin"}))
#: Opcodes that follow ``\x80<proto>`` at the start of a pickle stream.
_PICKLE_SECOND = frozenset(b"}]()cqXK\x8c\x95\x8a\x88\x89N")

@dataclass
class BlobCheck:
    """What checking one blob found (cached by sha256 and role)."""

    ok: bool
    errors: list[str] = field(default_factory=list)
    is_adapter: bool = False
    report: Any = None  # InspectReport for adapters
    hashes: dict[str, str] | None = None


class _Lru:
    def __init__(self, size: int = 2048) -> None:
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)


_CHECKS = _Lru()
_HASHES = _Lru()


def is_weights_path(path: str) -> bool:
    return path.lower().endswith(".safetensors")


def is_model_component(path: str, tree_paths: set[str]) -> bool:
    """A ``.safetensors`` that belongs to a pipeline or model rather than being an adapter."""
    if "model_index.json" in tree_paths:
        return True
    parent = str(PurePosixPath(path).parent)
    cfg = "config.json" if parent == "." else f"{parent}/config.json"
    return cfg in tree_paths


def refuse_by_name(path: str) -> None:
    if path.lower().endswith(REFUSED_SUFFIXES):
        raise InvalidContent(
            f"{path}: refused: pickle-based files ({', '.join(REFUSED_SUFFIXES)}) can run code when loaded; "
            "convert it to .safetensors"
        )


def looks_like_pickle(local: Path) -> str | None:
    try:
        with open(local, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2] in _PICKLE_SECOND:
        return "a pickle stream"
    if head[:4] == b"PK\x03\x04":
        kind = sniff_pickle(local, head)
        if kind and "pickle" in kind:
            return kind
    return None


def check_blob(path: str, sha256: str, local: Path, *, component: bool) -> BlobCheck:
    """Check one committed file (``path`` in the repo, content at ``local``). Never raises."""
    key = (sha256, component, is_weights_path(path))
    hit = _CHECKS.get(key)
    if hit is not None:
        return hit
    res = _check(path, local, component=component)
    _CHECKS.put(key, res)
    return res


def _check(path: str, local: Path, *, component: bool) -> BlobCheck:
    if not is_weights_path(path):
        kind = looks_like_pickle(local)
        if kind:
            return BlobCheck(False, [f"refused: the file is {kind} (pickles can run code when loaded)"])
        return BlobCheck(True)
    if component:
        from lorahub.adapters.header import layout_problems
        from lorahub.errors import AdapterFileError

        try:
            header = read_header(local)
        except AdapterFileError as exc:
            return BlobCheck(False, [exc.reason])
        problems = list(header.problems) + layout_problems(header)
        problems += [
            f"metadata value of {k!r} is not a string" for k, v in header.metadata.items() if not isinstance(v, str)
        ]
        return BlobCheck(not problems, problems[:5])
    from lorahub.adapters.validate import validate_file

    rep = validate_file(local, deep=False)
    if not rep.valid:
        return BlobCheck(False, list(rep.errors))
    from lorahub.adapters.inspect import inspect_file

    try:
        report = inspect_file(local)
    except Exception as exc:  # noqa: BLE001 - valid but not inspectable: refuse with the reason
        return BlobCheck(False, [f"cannot inspect: {exc}"])
    return BlobCheck(True, is_adapter=True, report=report)


def fingerprints(sha256: str, local: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """Every fingerprint of a blob (cached by sha256; ``known`` from the registry skips hashing)."""
    hit = _HASHES.get(sha256)
    if hit is not None:
        return hit
    if known and all(known.get(k) for k in ("sha256", "blake3", "crc32")):
        out = {k: v for k, v in known.items() if v}
    else:
        from lorahub.adapters.fingerprint import fingerprint_record
        from lorahub.schemas.registry import HASH_FIELDS

        rec = fingerprint_record(os.fspath(local), use_cache=False)
        out = {k: rec[k] for k in HASH_FIELDS if rec.get(k)}
    _HASHES.put(sha256, out)
    return out


def refusal_message(path: str, errors: list[str]) -> str:
    shown = "; ".join(errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{path}: invalid adapter: {shown}{more}"
