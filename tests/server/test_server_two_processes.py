"""Two ``lorahub serve`` processes, one PostgreSQL database, one data folder: one service (issue 9, load).

Both start at the same moment against an empty database (both migrate: PostgreSQL's advisory lock
makes the second wait and find nothing to do). Then: an LFS object uploaded through A (preupload,
batch, PUT) is verified and committed through B, with an upload URL signed by one process accepted
by the other (the signing key lives in the database); concurrent commits to one repo alternate
between the processes, with and without ``parentCommit``: each lands or gets ``409``, none is lost
and the final tree is what the landed commits say; downloads work through either; a search on B
finds what A committed at once. On SQLite (one machine), three processes starting at once on an
empty database all come up (the migrations wait for the write lock instead of failing).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
from hubkit import LORAHUB, HubServer, drop_pg_database, fresh_pg_database, sha256, write_kohya_lora
from huggingface_hub import CommitOperationAdd, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from lorahub.cli.serving import wait_listening


def launch(data: Path, database: str, name: str) -> tuple[subprocess.Popen, Path]:
    log = data.parent / f"server-{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LORAHUB_DATABASE"))}
    env["LORAHUB_HOME"] = str(data.parent / f"home-{name}")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [LORAHUB, "serve", "--port", "0", "--data", str(data), "--database", database, "--no-ui"],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )
    return proc, log


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """``(A, B)``: two servers started at once on one empty database and one data folder."""
    from sqlmodel import Session

    from lorahub.registry.catalogue import Registry
    from lorahub.registry.hub.auth import create_token

    url = fresh_pg_database()
    data = tmp_path_factory.mktemp("two-processes") / "data"
    started = [launch(data, url, "a"), launch(data, url, "b")]
    try:
        endpoints = [wait_listening(proc, log) for proc, log in started]  # both start at once
        registry = Registry(url, auto_migrate=False)
        tokens: dict[str, str] = {}
        try:
            with Session(registry.engine, expire_on_commit=False) as s:
                for key, user in (("alice", "alice"), ("bob", "bob")):
                    tokens[key], _, _ = create_token(s, user, write=True, name=key)
        finally:
            registry.close()
        yield tuple(
            HubServer(url=ep, data=data, database=url, backend="postgres", log=log, proc=proc, tokens=tokens)
            for ep, (proc, log) in zip(endpoints, started, strict=True)
        )
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_pg_database(url)


@pytest.mark.postgres
def test_started_together_on_an_empty_database(pair) -> None:
    from sqlalchemy import create_engine, text

    from lorahub.registry.migrations import head_revision

    a, b = pair
    for server in pair:
        assert server.proc.poll() is None
        assert server.request("GET", "/api/lorahub/health", user=None).json()["database"] == "postgresql"
        assert " ERROR " not in server.log_text() and "Traceback" not in server.log_text(), server.log_text()[-2000:]
    a.api().create_repo("alice/secret-check")
    for server in pair:  # each process signs an upload URL: one key, created once, shared
        r = server.request(
            "POST", "/alice/secret-check.git/info/lfs/objects/batch", json={"operation": "upload", "objects": [{"oid": "a" * 64, "size": 1}]}
        )
        assert r.status_code == 200, r.text
    engine = create_engine(a.database)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
            assert conn.execute(text("SELECT count(*) FROM hub_secrets")).scalar_one() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_upload_through_one_commit_through_the_other(pair, tmp_path: Path) -> None:
    a, b = pair
    repo = "alice/split"
    a.api().create_repo(repo)
    lora = write_kohya_lora(tmp_path / "split.safetensors", title="splitstyle", trigger="splitword")
    content = lora.read_bytes()
    oid = sha256(content)

    # preupload and LFS batch on A; the URL A signed is taken by B as well (one key in the database).
    r = a.request("POST", f"/api/models/{repo}/preupload/main", json={"files": [{"path": "split.safetensors", "size": len(content), "sample": ""}]})
    assert r.json()["files"][0]["uploadMode"] == "lfs"
    r = a.request("POST", f"/{repo}.git/info/lfs/objects/batch", json={"operation": "upload", "objects": [{"oid": oid, "size": len(content)}]})
    actions = r.json()["objects"][0]["actions"]
    assert actions["upload"]["href"].startswith(a.url)
    put = b.request("PUT", actions["upload"]["href"].removeprefix(a.url), user=None, content=content)
    assert put.status_code == 200, put.text
    verify = b.request("POST", actions["verify"]["href"].removeprefix(a.url), json={"oid": oid, "size": len(content)})
    assert verify.status_code == 200, verify.text

    # Committed through B with the stock client (the object is known: not uploaded again).
    puts = [server.log_text().count('"PUT /api/lorahub/lfs/') for server in pair]
    info = b.api().create_commit(
        repo, operations=[CommitOperationAdd("split.safetensors", str(lora))], commit_message="via B"
    )
    assert [server.log_text().count('"PUT /api/lorahub/lfs/') for server in pair] == puts
    for server in pair:
        assert server.api().model_info(repo).sha == info.oid
        path = hf_hub_download(repo, "split.safetensors", endpoint=server.url, token=server.tokens["alice"], cache_dir=tmp_path / f"c-{server.url[-5:]}")
        assert Path(path).read_bytes() == content
    hits = b.request("GET", "/api/lorahub/search?q=splitword", user=None).json()
    assert [h["sha256"] for h in hits] == [oid]

    # And the other way round: committed through A, found through B at once.
    a.api().upload_file(path_or_fileobj=str(write_kohya_lora(tmp_path / "x.safetensors", title="crossstyle", seed=9)), path_in_repo="x.safetensors", repo_id=repo)
    assert len(b.request("GET", "/api/lorahub/search?q=crossstyle", user=None).json()) == 1
    assert len(b.request("GET", f"/api/lorahub/by-hash/{sha256((tmp_path / 'x.safetensors').read_bytes())}", user=None).json()["matches"]) == 1


@pytest.mark.postgres
def test_concurrent_commits_alternating_between_processes(pair) -> None:
    a, b = pair
    repo = "bob/contended"
    a.api("bob").create_repo(repo)
    base = a.api("bob").model_info(repo).sha
    n = 10
    barrier = threading.Barrier(n)
    results: list = [None] * n
    parents: list = [None] * n

    def push(i: int) -> None:
        server, other = pair[i % 2], pair[(i + 1) % 2]
        barrier.wait(30)
        if i % 4 >= 2:  # two of every four name the head they read, through the other process
            parents[i] = other.api("bob").model_info(repo).sha
        try:
            results[i] = server.api("bob").create_commit(
                repo,
                operations=[CommitOperationAdd(f"f{i}.txt", f"file {i}\n".encode())],
                commit_message=f"commit {i}",
                parent_commit=parents[i],
            ).oid
        except HfHubHTTPError as exc:
            results[i] = exc.response.status_code

    threads = [threading.Thread(target=push, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    landed = {i: oid for i, oid in enumerate(results) if isinstance(oid, str)}
    refused = [i for i, r in enumerate(results) if r == 409]
    assert sorted([*landed, *refused]) == list(range(n)), results  # each lands or gets 409, nothing else
    assert all(i in landed for i in range(n) if i % 4 < 2), results  # without parentCommit: rebuilt, never refused
    heads = {server.api("bob").model_info(repo).sha for server in pair}
    assert len(heads) == 1
    history = [c.commit_id for c in a.api("bob").list_repo_commits(repo)]
    assert history[-1] == base and set(history[:-1]) == set(landed.values())  # none lost, none extra
    assert len(history) == len(landed) + 1
    for i, oid in landed.items():
        if parents[i] is not None:  # landed with parentCommit: right on top of the head it named
            assert history[history.index(oid) + 1] == parents[i]
    files = {s.rfilename for s in b.api("bob").model_info(repo).siblings}
    assert files == {".gitattributes", *(f"f{i}.txt" for i in landed)}
    for i in landed:
        r = pair[(i + 1) % 2].request("GET", f"/{repo}/resolve/main/f{i}.txt", user=None)
        assert r.content == f"file {i}\n".encode()

    # Without contention, parentCommit read through one process is honoured by the other, once.
    head = b.api("bob").model_info(repo).sha
    def op(text: bytes) -> list:
        return [CommitOperationAdd("last.txt", text)]

    assert a.api("bob").create_commit(repo, operations=op(b"on top\n"), commit_message="on top", parent_commit=head).oid in {
        c.commit_id for c in b.api("bob").list_repo_commits(repo)
    }
    with pytest.raises(HfHubHTTPError) as stale:
        b.api("bob").create_commit(repo, operations=op(b"stale\n"), commit_message="stale", parent_commit=head)
    assert stale.value.response.status_code == 409


def test_started_together_on_an_empty_sqlite_database(tmp_path: Path) -> None:
    """SQLite (one machine): the migrations take the write lock up front, so the second process waits
    for the first instead of failing with "database is locked"."""
    import httpx

    data = tmp_path / "data"
    database = f"sqlite:///{data / 'lorahub-server.sqlite'}"
    data.mkdir()
    started = [launch(data, database, name) for name in "abc"]
    try:
        endpoints = [wait_listening(proc, log) for proc, log in started]  # all three start at once
        for ep in endpoints:
            assert httpx.get(f"{ep}/api/lorahub/health").json()["database"] == "sqlite"
    finally:
        for proc, _ in started:
            proc.terminate()
            proc.wait(timeout=15)
