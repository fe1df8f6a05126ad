"""An index of every adapter's id with its visibility columns (``ix_adapters_visible``: id, private,
owner_id): a hybrid search checks that its vector candidates exist and that the viewer may see them
(``lorahub.registry.search``, ``_Backend.visible``) with one probe of this index per candidate, which is
small enough to stay cached, instead of reading each candidate's row of ``adapters`` (on SQLite one page of
the table per candidate: about 0.24 ms against 0.08 ms for 116 candidates at 100k records). An index only.

Revision ID: 0111_adapters_visible
Revises: 0110_embedding_removals
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0111_adapters_visible"
down_revision = "0110_embedding_removals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_adapters_visible", "adapters", ["id", "private", "owner_id"])


def downgrade() -> None:
    op.drop_index("ix_adapters_visible", table_name="adapters")
