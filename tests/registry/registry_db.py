"""Registry fixtures and helpers: every storage/search test runs on SQLite and on PostgreSQL.

PostgreSQL: the server at 127.0.0.1:5432 (trust auth; user postgres, else root;
database ``test``), or ``LORAHUB_TEST_DATABASE_URL``. Each test gets a fresh
schema (``search_path`` in the URL) that is dropped afterwards; the generated
catalogue (tests/corpuskit.py) and the Civitai corpus (../shared, extra checks)
are imported once per backend per session into schemas of their own. When the
server is unreachable the PostgreSQL cases skip, except under CI=true, where
they fail.

The fixtures live here, not in a conftest.py (a second module named ``conftest`` would
shadow ``tests/conftest.py`` for ``from conftest import ...``); test modules import them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import CORPORA, on_ci, pg_admin_url  # noqa: F401 - on_ci is re-exported to the registry tests

CIVITAI = CORPORA / "civitai-lora-models-2023-07.jsonl"


def pg_base_url() -> str:
    """A reachable PostgreSQL URL, or pytest.skip (pytest.fail under CI)."""
    return pg_admin_url()


def _schema_url(base: str, schema: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def _create_schema(base: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    schema = f"lh_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return schema, _schema_url(base, schema)


def _drop_schema(base: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty registry database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite'}"
        return
    base = pg_base_url()
    schema, url = _create_schema(base)
    try:
        yield url
    finally:
        _drop_schema(base, schema)


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


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def civitai_registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     civitai_records: list) -> Iterator[object]:
    """The Civitai corpus imported once per backend per session. Read-only for tests."""
    from lorahub.registry.catalogue import Registry

    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('civitai') / 'registry.sqlite'}"
    else:
        base = pg_base_url()
        schema, url = _create_schema(base)
    reg = Registry(url)
    try:
        reg.migrate()
        reg.import_records(civitai_records)
        yield reg
    finally:
        reg.close()
        if schema:
            _drop_schema(pg_base_url(), schema)


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
    from lorahub.registry.catalogue import Registry

    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('corpus') / 'registry.sqlite'}"
    else:
        base = pg_base_url()
        schema, url = _create_schema(base)
    reg = Registry(url)
    try:
        reg.migrate()
        reg.import_records(corpus_records)
        yield reg
    finally:
        reg.close()
        if schema:
            _drop_schema(pg_base_url(), schema)
