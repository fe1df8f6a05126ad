"""PostgreSQL connections as the registry opens them: statements prepared only where the code asks, and
pooled connections pinged only after resting (registry/database.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from testkit import pg_admin_url

# the registry's db_url fixture, on PostgreSQL only
pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


@contextmanager
def _engine(url: str, monkeypatch: pytest.MonkeyPatch, idle_s: float) -> Iterator[object]:
    """The registry's pooled engine for ``url``, pinging connections that rested ``idle_s`` seconds."""
    from lorahub.registry import database

    monkeypatch.setattr(database, "PING_IDLE_S", idle_s)
    engine = database.make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _prepared(dbapi) -> list[str]:  # noqa: ANN001
    with dbapi.cursor() as cur:
        cur.execute("SELECT statement FROM pg_prepared_statements")
        return [r[0] for r in cur.fetchall()]


@pytest.mark.parametrize("opened", ["driver", "engine"])
def test_statements_are_prepared_where_asked_and_only_there(db_url: str, opened: str) -> None:
    """``Raw.all(..., prepare=True)`` prepares the statement on the server (with psycopg's
    ``prepare_threshold=None`` it silently prepared nothing); a statement run many times without it stays
    unprepared (a generic plan would not know how rare a word is)."""
    from lorahub.registry.database import Raw, connect_driver, make_engine

    if opened == "driver":
        dbapi = connect_driver(db_url)
        raw = Raw.on_driver(dbapi, db_url)
        close = dbapi.close
    else:
        engine = make_engine(db_url)
        conn = engine.connect()
        raw = Raw(conn)
        dbapi = raw.dbapi

        def close() -> None:
            conn.close()
            engine.dispose()

    try:
        for _ in range(12):
            raw.all("SELECT CAST(:x AS int) + 1 AS often", {"x": 1})
        assert not [s for s in _prepared(dbapi) if "often" in s]
        assert raw.all("SELECT CAST(:x AS int) + 2 AS asked", {"x": 1}, prepare=True)[0][0] == 3
        asked = [s for s in _prepared(dbapi) if "asked" in s]
        assert len(asked) == 1
        assert raw.all("SELECT CAST(:x AS int) + 2 AS asked", {"x": 5}, prepare=True)[0][0] == 7
        assert len([s for s in _prepared(dbapi) if "asked" in s]) == 1  # the same one, run again
    finally:
        close()


def _backend_pid(conn) -> int:  # noqa: ANN001
    from sqlalchemy import text

    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    finally:
        admin.dispose()


def test_a_busy_pooled_connection_is_not_pinged(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkouts in quick succession send no ping (``pool_pre_ping`` sent one before every request)."""
    with _engine(db_url, monkeypatch, 3600.0) as engine:
        pings = []
        real = engine.dialect.do_ping
        monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or real(c))
        pids = set()
        for _ in range(10):
            with engine.connect() as conn:
                pids.add(_backend_pid(conn))
        assert pings == []
        assert len(pids) == 1  # one pooled connection, reused


def test_a_rested_connection_that_died_is_replaced_before_use(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pooled connection whose server process was ended while it rested: the checkout's ping finds it
    dead and the pool opens another; the caller never sees the failure."""
    with _engine(db_url, monkeypatch, 0.0) as engine:
        with engine.connect() as conn:
            first = _backend_pid(conn)
        _terminate(first)
        with engine.connect() as conn:
            assert _backend_pid(conn) != first


def test_a_connection_that_died_while_busy_fails_once(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The price of not pinging a busy connection: one that died within ``PING_IDLE_S`` fails the statement
    it is given (a clear database error, which the server answers with 503), and the next checkout gets a
    working connection."""
    from sqlalchemy import exc, text

    with _engine(db_url, monkeypatch, 3600.0) as engine:
        with engine.connect() as conn:
            first = _backend_pid(conn)
        _terminate(first)
        with pytest.raises(exc.DBAPIError) as info, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert info.value.connection_invalidated
        with engine.connect() as conn:
            assert _backend_pid(conn) != first


@pytest.mark.parametrize("opened", ["driver", "engine"])
def test_connections_run_without_jit(db_url: str, opened: str) -> None:
    """Every connection the registry opens runs with JIT compilation off (database.PG_SESSION_SQL), the engine's
    too after its pool rolled a transaction back (a SET inside one would be undone): a mis-costed plan compiled
    for 18 ms to run in 1."""
    from sqlalchemy import text

    from lorahub.registry.database import connect_driver, make_engine

    if opened == "driver":
        dbapi = connect_driver(db_url)
        try:
            assert dbapi.execute("SHOW jit").fetchone()[0] == "off"
        finally:
            dbapi.close()
        return
    engine = make_engine(db_url)
    try:
        for _ in range(2):  # the same pooled connection again, after the pool's rollback
            with engine.connect() as conn:
                assert conn.execute(text("SHOW jit")).scalar() == "off"
                conn.execute(text("SELECT 1"))  # a transaction begun, rolled back on return
        with engine.begin() as conn:
            assert conn.execute(text("SHOW jit")).scalar() == "off"
    finally:
        engine.dispose()
