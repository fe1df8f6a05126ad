"""PostgreSQL: each word posting carries a 128-bit filter of its adapter's filter tokens (``facet_bits_0``,
``facet_bits_1`` of ``adapter_postings``), so that a one-word search that probes a filter token's postings for
each of the word's entries tests the bits in the word's index range first, and probes only the entries that may
have the token.

Migration 0114 posts the words of an adapter's name/title (tier 3) or trigger words and tags (tier 2) in
popularity order, and each filter token (tier 0). A one-word search with filters (``--tag``, ``--base``,
``--author``...) merged the word's range with each token's, or probed the token's postings for each of the
word's entries, until its page was full: where the word and the filter rarely go together, every entry of the
word was probed, or every entry of a common token read ("concept" with the tag "character" for a hybrid search
of 149 keyword hits, 100k adapters: 1,808 name entries probed, 6.7 ms, then 41,970 entries of the tag merged
with 4,360 of the word, 11.4 ms; 2026-12-06). The bits are a Bloom filter of the adapter's ``search_facets``
tokens (:func:`lorahub_facet_bits`: three bits of 128 a token, from PostgreSQL's ``hashtext``, the hash its
hash indexes keep across upgrades), read from the index beside the key (``INCLUDE``): an entry whose bits lack
a wanted token's is skipped for about 0.3 us, and only the others (the adapters with the token, and those that
merely look so: 0.6 % of the others on average, 12 % of the adapters named "concept" for the tag "character")
are probed. The result is exact: the probe still decides. Where the search lets
the planner merge the ranges instead (a token rare beside the word), the bits are not asked for: expecting few
entries to pass them, the planner would probe every entry that does (registry/search.py,
``_Postgres.posted_sql``). 16 bytes more a posting.

The triggers of 0114 call the functions replaced here (same names). The postings are rebuilt (8-10 s at 100k
adapters). SQLite: nothing.

Revision ID: 0117_posting_facet_bits
Revises: 0116_result_rows_version
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0117_posting_facet_bits"
down_revision = "0116_result_rows_version"
branch_labels = None
depends_on = None

#: Half ``half`` (0 or 1) of the 128-bit filter of a ``search_facets`` value: for each token, bits
#: ``h & 127``, ``(h >> 7) & 127`` and ``(h >> 14) & 127`` of its ``hashtext`` h; bit b is bit ``b & 63`` of half
#: ``b >> 6``. The filter of a set of tokens holds the filter of each of them (a search asks for the filter of its
#: tokens). Three bits a token, not two: two let a token whose bits both fall on bits of tokens that go with a word
#: pass for most of the word's entries (the tag "onepiece" for 342 of the 978 adapters named "realistic", none
#: with it; three bits: none; 100k adapters of 8.8 tokens on average, 40 tags: 1.1 % of the adapters without a
#: tag passed with two bits, 0.6 % with three, 0.4 % with four, whose worst case was worse).
_BITS_FUNCTION = """
CREATE OR REPLACE FUNCTION lorahub_facet_bits(tokens text, half integer) RETURNS bigint AS $$
    SELECT coalesce(bit_or(CAST(1 AS bigint) << (v.b & 63)), 0)
    FROM unnest(string_to_array(tokens, ' ')) AS t(token)
    CROSS JOIN LATERAL (VALUES (hashtext(t.token) & 127), ((hashtext(t.token) >> 7) & 127),
                               ((hashtext(t.token) >> 14) & 127)) AS v(b)
    WHERE t.token <> '' AND v.b >> 6 = half
$$ LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
"""

#: The posting key and visibility of 0114 (a row ``r`` of ``adapters``).
_KEY = "(CAST(1073741823 - least(greatest(r.downloads, 0), 1073741823) AS bigint) << 32) | (4294967295 - r.id)"
_OWNER = "CASE WHEN r.private THEN coalesce(r.owner_id, -1) END"
_BITS_OF = "lorahub_facet_bits(r.search_facets, 0) AS b0, lorahub_facet_bits(r.search_facets, 1) AS b1"


def _postings_of(bits: bool) -> str:
    """0114's postings of the rows ``{rows}``; with ``bits``, each word's with its adapter's filter (the filter
    tokens' own postings, tier 0, with none: they are never filtered so)."""
    # the filter computed once per adapter (OFFSET 0: not per posting)
    word_bits, per_row, grouped = (", fb.b0, fb.b1", f"CROSS JOIN LATERAL (SELECT {_BITS_OF} OFFSET 0) fb\n",
                                   ", fb.b0, fb.b1") if bits else ("", "", "")
    token_bits = ", CAST(0 AS bigint), CAST(0 AS bigint)" if bits else ""
    return f"""
SELECT w.word, CAST(max(w.tier) AS smallint), {_KEY}, {_OWNER}{word_bits}
FROM {{rows}} r
{per_row}CROSS JOIN LATERAL (SELECT unnest(tsvector_to_array(r.name_vector)) AS word, 3 AS tier
                    UNION ALL SELECT unnest(tsvector_to_array(r.keywords_vector)), 2) w
GROUP BY w.word, r.id, r.downloads, r.private, r.owner_id{grouped}
UNION ALL
SELECT DISTINCT f.token, CAST(0 AS smallint), {_KEY}, {_OWNER}{token_bits}
FROM {{rows}} r CROSS JOIN LATERAL unnest(string_to_array(r.search_facets, ' ')) AS f(token) WHERE f.token <> ''
"""


_DELETE_OF = f"""
DELETE FROM adapter_postings p USING (
    SELECT w.word, {_KEY} AS key
    FROM {{rows}} r
    CROSS JOIN LATERAL (SELECT unnest(tsvector_to_array(r.name_vector)) AS word
                        UNION SELECT unnest(tsvector_to_array(r.keywords_vector))
                        UNION SELECT unnest(string_to_array(r.search_facets, ' '))) w
) d WHERE p.word = d.word AND p.tier IN (0, 2, 3) AND p.key = d.key
"""


def _insert(bits: bool) -> str:
    return ("INSERT INTO adapter_postings (word, tier, key, private_owner"
            f"{', facet_bits_0, facet_bits_1' if bits else ''}) ")


def _function(name: str, *statements: str) -> str:
    """A trigger function running ``statements`` (in the schema it is created in, as 0113's)."""
    body = "".join(f"    {sql.strip()};\n" for sql in statements)
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$\nBEGIN\n{body}    RETURN NULL;\nEND\n"
            "$$ LANGUAGE plpgsql SET search_path FROM CURRENT")


def _functions(bits: bool) -> list[str]:
    postings, insert = _postings_of(bits), _insert(bits)
    return [
        _function("lorahub_postings_inserted", insert + postings.format(rows="new_rows")),
        _function("lorahub_postings_deleted", _DELETE_OF.format(rows="old_rows")),
        _function("lorahub_postings_updated", _DELETE_OF.format(rows="(SELECT OLD.*)"),
                  insert + postings.format(rows="(SELECT NEW.*)")),
    ]


def _rebuild(bits: bool) -> None:
    """The postings written again from ``adapters``, their primary key (and index) built after them."""
    op.execute("ALTER TABLE adapter_postings DROP CONSTRAINT pk_adapter_postings")
    op.execute("TRUNCATE adapter_postings")
    if bits:
        op.execute("ALTER TABLE adapter_postings ADD COLUMN facet_bits_0 bigint NOT NULL DEFAULT 0, "
                   "ADD COLUMN facet_bits_1 bigint NOT NULL DEFAULT 0")
    else:
        op.execute("ALTER TABLE adapter_postings DROP COLUMN facet_bits_0, DROP COLUMN facet_bits_1")
    op.execute(_insert(bits) + _postings_of(bits).format(rows="adapters"))
    include = "private_owner, facet_bits_0, facet_bits_1" if bits else "private_owner"
    op.execute("ALTER TABLE adapter_postings ADD CONSTRAINT pk_adapter_postings PRIMARY KEY (word, tier, key) "
               f"INCLUDE ({include})")
    op.execute("ANALYZE adapter_postings")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_BITS_FUNCTION)
    for sql in _functions(bits=True):
        op.execute(sql)
    _rebuild(bits=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for sql in _functions(bits=False):
        op.execute(sql)
    _rebuild(bits=False)
    op.execute("DROP FUNCTION IF EXISTS lorahub_facet_bits(text, integer)")
