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

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from lorahub.adapters.header import read_header, sniff_pickle
from lorahub.adapters.pickles import HINT as PICKLE_HINT
from lorahub.adapters.pickles import PICKLE_SUFFIXES
from lorahub.adapters.pickles import REASON as PICKLE_REASON

from .blobstore import BlobCache
from .errors import BadRequest, InvalidContent

if TYPE_CHECKING:  # pragma: no cover
    from .blobstore import BlobStore
    from .trees import FileEntry

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


_CHECKS = BlobCache()


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
        raise InvalidContent(f"{path}: refused: '{PurePosixPath(path).suffix}' names a pickle file ({PICKLE_REASON}); "
                             f"{PICKLE_HINT}")


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


def check_blob(
    path: str, sha256: str, local: Path | Callable[[], AbstractContextManager[Path]], *, component: bool
) -> BlobCheck:
    """Check one committed file (``path`` in the repo, content at ``local``, or held while
    ``local()`` is: a blob stored as chunks is rebuilt only when the check is not cached). Never
    raises."""
    key = (sha256, component, is_weights_path(path))
    hit = _CHECKS.get(key)
    if hit is not None:
        return hit
    if callable(local):
        with local() as held:
            res = _check(path, held, component=component)
    else:
        res = _check(path, local, component=component)
    _CHECKS.put(key, res)
    return res


def _check(path: str, local: Path, *, component: bool) -> BlobCheck:
    if not is_weights_path(path):
        kind = looks_like_pickle(local)
        if kind:
            return BlobCheck(False, [f"refused: {kind} ({PICKLE_REASON})"])
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


def refusal_message(path: str, errors: list[str]) -> str:
    shown = "; ".join(errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{path}: invalid adapter: {shown}{more}"


def check_files(
    store: BlobStore, base: dict[str, FileEntry], files: dict[str, FileEntry]
) -> tuple[dict[str, Any] | None, list[tuple[str, int, Any, str]], str | None]:
    """Check the files of a new tree (``files``) that differ from ``base``; return (card, adapters
    [(path, size, report, sha256)], readme text). Raises :class:`InvalidContent` for a refused
    file and :class:`BadRequest` for a changed README whose metadata is invalid."""
    from lorahub.errors import YamlError
    from lorahub.hub.card import MAX_CARD_BYTES, check_card, parse_card

    tree = set(files)
    changed = [p for p, f in files.items() if base.get(p) is None or base[p].sha256 != f.sha256]
    for p in changed:
        refuse_by_name(p)
    card = None
    readme = None
    adapters: list[tuple[str, int, Any, str]] = []
    for p, f in files.items():
        is_new = p in changed
        if not is_new and not is_weights_path(p) and p != "README.md":
            continue
        component = is_model_component(p, tree)
        if is_new or is_weights_path(p):
            res = check_blob(p, f.sha256, partial(store.materialized, f.sha256), component=component)
            if not res.ok:
                if is_new:
                    if is_weights_path(p) and not component:
                        raise InvalidContent(refusal_message(p, res.errors))
                    raise InvalidContent(f"{p}: {'; '.join(res.errors[:3])}")
                continue  # an old file that newer rules refuse: kept, not indexed
            if res.is_adapter:
                adapters.append((p, f.size, res.report, f.sha256))
    if "README.md" in files:
        f = files["README.md"]
        if f.size <= MAX_CARD_BYTES:
            with store.open(f.sha256) as fh:
                text = fh.read(MAX_CARD_BYTES + 1).decode("utf-8", errors="replace")
            readme = text
            try:
                card = parse_card(text)
            except YamlError as exc:
                if "README.md" in changed:
                    raise BadRequest(str(exc)) from None
                card = None
            if card is not None and "README.md" in changed:
                errors, _ = check_card(text)
                if errors:
                    raise BadRequest("Invalid metadata in README.md: " + "; ".join(errors))
    return card, adapters, readme
