"""Removed sentence embeddings (``lorahub.registry.semantic``): the adapter whose vector was deleted and the
``seq`` of that deletion, on the same counter as ``adapter_embeddings.seq``. A search process (and the vector
cache file beside a database) catches up on deletions as it does on new vectors: rows above the largest
``seq`` it has seen. Rows older than a week are pruned (a reader that old reloads everything). A new table only.

Revision ID: 0110_embedding_removals
Revises: 0109_embeddings
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0110_embedding_removals"
down_revision = "0109_embeddings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_embedding_removals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_adapter_embedding_removals_seq", "adapter_embedding_removals", ["seq"])


def downgrade() -> None:
    op.drop_index("ix_adapter_embedding_removals_seq", table_name="adapter_embedding_removals")
    op.drop_table("adapter_embedding_removals")
