"""Search on the imported Civitai corpus (5,291 models, ../shared), on SQLite and PostgreSQL: extra checks on
real data that skip without it; test_search_generated.py tests every behaviour on a generated catalogue."""

from __future__ import annotations

import pytest

from lorahub.errors import UsageError
from lorahub.registry.drafts import AdapterDraft, FileDraft, VersionDraft
from lorahub.registry.text import words
from lorahub.schemas.registry import SearchQuery


def _has_word(r, word: str) -> bool:  # noqa: ANN001
    text = " ".join([r.name, r.title or "", *r.tags, *r.trigger_words])
    return word in words(text)


def test_anime_puts_relevant_adapters_first(civitai_registry) -> None:  # noqa: ANN001
    results = civitai_registry.search(SearchQuery(query="anime", limit=30, mode="keyword"))
    assert len(results) == 30
    assert all(_has_word(r, "anime") for r in results), [r.name for r in results if not _has_word(r, "anime")]
    # The first ones have it in the name, most downloaded first.
    assert all("anime" in words(r.name) for r in results[:10])
    assert [r.downloads for r in results[:10]] == sorted((r.downloads for r in results[:10]), reverse=True)
    assert results[0].score > results[-1].score


@pytest.mark.parametrize(
    "name",
    ["Detail Tweaker LoRA (细节调整LoRA)", "Cute_girl_mix4", "墨心 MoXin", "Anime Screencap Style LoRA"],
)
def test_exact_name_ranks_that_record_first(civitai_registry, name: str) -> None:  # noqa: ANN001
    results = civitai_registry.search(SearchQuery(query=name, limit=5))
    assert results[0].name == name
    assert results[0].score >= 4


def test_trigger_word_and_tag_queries(civitai_registry) -> None:  # noqa: ANN001
    assert civitai_registry.search(SearchQuery(query="mix4"))[0].name == "Cute_girl_mix4"
    hanfu = civitai_registry.search(SearchQuery(query="hanfu", limit=10))
    assert all(_has_word(r, "hanfu") for r in hanfu)


def test_no_stemming_anime_does_not_find_animal(civitai_registry, civitai_records) -> None:  # noqa: ANN001
    """Every match really contains the word 'anime' (no stemming: 'animal' and 'animation' do not match)."""
    by_source = {f"civitai:{r.id}": r for r in civitai_records}
    results = civitai_registry.search(SearchQuery(query="anime", limit=500, page=2, mode="keyword"))
    assert len(results) == 500
    for res in results:
        rec = by_source[res.source]
        text = " ".join([rec.name, *rec.tags, *(w for v in rec.versions for w in v.trigger_words), rec.description or ""])
        assert "anime" in words(text), rec.name


def test_several_words_and_the_or_fallback(civitai_registry) -> None:  # noqa: ANN001
    both = civitai_registry.search(SearchQuery(query="chinese dress", limit=10, mode="keyword"))
    assert both and all(_has_word(r, "chinese") or "chinese" in words(r.description or "") for r in both[:3])
    fallback = civitai_registry.search(SearchQuery(query="anime qqxyzzy", limit=5, mode="keyword"))
    assert fallback and all("anime" in words(r.name) for r in fallback)
    # Words that occur nowhere find nothing, by words or (the default, hybrid) by meaning.
    assert civitai_registry.search(SearchQuery(query="qqxyzzy zzqqx", mode="keyword")) == []
    assert civitai_registry.search(SearchQuery(query="qqxyzzy zzqqx")) == []


def test_filters(civitai_registry) -> None:  # noqa: ANN001
    sd2 = civitai_registry.search(SearchQuery(query="anime", base="sd2", limit=50))
    assert sd2 and all(r.base_family == "sd2" for r in sd2)
    tagged = civitai_registry.search(SearchQuery(query="girl", tags=["hanfu"], limit=50))
    assert tagged and all("hanfu" in r.tags for r in tagged)
    two_tags = civitai_registry.search(SearchQuery(tags=["hanfu", "chinese"], limit=50))
    assert two_tags and all({"hanfu", "chinese"} <= set(r.tags) for r in two_tags)
    author = civitai_registry.search(SearchQuery(author="CyberAIchemist"))
    assert author and all(r.author == "CyberAIchemist" for r in author)
    lic = civitai_registry.search(SearchQuery(query="style", license="creativeml-openrail-m", limit=50))
    assert lic and all(r.license == "creativeml-openrail-m" for r in lic)
    other = civitai_registry.search(SearchQuery(base="unknown", limit=20))
    assert other and all(r.base_family == "unknown" and r.base_model == "Other" for r in other)
    # Records carry no rank: a rank filter leaves nothing.
    assert civitai_registry.search(SearchQuery(query="anime", min_rank=4)) == []


def test_pagination_is_consistent(civitai_registry) -> None:  # noqa: ANN001
    for sort in ("relevance", "downloads", "newest"):
        whole = civitai_registry.search(SearchQuery(query="style", sort=sort, limit=40))
        p1 = civitai_registry.search(SearchQuery(query="style", sort=sort, limit=20, page=1))
        p2 = civitai_registry.search(SearchQuery(query="style", sort=sort, limit=20, page=2))
        assert [r.id for r in p1 + p2] == [r.id for r in whole], sort
        assert len({r.id for r in whole}) == 40


def test_sort_orders(civitai_registry) -> None:  # noqa: ANN001
    by_dl = civitai_registry.search(SearchQuery(query="girl", sort="downloads", limit=50))
    assert [r.downloads for r in by_dl] == sorted((r.downloads for r in by_dl), reverse=True)
    newest = civitai_registry.search(SearchQuery(query="girl", sort="newest", limit=50))
    dates = [r.published_at for r in newest]
    assert dates == sorted(dates, reverse=True)
    browse = civitai_registry.search(SearchQuery(limit=5))
    assert browse[0].name == "Detail Tweaker LoRA (细节调整LoRA)"  # the most downloaded


def test_results_carry_the_contract_fields(civitai_registry) -> None:  # noqa: ANN001
    r = civitai_registry.search(SearchQuery(query="Detail Tweaker LoRA", mode="keyword"))[0]
    data = r.model_dump(mode="json")
    for key in ("name", "source", "base_family", "format", "rank", "tags", "trigger_words", "sha256", "autov3", "score"):
        assert key in data
    assert r.source == "civitai:58390" and r.url == "https://civitai.com/models/58390"
    assert r.sha256 == "47aaaf0d2945ca937151d61304946dd229b3f072140b85484bc93e38f2a6e2f7"
    assert r.base_model == "SD 1.5" and r.base_family == "sd1"


def test_hash_lookup_like_civitai(civitai_registry) -> None:  # noqa: ANN001
    reg = civitai_registry
    for value, kind in [
        ("47AAAF0D29", "autov2"),
        ("47aaaf0d2945ca937151d61304946dd229b3f072140b85484bc93e38f2a6e2f7", "sha256"),
        ("2DAE719F", "autov1"),
        ("F1D60397", "crc32"),
        ("5664139789418CE9328FB4E71FF9380FFDBBA2268747A40C428ED9D35501C047", "blake3"),
        ("5664139789418ce9", "blake3"),
    ]:
        found = reg.by_hash(value)
        assert found and found[0].name == "Detail Tweaker LoRA (细节调整LoRA)", value
        assert kind in found[0].matched_hashes
        assert found[0].file_name == "add_detail.safetensors"
    # CRC32 printed little-endian (Civitai's scanner) matches too.
    assert reg.by_hash("9703D6F1")[0].matched_hashes == ["crc32"]
    assert reg.by_hash("0123456789abcdef") == []
    with pytest.raises(UsageError):
        reg.by_hash("47AAAF0")
    with pytest.raises(UsageError):
        reg.by_hash("not-a-hash")


def test_private_adapters_are_visible_to_their_owner_only(registry) -> None:  # noqa: ANN001
    from sqlalchemy import insert

    from lorahub.registry.tables import User

    with registry.writing() as conn:
        conn.execute(insert(User.__table__), [{"id": 1, "name": "alice", "created_at": __import__("datetime").datetime(2024, 1, 1)}])
    registry.upsert([
        AdapterDraft(source_kind="hub", source_key="hub:local/alice/secret", name="secret sauce", private=True,
                     owner_id=1, repo_id="alice/secret", tags=["style"],
                     versions=[VersionDraft(revision="a" * 40, files=[FileDraft(filename="x.safetensors",
                                                                               hashes={"sha256": "ab" * 32})])]),
        AdapterDraft(source_kind="hub", source_key="hub:local/bob/open", name="open sauce", tags=["style"]),
    ])
    assert [r.name for r in registry.search(SearchQuery(query="sauce"))] == ["open sauce"]
    assert sorted(r.name for r in registry.search(SearchQuery(query="sauce"), viewer=1)) == ["open sauce", "secret sauce"]
    assert [r.name for r in registry.search(SearchQuery(tags=["style"]))] == ["open sauce"]
    assert registry.by_hash("ab" * 32) == []
    secret = registry.by_hash("ab" * 32, viewer=1)[0]
    assert secret.source == "alice/secret@aaaaaaaaaaaa:" or secret.source.startswith("alice/secret@aaaaaaaaaaaa")
    # the Hub server's viewers (lorahub.registry.hub.access.private_view): several owners (a user and
    # their organisations), or everything (a server admin)
    from lorahub.registry.hub.access import PrivateView

    for view, sees in ((PrivateView(owners=(7, 1)), True), (PrivateView(owners=(7,)), False),
                       (PrivateView(), False), (PrivateView(everything=True), True)):
        names = sorted(r.name for r in registry.search(SearchQuery(query="sauce"), viewer=view))
        assert names == (["open sauce", "secret sauce"] if sees else ["open sauce"]), view
        assert [r.name for r in registry.search(SearchQuery(tags=["style"]), viewer=view)] != [] and \
            ("secret sauce" in [r.name for r in registry.search(SearchQuery(tags=["style"]), viewer=view)]) == sees
        assert bool(registry.by_hash("ab" * 32, viewer=view)) == sees, view


@pytest.mark.postgres
def test_sqlite_and_postgres_rank_identically(civitai_records, tmp_path) -> None:  # noqa: ANN001
    """Same records, same queries: the same adapters in the same order on both backends (hybrid, the
    default, and keyword)."""
    from testkit import create_pg_schema, drop_pg_schema, pg_admin_url

    from lorahub.registry.catalogue import Registry

    records = civitai_records[:1500]
    base = pg_admin_url()
    schema, pg_url = create_pg_schema(base)
    regs = [Registry(f"sqlite:///{tmp_path / 'parity.sqlite'}"), Registry(pg_url)]
    try:
        for reg in regs:
            reg.import_records(records)
        queries = [
            SearchQuery(query="anime"), SearchQuery(query="girl", page=2), SearchQuery(query="chinese dress"),
            SearchQuery(query="style", base="sd1", sort="newest"), SearchQuery(query="detail", sort="downloads"),
            SearchQuery(tags=["anime"]), SearchQuery(query="anime qqxyzzy"), SearchQuery(query="Cute_girl_mix4"),
            SearchQuery(query="character", tags=["girl"], limit=50), SearchQuery(author="mpmp"),
        ]
        for q in [*queries, *(q.model_copy(update={"mode": "keyword"}) for q in queries)]:
            a, b = ([(r.name, r.score) for r in reg.search(q)] for reg in regs)
            assert a == b, q
    finally:
        for reg in regs:
            reg.close()
        drop_pg_schema(base, schema)


def test_postgres_strategies_return_what_the_planner_returns(civitai_registry, civitai_records, monkeypatch) -> None:  # noqa: ANN001
    """PostgreSQL chooses per query between walking the order's index (bounded, continued or given
    up), collecting matches through the GIN indexes, reading a word's postings in popularity order
    (migration 0114), and reading every tier in one query when
    matches are few (registry/search.py). Whatever it chooses, the page must be exactly the one
    PostgreSQL's own plan returns; each path is forced in turn."""
    import random

    from lorahub.registry import database
    from lorahub.registry import search as S

    if civitai_registry.dialect != "postgresql":
        pytest.skip("PostgreSQL's search strategies (SQLite has its own, tested above)")
    civitai_registry.optimize()  # ANALYZE: the strategies need the statistics
    S._stats_cache.clear()
    rng = random.Random(5)
    queries = [SearchQuery(query=w, sort=s, page=p, limit=lim, mode="keyword")
               for w in ("anime", "girl", "style", "concept", "hanfu", "chinese dress", "anime qqxyzzy", "zzqqx")
               for s, p, lim in (("relevance", 1, 20), ("relevance", 3, 20), ("newest", 1, 20), ("downloads", 2, 30))]
    queries += [SearchQuery(query=rng.choice(r.name.split() or ["x"]), tags=r.tags[:1], base=b, mode="keyword")
                for r, b in zip(rng.sample(civitai_records, 12), ["sd1", "sd2", None] * 4, strict=True)]
    queries += [SearchQuery(tags=["hanfu"]), SearchQuery(base="sd2", sort="newest"), SearchQuery(tags=["style"], page=3)]
    queries += [SearchQuery(query=w, base="sd2", sort=s, mode="keyword") for w in ("anime", "girl") for s in ("newest", "relevance")]

    def pages() -> list[list[int]]:
        return [[r.id for r in civitai_registry.search(q)] for q in queries]

    queries += [SearchQuery(query=w, base="sd1", mode="keyword") for w in ("anime", "style", "woman")]

    with monkeypatch.context() as m:
        m.setattr(S._Postgres, "density", lambda self, *a: None)  # PostgreSQL's planner decides
        m.setattr(S._Postgres, "postable", lambda self: False)  # over the GIN indexes, not the postings
        expected = pages()
    assert sum(map(len, expected)) > 500

    seen: list[str] = []
    real = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        continued = (params or {}).get("w_skip") or (params or {}).get("w_after", -(1 << 63)) > -(1 << 63)
        seen.append(sql + (" -- continued" if continued else ""))
        return real(self, sql, params, **kw)

    monkeypatch.setattr(database.Raw, "all", spy)
    walks = lambda: sum("LIMIT :w_rows OFFSET :w_skip" in s for s in seen)  # noqa: E731
    gins = lambda: sum("MATERIALIZED" in s for s in seen)  # noqa: E731
    continued = lambda: sum(s.endswith("-- continued") for s in seen)  # noqa: E731
    fused = lambda: sum(" AS tier FROM" in s for s in seen)  # noqa: E731
    ranges = lambda: sum("FROM adapter_postings p WHERE" in s for s in seen)  # noqa: E731
    merged = lambda: sum("f0.tier = 0" in s for s in seen)  # noqa: E731
    probed = lambda: sum("f0.key = p.key OFFSET 0)" in s for s in seen)  # noqa: E731
    rare = lambda: sum("ts_match_vq" in s for s in seen)  # noqa: E731 - a rare token's rows, the words tested on each
    token_walks = lambda: sum(":walk_token" in s for s in seen)  # noqa: E731 - a walk of a filter token's postings
    assert pages() == expected  # the strategy as shipped
    assert walks() and gins() and fused() and ranges() and merged()
    for name, value, check in (
        ("FUSED_MAX_MATCHES", 1e12, fused),  # every tier from one query, whatever the matches
        ("FUSED_MAX_MATCHES", -1, walks),  # one query per tier, always
        ("GIN_ROW_COST", 1e9, walks),  # walk whenever there are statistics
        ("GIN_ROW_COST", 1e-9, gins),  # never walk
        ("WALK_MARGIN", 0.01, continued),  # walks that come back short: continued, then given up
        ("MAX_WALK_ROWS", 150, gins),
        ("POSTED_PROBE_COST", 0.0, probed),  # a filter token's entry probed for each of the word's entries
        ("POSTED_PROBE_COST", 1e12, lambda: merged() and not probed()),  # the ranges merged by the planner
        # filtered pages in popularity order from the rarest token's postings (words: tier by tier)
        ("TOKEN_WALK_ROW_COST", 0.0, lambda: token_walks() > 5),
        ("TOKEN_WALK_ROW_COST", 1e12, lambda: not token_walks()),  # never
        ("FILTER_ROW_COST", 0.0, rare),  # a filter token's rows read and the words tested, wherever there are tokens
        ("RARE_FILTER_MAX_ROWS", -1, lambda: not rare()),  # never
    ):
        seen.clear()
        with monkeypatch.context() as m:
            m.setattr(S, name, value)
            if name in ("WALK_MARGIN", "MAX_WALK_ROWS"):
                m.setattr(S, "GIN_ROW_COST", 1e9)
            if name == "TOKEN_WALK_ROW_COST" and value == 0:
                m.setattr(S, "FUSED_MAX_MATCHES", -1)
            if name == "GIN_ROW_COST" and value < 1:
                m.setattr(S, "GIN_ENTRY_COST", 0.0)
            if name == "FILTER_ROW_COST":
                m.setattr(S, "RARE_FILTER_MAX_ROWS", 1e12)
            assert pages() == expected, name
        assert check(), name


def test_results_are_the_models_model_construct_makes(civitai_registry) -> None:  # noqa: ANN001
    """Results are built without pydantic's per-field loop (registry/lookups.py ``_result``): each equals what
    ``model_construct`` makes of the same values, and what validating its dump makes, field set included;
    its JSON is the same, and it can be copied and changed like any model."""
    from pydantic import TypeAdapter

    from lorahub.schemas.registry import SearchResult

    results = civitai_registry.search(SearchQuery(query="anime", limit=50))
    assert results
    dump = TypeAdapter(list[SearchResult]).dump_json
    for r in results:
        made = SearchResult.model_construct(**{k: getattr(r, k) for k in SearchResult.model_fields})
        assert r == made == SearchResult.model_validate(r.model_dump())
        assert r.model_fields_set == made.model_fields_set and r.__dict__ == made.__dict__
        assert dump([r]) == dump([made]) and r.model_dump_json() == made.model_dump_json()
        copy = r.model_copy(update={"score": -1.0})
        assert copy.score == -1.0 and copy.id == r.id and r.score != -1.0
