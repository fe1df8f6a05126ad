"""Repo ids that are never reused, and opaque public ids.

* ``hub_sequences``: the last repo primary key handed out (row ``hub_repos``). SQLite gives a new
  row the largest rowid + 1, so deleting the newest repo made the next one reuse its id, and
  anything still naming the old id (an upload URL, a download being counted) reached the new repo.
  ``HubService.create_repo`` takes the next value from this row in the creating transaction.
  Starts at the largest id in use (ids of repos deleted before this revision cannot be known).
* ``hub_repos.public_id``: 24 random hex digits (the shape of the Hub's ObjectIds), the ``_id`` of
  API answers and the repo part of upload URLs, so that neither tells how many repos (private
  ones included) were created. Existing repos get one here.

A new table and a new column only (no table rebuild on SQLite: hub_repos is referenced with
ON DELETE CASCADE, and a rebuild would run inside the migration transaction, where SQLite cannot
switch foreign keys off).

Revision ID: 0104_hub_repo_ids
Revises: 0103_small_file_autov1
Create Date: 2026-12-03
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0104_hub_repo_ids"
down_revision = "0103_small_file_autov1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_sequences",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    bind = op.get_bind()
    top = bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM hub_repos")).scalar_one()
    bind.execute(sa.text("INSERT INTO hub_sequences (name, value) VALUES ('hub_repos', :v)"), {"v": int(top)})
    op.add_column("hub_repos", sa.Column("public_id", sa.String(24), nullable=True))
    ids = [row[0] for row in bind.execute(sa.text("SELECT id FROM hub_repos"))]
    for pk in ids:
        bind.execute(sa.text("UPDATE hub_repos SET public_id = :p WHERE id = :i"), {"p": secrets.token_hex(12), "i": pk})
    op.create_index("ux_hub_repos_public_id", "hub_repos", ["public_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_hub_repos_public_id", table_name="hub_repos")
    op.drop_column("hub_repos", "public_id")
    op.drop_table("hub_sequences")
