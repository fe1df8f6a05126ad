"""Turn huggingface_hub / HTTP failures into one readable lorahub error."""

from __future__ import annotations

from lorahub.errors import LorahubError


class HubError(LorahubError):
    """A Hub endpoint refused or failed a request (auth, permissions, conflicts, network)."""


def hub_error(exc: BaseException, *, endpoint: str, repo_id: str | None = None, action: str = "request") -> LorahubError:
    """One line that says what went wrong and what to do, for any client-side failure."""
    if isinstance(exc, LorahubError):
        return exc
    what = f"'{repo_id}'" if repo_id else endpoint
    try:
        from huggingface_hub import errors as hf
    except ImportError:  # pragma: no cover
        return HubError(f"{action} failed: {exc}")
    # huggingface_hub 2.x speaks httpx2, older releases httpx: match the transport errors by name.
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"ConnectError", "ConnectTimeout"} or (isinstance(exc, OSError) and not isinstance(exc, hf.HfHubHTTPError)):
        return HubError(f"cannot reach {endpoint}: {_first_line(exc)}", hint="is the network up and the endpoint right?")
    if "TransportError" in names:
        return HubError(f"connection to {endpoint} failed during {action}: {_first_line(exc)}", hint="run the command again to resume")
    if isinstance(exc, hf.HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        message = (getattr(exc, "server_message", None) or "").strip() or _first_line(exc)
        message = message.splitlines()[0] if message else ""
        if status == 401:
            return HubError(
                f"{endpoint} refused the token (401 Unauthorized)",
                hint="pass --token, set HF_TOKEN or run `hf auth login`",
            )
        if status == 403:
            return HubError(
                f"the token may not write to {what} on {endpoint} (403 Forbidden): {message}",
                hint="use a write token of the repo's owner, or another --repo",
            )
        if isinstance(exc, hf.RepositoryNotFoundError) or status == 404:
            return HubError(f"{what} not found on {endpoint} (or it is private and the token cannot see it)")
        if status == 409:
            return HubError(f"{what} changed on {endpoint} while this {action} ran (409 Conflict): {message}",
                            hint="run the command again")
        if status == 413:
            return HubError(f"{endpoint} refused the upload as too large (413): {message}")
        if status is not None and 400 <= status < 500:
            return HubError(f"{endpoint} refused the {action} ({status}): {message}")
        if status is not None:
            return HubError(f"{endpoint} failed the {action} ({status}): {message}", hint="try again later")
    if isinstance(exc, ValueError) and str(exc).startswith("LFS batch API returned errors"):
        details = "; ".join(line.strip(" -") for line in str(exc).splitlines()[1:] if line.strip())
        return HubError(f"{endpoint} refused the upload: {details[:500] or 'no reason given'}")
    if isinstance(exc, ValueError) and "Xet" in str(exc):
        return HubError(f"{endpoint} does not speak Xet: {_first_line(exc)}", hint="set HF_HUB_DISABLE_XET=1")
    return HubError(f"{action} on {endpoint} failed: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
