"""A partial index of the private adapters (``ix_adapters_private``): a hybrid search asks "is any adapter
private?" once per search (``lorahub.registry.search``: without private adapters, and without rank bounds,
the vector list's candidates need no check in SQL); with the index that is one probe of an index that holds
only the private adapters, without it a scan of the table. An index only.

Revision ID: 0111_private_adapters
Revises: 0110_embedding_removals
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0111_private_adapters"
down_revision = "0110_embedding_removals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_adapters_private", "adapters", ["id"], sqlite_where=sa.text("private"),
                    postgresql_where=sa.text("private"))


def downgrade() -> None:
    op.drop_index("ix_adapters_private", table_name="adapters")
