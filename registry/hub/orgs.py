"""Organisations and their members (``lorahub org``, and the member routes of the Hub API).

An organisation is a namespace held in ``users`` (marked by a row of ``orgs``): users and
organisations never share a name, and an organisation's repos have it as owner, as a user's repos
have the user. Members have one role each (:data:`.access.ROLES`). The operator manages
organisations with ``lorahub org`` (on the database: no actor); through the API, an actor needs
:func:`.access.allowed` ``manage-members`` on the organisation.

Writers take a SQLModel session and commit; :func:`list_members` reads on a
:class:`~lorahub.registry.database.Raw` reader (``lorahub org list`` starts without SQLAlchemy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorahub.errors import NotFoundError, RegistryError, UsageError

from .access import ROLES, RepoRef, allowed
from .errors import BadRequest, Forbidden, HubApiError, Unauthorized
from .names import check_user_name

if TYPE_CHECKING:  # pragma: no cover
    from sqlmodel import Session

    from lorahub.registry.database import Raw, Sessions
    from lorahub.registry.tables import User

    from .auth import Identity


def _user(session: Session, name: str) -> User | None:
    import sqlalchemy as sa
    from sqlmodel import select

    from lorahub.registry.tables import User

    return session.exec(select(User).where(sa.func.lower(User.name) == name.lower())).first()


def is_org(session: Session, user_id: int) -> bool:
    from lorahub.registry.tables import Org

    return session.get(Org, user_id) is not None


def find_org(session: Session, name: str) -> User:
    """The organisation's ``users`` row; :class:`NotFoundError` when there is none of that name."""
    row = _user(session, name)
    if row is None or not is_org(session, row.id):
        raise NotFoundError(f"no organisation named '{name[:100]}'")
    return row


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"role {role[:40]!r}: one of {', '.join(ROLES)}")
    return role


def _check_actor(actor: Identity | None, org: str) -> None:
    if actor is None:
        raise Unauthorized("authentication required: send a write token (Authorization: Bearer lh_...)")
    if not allowed(actor, "manage-members", RepoRef(namespace=org)):
        raise Forbidden(f"you ({actor.name}) cannot manage the members of '{org}': an admin of it can")


def create_org(session: Session, name: str, *, admin: str | None = None) -> tuple[User, User | None]:
    """Create the organisation ``name`` (a name no user or organisation has), with ``admin`` (a user,
    created if needed) as its first admin. Returns ``(org, admin user or None)``."""
    from sqlalchemy.exc import IntegrityError

    from lorahub.registry.tables import Org, OrgMember, User

    check_user_name(name)
    if _user(session, name) is not None:
        raise RegistryError(f"the name '{name}' is taken (by a user or an organisation)")
    org = User(name=name)
    session.add(org)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise RegistryError(f"the name '{name}' is taken (by a user or an organisation)") from None
    session.add(Org(id=org.id))
    session.flush()
    member = None
    if admin:
        member = _member_user(session, admin)
        session.add(OrgMember(org_id=org.id, user_id=member.id, role="admin"))
    session.commit()
    session.refresh(org)
    if member is not None:
        session.refresh(member)
    return org, member


def _member_user(session: Session, name: str, *, create: bool = True) -> User:
    from .auth import get_or_create_user

    if create:
        user = get_or_create_user(session, name)
    else:
        user = _user(session, name)
        if user is None:
            raise NotFoundError(f"no user named '{name[:100]}'")
    if is_org(session, user.id):
        raise RegistryError(f"'{user.name}' is an organisation: members are users")
    return user


def set_member(session: Session, org: str, user: str, role: str, *, actor: Identity | None = None,
               as_operator: bool = False) -> tuple[User, User, str | None]:
    """Add ``user`` to ``org`` with ``role``, or change their role. The operator (``as_operator``:
    ``lorahub org add``) creates the user if needed; otherwise ``actor`` must be allowed
    ``manage-members`` on the organisation and the user must exist.
    Returns ``(org, user, previous role or None)``."""
    from lorahub.registry.tables import OrgMember

    check_role(role)
    if not as_operator:
        _check_actor(actor, org)
    org_row = find_org(session, org)
    member = _member_user(session, user, create=as_operator)
    row = session.get(OrgMember, (org_row.id, member.id))
    previous = row.role if row is not None else None
    if row is None:
        session.add(OrgMember(org_id=org_row.id, user_id=member.id, role=role))
    else:
        row.role = role
        session.add(row)
    session.commit()
    return org_row, member, previous


def remove_member(session: Session, org: str, user: str, *, actor: Identity | None = None,
                  as_operator: bool = False) -> tuple[User, User, str]:
    """Remove ``user`` from ``org``; ``(org, user, the role they had)``. :class:`NotFoundError` when
    they are no member."""
    from lorahub.registry.tables import OrgMember

    if not as_operator:
        _check_actor(actor, org)
    org_row = find_org(session, org)
    member = _user(session, user)
    row = session.get(OrgMember, (org_row.id, member.id)) if member is not None else None
    if row is None or member is None:
        raise NotFoundError(f"'{user[:100]}' is no member of '{org_row.name}'")
    role = row.role
    session.delete(row)
    session.commit()
    return org_row, member, role


def list_members(raw: Raw, *, org: str | None = None, user: str | None = None) -> list[Any]:
    """Every organisation with its members (``org``: only that one; ``user``: only the organisations
    ``user`` is a member of), read on ``raw``: rows of ``org, member, role`` by organisation then
    member; an organisation without members has one row with ``member`` and ``role`` None."""
    where, params = [], {}
    if org:
        where.append("lower(o.name) = :org")
        params["org"] = org.lower()
    if user:
        where.append("lower(u.name) = :user")
        params["user"] = user.lower()
    cond = f"WHERE {' AND '.join(where)} " if where else ""
    join = "JOIN" if user else "LEFT JOIN"
    return raw.all(
        "SELECT o.name AS org, u.name AS member, m.role FROM orgs g JOIN users o ON o.id = g.id "
        f"{join} org_members m ON m.org_id = g.id {join} users u ON u.id = m.user_id {cond}"
        "ORDER BY lower(o.name), lower(u.name)",
        params,
    )


class Orgs:
    """The member operations of the Hub API, each in a session of its own. Errors are the API's:
    an organisation that does not exist, or whose members the caller may not see, is a ``404``."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def members(self, ident: Identity | None, org: str) -> list[tuple[str, str]]:
        """``(user, role)`` of every member; only members (any role) and server admins see them."""
        import sqlalchemy as sa

        from lorahub.registry.tables import OrgMember, User

        with self.sessions.read() as s:
            org_row = self._org(s, org, ident)
            rows = s.execute(
                sa.select(User.name, OrgMember.role).join(OrgMember, OrgMember.user_id == User.id)
                .where(OrgMember.org_id == org_row.id).order_by(sa.func.lower(User.name))
            ).all()
        return [(str(n), str(r)) for n, r in rows]

    def set_role(self, ident: Identity | None, org: str, user: str, role: str) -> tuple[str, str | None]:
        if ident is None:
            raise Unauthorized("authentication required: send a write token (Authorization: Bearer lh_...)")
        with self.sessions.write() as s:
            org_row = self._org(s, org, ident)
            try:
                _, member, previous = set_member(s, org_row.name, user, _role(role), actor=ident)
            except (UsageError, RegistryError, BadRequest) as exc:
                raise BadRequest(str(exc)) from None
            except NotFoundError as exc:
                raise HubApiError(str(exc), status=404) from None
            return member.name, previous

    def remove(self, ident: Identity | None, org: str, user: str) -> str:
        if ident is None:
            raise Unauthorized("authentication required: send a write token (Authorization: Bearer lh_...)")
        with self.sessions.write() as s:
            org_row = self._org(s, org, ident)
            try:
                _, member, role = remove_member(s, org_row.name, user, actor=ident)
            except NotFoundError as exc:
                raise HubApiError(str(exc), status=404) from None
            return role

    @staticmethod
    def _org(s: Session, org: str, ident: Identity | None) -> User:
        """The organisation, if ``ident`` may see its members (a member, any role; a server admin)."""
        try:
            row = find_org(s, org)
        except NotFoundError:
            row = None
        if row is None or not allowed(ident, "read", RepoRef(namespace=org, private=True)):
            raise HubApiError(f"no organisation named '{org[:100]}' (or you are no member of it)", status=404)
        return row


def _role(role: object) -> str:
    if not isinstance(role, str) or role not in ROLES:
        raise BadRequest(f"'role' must be one of {', '.join(ROLES)}")
    return role


__all__ = ["Orgs", "check_role", "create_org", "find_org", "is_org", "list_members", "remove_member", "set_member"]
