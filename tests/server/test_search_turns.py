"""How ``lorahub serve`` runs its registry reads (registry/server/reads.py ``run_read``: the search API's and
the Civitai-compatible API's): on SQLite in the event loop, one a loop turn in the order they came
(``_Turns``), a read that would wait (registry/waits.py: index or model work, a held lock, a write) handed to
a worker thread; on PostgreSQL the search API's anonymous reads the same, their statements awaited on the
loop's connections, the others in worker threads. The loop is never held: other requests are answered
meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from lorahub.registry import semantic, waits
from lorahub.registry.server.reads import _Turns
from lorahub.schemas.registry import AdapterRecord


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest):  # noqa: ANN201 - an event loop
    if request.param == "uvloop":
        import uvloop  # the server's loop (the [server] extra installs it)

        lp = uvloop.new_event_loop()
    else:
        lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def test_turns_run_one_function_a_loop_turn_in_the_order_asked(loop) -> None:  # noqa: ANN001
    """Five searches asked for at once run one a loop turn, in order; a request that arrives while the first
    runs is read before the second starts (running all five straight away would read it after the fifth)."""
    turns = _Turns(loop)
    log: list[tuple] = []
    ticks = [0]
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    loop.add_reader(reader.fileno(), lambda: log.append(("read", reader.recv(16))))

    def tick() -> None:  # counts the loop's turns
        ticks[0] += 1
        if len([e for e in log if e[0] == "run"]) < 5:
            loop.call_soon(tick)

    def search(i: int):  # noqa: ANN202
        def run() -> int:
            log.append(("run", i, ticks[0]))
            if i == 0:
                writer.send(b"next request")
            return i * 10

        return run

    async def main() -> list[int]:
        loop.call_soon(tick)
        return await asyncio.gather(*(turns.run(search(i)) for i in range(5)))

    try:
        assert loop.run_until_complete(main()) == [0, 10, 20, 30, 40]
    finally:
        loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()
    runs = [e for e in log if e[0] == "run"]
    assert [e[1] for e in runs] == [0, 1, 2, 3, 4]
    assert len({e[2] for e in runs}) == 5, runs  # each in a turn of its own
    assert log[1] == ("read", b"next request"), log  # the socket was read between the first and the second
    assert not turns.busy and not turns.waiters


def test_a_failing_or_cancelled_search_passes_the_turn_on(loop) -> None:  # noqa: ANN001
    """A search that raises, a waiter cancelled before its turn (its client went away) and one cancelled just
    after it was woken do not keep the searches behind them waiting."""
    turns = _Turns(loop)
    ran: list[object] = []
    tasks: dict[str, asyncio.Task] = {}
    woke = turns._next

    def next_then_cancel() -> None:  # the turn's first hand-over wakes "woken", whose client then goes away
        turns._next = woke
        woke()
        tasks["woken"].cancel()

    turns._next = next_then_cancel

    def boom() -> None:
        ran.append("boom")
        raise ValueError("search failed")

    async def main() -> list:
        tasks["failing"] = asyncio.ensure_future(turns.run(boom))
        tasks["woken"] = asyncio.ensure_future(turns.run(lambda: ran.append("woken")))
        tasks["waiting"] = asyncio.ensure_future(turns.run(lambda: ran.append("waiting")))
        tasks["last"] = asyncio.ensure_future(turns.run(lambda: ran.append("last") or "done"))
        await asyncio.sleep(0)  # the four have started: "failing" ran, the others wait
        tasks["waiting"].cancel()
        return await asyncio.gather(*tasks.values(), return_exceptions=True)

    out = loop.run_until_complete(asyncio.wait_for(main(), 5))
    assert isinstance(out[0], ValueError)
    assert isinstance(out[1], asyncio.CancelledError) and isinstance(out[2], asyncio.CancelledError)
    assert out[3] == "done"
    assert ran == ["boom", "last"]
    assert not turns.busy and not turns.waiters


def _rec(i: int, name: str, tags: list[str], description: str) -> AdapterRecord:
    return AdapterRecord(source="t", id=str(i), name=name, tags=tags, description=description, base_model="SD 1.5",
                         files=[{"name": f"f{i}.safetensors", "hashes": {"sha256": hashlib.sha256(str(i).encode()).hexdigest()}}])


RECORDS = [
    _rec(1, "Ghoul Gallery", ["horror", "creature"], "Creepy undead beings for dark scenes."),
    _rec(2, "Steel Titans", ["mecha", "robot"], "Huge piloted war machines."),
    _rec(3, "Sumi-e Brushwork", ["ink", "monochrome"], "Traditional East Asian ink wash painting."),
]
QUERY = {"q": "creepy undead beings", "mode": "semantic"}


def _spied(hub, monkeypatch: pytest.MonkeyPatch, target: object = None, name: str = "search") -> list[tuple[str, str]]:  # noqa: ANN001 - a LocalHub
    """(where, outcome) of every call of the server's ``registry.search`` (or ``target.name``): "loop" (the
    event loop's thread) or "thread"; "ok", "wait" (:class:`waits.WouldWait`) or "error" (another exception)."""
    calls: list[tuple[str, str]] = []
    target = hub.registry if target is None else target
    method = getattr(target, name)

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            asyncio.get_running_loop()
            where = "loop"
        except RuntimeError:
            where = "thread"
        try:
            out = method(*args, **kwargs)
        except waits.WouldWait:
            calls.append((where, "wait"))
            raise
        except Exception:
            calls.append((where, "error"))
            raise
        calls.append((where, "ok"))
        return out

    monkeypatch.setattr(target, name, spy)
    return calls


@pytest.fixture
def hub(tmp_path: Path, request: pytest.FixtureRequest):  # noqa: ANN201 - a LocalHub
    from hubkit import drop_pg_database, fresh_pg_database, start_local_hub

    semantic.reset_cache()
    backend = getattr(request, "param", "sqlite")
    url = fresh_pg_database() if backend == "postgres" else None
    srv = start_local_hub(tmp_path / "hub", url, backend)
    srv.registry.import_records(RECORDS)
    yield srv
    srv.close()
    if url:
        drop_pg_database(url)
    semantic.reset_cache()


def _names(hub, **params) -> list[str]:  # noqa: ANN001, ANN003
    r = hub.request("GET", "/api/lorahub/search", user=None, params=params)
    assert r.status_code == 200, r.text
    return [h["name"] for h in r.json()]


def test_sqlite_searches_run_in_the_loop_and_hand_index_work_to_a_thread(hub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    calls = _spied(hub, monkeypatch)
    assert _names(hub, **QUERY)[0] == "Ghoul Gallery"
    assert calls == [("loop", "wait"), ("thread", "ok")]  # this process had not loaded the index
    calls.clear()
    assert _names(hub, **QUERY)[0] == "Ghoul Gallery"
    assert _names(hub, q="titans") == ["Steel Titans"]
    assert calls == [("loop", "ok"), ("loop", "ok")]
    calls.clear()
    hub.registry.import_records([_rec(4, "Zombie Parade", ["horror"], "Creepy undead beings marching.")])
    assert "Zombie Parade" in _names(hub, **QUERY)  # the write moved the counter: caught up in a thread
    assert _names(hub, **QUERY) == _names(hub, **QUERY)
    assert calls == [("loop", "wait"), ("thread", "ok"), ("loop", "ok"), ("loop", "ok")]


def test_the_loop_answers_while_another_thread_holds_the_index(hub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """The attack: a search arriving while the index is being caught up or rebuilt (a write, then a flood of
    searches) must not hold the event loop until that ends; the other requests go on being answered."""
    _names(hub, **QUERY)  # index loaded
    calls = _spied(hub, monkeypatch)
    with hub.registry.reading() as raw:
        lock = semantic._slot_for(raw, semantic.embedder()).lock
    lock.acquire()
    release = threading.Timer(3.0, lock.release)  # a loop that waited would wait this long
    release.start()
    answer: dict[str, list[str]] = {}
    pending = threading.Thread(target=lambda: answer.update(names=_names(hub, **QUERY)))
    pending.start()
    try:
        deadline = time.monotonic() + 2.5
        while ("thread", "ok") not in calls and ("loop", "wait") not in calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == [("loop", "wait")]  # handed to a thread, which waits for the lock
        t = time.monotonic()
        health = hub.request("GET", "/api/lorahub/health", user=None)
        took = time.monotonic() - t
        assert health.status_code == 200 and took < 1.0, took
        assert pending.is_alive()
    finally:
        release.join()
        pending.join(10)
    assert answer["names"][0] == "Ghoul Gallery"
    assert calls == [("loop", "wait"), ("thread", "ok")]


@pytest.mark.postgres
@pytest.mark.parametrize("hub", ["postgres"], indirect=True)
def test_postgres_searches_run_in_the_loop_and_with_a_token_in_a_thread(hub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """On PostgreSQL an anonymous search runs in the loop too, its statements awaited on the loop's own
    connections (registry/server/pgloop.py, tests/server/test_pgloop.py), loading the index in a thread
    first; with a token (looked up through the ORM's synchronous sessions) in a worker thread."""
    calls = _spied(hub, monkeypatch)
    for _ in range(3):
        assert _names(hub, **QUERY)[0] == "Ghoul Gallery"
    assert calls == [("loop", "wait"), ("thread", "ok"), ("loop", "ok"), ("loop", "ok")]
    calls.clear()
    r = hub.request("GET", "/api/lorahub/search", user="alice", params=QUERY)
    assert r.status_code == 200 and r.json()[0]["name"] == "Ghoul Gallery", r.text
    assert calls == [("thread", "ok")]


def test_a_token_whose_last_use_is_due_is_written_from_a_thread(hub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A token's last use is written at most once a minute; that write may wait for SQLite's write lock (a
    commit in progress), so the request that is due to write it runs in a worker thread; the next ones run in
    the loop."""
    from sqlmodel import select

    from lorahub.registry.tables import Token, hash_token

    _names(hub, **QUERY)  # index loaded
    calls = _spied(hub, monkeypatch)

    def last_used():  # noqa: ANN202
        with hub.registry.engine.connect() as conn:
            return conn.execute(select(Token.last_used_at).where(Token.token_hash == hash_token(hub.tokens["alice"]))).scalar_one()

    assert last_used() is None
    for _ in range(3):
        r = hub.request("GET", "/api/lorahub/search", user="alice", params=QUERY)
        assert r.status_code == 200 and r.json()[0]["name"] == "Ghoul Gallery", r.text
    assert calls == [("thread", "ok"), ("loop", "ok"), ("loop", "ok")]  # the first never reached the search in the loop
    assert last_used() is not None


def test_sqlite_checkouts_never_wait(hub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Requests in worker threads holding many connections (a burst of Hub API calls) do not make a search in
    the loop wait for one of theirs: SQLite's pool has no cap (it had 15, then a 30 s wait)."""
    _names(hub, **QUERY)
    calls = _spied(hub, monkeypatch)
    held = [hub.registry.engine.connect() for _ in range(40)]
    try:
        t = time.monotonic()
        assert _names(hub, **QUERY)[0] == "Ghoul Gallery"
        assert time.monotonic() - t < 5
        assert calls == [("loop", "ok")]
    finally:
        for conn in held:
            conn.close()


def test_civitai_reads_run_in_the_loop_and_create_the_id_key_from_a_thread(hub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """The Civitai-compatible API's reads take the same path. Its public ids are encoded with a server secret
    created on first use, a write (SQLite's write lock): that first request runs in a worker thread."""
    civitai = hub.app.state.lorahub.civitai
    calls = _spied(hub, monkeypatch, civitai, "model")
    for _ in range(3):
        r = hub.request("GET", "/api/v1/models/123456789", user=None)
        assert r.status_code == 404, r.text
    assert calls == [("loop", "wait"), ("thread", "error"), ("loop", "error"), ("loop", "error")]  # NotFound
    found = _spied(hub, monkeypatch, civitai, "by_hashes")
    r = hub.request("GET", "/api/v1/model-versions/by-hash/" + "ab" * 32, user=None)
    assert r.status_code == 404 and found == [("loop", "ok")]


def test_costly_reads_go_to_a_thread_at_once(hub, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """What the parameters say costs more than a few milliseconds never holds the loop: a page deeper than
    ``LOOP_DEPTH`` results (a stranger's ``limit=500&page=20`` took 100-160 ms at 100k records), the Civitai
    listing (100 models with their versions) and its batch lookup (up to 100 hashes)."""
    from lorahub.registry.server.search_api import LOOP_DEPTH

    _names(hub, **QUERY)
    calls = _spied(hub, monkeypatch)
    _names(hub, **QUERY, limit=500, page=LOOP_DEPTH // 500)  # LOOP_DEPTH deep: still the loop's
    _names(hub, **QUERY, limit=500, page=LOOP_DEPTH // 500 + 1)
    _names(hub, **QUERY, limit=20, page=LOOP_DEPTH // 20 + 1)
    assert calls == [("loop", "ok"), ("thread", "ok"), ("thread", "ok")]
    civitai = hub.app.state.lorahub.civitai
    listing = _spied(hub, monkeypatch, civitai, "search")
    batch = _spied(hub, monkeypatch, civitai, "by_hashes")
    assert hub.request("GET", "/api/v1/models", user=None, params={"query": "ghoul"}).status_code == 200
    assert hub.request("POST", "/api/v1/model-versions/by-hash", user=None, json=["ab" * 32]).status_code == 200
    assert listing == [("thread", "ok")] and batch == [("thread", "ok")]
