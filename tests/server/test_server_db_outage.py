"""The database goes away under a running ``lorahub serve``, and comes back (issue 9, faults).

PostgreSQL: a private cluster (``pgcluster.py``; the shared server on :5432 is never stopped) is
stopped with ``pg_ctl stop -m fast`` (clean shutdown) and ``-m immediate`` (a crash: WAL recovery
on start) while an LFS upload and a commit are in flight. Every route (the Hub API, the search
API, the token lookup) must answer ``503`` with a JSON error and ``Retry-After``, the process
must stay up, the in-flight requests must fail cleanly; once PostgreSQL is back (pool pre-ping
replaces the dead connections) the stock client's own retry completes a push that was started
during the outage, the data from before is intact and ``lorahub registry check`` finds no error.

SQLite: another process holds ``BEGIN EXCLUSIVE`` past the busy timeout (made short with
``$LORAHUB_SQLITE_BUSY_TIMEOUT_MS``): reads keep working (WAL), writes get the same ``503``
within about one timeout, and everything works again once the lock is released.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from hubkit import NDJSON, HubServer, commit_body, sha256, start_server, stop_server, write_kohya_lora
from pgcluster import PgCluster, private_cluster
from testkit import wait_for

from lorahub.registry.server.app import DB_RETRY_AFTER_S, DB_UNAVAILABLE


def assert_unavailable(r: httpx.Response, what: str) -> None:
    assert r.status_code == 503, f"{what}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/json"), what
    assert r.json()["error"] == DB_UNAVAILABLE, what
    assert r.headers["retry-after"] == str(DB_RETRY_AFTER_S), what
    assert "postgresql" not in r.text and "sqlite" not in r.text, f"{what}: the database URL leaked: {r.text}"


def in_background(fn) -> tuple[threading.Thread, list]:  # noqa: ANN001
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(fn())
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, outcome


def held_body(first: bytes, rest: bytes, sent: threading.Event, release: threading.Event):  # noqa: ANN201
    """A request body that stalls after ``first`` (``sent`` is set once it went out) until ``release``."""
    yield first
    sent.set()
    release.wait(60)
    yield rest


def parts(server: HubServer) -> list[Path]:
    return sorted((server.data / "blobs" / "tmp").glob("*.part"))


def registry_check_errors(server: HubServer) -> list:
    """The errors ``lorahub registry check`` reports (orphans of the failed requests are pending, not errors)."""
    from click.testing import CliRunner

    from lorahub.cli.main import cli

    r = CliRunner().invoke(cli, ["registry", "check", "--data", str(server.data), "--database", server.database, "--json"])
    report = json.loads(r.stdout)
    errors = [i for i in report["issues"] if i["severity"] == "error"]
    assert (r.exit_code == 0) == (not errors), r.output
    return errors


# -- PostgreSQL -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    c = private_cluster()
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def pg_server(cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    server = start_server(tmp_path_factory.mktemp("outage-pg"), cluster.createdb("hub"), "postgres")
    try:
        yield server
    finally:
        stop_server(server)


def down_requests(server: HubServer, repo: str, sha: str) -> list[tuple[str, str, str | None, dict]]:
    """(method, path, user, httpx kwargs) of every kind of route, read and write, anonymous and not."""
    return [
        ("GET", "/api/lorahub/health", None, {}),
        ("GET", "/api/lorahub/search?q=outage", None, {}),
        ("GET", "/api/lorahub/search?q=outage", "alice", {}),
        ("GET", f"/api/lorahub/by-hash/{sha[:12]}", None, {}),
        ("GET", f"/api/lorahub/by-hash/{sha}", "bob", {}),
        ("GET", "/api/whoami-v2", "alice", {}),  # the token lookup: 503, never 401 nor anonymous
        ("GET", "/api/whoami-v2", "revoked", {}),
        ("GET", f"/api/models/{repo}", None, {}),
        ("GET", f"/api/models/{repo}", "alice", {}),
        ("GET", "/api/models?search=outage", None, {}),
        ("GET", f"/api/models/{repo}/tree/main", None, {}),
        ("GET", f"/{repo}/resolve/main/style.safetensors", None, {}),
        ("HEAD", f"/{repo}/resolve/main/style.safetensors", "alice", {}),
        ("POST", "/api/repos/create", "alice", {"json": {"name": "during-outage", "type": "model"}}),
        ("POST", f"/api/models/{repo}/preupload/main", "alice", {"json": {"files": [{"path": "a.txt", "size": 1, "sample": "YQ=="}]}}),
        ("POST", f"/{repo}.git/info/lfs/objects/batch", "alice", {"json": {"operation": "upload", "objects": [{"oid": sha, "size": 1}]}}),
        ("POST", f"/api/models/{repo}/commit/main", "alice", {"content": commit_body("down.txt", b"x"), "headers": NDJSON}),
        ("DELETE", "/api/repos/delete", "alice", {"json": {"name": repo, "type": "model"}}),
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_outage_gives_503_and_recovers(pg_server: HubServer, cluster: PgCluster, mode: str, tmp_path: Path) -> None:
    server, api = pg_server, pg_server.api()
    repo = f"alice/outage-{mode}"
    api.create_repo(repo)
    lora = write_kohya_lora(tmp_path / "style.safetensors", title=f"outage{mode}", seed=len(mode))
    lora_sha = sha256(lora.read_bytes())
    api.upload_file(path_or_fileobj=str(lora), path_in_repo="style.safetensors", repo_id=repo)
    api.upload_file(path_or_fileobj=b"notes\n", path_in_repo="notes.txt", repo_id=repo)
    before = api.model_info(repo, files_metadata=True)
    before_files = {s.rfilename: s.blob_id for s in before.siblings}
    before_commits = [c.commit_id for c in api.list_repo_commits(repo)]
    found = server.request("GET", f"/api/lorahub/search?q=outage{mode}", user=None).json()
    assert [h["sha256"] for h in found] == [lora_sha]

    # In flight when PostgreSQL goes: an LFS PUT (half its body sent, half on disk) and a commit.
    content = os.urandom(200_000)
    href = server.lfs_upload_url(repo, content)
    put_sent, commit_sent, release = threading.Event(), threading.Event(), threading.Event()
    put_t, put_out = in_background(lambda: httpx.put(href, content=held_body(content[:80_000], content[80_000:], put_sent, release), timeout=60))
    body = commit_body("inflight.txt", b"in flight\n")
    commit_t, commit_out = in_background(
        lambda: server.request("POST", f"/api/models/{repo}/commit/main", content=held_body(body[:20], body[20:], commit_sent, release), headers=NDJSON)
    )
    wait_for(lambda: put_sent.is_set() and commit_sent.is_set(), "both requests to be in flight")
    wait_for(lambda: any(p.stat().st_size >= 80_000 for p in parts(server)), "the upload to be half written")

    cluster.stop(mode)
    release.set()
    put_t.join(60)
    commit_t.join(60)
    assert_unavailable(put_out[0], "in-flight LFS PUT")
    assert_unavailable(commit_out[0], "in-flight commit")
    assert parts(server) == [], "an unfinished upload was left behind"

    for method, path, user, kw in down_requests(server, repo, lora_sha):
        r = server.request(method, path, user=user, **kw)
        if method == "HEAD":
            assert r.status_code == 503 and r.headers["retry-after"] == str(DB_RETRY_AFTER_S), (path, r.status_code)
        else:
            assert_unavailable(r, f"{method} {path} as {user}")
    assert server.proc.poll() is None, "the server died with its database"

    # The stock client, started during the outage, honours Retry-After and completes once the database is back.
    push_t, push_out = in_background(lambda: api.upload_file(path_or_fileobj=b"after\n", path_in_repo="after.txt", repo_id=repo))
    wait_for(lambda: f'"POST /api/models/{repo}/preupload/main" 503' in server.log_text(), "the client to meet the outage")
    cluster.start()
    push_t.join(60)
    assert not isinstance(push_out[0], Exception), push_out[0]
    pushed = push_out[0].oid

    assert server.request("GET", "/api/lorahub/health", user=None).status_code == 200
    assert api.whoami()["name"] == "alice"
    after = api.model_info(repo, files_metadata=True)
    assert after.sha == pushed
    after_files = {s.rfilename: s.blob_id for s in after.siblings}
    assert after_files.pop("after.txt")
    assert after_files == before_files  # the failed commit left nothing
    assert [c.commit_id for c in api.list_repo_commits(repo)] == [pushed, *before_commits]
    found_after = server.request("GET", f"/api/lorahub/search?q=outage{mode}", user=None).json()
    assert [h["sha256"] for h in found_after] == [lora_sha]
    assert server.request("GET", f"/{repo}/resolve/main/style.safetensors", user=None).content == lora.read_bytes()
    # The upload that failed is not linked to the repo; pushing it again completes it.
    verify = server.request("POST", href.removeprefix(server.url).split("/objects/")[0] + "/verify", json={"oid": sha256(content), "size": len(content)})
    assert verify.status_code == 404, verify.text
    api.upload_file(path_or_fileobj=content, path_in_repo="inflight.bin", repo_id=repo)
    assert server.request("GET", f"/{repo}/resolve/main/inflight.bin", user=None).content == content
    assert registry_check_errors(server) == []
    assert server.proc.poll() is None


# -- SQLite -----------------------------------------------------------------------------------------


def test_sqlite_locked_past_busy_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAHUB_SQLITE_BUSY_TIMEOUT_MS", "300")
    server = start_server(tmp_path / "data", None, "sqlite")
    try:
        api, repo = server.api(), "alice/locked"
        api.create_repo(repo)
        lora = write_kohya_lora(tmp_path / "style.safetensors", title="lockedstyle")
        api.upload_file(path_or_fileobj=str(lora), path_in_repo="style.safetensors", repo_id=repo)
        head = api.model_info(repo).sha
        content = os.urandom(100_000)
        href = server.lfs_upload_url(repo, content)

        holder = sqlite3.connect(server.database.removeprefix("sqlite:///"), isolation_level=None, timeout=10)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            # Reads go on (WAL): metadata, search, token lookup, download.
            assert server.request("GET", f"/api/models/{repo}").json()["sha"] == head
            assert len(server.request("GET", "/api/lorahub/search?q=lockedstyle", user=None).json()) == 1
            assert server.request("GET", "/api/whoami-v2", user="bob").json()["name"] == "bob"
            assert server.request("GET", f"/{repo}/resolve/main/style.safetensors", user=None).content == lora.read_bytes()
            # Writes fail with 503 after about one busy timeout (not one per retry).
            for what, call in (
                ("create repo", lambda: server.request("POST", "/api/repos/create", json={"name": "later"})),
                ("commit", lambda: server.request("POST", f"/api/models/{repo}/commit/main", content=commit_body("a.txt", b"a"), headers=NDJSON)),
                ("LFS PUT", lambda: httpx.put(href, content=content, timeout=60)),
            ):
                started = time.monotonic()
                assert_unavailable(call(), what)
                assert time.monotonic() - started < 5, f"{what} waited {time.monotonic() - started:.1f} s"
            assert parts(server) == []
        finally:
            holder.rollback()
            holder.close()
        assert api.model_info(repo).sha == head
        api.create_repo("alice/later")
        ci = api.upload_file(path_or_fileobj=content, path_in_repo="data.bin", repo_id=repo)
        assert api.model_info(repo).sha == ci.oid
        assert server.request("GET", f"/{repo}/resolve/main/data.bin", user=None).content == content
        assert registry_check_errors(server) == []
        assert server.proc.poll() is None
    finally:
        stop_server(server)
