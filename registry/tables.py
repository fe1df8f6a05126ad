"""The registry's tables (sqlmodel).

::

    users --< tokens --< token_scopes          (fine-grained tokens: the repos/namespaces they reach)
    users --- orgs --< org_members >-- users   (an organisation is a users row marked in orgs)
    users --< adapters --< adapter_versions --< adapter_files
                 |--< adapter_tags
                 |--< trigger_words
                 |--- adapter_embeddings  (the record's sentence embedding, for semantic search)
                 |    adapter_embedding_removals  (deleted embeddings, for search processes to catch up)
                 '--< blend_sources   (a lorahub blend's sources, from its recipe)

* An **adapter** is what a search finds: a local file, a Hub repository, or an
  imported catalogue record. ``source_kind`` + ``source_key`` identify it
  (``local:/abs/path.safetensors``, ``hub:<endpoint>/<repo_id>``,
  ``record:<catalogue>:<id>``); indexing the same thing again updates it.
* A **version** is a release (a Civitai model version, a Hub commit); a
  **file** is one file of a version with every fingerprint (lower-case hex,
  each indexed for exact and prefix lookup) and where it lives: a local path
  (with size/mtime/inode to notice changes), a path inside a Hub repo at the
  version's ``revision``, or a download URL.
* Text search reads denormalised columns of ``adapters`` (``tags_text``,
  ``trigger_words_text``) through SQLite FTS5 (table ``adapter_fts``, kept in
  sync by triggers) or a PostgreSQL generated ``tsvector`` column
  (``search_vector``, GIN); both are created by the migrations, not by these
  models. ``search_facets`` holds one token per filter value (base family,
  format, tags, author, licence...) so that filters run inside the text index.
* **users** and **tokens** are minimal now: the server (``lorahub serve``)
  adds repositories and commits on top. Tokens are stored as SHA-256 hashes.
  Organisations, their members' roles and token scopes are read by the server's
  policy (``lorahub.registry.hub.access``).

Schema changes go through Alembic (``lorahub.registry.migrations``); production
code never calls ``create_all``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# The stored-time helpers live with the database (no SQLAlchemy there); kept importable from here.
from .database import iso, utcnow


def hash_column(length: int, *, index: bool = True) -> sa.Column:
    """A lower-case hex column. PostgreSQL gets the C collation so that prefix
    ranges and ``LIKE 'abc%'`` use the B-tree index."""
    kind = sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")
    return sa.Column(kind, nullable=True, index=index)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(96), nullable=False, unique=True))
    email: str | None = Field(default=None, sa_column=sa.Column(sa.String(320), nullable=True))
    is_admin: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class Token(SQLModel, table=True):
    """An API token: only its SHA-256 is stored (``token_hash``) plus a short display prefix."""

    __tablename__ = "tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name: str = Field(default="", sa_column=sa.Column(sa.String(96), nullable=False, server_default=""))
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    token_prefix: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    can_write: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))
    expires_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))


class Org(SQLModel, table=True):
    """An organisation: a namespace of its own, held in ``users`` (so a user and an organisation never
    share a name, and an organisation's repos have it as ``owner_id`` as a user's have the user);
    this row marks that ``users`` row as an organisation. No token is ever issued to it."""

    __tablename__ = "orgs"

    id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class OrgMember(SQLModel, table=True):
    """A user's role in an organisation: ``read``, ``contributor``, ``write`` or ``admin`` (see
    :mod:`lorahub.registry.hub.access`)."""

    __tablename__ = "org_members"

    org_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True))
    user_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    )
    role: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class TokenScope(SQLModel, table=True):
    """What a fine-grained token is limited to: a repo (``kind = "repo"``, ``name`` = ``ns/name`` lower
    case) or a whole namespace (``kind = "org"``, ``name`` = the organisation's or the user's own name,
    lower case). A token without rows here is limited only by its user's rights."""

    __tablename__ = "token_scopes"

    token_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.String(8), primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))


def hash_token(token: str) -> str:
    """What ``tokens.token_hash`` stores for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Adapter(SQLModel, table=True):
    __tablename__ = "adapters"
    __table_args__ = (
        sa.Index("ix_adapters_popularity", "downloads", "id"),
        sa.Index("ix_adapters_published", "published_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source_kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    source_key: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    name: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    #: Lower-case words of ``name`` joined by one space (exact-name matches).
    name_norm: str = Field(sa_column=sa.Column(sa.Text, nullable=False, index=True))
    title: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    description: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    author: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    owner_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True),
    )
    private: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    license: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    url: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    repo_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(256), nullable=True, index=True))
    base_family: str = Field(default="unknown", sa_column=sa.Column(sa.String(16), nullable=False, server_default="unknown"))
    base_model: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    format: str | None = Field(default=None, sa_column=sa.Column(sa.String(32), nullable=True))
    rank: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    alpha: float | None = Field(default=None, sa_column=sa.Column(sa.Float, nullable=True))
    nsfw: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    downloads: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    published_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    #: Tags (lower case) and trigger words, one per line: what the text index reads.
    tags_text: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    trigger_words_text: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    #: Filter tokens (see lorahub.registry.text.facets), space separated.
    search_facets: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    #: JSON object of anything else the source knows (Civitai permissions, training parameters...).
    extra: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class AdapterVersion(SQLModel, table=True):
    __tablename__ = "adapter_versions"

    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    position: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    name: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    external_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True, index=True))
    #: Hub commit (40 hex) the files were read at.
    revision: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    base_family: str = Field(default="unknown", sa_column=sa.Column(sa.String(16), nullable=False, server_default="unknown"))
    base_model: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    url: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    published_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime, nullable=True))


class AdapterFile(SQLModel, table=True):
    __tablename__ = "adapter_files"
    __table_args__ = (sa.Index("ix_adapter_files_adapter_primary", "adapter_id", "is_primary"),)

    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), nullable=False)
    )
    version_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("adapter_versions.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    is_primary: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    filename: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    size: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    format: str | None = Field(default=None, sa_column=sa.Column(sa.String(32), nullable=True))
    base_family: str | None = Field(default=None, sa_column=sa.Column(sa.String(16), nullable=True))
    rank: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    alpha: float | None = Field(default=None, sa_column=sa.Column(sa.Float, nullable=True))
    dtype: str | None = Field(default=None, sa_column=sa.Column(sa.String(32), nullable=True))
    sha256: str | None = Field(default=None, sa_column=hash_column(64))
    autov1: str | None = Field(default=None, sa_column=hash_column(8))
    autov2: str | None = Field(default=None, sa_column=hash_column(10))
    autov3: str | None = Field(default=None, sa_column=hash_column(12))
    tensor_sha256: str | None = Field(default=None, sa_column=hash_column(64))
    crc32: str | None = Field(default=None, sa_column=hash_column(8))
    blake3: str | None = Field(default=None, sa_column=hash_column(64))
    #: Local files: absolute real path and what tells a changed file.
    path: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True, unique=True))
    mtime_ns: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    inode: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    #: Hub files: path inside the repository (at the version's revision).
    repo_path: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    url: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    indexed_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class AdapterTag(SQLModel, table=True):
    __tablename__ = "adapter_tags"
    __table_args__ = (sa.Index("ix_adapter_tags_tag", "tag", "adapter_id"),)

    adapter_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True)
    )
    tag: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))


class TriggerWord(SQLModel, table=True):
    __tablename__ = "trigger_words"

    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    version_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("adapter_versions.id", ondelete="CASCADE"), nullable=True, index=True),
    )
    position: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    word: str = Field(sa_column=sa.Column(sa.Text, nullable=False))


class BlendSource(SQLModel, table=True):
    """One source of an adapter that is a lorahub blend (from the recipe in its metadata), lower-case hex."""

    __tablename__ = "blend_sources"

    adapter_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True)
    )
    position: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True))
    sha256: str | None = Field(default=None, sa_column=hash_column(64))
    autov3: str | None = Field(default=None, sa_column=hash_column(12))
    name: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    reference: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class AdapterSketch(SQLModel, table=True):
    """The ΔW sketch of a file's weights (:mod:`lorahub.adapters.sketch`), by the file's SHA-256: every copy,
    move or re-index of the same bytes shares it. ``vector`` is the adapter-wide summary (read alone by
    ``lorahub dupes --near``), ``data`` the whole serialised sketch."""

    __tablename__ = "adapter_sketches"

    sha256: str = Field(sa_column=sa.Column(hash_column(64, index=False).type, primary_key=True))
    version: int = Field(sa_column=sa.Column(sa.SmallInteger, nullable=False))
    modules: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    vector: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class AdapterEmbedding(SQLModel, table=True):
    """The sentence embedding of an adapter's record (name, tags, trigger words, description or card), for
    semantic search (:mod:`lorahub.registry.semantic`): float16 bytes of ``dim`` values, made by ``model`` at
    ``model_version``. ``seq`` grows with every write (a search process reloads the rows above the largest
    it has read)."""

    __tablename__ = "adapter_embeddings"

    adapter_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True)
    )
    model: str = Field(sa_column=sa.Column(sa.String(96), nullable=False))
    model_version: str = Field(sa_column=sa.Column(sa.String(48), nullable=False))
    dim: int = Field(sa_column=sa.Column(sa.SmallInteger, nullable=False))
    vector: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, index=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class AdapterEmbeddingRemoval(SQLModel, table=True):
    """A deleted sentence embedding: the adapter and the ``seq`` of the deletion (the counter of
    ``adapter_embeddings.seq``), so a search process removes it from its index as it adds new vectors.
    Written by the database, a trigger on every delete of an ``adapter_embeddings`` row (migration 0113). No
    foreign key: the adapter may be gone. Pruned after a week (:mod:`lorahub.registry.semantic`)."""

    __tablename__ = "adapter_embedding_removals"

    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, index=True))


metadata = SQLModel.metadata

__all__ = [
    "Adapter",
    "AdapterEmbedding",
    "AdapterEmbeddingRemoval",
    "AdapterFile",
    "AdapterSketch",
    "AdapterTag",
    "AdapterVersion",
    "BlendSource",
    "Token",
    "TriggerWord",
    "User",
    "hash_token",
    "iso",
    "metadata",
    "utcnow",
]
