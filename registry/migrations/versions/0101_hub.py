"""The Hub server's tables (``lorahub serve``): repos, refs, commits, file lists, blobs,
LFS objects per repo, repo tags and server secrets. See ``lorahub.registry.hub.tables``.

Revision ID: 0101_hub
Revises: 0001_initial
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0101_hub"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def _hex(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "hub_repos",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("repo_type", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(96), nullable=False),
        sa.Column("name", sa.String(96), nullable=False),
        sa.Column("namespace_lower", sa.String(96), nullable=False),
        sa.Column("key", sa.String(220), nullable=False, unique=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("private", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("downloads", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("likes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sha", _hex(40), nullable=True),
        sa.Column("card_data", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
        sa.Column("pipeline_tag", sa.String(64), nullable=True),
        sa.Column("library_name", sa.String(64), nullable=True),
        sa.Column("next_pr", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_index("ix_hub_repos_owner_id", "hub_repos", ["owner_id"])
    op.create_index("ix_hub_repos_downloads", "hub_repos", ["downloads", "id"])
    op.create_index("ix_hub_repos_updated", "hub_repos", ["updated_at", "id"])
    op.create_index("ix_hub_repos_namespace", "hub_repos", ["namespace_lower"])

    op.create_table(
        "hub_refs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("repo_id", sa.Integer, sa.ForeignKey("hub_repos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("commit_oid", _hex(40), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("repo_id", "name", name="uq_hub_refs_repo_name"),
    )

    op.create_table(
        "hub_commits",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("repo_id", sa.Integer, sa.ForeignKey("hub_repos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("oid", _hex(40), nullable=False),
        sa.Column("parent_oid", _hex(40), nullable=True),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("author_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("author_name", sa.String(96), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("card_data", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
        sa.Column("pipeline_tag", sa.String(64), nullable=True),
        sa.Column("library_name", sa.String(64), nullable=True),
        sa.UniqueConstraint("repo_id", "oid", name="uq_hub_commits_repo_oid"),
    )
    op.create_index("ix_hub_commits_oid", "hub_commits", ["oid"])

    op.create_table(
        "hub_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("commit_id", sa.Integer, sa.ForeignKey("hub_commits.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", _hex(64), nullable=False),
        sa.Column("git_oid", _hex(40), nullable=False),
        sa.Column("lfs", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("commit_id", "path", name="uq_hub_files_commit_path"),
    )
    op.create_index("ix_hub_files_sha256", "hub_files", ["sha256"])

    op.create_table(
        "hub_blobs",
        sa.Column("sha256", _hex(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("git_sha1", _hex(40), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )

    op.create_table(
        "hub_repo_objects",
        sa.Column("repo_id", sa.Integer, sa.ForeignKey("hub_repos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sha256", _hex(64), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )

    op.create_table(
        "hub_repo_tags",
        sa.Column("repo_id", sa.Integer, sa.ForeignKey("hub_repos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(200), primary_key=True),
    )
    op.create_index("ix_hub_repo_tags_tag", "hub_repo_tags", ["tag", "repo_id"])

    op.create_table(
        "hub_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("hub_secrets", "hub_repo_tags", "hub_repo_objects", "hub_blobs", "hub_files", "hub_commits", "hub_refs", "hub_repos"):
        op.drop_table(table)
