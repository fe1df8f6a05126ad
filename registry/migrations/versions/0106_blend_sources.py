"""Blends and their sources: one row per source of an adapter that is a lorahub blend (the recipe in
its metadata, ``lorahub.recipe``), so that ``lorahub search --uses NAME|HASH`` finds the blends made
from an adapter. A new table only.

Revision ID: 0106_blend_sources
Revises: 0105_hub_xet
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0106_blend_sources"
down_revision = "0105_hub_xet"
branch_labels = None
depends_on = None


def _hex(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "blend_sources",
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("sha256", _hex(64), nullable=True),
        sa.Column("autov3", _hex(12), nullable=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("reference", sa.Text, nullable=True),
    )
    op.create_index("ix_blend_sources_sha256", "blend_sources", ["sha256"])
    op.create_index("ix_blend_sources_autov3", "blend_sources", ["autov3"])


def downgrade() -> None:
    op.drop_index("ix_blend_sources_autov3", table_name="blend_sources")
    op.drop_index("ix_blend_sources_sha256", table_name="blend_sources")
    op.drop_table("blend_sources")
