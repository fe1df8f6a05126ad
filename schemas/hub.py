"""Contracts of sharing: what ``lorahub push`` and ``lorahub pull`` report, and what
``lorahub registry check`` finds in a ``lorahub serve`` data folder."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .adapters import AdapterFormat, BaseFamily
from .recipes import BlendRecipe


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PushFile(_Model):
    path: str = Field(description="Path inside the repo")
    size: int
    sha256: str
    status: Literal["new", "changed", "unchanged"]


class RepoAdapter(_Model):
    """One adapter file of a pushed or pulled repo, as push/pull read it: what a face needs to record the
    repo in its registry (``Registry.record_hub_files``) without reading the file again."""

    path: str = Field(description="Path inside the repo")
    size: int
    hashes: dict[str, str] = Field(
        default_factory=dict, description="Fingerprints by hash name (sha256, autov2, autov3, crc32, blake3, ...)"
    )
    format: AdapterFormat
    base_family: BaseFamily
    rank: int | None = None
    alpha: float | None = None
    dtype: str | None = None
    trigger_words: list[str] = Field(default_factory=list)
    title: str | None = None
    recipe: BlendRecipe | None = Field(None, description="The recipe of a lorahub blend (its sources), if it is one")


class PushResult(_Model):
    repo_id: str
    endpoint: str
    url: str = Field(description="Web URL of the repo")
    revision: str
    commit: str | None = Field(None, description="Commit the repo is at after the push (None for a dry run of a new repo)")
    changed: bool = Field(description="Whether a new commit was made")
    dry_run: bool = False
    private: bool = False
    weight_name: str
    files: list[PushFile] = Field(default_factory=list)
    bytes_uploaded: int = Field(0, description="Bytes of the files committed (0 when nothing changed)")
    card_action: Literal["generated", "merged", "kept", "overwritten"]
    card_added: list[str] = Field(default_factory=list, description="Metadata keys lorahub filled into an existing card")
    card: str | None = Field(None, description="The README.md pushed (or, for a dry run, that would be pushed)")
    pull_request_url: str | None = None
    adapters: list[RepoAdapter] = Field(default_factory=list, description="The adapter file pushed, as it was read")
    registered: bool = Field(False, description="Recorded in the registry")
    warnings: list[str] = Field(default_factory=list)


class PullFile(_Model):
    path: str
    local_path: str
    size: int
    sha256: str
    verified: Literal["registry", "hub", "unverified"] = Field(
        description="What the file's SHA-256 was checked against: the registry's record, the Hub's LFS oid, or nothing"
    )


class PullResult(_Model):
    repo_id: str
    endpoint: str
    revision: str
    commit: str
    folder: str
    files: list[PullFile] = Field(default_factory=list)
    adapters: list[RepoAdapter] = Field(default_factory=list, description="The adapter files pulled, as they were read")
    readme: str | None = Field(None, description="The repo's README.md (model card), when it has one")
    registered: bool = False
    warnings: list[str] = Field(default_factory=list)


class StorageIssue(_Model):
    """One finding of ``lorahub registry check``."""

    kind: Literal[
        "missing", "corrupt", "size_mismatch", "unrecorded", "orphan_blob", "orphan_file", "orphan_object", "stale_part", "stray",
        "xet_missing_chunk", "xet_corrupt_chunk", "xet_missing_xorb", "xet_orphan_chunk",
    ] = Field(
        description="missing: a referenced blob has no file (nor Xet chunks); corrupt: a blob's SHA-256 is not its name (a blob file, or one rebuilt from its Xet chunks); size_mismatch: "
        "the database records another size than the verified file has; unrecorded: a referenced blob file has no "
        "hub_blobs row; orphan_blob/orphan_file: a blob (with/without its hub_blobs row) that no commit and no recent "
        "upload references; orphan_object: an LFS upload to a repo that no commit of the repo uses; stale_part: an "
        "unfinished upload (tmp/*.part); stray: a file in the blob folder that is not a blob at its place; "
        "xet_missing_chunk: a xorb names a chunk that has no file; xet_corrupt_chunk: a chunk file whose bytes do not hash "
        "to its name; xet_missing_xorb: a file registered through Xet names a xorb the database does not have; "
        "xet_orphan_chunk: a chunk file no xorb names"
    )
    severity: Literal["error", "orphan", "pending"] = Field(
        description="error: the database and the blob store disagree (exit code 1 unless repaired); orphan: garbage that "
        "--repair removes; pending: looks orphaned but is younger than the grace period (an upload or commit may be in "
        "progress), left alone"
    )
    sha256: str | None = None
    path: str | None = Field(None, description="The file concerned, relative to the blob folder")
    size: int | None = Field(None, description="Size of the file on disk, when there is one")
    message: str
    references: list[str] = Field(
        default_factory=list,
        description="Up to 5 places that name the blob: 'type/namespace/name@commit:path' or 'type/namespace/name (upload)'",
    )
    action: Literal["removed", "quarantined", "recorded"] | None = Field(
        None, description="What --repair did: removed (orphans), quarantined (moved to blobs/quarantine/), recorded (row added)"
    )
    fixed: bool = Field(False, description="Whether the repair resolved the issue")


class StorageCheck(_Model):
    """What ``lorahub registry check`` found (and repaired) in a ``lorahub serve`` data folder."""

    data_dir: str
    blob_dir: str
    database: str = Field(description="Database URL, password hidden")
    repair: bool
    grace_seconds: float = Field(description="Orphans younger than this are pending, not orphans")
    blob_files: int = Field(0, description="Blob files found under blobs/sha256/")
    chunked_blobs: int = Field(
        0, description="Blobs the database names that are stored only as Xet chunks (uploaded through Xet), verified by rebuilding them"
    )
    bytes_verified: int = Field(0, description="Bytes hashed to verify the blobs (files and those rebuilt from Xet chunks)")
    blob_rows: int = Field(0, description="Rows of hub_blobs")
    referenced: int = Field(0, description="Distinct blobs that commits (hub_files) reference")
    xet_xorbs: int = Field(0, description="Xorbs received through the Xet CAS (hub_xet_xorbs)")
    xet_files: int = Field(0, description="Files registered by Xet shards (hub_xet_files)")
    xet_chunks: int = Field(0, description="Chunk files under xet/chunks/ (each chunk is stored once)")
    xet_chunk_bytes: int = Field(0, description="Bytes of the chunk files (as stored, compressed)")
    xet_bytes_saved: int = Field(
        0,
        description="Bytes the chunk store did not store again: the sizes of the files registered through Xet, minus the "
        "unpacked bytes of the distinct chunks they use",
    )
    issues: list[StorageIssue] = Field(default_factory=list)
    errors: int = Field(0, description="Error-level issues left (not fixed)")
    orphans: int = Field(0, description="Orphans left (not removed)")
    pending: int = 0
    repaired: int = Field(0, description="Issues --repair fixed")
    ok: bool = Field(description="No error-level issue is left: the database and the blob store agree")
    seconds: float = 0.0


class Publication(_Model):
    """Where one file is published: a repo of a Hub-compatible server, or a model version of a
    Civitai-compatible one (``lorahub resolve``)."""

    kind: Literal["hub", "civitai"] = Field(description="hub: lorahub's by-hash API; civitai: Civitai's by-hash API")
    endpoint: str = Field(description="The server asked")
    name: str = Field(description="Model (Civitai) or repo (Hub) name")
    repo_id: str | None = Field(None, description="Hub repo id (namespace/name)")
    model_id: int | None = Field(None, description="Civitai model id")
    version_id: int | None = Field(None, description="Civitai model version id")
    version: str | None = Field(None, description="Version name (Civitai) or commit title (Hub)")
    revision: str | None = Field(None, description="Hub commit the file was found at")
    file_name: str | None = Field(None, description="The file's name there")
    trigger_words: list[str] = Field(default_factory=list)
    base_model: str | None = Field(None, description="Base model label as the server says it (SD 1.5, Pony...)")
    base_family: BaseFamily = "unknown"
    license: str | None = Field(None, description="Licence id, when the server gives one")
    author: str | None = None
    tags: list[str] = Field(default_factory=list)
    url: str | None = Field(None, description="The page of the model or repo")
    download_url: str | None = None
    via: Literal["server", "index"] = Field(
        "server", description="server: the server answered; index: the local registry's record of that Hub's repos "
        "(lorahub index --hub, push, pull), asked for a Hub without lorahub's by-hash API"
    )


class ResolveResult(_Model):
    """``lorahub resolve``: one file and where it is published."""

    path: str
    sha256: str
    size: int
    found: list[Publication] = Field(default_factory=list, description="Empty: published on none of the servers asked")
    cached: bool = Field(False, description="Every answer came from the cache (none was asked again)")
    errors: list[str] = Field(default_factory=list, description="Servers that could not answer, one line each")
    applied: bool = Field(False, description="--apply recorded what was found into the local registry")
    new_sha256: str | None = Field(
        None, description="--write-metadata rewrote the file's metadata: its new SHA-256 (Civitai lookups by the old one)"
    )
