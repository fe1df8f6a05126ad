"""Who may do what: the one policy of the Hub server (``allowed``), and the visibility rules the
listings and searches derive from it.

Every route decides through :func:`allowed` (directly, through ``repos.get_repo``, or through
:func:`private_view` for the queries that filter many repos at once). Nothing else in the server
compares user ids, roles or visibility.

Namespaces are users' and organisations'. A user's role in their own namespace is ``owner``; in an
organisation it is their membership's role, as on the Hugging Face Hub:

=============== ====================================================================================
``read``        reads the organisation's repos, private ones included
``contributor`` also creates repos in the organisation, and writes to (commits, settings, deletes)
                the repos they created there, no others
``write``       also writes to, changes the settings of and deletes every repo of the organisation
``admin``       also manages the members (adds, removes, changes roles)
=============== ====================================================================================

Server administrators (``users.is_admin``) may do everything. Tokens narrow their user's rights:
a read-only token never writes; a fine-grained token (``token_scopes``) acts only on the repos and
namespaces it names. Public repos are readable by anyone, with or without a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .auth import Identity

ROLES = ("read", "contributor", "write", "admin")
ACTIONS = ("read", "write", "create", "delete", "settings", "manage-members", "xet-read", "xet-write")
#: Actions on an existing repo that change it (read-only tokens never get them).
WRITING = frozenset({"write", "create", "delete", "settings", "manage-members", "xet-write"})


class RepoLike(Protocol):
    """What the policy reads of a repo (a ``HubRepo`` is one)."""

    namespace: str
    name: str
    private: bool
    owner_id: int | None
    created_by: int | None


@dataclass(frozen=True)
class RepoRef:
    """A repo that may not exist yet (``create``), or an organisation (``manage-members``: ``name`` empty)."""

    namespace: str
    name: str = ""
    private: bool = False
    owner_id: int | None = None
    created_by: int | None = None


def role_in(ident: Identity | None, namespace: str) -> str | None:
    """``owner`` in the user's own namespace, the membership's role in an organisation, else None."""
    if ident is None:
        return None
    ns = namespace.lower()
    if ns == ident.name.lower():
        return "owner"
    for org, _org_id, role in ident.orgs:
        if org.lower() == ns:
            return role
    return None


def in_scope(ident: Identity, namespace: str, name: str = "") -> bool:
    """Whether the token reaches ``namespace/name`` (or, with no name, the whole namespace)."""
    if ident.scopes is None:
        return True
    ns = namespace.lower()
    for kind, value in ident.scopes:
        if kind == "org" and value == ns:
            return True
        if kind == "repo" and name and value == f"{ns}/{name.lower()}":
            return True
    return False


def allowed(ident: Identity | None, action: str, repo: RepoLike) -> bool:
    """Whether ``ident`` (None: anonymous) may do ``action`` (one of :data:`ACTIONS`) on ``repo``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if action in ("read", "xet-read") and not repo.private:
        return True
    if ident is None:
        return False
    if action in WRITING and not ident.can_write:
        return False
    if action == "manage-members":
        # the organisation itself: its admins (tokens reaching the whole organisation) and server admins
        if not in_scope(ident, repo.namespace):
            return False
        return ident.is_admin or role_in(ident, repo.namespace) == "admin"
    if not in_scope(ident, repo.namespace, repo.name):
        return False
    if ident.is_admin:
        return True
    role = role_in(ident, repo.namespace)
    if role is None:
        return False
    if action in ("read", "xet-read"):
        return True
    if role in ("owner", "admin", "write"):
        return True
    if role == "contributor":
        if action == "create":
            return True
        return repo.created_by is not None and repo.created_by == ident.user_id
    return False  # read


@dataclass(frozen=True)
class PrivateView:
    """The private repos a caller may read, for queries over many repos: every one (``everything``),
    or those in ``namespaces`` (lower case; ``owners``: the ids of those the caller is a member of,
    for the catalogue, which keeps owner ids) and those named in ``repos`` (``ns/name`` lower case).
    Public repos are visible to all; this says which private ones are. The catalogue's searches use
    ``owners`` only: a token limited to single private repos finds them through the Hub API, not
    through search (never more than :func:`allowed` says, sometimes less)."""

    everything: bool = False
    namespaces: tuple[str, ...] = ()
    owners: tuple[int, ...] = ()
    repos: tuple[str, ...] = ()


def private_view(ident: Identity | None) -> PrivateView:
    """:func:`allowed` ``read`` over private repos, as sets a query can use."""
    if ident is None:
        return PrivateView()
    namespaces = {ident.name.lower(): ident.user_id, **{org.lower(): org_id for org, org_id, _ in ident.orgs}}
    if ident.scopes is None:
        if ident.is_admin:
            return PrivateView(everything=True)
        return PrivateView(namespaces=tuple(sorted(namespaces)), owners=tuple(sorted(set(namespaces.values()))))
    whole = sorted(v for kind, v in ident.scopes if kind == "org" and (ident.is_admin or v in namespaces))
    owners = sorted({namespaces[v] for v in whole if v in namespaces})
    repos = sorted(
        v for kind, v in ident.scopes if kind == "repo" and (ident.is_admin or v.split("/", 1)[0] in namespaces)
    )
    return PrivateView(namespaces=tuple(whole), owners=tuple(owners), repos=tuple(repos))


def search_viewer(ident: Identity | None) -> PrivateView | None:
    """The ``viewer`` of the catalogue's searches and lookups (None: anonymous)."""
    return None if ident is None else private_view(ident)


__all__ = ["ACTIONS", "ROLES", "PrivateView", "RepoRef", "allowed", "in_scope", "private_view", "role_in", "search_viewer"]
