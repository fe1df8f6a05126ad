"""A version of what search results show (``registry_data_version``), raised by every transaction that writes
``adapters``, ``adapter_files`` or ``adapter_versions``, whoever writes them, so that a process may keep the
result rows it read (:func:`lorahub.registry.lookups.results_for`) for as long as the version a search read
before them is the same.

PostgreSQL: the version is transactional: a transaction raises it once, at its commit (deferred constraint
triggers, row level, the first of a transaction doing the update; the row's lock is held from there to the
commit only, so writers do not queue behind each other's whole transactions, nor hold it while they wait for
another lock), and its rows and the new version become visible together. ``TRUNCATE`` raises it too (a
statement trigger). SQLite (one writer at a time, no deferred or statement triggers): every row written raises
it, in the writing transaction (a ``DELETE`` of every row is not truncated where a table has triggers).
It starts from the clock on both (see :func:`upgrade`).

Revision ID: 0116_result_rows_version
Revises: 0115_sqlite_visibility_tokens
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0116_result_rows_version"
down_revision = "0115_sqlite_visibility_tokens"
branch_labels = None
depends_on = None

#: The tables whose columns a search result shows (lorahub.registry.lookups._RESULT_COLUMNS).
TABLES = ("adapters", "adapter_files", "adapter_versions")

_FUNCTION = """
CREATE OR REPLACE FUNCTION lorahub_data_changed() RETURNS trigger AS $$
BEGIN
    IF current_setting('lorahub.data_changed', true) IS DISTINCT FROM 'y' THEN
        UPDATE registry_data_version SET version = version + 1 WHERE id = 1;
        PERFORM set_config('lorahub.data_changed', 'y', true);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql SET search_path FROM CURRENT
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE TABLE registry_data_version (id smallint PRIMARY KEY CHECK (id = 1), version bigint NOT NULL)")
        now_us = "CAST(extract(epoch FROM clock_timestamp()) * 1000000 AS bigint)"
    else:
        op.execute("CREATE TABLE registry_data_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
        now_us = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"
    # From the clock (microseconds): a database made again under the same URL starts past where the one before
    # it could have reached, so that a process's rows kept of that one are never taken for this one's.
    op.execute(f"INSERT INTO registry_data_version (id, version) VALUES (1, {now_us})")
    if postgres:
        op.execute(_FUNCTION)
    for table in TABLES:
        if postgres:
            op.execute(f"CREATE CONSTRAINT TRIGGER tr_{table}_data_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
                       "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION lorahub_data_changed()")
            op.execute(f"CREATE TRIGGER tr_{table}_data_truncated AFTER TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION lorahub_data_changed()")
            continue
        for event in ("INSERT", "UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER tr_{table}_data_{event.lower()} AFTER {event} ON {table} BEGIN "
                       "UPDATE registry_data_version SET version = version + 1 WHERE id = 1; END")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS tr_{table}_data_changed ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS tr_{table}_data_truncated ON {table}")
        else:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS tr_{table}_data_{event}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS lorahub_data_changed()")
    op.execute("DROP TABLE IF EXISTS registry_data_version")
