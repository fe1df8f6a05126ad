"""Tokens, private repos, namespaces, hostile names and paths, size limits and secrets in logs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from lorahub.hub.endpoint import hf_api


def ndjson(*items: dict) -> bytes:
    return b"\n".join(json.dumps(i).encode() for i in items)


def commit_body(path: str, content: bytes = b"x", parent: str | None = None) -> bytes:
    header = {"summary": "test", "description": ""}
    if parent:
        header["parentCommit"] = parent
    return ndjson(
        {"key": "header", "value": header},
        {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}},
    )


NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture(scope="module")
def repos(hub_server):  # noqa: ANN201
    """alice/public and alice/secret (private), each with one file."""
    api = hub_server.api()
    api.create_repo("alice/public")
    api.create_repo("alice/secret", private=True)
    for rid in ("alice/public", "alice/secret"):
        api.upload_file(path_or_fileobj=b"content of " + rid.encode(), path_in_repo="file.txt", repo_id=rid)
    return hub_server


def test_private_repos_are_invisible_to_others(repos, tmp_path: Path) -> None:
    srv = repos
    assert srv.api("alice").model_info("alice/secret").private is True
    assert srv.api("alice_ro").model_info("alice/secret").private is True  # read-only token of the owner
    for user in (None, "bob"):
        with pytest.raises(RepositoryNotFoundError):
            srv.api(user).model_info("alice/secret")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("alice/secret", "file.txt", endpoint=srv.url, token=srv.tokens[user] if user else False, cache_dir=tmp_path)
        ids = {m.id for m in srv.api(user).list_models(author="alice")}
        assert "alice/public" in ids and "alice/secret" not in ids
    # Same answer as a repo that does not exist: no existence leak.
    secret = srv.request("GET", "/api/models/alice/secret", user="bob")
    missing = srv.request("GET", "/api/models/alice/does-not-exist", user="bob")
    assert secret.status_code == missing.status_code == 404
    assert secret.headers["X-Error-Code"] == missing.headers["X-Error-Code"] == "RepoNotFound"
    assert secret.json()["error"].replace("secret", "X") == missing.json()["error"].replace("does-not-exist", "X")
    for path in ("/alice/secret/resolve/main/file.txt", "/api/models/alice/secret/tree/main", "/api/models/alice/secret/revision/main"):
        assert srv.request("GET", path, user=None).status_code == 404
    assert {m.id for m in srv.api("alice").list_models(author="alice")} >= {"alice/public", "alice/secret"}
    p = hf_hub_download("alice/secret", "file.txt", endpoint=srv.url, token=srv.tokens["alice"], cache_dir=tmp_path)
    assert Path(p).read_bytes() == b"content of alice/secret"


def test_writes_need_a_write_token_for_the_namespace(repos) -> None:
    srv = repos
    head = srv.api().model_info("alice/public").sha
    # 401 without a token (whatever the repo), 403 for a read-only token or another namespace.
    for rid in ("alice/public", "alice/secret", "alice/none"):
        r = srv.request("POST", f"/api/models/{rid}/commit/main", user=None, content=commit_body("a.txt"), headers=NDJSON)
        assert r.status_code == 401, rid
    r = srv.request("POST", "/api/models/alice/public/commit/main", user="alice_ro", content=commit_body("a.txt"), headers=NDJSON)
    assert r.status_code == 403 and "read-only" in r.json()["error"]
    r = srv.request("POST", "/api/models/alice/public/commit/main", user="bob", content=commit_body("a.txt"), headers=NDJSON)
    assert r.status_code == 403
    r = srv.request("POST", "/api/models/alice/secret/commit/main", user="bob", content=commit_body("a.txt"), headers=NDJSON)
    assert r.status_code == 404  # bob may not even know it exists
    r = srv.request("POST", "/api/models/alice/public/preupload/main", user="bob", json={"files": []})
    assert r.status_code == 403
    r = srv.request("POST", "/alice/public.git/info/lfs/objects/batch", user="bob", json={"operation": "upload", "objects": []})
    assert r.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        srv.api("bob").upload_file(path_or_fileobj=b"x", path_in_repo="b.txt", repo_id="alice/public")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        srv.api("bob").create_repo("alice/bobs-idea")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        srv.api("alice_ro").create_repo("alice/ro-idea")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError):
        srv.api("bob").delete_repo("alice/public")
    r = srv.request("PUT", "/api/models/alice/public/settings", user="bob", json={"private": True})
    assert r.status_code == 403
    assert srv.api().model_info("alice/public").sha == head  # nothing changed
    # The owner can flip visibility.
    srv.api().update_repo_settings("alice/public", private=True)
    assert srv.request("GET", "/api/models/alice/public", user=None).status_code == 404
    srv.api().update_repo_settings("alice/public", private=False)
    assert srv.request("GET", "/api/models/alice/public", user=None).status_code == 200


def test_bad_revoked_and_garbage_tokens(repos) -> None:
    srv = repos
    for token in (srv.tokens["revoked"], "lh_" + "A" * 43, "not-a-token"):
        r = httpx.get(f"{srv.url}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
        assert r.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
        # even on public reads a bad token is an error, not anonymous access
        assert httpx.get(f"{srv.url}/api/models/alice/public", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert httpx.get(f"{srv.url}/api/whoami-v2").status_code == 401
    assert httpx.get(f"{srv.url}/api/whoami-v2", headers={"Authorization": "Basic abc"}).status_code == 401


@pytest.mark.parametrize(
    "path",
    ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "a//b.txt", "a\\b.txt", "x\x00y.txt", "bell\x07.txt",
     "rtl\u202etxt.exe", ".git/config", "dir/", "./a.txt", "a" * 2000, "/".join(["d"] * 80) + "/f"],
)
def test_hostile_paths_are_refused(repos, path: str) -> None:
    srv = repos
    head = srv.api().model_info("alice/public").sha
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=commit_body(path), headers=NDJSON)
    assert r.status_code == 400, (path, r.text)
    assert "invalid path" in r.json()["error"]
    r = srv.request("POST", "/api/models/alice/public/preupload/main", json={"files": [{"path": path, "sample": "", "size": 1}]})
    assert r.status_code == 400
    assert srv.api().model_info("alice/public").sha == head


@pytest.mark.parametrize("name", ["../x", "a--b", "x.git", "-lead", "trail-", "é", "a" * 97, "a b", "api"])
def test_hostile_repo_names_are_refused(repos, name: str) -> None:
    srv = repos
    r = srv.request("POST", "/api/repos/create", json={"name": name, "organization": "alice" if name != "api" else None})
    if name == "api":
        r = srv.request("POST", "/api/repos/create", json={"name": "x", "organization": "api"})
        assert r.status_code in (400, 403)
    else:
        assert r.status_code == 400, (name, r.text)


def test_malformed_bodies_and_content_types(repos) -> None:
    srv = repos
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=commit_body("ok.txt"), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=b"{not json", headers=NDJSON)
    assert r.status_code == 400 and "line 1" in r.json()["error"]
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=ndjson({"key": "file", "value": {}}), headers=NDJSON)
    assert r.status_code == 400
    r = srv.request(
        "POST",
        "/api/models/alice/public/commit/main",
        content=ndjson({"key": "header", "value": {"summary": "x"}}, {"key": "file", "value": {"path": "a.txt", "content": "!!!", "encoding": "base64"}}),
        headers=NDJSON,
    )
    assert r.status_code == 400 and "base64" in r.json()["error"]
    r = srv.request("POST", "/api/models/alice/public/preupload/main", content=b"[1,2", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = srv.request("POST", "/api/repos/create", json=["list"])
    assert r.status_code == 400
    deep = "[" * 100_000 + "]" * 100_000
    r = srv.request("POST", "/api/repos/create", content=deep.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=commit_body("p.txt", parent="f" * 40), headers=NDJSON)
    assert r.status_code == 409


def test_lfs_upload_urls_and_object_ownership(repos) -> None:
    srv = repos
    data = os.urandom(50_000)
    oid = hashlib.sha256(data).hexdigest()
    batch = srv.request(
        "POST",
        "/alice/public.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic", "multipart"], "objects": [{"oid": oid, "size": len(data)}], "hash_algo": "sha256"},
        headers={"Accept": "application/vnd.git-lfs+json"},
    )
    assert batch.status_code == 200
    obj = batch.json()["objects"][0]
    assert batch.json()["transfer"] == "basic"
    href = obj["actions"]["upload"]["href"]
    # A tampered signature, size or oid is refused; wrong bytes never become visible.
    assert httpx.put(href.replace("sig=", "sig=x"), content=data).status_code == 403
    assert httpx.put(href.replace(f"size={len(data)}", "size=1"), content=data[:1]).status_code == 403
    assert httpx.put(href.replace(oid, "0" * 64), content=data).status_code == 403
    bad = httpx.put(href, content=os.urandom(len(data)))
    assert bad.status_code == 400 and "sha256" in bad.json()["error"]
    assert not (srv.data / "blobs" / "sha256" / oid[:2] / oid[2:4] / oid).exists()
    assert list((srv.data / "blobs" / "tmp").glob("*.part")) == []
    assert httpx.put(href, content=data + b"more").status_code == 400
    ok = httpx.put(href, content=data)
    assert ok.status_code == 200
    assert (srv.data / "blobs" / "sha256" / oid[:2] / oid[2:4] / oid).read_bytes() == data
    verify = obj["actions"]["verify"]["href"]
    auth = {"Authorization": f"Bearer {srv.tokens['alice']}"}
    assert httpx.post(verify, json={"oid": oid, "size": len(data)}, headers=auth).status_code == 200
    assert httpx.post(verify, json={"oid": oid, "size": len(data) + 1}, headers=auth).status_code == 400
    assert httpx.post(verify, json={"oid": oid, "size": len(data)}).status_code == 401
    # Asked again, the object needs no upload any more.
    again = srv.request("POST", "/alice/public.git/info/lfs/objects/batch", json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]})
    assert "actions" not in again.json()["objects"][0]

    # bob knows the sha256 but never uploaded the bytes to his repo: he cannot commit a pointer to it.
    srv.api("bob").create_repo("bob/thief")
    lfs_line = ndjson({"key": "header", "value": {"summary": "steal"}}, {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": oid, "size": len(data)}})
    r = srv.request("POST", "/api/models/bob/thief/commit/main", user="bob", content=lfs_line, headers=NDJSON)
    assert r.status_code == 400 and "not uploaded to this repo" in r.json()["error"]
    # ...and the batch API makes him upload it (proof of possession) instead of answering "already there".
    b2 = srv.request("POST", "/bob/thief.git/info/lfs/objects/batch", user="bob", json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]})
    assert "upload" in b2.json()["objects"][0]["actions"]
    # The owner can commit it.
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=lfs_line.replace(b"stolen", b"mine"), headers=NDJSON)
    assert r.status_code == 200, r.text
    # Bad oids in a batch are per-object errors; huggingface_hub turns them into ValueError.
    r = srv.request("POST", "/alice/public.git/info/lfs/objects/batch", json={"operation": "upload", "objects": [{"oid": "../x", "size": 1}]})
    assert r.status_code == 200 and r.json()["objects"][0]["error"]["code"] == 422


def test_no_secrets_in_the_log(repos) -> None:
    srv = repos
    srv.api().upload_file(path_or_fileobj=os.urandom(30_000), path_in_repo="blob.bin", repo_id="alice/public")
    log = srv.log_text()
    assert "/api/lorahub/lfs/" in log  # uploads happened and were logged...
    assert "sig=" not in log and "?" not in "".join(line.split('"')[1] for line in log.splitlines() if "lorahub.server.access" in line)
    for token in srv.tokens.values():
        assert token not in log
        assert token[3:20] not in log


def test_size_limits(tmp_path_factory) -> None:
    from conftest import start_server, stop_server

    srv = start_server(tmp_path_factory.mktemp("limits"), None, "sqlite", ["--max-upload-size", "100K", "--max-commit-size", "64K"])
    try:
        api = hf_api(srv.url, token=srv.tokens["alice"])
        api.create_repo("alice/limits")
        with pytest.raises((ValueError, RuntimeError, HfHubHTTPError)) as err:
            api.upload_file(path_or_fileobj=os.urandom(200_000), path_in_repo="big.bin", repo_id="alice/limits")
        assert "limit" in str(err.value) or "limit" in str(err.value.__cause__)
        big = commit_body("big.txt", b"a" * 100_000)
        r = srv.request("POST", "/api/models/alice/limits/commit/main", content=big, headers=NDJSON)
        assert r.status_code == 413
        r = srv.request("POST", "/api/repos/create", content=b'{"name": "' + b"a" * 9_000_000 + b'"}', headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert [s.rfilename for s in api.model_info("alice/limits").siblings] == [".gitattributes"]
    finally:
        stop_server(srv)
