"""A partial index of the private adapters (``ix_adapters_private``: id, where private): a search reads
whether any adapter is private with the vectors' counter, in the same statement (``lorahub.registry.
semantic``, ``current``), and where none is, its vector candidates need no check of their visibility in SQL
(a round trip and about 0.7 ms of a PostgreSQL server's time per hybrid search). Empty in a public
registry, so free to keep. An index only.

Revision ID: 0112_adapters_private
Revises: 0111_adapters_visible
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0112_adapters_private"
down_revision = "0111_adapters_visible"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_adapters_private", "adapters", ["id"], postgresql_where=sa.text("private"),
                    sqlite_where=sa.text("private"))


def downgrade() -> None:
    op.drop_index("ix_adapters_private", table_name="adapters")
