"""Search on the generated catalogue (tests/corpuskit.py), on SQLite and PostgreSQL: every search
behaviour without ../shared. test_search.py repeats the main checks on the real Civitai corpus
when it is present.

Two kinds of checks: hand-written records planted in the catalogue (one per relevance tier, with
popularity reversed against the tiers, and near-misses), and a reference model of the documented
rules (registry/search.py: tiers, popularity inside a tier, the OR fallback, filters, sort
orders, pages) computed in Python over the records and compared with whole pages of results.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import pytest
from corpuskit import PLANTED_IDS

from lorahub.errors import UsageError
from lorahub.registry.text import join_lines, lines, norm_name, popularity, query_terms, words
from lorahub.schemas.registry import AdapterRecord, SearchQuery

#: The rules tested here are keyword search's (tiers, no stemming, the "any word" fallback): queries name that
#: mode, since the default is hybrid where the registry has embeddings (test_semantic.py tests that one).
KeywordQuery = partial(SearchQuery, mode="keyword")

FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux", "unknown")


def _key(value: str | None) -> str:
    """How a filter value is compared: its words run together, lower case (``Art Style`` = ``art-style``)."""
    return "".join(words(value))


@dataclass
class _Row:
    source: str
    name: str
    name_norm: str
    name_words: set[str]
    keyword_words: set[str]
    all_words: set[str]
    family: str
    base_key: str
    tags: set[str]
    author: str
    license: str
    downloads: int
    published: datetime


class Reference:
    """What a search must return, computed from the records by the documented rules.

    Tier 4: the name equals the query (words compared); 3: every query word in the name; 2: in the
    name, trigger words or tags; 1: anywhere, the description included. Inside a tier: most
    downloads first. A query of several words none of the adapters has all of matches any of them.
    The catalogue's downloads and dates are distinct, so every order is total.
    """

    def __init__(self, records: list[AdapterRecord]) -> None:
        self.rows = []
        for r in records:
            triggers = [*r.trigger_words, *(w for v in r.versions for w in v.trigger_words)]
            name_words = set(words(r.name))
            keyword_words = name_words | set(words(" ".join([*triggers, *r.tags])))
            family = r.base_family or "unknown"
            if family == "unknown":  # the newest version with a known family decides
                family = next((v.base_family for v in r.versions if v.base_family not in (None, "unknown")), "unknown")
            self.rows.append(_Row(
                source=f"{r.source}:{r.id}", name=r.name, name_norm=norm_name(r.name), name_words=name_words,
                keyword_words=keyword_words, all_words=keyword_words | set(words(r.description)), family=family,
                base_key=_key(r.base_model or next((v.base_model for v in r.versions if v.base_model), None)),
                tags={_key(t) for t in r.tags}, author=_key(r.author), license=_key(r.license),
                downloads=r.downloads, published=r.created_at,
            ))

    def _filtered(self, q: SearchQuery) -> list[_Row]:
        base = (q.base or "").strip().lower()
        want_tags = {_key(t) for t in q.tags}
        out = []
        for x in self.rows:
            if base and (x.family != base if base in FAMILIES else x.base_key != _key(base)):
                continue
            if not want_tags <= x.tags:
                continue
            if (q.author and x.author != _key(q.author)) or (q.license and x.license != _key(q.license)):
                continue
            if q.min_rank or q.max_rank:  # records carry no rank
                continue
            out.append(x)
        return out

    def search(self, q: SearchQuery) -> list[tuple[str, int]]:
        """(source, tier) of the page ``q`` asks for; tier 0 for other sort orders and browsing."""
        rows = self._filtered(q)
        terms = query_terms(q.query)
        start = (q.page - 1) * q.limit
        window = slice(start, start + q.limit)
        if not terms:
            key = (lambda x: x.published) if q.sort == "newest" else (lambda x: x.downloads)
            return [(x.source, 0) for x in sorted(rows, key=key, reverse=True)][window]
        every = any(all(t in x.all_words for t in terms) for x in rows)
        has = all if every or len(terms) == 1 else any

        def tier(x: _Row) -> int:
            if x.name_norm and x.name_norm == norm_name(q.query):
                return 4
            for level, found in ((3, x.name_words), (2, x.keyword_words), (1, x.all_words)):
                if has(t in found for t in terms):
                    return level
            return 0

        tiers = {x.source: tier(x) for x in rows}
        hits = [x for x in rows if tiers[x.source]]
        if q.sort == "relevance":
            hits.sort(key=lambda x: (tiers[x.source], x.downloads), reverse=True)
            return [(x.source, tiers[x.source]) for x in hits][window]
        key = (lambda x: x.published) if q.sort == "newest" else (lambda x: x.downloads)
        return [(x.source, 0) for x in sorted(hits, key=key, reverse=True)][window]


@pytest.fixture(scope="module")
def reference(corpus_records) -> Reference:  # noqa: ANN001
    return Reference(corpus_records)


def _page(reg, q: SearchQuery) -> list[tuple[str, int]]:  # noqa: ANN001
    results = reg.search(q)
    if q.sort == "relevance" and q.query and query_terms(q.query):
        for r in results:
            assert r.score == pytest.approx(int(r.score) + popularity(r.downloads)), (q, r.name)
        return [(r.source, int(r.score)) for r in results]
    return [(r.source, 0) for r in results]


def _queries(records: list[AdapterRecord]) -> list[SearchQuery]:
    authors = Counter(r.author for r in records)
    prolific = authors.most_common(1)[0][0]
    words_ = [
        "anime", "girl", "style", "watercolor", "ink wash", "chinese dress", "hanfu", "armor knight", "mix7",
        "Detail Tweaker LoRA", "the", "lora", "1girl", "masterpiece best quality", "animal", "animation",
        "水彩", "한복", "акварель", "ölgemälde", "ドット絵", "velvet lantern", "neon noir", "anime qqxyzzy",
        "velvet qqxyzzy", "qqxyzzy zzqqx", "kaede mori", "Aria Nightshade - kitsune mask", "sks style",
    ]
    out = [KeywordQuery(query=w, limit=50) for w in words_]
    out += [KeywordQuery(query=w, sort=s, page=p, limit=20) for w in ("anime", "style", "girl")
            for s in ("relevance", "newest", "downloads") for p in (1, 3)]
    out += [
        KeywordQuery(query="anime", base="sdxl", limit=50), KeywordQuery(query="style", base="pony", limit=50),
        KeywordQuery(query="girl", base="unknown", limit=50), KeywordQuery(query="style", base="sd2", limit=50),
        KeywordQuery(query="girl", tags=["hanfu"], limit=50), KeywordQuery(tags=["anime", "style"], limit=50),
        KeywordQuery(tags=["art style"], sort="newest", limit=30), KeywordQuery(author=prolific, limit=50),
        KeywordQuery(query="style", license="openrail++", limit=50), KeywordQuery(base="flux", sort="newest"),
        KeywordQuery(limit=25), KeywordQuery(limit=25, page=7, sort="newest"), KeywordQuery(query="anime", min_rank=4),
        KeywordQuery(query="watercolor", tags=["watercolor"], base="sd1", sort="downloads", limit=40),
        # no adapter has both words (with the filters, for the last two): pages of either word
        KeywordQuery(query="velvet qqxyzzy", limit=5, page=2), KeywordQuery(query="anime qqxyzzy", sort="newest", limit=10),
        KeywordQuery(query="anime qqxyzzy", sort="downloads", limit=10, page=3),
        KeywordQuery(query="velvet lantern", base="sd2", limit=20), KeywordQuery(query="chinese dress", base="sdxl", page=2),
    ]
    return out


def test_pages_are_what_the_documented_rules_give(corpus_registry, corpus_records, reference) -> None:  # noqa: ANN001
    """Whole pages (order and tier of every result) against the reference model, on both backends."""
    checked = 0
    for q in _queries(corpus_records):
        expected = reference.search(q)
        assert _page(corpus_registry, q) == expected, q
        checked += len(expected)
    assert checked > 1500  # the queries find plenty: the comparison is not between empty pages


def test_a_first_page_of_several_words_asks_no_existence_query(corpus_registry, monkeypatch) -> None:  # noqa: ANN001
    """Whether some adapter has every word of a query decides between "all of them" and "any": a first page
    answers it (empty, or not), later pages ask. (The pages themselves: test_pages_are_what_the_documented_rules_give.)"""
    from lorahub.registry import search as S

    asked: list[str] = []
    for cls in (S._SQLite, S._Postgres):
        monkeypatch.setattr(cls, "any_match", lambda self, _real=cls.any_match: asked.append(self.plan.mode) or _real(self))
    for query, page, questions in (("velvet lantern", 1, []), ("velvet lantern", 2, ["and"]), ("velvet qqxyzzy", 1, []),
                                   ("velvet qqxyzzy", 2, ["and"]), ("anime", 2, [])):
        asked.clear()
        assert corpus_registry.search(KeywordQuery(query=query, page=page, limit=5)), query
        assert asked == questions, (query, page)


def test_the_planted_tiers_in_order(corpus_registry) -> None:  # noqa: ANN001
    """'velvet lantern': every tier present, popularity reversed against the tiers."""
    results = corpus_registry.search(KeywordQuery(query="velvet lantern", limit=50))
    assert [(r.name, int(r.score)) for r in results] == [
        ("Velvet Lantern", 4),  # the name is the query
        ("VELVET-LANTERN", 4),  # ... compared as words (fewer downloads: second)
        ("Lantern of Velvet Nights [SDXL]", 3),  # both words in the name, 80,000 downloads
        ("Velvet Lantern Style", 3),  # 5,000
        ("velvet.lantern.v2", 3),  # 3,000
        ("Night Market", 2),  # a trigger word, 200,000
        ("Velvet Glow", 2),  # one word in the name, the other a tag, 50,000
        ("Festival Lights", 2),  # tags only, 1,000
        ("Harbor at Dusk", 1),  # the description only, the most downloaded of them all
    ]
    # One word only ("Velvet Skies") or "lanterns" ("Velvet Paper Lanterns") is no match: AND, no stemming.
    assert results[0].score > results[-1].score


@pytest.mark.parametrize(("query", "exact", "superset"), [
    ("Velvet Lantern", "Velvet Lantern", "Velvet Lantern Style"),
    ("neon noir", "Neon Noir", "Neon Noir City XL"),
    ("墨竹 Mozhu", "墨竹 Mozhu", "墨竹 Mozhu Ink Bamboo Deluxe"),
    ("cute girl MIX7", "Cute_girl_mix7", None),
])
def test_exact_name_beats_a_more_popular_superset(corpus_registry, query: str, exact: str, superset: str | None) -> None:  # noqa: ANN001
    results = corpus_registry.search(KeywordQuery(query=query, limit=50))
    assert (results[0].name, int(results[0].score)) == (exact, 4)
    if superset:
        other = next(r for r in results if r.name == superset)
        assert int(other.score) == 3 and other.downloads > results[0].downloads


def test_generated_names_rank_first(corpus_registry, corpus_records) -> None:  # noqa: ANN001
    """Names of every shape (CJK, Cyrillic, accents, brackets, underscores): an exact name query finds it first."""
    counts = Counter(norm_name(r.name) for r in corpus_records)
    unique = [r for r in corpus_records if counts[norm_name(r.name)] == 1 and int(r.id) not in PLANTED_IDS]
    sample = random.Random(7).sample(unique, 40)
    assert any(not r.name.isascii() for r in sample) and any("_" in r.name or "[" in r.name for r in sample)
    for rec in sample:
        first = corpus_registry.search(KeywordQuery(query=rec.name, limit=3))[0]
        assert (first.source, int(first.score)) == (f"civitai:{rec.id}", 4), rec.name


def test_a_trigger_word_outranks_the_description(corpus_registry) -> None:  # noqa: ANN001
    results = corpus_registry.search(KeywordQuery(query="qxlibrary"))
    assert [(r.name, int(r.score)) for r in results] == [("Quiet Library", 2), ("Old Archives", 1)]


def test_no_stemming(corpus_registry, corpus_records) -> None:  # noqa: ANN001
    """'anime' never finds 'animal' or 'animation', and 'lantern' never 'lanterns'."""
    def text(r: AdapterRecord) -> set[str]:
        return set(words(" ".join([r.name, *r.tags, *(w for v in r.versions for w in v.trigger_words), r.description or ""])))

    near = [r for r in corpus_records if text(r) & {"animal", "animation", "animatronic"} and "anime" not in text(r)]
    assert len(near) > 20  # the catalogue has the near-misses that make this meaningful
    found = {r.source for r in corpus_registry.search(KeywordQuery(query="anime", limit=500))}
    found |= {r.source for r in corpus_registry.search(KeywordQuery(query="anime", limit=500, page=2))}
    assert not found & {f"civitai:{r.id}" for r in near}
    by_source = {f"civitai:{r.id}": r for r in corpus_records}
    assert all("anime" in text(by_source[s]) for s in found) and len(found) > 400
    assert "Velvet Paper Lanterns" not in [r.name for r in corpus_registry.search(KeywordQuery(query="lantern", limit=50))]


def test_stop_words_and_the_or_fallback(corpus_registry) -> None:  # noqa: ANN001
    plain = corpus_registry.search(KeywordQuery(query="velvet lantern", limit=50))
    # "the" and "lora" are dropped; the name no longer equals the query, so no tier 4.
    worded = corpus_registry.search(KeywordQuery(query="The velvet LANTERN lora", limit=50))
    assert {r.id for r in worded} == {r.id for r in plain} and max(int(r.score) for r in worded) == 3
    # No adapter has both words: either one is enough.
    either = corpus_registry.search(KeywordQuery(query="velvet qqxyzzy", limit=50))
    names = {r.name for r in either}
    assert {"Velvet Skies", "Velvet Paper Lanterns", "Velvet Lantern"} <= names
    assert all("velvet" in words(" ".join([r.name, *r.tags, *r.trigger_words, r.description or ""])) for r in either)
    assert corpus_registry.search(KeywordQuery(query="qqxyzzy zzqqx")) == []


def test_filters(corpus_registry, corpus_records) -> None:  # noqa: ANN001
    sdxl = corpus_registry.search(KeywordQuery(query="anime", base="sdxl", limit=50))
    assert sdxl and all(r.base_family == "sdxl" for r in sdxl)
    pony = corpus_registry.search(KeywordQuery(base="pony", limit=50))
    assert pony and all(r.base_family == "sdxl" and r.base_model == "Pony" for r in pony)
    tagged = corpus_registry.search(KeywordQuery(query="girl", tags=["hanfu"], limit=50))
    assert tagged and all("hanfu" in r.tags for r in tagged)
    two_tags = corpus_registry.search(KeywordQuery(tags=["anime", "style"], limit=50))
    assert two_tags and all({"anime", "style"} <= set(r.tags) for r in two_tags)
    author = Counter(r.author for r in corpus_records).most_common(1)[0][0]
    mine = corpus_registry.search(KeywordQuery(author=author, limit=100))
    assert len(mine) == sum(r.author == author for r in corpus_records) > 1
    lic = corpus_registry.search(KeywordQuery(query="style", license="openrail++", limit=50))
    assert lic and all(r.license == "openrail++" and r.base_family == "sdxl" for r in lic)
    other = corpus_registry.search(KeywordQuery(base="unknown", limit=20))
    assert other and all(r.base_family == "unknown" for r in other)
    assert corpus_registry.search(KeywordQuery(query="anime", min_rank=4)) == []  # records carry no rank


def test_pagination_is_consistent(corpus_registry) -> None:  # noqa: ANN001
    for sort in ("relevance", "downloads", "newest"):
        whole = corpus_registry.search(KeywordQuery(query="style", sort=sort, limit=40))
        p1 = corpus_registry.search(KeywordQuery(query="style", sort=sort, limit=20, page=1))
        p2 = corpus_registry.search(KeywordQuery(query="style", sort=sort, limit=20, page=2))
        assert [r.id for r in p1 + p2] == [r.id for r in whole], sort
        assert len({r.id for r in whole}) == 40


def test_sort_orders(corpus_registry, corpus_records) -> None:  # noqa: ANN001
    by_dl = corpus_registry.search(KeywordQuery(query="girl", sort="downloads", limit=50))
    assert [r.downloads for r in by_dl] == sorted((r.downloads for r in by_dl), reverse=True)
    newest = corpus_registry.search(KeywordQuery(query="girl", sort="newest", limit=50))
    dates = [r.published_at for r in newest]
    assert len(dates) == 50 and dates == sorted(dates, reverse=True)
    top = max(corpus_records, key=lambda r: r.downloads)
    assert corpus_registry.search(KeywordQuery(limit=5))[0].name == top.name  # browsing: the most downloaded


def test_results_carry_the_contract_fields(corpus_registry, corpus_records) -> None:  # noqa: ANN001
    rec = next(r for r in corpus_records if r.name == "Night Market")
    r = corpus_registry.search(KeywordQuery(query="Night Market"))[0]
    data = r.model_dump(mode="json")
    for key in ("name", "source", "base_family", "format", "rank", "tags", "trigger_words", "sha256", "autov3", "score"):
        assert key in data
    assert r.source == f"civitai:{rec.id}" and r.url == f"https://civitai.com/models/{rec.id}"
    primary = rec.versions[0].files[0]
    assert r.sha256 == primary.hashes["sha256"] and r.file_name == primary.name
    assert (r.base_model, r.base_family, r.license) == ("SD 1.5", "sd1", "creativeml-openrail-m")
    assert r.tags == rec.tags and "velvet lantern" in r.trigger_words and r.author == "planted_author"


def test_hash_lookup_like_civitai(corpus_registry, corpus_records) -> None:  # noqa: ANN001
    reg = corpus_registry
    rec = next(r for r in corpus_records if len(r.versions) == 3 and r.versions[2].files[0].hashes.get("autov1"))
    for version in (rec.versions[0], rec.versions[2]):
        f = version.files[0]
        h = f.hashes  # lower case; Civitai shows upper case: both match
        for value, kind in [(h["autov2"].upper(), "autov2"), (h["sha256"], "sha256"), (h["crc32"].upper(), "crc32"),
                            (h["blake3"].upper(), "blake3"), (h["blake3"][:16], "blake3"), (h["sha256"][:12], "sha256")]:
            found = reg.by_hash(value)
            assert found and found[0].source == f"civitai:{rec.id}", (value, kind)
            assert kind in found[0].matched_hashes and found[0].file_name == f.name and found[0].version == version.name
    autov1 = rec.versions[2].files[0].hashes["autov1"]
    assert "autov1" in reg.by_hash(autov1)[0].matched_hashes
    # CRC32 printed little-endian (Civitai's scanner) matches too.
    crc = rec.versions[0].files[0].hashes["crc32"]
    swapped = "".join(reversed([crc[i : i + 2] for i in range(0, 8, 2)]))
    assert "crc32" in next(m for m in reg.by_hash(swapped) if m.source == f"civitai:{rec.id}").matched_hashes
    assert reg.by_hash("0123456789abcdef0123") == []
    with pytest.raises(UsageError):
        reg.by_hash("47AAAF0")
    with pytest.raises(UsageError):
        reg.by_hash("not-a-hash")


def test_postgres_strategies_return_what_the_planner_returns(corpus_registry, corpus_records, monkeypatch) -> None:  # noqa: ANN001
    """PostgreSQL chooses per query between walking the order's index, collecting matches through the
    GIN indexes, reading a word's postings in order (migration 0114; with filters, their bits first: 0117), and
    reading every tier in one query (registry/search.py); whatever it chooses, the page is the one PostgreSQL's
    own plan returns. Each path is forced in turn (as test_search.py does on the real corpus)."""
    from lorahub.registry import database
    from lorahub.registry import search as S

    if corpus_registry.dialect != "postgresql":
        pytest.skip("PostgreSQL's search strategies (SQLite has its own, tested above)")
    corpus_registry.optimize()  # ANALYZE: the strategies need the statistics
    S._stats_cache.clear()
    rng = random.Random(5)
    queries = [KeywordQuery(query=w, sort=s, page=p, limit=lim)
               for w in ("anime", "girl", "style", "concept", "hanfu", "chinese dress", "anime qqxyzzy", "zzqqx")
               for s, p, lim in (("relevance", 1, 20), ("relevance", 3, 20), ("newest", 1, 20), ("downloads", 2, 30))]
    queries += [KeywordQuery(query=rng.choice(r.name.split() or ["x"]), tags=r.tags[:1], base=b)
                for r, b in zip(rng.sample(corpus_records, 12), ["sd1", "sdxl", None] * 4, strict=True)]
    queries += [KeywordQuery(tags=["hanfu"]), KeywordQuery(base="sdxl", sort="newest"), KeywordQuery(tags=["style"], page=3)]
    queries += [KeywordQuery(query=w, base=b, limit=50) for w in ("anime", "girl", "style") for b in ("sd1", "sdxl")]
    queries += [KeywordQuery(query="style", tags=t, base=b, limit=50) for t, b in ((["woman"], None), (["watercolor"], "sd1"))]
    queries += [KeywordQuery(query="style", tags=["watercolor"], sort=s) for s in ("newest", "downloads")]
    queries += [KeywordQuery(tags=["watercolor"], base="sdxl", limit=50)]  # the tag's first window of entries falls short

    def pages() -> list[list[int]]:
        return [[r.id for r in corpus_registry.search(q)] for q in queries]

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
    indexed = lambda: sum("string_to_array(a.search_facets" in s for s in seen)  # noqa: E731
    tested = lambda: sum("strpos(' ' || a.search_facets" in s and ":walk_token" not in s for s in seen)  # noqa: E731
    ranges = lambda: sum("FROM adapter_postings p WHERE" in s for s in seen)  # noqa: E731
    merged = lambda: sum("f0.tier = 0" in s for s in seen)  # noqa: E731
    probed = lambda: sum("f0.key = p.key OFFSET 0)" in s for s in seen)  # noqa: E731
    rare = lambda: sum("ts_match_vq" in s for s in seen)  # noqa: E731 - a rare token's rows, the words tested on each
    token_walks = lambda: sum(":walk_token" in s for s in seen)  # noqa: E731 - a walk of a filter token's postings
    token_continued = lambda: sum(":walk_token" in s and s.endswith("-- continued") for s in seen)  # noqa: E731
    bits = lambda: sum("p.facet_bits_0" in s for s in seen)  # noqa: E731 - filter bits (migration 0117)
    assert pages() == expected  # the strategy as shipped
    assert walks() and gins() and fused() and ranges() and merged()
    for name, value, check in (
        ("FACET_INDEX_RATIO", 1e12, lambda: indexed() and not tested()),
        ("FACET_INDEX_RATIO", 0.0, tested),  # (a filter without words is still read from the index)
        ("FUSED_MAX_MATCHES", 1e12, fused),
        ("FUSED_MAX_MATCHES", -1, walks),
        ("GIN_ROW_COST", 1e9, walks),
        ("GIN_ROW_COST", 1e-9, gins),
        ("WALK_MARGIN", 0.01, lambda: continued() and token_continued()),  # (a token's: windows growing twofold)
        ("MAX_WALK_ROWS", 150, gins),
        # a filter token's entry probed for each of the word's entries whose filter bits may hold it
        ("POSTED_PROBE_COST", 0.0, lambda: probed() and bits()),
        ("POSTED_PROBE_COST", 1e12, lambda: merged() and not probed() and not bits()),  # the ranges merged
        # filtered pages in popularity order from the rarest token's postings (words: tier by tier)
        ("TOKEN_WALK_ROW_COST", 0.0, lambda: token_walks() > 5),
        ("TOKEN_WALK_ROW_COST", 1e12, lambda: not token_walks()),  # never
        ("FILTER_ROW_COST", 0.0, rare),  # a filter token's rows read and the words tested, wherever there are tokens
        ("RARE_FILTER_MAX_ROWS", -1, lambda: not rare()),
    ):
        seen.clear()
        with monkeypatch.context() as m:
            m.setattr(S, name, value)
            if name in ("WALK_MARGIN", "MAX_WALK_ROWS"):
                m.setattr(S, "GIN_ROW_COST", 1e9)
            if name == "WALK_MARGIN":
                m.setattr(S, "TOKEN_WALK_ROW_COST", 0.0)  # filtered pages from their tokens' walks wherever they can
            if name == "TOKEN_WALK_ROW_COST" and value == 0:
                m.setattr(S, "FUSED_MAX_MATCHES", -1)
            if name == "GIN_ROW_COST" and value < 1:
                m.setattr(S, "GIN_ENTRY_COST", 0.0)
            if name == "FILTER_ROW_COST":
                m.setattr(S, "RARE_FILTER_MAX_ROWS", 1e12)
            assert pages() == expected, name
        assert check(), name


def _common_and_rare(records, *, rare_tag_count: int) -> tuple[str, str, str, str]:  # noqa: ANN001
    """The corpus's most common tag, a tag on ``rare_tag_count`` records, its most common word of a name and a
    word of a single name."""
    tags = Counter(t for r in records for t in r.tags)
    names = Counter(w for r in records for w in words(r.name))
    return (tags.most_common(1)[0][0], next(t for t, n in tags.items() if n == rare_tag_count),
            names.most_common(1)[0][0], next(w for w, n in names.items() if n == 1 and w.isalpha() and len(w) > 4))


def test_postgres_reads_a_filter_token_from_its_index_only_when_it_is_rare_beside_the_words(  # noqa: ANN001
        corpus_registry, corpus_records) -> None:  # noqa: ANN001
    """A filter token on many more rows than the words match is tested on each of the words' rows, in a form
    no index answers: PostgreSQL's planner read a common token's whole posting list to AND it with a word's few
    rows (42,000 entries of a tag for 1,948 rows at 100k adapters, 6.6 ms against about 1). A rare token is
    read from the index. (Pages are the planner's either way: the strategies test above.)"""
    from lorahub.registry import search as S

    if corpus_registry.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    corpus_registry.optimize()
    S._stats_cache.clear()
    common_tag, rare_tag, common_word, rare_word = _common_and_rare(corpus_records, rare_tag_count=1)

    def forms(word: str, tag: str) -> tuple[bool, bool]:
        backend = S._Postgres(raw, S.plan_for(KeywordQuery(query=word, tags=[tag]), None))
        params: dict = {}
        sql = " ".join(backend.filters(params, backend.matches("search_vector")))
        return "string_to_array" in sql, "strpos" in sql

    with corpus_registry.reading() as raw:
        assert forms(rare_word, common_tag) == (False, True)  # a test of a handful of rows
        assert forms(common_word, rare_tag) == (True, False)  # the index: one entry
        assert S._Postgres(raw, S.plan_for(KeywordQuery(tags=[common_tag]), None)).facet_sql({}) == [
            "string_to_array(a.search_facets, ' ') @> CAST(:facets AS text[])"]  # no words: the planner's choice


def test_postgres_reads_a_rare_filter_tokens_rows_and_tests_the_words_on_each(corpus_registry, corpus_records,  # noqa: ANN001
                                                                            monkeypatch) -> None:  # noqa: ANN001
    """A filter token on few adapters beside a common word's matches: its rows are read from the tokens' index
    and the words tested on each, in a form no index answers (``ts_match_vq``), by relevance and by date. The
    planner had ANDed the token's entries with every entry of the word's GIN index (24,567 for "woman" to keep
    18 of base SD 2's 529 rows at 100k adapters: 9.4 ms in two statements, 1.6 in one). A rare word beside a
    common token keeps the words' index. The pages equal the planner's own (and the strategies test above)."""
    from lorahub.registry import database
    from lorahub.registry import search as S

    if corpus_registry.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    corpus_registry.optimize()
    S._stats_cache.clear()
    common_tag, rare_tag, common_word, rare_word = _common_and_rare(corpus_records, rare_tag_count=2)
    seen: list[tuple[str, dict]] = []
    real = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append((sql, dict(params or {})))
        return real(self, sql, params, **kw)

    with corpus_registry.reading() as raw:
        stats = S._pg_stats(raw)
        assert S._Postgres(raw, S.plan_for(KeywordQuery(query=common_word, tags=[rare_tag]), None)).rare_filter(stats)
        assert S._Postgres(raw, S.plan_for(KeywordQuery(query=rare_word, tags=[common_tag]), None)).rare_filter(stats) is None
        assert S._Postgres(raw, S.plan_for(KeywordQuery(query=common_word), None)).rare_filter(stats) is None
    for sort in ("relevance", "newest"):
        for q in (KeywordQuery(query=common_word, tags=[rare_tag], sort=sort),
                  SearchQuery(query=common_word, tags=[rare_tag], sort=sort, mode="hybrid" if sort == "relevance" else "keyword")):
            with monkeypatch.context() as m:
                m.setattr(S, "RARE_FILTER_MAX_ROWS", -1)
                expected = [r.id for r in corpus_registry.search(q)]
            seen.clear()
            with monkeypatch.context() as m:
                m.setattr(database.Raw, "all", spy)
                assert [r.id for r in corpus_registry.search(q)] == expected, q
            statements = [(sql, params) for sql, params in seen if "ts_match_vq" in sql]
            assert len(statements) == 1, [sql for sql, _ in seen]  # every tier (or the sorted page) in one
            sql, params = statements[0]
            with corpus_registry.reading() as raw:
                plan = "\n".join(r[0] for r in raw.all("EXPLAIN " + sql, params))
            assert "ix_adapters_facets" in plan and "ix_adapters_search_vector" not in plan, plan


def test_postgres_existence_checks_read_the_index_for_words_that_match_nothing(corpus_registry, corpus_records,  # noqa: ANN001
                                                                               monkeypatch) -> None:  # noqa: ANN001
    """Hybrid search asks PostgreSQL whether any adapter has a word, or a word's stem, of the query. Asked
    with a bare ``LIMIT 1`` the planner walked the whole table for gibberish, expecting a match soon (72 ms at
    20,000 rows, about 5x at 100,000: the hybrid HTTP p99 on PostgreSQL); asked through a capped materialized
    CTE it reads the GIN index. The answers are the same. (The bare form's walk shows at the real corpus's
    statistics and size only: at 20,000 resampled Civitai records it planned a sequential scan, 72 ms, where
    the capped check reads the index in 0.05 ms; on these 3,018 generated records both read the index. What
    this test holds is that the check as run reads the index and answers right.)"""
    from lorahub.registry import database
    from lorahub.registry import search as S

    if corpus_registry.dialect != "postgresql":
        pytest.skip("PostgreSQL's plans")
    corpus_registry.optimize()  # ANALYZE: the planner's estimates
    seen: list[tuple[str, dict]] = []
    real = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append((sql, dict(params or {})))
        return real(self, sql, params, **kw)

    common = Counter(w for r in corpus_records for w in words(r.name)).most_common(1)[0][0]
    with corpus_registry.reading() as raw:
        # The planner's statistics (pg_stats, kept per database) are read before the checks are watched: a
        # first search in the process reads them within the checks (a catalogue query, not one of them).
        S._stats_cache.pop(raw.key, None)
        S._pg_stats(raw)
        gibberish = S._Postgres(raw, S.plan_for(SearchQuery(query="qwertyuiop asdf"), None))
        with monkeypatch.context() as m:
            m.setattr(database.Raw, "all", spy)
            assert gibberish.any_prefix(["qwertyui", "asdf"]) is False
            assert gibberish.any_match() is False
        assert S._Postgres(raw, S.plan_for(SearchQuery(query=common), None)).any_match() is True
        assert S._Postgres(raw, S.plan_for(SearchQuery(query=common), None)).any_prefix([common[:4]]) is True
        for sql, params in seen:
            plan = "\n".join(r[0] for r in raw.all("EXPLAIN " + sql, params))
            assert ("Index Scan" in plan or "Index Only Scan" in plan) and "Seq Scan" not in plan, plan


def test_list_columns_keep_their_entries_one_a_line() -> None:
    """tags_text and trigger_words_text (registry/rows.py writes them; search results, the Civitai API, the
    embeddings and the vector index read them through lines())."""
    entries = ["anime style", "Sks Dog", "a,b"]
    assert join_lines(entries) == "anime style\nSks Dog\na,b"
    assert lines(join_lines(entries)) == entries
    assert lines(None) == [] and lines("") == []
    assert lines("a\n\nb\n") == ["a", "b"]  # an empty line (a column written in SQL) is no entry

