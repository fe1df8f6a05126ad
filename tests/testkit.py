"""Plain helpers shared by the test suite (import them as ``from testkit import ...``).

They live here and not in ``conftest.py`` because several folders have a
conftest of their own, and ``from conftest import`` would pick whichever was
imported last.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Third-party data beside the project (``../shared``); ``LORAHUB_TEST_SHARED`` points elsewhere, e.g.
#: ``LORAHUB_TEST_SHARED=/nonexistent make test`` runs the suite as a clone without it would (only the
#: extra checks on that data skip).
SHARED = Path(os.environ.get("LORAHUB_TEST_SHARED") or (REPO / ".." / "shared")).resolve()
FIXTURES = SHARED / "fixtures"
CORPORA = SHARED / "corpora"


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


def server_fixtures():  # noqa: ANN201 - the module tests/server/conftest.py
    """``tests/server/conftest.py`` as a module of its own name (start_server, stop_server, ...).

    For tests outside that folder (or needing a server with other options) that start a real `lorahub serve`.
    """
    import importlib.util
    import sys

    name = "lorahub_server_test_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "server" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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
