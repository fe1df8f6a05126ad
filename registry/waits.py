"""Reads that must not wait: the contract between the server's event loop and the registry code it runs.

``lorahub serve`` runs its SQLite reads (searches, hash lookups, the Civitai-compatible API) in its event
loop (registry/server/reads.py), where a wait holds every request of the process. Within :func:`not_waiting`, registry code that would wait
(load the model or the vector index, bring the index up to date, take a lock another thread holds, write the
database, which may wait for SQLite's write lock) raises :class:`WouldWait` before it changes anything; the
server then runs the same call in a worker thread, outside the context, where waiting is fine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_not_waiting: ContextVar[bool] = ContextVar("lorahub_not_waiting", default=False)


class WouldWait(Exception):  # noqa: N818 - named for what it says, like BlockingIOError
    """Raised within :func:`not_waiting` where the code would wait (see the module docstring)."""


@contextmanager
def not_waiting() -> Iterator[None]:
    """Within (this context only: other threads are not affected), what would wait raises :class:`WouldWait`."""
    token = _not_waiting.set(True)
    try:
        yield
    finally:
        _not_waiting.reset(token)


def check(what: str) -> None:
    """:class:`WouldWait` (saying ``what`` would wait) within :func:`not_waiting`; nothing outside."""
    if _not_waiting.get():
        raise WouldWait(what)


@contextmanager
def held(lock: threading.Lock) -> Iterator[None]:
    """``with lock``, or :class:`WouldWait` where another thread holds it within :func:`not_waiting`."""
    if not lock.acquire(blocking=not _not_waiting.get()):
        raise WouldWait("another thread holds a lock this call needs")
    try:
        yield
    finally:
        lock.release()


__all__ = ["WouldWait", "check", "held", "not_waiting"]
