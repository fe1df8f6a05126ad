"""Crashes and damaged storage: SIGKILL ``lorahub serve`` in the middle of an upload and of a commit,
restart it, and check with ``lorahub registry check`` that the database and the blob store agree.

The server's fault points (``lorahub.registry.hub.faults``, inert unless ``$LORAHUB_TEST_FAULT``
is set) make it write a marker file and block at a precise moment, so the kill lands exactly
there; an upload is killed while the test itself streams the PUT body slowly. Every scenario runs
on SQLite (WAL recovery after the kill) and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from hubkit import (
    HubServer,
    drop_pg_database,
    fresh_pg_database,
    sha256,
    start_server,
    stop_server,
    write_kohya_lora,
)
from testkit import wait_for

from lorahub.registry.hub.check import check_storage
from lorahub.registry.hub.faults import ENV, ENV_DIR

LORAHUB = str(Path(sys.executable).with_name("lorahub"))
REPO = "alice/crash"
OLD = time.time() - 3 * 86400  # older than the default grace period (24 h)


class Servers:
    """Starts ``lorahub serve`` processes on one data folder and database; stops what is left at the end."""

    def __init__(self, backend: str, data: Path, database: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
        self.backend, self.data, self.database, self._mp = backend, data, database, monkeypatch
        self.started: list[HubServer] = []

    def start(self, fault: str | None = None) -> HubServer:
        """Start a server, with the fault point ``fault`` armed (same --data and --database every time)."""
        with self._mp.context() as m:
            if fault:
                m.setenv(ENV, fault)
                m.setenv(ENV_DIR, str(self.data / "faults"))
                (self.data / "faults").mkdir(parents=True, exist_ok=True)
            else:
                m.delenv(ENV, raising=False)
            server = start_server(self.data, self.database, self.backend)  # the child copies the environment now
        self.database = server.database
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            stop_server(server)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def servers(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A :class:`Servers` on a fresh data folder; a fresh PostgreSQL database for the postgres variant."""
    url = fresh_pg_database() if request.param == "postgres" else None
    srv = Servers(request.param, tmp_path / "data", url, monkeypatch)
    try:
        yield srv
    finally:
        srv.stop_all()
        if url:
            drop_pg_database(url)


# -- helpers --------------------------------------------------------------------------------------


def kill(server: HubServer) -> None:
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=15)


def marker(data: Path, point: str) -> Path:
    return data / "faults" / f"{point}.reached"


def blob_path(data: Path, sha: str) -> Path:
    return data / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha


def parts(data: Path) -> list[Path]:
    return sorted((data / "blobs" / "tmp").glob("*.part"))


def put_in_background(url: str, content: bytes, *, hold_after: int | None = None) -> tuple[threading.Thread, threading.Event, list]:
    """PUT ``content`` in a thread; with ``hold_after`` the body stalls after that many bytes."""
    import httpx

    release = threading.Event()
    outcome: list = []

    def body():  # noqa: ANN202
        if hold_after is None:
            yield content
            return
        yield content[:hold_after]
        release.wait(60)
        yield content[hold_after:]

    def run() -> None:
        try:
            outcome.append(httpx.put(url, content=body(), timeout=60))
        except Exception as exc:  # noqa: BLE001 - the server is killed under it
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, release, outcome


def commit_in_background(server: HubServer, ops: list) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(server.api().create_commit(REPO, operations=ops, commit_message="crash test"))
        except Exception as exc:  # noqa: BLE001 - the server is killed under it
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, outcome


def check_cli(server: HubServer, *args: str) -> tuple[int, dict]:
    """``lorahub registry check --json ARGS`` (in-process; the real command line runs below too)."""
    from click.testing import CliRunner

    from lorahub.cli.main import cli

    r = CliRunner().invoke(cli, ["registry", "check", "--data", str(server.data), "--database", server.database, "--json", *args])
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, json.loads(r.stdout)


def kinds(report) -> list[tuple[str, str, str | None]]:  # noqa: ANN001 - StorageCheck or its JSON
    issues = report["issues"] if isinstance(report, dict) else [i.model_dump() for i in report.issues]
    return sorted((i["kind"], i["severity"], i["sha256"]) for i in issues)


def download(server: HubServer, path: str, cache: Path) -> bytes:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(REPO, path, endpoint=server.url, token=server.tokens["alice"], cache_dir=cache)).read_bytes()


def sqlite_after_kill(server: HubServer) -> None:
    """The kill left a WAL behind (nothing checkpointed it): the restart must recover from it."""
    if server.backend != "sqlite":
        return
    db = Path(server.database.removeprefix("sqlite:///"))
    wal = db.with_name(db.name + "-wal")
    assert wal.is_file() and wal.stat().st_size > 0


def sqlite_integrity(server: HubServer) -> None:
    if server.backend != "sqlite":
        return
    import sqlite3

    conn = sqlite3.connect(server.database.removeprefix("sqlite:///"))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


# -- SIGKILL during an upload -------------------------------------------------------------------


def test_kill_during_lfs_upload_then_repush(servers: Servers, tmp_path: Path) -> None:
    data = servers.data
    content = os.urandom(300_000)
    sha = sha256(content)

    # (1) Killed while the PUT body is still arriving: a tmp/*.part exists, nothing else.
    server = servers.start()
    server.api().create_repo(REPO)
    head = server.api().model_info(REPO).sha
    t, release, outcome = put_in_background(server.lfs_upload_url(REPO, content), content, hold_after=100_000)
    wait_for(lambda: any(p.stat().st_size > 0 for p in parts(data)), "the partial upload on disk")
    kill(server)
    release.set()
    t.join(30)
    assert outcome and isinstance(outcome[0], Exception)

    # Restart (armed to stop the next upload after its blob landed, before its rows are written).
    server = servers.start(fault="upload-before-record")
    assert not blob_path(data, sha).exists()  # no partial blob is ever visible
    assert len(parts(data)) == 1  # younger than an hour: the start-up sweep keeps it
    assert server.api().model_info(REPO).sha == head
    assert not server.api().file_exists(REPO, "weights.bin")
    report = check_storage(data, server.database)  # while the server runs
    assert report.ok and report.errors == 0
    assert kinds(report) == [("stale_part", "pending", None)]  # in progress, as far as 24 h of grace can tell
    assert check_storage(data, server.database, repair=True).repaired == 0 and len(parts(data)) == 1  # left alone
    code, fixed = check_cli(server, "--repair", "--grace", "0")
    assert code == 0 and fixed["ok"]
    assert [(i["kind"], i["severity"], i["action"], i["fixed"]) for i in fixed["issues"]] == [("stale_part", "orphan", "removed", True)]
    assert parts(data) == []

    # (2) Killed after the blob was renamed into place but before the database knows it.
    href = server.lfs_upload_url(REPO, content)  # the object is still wanted: nothing recorded it
    t, _, outcome = put_in_background(href, content)
    wait_for(lambda: marker(data, "upload-before-record").exists(), "the upload-before-record fault point")
    assert blob_path(data, sha).is_file()
    kill(server)
    t.join(30)
    assert outcome and isinstance(outcome[0], Exception)

    server = servers.start()
    sqlite_integrity(server)
    report = check_storage(data, server.database)
    assert report.ok and kinds(report) == [("orphan_file", "pending", sha)]  # a file no row or commit names
    assert not server.api().file_exists(REPO, "weights.bin")

    # (3) Re-running the push completes it: the object is uploaded again (the batch API still wants
    # it), recorded, committed, and downloads byte-identical; storage is clean.
    server.api().upload_file(path_or_fileobj=content, path_in_repo="weights.bin", repo_id=REPO)
    assert download(server, "weights.bin", tmp_path / "cache") == content
    report = check_storage(data, server.database, grace_s=0)
    assert report.ok and report.issues == [], report.issues


# -- SIGKILL during a commit --------------------------------------------------------------------


def test_kill_during_commit_then_repush(servers: Servers, tmp_path: Path) -> None:
    from huggingface_hub import CommitOperationAdd

    data = servers.data
    lora = write_kohya_lora(tmp_path / "lora" / "crash.safetensors", seed=3)
    weights = lora.read_bytes()
    notes = b"notes of the crash test\n" + os.urandom(16).hex().encode()

    def ops() -> list:
        return [CommitOperationAdd("crash.safetensors", weights), CommitOperationAdd("notes.txt", notes)]

    # (1) Killed inside the commit, before its transaction: the LFS object is uploaded and
    # recorded, the regular file's blob written, no commit.
    server = servers.start(fault="commit-before-land")
    server.api().create_repo(REPO)
    head = server.api().model_info(REPO).sha
    t, outcome = commit_in_background(server, ops())
    wait_for(lambda: marker(data, "commit-before-land").exists(), "the commit-before-land fault point")
    kill(server)
    t.join(30)
    assert outcome and isinstance(outcome[0], Exception)

    server = servers.start(fault="commit-after-land")
    info = server.api().model_info(REPO)
    assert info.sha == head and [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert not server.api().file_exists(REPO, "crash.safetensors")
    report = check_storage(data, server.database)
    assert report.ok and report.errors == 0
    assert kinds(report) == sorted([("orphan_blob", "pending", sha256(weights)), ("orphan_file", "pending", sha256(notes))])
    assert "never committed" in next(i.message for i in report.issues if i.kind == "orphan_blob")
    report = check_storage(data, server.database, repair=True, grace_s=0)
    assert report.ok and report.repaired == 2 and report.orphans == 0
    assert not blob_path(data, sha256(weights)).exists() and not blob_path(data, sha256(notes)).exists()
    assert check_storage(data, server.database, grace_s=0).issues == []

    # (2) Killed right after the commit's transaction, before the response: the commit landed.
    t, outcome = commit_in_background(server, ops())
    wait_for(lambda: marker(data, "commit-after-land").exists(), "the commit-after-land fault point")
    kill(server)
    t.join(30)
    assert outcome and isinstance(outcome[0], Exception)
    sqlite_after_kill(server)

    server = servers.start()
    sqlite_integrity(server)
    info = server.api().model_info(REPO, files_metadata=True)
    assert info.sha != head
    assert sorted(s.rfilename for s in info.siblings) == [".gitattributes", "crash.safetensors", "notes.txt"]
    assert next(s for s in info.siblings if s.rfilename == "crash.safetensors").lfs.sha256 == sha256(weights)
    assert [c.commit_id for c in server.api().list_repo_commits(REPO)][:2] == [info.sha, head]
    code, report = check_cli(server, "--grace", "0")
    assert code == 0 and report["ok"] and report["issues"] == [] and report["referenced"] == 3

    # (3) Re-running the push completes (nothing left to change) and the files download byte-identical.
    server.api().create_commit(REPO, operations=ops(), commit_message="again")
    cache = tmp_path / "cache"
    assert download(server, "crash.safetensors", cache) == weights
    assert download(server, "notes.txt", cache) == notes
    hits = server.request("GET", "/api/lorahub/search", params={"q": "crash"}).json()  # indexed in the same transaction
    assert any(h["sha256"] == sha256(weights) for h in hits), hits


# -- damaged storage ------------------------------------------------------------------------------


def test_check_reports_and_repairs_damaged_storage(servers: Servers, tmp_path: Path) -> None:
    import sqlalchemy as sa
    from huggingface_hub import CommitOperationAdd

    from lorahub.registry.database import make_engine
    from lorahub.registry.hub.gitobj import git_blob_id
    from lorahub.registry.hub.tables import HubBlob, HubRepo, HubRepoObject

    data = servers.data
    server = servers.start()
    engine = make_engine(server.database)

    def sql(stmt):  # noqa: ANN001, ANN202
        with engine.begin() as conn:
            return conn.execute(stmt)

    def age(sha: str) -> None:  # three days old: past the default grace period
        for table in (HubBlob.__table__, HubRepoObject.__table__):
            sql(sa.update(table).where(table.c.sha256 == sha).values(created_at=datetime(2000, 1, 1)))
        if blob_path(data, sha).exists():
            os.utime(blob_path(data, sha), (OLD, OLD))

    try:
        api = server.api()
        api.create_repo(REPO)
        api.create_repo("alice/other")
        a, b, c, d, e, f, g, h = (os.urandom(50_000 + i) for i in range(8))
        committed = {"a.bin": a, "b.bin": b, "f.bin": f, "g.bin": g, "h.bin": h}
        api.create_commit(REPO, operations=[CommitOperationAdd(k, v) for k, v in committed.items()], commit_message="five")
        # d: uploaded through the LFS API, never committed; f: also uploaded to alice/other, not committed there.
        for repo, content in ((REPO, d), ("alice/other", f)):
            t, _, outcome = put_in_background(server.lfs_upload_url(repo, content), content)
            t.join(30)
            assert outcome[0].status_code == 200
        age(sha256(d))
        links = HubRepoObject.__table__.c
        other = sa.select(HubRepo.id).where(HubRepo.key == "model/alice/other").scalar_subquery()
        sql(sa.update(HubRepoObject.__table__).where(links.sha256 == sha256(f), links.repo_id == other).values(created_at=datetime(2000, 1, 1)))
        report = check_storage(data, server.database)
        assert report.ok and kinds(report) == sorted([("orphan_blob", "orphan", sha256(d)), ("orphan_object", "orphan", sha256(f))])

        # The damage: a flipped byte in a, b deleted, c and e blob files nothing records (c old,
        # e just written), g's hub_blobs row gone, a wrong size recorded for h, an old unfinished
        # upload, a stray file.
        pa = blob_path(data, sha256(a))
        raw = bytearray(pa.read_bytes())
        raw[1234] ^= 0x01
        pa.write_bytes(bytes(raw))  # 0444, but we are root
        blob_path(data, sha256(b)).unlink()
        for content, mtime in ((c, OLD), (e, None)):
            p = blob_path(data, sha256(content))
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            if mtime:
                os.utime(p, (mtime, mtime))
        sql(sa.delete(HubBlob.__table__).where(HubBlob.__table__.c.sha256 == sha256(g)))
        sql(sa.update(HubBlob.__table__).where(HubBlob.__table__.c.sha256 == sha256(h)).values(size=len(h) + 1))
        part = data / "blobs" / "tmp" / "0123abcd.part"
        part.write_bytes(b"half an upload")
        os.utime(part, (OLD, OLD))
        stray = data / "blobs" / "sha256" / "ab" / "notes.txt"
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_text("not a blob")
        snapshot = sorted((p.relative_to(data), p.stat().st_size) for p in (data / "blobs").rglob("*") if p.is_file())

        # Read-only check (the real command line, while the server runs): one line per issue, exit code 1.
        r = subprocess.run([LORAHUB, "registry", "check", "--data", str(data), "--database", server.database],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 10 and "PROBLEMS" in r.stderr and "4 error(s), 5 orphan(s), 1 pending" in r.stderr
        assert any(line.startswith("error   corrupt") and sha256(a) in line and "a.bin" in line for line in lines)
        assert any(line.startswith("error   missing") and sha256(b) in line and "b.bin" in line for line in lines)
        code, report = check_cli(server)
        assert code == 1 and not report["ok"] and report["errors"] == 4
        assert kinds(report) == sorted([
            ("corrupt", "error", sha256(a)),
            ("missing", "error", sha256(b)),
            ("orphan_file", "orphan", sha256(c)),
            ("orphan_blob", "orphan", sha256(d)),
            ("orphan_file", "pending", sha256(e)),
            ("orphan_object", "orphan", sha256(f)),
            ("unrecorded", "error", sha256(g)),
            ("size_mismatch", "error", sha256(h)),
            ("stale_part", "orphan", None),
            ("stray", "orphan", None),
        ])
        by_kind = {i["kind"]: i for i in report["issues"]}
        assert by_kind["corrupt"]["references"][0].startswith(f"model/{REPO}@") and by_kind["corrupt"]["references"][0].endswith(":a.bin")
        assert by_kind["orphan_object"]["references"] == ["model/alice/other (upload)"]
        assert sorted((p.relative_to(data), p.stat().st_size) for p in (data / "blobs").rglob("*") if p.is_file()) == snapshot

        # Repair: orphans removed, the corrupt blob and the stray moved aside (not deleted), g's row
        # recorded, the young orphan left alone; what commits name stays an error (nothing a commit
        # references is removed), so the exit code is still 1.
        code, report = check_cli(server, "--repair")
        assert code == 1 and report["errors"] == 3 and report["orphans"] == 0 and report["pending"] == 1
        actions = {(i["kind"], i["sha256"]): (i["action"], i["fixed"]) for i in report["issues"]}
        assert actions == {
            ("corrupt", sha256(a)): ("quarantined", False),
            ("missing", sha256(b)): (None, False),
            ("orphan_file", sha256(c)): ("removed", True),
            ("orphan_blob", sha256(d)): ("removed", True),
            ("orphan_file", sha256(e)): (None, False),
            ("orphan_object", sha256(f)): ("removed", True),
            ("unrecorded", sha256(g)): ("recorded", True),
            ("size_mismatch", sha256(h)): (None, False),
            ("stale_part", None): ("removed", True),
            ("stray", None): ("quarantined", True),
        }
        quarantined = sorted((data / "blobs" / "quarantine").iterdir())
        assert sorted(p.read_bytes() for p in quarantined) == sorted([bytes(raw), b"not a blob"])
        assert not blob_path(data, sha256(c)).exists() and not blob_path(data, sha256(d)).exists()
        assert blob_path(data, sha256(e)).exists() and blob_path(data, sha256(f)).exists()
        assert not part.exists() and not stray.exists()
        row = sql(sa.select(HubBlob.size, HubBlob.git_sha1).where(HubBlob.sha256 == sha256(g))).one()
        assert tuple(row) == (len(g), git_blob_id(g))
        code, report = check_cli(server)
        assert kinds(report) == sorted([("missing", "error", sha256(a)), ("missing", "error", sha256(b)),
                                        ("orphan_file", "pending", sha256(e)), ("size_mismatch", "error", sha256(h))])

        # Pushing the files again stores the lost blobs again; with h's size put right, all agree.
        sql(sa.update(HubBlob.__table__).where(HubBlob.__table__.c.sha256 == sha256(h)).values(size=len(h)))
        api.upload_file(path_or_fileobj=a, path_in_repo="a.bin", repo_id=REPO)
        api.upload_file(path_or_fileobj=b, path_in_repo="b.bin", repo_id=REPO)
        code, report = check_cli(server)
        assert code == 0 and report["ok"] and kinds(report) == [("orphan_file", "pending", sha256(e))]
        cache = tmp_path / "cache"
        for path, content in committed.items():
            assert download(server, path, cache) == content
    finally:
        engine.dispose()


def test_check_refuses_what_is_not_a_server_folder(tmp_path: Path) -> None:
    r = subprocess.run([LORAHUB, "registry", "check", "--data", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a lorahub serve data folder" in r.stderr and r.stdout == ""
    from click.testing import CliRunner

    from lorahub.cli.main import cli

    (tmp_path / "srv" / "blobs").mkdir(parents=True)
    r = CliRunner(env={"LORAHUB_DATABASE_URL": None}).invoke(cli, ["registry", "check", "--data", str(tmp_path / "srv")])
    assert r.exit_code == 2 and "no database" in r.stderr
    r = CliRunner().invoke(cli, ["registry", "check", "--data", str(tmp_path / "srv"), "--grace", "soon"])
    assert r.exit_code == 2 and "not a duration" in r.stderr


def test_storing_a_blob_again_refreshes_its_mtime(tmp_path: Path) -> None:
    """An orphan that a new upload or commit stores again turns young: --repair leaves it alone."""
    from lorahub.registry.hub.blobstore import LocalBlobStore

    store = LocalBlobStore(tmp_path / "blobs")
    first = store.put_bytes(b"same content")
    path = store.path_of(first.sha256)
    os.utime(path, (OLD, OLD))
    again = store.put_bytes(b"same content")
    assert not again.created and path.stat().st_mtime > time.time() - 60
    assert path.read_bytes() == b"same content" and oct(path.stat().st_mode & 0o777) == "0o444"
