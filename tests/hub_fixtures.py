"""Fixtures: a real ``lorahub serve`` per test module, or its app in this process (tests/hubkit.py);
small kohya LoRAs.

A pytest plugin (declared in tests/conftest.py ``pytest_plugins``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hubkit import (
    drop_pg_database,
    fresh_pg_database,
    start_local_hub,
    start_server,
    stop_server,
    write_kohya_lora,
)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A running ``lorahub serve`` (one per test module and backend)."""
    backend = request.param
    data = tmp_path_factory.mktemp(f"serve-{backend}")
    url = fresh_pg_database() if backend == "postgres" else None
    server = start_server(data, url, backend)
    try:
        yield server
    finally:
        stop_server(server)
        if url:
            drop_pg_database(url)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def local_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The app of ``lorahub serve`` in this process (one per test module and backend; tests/hubkit.py
    ``LocalHub``): for plain HTTP answers, where a subprocess proves nothing more."""
    backend = request.param
    url = fresh_pg_database() if backend == "postgres" else None
    hub = start_local_hub(tmp_path_factory.mktemp(f"local-{backend}"), url, backend)
    try:
        yield hub
    finally:
        hub.close()
        if url:
            drop_pg_database(url)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A running ``lorahub serve`` on SQLite (for tests whose subject is not the database)."""
    server = start_server(tmp_path_factory.mktemp("serve-sqlite"), None, "sqlite")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def kohya_lora(tmp_path: Path):  # noqa: ANN201
    """Factory: ``kohya_lora(name, **kw) -> Path`` (see :func:`write_kohya_lora`)."""

    def make(name: str = "tinystyle.safetensors", **kw) -> Path:  # noqa: ANN003
        return write_kohya_lora(tmp_path / "loras" / name, **kw)

    return make
