"""Users, bearer tokens and signed upload URLs.

Tokens look like ``lh_<43 url-safe characters>`` (32 random bytes). Only their SHA-256 is stored
(``tokens.token_hash``, the registry's table) with a short display prefix (``lh_ab12``); the
token itself is shown once, by ``lorahub token create``. A token belongs to one user and grants
read access to what that user may see and, unless it is read-only, write access to the user's
namespace.

LFS uploads are ``PUT`` to a URL the server hands out in the LFS batch answer; the Hub client
sends no ``Authorization`` header there, so the URL carries its own proof: an HMAC-SHA256 over
(repo primary key, repo name, oid, size, expiry, user) with a server secret kept in
``hub_secrets``. Such a URL is valid for one object, one repo and a short time
(:data:`UPLOAD_URL_TTL_S`); repo primary keys are never reused, and the name is signed too, so
the URL of a deleted repo does not work for a new repo of the same name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from lorahub.errors import NotFoundError, RegistryError, UsageError
from lorahub.registry.database import utcnow

from .errors import Unauthorized
from .names import check_user_name

if TYPE_CHECKING:  # pragma: no cover
    from sqlmodel import Session

    from lorahub.registry.database import Raw, Sessions
    from lorahub.registry.tables import Token, User

# SQLAlchemy, sqlmodel and the tables are imported inside the functions that write or run ORM
# queries: ``lorahub token list`` reads on a driver connection and starts without them.

TOKEN_PREFIX = "lh_"
UPLOAD_URL_TTL_S = 3600
#: ``tokens.last_used_at`` is written at most this often per token.
LAST_USED_EVERY_S = 60.0

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


@dataclass(frozen=True)
class Identity:
    """Who a token speaks for. What they may do is decided by :func:`.access.allowed` alone."""

    user_id: int
    name: str
    can_write: bool
    token_id: int
    is_admin: bool = False
    #: ``(organisation name, organisation id, role)`` of every membership.
    orgs: tuple[tuple[str, int, str], ...] = ()
    #: ``(kind, name)`` pairs a fine-grained token is limited to (``repo``: ``ns/name``, ``org``: a
    #: namespace; lower case), None for a token limited only by its user's rights.
    scopes: tuple[tuple[str, str], ...] | None = None


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and len(value) > len(TOKEN_PREFIX) + 20


def get_or_create_user(session: Session, name: str) -> User:
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError
    from sqlmodel import select

    from lorahub.registry.tables import User

    check_user_name(name)
    user = session.exec(select(User).where(sa.func.lower(User.name) == name.lower())).first()
    if user is not None:
        return user
    user = User(name=name)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # created concurrently
        session.rollback()
        user = session.exec(select(User).where(sa.func.lower(User.name) == name.lower())).one()
    return user


def create_token(
    session: Session,
    user_name: str,
    *,
    write: bool = True,
    name: str = "",
    expires_in_days: float | None = None,
    repos: list[str] | tuple[str, ...] = (),
    orgs: list[str] | tuple[str, ...] = (),
) -> tuple[str, Token, User]:
    """Create (and commit) a token for ``user_name``, creating the user if needed.

    ``repos`` (``ns/name``) and ``orgs`` (an organisation, or the user's own name for all of the
    user's repos) make it fine-grained: it acts only there (see :mod:`.access`).
    Returns ``(token, row, user)``; ``token`` is the only copy of the secret.
    """
    from sqlmodel import select

    from lorahub.registry.tables import Org, Token, TokenScope, User, hash_token

    from .names import check_namespace, check_repo_name

    scopes: set[tuple[str, str]] = set()
    for repo in repos:
        ns, sep, rname = repo.partition("/")
        if not sep:
            raise UsageError(f"--repo {repo[:100]!r}: expected NAMESPACE/NAME")
        check_namespace(ns)
        check_repo_name(rname)
        scopes.add(("repo", f"{ns.lower()}/{rname.lower()}"))
    user = get_or_create_user(session, user_name)
    if session.get(Org, user.id) is not None:
        raise RegistryError(f"'{user.name}' is an organisation: tokens are issued to its members")
    for org in orgs:
        check_namespace(org)
        if org.lower() != user.name.lower():
            found = session.exec(
                select(User).join(Org, Org.id == User.id).where(sa_lower(User.name) == org.lower())
            ).first()
            if found is None:
                raise NotFoundError(f"no organisation named '{org[:100]}'")
        scopes.add(("org", org.lower()))
    token = generate_token()
    row = Token(
        user_id=user.id,
        name=name[:96],
        token_hash=hash_token(token),
        token_prefix=token[:7],
        can_write=write,
        expires_at=(utcnow() + timedelta(days=expires_in_days)) if expires_in_days else None,
    )
    session.add(row)
    session.flush()
    for kind, value in sorted(scopes):
        session.add(TokenScope(token_id=row.id, kind=kind, name=value))
    session.commit()
    session.refresh(row)
    session.refresh(user)
    return token, row, user


def sa_lower(column: Any) -> Any:
    import sqlalchemy as sa

    return sa.func.lower(column)


def list_tokens(raw: Raw, user_name: str | None = None) -> list[Any]:
    """Every token (of ``user_name`` only, compared case-insensitively), oldest first, read on ``raw``
    (a :class:`~lorahub.registry.database.Raw` reader): rows of ``id, user_name, name, token_prefix,
    can_write, created_at, last_used_at, expires_at, revoked_at`` (times as stored: see
    :func:`lorahub.registry.database.as_datetime`)."""
    params: dict[str, Any] = {}
    where = ""
    if user_name:
        where = "WHERE lower(u.name) = :user "
        params["user"] = user_name.lower()
    return raw.all(
        "SELECT t.id, u.name AS user_name, t.name, t.token_prefix, t.can_write, t.created_at, t.last_used_at, "
        f"t.expires_at, t.revoked_at FROM tokens t JOIN users u ON u.id = t.user_id {where}ORDER BY t.id",
        params,
    )


def token_scopes(raw: Raw, token_ids: list[int]) -> dict[int, list[str]]:
    """The scopes of these tokens, as ``repo:ns/name`` and ``org:name``, read on ``raw``."""
    if not token_ids:
        return {}
    out: dict[int, list[str]] = {}
    for r in raw.all(
        "SELECT token_id, kind, name FROM token_scopes WHERE token_id IN :ids ORDER BY token_id, kind, name",
        {"ids": list(token_ids)},
    ):
        out.setdefault(int(r[0]), []).append(f"{r[1]}:{r[2]}")
    return out


def revoke_token(session: Session, token_or_id: str) -> tuple[Token, User]:
    """Revoke by the token itself or by its id (as ``lorahub token list`` shows it)."""
    from sqlmodel import select

    from lorahub.registry.tables import Token, User, hash_token

    value = token_or_id.strip()
    if looks_like_token(value):
        stmt = select(Token, User).join(User, User.id == Token.user_id).where(Token.token_hash == hash_token(value))
    elif value.isdigit():
        stmt = select(Token, User).join(User, User.id == Token.user_id).where(Token.id == int(value))
    else:
        raise UsageError(f"{value[:20]!r} is neither a token (lh_...) nor a token id (a number)")
    found = session.exec(stmt).first()
    if found is None:
        raise NotFoundError("no such token")
    tok, user = found
    if tok.revoked_at is None:
        tok.revoked_at = utcnow()
        session.add(tok)
        session.commit()
        session.refresh(tok)
    return tok, user


class Authenticator:
    """Turns an ``Authorization: Bearer ...`` header into an :class:`Identity`, and signs upload
    URLs with the server's key (:attr:`upload_signer`). Opens its own sessions."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self._last_used: dict[int, float] = {}
        self._lock = threading.Lock()
        self._signer: UrlSigner | None = None
        self._signer_lock = threading.Lock()

    def identify(self, header: str | None) -> Identity | None:
        """``None`` for anonymous requests; :class:`Unauthorized` for a bad token."""
        if not header:
            return None
        with self.sessions.read() as session:
            return self._identify(session, header)

    @property
    def upload_signer(self) -> UrlSigner:
        """The signer of upload URLs, its key read (or created) on first use."""
        if self._signer is None:
            with self._signer_lock:
                if self._signer is None:
                    self._signer = UrlSigner(load_secret(self.sessions))
        return self._signer

    def _identify(self, session: Session, header: str) -> Identity:
        from sqlmodel import select

        from lorahub.registry.tables import Token, User, hash_token

        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise _invalid()
        row = session.exec(
            select(Token, User).join(User, User.id == Token.user_id).where(Token.token_hash == hash_token(value))
        ).first()
        if row is None:
            raise _invalid()
        tok, user = row
        now = utcnow()
        if tok.revoked_at is not None or (tok.expires_at is not None and tok.expires_at <= now):
            raise _invalid()
        self._touch(session, tok.id, now)
        return identity_of(session, tok, user)

    def _touch(self, session: Session, token_id: int, now: datetime) -> None:
        from lorahub.registry import waits

        mono = time.monotonic()
        with self._lock:
            last = self._last_used.get(token_id)
            if last is not None and mono - last < LAST_USED_EVERY_S:
                return
            # A write may wait for SQLite's write lock: not in the server's event loop (it runs the request
            # again in a worker thread, which writes it then).
            waits.check("the token's last use is to be written")
            self._last_used[token_id] = mono
        import sqlalchemy as sa

        from lorahub.registry.tables import Token

        try:
            session.execute(sa.update(Token).where(Token.id == token_id).values(last_used_at=now))
            session.commit()
        except Exception:  # noqa: BLE001 - bookkeeping must never fail a request
            session.rollback()


def identity_of(session: Session, tok: Token, user: User) -> Identity:
    """The :class:`Identity` of a valid token: its user, memberships and scopes, read now."""
    import sqlalchemy as sa

    from lorahub.registry.tables import OrgMember, TokenScope, User

    org = sa.orm.aliased(User)
    orgs = session.execute(
        sa.select(org.name, OrgMember.org_id, OrgMember.role)
        .join(org, org.id == OrgMember.org_id)
        .where(OrgMember.user_id == user.id)
        .order_by(org.name)
    ).all()
    scopes = session.execute(
        sa.select(TokenScope.kind, TokenScope.name).where(TokenScope.token_id == tok.id).order_by(TokenScope.kind, TokenScope.name)
    ).all()
    return Identity(
        user_id=user.id,
        name=user.name,
        can_write=bool(tok.can_write),
        token_id=tok.id,
        is_admin=bool(user.is_admin),
        orgs=tuple((str(n), int(i), str(r)) for n, i, r in orgs),
        scopes=tuple((str(k), str(n)) for k, n in scopes) or None,
    )


def identity_for_token_id(session: Session, token_id: int) -> Identity | None:
    """The identity of token ``token_id`` if it is still valid (not revoked, not expired), else None."""
    from lorahub.registry.tables import Token, User

    tok = session.get(Token, token_id)
    if tok is None or tok.revoked_at is not None or (tok.expires_at is not None and tok.expires_at <= utcnow()):
        return None
    user = session.get(User, tok.user_id)
    return None if user is None else identity_of(session, tok, user)


def _invalid() -> Unauthorized:
    return Unauthorized(INVALID_CREDENTIALS, headers={"X-Error-Message": INVALID_CREDENTIALS})


# -- server secret and signed URLs ------------------------------------------------------------


def load_secret(sessions: Any, name: str = "upload-url-key") -> bytes:
    """The named server secret, created on first use (shared by every server process). ``sessions``: the
    :class:`~lorahub.registry.database.Sessions` to read it with, and to create it with when it is missing: in
    a write transaction (SQLite: ``BEGIN IMMEDIATE``, which waits for the write lock). Created inside the read
    transaction that found it missing, as it was, SQLite refused the insert at once ("database is locked", a
    503) whenever another connection had written since that read began: a fresh server's first LFS uploads
    beside other commits."""
    from sqlalchemy.exc import IntegrityError

    from .tables import HubSecret

    with sessions.read() as s:
        row = s.get(HubSecret, name)
        if row is not None:
            return bytes.fromhex(row.value)
    from lorahub.registry import waits

    waits.check(f"the server secret {name!r} is to be created")  # BEGIN IMMEDIATE waits for the write lock
    with sessions.write() as s:
        row = s.get(HubSecret, name)
        if row is None:
            s.add(HubSecret(name=name, value=secrets.token_hex(32)))
            try:
                s.commit()
            except IntegrityError:  # PostgreSQL: another server process created it first
                s.rollback()
            row = s.get(HubSecret, name)
        return bytes.fromhex(row.value)


class UrlSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, *fields: object) -> str:
        msg = "\n".join(str(f) for f in fields).encode("utf-8")
        mac = hmac.new(self._key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")

    def check(self, signature: str, *fields: object) -> bool:
        return hmac.compare_digest(self.sign(*fields), signature or "")

    def upload_fields(
        self, repo_pk: int, repo_key: str, oid: str, size: int, user_id: int, ttl_s: int = UPLOAD_URL_TTL_S
    ) -> dict[str, str]:
        """Query fields of an upload URL: signed over the repo's primary key and its name
        (``type/namespace/name``), the object, its size, the user and the expiry."""
        exp = int(time.time()) + ttl_s
        sig = self.sign("upload", repo_pk, repo_key, oid, size, user_id, exp)
        return {"size": str(size), "exp": str(exp), "u": str(user_id), "sig": sig}
