"""The registry's database: URLs, engines, sessions, write transactions and fast raw reads.

* ``LORAHUB_DATABASE_URL`` chooses the database; default SQLite at
  ``$LORAHUB_HOME/registry.sqlite``.
* SQLite connections use WAL, a busy timeout and foreign keys, and begin their
  transactions explicitly (``BEGIN``, or ``BEGIN IMMEDIATE`` for
  :func:`write_connection`) so that concurrent writers wait instead of failing.
* PostgreSQL: ``postgresql+psycopg://user@host:5432/db`` (psycopg 3);
  ``postgresql://`` and ``postgres://`` are read as the same.
* Fast reads (:class:`Raw`): the search path runs several small queries per request, and
  SQLAlchemy's statement and result machinery costs about as much as SQLite itself there, so
  reads that must be fast go straight to the driver's cursor. Their SQL is written once with
  ``:name`` parameters (``IN :name`` for a list) and adapted to the driver's style. A
  :class:`Raw` runs on a pooled SQLAlchemy connection (the server) or on a driver connection
  of its own (:func:`connect_driver`: a one-shot command, which then never imports SQLAlchemy;
  importing SQLAlchemy costs more than a whole search).
* Nothing here imports SQLAlchemy at module level: URLs are parsed by :func:`parse_url` (the
  grammar of SQLAlchemy's ``make_url``, which tests/registry/test_fast_start.py compares it with).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import namedtuple
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote

from lorahub.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection, Engine

ENV_URL = "LORAHUB_DATABASE_URL"
SQLITE_FILENAME = "registry.sqlite"
#: How long a SQLite connection waits for a lock before it gives up (milliseconds); overridden by
#: ``$LORAHUB_SQLITE_BUSY_TIMEOUT_MS`` (read when an engine is made).
BUSY_TIMEOUT_MS = 30_000
ENV_BUSY_TIMEOUT = "LORAHUB_SQLITE_BUSY_TIMEOUT_MS"


def busy_timeout_ms() -> int:
    """The SQLite busy timeout in milliseconds (``$LORAHUB_SQLITE_BUSY_TIMEOUT_MS``, else :data:`BUSY_TIMEOUT_MS`)."""
    raw = os.environ.get(ENV_BUSY_TIMEOUT, "").strip()
    if not raw:
        return BUSY_TIMEOUT_MS
    if not raw.isdigit():
        raise UsageError(f"{ENV_BUSY_TIMEOUT} must be a number of milliseconds, not {raw!r}")
    return int(raw)


def default_url() -> str:
    from lorahub.config import home

    return f"sqlite:///{home() / SQLITE_FILENAME}"


@dataclass(frozen=True)
class DbUrl:
    """A database URL's parts, as SQLAlchemy's ``URL`` holds them (components unquoted)."""

    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: tuple[tuple[str, str], ...] = field(default=())

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql`` (the part before ``+driver``)."""
        return self.drivername.split("+", 1)[0]

    def render(self, hide_password: bool = True) -> str:
        """The URL as SQLAlchemy's ``URL.render_as_string`` writes it."""
        s = self.drivername + "://"
        if self.username is not None:
            s += quote(self.username, safe=" +")
            if self.password is not None:
                s += ":" + ("***" if hide_password else quote(self.password, safe=" +"))
            s += "@"
        if self.host is not None:
            s += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            s += f":{self.port}"
        if self.database is not None:
            s += "/" + quote(self.database, safe=" +/")
        if self.query:
            s += "?" + "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(self.query, key=lambda kv: kv[0]))
        return s


# The pattern of SQLAlchemy's make_url (sqlalchemy/engine/url.py, _parse_url).
_URL_RE = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


@lru_cache(maxsize=64)
def parse_url(raw: str) -> DbUrl:
    """``raw`` split as SQLAlchemy's ``make_url`` splits it; UsageError when it is not a URL. Cached (a frozen
    result; a server asked it several times a request for the same URL)."""
    m = _URL_RE.match(raw)
    port = m.group("port") if m else None
    if m is None or (port and not port.isdigit()):
        raise UsageError(f"not a database URL: {raw!r}", hint="e.g. sqlite:///path/registry.sqlite or postgresql://user@host/db")
    # Repeated keys keep their order among themselves (a stable sort by key, as SQLAlchemy's).
    query = tuple(parse_qsl(m.group("query"))) if m.group("query") is not None else ()
    username, password, database = (unquote(v) if v is not None else None
                                    for v in m.group("username", "password", "database"))
    return DbUrl(m.group("name"), username, password, m.group("ipv4host") or m.group("ipv6host"),
                 int(port) if port else None, database, query)


def _normalised(raw: str) -> DbUrl:
    parsed = parse_url(raw)
    name = parsed.drivername
    if name in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        return DbUrl("postgresql+psycopg", *_rest(parsed))
    if name in ("sqlite", "sqlite+pysqlite"):
        return DbUrl("sqlite", *_rest(parsed))
    raise UsageError(f"unsupported database {name!r}", hint="use sqlite:///... or postgresql://...")


def _rest(u: DbUrl) -> tuple[Any, ...]:
    return u.username, u.password, u.host, u.port, u.database, u.query


def database_url(url: str | None = None) -> str:
    """The URL to use: ``url``, else ``$LORAHUB_DATABASE_URL``, else the SQLite default; normalised."""
    raw = url or os.environ.get(ENV_URL, "").strip() or default_url()
    return _normalised(raw).render(hide_password=False)


def display_url(url: str) -> str:
    """The URL with its password hidden (for messages and logs)."""
    return parse_url(url).render(hide_password=True)


def is_sqlite(url_or_engine: str | Engine | Connection) -> bool:
    if isinstance(url_or_engine, str):
        return parse_url(url_or_engine).backend == "sqlite"
    return url_or_engine.dialect.name == "sqlite"


def _sqlite_file(parsed: DbUrl, *, create_folder: bool = True) -> str | None:
    """The file of a SQLite URL (its folder created); None for an in-memory database."""
    db = parsed.database
    if db and db != ":memory:" and not db.startswith("file:"):
        if create_folder:
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return db
    return None


#: The semantic search's cache file beside a SQLite database (``registry.sqlite-vectors``, registry/semantic.py).
VECTOR_CACHE_SUFFIX = "-vectors"


def database_files(url: str | None = None) -> list[Path]:
    """The files of the SQLite database at ``url`` (see :func:`database_url`), its journals and the semantic
    search's cache file included; none for PostgreSQL or an in-memory database. A host that serves the web UI
    blocks them from its visitors."""
    parsed = parse_url(database_url(url))
    if parsed.backend != "sqlite":
        return []
    db = _sqlite_file(parsed, create_folder=False)
    if db is None:
        return []
    path = Path(db).expanduser()
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal", VECTOR_CACHE_SUFFIX))]


#: psycopg's ``prepare_threshold`` on every PostgreSQL connection: a statement is prepared on the server only
#: where the code asks (``Raw.all(..., prepare=True)``: statements whose best plan is the same whatever the
#: values), never because it ran often: a generic plan cannot know how rare a word is, and walks the
#: popularity index over every row for a rare one. (``None`` would turn off ``prepare=True`` as well: psycopg
#: then prepares nothing, which is what it did here until 2026-12-06.)
PREPARE_ONLY_ASKED = 1 << 30
#: Run first on every PostgreSQL connection lorahub opens (the engine's, a command's driver connection, the server's
#: event-loop connections): no JIT compilation. A registry's statements are short and bounded (LIMITs), but a plan
#: the planner mis-costs goes over ``jit_above_cost`` and compiles for 15-20 ms to run in 1: a filter token probed
#: for each entry of a word's tier, the probes' selectivity unknown to the planner, was estimated at 114,000 and
#: took 19 ms, 18.5 of them compiling (100k adapters, 2026-12-07). A ``SET`` rather than the ``options`` startup
#: parameter, which connection poolers such as PgBouncer refuse unless told to ignore it.
PG_SESSION_SQL = "SET jit = off"


#: A pooled PostgreSQL connection is pinged when it is checked out after resting this many seconds.
PING_IDLE_S = 1.0


def make_engine(url: str | None = None, *, echo: bool = False) -> Engine:
    """An engine for ``url`` (see :func:`database_url`)."""
    from sqlalchemy import create_engine

    url = database_url(url)
    parsed = parse_url(url)
    if parsed.backend == "sqlite":
        _sqlite_file(parsed)
        timeout_ms = busy_timeout_ms()
        # No cap on connections (SQLite has no server to protect; beyond the pool's 5 they close when returned):
        # a checkout never waits, and ``lorahub serve`` reads in its event loop (registry/waits.py), where a
        # wait for another request's connection would hold every request.
        engine = create_engine(url, echo=echo, max_overflow=-1,
                               connect_args={"timeout": timeout_ms / 1000, "check_same_thread": False})
        _sqlite_events(engine, timeout_ms)
        return engine
    _need_psycopg()
    engine = create_engine(url, echo=echo, pool_size=10, max_overflow=20,
                           connect_args={"prepare_threshold": PREPARE_ONLY_ASKED})
    _pg_session(engine)
    _ping_when_idle(engine)
    return engine


def _pg_session(engine: Engine) -> None:
    """:func:`_set_up_session` on each new connection of ``engine``."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _setup(dbapi_connection: Any, record: Any) -> None:
        _set_up_session(dbapi_connection)


def _set_up_session(conn: Any) -> None:
    """:data:`PG_SESSION_SQL` on psycopg connection ``conn``, outside any transaction (one a pool then rolled
    back would undo it)."""
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute(PG_SESSION_SQL)
    finally:
        conn.autocommit = autocommit


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection on checkout only when it has rested :data:`PING_IDLE_S` (SQLAlchemy's
    ``pool_pre_ping`` pings on every checkout: a round trip on every request of a busy server, one in five
    of a hybrid search's). A connection that fails the ping is replaced before it is used; one that died
    within the last second fails its statement, and SQLAlchemy then discards the pool's connections (a
    restarted server costs the requests in flight, and at most one more)."""
    from sqlalchemy import event, exc

    @event.listens_for(engine, "checkin")
    def _rested(dbapi_connection: Any, record: Any) -> None:
        record.info["lorahub_checkin"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("lorahub_checkin")
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return  # new (just connected) or busy
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as e:  # noqa: BLE001 - any failure: the connection is replaced
            raise exc.DisconnectionError(str(e)) from e


def _need_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        from lorahub.errors import MissingDependencyError

        raise MissingDependencyError("psycopg", "postgres") from None
    return psycopg


def can_connect_driver(url: str) -> bool:
    """Whether :func:`connect_driver` opens ``url`` (SQLite files without URL options, and PostgreSQL)."""
    parsed = parse_url(url)
    if parsed.backend == "postgresql":
        return len({k for k, _ in parsed.query}) == len(parsed.query)  # not several hosts
    return _sqlite_file(parsed, create_folder=False) is not None and not parsed.query


def connect_driver(url: str) -> Any:
    """A DB-API connection to ``url`` opened by the driver itself, set up as the engine's are
    (SQLite: the same pragmas; PostgreSQL: prepared statements only where asked), in autocommit: for the reads
    of a one-shot command, which then never imports SQLAlchemy. See :func:`can_connect_driver`."""
    parsed = parse_url(database_url(url))
    if parsed.backend == "sqlite":
        import sqlite3

        if not can_connect_driver(url):
            raise UsageError(f"{display_url(url)}: not a database a command can open directly")
        path = _sqlite_file(parsed)
        timeout_ms = busy_timeout_ms()
        conn = sqlite3.connect(path, timeout=timeout_ms / 1000, check_same_thread=False)
        _sqlite_setup(conn, timeout_ms)
        return conn
    if not can_connect_driver(url):
        raise UsageError(f"{display_url(url)}: not a database a command can open directly")
    psycopg = _need_psycopg()
    conn = psycopg.connect(**driver_args(url))
    try:
        _set_up_session(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def driver_args(url: str) -> dict[str, Any]:
    """psycopg's arguments for a connection to PostgreSQL ``url`` set up as the engine's are (prepared
    statements only where asked), in autocommit: the connection arguments SQLAlchemy's dialect passes
    (URL.translate_connect_args + the query)."""
    parsed = parse_url(database_url(url))
    args: dict[str, Any] = {k: v for k, v in (("host", parsed.host), ("port", parsed.port), ("user", parsed.username),
                                              ("password", parsed.password), ("dbname", parsed.database)) if v is not None}
    for key, value in parsed.query:
        args[key] = value
    return {"autocommit": True, "prepare_threshold": PREPARE_ONLY_ASKED, **args}


def db_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of a failed database call, from whichever layers this process has
    imported (the drivers, SQLAlchemy): a layer never imported raised nothing."""
    out: list[type[BaseException]] = []
    for module, name in (("sqlite3", "Error"), ("psycopg", "Error"), ("sqlalchemy.exc", "DBAPIError")):
        mod = sys.modules.get(module)
        if mod is not None:
            out.append(getattr(mod, name))
    return tuple(out)


def _sqlite_setup(dbapi_conn: Any, timeout_ms: int) -> None:
    """The settings of every SQLite connection (the engine's and :func:`connect_driver`'s)."""
    # pysqlite's own transaction handling is switched off: SQLAlchemy's
    # "begin" event below emits BEGIN, which makes DDL transactional and
    # lets writers take the lock up front (BEGIN IMMEDIATE).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
    try:
        cur.execute("PRAGMA journal_mode = WAL")
    except Exception:  # noqa: BLE001 - read-only folder or :memory:: keep the default journal
        pass
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    # Statement journals (a statement whose triggers write other tables keeps one) in memory, not temporary
    # files: importing 20k records 13.0 -> 12.6 s, and 14.5 -> 12.7-13.3 s with migration 0116's triggers.
    cur.execute("PRAGMA temp_store = MEMORY")
    cur.close()


def _sqlite_events(engine: Engine, timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # noqa: ANN001
        _sqlite_setup(dbapi_conn, timeout_ms)

    @event.listens_for(engine, "begin")
    def _begin(conn):  # noqa: ANN001
        mode = "BEGIN IMMEDIATE" if conn.get_execution_options().get("lorahub_write") else "BEGIN"
        conn.exec_driver_sql(mode)


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction (SQLite: ``BEGIN IMMEDIATE``), committed on success."""
    with engine.connect() as conn:
        conn = conn.execution_options(lorahub_write=True)
        with conn.begin():
            yield conn


class Sessions:
    """ORM sessions (sqlmodel) on one engine, for the objects that own their sessions (the Hub's
    operations, see :mod:`lorahub.registry.hub`): :meth:`read` for reads, :meth:`write` for a write
    transaction that takes SQLite's write lock up front (``BEGIN IMMEDIATE``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(lorahub_write=True)

    def read(self) -> Any:  # a sqlmodel Session, used as a context manager
        from sqlmodel import Session

        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Any]:
        """A session whose transaction takes SQLite's write lock up front (``BEGIN IMMEDIATE``)."""
        from sqlmodel import Session

        with Session(self._write_engine, expire_on_commit=False) as s:
            yield s


def insert_ignore(session: Any, model: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` of ``rows`` into ``model``'s table, on either backend."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(model.__table__).values(rows).on_conflict_do_nothing(index_elements=keys))


def is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked" (or "busy"): another writer held the lock past the busy timeout."""
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


def retry_busy(exc: BaseException, started: float) -> bool:
    """Try again after SQLite's "database is locked"? Only while less than one busy timeout has passed:
    a lock held past a whole timeout (a stuck writer) fails the request with 503 instead of waiting it
    out again and again."""
    return is_busy(exc) and time.monotonic() - started < busy_timeout_ms() / 1000


#: Most values in one ``IN (...)`` list (SQLite's parameter limit, PostgreSQL's plan sizes).
CHUNK = 500


def chunks(seq: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


# --------------------------------------------------------------------------------------------
# Fast reads on the DB-API cursor

_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_IN_LIST = re.compile(r"\bIN :(\w+)")


@lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """``sql`` with its ``:name`` parameters (and ``IN :name`` lists) in psycopg's style."""
    sql = _IN_LIST.sub(r"= ANY(:\1)", sql)
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


@lru_cache(maxsize=1)
def _json_each() -> bool:
    """Whether this SQLite has ``json_each`` (built in since 3.38; most older builds have JSON1 too)."""
    import sqlite3

    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return True


@lru_cache(maxsize=64)
def _url_key(url: Any) -> str:
    """A SQLAlchemy URL with its password hidden (:class:`Raw`'s ``key``; made once per engine's URL)."""
    return url.render_as_string(hide_password=True)


@lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> Any:
    return namedtuple("Row", names, rename=True)


class Raw:
    """Run read queries on a driver connection; rows are namedtuples.

    ``Raw(conn)`` reads on a SQLAlchemy connection's driver connection; ``Raw.on_driver(dbapi,
    url)`` on one from :func:`connect_driver`. ``dialect`` is ``sqlite`` or ``postgresql``;
    ``key`` names the database (its URL, password hidden)."""

    def __init__(self, conn: Connection) -> None:
        self.dbapi = conn.connection.dbapi_connection
        self.dialect = conn.dialect.name
        self.pg = self.dialect == "postgresql"
        self.key = _url_key(conn.engine.url)

    @staticmethod
    def key_of(engine: Engine) -> str:
        """The ``key`` of the readers on ``engine``'s connections."""
        return _url_key(engine.url)

    @classmethod
    def on_driver(cls, dbapi: Any, url: str) -> Raw:
        raw = cls.__new__(cls)
        raw.dbapi = dbapi
        raw.dialect = parse_url(url).backend
        raw.pg = raw.dialect == "postgresql"
        raw.key = display_url(url)
        return raw

    def all(self, sql: str, params: dict[str, Any] | None = None, *, prepare: bool = False) -> list[Any]:
        """Rows of ``sql``. ``prepare``: PostgreSQL keeps the statement prepared on this connection
        and, after a few runs, reuses a generic plan; only for statements whose best plan does not
        depend on the values (see :mod:`lorahub.registry.search`)."""
        params = dict(params or {})
        if self.pg:
            sql = pg_sql(sql)
        else:
            for name in _IN_LIST.findall(sql):
                values = list(params.pop(name))
                if len(values) > 1 and _json_each() and all(type(v) is int for v in values):
                    # One parameter, so one statement text whatever the count: the sqlite3 module's statement
                    # cache keeps it compiled (a list of 100 ids as 100 parameters was compiled every time).
                    params[name] = json.dumps(values)
                    sql = sql.replace(f"IN :{name}", f"IN (SELECT value FROM json_each(:{name}))")
                    continue
                keys = [f"{name}_{i}" for i in range(len(values))] or ["__none__"]
                params.update(zip(keys, values, strict=False))
                if not values:
                    params["__none__"] = None
                sql = sql.replace(f"IN :{name}", "IN (" + ", ".join(f":{k}" for k in keys) + ")")
        cur = self.dbapi.cursor()
        try:
            if self.pg:
                cur.execute(sql, params, prepare=prepare)
                return pg_rows(cur, cur.fetchall())
            cur.execute(sql, params)
            rows = cur.fetchall()
            if cur.description is None:
                return []
            kind = _row_type(tuple(d[0] for d in cur.description))
        finally:
            cur.close()
        return [kind._make(r) for r in rows]


def pg_rows(cur: Any, rows: list[tuple]) -> list[Any]:
    """``rows`` that psycopg cursor ``cur`` fetched, as namedtuples named by the result's columns (read from
    the result itself: psycopg's ``description`` builds a column object per column at each reading, 23 us
    for a page of results' 27 columns, against 2 us)."""
    res = cur.pgresult
    if res is None or not res.nfields:
        return []
    kind = _row_type(tuple(res.fname(i).decode() for i in range(res.nfields)))
    return [kind._make(r) for r in rows]


#: A reader lent to the code that runs in this context (:func:`lent_reader`): ``Registry.reading()`` of
#: the database it reads yields it instead of a connection of its own.
_lent: ContextVar[Raw | None] = ContextVar("lorahub_lent_reader", default=None)


@contextmanager
def lent_reader(raw: Raw) -> Iterator[None]:
    """Within (this context only), ``Registry.reading()`` of ``raw``'s database (its ``key``) reads on
    ``raw``: how ``lorahub serve`` runs a search's statements on a connection of its event loop
    (registry/server/pgloop.py)."""
    token = _lent.set(raw)
    try:
        yield
    finally:
        _lent.reset(token)


def lent() -> Raw | None:
    """The reader lent in this context (:func:`lent_reader`), if any."""
    return _lent.get()


def utcnow() -> datetime:
    """Naive UTC (stored as such on both backends)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(dt: datetime | None) -> str | None:
    """A stored time as the Hub's answers show it: ISO 8601 in UTC with milliseconds and ``Z``."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def as_datetime(value: Any) -> datetime | None:
    """SQLite hands DateTime columns back as text on the raw cursor."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


__all__ = [
    "BUSY_TIMEOUT_MS",
    "ENV_BUSY_TIMEOUT",
    "busy_timeout_ms",
    "chunks",
    "ENV_URL",
    "VECTOR_CACHE_SUFFIX",
    "database_files",
    "database_url",
    "default_url",
    "display_url",
    "insert_ignore",
    "is_busy",
    "is_sqlite",
    "make_engine",
    "DbUrl",
    "Raw",
    "Sessions",
    "can_connect_driver",
    "connect_driver",
    "db_errors",
    "parse_url",
    "as_datetime",
    "iso",
    "utcnow",
    "retry_busy",
    "write_connection",
]
