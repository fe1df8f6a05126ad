"""The server's secrets are created in a write transaction (registry.hub.auth.load_secret).

Found by test_server_hostile on a loaded machine: a fresh server's first LFS batch created the upload-URL key
inside the read transaction that had found it missing; when another connection wrote (a commit) between that
read and the insert, SQLite refused the insert at once ("database is locked": a WAL snapshot that is no longer
the newest cannot become a write transaction, and no busy timeout helps), and the upload got a 503.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest


def _race(engine, path: Path) -> list[int]:  # noqa: ANN001
    """After the first read of ``hub_secrets`` on ``engine``, another connection writes and commits."""
    from sqlalchemy import event

    wrote: list[int] = []
    other = sqlite3.connect(path, isolation_level=None, timeout=30)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if not wrote and "hub_secrets" in statement and statement.lstrip().upper().startswith("SELECT"):
            other.execute("CREATE TABLE IF NOT EXISTS elsewhere (x)")
            other.execute("INSERT INTO elsewhere VALUES (1)")
            wrote.append(1)

    return wrote


@pytest.fixture
def racing(tmp_path: Path):  # noqa: ANN201
    """``(engine, wrote)``: a migrated SQLite registry's engine on which, after the first read of
    ``hub_secrets``, another connection writes and commits (``wrote`` says it did)."""
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.database import make_engine

    path = tmp_path / "r.sqlite"
    with Registry(f"sqlite:///{path}") as reg:
        reg.ensure_schema()
    engine = make_engine(f"sqlite:///{path}")
    yield engine, _race(engine, path)
    engine.dispose()


def test_a_missing_secret_is_created_beside_a_concurrent_write(racing) -> None:  # noqa: ANN001
    from lorahub.registry.database import Sessions
    from lorahub.registry.hub.auth import load_secret

    engine, wrote = racing
    key = load_secret(Sessions(engine), "upload-url-key")
    assert wrote and len(key) == 32
    assert load_secret(Sessions(engine), "upload-url-key") == key  # read back, not made again


def test_the_race_is_real_for_an_insert_in_the_reading_transaction(racing) -> None:  # noqa: ANN001
    """What load_secret did before: the same race makes SQLite refuse the insert at once."""
    import secrets

    from sqlalchemy.exc import OperationalError

    from lorahub.registry.database import Sessions
    from lorahub.registry.hub.tables import HubSecret

    engine, wrote = racing
    with Sessions(engine).read() as s, pytest.raises(OperationalError, match="database is locked"):
        assert s.get(HubSecret, "upload-url-key") is None
        s.add(HubSecret(name="upload-url-key", value=secrets.token_hex(32)))
        s.commit()
    assert wrote
