"""Alembic migrations of the registry, usable from an installed wheel.

The Alembic configuration is built in code (:func:`alembic_config`) with
``script_location`` pointing at this folder, so no ``alembic.ini`` is needed.
:func:`upgrade` brings a database to the newest revision (``lorahub registry
migrate``); SQLite runs in batch mode (``render_as_batch``).

Developers: a new revision goes in ``versions/`` (``alembic revision`` with
``-c`` pointing at a config whose ``script_location`` is this folder, or by
hand); ``tests/registry/test_migrations.py`` checks that the migrated schema
equals the models.

Checking that a database is current costs no Alembic (a command's start): :func:`stored_revision`
reads ``alembic_version`` with one query, :func:`head_revision` reads the revision ids from the
files in ``versions/``; Alembic is imported only to migrate.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection, Engine

    from lorahub.registry.database import Raw

HERE = Path(__file__).resolve().parent

#: Objects that exist only in migrations (the text-search machinery: SQLite's full-text tables, PostgreSQL's
#: word postings and the version of what results show; the adapters' visibility index), ignored when Alembic
#: compares the database with the models.
MIGRATION_ONLY_TABLES = ("adapter_fts", "adapter_postings", "registry_data_version")
MIGRATION_ONLY_COLUMNS = {("adapters", "search_vector"), ("adapters", "name_vector"), ("adapters", "keywords_vector")}
MIGRATION_ONLY_INDEXES = {
    "ix_adapters_search_vector",
    "ix_adapters_name_vector",
    "ix_adapters_keywords_vector",
    "ix_adapters_facets",
    "ix_adapters_visible",
    "ix_adapters_private",
}


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic ``include_object`` hook: skip the migration-only objects above."""
    if type_ == "table" and name and name.startswith(MIGRATION_ONLY_TABLES):
        return False
    if type_ == "column" and (obj.table.name, name) in MIGRATION_ONLY_COLUMNS:
        return False
    if type_ == "index" and name in MIGRATION_ONLY_INDEXES:
        return False
    return True


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Any:
    """A programmatic Alembic ``Config`` for this folder (and a URL or an open connection)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_REVISION_RE = re.compile(r"^revision\s*(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN_RE = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.*)$", re.M)
_QUOTED_RE = re.compile(r"[\"']([^\"']+)[\"']")


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision, read from the files in ``versions/`` (``revision = "..."`` and
    ``down_revision = ...`` lines; Alembic's own answer when they do not name exactly one head)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in (HERE / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        rev, down = _REVISION_RE.search(text), _DOWN_RE.search(text)
        if rev is None or down is None:
            return _alembic_head()
        revisions.add(rev.group(1))
        downs.update(_QUOTED_RE.findall(down.group(1)))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else _alembic_head()


def _alembic_head() -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:  # pragma: no cover - a broken revision graph
        raise RuntimeError(f"the registry migrations have {len(heads)} heads: {heads}")
    return heads[0]


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def stored_revision(raw: Raw) -> str | None:
    """The revision recorded in ``alembic_version`` (one query); None when there is none (an empty
    database), and ``"?"`` when there are several (Alembic sorts that out when it migrates)."""
    try:
        rows = raw.all("SELECT version_num FROM alembic_version")
    except Exception as exc:  # no such table: an empty database
        from lorahub.registry.database import db_errors

        if not isinstance(exc, db_errors()):
            raise
        return None
    if len(rows) > 1:
        return "?"
    return rows[0][0] if rows else None


#: PostgreSQL advisory lock key of the migrations (also taken in env.py).
MIGRATION_LOCK_KEY = 7412390
#: How long a process waits for another one's migrations (SQLite's busy timeout is shorter).
MIGRATION_WAIT_S = 600.0


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the database of ``engine``; returns ``(revision before, revision after)``.

    Safe when several processes start on one empty database at once (``lorahub serve`` workers,
    two servers): the whole upgrade runs in *one* transaction that holds the migration lock from
    its first statement on (SQLite: the write lock, ``BEGIN IMMEDIATE``; PostgreSQL: an advisory
    transaction lock), and Alembic reads the current revision inside it. The first process
    migrates; the others wait for the lock, then find the database at head and do nothing.

    Alembic alone commits after every revision on SQLite (no transactional DDL): between two
    revisions another process could take the lock, see the half-migrated database and run the
    same revision again ("table hub_repos already exists", "expected to match one row when
    updating '0101_hub'"). Run inside a transaction it already holds, Alembic commits nothing.
    """
    import time

    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    with engine.connect() as conn:
        before = current_revision(conn)
        conn.commit()
    deadline = time.monotonic() + MIGRATION_WAIT_S
    while True:
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(lorahub_write=True)
                with conn.begin():  # SQLite: BEGIN IMMEDIATE, the write lock up front
                    if conn.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
                    command.upgrade(alembic_config(connection=conn), revision)
            break
        except OperationalError as exc:
            # SQLite: another process held the write lock (migrating) longer than the busy timeout.
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with engine.connect() as conn:
        after = current_revision(conn)
    return before, after or ""


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with engine.connect() as conn:
        command.downgrade(alembic_config(connection=conn), revision)
        conn.commit()


__all__ = ["MIGRATION_LOCK_KEY", "include_object", "alembic_config", "current_revision", "downgrade", "head_revision", "stored_revision",
           "upgrade"]
