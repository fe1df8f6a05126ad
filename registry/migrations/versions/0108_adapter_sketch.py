"""The ΔW sketches of adapter files (``lorahub.adapters.sketch``), by file SHA-256, for
``lorahub dupes --near`` and ``lorahub search --like``. A new table only.

Revision ID: 0108_adapter_sketch
Revises: 0107_orgs
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0108_adapter_sketch"
down_revision = "0107_orgs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_sketches",
        sa.Column("sha256", sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql"), primary_key=True),
        sa.Column("version", sa.SmallInteger, nullable=False),
        sa.Column("modules", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("adapter_sketches")
