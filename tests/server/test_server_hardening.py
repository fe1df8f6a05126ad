"""Issue 13, the Hub API half: each test is the attack its rule stops, over real HTTP.

* YAML (``/api/validate-yaml``, README front matter in commits): an alias bomb and 5,000-deep
  nesting are refused with one line, in bounded time and memory; the server stays up.
* ``.git`` under any name a file system gives it is refused on commit, and ``lorahub pull`` of a
  repo that holds one (planted in the server's database, since the server refuses it) writes nothing.
* Tree listing and ``paths-info`` are linear in the number of folders.
* The Host header is checked (DNS rebinding) and CORS answers only configured origins.
* Repo ids are never reused, upload URLs are signed over repo id and name, ``_id`` is opaque.
* A refused commit leaves none of its blobs on disk.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import httpx
import pytest
from hubkit import NDJSON, commit_body, ndjson, sha256
from test_safeyaml import alias_bomb
from test_server_hostile import needs_proc, peak, reset_peak

from lorahub.hub.paths import is_git_alias

# --------------------------------------------------------------------------- YAML (item 3)

#: A 5,000-deep flow sequence: the RecursionError (500 with a traceback) of issue 13.
DEEP = "x: " + "[" * 5000 + "]" * 5000 + "\n"


def card(front: str) -> str:
    return f"---\n{front}---\n\n# a card\n"


def _blob_path(srv, data: bytes) -> Path:  # noqa: ANN001 - HubServer
    oid = sha256(data)
    return srv.data / "blobs" / "sha256" / oid[:2] / oid[2:4] / oid


@needs_proc
@pytest.mark.parametrize("front", [alias_bomb(), alias_bomb(7), DEEP], ids=["bomb-9-levels", "bomb-7-levels", "deep"])
def test_hostile_yaml_is_refused_in_bounded_time_and_memory(sqlite_server, front: str) -> None:
    srv = sqlite_server
    pid = srv.proc.pid
    base = reset_peak(pid)
    started = time.monotonic()
    # anonymous: /api/validate-yaml needs no token
    r = srv.request("POST", "/api/validate-yaml", user=None, json={"content": card(front), "repoType": "model"})
    assert r.status_code == 400, r.text[:300]
    (err,) = r.json()["errors"]
    assert re.search(r"anchors|aliases|nest", err["message"]) and "\n" not in err["message"], err
    # a commit whose README carries it
    repo = "alice/yaml-" + sha256(front.encode())[:8]
    srv.api().create_repo(repo, exist_ok=True)
    head = srv.api().model_info(repo).sha
    r = srv.request("POST", f"/api/models/{repo}/commit/main", content=commit_body("README.md", card(front).encode()), headers=NDJSON)
    assert r.status_code == 400, r.text[:300]
    assert "README.md metadata" in r.json()["error"] and "\n" not in r.json()["error"]
    assert time.monotonic() - started < 10.0
    assert peak(pid) - base < 48 << 20, f"the server's peak memory grew by {(peak(pid) - base) >> 20} MiB"
    assert srv.api().model_info(repo).sha == head
    assert not _blob_path(srv, card(front).encode()).exists()  # item 9: the refused README is not kept
    assert srv.proc.poll() is None and "Traceback" not in srv.log_text()


def test_yaml_parse_errors_are_4xx_with_one_line(sqlite_server) -> None:
    srv = sqlite_server
    for front in ("a: [1, 2\n", "a: !!python/object:os.system x\n", "a: 2024-13-45\n", "a: " + "1" * 6000 + "\n",
                  "? [a, b]\n: c\n", "a: 1\n...\nb: 2\n", "- just\n- a list\n", "2024-01-01: date key\n"):
        r = srv.request("POST", "/api/validate-yaml", user=None, json={"content": card(front)})
        if front.startswith("2024-01-01"):  # valid, and a date key does not break the JSON answer
            assert r.status_code == 200, r.text
            continue
        assert r.status_code == 400, (front[:40], r.text[:300])
        msg = r.json()["errors"][0]["message"]
        assert msg.startswith("README.md metadata") and "\n" not in msg and len(msg) < 400, msg
    repo = "alice/yaml-dates"
    srv.api().create_repo(repo, exist_ok=True)
    r = srv.request("POST", f"/api/models/{repo}/commit/main", content=commit_body("README.md", card("2024-01-01: x\nlicense: mit\n").encode()), headers=NDJSON)
    assert r.status_code == 200, r.text
    assert srv.request("GET", f"/api/models/{repo}").json()["cardData"] == {"2024-01-01": "x", "license": "mit"}


# --------------------------------------------------------------------------- .git paths (item 4)

GIT_PATHS = [".GIT/config", ".Git/hooks/x", "sub/.git/config", "git~1/config", "GIT~1/config", "a/.git",
             ".git./config", ".git::$INDEX_ALLOCATION/config", "\u200c.git/config"]
#: core.fsmonitor runs this command on the next `git status` in the folder holding the planted .git
FSMONITOR = b"[core]\n\tfsmonitor = touch /tmp/lorahub-pwned\n"


@pytest.mark.parametrize("path", GIT_PATHS)
def test_git_folders_under_any_name_are_refused_on_commit(sqlite_server, path: str) -> None:
    srv = sqlite_server
    repo = "alice/gitpaths"
    srv.api().create_repo(repo, exist_ok=True)
    head = srv.api().model_info(repo).sha
    r = srv.request("POST", f"/api/models/{repo}/commit/main", content=commit_body(path, FSMONITOR), headers=NDJSON)
    assert r.status_code == 400, (path, r.text)
    assert "invalid path" in r.json()["error"] and "\n" not in r.json()["error"]
    r = srv.request("POST", f"/api/models/{repo}/preupload/main", json={"files": [{"path": path, "sample": "", "size": 1}]})
    assert r.status_code == 400 and "invalid path" in r.json()["error"]
    assert srv.api().model_info(repo).sha == head
    # the real client (huggingface_hub) gets the refusal too, where it does not refuse by itself (exact '.git')
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises((HfHubHTTPError, ValueError)) as err:
        srv.api().upload_file(path_or_fileobj=FSMONITOR, path_in_repo=path, repo_id=repo)
    if isinstance(err.value, HfHubHTTPError):
        assert err.value.response.status_code == 400
    else:
        assert path.split("/").count(".git") == 1, err.value
    assert srv.api().model_info(repo).sha == head


def plant_file(srv, repo: str, path: str, content_of: str = ".gitattributes") -> None:  # noqa: ANN001 - HubServer
    """Add ``path`` to the head commit of ``repo`` behind the server's back (the server refuses it
    through the API): a row in hub_files, pointing at the blob of ``content_of``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(srv.database)
    try:
        with engine.begin() as conn:
            commit = conn.execute(
                text("SELECT c.id FROM hub_commits c JOIN hub_repos r ON r.id = c.repo_id WHERE r.key = :k AND c.oid = r.sha"),
                {"k": f"model/{repo}".lower()},
            ).scalar_one()
            row = conn.execute(
                text("SELECT size, sha256, git_oid, lfs FROM hub_files WHERE commit_id = :c AND path = :p"), {"c": commit, "p": content_of}
            ).one()
            conn.execute(
                text("INSERT INTO hub_files (commit_id, path, size, sha256, git_oid, lfs) VALUES (:c, :p, :s, :h, :g, :l)"),
                {"c": commit, "p": path, "s": row.size, "h": row.sha256, "g": row.git_oid, "l": row.lfs},
            )
    finally:
        engine.dispose()


def _git_aliases_under(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if any(is_git_alias(part) for part in p.relative_to(root).parts)]


@pytest.mark.parametrize("path", [".GIT/config", ".Git/hooks/x", "sub/.git/config", "git~1/config"])
def test_pull_never_writes_a_git_folder(sqlite_server, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants
    from click.testing import CliRunner

    from lorahub.cli.main import cli

    srv = sqlite_server
    repo = f"alice/planted-{sha256(path.encode())[:8]}"
    srv.api().create_repo(repo)
    srv.api().upload_file(path_or_fileobj=FSMONITOR, path_in_repo="hooks.cfg", repo_id=repo)
    plant_file(srv, repo, path, content_of="hooks.cfg")
    names = {s.rfilename for s in srv.api().model_info(repo).siblings}
    assert path in names  # the server now lists (and serves) it: the client is on its own
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    for target in ([ "--to", str(tmp_path / "out")], []):  # into a folder, and into the huggingface_hub cache
        res = CliRunner().invoke(cli, ["pull", repo, "--endpoint", srv.url, "--token", srv.tokens["alice"], "--no-register", *target])
        assert res.exit_code == 1, res.output
        line = res.output.strip()
        assert "\n" not in line and "refused to pull" in line and "nothing was downloaded" in line, line
    assert not (tmp_path / "out").exists()
    assert _git_aliases_under(tmp_path) == []
    assert not any(p.is_file() for p in tmp_path.rglob("*") if p.name in ("config", "x", "hooks.cfg"))


# --------------------------------------------------------------------------- tree and paths-info (item 5)


def _folders_repo(srv, repo: str, folders: int) -> None:  # noqa: ANN001 - HubServer
    srv.api().create_repo(repo, exist_ok=True)
    lines = [{"key": "header", "value": {"summary": f"{folders} folders"}}]
    content = base64.b64encode(b"x").decode()
    lines += [{"key": "file", "value": {"path": f"d{i:05d}/f.txt", "content": content, "encoding": "base64"}} for i in range(folders)]
    r = srv.request("POST", f"/api/models/{repo}/commit/main", content=ndjson(*lines), headers=NDJSON)
    assert r.status_code == 200, r.text[:300]


def _cpu_ns(pid: int) -> int:
    """CPU time a process's threads have used so far, in ns (``/proc/<pid>/task/*/schedstat``, first field)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            pass
    return total


@needs_proc
def test_tree_and_paths_info_are_linear_in_the_number_of_folders(sqlite_server) -> None:
    """Anonymous ``GET .../tree/main?limit=1`` took 7.1 s at 4,000 folders (every folder's oid
    computed by scanning every file, before paging). Compared as a ratio (4,000 against 1,000
    folders; linear is 4, the old code 16), in the server's CPU time, not as absolute wall times: the
    machine may be busy."""
    srv = sqlite_server
    sizes = (1000, 4000)
    for n in sizes:
        _folders_repo(srv, f"alice/folders-{n}", n)
    calls = {
        "tree": lambda http, n: http.get(f"/api/models/alice/folders-{n}/tree/main", params={"limit": 1}),
        "recursive": lambda http, n: http.get(f"/api/models/alice/folders-{n}/tree/main", params={"recursive": "true", "limit": 1000}),
        "paths-info": lambda http, n: http.post(f"/api/models/alice/folders-{n}/paths-info/main", data={"paths": [f"d{i:05d}" for i in range(n)]}),
    }
    best = {(what, n): float("inf") for what in calls for n in sizes}
    with httpx.Client(base_url=srv.url, timeout=120) as http:
        for _ in range(5):  # interleaved, best of 5
            for what, call in calls.items():
                for n in sizes:
                    # the server process's own CPU time (ns, every thread): other work on a busy machine
                    # stretches wall time, not this
                    started = _cpu_ns(srv.proc.pid)
                    r = call(http, n)
                    best[what, n] = min(best[what, n], (_cpu_ns(srv.proc.pid) - started) / 1e9)
                    assert r.status_code == 200, r.text[:200]
                    if what == "tree":
                        assert len(r.json()) == 1 and 'rel="next"' in r.headers["link"]
                    elif what == "paths-info":
                        assert len(r.json()) == n and r.json()[0]["type"] == "directory"
    times = {what: (best[what, sizes[0]], best[what, sizes[1]]) for what in calls}
    for what, (small, big) in times.items():
        assert big / small <= 5.0, f"{what}: {big * 1000:.0f} ms at 4,000 folders, {small * 1000:.0f} ms at 1,000 ({big / small:.1f}x)"
    # the items are still right: the folder oid is the one of the files below it, on any page
    page2 = httpx.get(f"{srv.url}/api/models/alice/folders-1000/tree/main", params={"limit": 2, "cursor": 2}).json()
    assert [i["path"] for i in page2] == ["d00001", "d00002"] and all(i["type"] == "directory" for i in page2)
    full = {i.path: i.tree_id for i in srv.api().list_repo_tree("alice/folders-1000") if hasattr(i, "tree_id")}
    assert {i["path"]: i["oid"] for i in page2} == {k: full[k] for k in ("d00001", "d00002")}


# --------------------------------------------------------------------------- repo ids, upload URLs (items 8, 9)

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


def _lfs_batch(srv, repo: str, data: bytes) -> dict:  # noqa: ANN001 - HubServer
    r = srv.request("POST", f"/{repo}.git/info/lfs/objects/batch", json={"operation": "upload", "objects": [{"oid": sha256(data), "size": len(data)}]})
    assert r.status_code == 200, r.text
    return r.json()["objects"][0]


def test_a_deleted_repos_upload_url_cannot_reach_a_new_repo_of_the_same_name(hub_server) -> None:
    """SQLite reused the primary key of the newest repo after its delete, and upload URLs were signed
    over that number only: the old URL of a deleted repo linked an object into the new repo."""
    srv = hub_server
    api = srv.api()
    repo = "alice/reborn"
    data = b"object uploaded through a stale URL " + srv.backend.encode()
    api.create_repo(repo)
    first_id = srv.request("GET", f"/api/models/{repo}").json()["_id"]
    href = _lfs_batch(srv, repo, data)["actions"]["upload"]["href"]
    assert first_id in href and OBJECT_ID.match(first_id)  # the URL names the opaque id, not a row number
    api.delete_repo(repo)
    api.create_repo(repo)
    second_id = srv.request("GET", f"/api/models/{repo}").json()["_id"]
    assert second_id != first_id
    put = httpx.put(href, content=data)
    assert put.status_code in (403, 404), put.text
    assert "actions" in _lfs_batch(srv, repo, data)  # not linked: the new repo still asks for the bytes
    line = ndjson({"key": "header", "value": {"summary": "stale"}},
                  {"key": "lfsFile", "value": {"path": "stale.bin", "algo": "sha256", "oid": sha256(data), "size": len(data)}})
    r = srv.request("POST", f"/api/models/{repo}/commit/main", content=line, headers=NDJSON)
    assert r.status_code == 400 and "not uploaded to this repo" in r.json()["error"]
    # a fresh URL of the new repo works, and only for it
    fresh = _lfs_batch(srv, repo, data)["actions"]["upload"]["href"]
    assert second_id in fresh and httpx.put(fresh, content=data).status_code == 200
    assert srv.request("POST", f"/api/models/{repo}/commit/main", content=line, headers=NDJSON).status_code == 200
    # a forged id, or another repo's id with this signature, is the same 403 as a bad signature
    other = srv.request("GET", "/api/models/alice/reborn").json()["_id"]
    for bad in (href.replace(first_id, "0" * 24), href.replace(first_id, "1"), fresh.replace(second_id, first_id)):
        assert httpx.put(bad, content=data).status_code == 403, bad
    assert other == second_id


def test_repo_ids_are_opaque_stable_and_never_reused(hub_server) -> None:
    srv = hub_server
    api = srv.api()
    ids = []
    for i in range(3):
        r = srv.request("POST", "/api/repos/create", json={"name": f"opaque-{i}"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
        assert srv.request("GET", f"/api/models/alice/opaque-{i}").json()["_id"] == ids[-1]  # stable
    assert all(OBJECT_ID.match(i) for i in ids) and len(set(ids)) == 3
    assert not any(abs(int(a, 16) - int(b, 16)) < 1000 for a, b in zip(ids, ids[1:], strict=False))  # not a counter
    listed = {m["id"]: m["_id"] for m in srv.request("GET", "/api/models", params={"author": "alice"}).json()}
    assert [listed[f"alice/opaque-{i}"] for i in range(3)] == ids
    # primary keys: deleting the newest repo does not hand its key to the next one
    from sqlalchemy import create_engine, text

    engine = create_engine(srv.database)
    try:
        def pk(name: str) -> int:
            with engine.connect() as conn:
                return conn.execute(text("SELECT id FROM hub_repos WHERE key = :k"), {"k": f"model/alice/{name}"}).scalar_one()

        gone = pk("opaque-2")
        api.delete_repo("alice/opaque-2")
        api.create_repo("alice/opaque-3")
        assert pk("opaque-3") > gone
    finally:
        engine.dispose()


def _blob_files(srv) -> set[str]:  # noqa: ANN001 - HubServer
    return {p.name for p in (srv.data / "blobs" / "sha256").glob("*/*/*")}


def test_a_refused_commit_leaves_none_of_its_blobs(hub_server) -> None:
    srv = hub_server
    repo = "alice/refused"
    srv.api().create_repo(repo)
    kept = b"already committed content " + srv.backend.encode()
    assert srv.request("POST", f"/api/models/{repo}/commit/main", content=commit_body("kept.txt", kept), headers=NDJSON).status_code == 200
    head = srv.api().model_info(repo).sha

    def file_line(path: str, data: bytes) -> dict:
        return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}

    header = {"key": "header", "value": {"summary": "refused"}}
    cases = {
        "bad path on a later line": [file_line("a.txt", b"new 1"), file_line("sub/.GIT/config", b"new 2")],
        "README alias bomb": [file_line("b.txt", b"new 3"), file_line("README.md", card(alias_bomb()).encode())],
        "invalid adapter": [file_line("c.txt", b"new 4"), file_line("broken.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}xxxxx")],
        "stale parent": [file_line("d.txt", b"new 5")],
        "reused content": [file_line("again.txt", kept), file_line("e.txt", b"new 6"), file_line("x/CON", b"new 7")],
    }
    before = _blob_files(srv)
    for label, ops in cases.items():
        hdr = {"key": "header", "value": {"summary": label, "parentCommit": "f" * 40}} if label == "stale parent" else header
        r = srv.request("POST", f"/api/models/{repo}/commit/main", content=ndjson(hdr, *ops), headers=NDJSON)
        assert r.status_code in (400, 409, 422), (label, r.status_code, r.text[:200])
        assert _blob_files(srv) == before, label
    assert sha256(kept) in before  # content of a landed commit stays
    assert srv.api().model_info(repo).sha == head
    assert srv.request("GET", f"/{repo}/resolve/main/kept.txt", user=None).content == kept


def test_a_refused_commit_never_removes_the_blob_of_a_concurrent_one(hub_server) -> None:
    """Two commits with the same new content at once, one refused: the landed one's file stays
    readable (the cleanup re-checks under the lock that landing takes; landing stores it again)."""
    from concurrent.futures import ThreadPoolExecutor

    srv = hub_server
    repo = "alice/racing"
    srv.api().create_repo(repo)

    def commit(i: int, refused: bool) -> int:
        data = f"shared content {i}".encode()
        ops = [{"key": "file", "value": {"path": f"f{i}-{int(refused)}.txt", "content": base64.b64encode(data).decode()}}]
        if refused:
            ops.append({"key": "file", "value": {"path": ".Git/x", "content": ""}})
        r = srv.request("POST", f"/api/models/{repo}/commit/main", content=ndjson({"key": "header", "value": {"summary": str(i)}}, *ops), headers=NDJSON)
        return r.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: commit(*job), [(i, refused) for i in range(12) for refused in (False, True)]))
    assert results == [200, 400] * 12
    for i in range(12):
        got = srv.request("GET", f"/{repo}/resolve/main/f{i}-0.txt", user=None)
        assert got.status_code == 200 and got.content == f"shared content {i}".encode(), (i, got.status_code)


# --------------------------------------------------------------------------- Host header and CORS (item 7)

CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials")


def _port(srv) -> int:  # noqa: ANN001 - HubServer
    return int(srv.url.rsplit(":", 1)[1])


def test_a_dns_rebinding_host_is_refused(sqlite_server) -> None:
    """A page of attacker.example whose name now resolves to 127.0.0.1 sends ``Host: attacker.example``."""
    from testkit import raw_http

    srv = sqlite_server
    port = _port(srv)
    for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.attacker.example:{port}",
                 f"localhost.attacker.example:{port}", f"xn--80ak6aa92e.com:{port}", "", f"[::1]x:{port}", "a b"):
        for method, path, kw in (("GET", "/api/models", {}), ("GET", "/api/whoami-v2", {}),
                                 ("POST", "/api/validate-yaml", {"json": {"content": "---\na: 1\n---\n"}}),
                                 ("GET", "/alice/gitpaths/resolve/main/.gitattributes", {}), ("GET", "/docs", {})):
            r = srv.request(method, path, headers={"Host": host}, **kw)
            assert r.status_code == 421, (host, path, r.status_code)
            assert "Host" in r.json()["error"] and "\n" not in r.json()["error"]
    two = raw_http(srv.url, f"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: attacker.example\r\n\r\n".encode())
    assert two.startswith((b"HTTP/1.1 421", b"HTTP/1.1 400")), two[:100]
    # the names the server is known by, and addresses (a rebinding page cannot send an address)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"localhost.:{port}", f"[::1]:{port}",
                 "127.0.0.1", f"192.168.1.20:{port}", f"[fe80::1]:{port}"):
        r = srv.request("GET", "/api/whoami-v2", headers={"Host": host})
        assert r.status_code == 200 and r.json()["name"] == "alice", (host, r.status_code)


def test_cors_answers_no_foreign_origin(sqlite_server) -> None:
    srv = sqlite_server
    port = _port(srv)
    for origin in ("https://attacker.example", f"http://localhost:{port + 1}", "http://127.0.0.1:3000", "null"):
        for r in (
            srv.request("GET", "/api/models", user=None, headers={"Origin": origin}),
            srv.request("GET", "/api/whoami-v2", headers={"Origin": origin}),
            srv.request("OPTIONS", "/api/whoami-v2", user=None,
                        headers={"Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}),
        ):
            assert not any(h in r.headers for h in CORS_HEADERS), (origin, r.request.method, dict(r.headers))


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A server configured as behind a TLS proxy, with an extra name and one allowed web origin: the app of
    ``lorahub serve --public-url https://hub.example.test --allowed-host alias.example.test --cors-origin
    https://app.example.test`` in this process (the Host and CORS rules are the app's own middleware)."""
    from hubkit import start_local_hub

    srv = start_local_hub(tmp_path_factory.mktemp("serve-proxied"), public_url="https://hub.example.test",
                          allowed_hosts=["alias.example.test"], cors_origins=["https://app.example.test"])
    try:
        yield srv
    finally:
        srv.close()


def test_public_url_allowed_hosts_and_configured_origins(proxied_server) -> None:
    srv = proxied_server
    srv.create_repo("alice/behind-proxy")
    # the proxy forwards Host: hub.example.test; answers name the public URL (https), not the request's http
    r = srv.request("POST", "/alice/behind-proxy.git/info/lfs/objects/batch", headers={"Host": "hub.example.test"},
                    json={"operation": "upload", "objects": [{"oid": "c" * 64, "size": 3}]})
    assert r.status_code == 200, r.text
    assert r.json()["objects"][0]["actions"]["upload"]["href"].startswith("https://hub.example.test/api/lorahub/lfs/")
    assert srv.request("GET", "/api/whoami-v2", headers={"Host": "alias.example.test:443"}).status_code == 200
    assert srv.request("GET", "/api/whoami-v2", headers={"Host": "other.example.test"}).status_code == 421
    ok = srv.request("GET", "/api/models/alice/behind-proxy", user=None, headers={"Origin": "https://app.example.test"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example.test"
    assert "access-control-allow-credentials" not in ok.headers  # never credentialed
    assert "X-Repo-Commit" in ok.headers.get("access-control-expose-headers", "")
    pre = srv.request("OPTIONS", "/api/whoami-v2", user=None,
                      headers={"Origin": "https://app.example.test", "Access-Control-Request-Method": "GET",
                               "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example.test"
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    bad = srv.request("GET", "/api/models", user=None, headers={"Origin": "https://evil.example.test"})
    assert not any(h in bad.headers for h in CORS_HEADERS)


def test_serve_refuses_a_malformed_cors_origin(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lorahub.cli.main import cli

    res = CliRunner().invoke(cli, ["serve", "--data", str(tmp_path), "--cors-origin", "https://app.example.test/path"])
    assert res.exit_code == 2 and "not an origin" in res.output


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    pytest.importorskip("gradio")
    from hubkit import start_server, stop_server

    srv = start_server(tmp_path_factory.mktemp("serve-ui"), None, "sqlite", extra_args=["--ui"])
    try:
        yield srv
    finally:
        stop_server(srv)


def test_the_web_ui_gets_no_credentialed_cors_and_no_rebinding(ui_server) -> None:
    """Gradio's own CORS middleware allowed credentialed requests from any http://localhost:* origin, and
    from any origin at all once the Host was not a loopback name (which DNS rebinding arranges)."""
    srv = ui_server
    port = _port(srv)
    for path in ("/", "/gradio_api/info", "/config"):
        for origin in (f"http://localhost:{port + 1}", "http://127.0.0.1:1", "https://attacker.example"):
            r = srv.request("GET", path, user=None, headers={"Origin": origin})
            assert r.status_code < 500, (path, r.status_code)
            assert not any(h in r.headers for h in CORS_HEADERS), (path, origin, dict(r.headers))
        r = srv.request("GET", path, user=None, headers={"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"})
        assert r.status_code == 421 and not any(h in r.headers for h in CORS_HEADERS), (path, r.status_code)
