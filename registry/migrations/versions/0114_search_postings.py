"""PostgreSQL: the adapters' name and keyword words as postings in popularity order (``adapter_postings``),
kept by triggers, so that a keyword tier's most popular matches of a word are an index range.

A GIN index gives a word's matches in table order: to rank them by popularity, a search read every
matching row (the 1,174 adapters with "anime" in their name, 1.7-9 ms at 100k adapters, against 0.07 ms
for the first 100 entries of a B-tree range; 2026-12-06). SQLite's full-text index keys its rows by
popularity already (0001). One row per adapter and distinct word of its name/title (tier 3) or, not
there, of its trigger words and tags (tier 2), and per filter token of ``search_facets`` (tier 0: base
family, format, tags, author, licence...), so that a word's range with filter tokens is a merge of
ranges, still no row of ``adapters`` read; the description's words are not posted (the GIN index answers
those). ``key`` orders a word's postings as the search does (downloads, most first, then id, newest first): ``((2^30 - 1 - min(downloads, 2^30 - 1)) << 32) | (2^32 - 1 - id)``, so the adapter id and
its (capped) downloads are read back from the key alone. ``private_owner``: NULL for a public adapter,
else its owner (-1 for none), so a tier's range is filtered by visibility without reading ``adapters``.
About 20 rows and 2 KB per adapter (about 200 MB for 100k adapters, a quarter of the database; the
backfill takes 10-15 s there).

Triggers keep the table exact whatever writes ``adapters`` (lorahub or SQL): after an insert and after a
delete (statement-level, over the transition tables) and after an update that changes a vector, the
downloads, the filter tokens or the visibility (row-level, ``WHEN``). SQLite: nothing. The table and its
functions exist only here (``lorahub.registry.migrations.MIGRATION_ONLY_TABLES``).

Revision ID: 0114_search_postings
Revises: 0113_embedding_removal_trigger
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0114_search_postings"
down_revision = "0113_embedding_removal_trigger"
branch_labels = None
depends_on = None

#: A row's postings: its words and their tier (3: in the name or title, 2: else in trigger words or tags) and
#: its filter tokens (tier 0), with the key and visibility (see the docstring). ``r`` is a row of ``adapters``.
_KEY = "(CAST(1073741823 - least(greatest(r.downloads, 0), 1073741823) AS bigint) << 32) | (4294967295 - r.id)"
_OWNER = "CASE WHEN r.private THEN coalesce(r.owner_id, -1) END"
_POSTINGS_OF = f"""
SELECT w.word, CAST(max(w.tier) AS smallint), {_KEY}, {_OWNER}
FROM {{rows}} r
CROSS JOIN LATERAL (SELECT unnest(tsvector_to_array(r.name_vector)) AS word, 3 AS tier
                    UNION ALL SELECT unnest(tsvector_to_array(r.keywords_vector)), 2) w
GROUP BY w.word, r.id, r.downloads, r.private, r.owner_id
UNION ALL
SELECT DISTINCT f.token, CAST(0 AS smallint), {_KEY}, {_OWNER}
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


def _function(name: str, *statements: str) -> str:
    """A trigger function running ``statements`` (in the schema it is created in, as 0113's)."""
    body = "".join(f"    {sql.strip()};\n" for sql in statements)
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$\nBEGIN\n{body}    RETURN NULL;\nEND\n"
            "$$ LANGUAGE plpgsql SET search_path FROM CURRENT")


_INSERT = "INSERT INTO adapter_postings (word, tier, key, private_owner) "
_FUNCTIONS = [
    _function("lorahub_postings_inserted", _INSERT + _POSTINGS_OF.format(rows="new_rows")),
    _function("lorahub_postings_deleted", _DELETE_OF.format(rows="old_rows")),
    _function("lorahub_postings_updated", _DELETE_OF.format(rows="(SELECT OLD.*)"),
              _INSERT + _POSTINGS_OF.format(rows="(SELECT NEW.*)")),
]

_TRIGGERS = [
    "CREATE TRIGGER tr_adapters_postings_insert AFTER INSERT ON adapters REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION lorahub_postings_inserted()",
    "CREATE TRIGGER tr_adapters_postings_delete AFTER DELETE ON adapters REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION lorahub_postings_deleted()",
    "CREATE TRIGGER tr_adapters_postings_update AFTER UPDATE ON adapters FOR EACH ROW WHEN ("
    "OLD.name_vector IS DISTINCT FROM NEW.name_vector OR OLD.keywords_vector IS DISTINCT FROM NEW.keywords_vector "
    "OR OLD.downloads IS DISTINCT FROM NEW.downloads OR OLD.private IS DISTINCT FROM NEW.private "
    "OR OLD.search_facets IS DISTINCT FROM NEW.search_facets "
    "OR OLD.owner_id IS DISTINCT FROM NEW.owner_id OR OLD.id IS DISTINCT FROM NEW.id) "
    "EXECUTE FUNCTION lorahub_postings_updated()",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute('CREATE TABLE adapter_postings (word text COLLATE "C" NOT NULL, tier smallint NOT NULL, '
               "key bigint NOT NULL, private_owner integer, "
               "CONSTRAINT pk_adapter_postings PRIMARY KEY (word, tier, key) INCLUDE (private_owner))")
    for sql in _FUNCTIONS + _TRIGGERS:
        op.execute(sql)
    op.execute(_INSERT + _POSTINGS_OF.format(rows="adapters"))
    op.execute("ANALYZE adapter_postings")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS tr_adapters_postings_{trigger} ON adapters")
    for fn in ("inserted", "deleted", "updated"):
        op.execute(f"DROP FUNCTION IF EXISTS lorahub_postings_{fn}()")
    op.execute("DROP TABLE IF EXISTS adapter_postings")
