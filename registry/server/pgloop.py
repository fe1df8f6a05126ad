"""PostgreSQL reads in ``lorahub serve``'s event loop: a search's statements on psycopg's async
connections, its (synchronous) code in a greenlet.

A worker thread per PostgreSQL search cost the server process more than the search's own Python: the GIL
went to and fro between the event loop and three threads, and each hand-off moved the interpreter's working
set between the cores. Here the search's code runs in the event loop, in a greenlet (SQLAlchemy's
``greenlet_spawn``), and each of its statements (``Raw.all``) suspends the greenlet while PostgreSQL answers
(``await_only`` on an ``AsyncConnection``): the loop serves other requests meanwhile, and no thread is
involved. ``Registry.reading()`` yields that reader to the code run here (:func:`~lorahub.registry.database.lent_reader`).

The code runs within :func:`~lorahub.registry.waits.not_waiting`, as SQLite's reads in the loop do: what
would wait (loading or catching up the vector index, a lock another thread holds) raises ``WouldWait``
before it changes anything, and the caller runs the read again in a worker thread
(registry/server/reads.py). So does a request with a token (its lookup goes through the ORM's synchronous
sessions).

Connections: at most :data:`LOOP_CONNECTIONS` per event loop and database, handed to waiting reads in the
order they asked (with ``asyncio.Queue`` a waiter woken for a freed connection lost it to a request that
arrived in between and queued again at the back: the tail widened). A connection that failed, or whose
statement was cancelled midway, is closed and replaced; one that rested :data:`~lorahub.registry.database.PING_IDLE_S`
is pinged first. A connection that cannot be made or is lost answers ``RegistryError``: a 503, as the pooled
engine's.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from lorahub.registry import waits
from lorahub.registry.database import (
    PG_SESSION_SQL,
    PING_IDLE_S,
    Raw,
    driver_args,
    lent_reader,
    pg_rows,
    pg_sql,
)

T = TypeVar("T")

#: Connections per event loop and database. At 16 clients, hybrid, 100k (interleaved, 2026-12-07): 2-4 alike,
#: 5 and 6 worse (p99 37.0 against 33.7 ms with 5: the loop runs one search's Python at a time, and more
#: connections only queue more searches there).
LOOP_CONNECTIONS = 3
#: The loop's connections run only the reads of :class:`LoopRaw`, so their prepared statements (``prepare=True``:
#: only those whose best plan is the same whatever the values, registry/search.py) can run their generic plan from
#: the first run. Left to PostgreSQL (``auto``), a statement kept planning a custom plan at every run wherever the
#: generic plan's estimate looked dearer than its first five custom plans' (a rare word's few rows): over the HTTP
#: benchmark's mix, its 424 prepared statements cost 0.687 ms of the server's CPU a run custom-planned, 0.345
#: generic, for the same rows (the costliest generic plan 0.45 ms dearer, on 6.4; 100k adapters, 2026-12-07).
#: The other statements have their values bound into their text (:meth:`LoopRaw._all`): the session's generic
#: plans would not know a common filter token from a rare one.
GENERIC_PLANS_SQL = "SET plan_cache_mode = force_generic_plan"


def available() -> bool:
    """Whether greenlets are installed (the ``[postgres]`` extra), off Windows (psycopg's async connections
    need a selector event loop; Windows' default is the proactor)."""
    if sys.platform == "win32":  # pragma: no cover - platform
        return False
    try:
        import greenlet  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        return False
    return True


class LoopRaw(Raw):
    """A :class:`~lorahub.registry.database.Raw` on an ``AsyncConnection``, for code run by :func:`run`."""

    def __init__(self, conn: Any, key: str) -> None:
        self.dbapi = conn
        self.dialect = "postgresql"
        self.pg = True
        self.key = key

    def all(self, sql: str, params: dict[str, Any] | None = None, *, prepare: bool = False) -> list[Any]:
        from sqlalchemy.util import await_only

        return await_only(self._all(pg_sql(sql), dict(params or {}), prepare))

    async def _all(self, sql: str, params: dict[str, Any], prepare: bool) -> list[Any]:
        # Prepared: bound on the server, the connection's generic plan (GENERIC_PLANS_SQL). Else bound here into
        # the statement's text (psycopg's client-side binding, each value quoted by the driver), which PostgreSQL
        # then plans knowing the values, as a custom plan.
        if prepare:
            cur = self.dbapi.cursor()
        else:
            from psycopg import AsyncClientCursor

            cur = AsyncClientCursor(self.dbapi)
        try:
            await cur.execute(sql, params, prepare=prepare)
            return pg_rows(cur, await cur.fetchall())
        finally:
            await cur.close()


class _Pool:
    """One event loop's connections to one database (see the module's docstring)."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self.count = 0  # connections open or being opened
        self.idle: collections.deque[tuple[Any, float]] = collections.deque()  # (connection, since)
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.closing: set[asyncio.Task] = set()

    async def acquire(self) -> Any:
        while self.idle:
            conn, since = self.idle.pop()  # the most recently used: its backend is the warmest
            if conn.closed or conn.broken:
                self._discard(conn)
                continue
            if time.monotonic() - since >= PING_IDLE_S:
                try:
                    await conn.execute("SELECT 1")
                except Exception:  # noqa: BLE001 - any failure: the connection is replaced
                    self._discard(conn)
                    continue
            return conn
        if self.count < self.size:
            self.count += 1
            try:
                import psycopg

                conn = await psycopg.AsyncConnection.connect(**driver_args(self.url))
                try:
                    await conn.execute(PG_SESSION_SQL)
                    await conn.execute(GENERIC_PLANS_SQL)
                except BaseException:
                    await conn.close()
                    raise
                return conn
            except BaseException:
                self.count -= 1
                self._wake(None)
                raise
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            conn = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed something, then cancelled: it passes on
                handed = fut.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._wake(None)
            raise
        return conn if conn is not None else await self.acquire()  # None: a connection was closed, open one

    def release(self, conn: Any, *, failed: bool = False) -> None:
        from psycopg.pq import TransactionStatus

        if failed or conn.closed or conn.broken:
            # Lost: the server restarted or ended it, and likely the others that rest here: they go too (the
            # next reads open new ones), as the engine's pool does.
            self._discard(conn)
            while self.idle:
                self._discard(self.idle.pop()[0])
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            self._discard(conn)  # a statement cancelled midway: its state is unknown
            return
        if not self._wake(conn):
            self.idle.append((conn, time.monotonic()))

    def _wake(self, conn: Any) -> bool:
        """Hands ``conn`` (None: the right to open one) to the first reader still waiting; False if none is."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    def _discard(self, conn: Any) -> None:
        self.count -= 1
        if not conn.closed:
            task = asyncio.get_running_loop().create_task(conn.close())
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)
        self._wake(None)


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Pool]] = weakref.WeakKeyDictionary()


def _pool_for(url: str) -> _Pool:
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = {}
    pool = pools.get(url)
    if pool is None:
        pool = pools[url] = _Pool(url, LOOP_CONNECTIONS)
    return pool


async def close() -> None:
    """Close this event loop's idle connections and forget its pools (the app's shutdown, once the requests in
    flight are done): PostgreSQL sees each session end, not a reset when the process goes."""
    pools = _pools.pop(asyncio.get_running_loop(), {})
    for pool in pools.values():
        while pool.idle:
            conn, _ = pool.idle.pop()
            pool.count -= 1
            await conn.close()
        if pool.closing:
            await asyncio.gather(*pool.closing, return_exceptions=True)


def _lost(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


async def run(fn: Callable[[], T], registry: Any) -> T:
    """``fn()`` in the event loop, its ``registry.reading()`` on a connection of this loop's (see the
    module's docstring). ``WouldWait`` where it would wait; ``registry.database_error`` (a ``RegistryError``)
    where the database cannot be reached or is lost."""
    from sqlalchemy.util import greenlet_spawn

    pool = _pool_for(registry.url)
    try:
        conn = await pool.acquire()
    except Exception as exc:
        if _lost(exc):
            raise registry.database_error(exc) from exc
        raise
    raw = LoopRaw(conn, registry.reader_key)
    failed = False
    try:
        return await greenlet_spawn(_lent_run, fn, raw)
    except Exception as exc:
        if _lost(exc):
            failed = True
            raise registry.database_error(exc) from exc
        raise
    finally:
        pool.release(conn, failed=failed)


def _lent_run(fn: Callable[[], T], raw: LoopRaw) -> T:
    with lent_reader(raw), waits.not_waiting():
        return fn()


__all__ = ["GENERIC_PLANS_SQL", "LOOP_CONNECTIONS", "LoopRaw", "available", "close", "run"]
