"""Pickle refusal, in one place: which names are pickles, and the one message every refusal reads.

lorahub never unpickles anything: pickle formats (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ``.pkl``,
``.pickle``) run code when loaded. A file is refused by its name here (:func:`refuse_pickle_name`),
or by its bytes when it is read (:func:`lorahub.adapters.header.read_header`, whatever its name);
every refusal is a :class:`~lorahub.errors.PickleRefusedError` built by :func:`pickle_refusal`:
``<file>: refused: <what> (pickle formats can run code when loaded; lorahub never unpickles)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PickleRefusedError

#: Suffixes of pickle-based weight files (compared lower-case).
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
#: Why, in every refusal.
REASON = "pickle formats can run code when loaded; lorahub never unpickles"
#: What to do instead, unless the caller knows better.
HINT = "convert it to .safetensors with a tool you trust"


def is_pickle_name(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` ends in a pickle suffix (:data:`PICKLE_SUFFIXES`)."""
    return os.fspath(name).lower().endswith(PICKLE_SUFFIXES)


def pickle_refusal(subject: str | os.PathLike[str], what: str, *, hint: str | None = HINT) -> PickleRefusedError:
    """The error for refusing ``subject`` (a file, a folder, a package member): ``what`` says what it is."""
    return PickleRefusedError(os.fspath(subject), f"refused: {what} ({REASON})", hint=hint)


def refuse_pickle_name(path: str | os.PathLike[str], *, subject: str | None = None, hint: str | None = HINT) -> None:
    """Raise :class:`PickleRefusedError` when ``path``'s name is a pickle's (nothing is read).
    ``subject``: how the file is named in the message (default: the path)."""
    p = Path(path)
    if is_pickle_name(p.name):
        raise pickle_refusal(subject if subject is not None else p, f"'{p.suffix}' names a pickle file", hint=hint)


__all__ = ["HINT", "PICKLE_SUFFIXES", "REASON", "is_pickle_name", "pickle_refusal", "refuse_pickle_name"]
