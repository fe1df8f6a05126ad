"""PostgreSQL searches in ``lorahub serve``'s event loop (registry/server/pgloop.py): the search's code in a
greenlet, its statements on psycopg's async connections, which the loop awaits. The answers are the worker
threads' own; the connections are bounded, handed over in the order asked, and replaced when lost or left
mid-statement; a lost database answers 503 and the next request recovers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lorahub.registry import semantic
from lorahub.registry.server import pgloop
from lorahub.schemas.registry import AdapterRecord

pytestmark = pytest.mark.postgres


def _rec(i: int, name: str, tags: list[str], description: str, base: str = "SD 1.5") -> AdapterRecord:
    return AdapterRecord(source="civitai", id=str(i), name=name, tags=tags, description=description, base_model=base,
                         downloads=100 * i, files=[{"name": f"f{i}.safetensors", "hashes": {"sha256": f"{i:064x}"}}])


RECORDS = [_rec(i, name, tags, desc, base) for i, (name, tags, desc, base) in enumerate([
    ("Ghoul Gallery", ["horror", "monster"], "Spooky monsters, zombies and ghouls in a dark gallery.", "SD 1.5"),
    ("Steel Titans", ["mecha", "robot"], "Giant fighting robots and titans of steel.", "SDXL 1.0"),
    ("Sumi-e Brushwork", ["ink", "monochrome"], "Traditional East Asian ink wash painting.", "SD 1.5"),
    ("Neon Alley", ["cyberpunk", "city"], "Rainy neon streets at night, a lone robot.", "SDXL 1.0"),
    ("Paper Ghosts", ["horror", "paper"], "Ghosts cut from paper, monochrome shadows.", "SD 2.1"),
], 1)]


@pytest.fixture
def hub(tmp_path: Path):  # noqa: ANN201 - a LocalHub on a fresh PostgreSQL database
    from hubkit import drop_pg_database, fresh_pg_database, start_local_hub

    semantic.reset_cache()
    url = fresh_pg_database()
    srv = start_local_hub(tmp_path / "hub", url, "postgres")
    srv.registry.import_records(RECORDS)
    yield srv
    srv.close()
    drop_pg_database(url)
    semantic.reset_cache()


QUERIES = [
    {"q": "monsters"}, {"q": "creepy undead beings", "mode": "semantic"}, {"q": "giant robots", "mode": "hybrid"},
    {"q": "ghosts", "base": "sd2"}, {"q": "robot", "tag": "city"}, {"q": "qwertyuiop"}, {"q": "ink", "sort": "newest"},
    {"q": "horror", "mode": "keyword", "limit": 1, "page": 2}, {"base": "sdxl"},
    # values bound into the statements' text on the loop (pgloop.LoopRaw._all): quotes, backslashes, placeholders
    {"q": "paper ghosts'); DROP TABLE adapters; --", "mode": "keyword"}, {"q": "o'brien \\ %s %(q)s $1", "tag": "it's"},
    {"q": "horror", "author": "x' OR '1'='1", "license": "\\'"}, {"tag": ["horror", "ink'\"'"], "sort": "downloads"},
]


def _answers(hub) -> list:  # noqa: ANN001
    out = []
    for params in QUERIES:
        r = hub.request("GET", "/api/lorahub/search", user=None, params=params)
        assert r.status_code == 200, (params, r.text)
        out.append(r.json())
    r = hub.request("GET", "/api/lorahub/by-hash/" + f"{3:064x}", user=None)
    assert r.status_code == 200, r.text
    out.append(r.json())
    return out


def _statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Where each statement on a loop connection ran: "loop" (the event loop's thread) or "thread"."""
    seen: list[str] = []
    real = pgloop.LoopRaw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        try:
            asyncio.get_running_loop()
            seen.append("loop")
        except RuntimeError:
            seen.append("thread")
        return real(self, sql, params, **kw)

    monkeypatch.setattr(pgloop.LoopRaw, "all", spy)
    return seen


def test_anonymous_searches_run_on_the_loops_connections_and_answer_what_threads_answer(hub, monkeypatch) -> None:  # noqa: ANN001
    _answers(hub)  # the index loaded (in a thread: loading would hold the loop)
    seen = _statements(monkeypatch)
    in_loop = _answers(hub)
    assert len(seen) >= len(QUERIES) and set(seen) == {"loop"}  # each search's statements on the loop's connections...
    with monkeypatch.context() as m:
        m.setattr(pgloop, "available", lambda: False)  # every read in a worker thread, as before
        seen.clear()
        in_threads = _answers(hub)
        assert not seen
    assert in_loop == in_threads
    assert any(in_loop[:-1]) and in_loop[0][0]["name"] == "Ghoul Gallery"
    assert hub.registry.count() == len(RECORDS)  # the hostile values were values
    # ... and a request with a token in a worker thread (its lookup uses the ORM's synchronous sessions)
    r = hub.request("GET", "/api/lorahub/search", user="alice", params=QUERIES[0])
    assert r.status_code == 200 and r.json() == in_loop[0] and len(seen) == 0


def test_prepared_statements_run_generic_plans_the_others_plans_of_their_values(hub) -> None:  # noqa: ANN001
    """The loop's connections run JIT off as the engine's do (database.PG_SESSION_SQL), and their prepared
    statements (the search's ``prepare=True``: plans that do not depend on the values) their generic plan from the
    first run (pgloop.GENERIC_PLANS_SQL): no custom plan is ever made for them, though a rare word's custom plans
    looked cheaper to PostgreSQL. A statement not prepared has its values bound into its text, so that PostgreSQL
    plans it knowing them (its plan shows the values, not ``$1``)."""
    from lorahub.schemas.registry import SearchQuery

    registry = hub.registry
    queries = [SearchQuery(query=w, mode="keyword") for w in ("monsters", "robot", "ink", "horror", "paper ghosts")]

    def searches() -> list:
        return [[r.id for r in registry.search(q)] for q in queries * 3]

    def session() -> tuple[list, str, str, int]:
        with registry.reading() as raw:
            prepared = raw.all("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
            settings = raw.all("SELECT current_setting('jit') AS jit, current_setting('plan_cache_mode') AS mode, "
                               "pg_backend_pid() AS pid")[0]
            raw.all("SELECT a.id FROM adapters a WHERE a.name_norm = :qn AND a.downloads > :d", {"qn": "paper ghosts", "d": 3})
        return prepared, settings.jit, settings.mode, settings.pid

    async def main() -> tuple[list, tuple]:
        answers = await pgloop.run(searches, registry)
        pool = pgloop._pool_for(registry.url)
        seen = await pgloop.run(session, registry)
        with registry.reading() as raw:  # (another connection) the text the loop's connection last ran
            text = raw.all("SELECT query FROM pg_stat_activity WHERE pid = :pid", {"pid": seen[3]})[0][0]
        for conn, _ in list(pool.idle):
            await conn.close()
        return answers, (*seen, text)

    answers, (prepared, jit, mode, _, text) = asyncio.run(main())
    assert answers == searches()  # the engine's answers (custom plans, server-side binding)
    assert jit == "off" and mode == "force_generic_plan"
    assert prepared and all(p.generic_plans > 0 and p.custom_plans == 0 for p in prepared), prepared
    assert "name_norm = 'paper ghosts' AND a.downloads > 3" in text and "$1" not in text, text


def test_connections_are_bounded_and_handed_over_in_the_order_asked(hub) -> None:  # noqa: ANN001
    """Two connections for six reads at once: a freed connection goes straight to the first read still waiting
    (never back to the idle ones, where a newcomer could take it), so a read that asks right after a release
    comes after every read that was waiting; none is opened beyond two."""
    url = hub.registry.url

    async def main() -> tuple[list[int], list[bool], int, int]:
        pool = pgloop._Pool(url, 2)
        order: list[int] = []
        handed: list[bool] = []  # a release while reads waited: the connection went to one of them
        backends: set[int] = set()
        late: list[asyncio.Task] = []

        async def read(i: int, hold: float) -> None:
            conn = await pool.acquire()
            order.append(i)
            backends.add(conn.info.backend_pid)
            await asyncio.sleep(hold)
            waiting = any(not f.done() for f in pool.waiters)
            pool.release(conn)
            if waiting:
                handed.append(not pool.idle)
            if i == 0:
                late.append(asyncio.create_task(read(99, 0)))  # asks right after a release

        await asyncio.gather(*(read(i, 0.05) for i in range(6)))
        await asyncio.gather(*late)
        count = pool.count
        for conn, _ in list(pool.idle):
            await conn.close()
        return order, handed, count, len(backends)

    order, handed, count, backends = asyncio.run(main())
    # (the first two open a connection each, which may come up in either order)
    assert sorted(order[:2]) == [0, 1] and order[2:] == [2, 3, 4, 5, 99], order
    assert handed and all(handed), handed
    assert count == 2 and backends == 2


def test_a_read_cancelled_mid_statement_stops_it_and_leaves_a_usable_connection(hub) -> None:  # noqa: ANN001
    """A search whose request is cancelled while PostgreSQL runs its statement: the cancellation does not wait
    for the statement, the statement stops on the server (psycopg cancels it there), and the next read, on the
    pool's connection, answers its own statement, not the cancelled one's leftovers. (A connection left in
    any state but idle would be closed and replaced: ``_Pool.release``.)"""
    registry = hub.registry

    def slow() -> list:
        with registry.reading() as raw:
            return raw.all("SELECT pg_sleep(5)")

    def probe() -> tuple[int, int]:
        with registry.reading() as raw:
            row = raw.all("SELECT pg_backend_pid() AS pid, (SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                          "AND query LIKE 'SELECT pg_sleep%') AS sleeping")[0]
            return row.pid, row.sleeping

    async def main() -> tuple[int, tuple[int, int], int]:
        task = asyncio.create_task(pgloop.run(slow, registry))
        await asyncio.sleep(0.3)
        task.cancel()
        t = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - t
        pool = pgloop._pool_for(registry.url)
        after = await pgloop.run(probe, registry)
        count = pool.count
        for conn, _ in list(pool.idle):
            await conn.close()
        return int(took * 1000), after, count

    took_ms, (_, sleeping), count = asyncio.run(main())
    assert took_ms < 2000  # the cancellation did not wait for the statement
    assert sleeping == 0  # stopped on the server
    assert count == 1  # one connection, reused or replaced, none leaked


def test_a_lost_connection_answers_503_and_the_next_request_recovers(hub) -> None:  # noqa: ANN001
    """PostgreSQL ends the loop's connections (a restart, an administrator): a search on one that rested less
    than a second fails with the database's 503 (no URL in it); the next opens a new connection and answers.
    One that rested longer is pinged first and replaced without a failed request."""
    from sqlalchemy import text

    from lorahub.registry.server.app import DB_UNAVAILABLE

    assert _answers(hub)  # the loop's connections opened

    def kill() -> None:
        with hub.registry.engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                              "AND pid <> pg_backend_pid()"))
            conn.commit()
        hub.registry.engine.dispose()

    kill()
    r = hub.request("GET", "/api/lorahub/search", user=None, params=QUERIES[0])
    assert r.status_code == 503 and r.json()["error"] == DB_UNAVAILABLE, r.text
    assert "postgresql" not in r.text and r.headers["retry-after"]
    statuses = [hub.request("GET", "/api/lorahub/search", user=None, params=QUERIES[0]).status_code for _ in range(4)]
    assert statuses == [200] * 4
    kill()
    time.sleep(pgloop.PING_IDLE_S + 0.2)
    statuses = [hub.request("GET", "/api/lorahub/search", user=None, params=q).status_code for q in QUERIES]
    assert statuses == [200] * len(QUERIES)


def test_the_apps_shutdown_closes_the_loops_connections(hub) -> None:  # noqa: ANN001
    """At the app's shutdown (its lifespan's end) the loop's idle connections are closed and its pools forgotten:
    PostgreSQL sees those sessions end (their backends gone), not a reset when the process goes."""
    from lorahub.registry.server.app import _lifespan

    registry = hub.registry

    def pid() -> int:
        with registry.reading() as raw:
            return raw.all("SELECT pg_backend_pid() AS pid")[0].pid

    def alive(pids: set[int]) -> set[int]:
        with registry.reading() as raw:  # (the engine's connection, not the loop's)
            return {r.pid for r in raw.all("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:p)", {"p": list(pids)})}

    async def main() -> tuple[set[int], set[int], bool, list]:
        async with _lifespan(None):
            pids = set(await asyncio.gather(*(pgloop.run(pid, registry) for _ in range(3))))
            before = alive(pids)
            conns = [c for pool in pgloop._pools[asyncio.get_running_loop()].values() for c, _ in pool.idle]
        for _ in range(50):  # a backend leaves pg_stat_activity as it exits
            if not alive(pids):
                break
            await asyncio.sleep(0.05)
        return pids, before, bool(pgloop._pools.get(asyncio.get_running_loop())), conns

    pids, before, pooled, conns = asyncio.run(main())
    assert before == pids and len(pids) >= 1 and len(conns) == len(pids)
    assert all(c.closed for c in conns) and not alive(pids) and not pooled
