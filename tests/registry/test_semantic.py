"""Semantic and hybrid search (registry/semantic.py, registry/search.py ``fuse``) on records written here,
on SQLite and PostgreSQL: vectors are written with every record and follow its changes, paraphrases find
what words miss, exact names, trigger words and hashes still come first, filters and visibility hold, and
without the model (or its vectors) search is keyword search as before. The model is the installed
``wordllama`` package's files: ``HF_HUB_OFFLINE`` is set and the package (which can download) is never
imported. The Civitai corpus figures are in test_semantic_corpus.py."""

from __future__ import annotations

import hashlib
import sys
import threading

import pytest

from lorahub.registry import semantic, waits
from lorahub.schemas.registry import AdapterRecord, SearchQuery


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    semantic.reset_cache()


def rec(i: int, name: str, tags: list[str], *, words: list[str] = (), description: str = "", downloads: int = 100,
        base: str = "SD 1.5", sha: str | None = None, private_owner: int | None = None) -> AdapterRecord:
    sha = sha or hashlib.sha256(str(i).encode()).hexdigest()
    return AdapterRecord(source="t", id=str(i), name=name, tags=tags, trigger_words=list(words), description=description,
                         downloads=downloads, base_model=base,
                         files=[{"name": f"f{i}.safetensors", "hashes": {"sha256": sha}}])


#: Themes a paraphrase should reach without sharing a word with them; distractors share words instead.
RECORDS = [
    rec(1, "Ghoul Gallery", ["horror", "creature"], description="Creepy undead beings for dark scenes."),
    rec(2, "Nightmare Fiends", ["horror", "monster"], words=["fiendish"]),
    rec(3, "Eldritch Horror Style", ["horror", "dark fantasy"]),
    rec(4, "Steel Titans", ["mecha", "robot"], description="Huge piloted war machines."),
    rec(5, "Gundam Armor Suit", ["mecha", "sci-fi"]),
    rec(6, "Sumi-e Brushwork", ["ink", "monochrome"], description="Traditional East Asian ink wash painting."),
    rec(7, "Lineart Only", ["lineart", "monochrome", "sketch"]),
    rec(8, "Pastel Picnic", ["food", "cute"], description="Cakes, sandwiches and tea."),
    rec(9, "Sunny Beach Girl", ["girl", "swimsuit", "beach"], downloads=90000),
    rec(10, "Giant Sunflowers", ["flowers", "landscape"], description="Fields of giant flowers.", downloads=50000),
    rec(11, "Fighting Game Poses", ["poses", "action"], description="Fighting stances for characters.", downloads=70000),
    rec(12, "Robots Fighting Giant", ["meme"], downloads=5),  # every word of a query in its name, a joke
    rec(13, "Cute_girl_mix4", ["girl", "photorealistic"], words=["mix4"], downloads=10),
    rec(14, "Drawing Hands Fix", ["tool", "hands"], description="Black and white is not this.", downloads=80000),
    rec(15, "Porcelain Doll", ["doll", "character"], words=["qxporcelain"], downloads=3),
    rec(16, "SDXL Monster Truck", ["vehicle", "car"], base="SDXL 1.0", downloads=400),
    rec(17, "SDXL Creature Feature", ["horror", "creature"], base="SDXL 1.0", downloads=300),
]


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _names(results: list) -> list[str]:
    return [r.name for r in results]


@pytest.fixture
def filled(registry):  # noqa: ANN001, ANN201
    registry.import_records(RECORDS)
    return registry


def _vectors(registry) -> dict[int, tuple]:  # noqa: ANN001
    with registry.reading() as raw:
        rows = raw.all("SELECT e.adapter_id, e.model, e.model_version, e.dim, e.vector, e.seq FROM adapter_embeddings e")
    return {r[0]: tuple(r[1:]) for r in rows}


def test_every_record_is_embedded_when_written_and_follows_its_changes(filled) -> None:  # noqa: ANN001
    reg = filled
    vectors = _vectors(reg)
    assert len(vectors) == reg.count() == len(RECORDS)
    for model, version, dim, blob, _seq in vectors.values():
        assert (model, version, dim) == (semantic.MODEL, semantic.model_version(), 256)
        assert len(bytes(blob)) == 2 * dim  # float16
    assert "wordllama" not in sys.modules  # its files are read; the package (which can download) is never imported

    before = reg.search(SearchQuery(query="juicy hamburgers and fries", mode="semantic", limit=1))
    assert _names(before) == ["Pastel Picnic"]
    # A record written again (same source): its vector is replaced, in a later seq, and the search sees it.
    changed = RECORDS[7].model_copy(update={"name": "Pastel Robots", "tags": ["robot", "cute"], "description": ""})
    reg.import_records([changed])
    after = _vectors(reg)
    aid = next(r.id for r in reg.search(SearchQuery(query="Pastel Robots", mode="keyword")))
    assert after[aid][4] > max(s for k, (*_, s) in vectors.items())
    assert bytes(after[aid][3]) != bytes(vectors[aid][3])
    assert _names(reg.search(SearchQuery(query="juicy hamburgers and fries", mode="semantic", limit=1))) != ["Pastel Robots"]
    assert _names(reg.search(SearchQuery(query="cute machines", mode="semantic", limit=1))) == ["Pastel Robots"]
    # A new record is found by the next search of the same process (the cache reads what changed).
    reg.import_records([rec(40, "Spectral Phantoms", ["ghost", "horror"])])
    assert "Spectral Phantoms" in _names(reg.search(SearchQuery(query="haunted apparitions", mode="semantic", limit=3)))
    # Removed with the adapter.
    reg.remove([aid])
    assert aid not in _vectors(reg)
    assert "Pastel Robots" not in _names(reg.search(SearchQuery(query="cute machines", mode="semantic", limit=50)))
    # The newest vector removed, then one written: a counter is never reused, so the cache sees the new one.
    newest = next(r.id for r in reg.search(SearchQuery(query="Spectral Phantoms", mode="keyword")))
    reg.remove([newest])
    assert "Spectral Phantoms" not in _names(reg.search(SearchQuery(query="haunted apparitions", mode="semantic")))
    reg.import_records([rec(41, "Phantom Cathedral", ["ghost", "horror"])])
    assert "Phantom Cathedral" in _names(reg.search(SearchQuery(query="haunted apparitions", mode="semantic", limit=3)))


def test_paraphrases_find_what_words_miss(filled) -> None:  # noqa: ANN001
    reg = filled
    for query, theme in (("spooky monsters", {"horror"}), ("enormous battle robots", {"mecha"}),
                         ("black and white ink drawing", {"monochrome"})):
        keyword = reg.search(SearchQuery(query=query, mode="keyword", limit=3))
        semantic_ = reg.search(SearchQuery(query=query, mode="semantic", limit=3))
        hybrid = reg.search(SearchQuery(query=query, limit=3))  # the default where vectors exist
        on_theme = lambda results: sum(bool(theme & set(r.tags)) for r in results)  # noqa: B023, E731
        assert theme & set(semantic_[0].tags), (query, _names(semantic_))
        assert on_theme(keyword) < on_theme(hybrid), (query, _names(keyword), _names(hybrid))


def test_exact_names_trigger_words_and_hashes_still_win(filled) -> None:  # noqa: ANN001
    reg = filled
    for mode in ("auto", "hybrid"):
        assert reg.search(SearchQuery(query="Cute_girl_mix4", mode=mode))[0].name == "Cute_girl_mix4"
        assert reg.search(SearchQuery(query="cute girl mix4", mode=mode))[0].score >= 4  # the whole name
        assert "Cute_girl_mix4" in _names(reg.search(SearchQuery(query="mix4", mode=mode))[:3])
        assert reg.search(SearchQuery(query="qxporcelain", mode=mode))[0].name == "Porcelain Doll"
        found = reg.search(SearchQuery(query=_sha(15)[:12].upper(), mode=mode))
        assert found and found[0].name == "Porcelain Doll" and found[0].score == 5.0, _names(found)
    # Semantic mode pins hashes too; keyword search never matched hashes (--hash does).
    assert reg.search(SearchQuery(query=_sha(15), mode="semantic"))[0].name == "Porcelain Doll"
    assert reg.search(SearchQuery(query=_sha(15), mode="keyword")) == []


def test_words_found_nowhere_find_nothing_in_hybrid(filled) -> None:  # noqa: ANN001
    assert filled.search(SearchQuery(query="qqxyzzy zzqqx")) == []
    assert filled.search(SearchQuery(query="zzzz", mode="hybrid")) == []
    assert filled.search(SearchQuery(query="zzzz", mode="semantic"))  # by meaning alone: the nearest


def test_hybrid_reads_the_keyword_tiers_before_asking_whether_words_occur(filled, monkeypatch) -> None:  # noqa: ANN001
    """Hybrid reads the keyword tiers first and asks no existence query where they found something: a query of
    several words falls back to any of them when no adapter the search may show (filters applied) has every
    word, and only a query they found nothing for asks whether a stem of its words occurs at all."""
    from lorahub.registry import search as S

    calls: list[tuple[str, str]] = []
    for cls in (S._SQLite, S._Postgres):
        for name in ("ranked", "any_match", "any_prefix"):
            def spy(self, *args, _real=getattr(cls, name), _name=name):  # noqa: ANN001, ANN002, ANN202
                calls.append((_name, self.plan.mode))
                return _real(self, *args)
            monkeypatch.setattr(cls, name, spy)

    def run(query: str, **kw) -> list[str]:  # noqa: ANN003
        calls.clear()
        return _names(filled.search(SearchQuery(query=query, mode="hybrid", **kw)))

    found = run("giant robots")  # "Robots Fighting Giant" has both words
    assert calls == [("ranked", "and")] and "Robots Fighting Giant" in found
    found = run("monster truck", base="sdxl")  # "SDXL Monster Truck"
    assert calls == [("ranked", "and")] and found[0] == "SDXL Monster Truck"
    found = run("monster truck", base="sd1")  # no SD 1.5 adapter has both: "Nightmare Fiends" has one
    assert calls == [("ranked", "and"), ("ranked", "or")] and "Nightmare Fiends" in found
    assert "SDXL Monster Truck" not in found
    assert run("qqxyzzy zzqqx") == [] and calls == [("ranked", "and"), ("ranked", "or"), ("any_prefix", "or")]
    assert run("zzzz") == [] and calls == [("ranked", "and"), ("any_prefix", "and")]
    assert run("monsterz", base="sdxl") and calls == [("ranked", "and"), ("any_prefix", "and")]  # a stem occurs
    assert run("horror") and calls == [("ranked", "and")]
    calls.clear()
    assert filled.search(SearchQuery(query="spooky monsters qqxyzzy", mode="semantic")) and calls == []


def test_postgres_answers_a_miss_in_the_tiers_statement(filled, monkeypatch) -> None:  # noqa: ANN001
    """On PostgreSQL the statement that reads a hybrid search's keyword tiers with the vector counters also
    answers, where the tiers come back empty, whether a stem of the query's words occurs (filters aside): a
    miss is one round trip instead of two or three (in ``lorahub serve``'s event loop each is also a wait for
    the loop's turn: misses were the slowest requests at 16 clients). The pages are the same either way; a
    query whose tiers found something does not read the stems."""
    from lorahub.registry import database
    from lorahub.registry import search as S

    if filled.dialect != "postgresql":
        pytest.skip("PostgreSQL's statements")
    filled.optimize()  # ANALYZE: with statistics, few matches are read in one statement
    S._stats_cache.clear()
    seen: list[str] = []
    statements: list[tuple[str, dict]] = []
    real = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append(sql)
        statements.append((sql, dict(params or {})))
        return real(self, sql, params, **kw)

    queries = [("qqxyzzy zzqqx", {}), ("zzzz", {}), ("monsterz", {"base": "sdxl"}), ("horrorz", {}),
               ("spooky monsters", {}), ("giant robots", {}), ("monster truck", {"base": "sd1"}), ("horror", {})]
    words_match = {"giant robots", "horror"}  # the keyword tiers find these (test above)
    with monkeypatch.context() as m:
        m.setattr(S, "STEMS_WITH_TIERS", False)
        expected = [_names(filled.search(SearchQuery(query=q, mode="hybrid", **kw))) for q, kw in queries]
    monkeypatch.setattr(database.Raw, "all", spy)
    for (query, kw), want in zip(queries, expected, strict=True):
        seen.clear()
        assert _names(filled.search(SearchQuery(query=query, mode="hybrid", **kw))) == want, query
        asked = [sql for sql in seen if "stemmed AS MATERIALIZED" in sql]
        apart = [sql for sql in seen if "WITH m AS MATERIALIZED (SELECT a.id FROM adapters a WHERE a.search_vector" in sql]
        assert len(asked) == 1 and not apart, (query, seen)  # with the tiers, not in a statement of their own
        if not want:
            assert len(seen) == 1, (query, seen)  # a miss: one statement
        elif query in words_match:  # the tiers found something: the stems' probes never ran
            sql, params = next((sql, params) for sql, params in statements if "stemmed AS MATERIALIZED" in sql)
            with filled.reading() as raw:
                plan = "\n".join(r[0] for r in real(raw, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, params))
            probes = [line for line in plan.splitlines() if "Scan" in line and ("stemmed" in line or "adapter_postings" in line)]
            assert probes and all("never executed" in line for line in probes), (query, plan)
        statements.clear()
    assert expected[0] == expected[1] == [] and expected[2] and expected[3]  # stems of "monsterz", "horrorz" occur


def test_filters_visibility_and_pages_hold(filled) -> None:  # noqa: ANN001
    reg = filled
    for mode in ("semantic", "hybrid"):
        sdxl = reg.search(SearchQuery(query="spooky monsters", base="sdxl", mode=mode))
        assert sdxl and all(r.base_family == "sdxl" for r in sdxl), _names(sdxl)
        assert _names(sdxl)[0] == "SDXL Creature Feature"
        tagged = reg.search(SearchQuery(query="spooky monsters", tags=["creature"], mode=mode))
        assert tagged and all("creature" in r.tags for r in tagged)
        whole = reg.search(SearchQuery(query="giant robots", mode=mode, limit=6))
        pages = [r for p in (1, 2, 3) for r in reg.search(SearchQuery(query="giant robots", mode=mode, limit=2, page=p))]
        assert _names(pages) == _names(whole)
        assert len(set(_names(whole))) == len(whole)
    # Keyword orders other than relevance: auto is keyword there, semantic/hybrid refuse them.
    assert reg.search(SearchQuery(query="horror", sort="downloads")) == reg.search(
        SearchQuery(query="horror", sort="downloads", mode="keyword"))
    with pytest.raises(ValueError):
        SearchQuery(query="horror", sort="newest", mode="semantic")


def test_private_adapters_stay_private(registry) -> None:  # noqa: ANN001
    from sqlalchemy import update

    from lorahub.registry.rows import A

    registry.import_records([*RECORDS[:3], rec(50, "Secret Abominations", ["horror", "monster"])])
    with registry.writing() as conn:
        conn.execute(update(A).where(A.c.name == "Secret Abominations").values(private=True, owner_id=None))
    for mode in ("semantic", "hybrid"):
        seen = _names(registry.search(SearchQuery(query="spooky monsters", mode=mode)))
        assert seen and "Secret Abominations" not in seen, mode
    assert "Ghoul Gallery" in _names(registry.search(SearchQuery(query="spooky monsters", mode="semantic")))


def test_without_the_model_or_vectors_search_is_keyword_search(registry, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    queries = [SearchQuery(query=q) for q in ("spooky monsters", "horror", "Cute_girl_mix4", "giant robots")]
    # Records written without the model: no vectors; auto is keyword; semantic and hybrid say why not.
    with monkeypatch.context() as m:
        m.setattr(semantic, "embedder", lambda: None)
        registry.import_records(RECORDS)
    assert _vectors(registry) == {}
    for q in queries:
        assert registry.search(q) == registry.search(q.model_copy(update={"mode": "keyword"}))
    with pytest.raises(semantic.SemanticUnavailable, match="registry embed"):
        registry.search(SearchQuery(query="spooky monsters", mode="semantic"))
    # lorahub registry embed fills them in; then a model change (another version) re-embeds everything.
    summary = semantic.embed_missing(registry)
    assert (summary.embedded, summary.kept) == (len(RECORDS), 0)
    assert semantic.embed_missing(registry).embedded == 0
    assert registry.search(SearchQuery(query="spooky monsters", limit=3))[0].tags[0] == "horror"
    monkeypatch.setattr(semantic, "RECIPE", "lorahub-next")
    monkeypatch.setattr(semantic, "_embedder", None)  # as a new process with the new package would load it
    semantic.reset_cache()
    assert semantic.embed_missing(registry).embedded == len(RECORDS)
    assert {v[1] for v in _vectors(registry).values()} == {semantic.model_version()}
    # The package not installed: keyword search, the same results; asking for semantic says how to get it.
    monkeypatch.setattr(semantic, "installed", lambda: False)
    for q in queries:
        assert registry.search(q) == registry.search(q.model_copy(update={"mode": "keyword"}))
    with pytest.raises(semantic.SemanticUnavailable, match=r"\[semantic\]"):
        registry.search(SearchQuery(query="spooky monsters", mode="hybrid"))


def test_not_waiting_raises_where_a_search_would_load_update_or_wait_for_the_index(filled, monkeypatch) -> None:  # noqa: ANN001
    """``waits.not_waiting()`` (the server's event loop runs SQLite searches in it): a search that would
    load the model or the index, catch the index up after a write, or wait for another thread that holds the
    index or the model raises :class:`waits.WouldWait` and changes nothing; the same search outside the
    context does the work (or waits) and answers, and afterwards runs within the context."""
    q = SearchQuery(query="creepy undead beings", mode="semantic")

    def light() -> list[str]:
        with waits.not_waiting():
            return _names(filled.search(q))

    with pytest.raises(waits.WouldWait, match="index"):
        light()  # this process has not loaded the index yet (reset_cache)
    expected = _names(filled.search(q))
    assert expected and light() == expected
    with monkeypatch.context() as m:  # the model not loaded yet (a new process)
        model = semantic.embedder()
        m.setattr(semantic, "_embedder", None)
        with pytest.raises(waits.WouldWait, match="model"):
            light()
        assert semantic.embedder() is not model  # loaded again outside
    filled.import_records([rec(30, "Zombie Parade", ["horror", "creature"], description="Creepy undead beings marching.")])
    with pytest.raises(waits.WouldWait, match="up to date"):
        light()  # the write moved the database's counter: the index must catch up first
    assert "Zombie Parade" in _names(filled.search(q))
    assert "Zombie Parade" in light()
    with filled.reading() as raw:
        held = [semantic._slot_for(raw, semantic.embedder()).lock, semantic.embedder()._lock]
    for lock in held:  # another thread catching the index up (or rebuilding it), or encoding a batch
        lock.acquire()
        release = threading.Timer(0.3, lock.release)
        try:
            with pytest.raises(waits.WouldWait, match="another thread"):
                light()
            release.start()
            assert "Zombie Parade" in _names(filled.search(q))  # outside: waits for the lock, then answers
        finally:
            release.join()
        assert not lock.locked()
    assert "Zombie Parade" in light()


def test_generated_catalogue_semantic_search(corpus_registry) -> None:  # noqa: ANN001
    """On the generated catalogue (3,000 records of random combinations, so meaning is thin there): paraphrases
    of a concept and of a subject find records that carry them by meaning."""
    reg = corpus_registry
    for query, wanted, least in (("snowy winter weather", ("snow",), 6),
                                 ("medieval warriors in steel", ("warrior", "armor", "knight", "samurai"), 3)):
        found = reg.search(SearchQuery(query=query, mode="semantic", limit=10))
        text = [(r.name + " " + " ".join(r.tags)).lower() for r in found]
        assert sum(any(w in t for w in wanted) for t in text) >= least, (query, _names(found))
    keyword = reg.search(SearchQuery(query="snowy winter weather", mode="keyword", limit=10))
    assert sum("snow" in (r.name + " " + " ".join(r.tags)).lower() for r in keyword) < 3  # no stemming


def test_the_commands(registry, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """`lorahub search --mode` and `lorahub registry embed`: JSON on stdout, one line and exit 1 where semantic
    search cannot run, exit 2 for a mode that cannot go with the other options."""
    import json

    from click.testing import CliRunner

    from lorahub.cli.main import cli

    with monkeypatch.context() as m:
        m.setattr(semantic, "embedder", lambda: None)
        registry.import_records(RECORDS)
    db = ["--database", registry.url]
    run = CliRunner().invoke
    res = run(cli, ["search", "spooky", "monsters", "--mode", "semantic", *db])
    assert res.exit_code == 1 and "registry embed" in res.output and "Traceback" not in res.output
    res = run(cli, ["search", "spooky", "monsters", "--json", *db])  # auto: keyword without vectors
    assert res.exit_code == 0 and json.loads(res.stdout) == []
    res = run(cli, ["registry", "embed", "--json", *db])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["embedded"], out["kept"], out["model"]) == (len(RECORDS), 0, semantic.MODEL)
    semantic.reset_cache()
    found = json.loads(run(cli, ["search", "spooky", "monsters", "--json", *db]).stdout)
    assert found and "horror" in found[0]["tags"]
    res = run(cli, ["search", "giant", "robots", "--mode", "semantic", "--limit", "1", "--json", *db])
    assert json.loads(res.stdout)[0]["name"] == "Steel Titans"
    # a new command maps the cache file the first one wrote and finds the same
    semantic.reset_cache()
    again = json.loads(run(cli, ["search", "spooky", "monsters", "--json", *db]).stdout)
    assert again == found
    for bad in (["search", "anime", "--mode", "hybrid", "--sort", "newest"], ["search", "--hash", "abcdef0123", "--mode", "keyword"],
                ["search", "anime", "--mode", "fuzzy"]):
        res = run(cli, [*bad, *db])
        assert res.exit_code == 2 and "Traceback" not in res.output, bad
    monkeypatch.setattr(semantic, "installed", lambda: False)
    monkeypatch.setattr(semantic, "_embedder", None)
    res = run(cli, ["registry", "embed", *db])
    assert res.exit_code == 1 and "[semantic]" in res.output
