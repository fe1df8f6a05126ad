"""AutoV1 of files of at most 1 MiB: E3B0C442, as AUTOMATIC1111 and kohya compute it (was stored as null).

Their ``model_hash`` hashes what ``seek(0x100000); read(0x10000)`` returns, which is nothing for a small
file: the SHA-256 of zero bytes. lorahub now fingerprints the same way (``docs/hashes.md``); this fills
in the value for files indexed before, whose bytes lorahub read (a local path or a Hub file, with a known
size), so that ``lorahub search --hash e3b0c442`` finds them without a re-index. Catalogue records
(Civitai) keep what the catalogue says.

Revision ID: 0103_small_file_autov1
Revises: 0102_search_statistics
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0103_small_file_autov1"
down_revision = "0102_search_statistics"
branch_labels = None
depends_on = None

EMPTY_SHA256_8 = "e3b0c442"


def upgrade() -> None:
    op.get_bind().exec_driver_sql(
        f"UPDATE adapter_files SET autov1 = '{EMPTY_SHA256_8}' WHERE autov1 IS NULL AND size IS NOT NULL "
        "AND size <= 1048576 AND sha256 IS NOT NULL AND (path IS NOT NULL OR repo_path IS NOT NULL)"
    )


def downgrade() -> None:
    op.get_bind().exec_driver_sql(
        f"UPDATE adapter_files SET autov1 = NULL WHERE autov1 = '{EMPTY_SHA256_8}' AND size IS NOT NULL "
        "AND size <= 1048576"
    )
