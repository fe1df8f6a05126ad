"""The registry's first schema: users, tokens, adapters, versions, files, tags,
trigger words, and the text index (SQLite FTS5 / PostgreSQL tsvector).

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _hash(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


#: SQLite: the FTS5 rowid orders documents by popularity (downloads desc, then
#: newest id first), so "the first N matches in rowid order" are the N most
#: popular ones and a search stops early instead of ranking every match. The
#: adapter id is recovered as 4294967295 - (rowid & 4294967295); see
#: lorahub.registry.search.
def _fts_key(row: str) -> str:
    return f"(((1073741823 - min(max({row}.downloads, 0), 1073741823)) << 32) | (4294967295 - {row}.id))"


def _fts_values(row: str) -> str:
    return (
        f"{_fts_key(row)}, {row}.name || ' ' || coalesce({row}.title, ''), "
        f"{row}.trigger_words_text || ' ' || {row}.tags_text, coalesce({row}.description, ''), {row}.search_facets"
    )


SQLITE_TEXT_INDEX = [
    "CREATE VIRTUAL TABLE adapter_fts USING fts5("
    "name, keywords, description, facets, tokenize = 'unicode61 remove_diacritics 2', detail = column)",
    "CREATE TRIGGER adapters_fts_insert AFTER INSERT ON adapters BEGIN "
    f"INSERT INTO adapter_fts (rowid, name, keywords, description, facets) VALUES ({_fts_values('new')}); END",
    f"CREATE TRIGGER adapters_fts_delete AFTER DELETE ON adapters BEGIN "
    f"DELETE FROM adapter_fts WHERE rowid = {_fts_key('old')}; END",
    "CREATE TRIGGER adapters_fts_update AFTER UPDATE OF name, title, description, tags_text, trigger_words_text, "
    "search_facets, downloads ON adapters BEGIN "
    f"DELETE FROM adapter_fts WHERE rowid = {_fts_key('old')}; "
    f"INSERT INTO adapter_fts (rowid, name, keywords, description, facets) VALUES ({_fts_values('new')}); END",
]

_WORDS = "'[^[:alnum:]]+', ' ', 'g'"
_NAME = "name || ' ' || coalesce(title, '')"
_KEYWORDS = "trigger_words_text || ' ' || tags_text"
_NAME_KEYWORDS = _NAME + " || ' ' || " + _KEYWORDS
_DESCRIPTION = "coalesce(description, '')"


def _vector(text_sql: str, weight: str | None = None) -> str:
    vec = f"to_tsvector('simple'::regconfig, regexp_replace({text_sql}, {_WORDS}))"
    return f"setweight({vec}, '{weight}')" if weight else vec


POSTGRES_TEXT_INDEX = [
    # Words are split on anything not alphanumeric (as SQLite's unicode61 does) and
    # not stemmed ('simple'). One vector per relevance tier, so that the planner's
    # statistics see how common a word is in names, in names + trigger words/tags,
    # and anywhere (weights on the last one: A name, B trigger words/tags, C description).
    f"ALTER TABLE adapters ADD COLUMN name_vector tsvector GENERATED ALWAYS AS ({_vector(_NAME)}) STORED",
    f"ALTER TABLE adapters ADD COLUMN keywords_vector tsvector GENERATED ALWAYS AS ({_vector(_NAME_KEYWORDS)}) STORED",
    "ALTER TABLE adapters ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
    f"{_vector(_NAME, 'A')} || {_vector(_KEYWORDS, 'B')} || {_vector(_DESCRIPTION, 'C')}) STORED",
    "CREATE INDEX ix_adapters_name_vector ON adapters USING gin (name_vector)",
    "CREATE INDEX ix_adapters_keywords_vector ON adapters USING gin (keywords_vector)",
    "CREATE INDEX ix_adapters_search_vector ON adapters USING gin (search_vector)",
    "CREATE INDEX ix_adapters_facets ON adapters USING gin (string_to_array(search_facets, ' '))",
    # Rare words must be estimated as rare (else a LIMIT query walks the popularity index over every row).
    "ALTER TABLE adapters ALTER COLUMN name_vector SET STATISTICS 2000",
    "ALTER TABLE adapters ALTER COLUMN keywords_vector SET STATISTICS 2000",
    "ALTER TABLE adapters ALTER COLUMN search_vector SET STATISTICS 2000",
    "ALTER INDEX ix_adapters_facets ALTER COLUMN 1 SET STATISTICS 2000",
]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(96), nullable=False, unique=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(96), nullable=False, server_default=""),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("token_prefix", sa.String(16), nullable=False),
        sa.Column("can_write", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_used_at", sa.DateTime, nullable=True),
        sa.Column("expires_at", sa.DateTime, nullable=True),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])

    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source_key", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_norm", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("author", sa.Text, nullable=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("private", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("license", sa.String(128), nullable=True),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("repo_id", sa.String(256), nullable=True),
        sa.Column("base_family", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("base_model", sa.String(128), nullable=True),
        sa.Column("format", sa.String(32), nullable=True),
        sa.Column("rank", sa.Integer, nullable=True),
        sa.Column("alpha", sa.Float, nullable=True),
        sa.Column("nsfw", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("downloads", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("published_at", sa.DateTime, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("tags_text", sa.Text, nullable=False, server_default=""),
        sa.Column("trigger_words_text", sa.Text, nullable=False, server_default=""),
        sa.Column("search_facets", sa.Text, nullable=False, server_default=""),
        sa.Column("extra", sa.Text, nullable=True),
    )
    op.create_index("ix_adapters_source_kind", "adapters", ["source_kind"])
    op.create_index("ix_adapters_name_norm", "adapters", ["name_norm"])
    op.create_index("ix_adapters_owner_id", "adapters", ["owner_id"])
    op.create_index("ix_adapters_repo_id", "adapters", ["repo_id"])
    op.create_index("ix_adapters_popularity", "adapters", ["downloads", "id"])
    op.create_index("ix_adapters_published", "adapters", ["published_at", "id"])

    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("revision", sa.String(64), nullable=True),
        sa.Column("base_family", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("base_model", sa.String(128), nullable=True),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("published_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_adapter_versions_adapter_id", "adapter_versions", ["adapter_id"])
    op.create_index("ix_adapter_versions_external_id", "adapter_versions", ["external_id"])

    op.create_table(
        "adapter_files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("adapter_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("is_primary", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("format", sa.String(32), nullable=True),
        sa.Column("base_family", sa.String(16), nullable=True),
        sa.Column("rank", sa.Integer, nullable=True),
        sa.Column("alpha", sa.Float, nullable=True),
        sa.Column("dtype", sa.String(32), nullable=True),
        sa.Column("sha256", _hash(64), nullable=True),
        sa.Column("autov1", _hash(8), nullable=True),
        sa.Column("autov2", _hash(10), nullable=True),
        sa.Column("autov3", _hash(12), nullable=True),
        sa.Column("tensor_sha256", _hash(64), nullable=True),
        sa.Column("crc32", _hash(8), nullable=True),
        sa.Column("blake3", _hash(64), nullable=True),
        sa.Column("path", sa.Text, nullable=True, unique=True),
        sa.Column("mtime_ns", sa.BigInteger, nullable=True),
        sa.Column("inode", sa.BigInteger, nullable=True),
        sa.Column("repo_path", sa.Text, nullable=True),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("indexed_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_adapter_files_adapter_primary", "adapter_files", ["adapter_id", "is_primary"])
    op.create_index("ix_adapter_files_version_id", "adapter_files", ["version_id"])
    for col in ("sha256", "autov1", "autov2", "autov3", "tensor_sha256", "crc32", "blake3"):
        op.create_index(f"ix_adapter_files_{col}", "adapter_files", [col])

    op.create_table(
        "adapter_tags",
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(200), primary_key=True),
    )
    op.create_index("ix_adapter_tags_tag", "adapter_tags", ["tag", "adapter_id"])

    op.create_table(
        "trigger_words",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("adapter_id", sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("adapter_versions.id", ondelete="CASCADE"), nullable=True),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("word", sa.Text, nullable=False),
    )
    op.create_index("ix_trigger_words_adapter_id", "trigger_words", ["adapter_id"])
    op.create_index("ix_trigger_words_version_id", "trigger_words", ["version_id"])

    dialect = op.get_bind().dialect.name
    statements = SQLITE_TEXT_INDEX if dialect == "sqlite" else POSTGRES_TEXT_INDEX if dialect == "postgresql" else []
    bind = op.get_bind()
    for statement in statements:
        # Driver SQL: the ':' of '[[:alnum:]]' and '::regconfig' must not be read as bind parameters.
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("adapters_fts_insert", "adapters_fts_delete", "adapters_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS adapter_fts")
    for table in ("trigger_words", "adapter_tags", "adapter_files", "adapter_versions", "adapters", "tokens", "users"):
        op.drop_table(table)
