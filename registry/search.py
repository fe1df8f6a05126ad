"""Full-text search with filters, sort orders and pagination, on SQLite (FTS5) and PostgreSQL (tsvector).

Relevance
---------
Results come in **tiers**, and by popularity (downloads, then newest) inside a tier:

4. the name equals the query (words compared, case and punctuation ignored);
3. every query word is in the name or title;
2. every query word is in the name/title, trigger words or tags;
1. every query word appears somewhere, the description included.

When no adapter has every word, a query of several words matches any of them
(same tiers). ``score`` = tier + popularity in [0, 1).

Modes (``SearchQuery.mode``): the tiers above are ``keyword``; ``semantic`` ranks by the sentence
embeddings of :mod:`.semantic` (``score`` = cosine + tag bonus); ``hybrid`` fuses both lists by
reciprocal rank fusion (:func:`fuse`: ``score`` = 100 x the fused value, below 4), after the exact names
(tier 4) and, for a query of 8-64 hex digits, the adapters with a file of that fingerprint (score 5);
hybrid finds nothing by meaning when no word of the query (nor its crude stem) occurs in the registry
(see :func:`fuse`).
``auto`` (the default) is hybrid where the registry has embeddings and the model is installed, else
keyword; semantic and hybrid rank by relevance only (other orders sort the keyword matches).

Why tiers and not BM25/ts_rank_cd over every match: scoring every match costs
time proportional to the number of matches (90 ms for ``anime`` at 100k records
on SQLite, more on PostgreSQL), against a 10 ms goal. A tier is one index query
that stops after the rows a page needs: on SQLite the FTS5 rowid encodes
popularity (see the migration), so "the first N matches in rowid order" are the
N most popular; on PostgreSQL a one-word tier (name, or trigger words/tags) is a
range of that word's postings (``adapter_postings``, migration 0114), kept in the
same order, and otherwise the planner walks the popularity index and checks the
text condition row by row, or reads the GIN index for rare words.

Filters (base family or label, format, tags, author, licence, visibility) are
tokens in ``adapters.search_facets``: SQLite matches them inside the FTS5 query,
PostgreSQL through a GIN index on the token array. Rank bounds are plain
column conditions.
"""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import text as T
from .database import _json_each
from .lookups import viewer_owners, visibility_sql

if TYPE_CHECKING:  # pragma: no cover
    from lorahub.schemas.registry import SearchQuery

    from .database import Raw
    from .semantic import Counters

MASK = 4294967295
#: SQLite: adapter id of an FTS row, and FTS rowid of an adapter row (see the migration).
FTS_ID = f"({MASK} - (adapter_fts.rowid & {MASK}))"
FTS_KEY_OF_A = f"(((1073741823 - min(max(a.downloads, 0), 1073741823)) << 32) | ({MASK} - a.id))"

TIER_EXACT, TIER_NAME, TIER_KEYWORDS, TIER_ANY = 4, 3, 2, 1
#: SQLite "newest": how many of the newest adapters are probed one by one before collecting every match.
PROBE_WINDOW = 40
#: ... when at least 1 adapter in DENSE_FRACTION matches
DENSE_FRACTION = 8
#: ... and below how many matches they are sorted rather than found by walking the date index.
SORT_MATCHES_BELOW = 1000


@dataclass
class Hit:
    id: int
    score: float


@dataclass
class _Plan:
    """What a query needs, backend-neutral."""

    terms: list[str]
    name_norm: str
    facets: list[str]
    min_rank: int | None
    max_rank: int | None
    viewer: Any
    mode: str = "and"  # or "or"
    params: dict[str, Any] = field(default_factory=dict)


def plan_for(q: SearchQuery, viewer: Any) -> _Plan:
    facets: list[str] = []
    if q.base:
        f = T.base_facet(q.base)
        if f:
            facets.append(f)
    for prefix, value in ((T.F_FORMAT, q.format), (T.F_AUTHOR, q.author), (T.F_LICENSE, q.license)):
        if value:
            f = T.facet(prefix, value)
            if f:
                facets.append(f)
    for tag in q.tags:
        f = T.facet(T.F_TAG, tag)
        if f:
            facets.append(f)
    return _Plan(
        terms=T.query_terms(q.query),
        name_norm=T.norm_name(q.query),
        facets=list(dict.fromkeys(facets)),
        min_rank=q.min_rank,
        max_rank=q.max_rank,
        viewer=viewer,
    )


def search_page(raw: Raw, q: SearchQuery, *, viewer: Any = None, checked: bool = False) -> tuple[list[Hit], int | None]:
    """Adapter ids (and scores) of one page of results, best first (read on ``raw``, a
    :class:`~lorahub.registry.database.Raw` reader), and the data version (:func:`~.lookups.results_for`) a
    statement of it read before its hits, else None: on SQLite the first statement of every search (in
    process: a few microseconds); on PostgreSQL with the vector counters, in semantic and hybrid searches and
    in keyword searches by relevance whose statement can carry them (a round trip saved). ``checked``: the
    vector candidates are checked in SQL even where no adapter is private (see :func:`fuse`)."""
    plan = plan_for(q, viewer)
    backend: _Backend = _Postgres(raw, plan) if raw.pg else _SQLite(raw, plan)
    if not raw.pg:
        rows = raw.all("SELECT version FROM registry_data_version")
        return _search_page(raw, q, backend, checked)[0], rows[0][0] if rows else None
    return _search_page(raw, q, backend, checked)


def _search_page(raw: Raw, q: SearchQuery, backend: _Backend, checked: bool = False) -> tuple[list[Hit], int | None]:
    plan = backend.plan
    offset = (q.page - 1) * q.limit
    if not plan.terms:
        return backend.browse(q.sort, offset, q.limit), None
    from . import semantic  # the package is looked up, not imported

    keyword: list[Hit] | None = None
    counters: Counters | None = None
    if raw.pg and q.sort == "relevance" and q.mode in ("auto", "hybrid") and semantic.installed():
        # Hybrid's keyword tiers first, with the database's vector counters in the same statement where the
        # tiers take one (a round trip saved: the server's Python is what a PostgreSQL search waits on)
        keyword, counters = backend.ranked_with_counters(depth_for(offset + q.limit))
    mode, current = _resolve_mode(raw, q, counters)
    if mode != "keyword":
        hits = fuse(raw, backend, q, mode, offset, words_found=True if mode == "semantic" else None,
                    current=current, checked=checked, keyword=keyword if mode == "hybrid" else None)
        return hits, current.data_version

    def page() -> list[Hit]:
        if q.sort == "relevance":
            return backend.relevance(offset, q.limit)
        return backend.sorted_matches(q.sort, offset, q.limit)

    several = len(plan.terms) > 1
    if several and offset and not backend.any_match():
        plan.mode = "or"
    # The data version (for the page's rows: lookups.results_for) with the first statement that can carry it
    # (a one-word query's postings, or every tier at once), on PostgreSQL.
    if raw.pg and q.sort == "relevance":
        backend._with_counters = True
    hits = page()
    if several and not offset and not hits and plan.mode == "and":
        # A first page holds the first matches of every word, whatever the order: none means that no adapter
        # the search may show has every word (no existence query first: most queries of several words match).
        plan.mode = "or"
        hits = page()
    return hits, backend.counters[3] if backend.counters is not None else None


def resolve_mode(raw: Raw, q: SearchQuery) -> str:
    """The mode a query runs in (``auto`` resolved); SemanticUnavailable when semantic or hybrid was asked
    for where it cannot run. The keyword path imports nothing of the model's (the package is looked up,
    not imported)."""
    return _resolve_mode(raw, q)[0]


def _resolve_mode(raw: Raw, q: SearchQuery, counters: Counters | None = None) -> tuple[str, Any]:
    """:func:`resolve_mode`, and for semantic and hybrid what :func:`~.semantic.current` read: the vector
    index it checked against the database's counter (handed to :func:`~.semantic.top`: one check per
    search), and whether any adapter is private. ``counters``: the counters as a statement of this search
    read them (see :func:`~.semantic.current`), else read here."""
    from . import semantic

    wanted = q.mode
    if wanted == "keyword" or (wanted == "auto" and q.sort != "relevance"):
        return "keyword", None
    if not semantic.installed():
        if wanted == "auto":
            return "keyword", None
        raise semantic.SemanticUnavailable(f"{wanted} search needs the embedding model",
                                           hint="pip install 'lorahub-toolkit[semantic]', then: lorahub registry embed")
    current = semantic.current(raw, counters)
    if current is None:
        if wanted == "auto":
            return "keyword", None
        raise semantic.SemanticUnavailable(f"{wanted} search: this registry has no sentence embeddings of "
                                           f"{semantic.MODEL} {semantic.model_version()}",
                                           hint="run: lorahub registry embed")
    return ("hybrid" if wanted == "auto" else wanted), current


def _any_stem(raw: Raw, backend: _Backend) -> bool:
    """Whether a crude stem of a word of the query occurs in what the viewer may see, filters aside (a
    paraphrase's words need not occur among the filtered adapters)."""
    plan = backend.plan
    unfiltered = type(backend)(raw, replace(plan, facets=[], min_rank=None, max_rank=None))
    return unfiltered.any_prefix(_stems(plan.terms))


def _stems(terms: list[str]) -> list[str]:
    """Crude stems of the query's words for "does any word of it occur in the registry": a word less its
    last two letters, at least four (``monsters`` -> ``monste``, which begins ``monster``); shorter words
    whole. Only for that question: the keyword tiers never stem."""
    return list(dict.fromkeys(t[: max(4, len(t) - 2)] for t in terms))


#: Reciprocal rank fusion: a list's item at rank r (from 1) adds weight / (RRF_K + r).
RRF_K = 60
#: Weight of a keyword match by tier (name, trigger words/tags, description), halved for "any word" matches.
KEYWORD_WEIGHTS = {TIER_NAME: 1.0, TIER_KEYWORDS: 1.0, TIER_ANY: 0.5}
VECTOR_WEIGHT = 1.0
#: Score of a hybrid/semantic hit whose file has the fingerprint the query is.
HASH_SCORE = 5.0


def depth_for(n: int) -> int:
    """How deep each list is read for a window of ``n`` results (the same for every page of a
    usual size, so pages agree)."""
    return max(100, 1 << max(n - 1, 1).bit_length())


def fuse(raw: Raw, backend: _Backend, q: SearchQuery, mode: str, offset: int, *, words_found: bool | None = True,
         current: Any = None, checked: bool = False, keyword: list[Hit] | None = None) -> list[Hit]:
    """Semantic or hybrid relevance: pinned hash and exact-name matches, then the vector list (semantic) or
    the keyword and vector lists fused by reciprocal rank (hybrid).

    Hybrid reads the keyword tiers first; a query of several words none of which an adapter has all of (its
    filters applied) is read again matching any of them. Hybrid finds nothing by meaning for a query none of
    whose words occurs in the registry (``words_found`` False; None: not known yet, found out here: a keyword
    match says yes, else :func:`_any_stem`): a static embedding gives gibberish ("qqxyzzy") a vector as close
    to some records as a real paraphrase's, and no similarity threshold tells them apart.

    ``current``: what :func:`~.semantic.current` read for this search (None: read again): the vector index
    caught up to the database's counter, and whether any adapter was private, in one statement. Every write
    of an adapter row through lorahub replaces or removes its vector, with the row's filter tokens, in the
    same transaction (:func:`~.rows.write_adapters`), and the database notes every deleted vector itself (a
    trigger: the foreign key's cascade of an adapter deleted in SQL too), so the candidates of that index
    existed at the counter and their filter tokens are the query's (the index chose them by those). Their
    visibility is checked in SQL (:meth:`_Backend.visible`, an index probe per id) wherever some adapter is
    private: a row made private behind lorahub's back keeps its vector and tokens, not its column. In a
    registry with no private adapter they are not checked (a round trip and about 0.7 ms of a PostgreSQL
    server's time per search, 2026-12-06), unless this process's shared index was meanwhile caught up past
    that counter to a private row (:func:`~.semantic.top`); one deleted after the counter was read leaves the
    page short, and :meth:`~.catalogue.Registry.search` asks again with ``checked``. With rank bounds (columns the index does
    not keep) every candidate is checked in SQL against every filter (:meth:`_Backend.allowed`)."""
    from . import semantic
    from .lookups import by_hash_rows

    depth = depth_for(offset + q.limit)
    out: list[Hit] = []
    seen: set[int] = set()

    def pin(hit: Hit) -> None:
        if hit.id not in seen:
            seen.add(hit.id)
            out.append(hit)

    text = (q.query or "").strip().lower()
    text = text[2:] if text.startswith("0x") else text
    if 8 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text):
        ids = list(dict.fromkeys(int(r.id) for r in by_hash_rows(raw, text, backend.plan.viewer)))
        keep = backend.allowed(ids)
        for aid in ids:
            if aid in keep:
                pin(Hit(aid, HASH_SCORE))
    if mode != "hybrid":
        keyword = []
    else:
        if keyword is None:
            keyword = backend.ranked(depth)
        if not keyword and len(backend.plan.terms) > 1 and backend.plan.mode == "and" and backend.stems is not False:
            # No adapter the search may show has every word: any of them (unless no stem of any word occurs
            # at all, as the tiers' statement read: then no word does either).
            backend.plan.mode = "or"
            keyword = backend.ranked(depth)
    if words_found is None:
        # The tiers were read with the filters: none found means no adapter the search may show has the words
        # (an exact name has them all), and only their stems are left to ask for (read with the tiers where
        # their statement could: a miss's one round trip instead of two or three).
        words_found = bool(keyword) or (backend.stems if backend.stems is not None else _any_stem(raw, backend))
    allowed = backend.allowed if backend.rank_bounds() else backend.visible
    # no adapter was private: the candidates of the index caught up to the counter may be shown unchecked
    unchecked = not (backend.rank_bounds() or checked or current is None or current.any_private)
    vector = (semantic.top(raw, q.query or "", depth, allowed, backend.plan.facets, near_best=mode == "hybrid",
                           index=current.index if current is not None else None, unchecked=unchecked)
              if words_found else [])
    if mode == "semantic":
        for aid, score in vector:
            pin(Hit(aid, round(score, 6)))
        return out[offset : offset + q.limit]
    fused: dict[int, float] = {}
    factor = 0.5 if backend.plan.mode == "or" else 1.0
    for rank, hit in enumerate(keyword, 1):
        tier = int(hit.score)
        if tier >= TIER_EXACT:
            pin(hit)
            continue
        fused[hit.id] = fused.get(hit.id, 0.0) + factor * KEYWORD_WEIGHTS.get(tier, 0.5) / (RRF_K + rank)
    for rank, (aid, _score) in enumerate(vector, 1):
        fused[aid] = fused.get(aid, 0.0) + VECTOR_WEIGHT / (RRF_K + rank)
    # Only the page's hits are made: the best of the fused (the pinned ones among them are skipped).
    want = offset + q.limit - len(out)
    if want > 0:
        for aid in heapq.nsmallest(want + len(seen), fused, key=lambda i: (-fused[i], -i)):
            if len(out) >= offset + q.limit:
                break
            pin(Hit(aid, round(100 * fused[aid], 6)))
    return out[offset : offset + q.limit]


class _Backend:
    #: The vector counters and data version (:data:`~.semantic.Counters`) a statement of this search read, if any.
    counters: Counters | None = None
    #: Whether a stem of a word of the query occurs in what the viewer may see, filters aside (:func:`_any_stem`),
    #: as the keyword tiers' statement read it where it came back empty (None: not read; PostgreSQL only).
    stems: bool | None = None

    def __init__(self, raw: Raw, plan: _Plan) -> None:
        self.raw = raw
        self.plan = plan

    # -- shared SQL on the adapters table (alias a) ---------------------------------------

    def column_filters(self, params: dict[str, Any]) -> list[str]:
        p = self.plan
        out = []
        if p.min_rank is not None:
            out.append("a.rank >= :min_rank")
            params["min_rank"] = p.min_rank
        if p.max_rank is not None:
            out.append("a.rank <= :max_rank")
            params["max_rank"] = p.max_rank
        return out

    def visibility(self, params: dict[str, Any]) -> str:
        return visibility_sql(self.plan.viewer, params)

    def run(self, sql: str, params: dict[str, Any], *, prepare: bool = False) -> list[Any]:
        params.setdefault("false", False)
        return self.raw.all(sql, params, prepare=prepare)

    def rank_bounds(self) -> bool:
        """Whether the query has a rank bound (a filter that only the adapter's row knows)."""
        p = self.plan
        return p.min_rank is not None or p.max_rank is not None

    def visible(self, ids: list[int]) -> set[int]:
        """Those of ``ids`` that are adapters the viewer may see (the filter tokens and rank bounds not
        checked): one probe per id of the index ``ix_adapters_visible`` (id, private, owner_id), no row of
        ``adapters`` read, and only the ids that fail come back."""
        failed: set[int] = set()
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            params: dict[str, Any] = {}
            cond = self.visibility(params)
            if self.raw.pg:
                params["ids"] = part
                sql = ("SELECT v FROM unnest(CAST(:ids AS bigint[])) AS v "
                       f"WHERE NOT EXISTS (SELECT 1 FROM adapters a WHERE a.id = v AND {cond})")
                failed.update(r[0] for r in self.run(sql, params, prepare=True))  # one plan whatever the ids
                continue
            elif _json_each():
                params["ids"] = json.dumps(part)  # every id checked in one statement, one statement text
                sql = ("SELECT value FROM json_each(:ids) WHERE NOT EXISTS (SELECT 1 FROM adapters a "
                       f"INDEXED BY ix_adapters_visible WHERE a.id = value AND {cond})")
            else:
                params["ids"] = part
                found = {r[0] for r in self.run(f"SELECT a.id FROM adapters a WHERE a.id IN :ids AND {cond}", params)}
                failed.update(x for x in part if x not in found)
                continue
            failed.update(r[0] for r in self.run(sql, params))
        return set(ids) - failed if failed else set(ids)

    def allowed(self, ids: list[int]) -> set[int]:
        """Those of ``ids`` that the query's filters and the viewer's visibility keep."""
        out: set[int] = set()
        for i in range(0, len(ids), 500):
            params: dict[str, Any] = {"ids": ids[i : i + 500]}
            where = ["a.id IN :ids", self.visibility(params), *self.column_filters(params),
                     *self.facet_sql(params, len(ids[i : i + 500]))]
            out.update(r[0] for r in self.run(f"SELECT a.id FROM adapters a WHERE {' AND '.join(where)}", params))
        return out

    def exact(self, limit: int) -> list[Hit]:
        """Tier 4: the whole name equals the query."""
        params: dict[str, Any] = {"qn": self.plan.name_norm, "n": limit}
        where = ["a.name_norm = :qn", self.visibility(params), *self.column_filters(params), *self.facet_sql(params, 1)]
        rows = self.run(
            f"SELECT a.id, a.downloads FROM adapters a WHERE {' AND '.join(where)} "
            "ORDER BY a.downloads DESC, a.id DESC LIMIT :n",
            params,
            prepare=True,  # an index lookup whatever the name
        )
        return [Hit(r[0], TIER_EXACT + T.popularity(r[1])) for r in rows]

    def relevance(self, offset: int, limit: int) -> list[Hit]:
        """Walk the tiers, skipping ``offset`` rows; each tier reads at most offset + limit rows."""
        out: list[Hit] = []
        skip, need = offset, limit
        for tier in (TIER_EXACT, TIER_NAME, TIER_KEYWORDS, TIER_ANY):
            want = skip + need
            hits = self.exact(want) if tier == TIER_EXACT else self.tier(tier, want)
            if len(hits) <= skip:
                skip -= len(hits)
                continue
            take = hits[skip : skip + need]
            out.extend(take)
            need -= len(take)
            skip = 0
            if need == 0:
                break
        return out

    def ranked(self, limit: int) -> list[Hit]:
        """The first ``limit`` hits of :meth:`relevance` for fusion, where only the order and the tier count:
        the exact names (tier 4) with their scores, the others' scores may be their tier alone."""
        return self.relevance(0, limit)

    def ranked_with_counters(self, limit: int) -> tuple[list[Hit], Counters | None]:
        """:meth:`ranked`, and the database's vector counters (:func:`~.semantic.counters_sql`) where its
        first statement could read them too (else None)."""
        return self.ranked(limit), None

    # -- per backend ----------------------------------------------------------------------

    def facet_sql(self, params: dict[str, Any], words: float | None = None) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def any_match(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def any_prefix(self, prefixes: list[str]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def tier(self, tier: int, limit: int) -> list[Hit]:  # pragma: no cover - abstract
        raise NotImplementedError

    def browse(self, sort: str, offset: int, limit: int) -> list[Hit]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sorted_matches(self, sort: str, offset: int, limit: int) -> list[Hit]:  # pragma: no cover - abstract
        raise NotImplementedError


def _prefix_query(prefixes: list[str]) -> str:
    """A tsquery matching a word that begins with one of ``prefixes`` (letters and digits only)."""
    return " | ".join(f"'{p}':*" for p in prefixes)


def _order(sort: str) -> str:
    if sort == "newest":
        return "a.published_at DESC, a.id DESC"
    return "a.downloads DESC, a.id DESC"


def _hits(rows: list[Any], tier: int = 0) -> list[Hit]:
    return [Hit(r[0], tier + T.popularity(r[1])) for r in rows]


class _SQLite(_Backend):
    _private: bool | None = None

    # -- FTS5 query text ------------------------------------------------------------------

    def words_expr(self, columns: str) -> str:
        joiner = " AND " if self.plan.mode == "and" else " OR "
        inner = joiner.join(f'"{t}"' for t in self.plan.terms)  # terms are letters/digits only
        return f"{{{columns}}} : ({inner})"

    def constrain(self, expr: str | None) -> str:
        """Add the facet filters and the visibility rule to an FTS5 expression."""
        parts = [f"({expr})"] if expr else []
        if self.plan.facets:
            parts.append("{facets} : (" + " AND ".join(f'"{f}"' for f in self.plan.facets) + ")")
        if not parts:
            parts.append('{facets} : ("' + T.F_FAMILY + '" *)')  # every row has a family token
        out = " AND ".join(parts)
        if not self.has_private():
            return out
        everything, owners = viewer_owners(self.plan.viewer)
        if everything:
            return out
        if not owners:
            return f"({out}) NOT {{facets}} : \"{T.F_PRIVATE}\""
        mine = " OR ".join(f'"{T.F_OWNER}{o}"' for o in owners)
        return f'({out}) NOT ({{facets}} : ("{T.F_PRIVATE}" NOT ({mine})))'

    def ranked(self, limit: int) -> list[Hit]:
        """:meth:`relevance` for fusion (scores of tiers 1-3 without popularity). Without filters on rank
        columns, tiers 1-3 are read from the FTS index alone (the adapter id is in its rowid): no row of
        ``adapters`` is read, and the exact names of tier 4 are left out of tier 3 here rather than in SQL
        (``exact`` found every one of them when it returned fewer than ``limit``)."""
        p = self.plan
        if p.min_rank is not None or p.max_rank is not None:
            return super().ranked(limit)
        out = self.exact(limit)
        if len(out) >= limit:
            return out
        pinned = {h.id for h in out} if p.name_norm else set()
        cur = self.raw.dbapi.cursor()  # plain tuples: up to 100 rows a tier
        try:
            for tier in (TIER_NAME, TIER_KEYWORDS, TIER_ANY):
                need = limit - len(out)
                extra = len(pinned) if tier == TIER_NAME else 0
                cur.execute(f"SELECT {FTS_ID} FROM adapter_fts WHERE adapter_fts MATCH :m ORDER BY rowid LIMIT :n",
                            {"m": self.constrain(self.tier_expr(tier)), "n": need + extra})
                ids = [r[0] for r in cur.fetchall()]
                if extra:
                    ids = [i for i in ids if i not in pinned][:need]
                score = float(tier)
                out.extend([Hit(i, score) for i in ids])
                if len(out) >= limit:
                    break
        finally:
            cur.close()
        return out

    def has_private(self) -> bool:
        """Whether any adapter is private (else the visibility rule is left out of the FTS query)."""
        if self._private is None:
            rows = self.run('SELECT 1 FROM adapter_fts WHERE adapter_fts MATCH :m LIMIT 1',
                            {"m": f'{{facets}} : "{T.F_PRIVATE}"'})
            self._private = bool(rows)
        return self._private

    def tier_expr(self, tier: int) -> str:
        name = self.words_expr("name")
        keywords = self.words_expr("name keywords")
        anywhere = self.words_expr("name keywords description")
        if tier == TIER_NAME:
            return name
        if tier == TIER_KEYWORDS:
            return f"({keywords}) NOT ({name})"
        return f"({anywhere}) NOT ({keywords})"

    def facet_sql(self, params: dict[str, Any], words: float | None = None) -> list[str]:
        out = []
        for i, f in enumerate(self.plan.facets):
            params[f"facet{i}"] = f" {f} "
            out.append(f"instr(' ' || a.search_facets || ' ', :facet{i}) > 0")
        return out

    # -- queries --------------------------------------------------------------------------

    def fts_rows(self, match: str, limit: int, offset: int = 0, extra: list[str] | None = None,
                 params: dict[str, Any] | None = None) -> list[Any]:
        params = dict(params or {})
        params.update(m=match, n=limit, o=offset)
        where = ["adapter_fts MATCH :m", *self.column_filters(params), *(extra or [])]
        return self.run(
            f"SELECT a.id, a.downloads FROM adapter_fts JOIN adapters a ON a.id = {FTS_ID} "
            f"WHERE {' AND '.join(where)} ORDER BY adapter_fts.rowid LIMIT :n OFFSET :o",
            params,
        )

    def any_match(self) -> bool:
        m = self.constrain(self.words_expr("name keywords description"))
        return bool(self.run("SELECT 1 FROM adapter_fts WHERE adapter_fts MATCH :m LIMIT 1", {"m": m}))

    def any_prefix(self, prefixes: list[str]) -> bool:
        inner = " OR ".join(f'"{p}" *' for p in prefixes)  # letters/digits only
        m = self.constrain(f"{{name keywords description}} : ({inner})")
        return bool(self.run("SELECT 1 FROM adapter_fts WHERE adapter_fts MATCH :m LIMIT 1", {"m": m}))

    def tier(self, tier: int, limit: int) -> list[Hit]:
        extra: list[str] = []
        params: dict[str, Any] = {}
        if tier == TIER_NAME and self.plan.name_norm:
            extra.append("a.name_norm <> :qn")  # those are tier 4
            params["qn"] = self.plan.name_norm
        return _hits(self.fts_rows(self.constrain(self.tier_expr(tier)), limit, extra=extra, params=params), tier)

    def browse(self, sort: str, offset: int, limit: int) -> list[Hit]:
        if sort != "newest" and (self.plan.facets or self.plan.min_rank or self.plan.max_rank):
            return _hits(self.fts_rows(self.constrain(None), limit, offset))
        params: dict[str, Any] = {"n": limit, "o": offset}
        where = [self.visibility(params), *self.column_filters(params), *self.facet_sql(params)]
        rows = self.run(
            f"SELECT a.id, a.downloads FROM adapters a WHERE {' AND '.join(where)} "
            f"ORDER BY {_order(sort)} LIMIT :n OFFSET :o",
            params,
        )
        return _hits(rows)

    def sorted_matches(self, sort: str, offset: int, limit: int) -> list[Hit]:
        match = self.constrain(self.words_expr("name keywords description"))
        if sort == "downloads":
            return _hits(self.fts_rows(match, limit, offset))
        # newest: count the matches first. Few: look each up and sort them. Very
        # many: probe the newest adapters one by one (most of them match). Else
        # walk the date index testing each adapter against the set of matches.
        count = self.run("SELECT count(*) FROM adapter_fts WHERE adapter_fts MATCH :m", {"m": match})[0][0]
        if not count:
            return []
        params: dict[str, Any] = {"m": match, "n": limit, "o": offset}
        filters = self.column_filters(params)
        total = self.run("SELECT coalesce(max(id), 0) FROM adapters", {})[0][0] or 1
        if count * DENSE_FRACTION >= total:
            params["scan"] = PROBE_WINDOW + 4 * (offset + limit)
            probe = f"EXISTS (SELECT 1 FROM adapter_fts WHERE adapter_fts MATCH :m AND adapter_fts.rowid = {FTS_KEY_OF_A})"
            rows = self.run(
                "SELECT a.id, a.downloads FROM (SELECT id, downloads, rank, published_at FROM adapters "
                f"ORDER BY published_at DESC, id DESC LIMIT :scan) a WHERE {' AND '.join([probe, *filters])} "
                f"ORDER BY {_order('newest')} LIMIT :n OFFSET :o",
                params,
            )
            if len(rows) == limit:
                return _hits(rows)
            params.pop("scan")
        hint = "INDEXED BY ix_adapters_published" if count > SORT_MATCHES_BELOW else "NOT INDEXED"
        cond = f"a.id IN (SELECT {FTS_ID} FROM adapter_fts WHERE adapter_fts MATCH :m)"
        rows = self.run(
            f"SELECT a.id, a.downloads FROM adapters a {hint} "
            f"WHERE {' AND '.join([cond, *filters])} ORDER BY {_order('newest')} LIMIT :n OFFSET :o",
            params,
        )
        return _hits(rows)


#: PostgreSQL: what reading one match costs when collecting matches through a GIN index, relative
#: to testing one row while walking the order's index (measured at 100k records: about 3 and 2 us).
GIN_ROW_COST = 1.5
#: ... and reading one entry of a GIN posting list (about 0.16 us against 2.6 for a row; 100k adapters): "character"
#: with the tag "celebrity" reads 50,000 + 10,000 entries to keep 1,400 rows (:meth:`_Postgres.gin_cost`).
GIN_ENTRY_COST = 0.06
#: A walk stops after this many times the rows the statistics say it needs (and never reads more
#: than MAX_WALK_ROWS); a walk that comes back short falls back to the GIN indexes.
WALK_MARGIN = 3.0
MAX_WALK_ROWS = 20_000
#: When the statistics expect at most this many matches anywhere, every tier comes from one query
#: (rare words, names, misses): one round trip instead of one per tier. 300 until the server's Python became
#: the bottleneck: two words missing from the statistics (each estimated at half the least common listed one,
#: 183 rows at 100k) were read tier by tier. Measured per query of two words in "any of them" (100k, in
#: process, 100 results): about 450-550 matches, one query 0.16-0.17 ms of Python and 0.7-0.9 ms of
#: PostgreSQL against 0.31-0.38 and 0.6-1.3 tier by tier; about 1,100 matches, 1.2 ms of PostgreSQL against 0.4
#: (2026-12-06).
FUSED_MAX_MATCHES = 600
#: A filter token is read from the tokens' GIN index when it is on at most this many times the rows the
#: words match, else tested on each of those rows (:meth:`_Postgres.facet_sql`): reading an entry of a
#: posting list costs about 0.16 us, fetching and testing a row 2-2.6 us (100k adapters).
FACET_INDEX_RATIO = 10.0
#: How long (seconds) a process keeps the lexeme frequencies it read from ``pg_stats``.
STATS_TTL_S = 300.0
#: What fetching an adapter's row and testing it costs, relative to reading one entry of a GIN posting list
#: (about 2.6 and 0.16 us at 100k adapters): a rare filter token's rows are read and the words tested on each
#: where the token is on fewer than the words' matches / this (:meth:`_Postgres.rare_filter`).
FILTER_ROW_COST = 16.0
#: ... and on at most this many rows (about 8 ms of rows, whatever the statistics say of the words).
RARE_FILTER_MAX_ROWS = 3000
#: What walking a filter token's postings costs a row (an entry, its adapter's row fetched and tested), relative
#: to walking the table's popularity index (:meth:`_Postgres.token_walk`).
TOKEN_WALK_ROW_COST = 1.3
#: A hybrid search's keyword tiers, where one statement reads them with the vector counters, answer in it too
#: whether a stem of the query's words occurs (:meth:`_Postgres.stems_row`): a miss is one round trip, not 2-3.
STEMS_WITH_TIERS = True
#: PostgreSQL postings (migration 0114): the downloads a key orders by are capped at this.
POSTED_DOWNLOADS_CAP = 1073741823
#: A filter token's postings are probed for each entry of a word's tier whose filter bits may hold it, not merged
#: with the tier's entries, where the probes are expected to cost less (:meth:`_Postgres.posted_sql`): a probe
#: costs this many entries of a merge (about 3 us against 0.15-0.2),
POSTED_PROBE_COST = 17.0
#: ... and this share of a word's entries whose adapter lacks a token pass its filter bits all the same (three
#: bits of 128 a token, most adapters carrying 5-20 tokens: about 1-5 %).
BITS_FALSE_PASS = 0.03
_VECTOR_OF_TIER = {TIER_NAME: "name_vector", TIER_KEYWORDS: "keywords_vector", TIER_ANY: "search_vector"}
#: The vector a tier's vector contains (its matches are the tiers above).
_INNER_OF_TIER = {TIER_KEYWORDS: "name_vector", TIER_ANY: "keywords_vector"}


class _Frequencies:
    """How often lexemes (or facet tokens) occur per row, from ``pg_stats.most_common_elems``."""

    def __init__(self, elems: list[str], freqs: list[float]) -> None:
        n = len(elems)
        self.of = dict(zip(elems, freqs[:n], strict=False))
        # What PostgreSQL assumes for an element missing from the list: half the least frequent one.
        self.unlisted = (freqs[n] / 2) if len(freqs) > n else 0.0

    def get(self, token: str) -> float:
        return self.of.get(token, self.unlisted)


@dataclass
class _PgStats:
    loaded: float
    rows: float  # estimated rows of the adapters table
    columns: dict[str, _Frequencies]


_stats_cache: dict[str, _PgStats] = {}
#: Rows an existence check on PostgreSQL lets the planner expect before it prefers walking the table.
EXISTS_CAP = 1000


def _pg_stats(raw: Raw) -> _PgStats:
    """Lexeme and facet frequencies of the adapters table (cached per database for ``STATS_TTL_S``)."""
    key = raw.key
    now = time.monotonic()
    cached = _stats_cache.get(key)
    if cached is not None and now - cached.loaded < STATS_TTL_S:
        return cached
    rows = raw.all(
        "SELECT s.attname, CAST(CAST(s.most_common_elems AS text) AS text[]) AS elems, "
        "s.most_common_elem_freqs AS freqs FROM pg_stats s WHERE s.schemaname = current_schema() "
        "AND ((s.tablename = 'adapters' AND s.attname IN ('name_vector', 'keywords_vector', 'search_vector')) "
        "OR s.tablename = 'ix_adapters_facets') AND s.most_common_elems IS NOT NULL",
        {},
    )
    vectors = set(_VECTOR_OF_TIER.values())
    columns = {(r.attname if r.attname in vectors else "facets"): _Frequencies(r.elems, r.freqs) for r in rows}
    count = raw.all("SELECT c.reltuples FROM pg_class c WHERE c.oid = CAST('adapters' AS regclass)", {})
    stats = _PgStats(now, max(float(count[0][0]) if count else 0.0, 0.0), columns)
    _stats_cache[key] = stats
    return stats


#: Filter tokens' ``hashtext`` kept per database (:func:`_facet_bits`), the most recently used this many.
FACET_HASHES_KEPT = 4096
_facet_hashes: dict[str, OrderedDict[str, int]] = {}
_facet_hashes_lock = threading.Lock()  # a server's search threads share them


def _facet_bits(raw: Raw, tokens: list[str]) -> tuple[int, int]:
    """The 128-bit filter of ``tokens`` that migration 0117's ``lorahub_facet_bits`` computes (bits
    ``h & 127``, ``(h >> 7) & 127`` and ``(h >> 14) & 127`` of each token's ``hashtext`` h; bit b is bit
    ``b & 63`` of half ``b >> 6``), as two signed 64-bit integers, from hashes PostgreSQL computed (asked once
    per token and database: a statement's parameters, not a function it runs)."""
    with _facet_hashes_lock:
        kept = _facet_hashes.setdefault(raw.key, OrderedDict())
        hashes = {t: kept[t] for t in tokens if t in kept}
    missing = [t for t in tokens if t not in hashes]
    if missing:
        for token, h in raw.all("SELECT t, hashtext(t) FROM unnest(CAST(:tokens AS text[])) AS t",
                                {"tokens": missing}):
            hashes[token] = int(h)
    with _facet_hashes_lock:
        for token, h in hashes.items():
            kept[token] = h
            kept.move_to_end(token)
        while len(kept) > FACET_HASHES_KEPT:
            kept.popitem(last=False)
    halves = [0, 0]
    for h in hashes.values():
        for b in (h & 127, (h >> 7) & 127, (h >> 14) & 127):
            halves[b >> 6] |= 1 << (b & 63)
    low, high = (v - (1 << 64) if v >= 1 << 63 else v for v in halves)
    return low, high


class _Postgres(_Backend):
    """Three generated tsvector columns (see the migration): name_vector (name, title),
    keywords_vector (+ trigger words, tags) and search_vector (+ description).

    A page of matches in popularity (or date) order comes either from walking that order's index
    and testing each row until the page is full, or from collecting every match through the GIN
    indexes and sorting them. PostgreSQL's planner picks the walk when it believes matches are
    dense, believing each condition independent of the others: a common word with a common tag
    that rarely go together ("concept" + tag "character") made it walk 25,000 rows for 20 (70 ms).
    So the choice is made here, from the same statistics (``pg_stats``) and the expected cost of
    each (:data:`GIN_ROW_COST`, :data:`GIN_ENTRY_COST`), and a walk is bounded (:data:`WALK_MARGIN`,
    :data:`MAX_WALK_ROWS`): a walk that comes back short falls back to the GIN indexes, over fewer
    matches than the statistics expected. With filter tokens, in popularity order, the walk can be of the
    rarest token's postings instead of the whole table (:meth:`token_walk`). A one-word query's name and
    keyword tiers come from the word's postings instead (:meth:`posted_sql`).
    """

    _order_only = False  # reading for fusion (:meth:`ranked`): tiers 1-3 scored by their tier alone
    #: :meth:`ranked_with_counters` (and a keyword search by relevance): the next statement that can read the
    #: vector counters and the data version too (into ``counters``)
    _with_counters = False
    #: :meth:`ranked_with_counters`: the statement that reads the counters answers :func:`_any_stem` too, where it
    #: can (:meth:`stems_row`)
    _with_stems = False

    def generic_plan_ok(self) -> bool:
        """Whether a statement that reads the words' GIN indexes may run prepared (planned once for any
        values): only without filter tokens. A generic plan cannot know that a token such as ``zbsd1`` (base
        family SD 1.5) is on most rows: it guessed 0.5 %, and ANDed the words' matches with the filter
        tokens' GIN index, reading 87,000 of its entries for the 1,174 rows of "anime" (10 ms instead of
        1.7 at 100k adapters; 2026-12-06). A custom plan reads the words' index and tests the tokens on
        those rows."""
        return not self.plan.facets

    def tsquery(self) -> str:
        joiner = " & " if self.plan.mode == "and" else " | "
        return joiner.join(f"'{t}'" for t in self.plan.terms)  # terms are letters/digits only

    def facet_sql(self, params: dict[str, Any], words: float | None = None, *, rare: str | None = None) -> list[str]:
        """The filter tokens, for a statement whose words match about ``words`` rows (None: no words, or
        not known); ``rare`` (see :meth:`rare_filter`): that token alone is read from the index, the others
        tested on its rows. A token is read from the tokens' GIN index (``ix_adapters_facets``) when its rows are
        at most :data:`FACET_INDEX_RATIO` times the words' (or without words), else tested on each row the
        words' index found, in a form no index answers. The planner's choice misjudged what a long posting
        list costs: it read 42,000 entries of ``ztcharacter`` (6.6 ms) to AND them with the 1,948 rows whose
        name has "girl", which a test of each row filters in about 1 ms; and the 24,000 rows with "woman"
        among their keywords are better ANDed with the 10,000 of ``zbunknown`` than tested one by one
        (100k adapters; 2026-12-06). A row's test is ``strpos``: a third of splitting its tokens into an
        array."""
        if not self.plan.facets:
            return []
        stats = _pg_stats(self.raw) if words is not None and rare is None else None
        freqs = stats.columns.get("facets") if stats is not None else None
        indexed, tested = [], []
        for f in self.plan.facets:
            if rare is not None:
                (indexed if f == rare else tested).append(f)
            elif freqs is None or freqs.get(f) * stats.rows <= FACET_INDEX_RATIO * words:
                indexed.append(f)
            else:
                tested.append(f)
        out = []
        if indexed:
            params["facets"] = indexed
            out.append("string_to_array(a.search_facets, ' ') @> CAST(:facets AS text[])")
        out.extend(self.facet_test(params, f"facet_{i}", f) for i, f in enumerate(tested))
        return out

    def facet_test(self, params: dict[str, Any], name: str, token: str) -> str:
        """The condition that a row has filter token ``token`` (parameter ``name``), in the form no index answers
        (see :meth:`facet_sql`)."""
        params[name] = f" {token} "  # tokens are letters and digits, joined by single spaces
        return f"strpos(' ' || a.search_facets || ' ', :{name}) > 0"

    def matches(self, vector: str) -> float | None:
        """About how many rows ``vector`` matches the words in (None: no statistics)."""
        stats = _pg_stats(self.raw)
        d = self._words(stats, vector)
        return None if d is None else d * stats.rows

    def filters(self, params: dict[str, Any], words: float | None = None) -> list[str]:
        return [self.visibility(params), *self.column_filters(params), *self.facet_sql(params, words)]

    # -- strategy ---------------------------------------------------------------------------

    def density(self, stats: _PgStats, vector: str | None, inner: str | None = None) -> float | None:
        """Estimated fraction of rows whose ``vector`` matches the words (but not ``inner``, a vector
        it contains) and that have the facets; None without statistics."""
        d = 1.0
        if vector is not None:
            words = self.tier_words(stats, vector, inner)
            if words is None:
                return None
            d = words
        if self.plan.facets:
            facets = stats.columns.get("facets")
            if facets is None:
                return None
            for f in self.plan.facets:
                d *= facets.get(f)
        return d

    def tier_words(self, stats: _PgStats, vector: str, inner: str | None = None) -> float | None:
        """Estimated fraction of rows whose ``vector`` matches the words but not ``inner``'s."""
        d = self._words(stats, vector)
        if d is None or inner is None:
            return d
        within = self._words(stats, inner)
        if within is None:
            return None
        return max(d - within, stats.columns[vector].unlisted)

    def _words(self, stats: _PgStats, vector: str) -> float | None:
        freq = stats.columns.get(vector)
        if freq is None:
            return None
        fs = [freq.get(t) for t in self.plan.terms]
        if self.plan.mode == "and":
            d = 1.0
            for f in fs:
                d *= f
            return d
        miss = 1.0
        for f in fs:
            miss *= 1.0 - f
        return 1.0 - miss

    def select(self, where: list[str], params: dict[str, Any], sort: str, limit: int, offset: int = 0,
               vector: str | None = None, inner: str | None = None, words: float | None = None) -> list[Any]:
        """One page of the rows matching ``where`` and the filter tokens in ``sort`` order (see the class's
        docstring); ``words``: about how many rows the words match (:meth:`facet_sql`)."""
        params.update(n=limit, o=offset)
        order = _order(sort)
        density = None
        if vector is not None or self.plan.facets:
            stats = _pg_stats(self.raw)
            density = self.density(stats, vector, inner)
        want = offset + limit
        if density is not None and sort != "newest":
            walk = self.token_walk(stats, density, where, params, want, self.gin_cost(stats, density, vector, words))
            if walk is not None:
                return walk[offset:want]
        cond = " AND ".join([*where, *self.facet_sql(params, words)])
        if density is None:  # no words nor facets (a plain walk), or no statistics yet: the planner decides
            return self.run(f"SELECT a.id, a.downloads FROM adapters a WHERE {cond} ORDER BY {order} LIMIT :n OFFSET :o",
                            params)
        rows: list[Any] = []
        walked = 0
        while True:
            # Expected rows a walk tests for the rest of the page, against the matches a GIN query reads.
            walk_rows = (want - len(rows)) / max(density, 1e-9)
            if walk_rows > self.gin_cost(stats, density, vector, words) or walked + walk_rows > MAX_WALK_ROWS:
                break
            window = min(int(WALK_MARGIN * walk_rows) + 100, MAX_WALK_ROWS - walked)
            rows += self.run(
                f"SELECT a.id, a.downloads FROM (SELECT * FROM adapters a ORDER BY {order} "
                f"LIMIT :w_rows OFFSET :w_skip) a WHERE {cond} ORDER BY {order} LIMIT :w_n",
                {**params, "w_rows": window, "w_skip": walked, "w_n": want - len(rows)},
                prepare=True,  # the plan is the walk whatever the values
            )
            walked += window
            if len(rows) >= want:
                return rows[offset:want]
            if not rows:
                break
            density = len(rows) / walked  # what the walk saw replaces the estimate
        # MATERIALIZED keeps the planner from turning this back into an unbounded walk.
        return self.run(
            f"WITH m AS MATERIALIZED (SELECT a.id, a.downloads, a.published_at FROM adapters a WHERE {cond}) "
            f"SELECT a.id, a.downloads FROM m a ORDER BY {order} LIMIT :n OFFSET :o",
            params,
            prepare=self.generic_plan_ok(),  # chosen for few matches: the GIN indexes whatever the words
        )

    def gin_cost(self, stats: _PgStats, density: float, vector: str | None, words: float | None) -> float:
        """What reading every match through the GIN indexes costs, in rows of a walk: the matches' rows, and the
        entries of the posting lists read (:data:`GIN_ENTRY_COST`): each word's in ``vector``, each filter
        token's that :meth:`facet_sql` reads from the index for words matching about ``words`` rows. With the
        matches alone a walk looked dearer than it is where long lists AND to few rows."""
        entries = 0.0
        if vector is not None and (freq := stats.columns.get(vector)) is not None:
            entries += sum(freq.get(t) for t in self.plan.terms) * stats.rows
        facets = stats.columns.get("facets")
        if facets is not None:
            for f in self.plan.facets:
                rows = facets.get(f) * stats.rows
                if words is None or rows <= FACET_INDEX_RATIO * words:
                    entries += rows
        return GIN_ROW_COST * density * stats.rows + GIN_ENTRY_COST * entries

    def token_walk(self, stats: _PgStats, density: float, where: list[str], params: dict[str, Any],
                   want: int, gin: float) -> list[Any] | None:
        """The first ``want`` rows (by popularity) matching ``where`` and the filter tokens, from a walk of the
        rarest token's postings (tier 0, in popularity order): each entry's adapter row fetched and tested,
        the other tokens too, until ``want`` match or the token's entries end (then every match was seen).
        None where the statistics expect this to cost more than the walk of the whole table's popularity index
        (which tests every row, the token's or not) or the GIN indexes (``gin``, :meth:`gin_cost`): the
        caller's ways; or where the walk reached :data:`MAX_WALK_ROWS` short of the page. The description's
        tier of "character" with the tag "celebrity" (13 rows wanted after tiers 3 and 2): the GIN indexes
        ANDed 50,000 entries of the word with 10,000 of the tag and fetched 1,400 rows (9.8 ms); the tag's
        first 103 entries hold the 13 (1.3 ms; 100k adapters, 2026-12-07). Windows grow twofold; each one's
        entries are counted (in the same statement, only where the page is not full) to tell the end of the
        token's entries."""
        freqs = stats.columns.get("facets")
        if not self.plan.facets or freqs is None:
            return None
        token = min(self.plan.facets, key=freqs.get)
        share = max(freqs.get(token), 1e-9)
        within = min(density / share, 1.0)  # the matches' share of the token's rows
        need = want / max(within, 1e-9)
        entries = share * stats.rows  # the token's entries, about
        cost = TOKEN_WALK_ROW_COST * min(need, entries)
        if cost > gin or cost > want / max(density, 1e-9) or min(need, entries) > MAX_WALK_ROWS:
            return None
        params["walk_token"] = token
        tested = [self.facet_test(params, f"walk_facet_{i}", f)
                  for i, f in enumerate(f for f in self.plan.facets if f != token)]
        cond = " AND ".join(["a.id = " + str(MASK) + " - (w.key & " + str(MASK) + ")", *where, *tested])
        window = min(int(WALK_MARGIN * need) + 100, MAX_WALK_ROWS)
        after = -(1 << 63)
        rows: list[Any] = []
        walked = 0
        while True:
            window_sql = (f"(SELECT p.key FROM adapter_postings p WHERE p.word = :walk_token AND p.tier = 0 "
                          f"AND p.key > :w_after{self.posted_visibility(params)} ORDER BY p.key LIMIT :w_rows) w")
            # The window's entries in order, each one's row tested until the page is full (the join keeps the
            # entries' order: no sort, so the walk stops there); and how many entries the window held.
            out = self.run(
                f"WITH x AS MATERIALIZED (SELECT x.id, x.downloads, x.key FROM {window_sql} CROSS JOIN LATERAL "
                f"(SELECT a.id, a.downloads, w.key FROM adapters a WHERE {cond} OFFSET 0) x LIMIT :w_n) "
                f"SELECT * FROM x UNION ALL (SELECT -1, count(*), max(w.key) FROM {window_sql} "
                "WHERE (SELECT count(*) FROM x) < :w_n)",
                {**params, "w_rows": window, "w_after": after, "w_n": want - len(rows)},
            )
            found = sorted((r for r in out if r[0] != -1), key=lambda r: r[2])
            rows += found
            if len(rows) >= want:
                return rows[:want]
            sentinel = next(r for r in out if r[0] == -1)
            walked += int(sentinel[1])
            if sentinel[1] < window:
                return rows[:want]  # the page, or every match the token has
            if walked + window > MAX_WALK_ROWS:
                return None
            after = int(sentinel[2])
            window = min(window * 2, MAX_WALK_ROWS - walked)

    # -- queries ----------------------------------------------------------------------------

    def ranked(self, limit: int) -> list[Hit]:
        self._order_only = True
        try:
            return super().ranked(limit)
        finally:
            self._order_only = False

    def ranked_with_counters(self, limit: int) -> tuple[list[Hit], Counters | None]:
        """The one-word tiers' statement (:meth:`top_tiers`) and the one of few matches (:meth:`relevance`)
        read the counters as one more row; the tier-by-tier forms do not (the counters are read apart then)."""
        self._with_counters, self.counters = True, None
        self._with_stems = STEMS_WITH_TIERS and self.plan.mode == "and"
        try:
            return self.ranked(limit), self.counters
        finally:
            self._with_counters = self._with_stems = False

    def counters_row(self, columns: int) -> str:
        """`` UNION ALL`` a row of the vector counters, ``columns`` wide: the stored and removed counters first,
        zeros, and last -1, or -2 where some adapter is private; and a row of the data version (migration 0116):
        the version first, zeros, and last -3 (no row of a tier has a negative last column); for the next
        statement only."""
        from .semantic import counters_sql

        self._with_counters = False
        zeros = "0, " * (columns - 3)
        return (f" UNION ALL (SELECT c.e, c.r, {zeros}-1 - CAST(c.p AS integer) FROM ({counters_sql(True)}) c)"
                f" UNION ALL (SELECT v.version, 0, {zeros}-3 FROM registry_data_version v)")

    def stems_row(self, columns: int, params: dict[str, Any]) -> tuple[str, str]:
        """(a CTE, `` UNION ALL`` a row) answering :func:`_any_stem` in the statement of the tiers, whose rows
        are the CTE ``t``: a row ``columns`` wide, last -4, where ``t`` is empty and a stem of a word of the query
        occurs in what the viewer may see, filters aside (:meth:`any_prefix`'s postings and GIN index; the
        ``CASE`` keeps both unread where the tiers found something). For the next statement only."""
        self._with_stems = False
        cte, found = self.prefix_check(_stems(self.plan.terms), params, "stemmed")
        zeros = "0, " * (columns - 1)
        return cte, f" UNION ALL (SELECT {zeros}-4 WHERE CASE WHEN EXISTS (SELECT 1 FROM t) THEN false ELSE {found} END)"

    def take_counters(self, rows: list[Any], *, stems: bool = False) -> list[Any]:
        """``rows`` less the rows :meth:`counters_row` (kept in ``counters``) and, with ``stems``,
        :meth:`stems_row` added (``stems``: whether it came)."""
        out = []
        counters = data = None
        if stems:
            self.stems = False
        for r in rows:
            if r[-1] >= 0:
                out.append(r)
            elif r[-1] == -3:
                data = int(r[0]) if r[0] is not None else None
            elif r[-1] == -4:
                self.stems = True
            else:
                counters = (int(r[0] or 0), int(r[1] or 0), r[-1] == -2)
        if counters is not None:
            self.counters = (*counters, data)
        if stems and out:
            self.stems = None  # the tiers found something: the stems were not asked
        return out

    def posted_hits(self, rows: list[Any], tier: int) -> list[Hit]:
        if self._order_only:
            score = float(tier)
            return [Hit(r[0], score) for r in rows]
        return _hits(rows, tier)

    def postable(self) -> bool:
        """Whether tiers 3 and 2 may come from the postings (:meth:`top_tiers`): one word, no rank bound."""
        return len(self.plan.terms) == 1 and not self.rank_bounds()

    def rare_filter(self, stats: _PgStats) -> str | None:
        """The query's filter token on so few adapters, beside the rows its words match, that reading that
        token's rows and testing the words on each costs less than any reading of the words' matches (None:
        none is). PostgreSQL's planner ANDs the token's posting list with the words' GIN entries, all of
        them: "woman" with base SD 2 read 24,567 entries to keep 18 of the token's 529 rows, and the postings
        probed the word's entries once per row of the token, twice (9.4 ms; 100k adapters, 2026-12-07)."""
        freqs = stats.columns.get("facets")
        if not self.plan.facets or freqs is None:
            return None
        words = self._words(stats, "search_vector")
        if words is None:
            return None
        token = min(self.plan.facets, key=freqs.get)
        rows = freqs.get(token) * stats.rows
        if rows > RARE_FILTER_MAX_ROWS or rows * FILTER_ROW_COST > words * stats.rows:
            return None
        return token

    def tiers_fill(self, stats: _PgStats, want: int) -> bool:
        """Whether the statistics expect the name and keyword tiers, filters applied, to hold ``want``
        adapters (True where they cannot tell): the postings then answer the page, else the description's
        tier is read too, through the words' GIN index, every match of it."""
        t3 = self.density(stats, "name_vector")
        t2 = self.density(stats, "keywords_vector", "name_vector")
        if t3 is None or t2 is None:
            return True
        return (t3 + t2) * stats.rows >= want

    def relevance(self, offset: int, limit: int) -> list[Hit]:
        stats = _pg_stats(self.raw)
        rare = self.rare_filter(stats)
        if rare is not None:
            return self.every_tier(offset, limit, rare=rare)
        density = self.density(stats, "search_vector")
        if density is not None and self.plan.facets and self.postable():
            # Few filtered matches, and the statistics expect the name and keyword tiers to come back short of
            # the page: the description's tier would read every match through the GIN index after two merges
            # of postings; one statement reads them once ("dress" with the tag "portraits": 5.9 -> 3.2 ms of
            # PostgreSQL; 100k adapters, 2026-12-07). Else the one statement would read every match of the word,
            # whatever the filter tokens keep (10 ms for the 48,581 adapters with "anime" to keep those of base
            # SD 2), where the postings read a fraction of them.
            if density * stats.rows <= FUSED_MAX_MATCHES and not self.tiers_fill(stats, offset + limit):
                return self.every_tier(offset, limit)
            density = self.tier_words(stats, "search_vector")
        if density is None or density * stats.rows > FUSED_MAX_MATCHES:
            if not self.postable():
                return super().relevance(offset, limit)
            want = offset + limit
            hits = self.top_tiers(want)
            if len(hits) < want:
                hits += self.tier(TIER_ANY, want - len(hits))
            return hits[offset:want]
        # Few matches: read them all once through the GIN index (and the name index for tier 4)
        # and let each row's tier order them.
        return self.every_tier(offset, limit)

    def every_tier(self, offset: int, limit: int, *, rare: str | None = None) -> list[Hit]:
        """A page of every tier in one statement, each match's tier computed on its row: the matches read
        through the words' GIN index, or with ``rare`` (:meth:`rare_filter`) the rows of that filter token,
        the words tested on each (``ts_match_vq``: the function of ``@@``, which no index answers)."""
        params: dict[str, Any] = {"q": self.tsquery(), "n": limit, "o": offset}
        tiers = "CASE WHEN a.name_vector @@ CAST(:q AS tsquery) THEN 3 " \
                "WHEN a.keywords_vector @@ CAST(:q AS tsquery) THEN 2 ELSE 1 END"
        if rare is None:
            match = "a.search_vector @@ CAST(:q AS tsquery)"
            filters = self.filters(params, self.matches("search_vector"))
        else:
            match = "ts_match_vq(a.search_vector, CAST(:q AS tsquery))"
            filters = [self.visibility(params), *self.column_filters(params), *self.facet_sql(params, rare=rare)]
        if self.plan.name_norm:
            params["qn"] = self.plan.name_norm
            tiers = f"CASE WHEN a.name_norm = :qn THEN 4 ELSE {tiers} END"
            match = f"({match} OR a.name_norm = :qn)"
        sql = (f"SELECT a.id, a.downloads, {tiers} AS tier FROM adapters a "
               f"WHERE {' AND '.join([match, *filters])} "
               "ORDER BY tier DESC, a.downloads DESC, a.id DESC LIMIT :n OFFSET :o")
        counted = self._with_counters
        stems = counted and self._with_stems
        if stems:
            cte, stems_row = self.stems_row(3, params)
            sql = f"WITH t AS MATERIALIZED ({sql}), {cte} (SELECT * FROM t){self.counters_row(3)}{stems_row}"
        elif counted:
            sql = f"({sql}){self.counters_row(3)}"
        rows = self.run(sql, params, prepare=self.generic_plan_ok())
        if counted:  # a UNION's branches come in no promised order: the statement's own order, again
            rows = sorted(self.take_counters(rows, stems=stems), key=lambda r: (-r[2], -r[1], -r[0]))
        return [Hit(r[0], r[2] + T.popularity(r[1])) for r in rows]

    def any_match(self) -> bool:
        params: dict[str, Any] = {"q": self.tsquery()}
        return self.exists(["a.search_vector @@ CAST(:q AS tsquery)",
                            *self.filters(params, self.matches("search_vector"))], params)

    def any_prefix(self, prefixes: list[str]) -> bool:
        """Whether a word beginning with one of ``prefixes`` occurs in an adapter the search may show: first in
        the name and keyword words' postings (a B-tree range each, in the C collation: 0.05 ms), then, for the
        description's words, through the GIN index (3.3 ms for ``clothi:*``, every adapter with "clothing"
        collected; 100k adapters, 2026-12-06), in one statement: the GIN part runs only where the postings have
        none (PostgreSQL evaluates an OR's sub-selects lazily, and a CTE when it is first read). With filters
        the postings do not hold (rank bounds, filter tokens), the GIN index alone."""
        params: dict[str, Any] = {"prefixes": _prefix_query(prefixes)}
        if self.plan.facets or self.rank_bounds() or not prefixes:
            return self.exists(["a.search_vector @@ CAST(:prefixes AS tsquery)", *self.filters(params)], params)
        cte, found = self.prefix_check(prefixes, params, "m")
        return bool(self.run(f"WITH {cte} SELECT 1 WHERE {found}", params))

    def prefix_check(self, prefixes: list[str], params: dict[str, Any], name: str) -> tuple[str, str]:
        """(a CTE called ``name``, a condition): whether a word beginning with one of ``prefixes`` occurs in an
        adapter the viewer may see, filters aside (:meth:`any_prefix`): the postings' ranges, then the GIN
        index through the CTE (read only if the condition gets that far; capped at :data:`EXISTS_CAP` rows,
        see :meth:`exists`). ``params["prefixes"]``: the prefixes' tsquery."""
        params["prefixes"] = _prefix_query(prefixes)
        cte = (f"{name} AS MATERIALIZED (SELECT a.id FROM adapters a WHERE a.search_vector @@ CAST(:prefixes AS tsquery) "
               f"AND {self.visibility(params)} LIMIT {EXISTS_CAP})")
        return cte, f"({self.posted_prefix(prefixes, params)} OR EXISTS (SELECT 1 FROM {name}))"

    def posted_prefix(self, prefixes: list[str], params: dict[str, Any]) -> str:
        """The condition that a posted word of tier 2 or 3 (not a filter token) visible to the viewer begins
        with one of ``prefixes`` (letters and digits: ``[lo, hi)`` with ``hi`` the prefix with its last
        character's successor holds exactly the words beginning with it, the C collation ordering by code
        point)."""
        visible = self.posted_visibility(params)
        probes = []
        for i, prefix in enumerate(prefixes):
            params[f"lo_{i}"] = prefix
            params[f"hi_{i}"] = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            probes.append(f"EXISTS (SELECT 1 FROM adapter_postings p WHERE p.word >= :lo_{i} AND p.word < :hi_{i} "
                          f"AND p.tier > 0{visible})")
        return "(" + " OR ".join(probes) + ")"

    def posted_visibility(self, params: dict[str, Any]) -> str:
        """The viewer's visibility on postings ``p`` (``private_owner``), as `` AND ...`` or nothing."""
        everything, owners = viewer_owners(self.plan.viewer)
        if everything:
            return ""
        if owners:
            params["viewers"] = list(owners)
            return " AND (p.private_owner IS NULL OR p.private_owner = ANY(CAST(:viewers AS integer[])))"
        return " AND p.private_owner IS NULL"

    def exists(self, where: list[str], params: dict[str, Any]) -> bool:
        """Whether some adapter matches ``where``. Asked through a materialized CTE capped at
        :data:`EXISTS_CAP` rows, not a bare ``LIMIT 1``: under ``LIMIT 1`` the planner walks the table when
        it expects a few dozen matches (one of them should come soon), and for words that match nothing it
        walked all of it (72 ms at 20,000 rows, about 5x that at 100,000: the hybrid HTTP benchmark's p99 on
        PostgreSQL); the cap leaves it the GIN index when few rows are expected and the walk, which stops at
        the first match, when many are (2026-12-06)."""
        sql = (f"WITH m AS MATERIALIZED (SELECT a.id FROM adapters a WHERE {' AND '.join(where)} "
               f"LIMIT {EXISTS_CAP}) SELECT 1 FROM m LIMIT 1")
        return bool(self.run(sql, params))

    def posted_sql(self, tier: int, params: dict[str, Any], limit: str) -> str:
        """The statement of tier 3 or 2 of a one-word query read from the word's postings
        (``adapter_postings``, migration 0114: its adapters in popularity order, kept by triggers), at most
        ``:limit`` rows of (id, downloads, key). Without filter tokens the first entries of the range are the
        page (0.07 ms, against 1.7-9 ms for reading the 1,174 rows of "anime" in names through the GIN index
        to sort them; 100k adapters, 2026-12-06); with them each token's range (tier 0) is merged with the
        word's until the page is full, no row of ``adapters`` read (a keyword search of 100 results for "woman"
        with base ``unknown``: 17.4 -> 7.2 ms). Where tokens are probed, an entry whose filter bits (migration
        0117: a Bloom filter of its adapter's tokens, in the index) lack a wanted token's is skipped first:
        "concept" with the tag "character" (a hybrid search's 149 keyword hits) probed the 1,808 entries of
        tier 3 (6.7 ms), of which 258 pass the bits (1.2 ms; 100k adapters, 2026-12-06)."""
        p = self.plan
        params["w"] = p.terms[0]
        where = [f"p.word = :w AND p.tier = {int(tier)}{self.posted_visibility(params)}"]
        probes = []
        if p.facets:
            stats = _pg_stats(self.raw)
            freqs = stats.columns.get("facets")
            words = self.tier_words(stats, _VECTOR_OF_TIER[tier], _INNER_OF_TIER.get(tier))
            # A token's entry for each of the word's entries that pass the filter bits, in the range's order
            # until the page is full (a B-tree probe each, about 3 us), where the probes are expected to cost
            # less than merging the two ranges (about 0.15-0.2 us an entry), the planner's way: the word's
            # entries times the share expected to pass the bits (the token's share, independence assumed, and
            # the bits' false passes) times a probe's cost, against the token's entries. Merging read 31,546
            # entries of base SD 1.5 to keep 100 of the 122 first entries of "cute" (6.4 ms against 0.3), and the
            # 42,000 of the tag "character" for the 93 of the 4,360 entries of "concept" in keywords that have it
            # (7.0-7.4 ms against 2.1-2.8 probed; a rule of 12 times the word's adapters had merged them; 100k
            # adapters, 2026-12-07). OFFSET 0 keeps the subquery a per-row probe.
            probes = [freqs is not None and words is not None
                      and words * (freqs.get(f) + BITS_FALSE_PASS) * POSTED_PROBE_COST < freqs.get(f)
                      for f in p.facets]
        if any(probes):
            # Entries whose filter bits lack a wanted token's are skipped before any probe (not before a
            # merge: the planner, expecting few entries to pass, would probe them all instead, bits that
            # merely look right passing too).
            params["bits_0"], params["bits_1"] = _facet_bits(self.raw, p.facets)
            where.append("(~p.facet_bits_0 & CAST(:bits_0 AS bigint)) = 0 "
                         "AND (~p.facet_bits_1 & CAST(:bits_1 AS bigint)) = 0")
        for i, (f, probe) in enumerate(zip(p.facets, probes, strict=True)):
            params[f"posted_{i}"] = f
            where.append(f"EXISTS (SELECT 1 FROM adapter_postings f{i} WHERE f{i}.word = :posted_{i} "
                         f"AND f{i}.tier = 0 AND f{i}.key = p.key{' OFFSET 0' if probe else ''})")
        return (f"SELECT {MASK} - (p.key & {MASK}) AS id, {POSTED_DOWNLOADS_CAP} - (p.key >> 32) AS downloads, "
                f"p.key FROM adapter_postings p WHERE {' AND '.join(where)} ORDER BY p.key LIMIT :{limit}")

    def top_tiers(self, want: int) -> list[Hit]:
        """The first ``want`` hits of tiers 4, 3 and 2 of a one-word query, in one statement: the exact
        names, then each tier's postings (:meth:`posted_sql`; tier 2 read only if tier 3 came back short), the
        exact names left out of tier 3 here (a round trip and its statement's work in the driver saved per
        tier: most searches are one word). ``k`` exact names leave at least ``want - k`` of tier 3's ``want``
        rows, all the page needs of it."""
        p = self.plan
        params: dict[str, Any] = {"qn": p.name_norm, "n": want}
        exact = " AND ".join(["a.name_norm = :qn", self.visibility(params), *self.facet_sql(params, 1)])
        # Tier 2 only where tier 3 came back short of its limit (a one-time filter: tier 3 alone fills most
        # pages of a common word).
        counted = self._with_counters
        rows = self.run(
            f"WITH t3 AS MATERIALIZED ({self.posted_sql(TIER_NAME, params, 'n')}) "
            f"(SELECT a.id, a.downloads, 0 AS key, {TIER_EXACT} AS tier FROM adapters a WHERE {exact} "
            "ORDER BY a.downloads DESC, a.id DESC LIMIT :n) "
            f"UNION ALL (SELECT x.*, {TIER_NAME} FROM t3 x) "
            f"UNION ALL (SELECT x.*, {TIER_KEYWORDS} FROM ({self.posted_sql(TIER_KEYWORDS, params, 'n')}) x "
            f"WHERE (SELECT count(*) FROM t3) < :n){self.counters_row(4) if counted else ''}",
            params,
            prepare=not p.facets,  # index lookups and ranges whatever the word
        )
        if counted:
            rows = self.take_counters(rows)
        by_tier: dict[int, list[Any]] = {TIER_EXACT: [], TIER_NAME: [], TIER_KEYWORDS: []}
        for r in rows:
            by_tier[r[3]].append(r)
        exact_rows = sorted(by_tier[TIER_EXACT], key=lambda r: (-r[1], -r[0]))
        out = [Hit(r[0], TIER_EXACT + T.popularity(r[1])) for r in exact_rows]
        pinned = {h.id for h in out}
        for tier in (TIER_NAME, TIER_KEYWORDS):
            if len(out) >= want:
                break
            tier_rows = sorted(by_tier[tier], key=lambda r: r[2])
            out.extend(self.posted_hits([r for r in tier_rows if r[0] not in pinned][: want - len(out)], tier))
        return out[:want]

    def tier(self, tier: int, limit: int) -> list[Hit]:
        params: dict[str, Any] = {"q": self.tsquery()}
        if tier == TIER_NAME:
            where = ["a.name_vector @@ CAST(:q AS tsquery)"]
            if self.plan.name_norm:
                where.append("a.name_norm <> :qn")
                params["qn"] = self.plan.name_norm
        elif tier == TIER_KEYWORDS:
            where = ["a.keywords_vector @@ CAST(:q AS tsquery)", "NOT (a.name_vector @@ CAST(:q AS tsquery))"]
        else:
            where = ["a.search_vector @@ CAST(:q AS tsquery)", "NOT (a.keywords_vector @@ CAST(:q AS tsquery))"]
        rows = self.select([*where, self.visibility(params), *self.column_filters(params)], params, "relevance", limit,
                           vector=_VECTOR_OF_TIER[tier], inner=_INNER_OF_TIER.get(tier),
                           words=self.matches(_VECTOR_OF_TIER[tier]))
        return _hits(rows, tier)

    def browse(self, sort: str, offset: int, limit: int) -> list[Hit]:
        params: dict[str, Any] = {}
        return _hits(self.select([self.visibility(params), *self.column_filters(params)], params, sort, limit, offset))

    def sorted_matches(self, sort: str, offset: int, limit: int) -> list[Hit]:
        params: dict[str, Any] = {"q": self.tsquery()}
        rare = self.rare_filter(_pg_stats(self.raw))
        if rare is not None:  # the token's rows, the words tested on each (:meth:`every_tier`)
            params.update(n=limit, o=offset)
            where = ["ts_match_vq(a.search_vector, CAST(:q AS tsquery))", self.visibility(params),
                     *self.column_filters(params), *self.facet_sql(params, rare=rare)]
            return _hits(self.run(f"SELECT a.id, a.downloads FROM adapters a WHERE {' AND '.join(where)} "
                                  f"ORDER BY {_order(sort)} LIMIT :n OFFSET :o", params))
        where = ["a.search_vector @@ CAST(:q AS tsquery)", self.visibility(params), *self.column_filters(params)]
        return _hits(self.select(where, params, sort, limit, offset, vector="search_vector",
                                 words=self.matches("search_vector")))


__all__ = ["Hit", "depth_for", "fuse", "resolve_mode", "search_page", "TIER_ANY", "TIER_EXACT", "TIER_KEYWORDS", "TIER_NAME"]
