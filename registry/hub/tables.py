"""The tables of the Hub server (``hub_*``), on the registry's SQLModel metadata.

::

    users --< hub_repos --< hub_refs          (branches: main, refs/pr/N -> commit oid)
                  |------< hub_commits --< hub_files   (full file list of every commit)
                  |------< hub_repo_objects            (LFS objects uploaded to this repo)
                  '------< hub_repo_tags               (tags of the main head, for list filters)
    hub_blobs      (every stored blob: sha256, size, git blob id of the content)
    hub_secrets    (server-side secrets, e.g. the key that signs upload URLs)
    hub_sequences  (counters that never go back: the last repo id, on SQLite the last commit id handed out)
    hub_xet_xorbs --< hub_xet_xorb_owners, hub_xet_files, hub_xet_dedupe   (the Xet CAS, see .cas)

* A commit stores its whole file list (``hub_files``), not a diff: reading a tree at any
  revision is one indexed query; a commit copies the parent's rows (cheap for adapter repos,
  which hold a handful of files).
* ``hub_files.sha256`` addresses the content in the blob store for regular and LFS files alike;
  ``git_oid`` is what the Hub protocol calls the file's oid (git blob id of the content for
  regular files, of the LFS pointer for LFS files).
* ``hub_repo_objects`` records which LFS objects were uploaded *to this repo* (or are part of one
  of its commits): an ``lfsFile`` commit line may only name those, so nobody can attach a blob
  stored for someone else's private repo by guessing its sha256.
* ``hub_repos`` carries the main head's ``sha``, card data and tags, updated in the same
  transaction as the ref, so listing models needs no join over commits.
* Users and tokens are the registry's ``users`` and ``tokens`` tables.

Created by the Alembic revisions ``0101_hub``, ``0104_hub_repo_ids``, ``0105_hub_xet`` and ``0107_orgs`` (never by ``create_all``).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from lorahub.registry.tables import utcnow


def _hex(length: int) -> sa.types.TypeEngine:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


class HubRepo(SQLModel, table=True):
    __tablename__ = "hub_repos"
    __table_args__ = (
        sa.Index("ix_hub_repos_downloads", "downloads", "id"),
        sa.Index("ix_hub_repos_updated", "updated_at", "id"),
        sa.Index("ix_hub_repos_namespace", "namespace_lower"),
        sa.Index("ux_hub_repos_public_id", "public_id", unique=True),
    )

    #: Never reused: taken from ``hub_sequences`` (see ``repos.next_repo_pk``), not SQLite's rowid.
    id: int | None = Field(default=None, primary_key=True)
    #: 24 random hex digits: the ``_id`` of API answers and the repo part of upload URLs (the
    #: primary key would tell how many repos, private ones included, were ever created).
    public_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(24), nullable=True))
    repo_type: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    namespace: str = Field(sa_column=sa.Column(sa.String(96), nullable=False))
    name: str = Field(sa_column=sa.Column(sa.String(96), nullable=False))
    namespace_lower: str = Field(sa_column=sa.Column(sa.String(96), nullable=False))
    #: ``type/namespace/name`` lower case: repo ids are unique ignoring case, as on the Hub.
    key: str = Field(sa_column=sa.Column(sa.String(220), nullable=False, unique=True))
    owner_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    private: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    downloads: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0"))
    likes: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    #: Main head (40 hex) and what its README says (denormalised; see the module docstring).
    sha: str | None = Field(default=None, sa_column=sa.Column(_hex(40), nullable=True))
    card_data: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    tags: str = Field(default="[]", sa_column=sa.Column(sa.Text, nullable=False, server_default="[]"))
    pipeline_tag: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    library_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    next_pr: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1"))
    #: The user who created the repo (an organisation's ``contributor`` members may write to the repos
    #: they created); no foreign key: users are never deleted, and SQLite drops such a column simply.
    created_by: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))


class HubRef(SQLModel, table=True):
    __tablename__ = "hub_refs"
    __table_args__ = (sa.UniqueConstraint("repo_id", "name", name="uq_hub_refs_repo_name"),)

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("hub_repos.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    commit_oid: str = Field(sa_column=sa.Column(_hex(40), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class HubCommit(SQLModel, table=True):
    __tablename__ = "hub_commits"
    __table_args__ = (
        sa.UniqueConstraint("repo_id", "oid", name="uq_hub_commits_repo_oid"),
        sa.Index("ix_hub_commits_oid", "oid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("hub_repos.id", ondelete="CASCADE"), nullable=False)
    )
    oid: str = Field(sa_column=sa.Column(_hex(40), nullable=False))
    parent_oid: str | None = Field(default=None, sa_column=sa.Column(_hex(40), nullable=True))
    title: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    message: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    author_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    author_name: str = Field(default="", sa_column=sa.Column(sa.String(96), nullable=False, server_default=""))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    card_data: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    tags: str = Field(default="[]", sa_column=sa.Column(sa.Text, nullable=False, server_default="[]"))
    pipeline_tag: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    library_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))


class HubFile(SQLModel, table=True):
    __tablename__ = "hub_files"
    __table_args__ = (
        sa.UniqueConstraint("commit_id", "path", name="uq_hub_files_commit_path"),
        sa.Index("ix_hub_files_sha256", "sha256"),
    )

    id: int | None = Field(default=None, primary_key=True)
    commit_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("hub_commits.id", ondelete="CASCADE"), nullable=False)
    )
    path: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    sha256: str = Field(sa_column=sa.Column(_hex(64), nullable=False))
    git_oid: str = Field(sa_column=sa.Column(_hex(40), nullable=False))
    lfs: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))


class HubBlob(SQLModel, table=True):
    __tablename__ = "hub_blobs"

    sha256: str = Field(sa_column=sa.Column(_hex(64), primary_key=True))
    size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    git_sha1: str | None = Field(default=None, sa_column=sa.Column(_hex(40), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class HubRepoObject(SQLModel, table=True):
    __tablename__ = "hub_repo_objects"

    repo_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("hub_repos.id", ondelete="CASCADE"), primary_key=True)
    )
    sha256: str = Field(sa_column=sa.Column(_hex(64), primary_key=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class HubRepoTag(SQLModel, table=True):
    __tablename__ = "hub_repo_tags"
    __table_args__ = (sa.Index("ix_hub_repo_tags_tag", "tag", "repo_id"),)

    repo_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("hub_repos.id", ondelete="CASCADE"), primary_key=True)
    )
    tag: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))


class HubSequence(SQLModel, table=True):
    """Counters that never go back: ``hub_repos`` is the last repo primary key handed out, ``hub_commits``
    the last commit primary key (SQLite only: PostgreSQL's sequence never goes back; see
    ``trees.next_commit_pk``)."""

    __tablename__ = "hub_sequences"

    name: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    value: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class HubSecret(SQLModel, table=True):
    __tablename__ = "hub_secrets"

    name: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    value: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class HubXetXorb(SQLModel, table=True):
    """A xorb received through the Xet CAS: its chunks (``[[chunk hash hex, unpacked length,
    stored record length], ...]`` as JSON), whose records live once each in ``<data>/xet/chunks``."""

    __tablename__ = "hub_xet_xorbs"

    hash: str = Field(sa_column=sa.Column(_hex(64), primary_key=True))
    num_chunks: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    unpacked_bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    #: Bytes of the xorb as this server serves it (the sum of its stored chunk records).
    stored_bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    #: Bytes the client sent for it (the first time).
    received_bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    chunks: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class HubXetXorbOwner(SQLModel, table=True):
    """Who uploaded a xorb (proved holding its bytes): only they may name it in a shard or get it
    from the global dedupe query."""

    __tablename__ = "hub_xet_xorb_owners"

    xorb: str = Field(sa_column=sa.Column(_hex(64), primary_key=True))
    user_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    )


class HubXetFile(SQLModel, table=True):
    """A file registered by a shard: its Xet file hash, the SHA-256 of its content (the LFS oid,
    whose blob is stored like an LFS upload) and its terms (``[[xorb hex, first chunk, end chunk,
    unpacked bytes], ...]`` as JSON)."""

    __tablename__ = "hub_xet_files"
    __table_args__ = (sa.Index("ix_hub_xet_files_sha256", "sha256"),)

    file_hash: str = Field(sa_column=sa.Column(_hex(64), primary_key=True))
    sha256: str = Field(sa_column=sa.Column(_hex(64), nullable=False))
    size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    terms: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class HubXetDedupe(SQLModel, table=True):
    """The global dedupe index: a chunk (one the client may ask about) -> a xorb holding it."""

    __tablename__ = "hub_xet_dedupe"

    chunk: str = Field(sa_column=sa.Column(_hex(64), primary_key=True))
    xorb: str = Field(sa_column=sa.Column(_hex(64), primary_key=True))


HUB_TABLES = (
    "hub_repos",
    "hub_refs",
    "hub_commits",
    "hub_files",
    "hub_blobs",
    "hub_repo_objects",
    "hub_repo_tags",
    "hub_secrets",
    "hub_sequences",
    "hub_xet_xorbs",
    "hub_xet_xorb_owners",
    "hub_xet_files",
    "hub_xet_dedupe",
)

__all__ = [
    "HUB_TABLES",
    "HubBlob",
    "HubCommit",
    "HubFile",
    "HubRef",
    "HubRepo",
    "HubRepoObject",
    "HubRepoTag",
    "HubSecret",
    "HubSequence",
    "HubXetDedupe",
    "HubXetFile",
    "HubXetXorb",
    "HubXetXorbOwner",
]
