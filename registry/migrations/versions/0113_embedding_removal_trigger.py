"""The database notes every deleted sentence embedding itself: a trigger after each delete of an
``adapter_embeddings`` row adds its ``adapter_embedding_removals`` row, on the same counter
(``lorahub.registry.semantic``, ``_next_seq``: the largest ``seq`` of either table plus one, at least the
time in microseconds; on PostgreSQL under the same advisory lock, so ``seq`` grows in commit order). Before,
lorahub noted the removals it made, and an adapter deleted behind its back (SQL, the foreign key's cascade
taking its vector) stayed in every search process's index: a search had to check each vector candidate in
SQL. A trigger only; a later revision that rebuilds ``adapter_embeddings`` (SQLite's batch mode copies a
table into a new one) must create it again (tests/registry/test_coretables.py deletes an adapter in SQL and
expects the note).

Revision ID: 0113_embedding_removal_trigger
Revises: 0112_adapters_private
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0113_embedding_removal_trigger"
down_revision = "0112_adapters_private"
branch_labels = None
depends_on = None

#: lorahub.registry.semantic.SEQ_LOCK_KEY ("lhemb"), restated: a migration does not import the code it migrates for.
_SEQ_LOCK_KEY = 0x6C68656D62

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION lorahub_note_embedding_removal() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({_SEQ_LOCK_KEY});
    INSERT INTO adapter_embedding_removals (adapter_id, seq)
    SELECT OLD.adapter_id, greatest(
        coalesce((SELECT max(seq) FROM adapter_embeddings), 0) + 1,
        coalesce((SELECT max(seq) FROM adapter_embedding_removals), 0) + 1,
        CAST(floor(extract(epoch FROM clock_timestamp()) * 1000000) AS bigint));
    RETURN OLD;
END
$$ LANGUAGE plpgsql SET search_path FROM CURRENT
"""

_SQLITE_TRIGGER = """
CREATE TRIGGER tr_adapter_embeddings_removed AFTER DELETE ON adapter_embeddings
BEGIN
    INSERT INTO adapter_embedding_removals (adapter_id, seq)
    SELECT OLD.adapter_id, max(
        coalesce((SELECT max(seq) FROM adapter_embeddings), 0) + 1,
        coalesce((SELECT max(seq) FROM adapter_embedding_removals), 0) + 1,
        CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute("CREATE TRIGGER tr_adapter_embeddings_removed AFTER DELETE ON adapter_embeddings "
                   "FOR EACH ROW EXECUTE FUNCTION lorahub_note_embedding_removal()")
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tr_adapter_embeddings_removed ON adapter_embeddings")
        op.execute("DROP FUNCTION IF EXISTS lorahub_note_embedding_removal()")
    else:
        op.execute("DROP TRIGGER IF EXISTS tr_adapter_embeddings_removed")
