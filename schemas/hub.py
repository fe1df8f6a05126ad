"""Contracts of sharing: what ``lorahub push`` and ``lorahub pull`` report."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PushFile(_Model):
    path: str = Field(description="Path inside the repo")
    size: int
    sha256: str
    status: Literal["new", "changed", "unchanged"]


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
    registered: bool = False
    warnings: list[str] = Field(default_factory=list)
