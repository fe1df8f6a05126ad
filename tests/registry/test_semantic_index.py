"""The semantic index (registry/vectorindex.py, registry/ann.py) and its cache file, on SQLite and PostgreSQL:
the HNSW graph finds what exact search finds, additions, changes and removals (made through another
registry object, as another process would) show in the next search, the cache file beside the database is
mapped by a new process, and a damaged, truncated or stale file is detected and rebuilt. The graph is used
here from a few records up (``ANN_MIN_ROWS`` lowered); docs/registry.md has the 100k figures."""

from __future__ import annotations

import hashlib

import pytest

from lorahub.registry import semantic, vectorindex
from lorahub.schemas.registry import AdapterRecord, SearchQuery

THEMES = {
    "horror": ["monster", "creepy", "dark", "ghost", "zombie"],
    "mecha": ["robot", "armor", "pilot", "machine", "sci-fi"],
    "ink": ["monochrome", "brush", "lineart", "sketch", "sumi-e"],
    "food": ["cake", "dessert", "cute", "kitchen", "fruit"],
    "landscape": ["mountain", "forest", "sky", "river", "scenery"],
    "portrait": ["face", "woman", "photorealistic", "studio", "man"],
}


def _records(n: int, start: int = 0) -> list[AdapterRecord]:
    names = list(THEMES)
    out = []
    for i in range(start, start + n):
        theme = names[i % len(names)]
        words = THEMES[theme]
        tags = [theme, words[i % 5], words[(i // 5) % 5]]
        out.append(AdapterRecord(source="t", id=str(i), name=f"{words[(i // 3) % 5].title()} {theme.title()} {i}",
                                 tags=tags, description=f"A {words[i % 5]} {theme} style, number {i}.",
                                 downloads=i, base_model="SD 1.5" if i % 2 else "SDXL 1.0",
                                 files=[{"name": f"f{i}.safetensors",
                                         "hashes": {"sha256": hashlib.sha256(str(i).encode()).hexdigest()}}]))
    return out


QUERIES = ["spooky creatures", "giant fighting robots", "black and white drawing", "sweet treats",
           "nature views", "headshot of a lady", "horror", "Pilot Mecha 7"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    semantic.reset_cache()
    yield
    semantic.reset_cache()


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process keeps its index and searches the graph from 50 vectors up (a tag of more than 10 rows is
    a large one: tested through its mask, and its bonus bounds what a row outside the candidates can score)."""
    monkeypatch.setattr(vectorindex, "ANN_MIN_ROWS", 50)
    monkeypatch.setattr(vectorindex, "POSTING_EXACT", 10)
    semantic.keep_loaded()


def _top(reg, query: str, *, exact: bool = False, depth: int = 20) -> list[int]:  # noqa: ANN001
    with reg.reading() as raw:
        return [aid for aid, _ in semantic.top(raw, query, depth, set, exact=exact)]


def _index(reg):  # noqa: ANN001, ANN202
    with reg.reading() as raw:
        return semantic.index_for(raw)


def _names(reg, query: str, mode: str = "semantic") -> list[str]:  # noqa: ANN001
    return [r.name for r in reg.search(SearchQuery(query=query, mode=mode, limit=10))]


def test_the_graph_finds_what_exact_search_finds_and_hybrid_keeps_exact_names_first(registry, graph) -> None:  # noqa: ANN001
    registry.import_records(_records(240))
    index = _index(registry)
    assert index.has_graph() and len(index.ensure_ann()) == 240
    for q in QUERIES:
        exact, approx = _top(registry, q, exact=True), _top(registry, q)
        assert len(approx) == len(exact) > 0
        assert len(set(exact[:10]) & set(approx[:10])) >= 9, q
    # hybrid: the exact name and the hash still come first, and the page is the exact search's
    name = _records(240)[7].name  # Pilot Mecha 7
    first = registry.search(SearchQuery(query=name, mode="hybrid", limit=10))[0]
    assert first.name == name and first.score >= 4
    sha = hashlib.sha256(b"13").hexdigest()
    assert registry.search(SearchQuery(query=sha, mode="hybrid"))[0].name.endswith(" 13")
    hybrid = _names(registry, "spooky creatures", "hybrid")
    semantic.reset_cache()  # a one-shot process: exact search over the mapped file
    assert _names(registry, "spooky creatures", "hybrid") == hybrid


def test_additions_changes_and_removals_show_in_the_next_search(registry, db_url, graph) -> None:  # noqa: ANN001
    from lorahub.registry.catalogue import Registry

    registry.import_records(_records(120))
    assert "Sumi-e Brushwork Masterpiece" not in _names(registry, "black and white ink painting")
    index = _index(registry)
    other = Registry(db_url)  # another writer (as another process would be): this one learns from the database
    try:
        other.import_records([AdapterRecord(source="t", id="new", name="Sumi-e Brushwork Masterpiece",
                                            tags=["ink", "monochrome", "sumi-e"], description="ink wash painting",
                                            files=[{"name": "new.safetensors", "hashes": {"sha256": "ab" * 32}}])])
        assert "Sumi-e Brushwork Masterpiece" in _names(registry, "black and white ink painting")
        # a change: the same record is now about robots
        other.import_records([AdapterRecord(source="t", id="new", name="Steel Titan Pilot",
                                            tags=["mecha", "robot"], description="giant war machines",
                                            files=[{"name": "new.safetensors", "hashes": {"sha256": "ab" * 32}}])])
        assert "Sumi-e Brushwork Masterpiece" not in _names(registry, "black and white ink painting")
        assert "Steel Titan Pilot" in _names(registry, "giant fighting robots")
        # a removal
        aid = next(r.id for r in registry.search(SearchQuery(query="Steel Titan Pilot", mode="keyword")))
        other.remove([aid])
        assert "Steel Titan Pilot" not in _names(registry, "giant fighting robots")
    finally:
        other.close()
    after = _index(registry)
    assert after is index, "caught up in place, not rebuilt"
    assert after.live == registry.count() == 120 and after.n == 122  # dead: the changed record's first row, the removed
    assert len(after.ensure_ann()) == 120


def test_a_new_process_maps_the_cache_file_and_catches_up_on_what_changed_since(registry, db_url) -> None:  # noqa: ANN001
    from lorahub.registry.catalogue import Registry

    registry.import_records(_records(150))
    expected = _names(registry, "spooky creatures")
    with registry.reading() as raw:
        path = semantic.cache_path(raw)
    assert path is not None and path.is_file()
    if db_url.startswith("sqlite"):
        assert path.name == "registry.sqlite-vectors" and path.parent == registry_folder(db_url)
    semantic.reset_cache()
    index = _index(registry)
    assert index._map is not None, "read from the file"
    assert _names(registry, "spooky creatures") == expected
    # the database changed after the file was written (another process): the file's counter is behind
    other = Registry(db_url)
    try:
        other.import_records([AdapterRecord(source="t", id="ghoul", name="Ghoul Parade", tags=["horror", "monster"],
                                            files=[{"name": "g.safetensors", "hashes": {"sha256": "cd" * 32}}])])
    finally:
        other.close()
    semantic.reset_cache()
    assert _names(registry, "ghoul parade")[0] == "Ghoul Parade"
    index = _index(registry)
    assert index._map is not None and index.live == 151  # the file, caught up (one change: not rewritten)


def registry_folder(db_url: str):  # noqa: ANN201
    from pathlib import Path

    return Path(db_url.removeprefix("sqlite:///")).parent


@pytest.mark.parametrize("damage", ["truncated", "garbage", "header", "arrays", "matrix", "graph", "other model"])
def test_a_damaged_or_foreign_cache_file_is_detected_and_rebuilt(tmp_path, damage: str, graph) -> None:  # noqa: ANN001
    from lorahub.registry.catalogue import Registry

    reg = Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    reg.migrate()
    try:
        reg.import_records(_records(120))
        expected = _names(reg, "giant fighting robots")
        path = tmp_path / "registry.sqlite-vectors"
        data = bytearray(path.read_bytes())
        model = semantic.embedder()
        good = vectorindex.VectorIndex.open(path, semantic._expect(model))
        start = -(-(len(vectorindex.MAGIC) + 40 + int.from_bytes(data[8:16], "little")) // 64) * 64
        places = good_places(path)
        if damage == "truncated":
            data = data[: len(data) // 2]
        elif damage == "garbage":
            data = bytearray(b"\x00not a file at all" * 10)
        elif damage == "header":
            data[60] ^= 0xFF
        elif damage == "arrays":
            off = start + places["post_val"][0]
            data[off : off + 4] = (10**6).to_bytes(4, "little")
        elif damage == "matrix":
            off = start + places["matrix"][0]
            data[off : off + 4096] = b"\x00" * 4096
        elif damage == "graph":
            off = start + places["ann"][0]
            data[off + 4096 : off + 8192] = b"\xff" * 4096
        path.write_bytes(bytes(data))
        if damage == "other model":
            with pytest.raises(vectorindex.BadCacheFile, match="model_version"):
                vectorindex.VectorIndex.open(path, dict(semantic._expect(model), model_version="0+other"))
            return
        if damage != "graph":
            with pytest.raises(vectorindex.BadCacheFile):
                vectorindex.VectorIndex.open(path, semantic._expect(model))
        semantic.reset_cache()
        semantic.keep_loaded()
        assert _names(reg, "giant fighting robots") == expected
        reopened = vectorindex.VectorIndex.open(path, semantic._expect(model))  # rewritten whole
        assert reopened.live == 120 and good.live == 120
        if damage == "graph":
            assert len(reopened.ensure_ann()) == 120 and not reopened.graph_rebuilt
    finally:
        reg.close()


def good_places(path) -> dict:  # noqa: ANN001
    import json

    data = path.read_bytes()
    n = int.from_bytes(data[8:16], "little")
    return json.loads(data[48 : 48 + n])["places"]


def test_a_database_that_went_back_is_read_again(tmp_path) -> None:  # noqa: ANN001
    """A cache file newer than its database (a restored backup): the file is not used."""
    import shutil

    from lorahub.registry.catalogue import Registry

    db = tmp_path / "registry.sqlite"
    reg = Registry(f"sqlite:///{db}")
    reg.migrate()
    try:
        reg.import_records(_records(110))
        reg.close()
        shutil.copy(db, tmp_path / "backup.sqlite")
        reg = Registry(f"sqlite:///{db}")
        reg.import_records(_records(10, start=500))
        assert len(_top(reg, "spooky creatures", depth=200)) > 0
        assert _index(reg).live == 120
    finally:
        reg.close()
    semantic.reset_cache()
    shutil.copy(tmp_path / "backup.sqlite", db)
    reg = Registry(f"sqlite:///{db}")
    try:
        assert _index(reg).live == 110
    finally:
        reg.close()


def test_a_registry_without_tags_writes_and_maps_its_file(tmp_path) -> None:  # noqa: ANN001
    """Empty arrays (no tag, no filter token) survive the file."""
    from lorahub.registry.catalogue import Registry

    reg = Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    reg.migrate()
    try:
        reg.import_records([AdapterRecord(source="t", id=str(i), name=f"Plain {w}", files=[
            {"name": f"{i}.safetensors", "hashes": {"sha256": hashlib.sha256(w.encode()).hexdigest()}}])
            for i, w in enumerate(["castle", "robot", "ghost"])])
        first = _names(reg, "haunted spirit")
        assert (tmp_path / "registry.sqlite-vectors").is_file()
        semantic.reset_cache()
        assert _names(reg, "haunted spirit") == first and _index(reg)._map is not None
    finally:
        reg.close()


def test_repeated_queries_reuse_their_vector_and_candidates_and_never_answer_stale(registry, db_url, graph,  # noqa: ANN001
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A server answers the same words again and again: the query's vector (per process) and its scored
    candidates (per index, until the index changes) are kept. A write by another process (a push, a commit, an
    import), a change of a record, its removal, and a visibility change that touches no vector all show in the
    very next search of the same words, which answers what a fresh process answers."""
    from sqlalchemy import update

    from lorahub.registry.catalogue import Registry
    from lorahub.registry.rows import A

    registry.import_records(_records(120))
    query = "black and white ink painting"

    def fresh() -> list[str]:  # a new process: no index, no kept vector or candidates
        semantic.reset_cache()
        semantic.keep_loaded()
        return _names(registry, query)

    first = _names(registry, query)
    model = semantic.embedder()
    vector = model.query(query)
    assert model.query(query) is vector and not vector.flags.writeable  # kept, and nobody may change it
    index = _index(registry)
    assert index._memo and _names(registry, query) == first == fresh()
    index = _index(registry)
    other = Registry(db_url)
    try:
        other.import_records([AdapterRecord(source="t", id="new", name="Sumi-e Brushwork Masterpiece",
                                            tags=["ink", "monochrome", "sumi-e"], description="ink wash painting",
                                            files=[{"name": "new.safetensors", "hashes": {"sha256": "ab" * 32}}])])
        added = _names(registry, query)
        assert "Sumi-e Brushwork Masterpiece" in added and added == fresh()
        _names(registry, query)  # kept again
        other.import_records([AdapterRecord(source="t", id="new", name="Sumi-e Brushwork Masterpiece",
                                            tags=["mecha", "robot"], description="giant war machines",
                                            files=[{"name": "new.safetensors", "hashes": {"sha256": "ab" * 32}}])])
        changed = _names(registry, query)  # its new vector is the one scored
        assert "Sumi-e Brushwork Masterpiece" not in changed and changed == fresh()
        assert "Sumi-e Brushwork Masterpiece" in _names(registry, "giant fighting robots")
        # visibility changes no vector (the kept candidates stay): it is checked in SQL at every search
        shown = _names(registry, query)
        with other.writing() as conn:
            conn.execute(update(A).where(A.c.name == shown[0]).values(private=True, owner_id=None))
        assert shown[0] not in _names(registry, query)
        aid = next(r.id for r in registry.search(SearchQuery(query=shown[1], mode="keyword")))
        other.remove([aid])
        assert shown[1] not in _names(registry, query)
        assert _names(registry, query) == fresh()
    finally:
        other.close()
    # kept within bounds: the oldest queries' candidates go first, the answers stay the same
    monkeypatch.setattr(vectorindex, "MEMO_BYTES", 4096)
    semantic.reset_cache()
    semantic.keep_loaded()
    before = {q: _names(registry, q) for q in QUERIES}
    index = _index(registry)
    assert index._memo_bytes <= 4096 or len(index._memo) == 1
    assert {q: _names(registry, q) for q in QUERIES} == before
    monkeypatch.setattr(semantic, "QUERY_CACHE", 2)
    model = semantic.embedder()
    for q in QUERIES:
        model.query(f"{q}, once more")
    assert list(model._queries) == [f"{q}, once more" for q in QUERIES[-2:]]


def test_id_lists_read_as_one_parameter_on_sqlite_and_as_many_otherwise(registry) -> None:  # noqa: ANN001
    """``IN :ids`` of integers is one JSON parameter on SQLite (one statement text, kept compiled); other
    lists (text, one value, none) are expanded as before; both read the same rows."""
    registry.import_records(_records(30))
    with registry.reading() as raw:
        ids = [r[0] for r in raw.all("SELECT id FROM adapters ORDER BY id")]
        names = {r[0]: r[1] for r in raw.all("SELECT id, name FROM adapters")}
        got = raw.all("SELECT id FROM adapters WHERE id IN :ids ORDER BY id", {"ids": ids[::3] + [10**9]})
        assert [r[0] for r in got] == ids[::3]
        assert raw.all("SELECT id FROM adapters WHERE id IN :ids", {"ids": []}) == []
        assert [r[0] for r in raw.all("SELECT id FROM adapters WHERE id IN :ids", {"ids": ids[:1]})] == ids[:1]
        some = [names[i] for i in ids[:4]]
        got = raw.all("SELECT id FROM adapters WHERE name IN :n ORDER BY id", {"n": some})
        assert [r[0] for r in got] == ids[:4]


def _hits(reg, q: SearchQuery, *, check_ids: bool = False) -> list[tuple[int, float]]:  # noqa: ANN001
    """(id, score) of a page; ``check_ids``: every candidate of the vector list checked against every filter in
    SQL (as with rank bounds)."""
    from lorahub.registry import search as S

    with pytest.MonkeyPatch.context() as mp:
        if check_ids:
            mp.setattr(S._Backend, "rank_bounds", lambda self: True)
        return [(r.id, r.score) for r in reg.search(q)]


FILTERS = [{}, {"tags": ["ink"]}, {"tags": ["mecha"], "base": "sd1"}, {"base": "sdxl"}, {"min_rank": 1}]


def test_unchecked_vector_candidates_answer_what_the_sql_check_answers(registry, db_url, graph) -> None:  # noqa: ANN001
    """Without rank bounds the vector list's candidates are checked in SQL only to be visible, and only where
    some adapter is private (registry/search.py ``fuse``, ``visible``): the index caught up to the database's
    counter has the filter tokens of the rows. Every query and filter answers what the full SQL check
    answers, and so after writes between two searches (a change of tags, removals, even behind the index's
    back: a visibility change of the column alone, a row deleted without noting its vector's removal, which
    the first page that misses it finds and asks again, checked)."""
    from sqlalchemy import text, update

    from lorahub.registry.catalogue import Registry
    from lorahub.registry.rows import A

    registry.import_records(_records(120))

    def same(queries: list[str]) -> None:
        for query in queries:
            for mode in ("hybrid", "semantic"):
                for filters in FILTERS:
                    q = SearchQuery(query=query, mode=mode, limit=10, **filters)
                    assert _hits(registry, q) == _hits(registry, q, check_ids=True), (query, mode, filters)

    same(QUERIES)
    other = Registry(db_url)
    try:
        q = SearchQuery(query="giant fighting robots", mode="hybrid", limit=10, tags=["ink"])
        first = _hits(registry, q)
        # a record of another theme gains the tag the search filters on: the next search sees it
        other.import_records([r.model_copy(update={"tags": ["mecha", "robot", "ink"]}) for r in _records(1, start=1)])
        again = _hits(registry, q)
        assert again != first and again == _hits(registry, q, check_ids=True)
        assert "Robot Mecha 1" in [r.name for r in registry.search(q)]
        same(["giant fighting robots", "Robot Mecha 1"])
        # made private by its column alone (no vector, no filter token changes): checked in SQL again
        shown = _names(registry, "black and white ink painting", mode="hybrid")
        with other.writing() as conn:
            conn.execute(update(A).where(A.c.name == shown[0]).values(private=True, owner_id=None))
        assert shown[0] not in _names(registry, "black and white ink painting", mode="hybrid")
        with other.writing() as conn:
            conn.execute(update(A).where(A.c.name == shown[0]).values(private=False))
        assert _names(registry, "black and white ink painting", mode="hybrid") == shown
        # removed through lorahub, and deleted behind the index's back (its vector goes by the foreign key's
        # cascade, no removal noted): neither is a candidate any more
        other.remove([next(r.id for r in registry.search(SearchQuery(query=shown[1], mode="keyword")))])
        with other.writing() as conn:
            conn.execute(text("DELETE FROM adapters WHERE name = :n"), {"n": shown[2]})
        after = _names(registry, "black and white ink painting", mode="hybrid")
        assert shown[1] not in after and shown[2] not in after and len(after) == len(shown)
        same(["black and white ink painting", "black and white drawing", "spooky creatures"])
    finally:
        other.close()


def test_fusion_reads_the_keyword_tiers_as_relevance_ranks_them(registry) -> None:  # noqa: ANN001
    """Hybrid search reads the keyword tiers 100 deep for fusion from the text index alone on SQLite
    (``ranked``: ids and tiers, exact names left out of tier 3 in Python): the same ids, order and tiers as
    ``relevance``, exact names (several of one name among them) with their scores, filters or not."""
    from lorahub.registry import search as S

    records = _records(150)
    records += [r.model_copy(update={"id": f"twin{i}", "name": "Monster Horror 0", "downloads": 1000 + i,
                                     "files": [{"name": f"t{i}.safetensors",
                                                "hashes": {"sha256": hashlib.sha256(f"t{i}".encode()).hexdigest()}}]})
                for i, r in enumerate(records[:3])]
    registry.import_records(records)
    queries = ["Monster Horror 0", "monster", "horror", "ink", "Pilot Mecha 7", "cake dessert", "number", "zzqx"]
    with registry.reading() as raw:
        for query in queries:
            for filters in FILTERS:
                plan = S.plan_for(SearchQuery(query=query, **filters), None)
                backend = S._Postgres(raw, plan) if raw.pg else S._SQLite(raw, plan)
                for depth in (3, 20, 100):
                    want = backend.relevance(0, depth)
                    got = backend.ranked(depth)
                    assert [(h.id, int(h.score)) for h in got] == [(h.id, int(h.score)) for h in want], (query, filters)
                    assert [h.score for h in got if h.score >= S.TIER_EXACT] == [
                        h.score for h in want if h.score >= S.TIER_EXACT]


def test_candidates_are_checked_in_sql_only_where_some_adapter_is_private(registry, monkeypatch) -> None:  # noqa: ANN001
    """A semantic or hybrid search reads whether any adapter is private with the vectors' counter (one
    statement); where none is, its vector candidates are not checked in SQL (``_Backend.visible``); one
    private adapter, even made so in SQL behind lorahub's back, brings the check back, and the private
    adapter is not shown."""
    from sqlalchemy import update

    from lorahub.registry import search as S
    from lorahub.registry.rows import A

    registry.import_records(_records(60))
    calls: list[int] = []
    real = S._Backend.visible
    monkeypatch.setattr(S._Backend, "visible", lambda self, ids: calls.append(len(ids)) or real(self, ids))
    query = "black and white ink painting"
    shown = _names(registry, query, mode="semantic")
    assert shown and calls == []
    with registry.writing() as conn:
        conn.execute(update(A).where(A.c.name == shown[0]).values(private=True, owner_id=None))
    after = _names(registry, query, mode="semantic")
    assert calls and shown[0] not in after
    calls.clear()
    with registry.writing() as conn:
        conn.execute(update(A).where(A.c.name == shown[0]).values(private=False))
    assert _names(registry, query, mode="semantic") == shown and calls == []


def test_whether_any_adapter_is_private_is_read_from_the_partial_index(registry) -> None:  # noqa: ANN001
    """Every semantic or hybrid search reads the counters with whether any adapter is private: from the
    partial index of the private adapters (SQLite's planner scanned the covering index of every row instead,
    2.4 ms a search at 100k, until the statement named the index)."""
    registry.import_records(_records(30))
    with registry.reading() as raw:
        sql = semantic.counters_sql(raw.pg)
        if raw.pg:  # 30 rows: a sequential scan is cheaper; what matters is that the index can answer
            with raw.dbapi.cursor() as cur:
                cur.execute("SET enable_seqscan = off")
        plan = "\n".join(str(r[-1] if not raw.pg else r[0]) for r in raw.all(
            ("EXPLAIN " if raw.pg else "EXPLAIN QUERY PLAN ") + sql))
        if raw.pg:
            with raw.dbapi.cursor() as cur:
                cur.execute("RESET enable_seqscan")
        assert "ix_adapters_private" in plan, plan
        assert "ix_adapters_visible" not in plan, plan
        assert semantic._counters(raw)[2] is False


def test_a_hit_deleted_between_search_and_page_is_replaced(registry, monkeypatch) -> None:  # noqa: ANN001
    """An adapter deleted after a search read the counter (between its statements) would leave the page
    short: the registry asks again with every candidate checked, and the page is full. (Where the rows of the
    version the search read are kept, PostgreSQL, the page is that version's, deleted adapter and all: they
    are not kept here, so that the page's rows are read after the delete.)"""
    from sqlalchemy import text

    from lorahub.registry import lookups
    from lorahub.registry import search as S

    registry.import_records(_records(60))
    query = SearchQuery(query="black and white ink painting", mode="hybrid", limit=5)
    before = [r.id for r in registry.search(query)]
    real = S.search_page
    seen: list[bool] = []

    def search_then_delete(raw, q, *, viewer=None, checked=False):  # noqa: ANN001, ANN202
        hits = real(raw, q, viewer=viewer, checked=checked)
        seen.append(checked)
        if len(seen) == 1:
            with registry.writing() as conn:
                conn.execute(text("DELETE FROM adapters WHERE id = :i"), {"i": before[1]})
        return hits

    monkeypatch.setattr(S, "search_page", search_then_delete)
    monkeypatch.setattr(lookups, "_kept", {})
    page = [r.id for r in registry.search(query)]
    assert seen == [False, True]
    assert len(page) == 5 and before[1] not in page and page[:1] == before[:1]


def test_a_shared_index_caught_up_past_the_no_private_read_is_checked(registry) -> None:  # noqa: ANN001
    """A search that read "no adapter is private" with its counter may find the process's shared index
    caught up further by another search, to a private adapter written since: the candidates are then checked
    (``semantic.top`` ``unchecked``), and the private adapter is not shown."""
    from sqlalchemy import text, update

    from lorahub.registry import text as T
    from lorahub.registry.rows import A

    registry.import_records(_records(30))
    query = "black and white ink painting"
    shown = _names(registry, query)
    with registry.writing() as conn:  # made private as lorahub writes it: column, filter token, a new vector
        row = dict(conn.execute(text("SELECT id, name, title, tags_text, trigger_words_text, description "
                                     "FROM adapters WHERE name = :n"), {"n": shown[0]}).mappings().one())
        conn.execute(update(A).where(A.c.id == row["id"]).values(
            private=True, search_facets=A.c.search_facets + " " + T.F_PRIVATE))
        semantic.write_embeddings(conn, [row["id"]], [row])
    calls: list[list[int]] = []

    def allowed(ids: list[int]) -> set[int]:
        calls.append(ids)
        return {i for i in ids if i != row["id"]}

    with registry.reading() as raw:
        index = semantic.index_for(raw)
        assert index.has_private()
        got = [aid for aid, _ in semantic.top(raw, query, 10, allowed, index=index, unchecked=True)]
        assert calls and row["id"] not in got and got
        calls.clear()
        assert row["id"] in [aid for aid, _ in semantic.top(raw, query, 10, None, index=index)]  # unchecked: there


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
@pytest.mark.parametrize("fused", [True, False], ids=["few-matches", "postings"])
def test_postgres_reads_the_vector_counters_with_the_keyword_tiers(registry, db_url, graph, monkeypatch,  # noqa: ANN001
                                                                   read_statements, fused: bool) -> None:
    """On PostgreSQL a hybrid search reads the vector counters (and whether any adapter is private) in the
    keyword tiers' statement where that is one statement (a one-word query's postings, or every tier at once
    for few matches): no statement of its own (a query read tier by tier reads them apart). The counters it hands the vector search are the database's
    after every kind of write between two searches, made through another registry object (as another
    process would) or in SQL, and the pages are those of the search that reads them apart."""
    from sqlalchemy import text, update

    from lorahub.registry import search as S
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.rows import A

    if not fused:
        monkeypatch.setattr(S, "FUSED_MAX_MATCHES", -1)  # one-word tiers from the postings
    registry.import_records(_records(90))
    registry.optimize()  # statistics: a few matches expected, every tier read at once
    handed: list[tuple | None] = []
    real_current = semantic.current
    monkeypatch.setattr(semantic, "current", lambda raw, counters=None: handed.append(counters) or
                        real_current(raw, counters))
    statements = read_statements
    counters_alone = semantic.counters_sql(True)

    def check(queries: list[str]) -> None:
        for query in queries:
            for filters in ({}, {"base": "sdxl"}, {"tags": ["mecha"]}):
                q = SearchQuery(query=query, mode="hybrid", limit=10, **filters)
                handed.clear()
                statements.clear()
                got = [(r.id, r.score) for r in registry.search(q)]
                if " " not in query:  # one word: the postings' statement, or every tier at once
                    assert counters_alone not in statements, (query, filters)
                with registry.reading() as raw:
                    truth = semantic._counters(raw)
                assert handed == [truth] or (" " in query and handed == [None]), (query, filters)  # None: read apart
                with monkeypatch.context() as m:  # the counters read in a statement of their own
                    m.setattr(S._Postgres, "ranked_with_counters", lambda self, limit: (self.ranked(limit), None))
                    assert [(r.id, r.score) for r in registry.search(q)] == got, (query, filters)

    words = ["robot", "monster", "ink", "Pilot Mecha 7", "zzqx"]
    check(words)
    other = Registry(db_url)
    try:
        other.import_records([r.model_copy(update={"tags": ["mecha", "robot", "ink"]}) for r in _records(3, start=90)])
        check(words)
        shown = _names(registry, "robot", mode="hybrid")
        with other.writing() as conn:  # private by its column alone
            conn.execute(update(A).where(A.c.name == shown[0]).values(private=True, owner_id=None))
        check(words)
        assert shown[0] not in _names(registry, "robot", mode="hybrid")
        other.remove([next(r.id for r in registry.search(SearchQuery(query=shown[1], mode="keyword")))])
        with other.writing() as conn:
            conn.execute(text("DELETE FROM adapters WHERE name = :n"), {"n": shown[2]})
        check(words)
        assert not {shown[1], shown[2]} & set(_names(registry, "robot", mode="hybrid"))
    finally:
        other.close()


def test_filtered_exact_scores_are_the_same_read_in_place_or_gathered(registry, monkeypatch) -> None:  # noqa: ANN001
    """A filter keeping a large share of the rows is scored by one product over the whole matrix, its rows'
    scores then picked (``GATHER_SHARE``; gathering them first cost several times the product); a small share
    is gathered. Both give every kept row the same score, and only kept rows."""
    import numpy as np

    registry.import_records(_records(90))
    half = {r.id for r in registry.search(SearchQuery(base="sd1", limit=100))}
    assert 30 < len(half) < 60  # SD 1.5 is every other record
    index = _index(registry)
    seen: list[int] = []
    product = np.einsum

    def einsum(spec, a, b):  # noqa: ANN001, ANN202 - which rows each product reads
        seen.append(len(a))
        return product(spec, a, b)

    monkeypatch.setattr(np, "einsum", einsum)

    def scored(share: int) -> list[tuple[int, float]]:
        monkeypatch.setattr(vectorindex, "GATHER_SHARE", share)
        index.forget()
        seen.clear()
        with registry.reading() as raw:
            out = semantic.top(raw, "spooky creatures", 100, None, ["zbsd1"], exact=True, index=index)
        return out

    gathered = scored(1)  # never more than every row: always gathered
    assert index.n not in seen
    in_place = scored(1 << 30)
    assert index.n in seen
    assert in_place == gathered and len(gathered) > 5
    assert {aid for aid, _ in gathered} <= half
