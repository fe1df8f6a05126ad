"""Where ``lorahub serve`` runs its registry reads: the lorahub API's searches and lookups
(search_api.py) and the Civitai-compatible API's (civitai_api.py).

On SQLite the event loop runs them itself, one a loop turn in arrival order, within
:func:`lorahub.registry.waits.not_waiting`; one that would wait runs again in a worker thread. On
PostgreSQL an anonymous one runs in the event loop too, its statements awaited (pgloop.py), else in a
worker thread. See :func:`run_read` (and docs/server.md, "Where a search runs").
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from lorahub.registry import waits

from . import pgloop

T = TypeVar("T")

#: PostgreSQL reads that run in worker threads (with a token, or that would wait in the loop: pgloop.py; the
#: Civitai-compatible API's) run in at most this many at once (per process): more only
#: adds GIL contention and stretches the tail latency under load, fewer leaves the process waiting on
#: PostgreSQL's round trips (four or five a hybrid search at first; three with the postings). At 16 clients,
#: hybrid, 100k (2026-12-06, interleaved): 3 threads p99 47.1-48.9 ms, 2 52.4-52.8, 4 48.5-52.8, 6 53.9-54.5,
#: 8 59.3-59.5; in the event loop (below) 58-70 against 40-49 ms with threads (2026-12-07): the loop would idle
#: through the round trips.
SEARCH_THREADS_POSTGRES = 3
#: Threads for SQLite reads that cannot run in the event loop (:func:`run_read`).
SEARCH_THREADS = 2
_limiters: dict[bool, anyio.CapacityLimiter] = {}  # PostgreSQL or not -> this process's limiter


class _Turns:
    """Runs functions in the event loop one a loop turn, in the order they were asked for (see
    :func:`run_read`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.busy = False  # a function ran this turn, or the turn is a woken waiter's
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    async def run(self, fn: Callable[[], Any]) -> Any:
        if self.busy:
            fut = self.loop.create_future()
            self.waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():  # woken, then cancelled: the turn passes on
                    self.loop.call_soon(self._next)
                raise
        else:
            self.busy = True
        try:
            return fn()
        finally:
            self.loop.call_soon(self._next)  # runs after the loop has polled the sockets again

    def _next(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():  # a cancelled waiter is done
                fut.set_result(None)  # the turn is its: busy stays set
                return
        self.busy = False


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = weakref.WeakKeyDictionary()


async def in_worker_thread(fn: Callable[[], T], st: Any) -> T:
    postgres = st.registry.dialect == "postgresql"
    limiter = _limiters.get(postgres)
    if limiter is None:
        limiter = _limiters[postgres] = anyio.CapacityLimiter(SEARCH_THREADS_POSTGRES if postgres else SEARCH_THREADS)
    return await anyio.to_thread.run_sync(fn, limiter=limiter)


async def run_read(fn: Callable[[], T], st: Any, *, light: bool = True, anonymous: bool = False) -> T:
    """``fn()`` (a search or lookup, with its JSON where the route serialises it there): on SQLite in the
    event loop, one a loop turn, in the order they came (:class:`_Turns`):
    the loop reads the sockets between two reads, so a request that arrives mid-burst waits for the reads
    asked for before it, not for every read of the turn it missed.

    Why not threads on SQLite: the search is this process's own CPU (SQLite runs in it), so threads only
    hand the GIL to and fro, about 16 context switches a request, and each hand-off moves the interpreter's
    working set between cores (the same threads pinned to one core cost 1.35 ms a request against 1.73).
    At 16 clients, hybrid, 100k, interleaved (2026-12-07, 6 runs each, benchmarks/README.md): server CPU
    1.83 -> 1.18 ms a request, p99 36.9 -> 27.5 ms (medians), every run lower. Running each search straight
    away in its request's task (no turns) cost as little CPU but no less tail than threads: a request read
    just after a turn began waited for the whole turn.

    A read that would wait (:mod:`lorahub.registry.waits`: load or update the vector index or the model,
    wait for a thread that does, write a token's last use or create a server secret) is run again in a
    worker thread: the loop never waits for it. ``light=False`` (what the caller's parameters say costs
    more than a few milliseconds: a deep page, a listing of 100 models, a batch of hashes) runs in a worker
    thread at once: a loop turn stays short, whatever a stranger asks for.

    On PostgreSQL ``fn`` runs in the event loop too where ``anonymous`` (no token to look up: that goes
    through the ORM's synchronous sessions) and light: in a greenlet whose statements the loop awaits
    (:mod:`.pgloop`), or again in a worker thread where it would wait; else in a worker thread. Against three
    worker threads, interleaved at 16 clients, hybrid, 100k (2026-12-07, medians of 4 runs, benchmarks/README.md):
    server CPU 1.16 -> 0.93 ms a request, p50 24.0 -> 19.7 ms, p99 35.6 -> 31.0 ms."""
    if st.registry.dialect == "postgresql":
        if light and anonymous and pgloop.available():
            try:
                return await pgloop.run(fn, st.registry)
            except waits.WouldWait:
                pass
        return await in_worker_thread(fn, st)
    if not light:
        return await in_worker_thread(fn, st)
    loop = asyncio.get_running_loop()
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = _Turns(loop)
    try:
        return await turns.run(lambda: _not_waiting(fn))
    except waits.WouldWait:
        return await in_worker_thread(fn, st)


def _not_waiting(fn: Callable[[], T]) -> T:
    with waits.not_waiting():
        return fn()


__all__ = ["SEARCH_THREADS", "SEARCH_THREADS_POSTGRES", "in_worker_thread", "run_read"]
