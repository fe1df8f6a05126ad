"""A real ``lorahub serve`` subprocess on a free loopback port, against SQLite or a fresh PostgreSQL
database, with tokens for a few users; raw Hub API bodies; a small kohya LoRA writer.

Plain helpers (``from hubkit import start_server, ...``); the fixtures built on them (``hub_server``,
``sqlite_server``, ``kohya_lora``) are in tests/hub_fixtures.py.

PostgreSQL: 127.0.0.1:5432, trust auth; every server gets its own database, dropped afterwards.
Where PostgreSQL is unreachable the PostgreSQL variants skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from testkit import pg_admin_url as _admin_url

from lorahub.cli.serving import start_serve, stop_serve  # the one way to run `lorahub serve`

LORAHUB = str(Path(sys.executable).with_name("lorahub"))


def fresh_pg_database() -> str:
    """Create an empty database; return its URL (skips, or fails under CI, without PostgreSQL)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = _admin_url()
    name = f"lorahub_srv_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    try:
        engine = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
    except Exception:  # noqa: BLE001 - cleanup only
        pass


@dataclass
class HubServer:
    url: str
    data: Path
    database: str
    backend: str
    log: Path
    proc: subprocess.Popen
    tokens: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self, user: str | None = "alice"):  # noqa: ANN201 - HfApi
        from lorahub.hub.endpoint import hf_api

        return hf_api(self.url, token=self.tokens[user] if user else False)

    def env(self, user: str | None = "alice", **extra: str) -> dict[str, str]:
        """Environment for a client subprocess (hf CLI, diffusers) talking to this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(
            HF_ENDPOINT=self.url,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HOME=str(self.data.parent / f"hf-home-{user or 'anon'}"),
        )
        if user:
            env["HF_TOKEN"] = self.tokens[user]
        env.update(extra)
        return env

    def request(self, method: str, path: str, *, user: str | None = "alice", **kw):  # noqa: ANN201 - httpx.Response
        import httpx

        headers = dict(kw.pop("headers", {}) or {})
        if user:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def lfs_upload_url(self, repo: str, content: bytes, *, user: str | None = "alice") -> str:
        """The signed PUT URL the LFS batch API hands out for ``content`` (asserting the server wants it)."""
        r = self.request(
            "POST",
            f"/{repo}.git/info/lfs/objects/batch",
            user=user,
            json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": sha256(content), "size": len(content)}]},
            headers={"Accept": "application/vnd.git-lfs+json"},
        )
        assert r.status_code == 200, r.text
        (obj,) = r.json()["objects"]
        assert "actions" in obj, f"the server says it already has the object: {obj}"
        return obj["actions"]["upload"]["href"]


# -- raw Hub API bodies, for the tests that go below huggingface_hub ---------------------------------

NDJSON = {"Content-Type": "application/x-ndjson"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ndjson(*items: dict) -> bytes:
    return b"\n".join(json.dumps(i).encode() for i in items)


def commit_body(path: str, content: bytes = b"x", parent: str | None = None, summary: str = "test") -> bytes:
    """An NDJSON commit adding one regular file (base64 inline)."""
    header = {"summary": summary, "description": ""}
    if parent:
        header["parentCommit"] = parent
    return ndjson(
        {"key": "header", "value": header},
        {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}},
    )


def make_tokens(registry) -> dict[str, str]:  # noqa: ANN001 - a Registry
    """Tokens of a few users in the server's database: alice and bob (write), alice_ro (read), revoked."""
    from sqlmodel import Session

    from lorahub.registry.hub.auth import create_token, revoke_token

    tokens: dict[str, str] = {}
    with Session(registry.engine, expire_on_commit=False) as s:
        for key, user, write in (("alice", "alice", True), ("bob", "bob", True), ("alice_ro", "alice", False), ("revoked", "alice", True)):
            tokens[key], _, _ = create_token(s, user, write=write, name=key)
        revoke_token(s, tokens["revoked"])
    return tokens


def start_server(
    data: Path,
    database: str | None,
    backend: str,
    extra_args: list[str] | None = None,
    wrap: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> HubServer:
    """Create users/tokens in the database, start ``lorahub serve --port 0`` and wait until it listens.

    ``wrap``: a command prefix that execs the server (e.g. ``unshare`` into a mount namespace).
    ``env``: variables added to the server's environment (after HF_* and LORAHUB_DATABASE* are removed)."""
    from lorahub.registry.server.run import prepare
    from lorahub.registry.server.settings import SQLITE_NAME

    data.mkdir(parents=True, exist_ok=True)
    database = database or f"sqlite:///{data / SQLITE_NAME}"
    _, url, registry = prepare(data, database)
    try:
        tokens = make_tokens(registry)
    finally:
        registry.close()
    log = data / "server.log"
    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LORAHUB_DATABASE", "LORAHUB_UI"))}
    server_env["LORAHUB_HOME"] = str(data / "home")
    server_env.update(env or {})
    # no --ui: the web UI is served only when asked for (tests/server/test_server_ui.py, tests/space)
    proc, endpoint = start_serve(["--port", "0", "--data", str(data), "--database", database, *(extra_args or [])],
                                 log=log, env=server_env, cwd=data, program=[LORAHUB], wrap=wrap or ())
    return HubServer(url=endpoint, data=data, database=url, backend=backend, log=log, proc=proc, tokens=tokens)


def stop_server(server: HubServer) -> None:
    stop_serve(server.proc)


def write_kohya_lora(
    path: Path, *, rank: int = 4, seed: int = 0, up_rank: int | None = None, title: str = "tinystyle", trigger: str | None = None
) -> Path:
    """A small, real SD 1.x kohya LoRA (random weights); ``up_rank != rank`` makes it invalid."""
    import numpy as np

    from lorahub.adapters.writer import write_numpy

    rng = np.random.default_rng(seed)
    tensors = {}
    for blk, inn in (("attn1_to_q", 320), ("attn1_to_k", 320), ("attn2_to_k", 768), ("attn2_to_v", 768)):
        base = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_{blk}"
        tensors[f"{base}.lora_down.weight"] = rng.standard_normal((rank, inn)).astype(np.float16)
        tensors[f"{base}.lora_up.weight"] = rng.standard_normal((320, up_rank or rank)).astype(np.float16)
        tensors[f"{base}.alpha"] = np.array(float(rank), dtype=np.float16)
    word = trigger or title
    metadata = {"ss_output_name": title, "ss_tag_frequency": json.dumps({f"10_{word}": {word: 10}})}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_numpy(path, tensors, metadata=metadata)
    return path




# -- the same app in this process ---------------------------------------------------------------------

#: Where LocalHub's client sends requests: a loopback address, as for ``lorahub serve`` (no socket: the
#: TestClient hands each request to the app).
LOCAL_URL = "http://127.0.0.1"
#: The in-process app's default public URL: the host other ASGI clients send (schemathesis' ``from_asgi``).
LOCAL_PUBLIC_URL = "http://testserver"


@dataclass
class LocalHub:
    """lorahub's Hub app in this process, reached through Starlette's ``TestClient`` (ASGI, no socket).

    The same application ``lorahub serve`` runs (``create_app`` on the same settings and database), for
    tests of plain HTTP answers where a subprocess proves nothing more. Not for the real huggingface_hub
    client over HTTP, HTTP parsing (raw_http), faults, memory or several processes: those use
    :class:`HubServer`."""

    url: str
    data: Path
    database: str
    backend: str
    app: object
    client: object
    registry: object
    tokens: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, *, user: str | None = "alice", **kw):  # noqa: ANN201 - httpx.Response
        headers = dict(kw.pop("headers", {}) or {})
        if user:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return self.client.request(method, path, headers=headers, **kw)

    def upload(self, repo: str, path: str, content: bytes, *, user: str = "alice") -> str:
        """Commit ``content`` at ``path`` the way huggingface_hub does for an LFS file (LFS batch, PUT to the
        signed URL, verify, commit of an ``lfsFile``); returns the commit id."""
        oid = sha256(content)
        batch = self.request("POST", f"/{repo}.git/info/lfs/objects/batch", user=user,
                             json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(content)}]},
                             headers={"Accept": "application/vnd.git-lfs+json"})
        assert batch.status_code == 200, batch.text
        actions = batch.json()["objects"][0].get("actions")
        if actions:  # absent when the repo already holds the object
            put = self.request("PUT", actions["upload"]["href"], user=None, content=content)
            assert put.status_code == 200, put.text
            verify = self.request("POST", actions["verify"]["href"], user=user, json={"oid": oid, "size": len(content)})
            assert verify.status_code == 200, verify.text
        body = ndjson({"key": "header", "value": {"summary": f"upload {path}"}},
                      {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": len(content)}})
        r = self.request("POST", f"/api/models/{repo}/commit/main", user=user, content=body, headers=NDJSON)
        assert r.status_code == 200, r.text
        return r.json()["commitOid"]

    def create_repo(self, repo: str, *, private: bool = False, user: str = "alice") -> None:
        owner, name = repo.split("/")
        r = self.request("POST", "/api/repos/create", user=user,
                         json={"name": name, "organization": owner, "type": "model", "private": private})
        assert r.status_code == 200, r.text

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.registry.close()


def start_local_hub(data: Path, database: str | None = None, backend: str = "sqlite", **settings: object) -> LocalHub:
    """The app of ``lorahub serve --data DATA --database DATABASE`` in this process, with the tokens of
    :func:`start_server`. ``settings``: :class:`ServerSettings` fields (``public_url``, ``allowed_hosts``,
    ``cors_origins``, ``max_upload_size``, ...), as the matching ``lorahub serve`` options set them."""
    from starlette.testclient import TestClient

    from lorahub.registry.server.app import create_app
    from lorahub.registry.server.run import prepare
    from lorahub.registry.server.settings import SQLITE_NAME, ServerSettings

    data.mkdir(parents=True, exist_ok=True)
    database = database or f"sqlite:///{data / SQLITE_NAME}"
    _, url, registry = prepare(data, database)
    tokens = make_tokens(registry)
    config = ServerSettings(data_dir=data, database_url=url, public_url=str(settings.pop("public_url", LOCAL_PUBLIC_URL)))
    for key, value in settings.items():
        if not hasattr(config, key):
            raise TypeError(f"ServerSettings has no {key!r}")
        setattr(config, key, value)
    app = create_app(config, registry)
    client = TestClient(app, base_url=LOCAL_URL, raise_server_exceptions=False)
    client.__enter__()  # runs the app's startup
    return LocalHub(url=LOCAL_URL, data=data, database=url, backend=backend, app=app, client=client,
                    registry=registry, tokens=tokens)
