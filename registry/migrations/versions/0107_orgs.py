"""Organisations and roles, fine-grained tokens (see ``lorahub.registry.hub.access``).

* ``orgs``: marks a ``users`` row as an organisation (a namespace no token is issued to);
* ``org_members``: a user's role in an organisation (read, contributor, write, admin);
* ``token_scopes``: the repos and namespaces a fine-grained token is limited to;
* ``hub_repos.created_by``: who created the repo (a ``contributor`` writes to the repos they
  created). Existing repos were created by their owner (every namespace was a user's).

New tables and a new column without a foreign key only (no table rebuild on SQLite, see
``0104_hub_repo_ids``; SQLite drops such a column in place).

Revision ID: 0107_orgs
Revises: 0106_blend_sources
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0107_orgs"
down_revision = "0106_blend_sources"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "org_members",
        sa.Column("org_id", sa.Integer, sa.ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_org_members_user_id", "org_members", ["user_id"])
    op.create_table(
        "token_scopes",
        sa.Column("token_id", sa.Integer, sa.ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
    )
    op.add_column("hub_repos", sa.Column("created_by", sa.Integer, nullable=True))
    op.execute("UPDATE hub_repos SET created_by = owner_id")


def downgrade() -> None:
    op.drop_column("hub_repos", "created_by")
    op.drop_table("token_scopes")
    op.drop_index("ix_org_members_user_id", table_name="org_members")
    op.drop_table("org_members")
    op.drop_table("orgs")
