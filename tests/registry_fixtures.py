"""Fixtures: registry databases; every storage/search test runs on SQLite and on PostgreSQL.

A pytest plugin (declared in tests/conftest.py ``pytest_plugins``).

PostgreSQL: the server at 127.0.0.1:5432 (trust auth; user postgres, else root;
database ``test``), or ``LORAHUB_TEST_DATABASE_URL``. Each test gets a fresh
schema (``search_path`` in the URL) that is dropped afterwards; the generated
catalogue (tests/corpuskit.py) and the Civitai corpus (../shared, extra checks)
are imported once per backend per session into schemas of their own. When the
server is unreachable the PostgreSQL cases skip, except under CI=true, where
they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import CIVITAI, create_pg_schema, drop_pg_schema, pg_admin_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty registry database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite'}"
        return
    base = pg_admin_url()
    schema, url = create_pg_schema(base)
    try:
        yield url
    finally:
        drop_pg_schema(base, schema)


@pytest.fixture
def registry(db_url: str) -> Iterator[object]:
    from lorahub.registry.catalogue import Registry

    reg = Registry(db_url)
    reg.migrate()
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def civitai_records() -> list:
    if not CIVITAI.exists():
        pytest.skip(f"{CIVITAI} is absent: the shared corpora live in ../shared beside the project")
    from lorahub.registry.sources.records import read_records

    return read_records(CIVITAI, fmt="civitai")


def _imported_registry(backend: str, folder: Path, records: list) -> Iterator[object]:
    """``records`` imported into a new registry on ``backend`` (SQLite in ``folder``, or a private PostgreSQL
    schema dropped afterwards)."""
    from lorahub.registry.catalogue import Registry

    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'registry.sqlite'}"
    else:
        schema, url = create_pg_schema(pg_admin_url())
    reg = Registry(url)
    try:
        reg.migrate()
        reg.import_records(records)
        yield reg
    finally:
        reg.close()
        if schema:
            drop_pg_schema(pg_admin_url(), schema)


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def civitai_registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     civitai_records: list) -> Iterator[object]:
    """The Civitai corpus imported once per backend per session. Read-only for tests."""
    yield from _imported_registry(request.param, tmp_path_factory.mktemp("civitai"), civitai_records)


@pytest.fixture
def make_lora(embedded_base: Path):  # noqa: ANN201
    """make_lora(path, seed=..., **kw): a real synthetic LoRA for the session's embedded base."""
    from lorahub.base.synthetic import make_adapter

    def _make(path: Path, **kw):  # noqa: ANN003, ANN202
        path.parent.mkdir(parents=True, exist_ok=True)
        return make_adapter(path, base=str(embedded_base), **kw)

    return _make


@pytest.fixture(scope="session")
def corpus_records() -> list:
    """The generated catalogue (tests/corpuskit.py) as AdapterRecords: the core suite's search data."""
    from corpuskit import records

    return records()


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def corpus_registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    corpus_records: list) -> Iterator[object]:
    """The generated catalogue imported once per backend per session. Read-only for tests."""
    yield from _imported_registry(request.param, tmp_path_factory.mktemp("corpus"), corpus_records)


@pytest.fixture
def read_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement read through ``Raw.all`` (a search's reads) from here on, in order."""
    from lorahub.registry import database

    statements: list[str] = []
    real_all = database.Raw.all

    def spy(self, sql, params=None, **kw):  # noqa: ANN001, ANN003, ANN202
        statements.append(sql)
        return real_all(self, sql, params, **kw)

    monkeypatch.setattr(database.Raw, "all", spy)
    return statements
