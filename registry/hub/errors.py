"""Errors the server's Hub API answers with (:class:`HubApiError` and its subclasses). Each carries
the HTTP status and the ``X-Error-Code`` that huggingface_hub maps to its exceptions
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). The client side's error, what push and
pull raise when a Hub answers so, is the library's :class:`lorahub.hub.errors.HubError`.

They are :class:`lorahub.errors.LorahubError` subclasses, so the CLI (``lorahub token ...``) prints
them as one line like any other lorahub error.
"""

from __future__ import annotations

from typing import Any

from lorahub.errors import LorahubError


class HubApiError(LorahubError):
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


class BadRequest(HubApiError):
    status = 400


class Unauthorized(HubApiError):
    status = 401


class Forbidden(HubApiError):
    status = 403


class RepoNotFound(HubApiError):
    status = 404
    code = "RepoNotFound"

    def __init__(self, repo_id: str = "", **kw: Any) -> None:
        super().__init__(
            f"Repository not found: {repo_id}" if repo_id else "Repository not found", **kw
        )


class RevisionNotFound(HubApiError):
    status = 404
    code = "RevisionNotFound"

    def __init__(self, revision: str, **kw: Any) -> None:
        super().__init__(f"Invalid rev id: {revision}", **kw)


class EntryNotFound(HubApiError):
    status = 404
    code = "EntryNotFound"


class Conflict(HubApiError):
    status = 409


class PayloadTooLarge(HubApiError):
    status = 413


class UnsupportedMediaType(HubApiError):
    status = 415


class InvalidContent(HubApiError):
    """A committed file was refused (invalid adapter, pickle, bad README metadata)."""

    status = 422


class StorageError(HubApiError):
    status = 507
