"""The registry's library API, used by the CLI and (later) the HTTP server.

>>> reg = Registry()                      # $LORAHUB_DATABASE_URL or $LORAHUB_HOME/registry.sqlite
>>> reg.index_paths(["~/loras"])          # IndexSummary
>>> reg.search(SearchQuery(query="anime", base="sd1"))
>>> reg.by_hash("47AAAF0D29")             # any fingerprint, exact or a prefix of >= 8 hex
>>> reg.dupes()

The database schema is brought to the newest migration on first use unless
``LORAHUB_AUTO_MIGRATE=0`` (then ``lorahub registry migrate`` must run first); checking it
costs one query (Alembic is imported only to migrate).

Fast start: importing this module imports neither SQLAlchemy nor the schemas, and the engine
is made on first use. ``Registry(url, pooled=False)`` (a one-shot command) reads on a driver
connection of its own and never imports SQLAlchemy for reads; the queries are the same
(:mod:`.search`, :mod:`.lookups` run on a :class:`~.database.Raw` reader either way).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub.errors import RegistryError, UsageError

from .database import (
    Raw,
    can_connect_driver,
    connect_driver,
    database_url,
    db_errors,
    display_url,
    lent,
    make_engine,
    parse_url,
    write_connection,
)

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection, Engine

    from lorahub.schemas.hub import PullResult, PushResult
    from lorahub.schemas.registry import (
        AdapterRecord,
        DupeGroup,
        HashLookup,
        IndexSummary,
        NearGroup,
        NearMember,
        SearchQuery,
        SearchResult,
    )

    from .drafts import AdapterDraft

ENV_AUTO_MIGRATE = "LORAHUB_AUTO_MIGRATE"
_HEX_RE = re.compile(r"[0-9a-f]+")
MIN_HASH_PREFIX = 8
#: Bulk imports of at least this many records end with :meth:`Registry.optimize`.
OPTIMIZE_AFTER = 1000


def normalize_hash_query(value: str) -> str:
    """Lower-case hex of a hash or prefix (``0x`` dropped); UsageError if not 8-64 hex digits."""
    h = value.strip().lower()
    if h.startswith("0x"):
        h = h[2:]
    if not _HEX_RE.fullmatch(h or "-") or not MIN_HASH_PREFIX <= len(h) <= 64:
        raise UsageError(
            f"not a hash: {value.strip()!r}",
            hint=f"give {MIN_HASH_PREFIX} to 64 hex digits (AutoV1, AutoV2, AutoV3, CRC32, SHA-256, BLAKE3 or a prefix)",
        )
    return h


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


class Registry:
    """One registry database. Thread-safe (a pool of connections); call :meth:`close` when done.

    ``pooled=False``: reads go through one driver connection of the registry's own (opened on
    the first read, closed by :meth:`close`), for one thread: a command's registry, which then
    starts without SQLAlchemy. Writes use the engine in both cases."""

    def __init__(self, url: str | None = None, *, auto_migrate: bool | None = None, pooled: bool = True) -> None:
        self.url = database_url(url)
        self._engine: Engine | None = None
        self.pooled = pooled
        self._driver: Any = None
        self._reader_key: str | None = None
        if auto_migrate is None:
            auto_migrate = os.environ.get(ENV_AUTO_MIGRATE, "1").strip().lower() not in ("0", "false", "no")
        self.auto_migrate = auto_migrate
        self._ready = False

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (made on first use)."""
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    @property
    def display_url(self) -> str:
        return display_url(self.url)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return parse_url(self.url).backend

    def close(self) -> None:
        if self._driver is not None:
            driver, self._driver = self._driver, None
            driver.close()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def database_error(self, exc: BaseException) -> RegistryError:
        """The :class:`RegistryError` (a 503 in the server) for a failed call to this registry's database."""
        return RegistryError(f"registry database {self.display_url}: {_first_line(exc)}")

    def migrate(self) -> tuple[str | None, str]:
        """Upgrade the schema to the newest revision; ``(before, after)``."""
        from .migrations import upgrade

        try:
            result = upgrade(self.engine)
        except db_errors() as exc:
            raise self.database_error(exc) from exc
        except Exception as exc:  # alembic: unknown revision (a newer lorahub wrote this database)
            if type(exc).__name__ in ("CommandError", "ResolutionError"):
                raise RegistryError(
                    f"registry database {self.display_url}: {exc}", hint="was it written by a newer lorahub?"
                ) from exc
            raise
        self._ready = True
        return result

    def ensure_schema(self) -> None:
        """Migrate unless the schema is current (one query; Alembic is imported only to migrate)."""
        if self._ready:
            return
        from .migrations import head_revision, stored_revision

        with self._raw() as raw:
            current = stored_revision(raw)
        if current != head_revision():
            if not self.auto_migrate:
                raise RegistryError(
                    f"registry database {self.display_url} is at revision {current or 'none'}",
                    hint="run: lorahub registry migrate",
                )
            self.migrate()
        self._ready = True

    def connect(self) -> Connection:
        """A read connection (schema ensured). Use as a context manager.

        On PostgreSQL it runs in autocommit: a search's few statements need no common snapshot,
        and BEGIN and ROLLBACK were two of its round trips."""
        self.ensure_schema()
        return self._connect()

    def _connect(self) -> Connection:
        try:
            conn = self.engine.connect()
        except db_errors() as exc:
            raise self.database_error(exc) from exc
        if self.dialect == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn

    @contextmanager
    def reading(self) -> Iterator[Raw]:
        """A reader for the read queries (:class:`~.database.Raw`; schema ensured)."""
        self.ensure_schema()
        with self._raw() as raw:
            yield raw

    @property
    def reader_key(self) -> str:
        """The ``key`` of this registry's readers on its engine (:class:`~.database.Raw`)."""
        if self._reader_key is None:
            self._reader_key = Raw.key_of(self.engine)
        return self._reader_key

    @contextmanager
    def _raw(self) -> Iterator[Raw]:
        borrowed = lent()
        if borrowed is not None and self.pooled and borrowed.key == self.reader_key:
            yield borrowed  # a reader lent to this context (lorahub serve's event loop, registry/server/pgloop.py)
            return
        if self.pooled or not can_connect_driver(self.url):
            with self._connect() as conn:
                yield Raw(conn)
            return
        if self._driver is None:
            try:
                self._driver = connect_driver(self.url)
            except db_errors() as exc:
                raise self.database_error(exc) from exc
        yield Raw.on_driver(self._driver, self.url)

    def writing(self):  # noqa: ANN201 - a context manager of a Connection
        """A write transaction (SQLite: BEGIN IMMEDIATE), committed on success."""
        self.ensure_schema()
        return write_connection(self.engine)

    # -- writing --------------------------------------------------------------------------

    def upsert(self, drafts: Sequence[AdapterDraft]) -> list[int]:
        """Insert or replace adapters described by drafts (see :mod:`lorahub.registry.drafts`)."""
        from . import rows

        with self.writing() as conn:
            return rows.write_adapters(conn, drafts)

    def record_hub_files(self, result: PushResult | PullResult) -> int:
        """Record the repo a push or a pull left behind (its commit, card and adapter files with their
        fingerprints) so that search finds it and a later pull is verified against it; returns the
        adapter's id. The record is this registry's owner's: a private repo is not hidden here."""
        from lorahub.hub.card import split_card
        from lorahub.schemas.hub import PushResult

        from .drafts import hub_repo_draft

        if not result.adapters or not result.commit:
            raise UsageError(f"{result.repo_id}: nothing to record (no adapter file or no commit)")
        pushed = isinstance(result, PushResult)
        readme = result.card if pushed else result.readme
        namespace, name = result.repo_id.split("/", 1)
        draft = hub_repo_draft(
            endpoint=result.endpoint, repo_id=result.repo_id, url_prefix="", namespace=namespace, name=name,
            private=False, owner_id=None, downloads=0, created_at=None, commit_oid=result.commit,
            commit_title="pushed with lorahub" if pushed else "pulled with lorahub",
            card=split_card(readme)[0] if readme else {}, readme=readme,
            adapters=[(a.path, a.size, a, a.hashes) for a in result.adapters],
        )
        return self.upsert([draft])[0]

    def hub_files(self, endpoint: str, repo_id: str) -> dict[str, str]:
        """Files (repo path -> sha256) this registry recorded for the Hub repo ``repo_id`` at ``endpoint``:
        what ``lorahub pull`` verifies downloads against."""
        from lorahub.schemas.registry import hub_source_key

        return self.source_files(hub_source_key(endpoint, repo_id))

    def remove(self, ids: Sequence[int]) -> int:
        from . import rows

        with self.writing() as conn:
            return rows.delete_adapters(conn, ids)

    def index_paths(self, paths: Iterable[str | os.PathLike[str]], *, progress: Any = None,
                    workers: int | None = None) -> IndexSummary:
        """Index folders/files of ``.safetensors`` adapters (see :mod:`lorahub.registry.sources.folders`)."""
        from .sources.folders import index_paths

        return index_paths(self, paths, progress=progress, workers=workers)

    def import_records(self, records: Iterable[AdapterRecord], *, batch: int = 2000) -> IndexSummary:
        """Add or replace metadata-only records (one transaction)."""
        from lorahub.schemas.registry import IndexSummary

        from . import rows
        from .drafts import record_draft

        started = time.perf_counter()
        count = 0
        with self.writing() as conn:
            drafts: list[AdapterDraft] = []
            for rec in records:
                drafts.append(record_draft(rec))
                if len(drafts) >= batch:
                    count += len(rows.write_adapters(conn, drafts))
                    drafts = []
            count += len(rows.write_adapters(conn, drafts))
        if count >= OPTIMIZE_AFTER:
            self.optimize()
        return IndexSummary(records=count, seconds=round(time.perf_counter() - started, 3), database=self.display_url)

    def import_file(self, path: str | os.PathLike[str], *, fmt: str = "lorahub") -> IndexSummary:
        """Import a JSON Lines file (``fmt``: ``lorahub`` records or ``civitai`` model objects).

        Every line is checked first: one bad line fails the import and nothing is written.
        """
        from .sources.records import read_records

        records = read_records(Path(path), fmt=fmt)
        return self.import_records(records)

    def optimize(self) -> None:
        """After a bulk write: merge the FTS5 index into one segment (SQLite) and refresh planner statistics."""
        self.ensure_schema()
        if self.dialect == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("INSERT INTO adapter_fts (adapter_fts) VALUES ('optimize')")
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
            return
        # VACUUM also empties the GIN pending lists a bulk insert leaves behind, and marks the word postings'
        # pages all-visible: their index-only scans (search's keyword tiers) read no table page then, and no
        # autovacuum of a table of millions of fresh rows runs later in the middle of searches.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("adapters", "adapter_postings", "adapter_files", "adapter_versions", "adapter_tags",
                          "trigger_words"):
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")

    # -- reading --------------------------------------------------------------------------

    def search(self, query: SearchQuery | str | None = None, *, viewer: Any = None,
               **filters: Any) -> list[SearchResult]:
        """One page of results. ``viewer`` (a user id, or the Hub server's ``access.PrivateView``: the
        owners whose private adapters the caller may read, or all) also sees those private adapters."""
        from lorahub.schemas.registry import SearchQuery

        from . import lookups
        from . import search as _search

        if not isinstance(query, SearchQuery):
            query = SearchQuery(query=query, **filters)
        with self.reading() as raw:
            hits, version = _search.search_page(raw, query, viewer=viewer)
            found = lookups.results_for(raw, [h.id for h in hits], {h.id: h.score for h in hits}, version=version)
            if len(found) < len(hits):  # a hit was deleted after the search read it (see search.fuse)
                hits, version = _search.search_page(raw, query, viewer=viewer, checked=True)
                found = lookups.results_for(raw, [h.id for h in hits], {h.id: h.score for h in hits}, version=version)
            return found

    def source_files(self, source_key: str) -> dict[str, str]:
        """Files (repo path or file name -> sha256) of the adapter recorded under ``source_key``.

        Used by ``lorahub pull`` to verify downloads against what the registry knows.
        """
        from sqlalchemy import select

        from . import rows

        A, F = rows.A, rows.F
        with self.connect() as conn:
            files = conn.execute(
                select(F.c.repo_path, F.c.filename, F.c.sha256)
                .select_from(F.join(A, F.c.adapter_id == A.c.id))
                .where(A.c.source_key == source_key)
            ).all()
        return {(r.repo_path or r.filename): r.sha256 for r in files if r.sha256}

    def get(self, adapter_id: int) -> SearchResult | None:
        from . import lookups

        with self.reading() as raw:
            found = lookups.results_for(raw, [adapter_id])
        return found[0] if found else None

    def by_hash(self, hash_or_prefix: str, *, viewer: Any = None) -> list[SearchResult]:
        """Files whose fingerprint equals ``hash_or_prefix`` or starts with it (at least 8 hex)."""
        from . import lookups

        h = normalize_hash_query(hash_or_prefix)
        with self.reading() as raw:
            return lookups.by_hash(raw, h, viewer)

    def lookup(self, hashes: Iterable[str], *, viewer: Any = None) -> list[HashLookup]:
        """Batch :meth:`by_hash` (one connection); every hash is checked before any lookup."""
        from lorahub.schemas.registry import HashLookup

        from . import lookups

        queries = [(given.strip(), normalize_hash_query(given)) for given in hashes]
        out = []
        with self.reading() as raw:
            for given, h in queries:
                out.append(HashLookup(query=given, matches=lookups.by_hash(raw, h, viewer)))
        return out

    def uses(self, source: str, *, viewer: Any = None) -> list[SearchResult]:
        """The blends made from ``source``: a registry name (or title), or a hash (SHA-256, AutoV3, any
        fingerprint of a registry file; a prefix of at least 8 hex) of the adapter."""
        from . import lookups

        text = source.strip()
        if not text:
            raise UsageError("--uses needs a name or a hash")
        hex_query = normalize_hash_query(text) if re.fullmatch(r"(0x)?[0-9a-fA-F]{8,64}", text) else None
        with self.reading() as raw:
            return lookups.used_by(raw, text, viewer, hex_query=hex_query)

    def dupes(self, *, viewer: Any = None) -> list[DupeGroup]:
        from . import lookups

        with self.reading() as raw:
            return lookups.dupes(raw, viewer)

    def near_dupes(self, threshold: float | None = None, *, viewer: int | None = None) -> list[NearGroup]:
        """Groups of adapters whose weight changes agree (:mod:`lorahub.registry.near`)."""
        from . import near

        with self.reading() as raw:
            return near.near_dupes(raw, near.DEFAULT_THRESHOLD if threshold is None else threshold, viewer)

    def like(self, path: str, *, limit: int = 20, viewer: int | None = None) -> list[NearMember]:
        """The indexed adapters whose weight change is nearest to the adapter file ``path``'s."""
        from lorahub.adapters.fingerprint import fingerprint_file
        from lorahub.adapters.inspect import inspect_file
        from lorahub.adapters.sketch import Facts, sketch_file

        from . import near

        report = inspect_file(path)
        query = sketch_file(path)
        fp = fingerprint_file(path)
        facts = Facts(report.format, report.dtype, report.rank, fp.tensor_sha256)
        with self.reading() as raw:
            return near.like(raw, query, facts, limit=limit, viewer=viewer)

    def count(self) -> int:
        with self.reading() as raw:
            return int(raw.all("SELECT count(*) FROM adapters")[0][0])


__all__ = ["Registry", "RegistryError", "normalize_hash_query"]
