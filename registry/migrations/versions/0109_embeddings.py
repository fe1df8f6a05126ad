"""Sentence embeddings of adapter records for semantic search (``lorahub.registry.semantic``): one vector per
adapter, with the model (name and version) that made it, and a change counter ``seq`` that lets a search
process reload only what changed. A new table only.

Revision ID: 0109_embeddings
Revises: 0108_adapter_sketch
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0109_embeddings"
down_revision = "0108_adapter_sketch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_embeddings",
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(96), nullable=False),
        sa.Column("model_version", sa.String(48), nullable=False),
        sa.Column("dim", sa.SmallInteger, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_adapter_embeddings_seq", "adapter_embeddings", ["seq"])


def downgrade() -> None:
    op.drop_index("ix_adapter_embeddings_seq", table_name="adapter_embeddings")
    op.drop_table("adapter_embeddings")
