"""PostgreSQL connections as the registry opens them: statements prepared only where the code asks, and
pooled connections pinged only after resting (registry/database.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testkit import create_pg_schema, drop_pg_schema, pg_admin_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    base = pg_admin_url()
    schema, url = create_pg_schema(base)
    try:
        yield url
    finally:
        drop_pg_schema(base, schema)


def _prepared(dbapi) -> list[str]:  # noqa: ANN001
    with dbapi.cursor() as cur:
        cur.execute("SELECT statement FROM pg_prepared_statements")
        return [r[0] for r in cur.fetchall()]


@pytest.mark.parametrize("opened", ["driver", "engine"])
def test_statements_are_prepared_where_asked_and_only_there(pg_url: str, opened: str) -> None:
    """``Raw.all(..., prepare=True)`` prepares the statement on the server (with psycopg's
    ``prepare_threshold=None`` it silently prepared nothing); a statement run many times without it stays
    unprepared (a generic plan would not know how rare a word is)."""
    from lorahub.registry.database import Raw, connect_driver, make_engine

    if opened == "driver":
        dbapi = connect_driver(pg_url)
        raw = Raw.on_driver(dbapi, pg_url)
        close = dbapi.close
    else:
        engine = make_engine(pg_url)
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


def test_a_busy_pooled_connection_is_not_pinged(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkouts in quick succession send no ping (``pool_pre_ping`` sent one before every request)."""
    from lorahub.registry import database

    monkeypatch.setattr(database, "PING_IDLE_S", 3600.0)
    engine = database.make_engine(pg_url)
    pings = []
    real = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or real(c))
    try:
        pids = set()
        for _ in range(10):
            with engine.connect() as conn:
                pids.add(_backend_pid(conn))
        assert pings == []
        assert len(pids) == 1  # one pooled connection, reused
    finally:
        engine.dispose()


def test_a_rested_connection_that_died_is_replaced_before_use(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pooled connection whose server process was ended while it rested: the checkout's ping finds it
    dead and the pool opens another; the caller never sees the failure."""
    from lorahub.registry import database

    monkeypatch.setattr(database, "PING_IDLE_S", 0.0)
    engine = database.make_engine(pg_url)
    try:
        with engine.connect() as conn:
            first = _backend_pid(conn)
        _terminate(first)
        with engine.connect() as conn:
            second = _backend_pid(conn)
        assert second != first
    finally:
        engine.dispose()


def test_a_connection_that_died_while_busy_fails_once(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The price of not pinging a busy connection: one that died within ``PING_IDLE_S`` fails the statement
    it is given (a clear database error, which the server answers with 503), and the next checkout gets a
    working connection."""
    from sqlalchemy import exc, text

    from lorahub.registry import database

    monkeypatch.setattr(database, "PING_IDLE_S", 3600.0)
    engine = database.make_engine(pg_url)
    try:
        with engine.connect() as conn:
            first = _backend_pid(conn)
        _terminate(first)
        with pytest.raises(exc.DBAPIError) as info, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert info.value.connection_invalidated
        with engine.connect() as conn:
            assert _backend_pid(conn) != first
    finally:
        engine.dispose()
