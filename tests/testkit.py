"""Plain helpers shared by the test suite (import them as ``from testkit import ...``).

Helpers are imported by name from here and the other ``*kit.py`` modules; fixtures never are: they
live in the plugin modules tests/conftest.py declares (``pytest_plugins``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Third-party data beside the project (``../shared``); ``LORAHUB_TEST_SHARED`` points elsewhere, e.g.
#: ``LORAHUB_TEST_SHARED=/nonexistent make test`` runs the suite as a clone without it would (only the
#: extra checks on that data skip).
SHARED = Path(os.environ.get("LORAHUB_TEST_SHARED") or (REPO / ".." / "shared")).resolve()
FIXTURES = SHARED / "fixtures"
CORPORA = SHARED / "corpora"
CIVITAI = CORPORA / "civitai-lora-models-2023-07.jsonl"


def manifest_to_safetensors(manifest: Path, out: Path, metadata: dict[str, str] | None = None) -> Path:
    """Turn a key -> {shape, dtype} manifest into a real safetensors file with zero-filled tensors."""
    from lorahub.adapters.writer import write_safetensors_zeros

    spec = json.loads(manifest.read_text())
    tensors = {}
    for name, entry in spec.items():
        dtype = str(entry["dtype"]).replace("torch.", "")
        tensors[name] = (dtype, [int(d) for d in entry["shape"]])
    write_safetensors_zeros(out, tensors, metadata=metadata)
    return out


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


PG_CANDIDATES = [
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
]
_pg_probe: dict[str, str] = {}


def pg_admin_url() -> str:
    """A reachable PostgreSQL URL (``$LORAHUB_TEST_DATABASE_URL`` or the local server).

    Skips the calling test with the reason when none answers, except under ``CI=true``, where it
    fails: CI must test both databases (.ci/run starts the server).
    """
    import pytest

    if "url" in _pg_probe:
        return _pg_probe["url"]
    if "error" not in _pg_probe:
        from sqlalchemy import create_engine, text

        env = os.environ.get("LORAHUB_TEST_DATABASE_URL")
        errors = []
        for url in [env] if env else PG_CANDIDATES:
            try:
                engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                engine.dispose()
                _pg_probe["url"] = url
                return url
            except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
                errors.append(f"{url}: {str(exc).strip().splitlines()[0]}")
        _pg_probe["error"] = "; ".join(errors)
    reason = f"PostgreSQL is unreachable ({_pg_probe['error']}); run scripts/ensure-services"
    if on_ci():
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def pg_schema_url(base: str, schema: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def create_pg_schema(base: str) -> tuple[str, str]:
    """A fresh schema in the PostgreSQL database at ``base``: (its name, a URL whose search_path is it)."""
    from sqlalchemy import create_engine, text

    schema = f"lh_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return schema, pg_schema_url(base, schema)


def drop_pg_schema(base: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def wait_for(predicate, what: str, timeout: float = 30.0):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns something true (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def raw_http(url: str, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the server at ``url`` (what httpx refuses to build: a head without its
    body, malformed lines) and return the answer up to the end of its headers."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data
