"""PostgreSQL: smaller statistics targets for the text-search columns (2000 -> 200).

The planner detoasts a column's most-common-elements list for every condition it estimates:
with 2000 as the target those lists held 9,000-17,000 lexemes and planning a search query cost
more than running it (1.3 ms against 0.1 ms for a query that matched nothing). Search no longer
relies on the planner to tell rare words from common ones (``lorahub.registry.search`` chooses
between walking the popularity index and reading the GIN indexes itself, from the same
statistics, and bounds the walk), so the default-sized lists are enough. SQLite: nothing to do.

Revision ID: 0102_search_statistics
Revises: 0101_hub
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0102_search_statistics"
down_revision = "0101_hub"
branch_labels = None
depends_on = None

_COLUMNS = ("name_vector", "keywords_vector", "search_vector")


def _set(target: int) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for column in _COLUMNS:
        bind.exec_driver_sql(f"ALTER TABLE adapters ALTER COLUMN {column} SET STATISTICS {target}")
    bind.exec_driver_sql(f"ALTER INDEX ix_adapters_facets ALTER COLUMN 1 SET STATISTICS {target}")
    bind.exec_driver_sql("ANALYZE adapters")


def upgrade() -> None:
    _set(200)


def downgrade() -> None:
    _set(2000)
