"""PostgreSQL's word postings (migration 0114, ``adapter_postings``): a keyword tier's most popular matches
of one word are an index range. The table is kept by triggers, so it must equal what the adapters' rows
say after every kind of write, through lorahub or in plain SQL, and the searches that read it must show
what the GIN indexes show (registry/search.py, ``_Postgres.posted``; whole pages against the documented
rules: test_search_generated.py)."""

from __future__ import annotations

import re

import pytest

from lorahub.schemas.registry import AdapterRecord, SearchQuery

# the registry's db_url fixture, on PostgreSQL only
pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

CAP, MASK = (1 << 30) - 1, (1 << 32) - 1


def _record(i: int, name: str, tags: list[str], downloads: int, description: str = "") -> AdapterRecord:
    return AdapterRecord(source="t", id=str(i), name=name, tags=tags, downloads=downloads, description=description,
                         trigger_words=[f"trig{i}"],
                         files=[{"name": f"f{i}.safetensors", "hashes": {"sha256": f"{i:064x}"}}])


RECORDS = [
    _record(1, "Velvet Lantern Style", ["lantern", "style"], 50, "a lamp in the dark"),
    _record(2, "Lantern Festival", ["festival", "night"], 900, "paper lanterns"),
    _record(3, "Night Market", ["lantern", "street"], 300, "busy stalls"),
    _record(4, "Velvet Dress", ["clothing", "velvet"], 10),
    _record(5, "Ink Lantern", ["ink", "style"], 70, "sumi-e lantern"),
]


def _postings(conn, bits: bool = True) -> set[tuple]:  # noqa: ANN001
    from sqlalchemy import text

    columns = "word, tier, key, private_owner" + (", facet_bits_0, facet_bits_1" if bits else "")
    return {tuple(r) for r in conn.execute(text(f"SELECT {columns} FROM adapter_postings"))}


def _bits(conn, tokens: list[str]) -> tuple[int, int]:  # noqa: ANN001
    """The 128-bit filter of ``tokens`` as migration 0117 documents it, computed here from PostgreSQL's
    ``hashtext`` of each: bits ``h & 127``, ``(h >> 7) & 127`` and ``(h >> 14) & 127``, bit b being bit ``b & 63`` of half ``b >> 6``
    (as signed 64-bit integers)."""
    from sqlalchemy import text

    halves = [0, 0]
    for token in tokens:
        h = conn.execute(text("SELECT hashtext(:t)"), {"t": token}).scalar()
        for b in (h & 127, (h >> 7) & 127, (h >> 14) & 127):
            halves[b >> 6] |= 1 << (b & 63)
    return tuple(v - (1 << 64) if v >= 1 << 63 else v for v in halves)


def _expected(conn) -> set[tuple]:  # noqa: ANN001
    """The postings the adapters' rows call for, computed here: each distinct word of the name/title (tier 3)
    or else of the trigger words and tags (tier 2), and each filter token (tier 0), keyed by (capped downloads,
    most first; id, newest first), with the owner of a private adapter (-1 for none), a word's with the filter
    of its adapter's tokens (:func:`_bits`; a token's own, none). The words are PostgreSQL's own lexemes of the
    vectors."""
    from sqlalchemy import text

    out = set()
    rows = conn.execute(text("SELECT id, downloads, private, owner_id, search_facets, "
                             "tsvector_to_array(name_vector) AS n, tsvector_to_array(keywords_vector) AS k FROM adapters"))
    for r in rows.all():
        key = ((CAP - min(max(r.downloads, 0), CAP)) << 32) | (MASK - r.id)
        owner = (r.owner_id if r.owner_id is not None else -1) if r.private else None
        bits = _bits(conn, r.search_facets.split())
        for word in set(r.n) | set(r.k):
            out.add((word, 3 if word in r.n else 2, key, owner, *bits))
        for token in set(r.search_facets.split()):
            out.add((token, 0, key, owner, 0, 0))
    return out


def _names(reg, query: str, viewer: int | None = None, **kw) -> list[str]:  # noqa: ANN001, ANN003
    return [r.name for r in reg.search(SearchQuery(query=query, mode="keyword", **kw), viewer=viewer)]


def test_the_postings_follow_every_write_of_the_adapters(registry) -> None:  # noqa: ANN001
    from sqlalchemy import text

    reg = registry
    reg.import_records(RECORDS)

    def check() -> None:
        with reg.engine.connect() as conn:
            got, want = _postings(conn), _expected(conn)
        assert got == want
        assert {p[1] for p in got} == {0, 2, 3}

    check()
    with reg.engine.connect() as conn:
        assert ("lantern", 3) in {p[:2] for p in _postings(conn)}
    assert _names(reg, "lantern") == ["Lantern Festival", "Ink Lantern", "Velvet Lantern Style", "Night Market"]

    # lorahub replaces a record: words gone and new, downloads changed
    reg.import_records([_record(3, "Night Bazaar", ["street"], 5000)])
    check()
    assert "Night Bazaar" not in _names(reg, "lantern")

    with reg.engine.begin() as conn:  # behind lorahub's back
        conn.execute(text("UPDATE adapters SET downloads = 10000 WHERE name = 'Velvet Lantern Style'"))
    check()
    assert _names(reg, "lantern")[0] == "Velvet Lantern Style"

    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE adapters SET tags_text = 'lantern' WHERE name = 'Velvet Dress'"))
    check()
    assert "Velvet Dress" in _names(reg, "lantern")
    assert _names(reg, "lantern", base="sdxl") == []
    with reg.engine.begin() as conn:  # the filter tokens alone
        conn.execute(text("UPDATE adapters SET search_facets = search_facets || ' zbsdxl' WHERE name = 'Velvet Dress'"))
    check()
    assert _names(reg, "lantern", base="sdxl") == ["Velvet Dress"]

    with reg.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, name, is_admin, created_at) VALUES (7, 'alice', false, now())"))
        conn.execute(text("UPDATE adapters SET private = true, owner_id = 7 WHERE name = 'Lantern Festival'"))
        conn.execute(text("UPDATE adapters SET private = true WHERE name = 'Ink Lantern'"))  # no owner
    check()
    assert _names(reg, "lantern") == ["Velvet Lantern Style", "Velvet Dress"]
    assert _names(reg, "lantern", viewer=7) == ["Velvet Lantern Style", "Lantern Festival", "Velvet Dress"]

    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE adapters SET private = false WHERE name = 'Lantern Festival'"))
        conn.execute(text("UPDATE adapters SET updated_at = now()"))  # no word, key or visibility changed
    check()

    aid = next(r.id for r in reg.search(SearchQuery(query="Velvet Dress", mode="keyword")))
    reg.remove([aid])
    check()
    with reg.engine.begin() as conn:
        conn.execute(text("DELETE FROM adapters WHERE name = 'Lantern Festival'"))
    check()
    assert _names(reg, "lantern") == ["Velvet Lantern Style"]


def test_the_migration_fills_the_postings_of_the_adapters_already_there(registry) -> None:  # noqa: ANN001
    from alembic import command
    from sqlalchemy import text

    from lorahub.registry.migrations import alembic_config, head_revision

    registry.import_records(RECORDS)
    with registry.engine.connect() as conn:
        command.downgrade(alembic_config(connection=conn), "0113_embedding_removal_trigger")
        conn.commit()
        assert conn.execute(text("SELECT to_regclass('adapter_postings')")).scalar() is None
        conn.execute(text("UPDATE adapters SET downloads = downloads + 1"))  # written with no trigger
        conn.commit()
    assert registry.migrate()[1] == head_revision()
    with registry.engine.connect() as conn:
        got = _postings(conn)
        assert got == _expected(conn) and len(got) > 20
        # 0117 down: the postings of 0114, kept by 0114's triggers; and up again
        command.downgrade(alembic_config(connection=conn), "0116_result_rows_version")
        conn.commit()
        assert _postings(conn, bits=False) == {p[:4] for p in got}
        conn.execute(text("UPDATE adapters SET downloads = downloads + 1"))
        conn.commit()
        assert _postings(conn, bits=False) == {p[:4] for p in _expected(conn)}
        assert conn.execute(text("SELECT to_regprocedure('lorahub_facet_bits(text, integer)')")).scalar() is None
    assert registry.migrate()[1] == head_revision()
    with registry.engine.connect() as conn:
        assert _postings(conn) == _expected(conn)


def test_a_one_word_tier_is_an_index_range(registry, monkeypatch) -> None:  # noqa: ANN001
    """A word's tier is the first entries of its range, merged with its filter tokens' ranges (no row of
    ``adapters`` read: the page's own rows aside); the pages are those of the GIN path. (Five adapters: every tier would be read in one statement, as for
    any word with few matches, so that shortcut is turned off.)"""
    from lorahub.registry import database
    from lorahub.registry import search as S

    def vacuums() -> int:
        with registry.reading() as raw:
            return raw.all("SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = "
                           "CAST('adapter_postings' AS regclass)")[0][0]

    registry.import_records(RECORDS)
    before = vacuums()
    # After a bulk write the postings are vacuumed: their pages marked all-visible (where no older transaction
    # is open), so their index-only scans read no table page.
    registry.optimize()
    assert vacuums() == before + 1
    monkeypatch.setattr(S, "FUSED_MAX_MATCHES", -1)
    seen: list[tuple[str, dict]] = []
    real = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append((sql, dict(params or {})))
        return real(self, sql, params, **kw)

    queries = [SearchQuery(query=w, mode="keyword", limit=lim) for w in ("lantern", "style", "velvet", "trig2")
               for lim in (1, 2, 20)]
    queries += [SearchQuery(query=w, mode="keyword", base="unknown", tags=tags) for w in ("lantern", "style")
                for tags in ([], ["style"], ["lantern", "night"])]
    with monkeypatch.context() as m:
        m.setattr(S._Postgres, "postable", lambda self: False)
        expected = [[r.id for r in registry.search(q)] for q in queries]
    monkeypatch.setattr(database.Raw, "all", spy)
    assert [[r.id for r in registry.search(q)] for q in queries] == expected
    ranges = [(sql, params) for sql, params in seen if "FROM adapter_postings p WHERE" in sql]
    assert ranges and any("f0.tier = 0" in sql for sql, _ in ranges) and any("f1.tier = 0" in sql for sql, _ in ranges)
    tiers_by_gin = ("WHERE a.name_vector @@ CAST(:q AS tsquery)", "WHERE a.keywords_vector @@ CAST(:q AS tsquery)")
    assert not [sql for sql, _ in seen if any(t in sql for t in tiers_by_gin)]
    with registry.reading() as raw:
        with raw.dbapi.cursor() as cur:
            cur.execute("SET enable_seqscan = off")  # five adapters' postings are read whole otherwise
        try:
            for sql, params in ranges:
                plan = "\n".join(r[0] for r in raw.all("EXPLAIN " + sql, params))
                assert "Index Only Scan using pk_adapter_postings" in plan and "Sort Key: p.key" not in plan, plan
        finally:
            with raw.dbapi.cursor() as cur:
                cur.execute("RESET enable_seqscan")


def test_exact_names_come_first_and_leave_the_name_tier(registry, monkeypatch) -> None:  # noqa: ANN001
    """Tiers 4, 3 and 2 of a one-word query are read in one statement; the exact names, popular ones here, are
    left out of tier 3's rows, which still hold the page's share of tier 3. Pages and their tiers equal the GIN
    path's."""
    from lorahub.registry import search as S

    monkeypatch.setattr(S, "FUSED_MAX_MATCHES", -1)
    records = [_record(100 + i, "Lantern", ["night"], 9000 + i) for i in range(12)]
    records += [_record(200 + i, f"Lantern Glow {i}", ["lamp"], 1000 + i) for i in range(30)]
    records += [_record(300 + i, f"Paper Lamp {i}", ["lantern"], 5000 + i) for i in range(12)]
    registry.import_records(records)
    registry.optimize()
    queries = [SearchQuery(query="lantern", mode="keyword", limit=lim, page=page)
               for lim, page in ((5, 1), (10, 2), (20, 1), (20, 2), (20, 3), (50, 1), (100, 1))]
    got = [[(r.name, int(r.score)) for r in registry.search(q)] for q in queries]
    with monkeypatch.context() as m:
        m.setattr(S._Postgres, "postable", lambda self: False)
        assert got == [[(r.name, int(r.score)) for r in registry.search(q)] for q in queries]
    assert [t for _, t in got[-1]] == [4] * 12 + [3] * 30 + [2] * 12
    assert [t for _, t in got[2]] == [4] * 12 + [3] * 8


def test_a_stem_is_looked_up_in_the_postings_before_the_gin_index(registry, monkeypatch) -> None:  # noqa: ANN001
    """Hybrid search asks whether a crude stem of a query's word occurs in what the viewer may see. A stem of a
    name, trigger word or tag is a range of the postings, and the statement's GIN part (for the descriptions'
    words) is then never run; filter tokens (tier 0) are no words, and private adapters' words are their
    viewers' alone. Answers equal the GIN index's."""
    from sqlalchemy import text

    from lorahub.registry import database
    from lorahub.registry import search as S
    from lorahub.registry.hub.access import PrivateView

    registry.import_records(RECORDS)
    with registry.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, name, is_admin, created_at) VALUES (7, 'alice', false, now())"))
        conn.execute(text("UPDATE adapters SET private = true, owner_id = 7 WHERE name = 'Velvet Dress'"))
    seen: list[tuple[str, dict]] = []
    real = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append((sql, dict(params or {})))
        return real(self, sql, params, **kw)

    cases = [  # (prefixes, viewer, answer, whether the postings answer)
        (["lant"], None, True, True),  # names and tags
        (["lantern"], None, True, True),  # a whole word is its own prefix
        (["trig"], None, True, True),  # trigger words
        (["xqzw", "fest"], None, True, True),  # any of them
        (["stal"], None, True, False),  # "busy stalls": a description only
        (["sumi"], None, True, False),
        (["zbun", "ztlan", "zprv"], None, False, False),  # filter tokens are no words
        (["cloth"], None, False, False),  # the tag of a private adapter
        (["cloth"], 7, True, True),  # ... its owner's
        (["cloth"], PrivateView(everything=True), True, True),
        (["cloth"], 8, False, False),
        (["lanterno", "nigi"], None, False, False),  # beside "lantern", "lanterns", "night": not in the ranges
    ]
    with registry.reading() as raw:
        for prefixes, viewer, answer, posted in cases:
            backend = S._Postgres(raw, S.plan_for(SearchQuery(query="x"), viewer))
            seen.clear()
            with monkeypatch.context() as m:
                m.setattr(database.Raw, "all", spy)
                assert backend.any_prefix(prefixes) is answer, (prefixes, viewer)
            [(sql, params)] = seen
            plan = [r[0] for r in raw.all("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, params)]
            gin = next(line for line in plan if "CTE Scan on m" in line)  # the GIN part, whatever its plan
            assert ("never executed" in gin) is posted, (prefixes, viewer, plan)
            with monkeypatch.context() as m:  # the GIN index alone
                m.setattr(S._Postgres, "posted_prefix", lambda self, prefixes, params: "false")
                assert backend.any_prefix(prefixes) is answer, (prefixes, viewer)


def test_filter_bits_skip_the_entries_without_the_wanted_tokens(registry, monkeypatch) -> None:  # noqa: ANN001
    """A one-word search with filters probes a token's postings only for the word's entries whose filter bits
    (migration 0117) hold the wanted tokens': 80 adapters named "lantern", 8 of them tagged "amber" (and 4 of
    those of base SDXL); the pages equal the GIN path's, and the probes number about the adapters with the
    tokens, not the word's 80 entries. The filter a search asks for is the one the triggers write."""
    from sqlalchemy import text

    from lorahub.registry import database
    from lorahub.registry import search as S

    records = [AdapterRecord(source="t", id=str(i), name=f"Lantern {i}", tags=["amber" if i % 10 == 0 else f"t{i % 7}"],
                             downloads=i, base_model="SDXL 1.0" if i % 20 == 0 else "SD 1.5",
                             files=[{"name": f"f{i}.safetensors", "hashes": {"sha256": f"{i:064x}"}}])
               for i in range(80)]
    registry.import_records(records)
    registry.optimize()
    monkeypatch.setattr(S, "FUSED_MAX_MATCHES", -1)  # the postings, not every tier at once
    monkeypatch.setattr(S, "RARE_FILTER_MAX_ROWS", -1)  # (nor the rows of a rare token)
    monkeypatch.setattr(S, "POSTED_PROBE_COST", 0.0)  # probed entry by entry (the merge is the planner's)
    queries = [SearchQuery(query="lantern", mode="keyword", tags=["amber"], limit=50),
               SearchQuery(query="lantern", mode="keyword", tags=["amber"], base="sdxl", limit=50)]
    seen: list[tuple[str, dict]] = []
    real = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append((sql, dict(params or {})))
        return real(self, sql, params, **kw)

    with monkeypatch.context() as m:
        m.setattr(S._Postgres, "postable", lambda self: False)
        expected = [[r.name for r in registry.search(q)] for q in queries]
    with monkeypatch.context() as m:
        m.setattr(database.Raw, "all", spy)
        assert [[r.name for r in registry.search(q)] for q in queries] == expected
    assert [len(e) for e in expected] == [8, 4]
    # the tiers' statements (the description's tier may walk the tag's postings: not these)
    posted = [(sql, params) for sql, params in seen if "FROM adapter_postings p WHERE" in sql and ":walk_token" not in sql]
    assert len(posted) == 2
    with registry.reading() as raw:
        with raw.dbapi.cursor() as cur:
            cur.execute("SET enable_seqscan = off")
        try:
            for (sql, params), want in zip(posted, (8, 4), strict=True):
                plan = [r[0] for r in raw.all("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, params)]
                # the name tier's probes of the tag's postings (its first subplan)
                probes = [m for line in plan if (m := re.search(r"on adapter_postings f0\S* \(actual rows=\d+ loops=(\d+)", line))]
                assert probes, "\n".join(plan)
                loops = int(probes[0].group(1))
                assert want <= loops <= want + 4, plan  # not the 80 entries of "lantern"
        finally:
            with raw.dbapi.cursor() as cur:
                cur.execute("RESET enable_seqscan")
    # the triggers' filter (SQL) and the search's (hashes asked of PostgreSQL, kept per database, bounded) agree
    token_sets = (["ztamber"], ["ztamber", "zbsdxl"], ["zbsd1", "ztt3", "zfkohya"], ["zt\u0432\u0435\u0447\u0435\u0440"])
    monkeypatch.setattr(S, "FACET_HASHES_KEPT", 3)
    S._facet_hashes.clear()
    with registry.engine.connect() as conn, registry.reading() as raw:
        for _ in range(2):
            for tokens in token_sets:
                both = conn.execute(text("SELECT lorahub_facet_bits(:t, 0), lorahub_facet_bits(:t, 1)"),
                                    {"t": " ".join(tokens)}).one()
                assert tuple(both) == _bits(conn, tokens) == S._facet_bits(raw, tokens) != (0, 0)
                assert len(S._facet_hashes[raw.key]) <= 3


def test_a_filtered_page_can_walk_its_rarest_tokens_postings(registry, monkeypatch) -> None:  # noqa: ANN001
    """A filtered page in popularity order can come from a walk of its rarest filter token's postings (tier 0, in
    that order: ``_Postgres.token_walk``), each entry's adapter row fetched and tested (words, the other tokens,
    the viewer's visibility), the walk stopping once the page is full, or at the end of the token's entries:
    the pages are the GIN indexes' for every viewer (a private adapter shows to its owner only), the plan an
    index range of the token's postings and a primary-key probe of ``adapters`` per entry, no sort."""
    from sqlalchemy import text

    from lorahub.registry import database
    from lorahub.registry import search as S

    records = [_record(100 + i, f"Beacon {i}", ["amber" if i % 3 == 0 else "teal", "night" if i % 2 else "day"],
                       downloads=(i * 37) % 101, description="a soft glow" if i % 4 == 0 else "plain")
               for i in range(60)]
    registry.import_records(records)
    with registry.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, name, is_admin, created_at) VALUES (7, 'alice', false, now())"))
        conn.execute(text("UPDATE adapters SET private = true, owner_id = 7 WHERE name IN ('Beacon 0', 'Beacon 12')"))
    registry.optimize()
    queries = [SearchQuery(tags=["amber"], sort=s, limit=lim) for s in ("relevance", "downloads") for lim in (3, 50)]
    queries += [SearchQuery(tags=["amber", "night"], page=2, limit=4), SearchQuery(query="glow", tags=["amber"], mode="keyword"),
                SearchQuery(query="beacon glow", tags=["teal"], base="unknown", mode="keyword", limit=5)]
    monkeypatch.setattr(S, "FUSED_MAX_MATCHES", -1)  # tier by tier (60 adapters: every tier at once otherwise)

    def pages() -> list[list[str]]:
        return [[r.name for r in registry.search(q, viewer=v)] for v in (None, 7) for q in queries]

    with monkeypatch.context() as m:
        m.setattr(S, "TOKEN_WALK_ROW_COST", 1e12)
        expected = pages()
    assert any("Beacon 12" in p for p in expected[len(queries):]) and not any("Beacon 12" in p for p in expected[:len(queries)])
    seen: list[tuple[str, dict]] = []
    real = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append((sql, dict(params or {})))
        return real(self, sql, params, **kw)

    monkeypatch.setattr(S, "TOKEN_WALK_ROW_COST", 0.0)
    with monkeypatch.context() as m:
        m.setattr(database.Raw, "all", spy)
        assert pages() == expected
    walks = [(sql, params) for sql, params in seen if ":walk_token" in sql]
    # each query's rarest token: never "night" (half the adapters) nor base "unknown" (all of them)
    assert {p["walk_token"] for _, p in walks} == {"ztamber", "ztteal"}
    assert len(walks) >= len(queries)  # every query, for each viewer, walked (some once per tier)
    with registry.reading() as raw:
        with raw.dbapi.cursor() as cur:  # 60 adapters are read whole, or their few entries sorted, otherwise
            cur.execute("SET enable_seqscan = off")
            cur.execute("SET enable_bitmapscan = off")
        try:
            sql, params = walks[0]
            plan = "\n".join(r[0] for r in raw.all("EXPLAIN " + sql, params))
        finally:
            with raw.dbapi.cursor() as cur:
                cur.execute("RESET enable_seqscan")
                cur.execute("RESET enable_bitmapscan")
    assert "Index Only Scan using pk_adapter_postings" in plan and "Index Scan using adapters_pkey" in plan, plan
    assert "Sort" not in plan, plan
