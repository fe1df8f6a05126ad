"""The Xet CAS of the Hub server: xorbs, who uploaded them, files registered by shards, and the
global dedupe index (see ``lorahub.registry.hub.cas``). New tables only.

Revision ID: 0105_hub_xet
Revises: 0104_hub_repo_ids
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0105_hub_xet"
down_revision = "0104_hub_repo_ids"
branch_labels = None
depends_on = None


def _hex(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "hub_xet_xorbs",
        sa.Column("hash", _hex(64), primary_key=True),
        sa.Column("num_chunks", sa.Integer, nullable=False),
        sa.Column("unpacked_bytes", sa.BigInteger, nullable=False),
        sa.Column("stored_bytes", sa.BigInteger, nullable=False),
        sa.Column("received_bytes", sa.BigInteger, nullable=False),
        sa.Column("chunks", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "hub_xet_xorb_owners",
        sa.Column("xorb", _hex(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_table(
        "hub_xet_files",
        sa.Column("file_hash", _hex(64), primary_key=True),
        sa.Column("sha256", _hex(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("terms", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_hub_xet_files_sha256", "hub_xet_files", ["sha256"])
    op.create_table(
        "hub_xet_dedupe",
        sa.Column("chunk", _hex(64), primary_key=True),
        sa.Column("xorb", _hex(64), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("hub_xet_dedupe")
    op.drop_index("ix_hub_xet_files_sha256", table_name="hub_xet_files")
    op.drop_table("hub_xet_files")
    op.drop_table("hub_xet_xorb_owners")
    op.drop_table("hub_xet_xorbs")
