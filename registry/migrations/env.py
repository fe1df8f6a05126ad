"""Alembic environment of the registry (loaded by Alembic, not imported)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from lorahub.registry import tables  # noqa: F401 - registers the tables
from lorahub.registry.database import make_engine
from lorahub.registry.migrations import MIGRATION_LOCK_KEY, include_object

config = context.config
target_metadata = tables.metadata


def run_migrations(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=include_object,
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two processes migrating at once: the second waits, then finds nothing to do (upgrade()
            # takes the lock already; again here for `alembic` run by hand).
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            run_migrations(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():  # pragma: no cover
    raise SystemExit("the registry migrations run online only (lorahub registry migrate)")
run_online()
