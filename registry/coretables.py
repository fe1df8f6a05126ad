"""The tables :mod:`.rows` and :mod:`.semantic` write, as plain SQLAlchemy Core tables (no sqlmodel).

Writing the adapters a ``lorahub index`` found needs the columns of nine tables and nothing of the ORM:
importing :mod:`.tables` (sqlmodel builds a pydantic model and an ORM mapping per table) cost a cold
``lorahub index`` about 150 ms of CPU, a quarter of its start-up. These are the same tables, column for
column (name, type, length, nullability, primary key; tests/registry/test_coretables.py compares them with
:mod:`.tables`, which stays the schema's reference and the migrations' model); they carry no foreign keys,
indexes or server defaults, which matter to DDL only, and nothing calls ``create_all`` on them.
"""

from __future__ import annotations

import sqlalchemy as sa

_METADATA = sa.MetaData()

ADAPTERS = sa.Table(
    "adapters", _METADATA,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("source_kind", sa.String(16), nullable=False),
    sa.Column("source_key", sa.Text(), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("name_norm", sa.Text(), nullable=False),
    sa.Column("title", sa.Text(), nullable=True),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("author", sa.Text(), nullable=True),
    sa.Column("owner_id", sa.Integer(), nullable=True),
    sa.Column("private", sa.Boolean(), nullable=False),
    sa.Column("license", sa.String(128), nullable=True),
    sa.Column("url", sa.Text(), nullable=True),
    sa.Column("repo_id", sa.String(256), nullable=True),
    sa.Column("base_family", sa.String(16), nullable=False),
    sa.Column("base_model", sa.String(128), nullable=True),
    sa.Column("format", sa.String(32), nullable=True),
    sa.Column("rank", sa.Integer(), nullable=True),
    sa.Column("alpha", sa.Float(), nullable=True),
    sa.Column("nsfw", sa.Boolean(), nullable=False),
    sa.Column("downloads", sa.BigInteger(), nullable=False),
    sa.Column("published_at", sa.DateTime(), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("tags_text", sa.Text(), nullable=False),
    sa.Column("trigger_words_text", sa.Text(), nullable=False),
    sa.Column("search_facets", sa.Text(), nullable=False),
    sa.Column("extra", sa.Text(), nullable=True),
)
ADAPTER_VERSIONS = sa.Table(
    "adapter_versions", _METADATA,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("adapter_id", sa.Integer(), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("name", sa.Text(), nullable=True),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("revision", sa.String(64), nullable=True),
    sa.Column("base_family", sa.String(16), nullable=False),
    sa.Column("base_model", sa.String(128), nullable=True),
    sa.Column("url", sa.Text(), nullable=True),
    sa.Column("published_at", sa.DateTime(), nullable=True),
)
ADAPTER_FILES = sa.Table(
    "adapter_files", _METADATA,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("adapter_id", sa.Integer(), nullable=False),
    sa.Column("version_id", sa.Integer(), nullable=False),
    sa.Column("is_primary", sa.Boolean(), nullable=False),
    sa.Column("filename", sa.Text(), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=True),
    sa.Column("format", sa.String(32), nullable=True),
    sa.Column("base_family", sa.String(16), nullable=True),
    sa.Column("rank", sa.Integer(), nullable=True),
    sa.Column("alpha", sa.Float(), nullable=True),
    sa.Column("dtype", sa.String(32), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("autov1", sa.String(8), nullable=True),
    sa.Column("autov2", sa.String(10), nullable=True),
    sa.Column("autov3", sa.String(12), nullable=True),
    sa.Column("tensor_sha256", sa.String(64), nullable=True),
    sa.Column("crc32", sa.String(8), nullable=True),
    sa.Column("blake3", sa.String(64), nullable=True),
    sa.Column("path", sa.Text(), nullable=True),
    sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
    sa.Column("inode", sa.BigInteger(), nullable=True),
    sa.Column("repo_path", sa.Text(), nullable=True),
    sa.Column("url", sa.Text(), nullable=True),
    sa.Column("indexed_at", sa.DateTime(), nullable=False),
)
ADAPTER_TAGS = sa.Table(
    "adapter_tags", _METADATA,
    sa.Column("adapter_id", sa.Integer(), primary_key=True),
    sa.Column("tag", sa.String(200), primary_key=True),
)
TRIGGER_WORDS = sa.Table(
    "trigger_words", _METADATA,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("adapter_id", sa.Integer(), nullable=False),
    sa.Column("version_id", sa.Integer(), nullable=True),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("word", sa.Text(), nullable=False),
)
BLEND_SOURCES = sa.Table(
    "blend_sources", _METADATA,
    sa.Column("adapter_id", sa.Integer(), primary_key=True),
    sa.Column("position", sa.Integer(), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("autov3", sa.String(12), nullable=True),
    sa.Column("name", sa.Text(), nullable=True),
    sa.Column("reference", sa.Text(), nullable=True),
)
ADAPTER_EMBEDDINGS = sa.Table(
    "adapter_embeddings", _METADATA,
    sa.Column("adapter_id", sa.Integer(), primary_key=True),
    sa.Column("model", sa.String(96), nullable=False),
    sa.Column("model_version", sa.String(48), nullable=False),
    sa.Column("dim", sa.SmallInteger(), nullable=False),
    sa.Column("vector", sa.LargeBinary(), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
)
ADAPTER_EMBEDDING_REMOVALS = sa.Table(
    "adapter_embedding_removals", _METADATA,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("adapter_id", sa.Integer(), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
)
ADAPTER_SKETCHES = sa.Table(
    "adapter_sketches", _METADATA,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("version", sa.SmallInteger(), nullable=False),
    sa.Column("modules", sa.Integer(), nullable=False),
    sa.Column("vector", sa.LargeBinary(), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
)

__all__ = [
    "ADAPTERS", "ADAPTER_EMBEDDINGS", "ADAPTER_EMBEDDING_REMOVALS", "ADAPTER_FILES", "ADAPTER_SKETCHES", "ADAPTER_TAGS",
    "ADAPTER_VERSIONS", "BLEND_SOURCES", "TRIGGER_WORDS",
]
