"""SQLite: keyword search's visibility tokens follow the ``private`` and ``owner_id`` columns, whoever writes
them. SQLite's keyword search reads visibility from the full-text index's filter tokens (``zprv``: private,
``zo<id>``: its owner; ``lorahub.registry.text``), which its triggers copied from ``adapters.search_facets``
(0001); lorahub writes the tokens with the columns, but an adapter made private by an SQL update of the column
alone kept showing to everyone there. Now the full-text triggers write the visibility tokens the columns call
for (and an update of either column rewrites the row's entry), and a trigger after an update of either column
(or of the tokens) puts ``search_facets`` back in step when it disagrees (the visibility tokens are the last
ones, in lorahub's order); rows already out of step are mended here. SQLite runs the newest trigger first, so
the entry must not depend on which of the two runs last: each full-text write computes the tokens from its own
row's columns. PostgreSQL reads visibility from the columns everywhere (the GIN path and the postings' own
trigger, 0114): nothing there.

Revision ID: 0115_sqlite_visibility_tokens
Revises: 0114_search_postings
Create Date: 2026-12-06
"""

from __future__ import annotations

import re

from alembic import op

revision = "0115_sqlite_visibility_tokens"
down_revision = "0114_search_postings"
branch_labels = None
depends_on = None

#: lorahub.registry.text.F_PRIVATE and F_OWNER, restated: a migration does not import the code it migrates for.
_PRIVATE, _OWNER = "zprv", "zo"


def _has(row: str, token_sql: str) -> str:
    return f"(instr(' ' || {row}.search_facets || ' ', ' ' || {token_sql} || ' ') > 0)"


#: The row's tokens disagree with its columns: the private token without the column or the column without
#: the token, the owner's token missing, or the previous owner's still there.
_DISAGREE = (
    f"{_has('new', repr(_PRIVATE))} <> (new.private = 1) "
    f"OR (new.owner_id IS NOT NULL AND NOT {_has('new', repr(_OWNER) + ' || new.owner_id')}) "
    f"OR (old.owner_id IS NOT NULL AND old.owner_id IS NOT new.owner_id AND {_has('new', repr(_OWNER) + ' || old.owner_id')})"
)


def _mended(previous_owner: str) -> str:
    """The tokens less any private token and the previous (``previous_owner``, SQL) and new owners' tokens,
    then those the columns call for."""
    return ("trim(trim(replace(replace(replace(' ' || new.search_facets || ' ', ' zprv ', ' '), "
            f"' zo' || coalesce({previous_owner}, '') || ' ', ' '), ' zo' || coalesce(new.owner_id, '') || ' ', ' ')) "
            "|| CASE WHEN new.private = 1 THEN ' zprv' ELSE '' END "
            "|| CASE WHEN new.owner_id IS NOT NULL THEN ' zo' || new.owner_id ELSE '' END)")


_MENDED = _mended("old.owner_id")

_TRIGGER = (
    "CREATE TRIGGER adapters_visibility_tokens AFTER UPDATE OF private, owner_id, search_facets ON adapters "
    f"WHEN {_DISAGREE} BEGIN UPDATE adapters SET search_facets = {_MENDED} WHERE id = new.id; END"
)

#: 0001's full-text triggers (restated), and the same with the visibility tokens from the columns.
_KEY = "(((1073741823 - min(max({r}.downloads, 0), 1073741823)) << 32) | (4294967295 - {r}.id))"
_TEXT = ("{key}, new.name || ' ' || coalesce(new.title, ''), new.trigger_words_text || ' ' || new.tags_text, "
         "coalesce(new.description, ''), {facets}")
_INSERT = "INSERT INTO adapter_fts (rowid, name, keywords, description, facets) VALUES ({values})"
_COLUMNS = "name, title, description, tags_text, trigger_words_text, search_facets, downloads"


def _fts_triggers(facets_insert: str, facets_update: str, columns: str) -> list[str]:
    values = _TEXT.format(key=_KEY.format(r="new"), facets="{facets}")
    return [
        f"CREATE TRIGGER adapters_fts_insert AFTER INSERT ON adapters BEGIN "
        f"{_INSERT.format(values=values.format(facets=facets_insert))}; END",
        f"CREATE TRIGGER adapters_fts_update AFTER UPDATE OF {columns} ON adapters BEGIN "
        f"DELETE FROM adapter_fts WHERE rowid = {_KEY.format(r='old')}; "
        f"{_INSERT.format(values=values.format(facets=facets_update))}; END",
    ]


_FTS_0001 = _fts_triggers("new.search_facets", "new.search_facets", _COLUMNS)
_FTS_NOW = _fts_triggers(_mended("NULL"), _MENDED, _COLUMNS + ", private, owner_id")


def mended(facets: str, private: bool, owner_id: int | None) -> str:
    """``facets`` with the visibility tokens the columns call for (the last ones, private first)."""
    tokens = [t for t in facets.split() if t != _PRIVATE and not re.fullmatch(_OWNER + r"\d+", t)]
    if private:
        tokens.append(_PRIVATE)
    if owner_id is not None:
        tokens.append(f"{_OWNER}{int(owner_id)}")
    return " ".join(tokens)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER IF EXISTS adapters_fts_insert")
    op.execute("DROP TRIGGER IF EXISTS adapters_fts_update")
    for sql in _FTS_NOW:
        op.execute(sql)
    rows = bind.exec_driver_sql("SELECT id, search_facets, private, owner_id FROM adapters").fetchall()
    for aid, facets, private, owner_id in rows:
        want = mended(facets or "", bool(private), owner_id)
        if want != (facets or ""):  # the update rewrites the row's full-text entry too
            bind.exec_driver_sql("UPDATE adapters SET search_facets = ? WHERE id = ?", (want, aid))
    op.execute(_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS adapters_visibility_tokens")
        op.execute("DROP TRIGGER IF EXISTS adapters_fts_insert")
        op.execute("DROP TRIGGER IF EXISTS adapters_fts_update")
        for sql in _FTS_0001:
            op.execute(sql)
