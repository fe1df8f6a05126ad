"""Errors of the Hub service. Each carries the HTTP status and the ``X-Error-Code`` that
huggingface_hub maps to its exceptions (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).

They are :class:`lorahub.errors.LorahubError` subclasses, so the CLI (``lorahub token ...``) prints
them as one line like any other lorahub error.
"""

from __future__ import annotations

from typing import Any

from lorahub.errors import LorahubError


class HubError(LorahubError):
    status: int = 400
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(HubError):
    status = 400


class Unauthorized(HubError):
    status = 401


class Forbidden(HubError):
    status = 403


class RepoNotFound(HubError):
    status = 404
    code = "RepoNotFound"

    def __init__(self, repo_id: str = "", **kw: Any) -> None:
        super().__init__(
            f"Repository not found: {repo_id}" if repo_id else "Repository not found", **kw
        )


class RevisionNotFound(HubError):
    status = 404
    code = "RevisionNotFound"

    def __init__(self, revision: str, **kw: Any) -> None:
        super().__init__(f"Invalid rev id: {revision}", **kw)


class EntryNotFound(HubError):
    status = 404
    code = "EntryNotFound"


class Conflict(HubError):
    status = 409


class PayloadTooLarge(HubError):
    status = 413


class UnsupportedMediaType(HubError):
    status = 415


class InvalidContent(HubError):
    """A committed file was refused (invalid adapter, pickle, bad README metadata)."""

    status = 422


class StorageError(HubError):
    status = 507
