"""Tokens, private repos, namespaces, hostile names and paths, size limits and secrets in logs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from hubkit import NDJSON, commit_body, ndjson
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from testkit import raw_http

from lorahub.hub.endpoint import hf_api


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
     "rtl\u202etxt.exe", ".git/config", "dir/", "./a.txt", "a" * 2000, "/".join(["d"] * 80) + "/f",
     # huge and deep
     "b" * 5000, "c/" * 3000 + "f", "/".join(["e" * 200] * 30),
     # odd Unicode: invisible, line-breaking, private use, a lone surrogate (sent as the JSON escape \ud800)
     "zero\u200bwidth.txt", "soft\u00adhyphen.txt", "bom\ufeff.txt", "line\u2028sep.txt", "priv\ue000.txt",
     "lone\ud800.txt", "win\\..\\evil.txt",
     # names Windows cannot store: device names, NTFS streams, wildcards, trailing dots and spaces
     "CON", "nul.txt", "aux.safetensors", "COM1/x.txt", "stream.txt:evil", "q?.txt", "star*.txt", "dot.", "space ",
     "d./x"],
)
def test_hostile_paths_are_refused(repos, path: str) -> None:
    srv = repos
    head = srv.api().model_info("alice/public").sha
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=commit_body(path), headers=NDJSON)
    assert r.status_code == 400, (path, r.text)
    assert "invalid path" in r.json()["error"]
    pre = json.dumps({"files": [{"path": path, "sample": "", "size": 1}]}).encode()
    r = srv.request("POST", "/api/models/alice/public/preupload/main", content=pre, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "invalid path" in r.json()["error"]
    assert "\n" not in r.json()["error"] and len(r.json()["error"]) < 300  # one short line, even for a 6 KB path
    assert srv.api().model_info("alice/public").sha == head


@pytest.mark.parametrize(
    "name",
    ["../x", "a--b", "x.git", "-lead", "trail-", "é", "a" * 97, "a b", "api", "a" * 5000, "a\u200bb", "a\x00b",
     "\u202eevil", "e\u0301", "\uff41bc", "a\nb", "x\ud800", "a\\b", "a/b/c"],
)
def test_hostile_repo_names_are_refused(repos, name: str) -> None:
    srv = repos
    body = json.dumps({"name": name, "organization": "alice" if name != "api" else None}).encode()  # \ud800 as an escape
    r = srv.request("POST", "/api/repos/create", content=body, headers={"Content-Type": "application/json"})
    if name == "api":
        r = srv.request("POST", "/api/repos/create", json={"name": "x", "organization": "api"})
        assert r.status_code in (400, 403)
    else:
        assert r.status_code == 400, (name, r.text)
        assert "invalid repo name" in r.json()["error"] and "\n" not in r.json()["error"]


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
    from hubkit import start_server, stop_server

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


# --------------------------------------------------------------------------- hostile input, continued


def assert_up(srv) -> None:  # noqa: ANN001 - HubServer
    assert srv.proc.poll() is None, "the server died"
    r = srv.request("GET", "/api/whoami-v2")
    assert r.status_code == 200 and r.json()["name"] == "alice"


def one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (status, r.status_code, r.text[:300])
    msg = r.json()["error"]
    assert isinstance(msg, str) and msg.strip() and "\n" not in msg and len(msg) < 1000, msg[:300]
    return msg


def test_huge_urls_and_headers(repos) -> None:
    srv = repos
    for path in ("/alice/public/resolve/main/" + "a" * 5000, "/api/models/alice/public/tree/main/" + "a" * 5000):
        assert "longer than 1024 bytes" in one_line_error(srv.request("GET", path), 400)
    deep = "/".join(["d"] * 100)  # 200 bytes, 101 levels
    assert "folder levels" in one_line_error(srv.request("GET", f"/alice/public/resolve/main/{deep}/f"), 400)
    r = srv.request("POST", "/api/models/alice/public/paths-info/main", json={"paths": ["x"] * 10_001})
    assert "list of strings" in one_line_error(r, 400)
    host = urlsplit(srv.url).netloc.encode()  # a Host the server answers (another one is a 421)
    # Request lines of 100 KB and 1 MB: refused by the HTTP parser, no hang.
    for n in (100_000, 1 << 20):
        answer = raw_http(srv.url, b"GET /alice/public/resolve/main/" + b"a" * n + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    # A 100 KB token and a token that is not UTF-8: invalid credentials.
    r = httpx.get(f"{srv.url}/api/whoami-v2", headers={"Authorization": "Bearer " + "x" * 100_000}, timeout=30)
    assert r.status_code == 401
    answer = raw_http(srv.url, b"GET /api/whoami-v2 HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer \xff\xfe\xc0\xae\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert_up(srv)


@pytest.mark.parametrize(
    "path",
    [
        "/alice/public/resolve/%FF/file.txt",  # not UTF-8
        "/alice/public/resolve/main/%FF.txt",
        "/alice/public/resolve/main/%ED%A0%80.txt",  # an encoded surrogate
        "/alice/public/resolve/main/%C0%AE%C0%AE/%C0%AE%C0%AE/etc/passwd",  # overlong '.'
        "/alice/public/resolve/main/%C0%AF/file.txt",  # overlong '/'
        "/alice/public/resolve/refs%2Fpr%2F%FF/file.txt",
        "/alice/%E0%80%80/resolve/main/file.txt",
        "/api/models/alice/public/tree/%FF",
        "/api/models/alice/public/tree/main/%F8%88%80%80%80",  # a 5-byte sequence
    ],
)
def test_invalid_utf8_in_url_percent_encoding(repos, path: str) -> None:
    srv = repos
    assert "does not decode to UTF-8" in one_line_error(srv.request("GET", path), 400)
    if "/resolve/" in path:  # the file routes answer HEAD too
        assert srv.request("HEAD", path).status_code == 400


def test_file_names_equal_after_unicode_normalisation(repos) -> None:
    srv = repos
    nfc, nfd = "unicode/caf\u00e9.txt", "unicode/cafe\u0301.txt"
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=commit_body(nfc, b"nfc"), headers=NDJSON)
    assert r.status_code == 200, r.text
    head = srv.api().model_info("alice/public").sha
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=commit_body(nfd, b"nfd"), headers=NDJSON)
    assert "Unicode normalisation" in one_line_error(r, 400)
    assert srv.api().model_info("alice/public").sha == head
    # One name in either form is fine; each reads back under its own bytes.
    r = srv.request("POST", "/api/models/alice/public/commit/main", content=commit_body("nfd/cafe\u0301.txt", b"nfd"), headers=NDJSON)
    assert r.status_code == 200, r.text
    assert srv.request("GET", "/alice/public/resolve/main/nfd/cafe%CC%81.txt").content == b"nfd"
    assert srv.request("GET", "/alice/public/resolve/main/unicode/caf%C3%A9.txt").content == b"nfc"
    assert srv.request("GET", "/alice/public/resolve/main/nfd/caf%C3%A9.txt").status_code == 404


def test_oversized_and_malformed_ndjson_commits(repos) -> None:
    import time

    srv = repos
    url = "/api/models/alice/public/commit/main"
    head = srv.api().model_info("alice/public").sha
    header = {"key": "header", "value": {"summary": "x"}}
    blobs = srv.data / "blobs" / "sha256"
    stored = sum(1 for _ in blobs.rglob("*"))
    # Too many operations: refused before any file of the commit is stored.
    files = (
        {"key": "file", "value": {"path": f"many/{i}.txt", "content": base64.b64encode(b"%d" % i).decode()}}
        for i in range(25_001)
    )
    t0 = time.monotonic()
    r = srv.request("POST", url, content=ndjson(header, *files), headers=NDJSON)
    assert "at most 25000 operations" in one_line_error(r, 413)
    assert time.monotonic() - t0 < 10
    assert sum(1 for _ in blobs.rglob("*")) == stored
    dels = ({"key": "deletedFile", "value": {"path": f"f{i}"}} for i in range(30_000))
    assert "at most" in one_line_error(srv.request("POST", url, content=ndjson(header, *dels), headers=NDJSON), 413)
    # One huge line: a regular file over the 10 MB limit.
    big = ndjson(header, {"key": "file", "value": {"path": "big.txt", "content": "QUFB" * (4 << 20)}})
    assert "limited to" in one_line_error(srv.request("POST", url, content=big, headers=NDJSON), 413)
    hdr = json.dumps(header).encode() + b"\n"
    oid = b'"' + b"a" * 64 + b'"'
    cases = {
        b"\n" * 1_000_000: "no header line",
        hdr + b"[" * 100_000 + b"]" * 100_000: "line 2 is not valid JSON",
        hdr + b'{"key": "file", "value": {"path": ' + b"[" * 5000 + b"]" * 5000 + b"}}": "line 2 is not valid JSON",
        b'{"key": "header", "value": {"summary": ' + b"[" * 500 + b"]" * 500 + b"}}": "summary must be a string",
        hdr + b'{"key": "file", "value": {"path": "a\xff.txt", "content": "eA=="}}': "line 2 is not valid JSON",
        hdr + b'{"key": "file", "value": {"path": "\xc0\xae\xc0\xae/x", "content": "eA=="}}': "line 2 is not valid JSON",
        hdr + b'{"key": "file", "value": {"path": "a\\ud800.txt", "content": "eA=="}}': "not valid UTF-8",
        hdr + b'{"key": "lfsFile", "value": {"path": "a.bin", "oid": ' + oid + b', "size": NaN}}': "non-negative integer",
        hdr + b'{"key": "lfsFile", "value": {"path": "a.bin", "oid": ' + oid + b', "size": 1' + b"0" * 5000 + b"}}": "line 2 is not valid JSON",
        hdr + b'{"key": "lfsFile", "value": {"path": "a.bin", "oid": ' + oid + b', "size": true}}': "non-negative integer",
        hdr + b'{"key": "file", "value": {"path": "a.txt", "content": 5}}': "base64 string",
        hdr + b'{"key": "file", "value": {"path": "a.txt", "content": "eA==", "encoding": "utf-16"}}': "only base64",
        hdr + b'{"key": {"a": 1}, "value": {}}': "unknown operation",
        hdr + b'{"key": "file"}': "expected",
        hdr + b'{"key": "file", "value": []}': "expected",
        hdr + b"[1, 2]": "expected",
        hdr + b"5": "expected",
        hdr + b'"header"': "expected",
        hdr + hdr: "two header lines",
        hdr + b'{"key": "file", "value": {"path": "a.txt", "content": "eA=="}} trailing': "line 2 is not valid JSON",
    }
    for body, expect in cases.items():
        r = srv.request("POST", url, content=body, headers=NDJSON)
        assert expect in one_line_error(r, 400), (body[:80], r.text[:300])
    assert srv.api().model_info("alice/public").sha == head
    assert_up(srv)


def _write_calls(srv, repo: str, verify_href: str) -> list[tuple[str, str, str, dict]]:  # noqa: ANN001
    """(label, method, url, httpx keyword arguments) of every route that writes to ``repo``."""
    ns, name = repo.split("/")
    oid = "b" * 64
    return [
        ("create", "POST", "/api/repos/create", {"json": {"name": f"{name}-new", "organization": ns}}),
        ("delete", "DELETE", "/api/repos/delete", {"json": {"name": name, "organization": ns}}),
        ("settings", "PUT", f"/api/models/{repo}/settings", {"json": {"private": repo.endswith("secret")}}),
        ("preupload", "POST", f"/api/models/{repo}/preupload/main", {"json": {"files": [{"path": "a.txt", "sample": "", "size": 1}]}}),
        ("lfs batch", "POST", f"/{repo}.git/info/lfs/objects/batch", {"json": {"operation": "upload", "objects": [{"oid": oid, "size": 1}]}}),
        ("lfs verify", "POST", verify_href, {"json": {"oid": oid, "size": 1}}),
        ("commit", "POST", f"/api/models/{repo}/commit/main", {"content": commit_body("w.txt"), "headers": NDJSON}),
    ]


@pytest.fixture(scope="module")
def verify_hrefs(repos) -> dict[str, str]:  # noqa: ANN001
    """The LFS verify URL of alice/public and alice/secret (their repo's primary key is in it)."""
    out = {}
    for repo in ("alice/public", "alice/secret"):
        data = os.urandom(64)
        r = repos.request("POST", f"/{repo}.git/info/lfs/objects/batch", json={"operation": "upload", "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": 64}]})
        out[repo] = urlsplit(r.json()["objects"][0]["actions"]["verify"]["href"]).path
    return out


def _expired_token(srv) -> str:  # noqa: ANN001 - HubServer
    """A write token of alice that expired a minute ago (created valid, then moved into the past)."""
    from datetime import timedelta

    from sqlalchemy import create_engine
    from sqlmodel import Session

    from lorahub.registry.hub.auth import create_token
    from lorahub.registry.tables import Token, utcnow

    engine = create_engine(srv.database)
    try:
        with Session(engine) as s:
            token, row, _ = create_token(s, "alice", write=True, name="expiring", expires_in_days=1)
        # valid while it has not expired...
        assert httpx.get(f"{srv.url}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        with Session(engine) as s:
            tok = s.get(Token, row.id)
            tok.expires_at = utcnow() - timedelta(minutes=1)
            s.add(tok)
            s.commit()
    finally:
        engine.dispose()
    return token


#: Expected status per token kind and repo, for every write route (create is about the namespace).
WRITE_STATUS = {
    ("bob", "alice/public"): dict.fromkeys(("create", "delete", "settings", "preupload", "lfs batch", "lfs verify", "commit"), 403),
    ("bob", "alice/secret"): {"create": 403} | dict.fromkeys(("delete", "settings", "preupload", "lfs batch", "lfs verify", "commit"), 404),
    ("alice_ro", "alice/public"): dict.fromkeys(("create", "delete", "settings", "preupload", "lfs batch", "lfs verify", "commit"), 403),
}


@pytest.mark.parametrize("who", ["bob", "alice_ro", "revoked", "expired", "garbage", "none"])
def test_foreign_bad_and_expired_tokens_on_every_write_route(repos, verify_hrefs, who: str) -> None:
    srv = repos
    if who == "expired":
        token = _expired_token(srv)
    elif who in ("garbage", "none"):
        token = "lh_" + "A" * 43
    else:
        token = srv.tokens[who]
    heads = {rid: srv.api().model_info(rid).sha for rid in ("alice/public", "alice/secret")}
    for repo in ("alice/public", "alice/secret"):
        for label, method, url, kw in _write_calls(srv, repo, verify_hrefs[repo]):
            headers = dict(kw.pop("headers", {}))
            if who != "none":
                headers["Authorization"] = f"Bearer {token}"
            r = httpx.request(method, srv.url + url, headers=headers, timeout=30, **kw)
            if who in ("revoked", "expired", "garbage", "none"):
                want = 401
            else:
                want = WRITE_STATUS.get((who, repo), WRITE_STATUS[(who, "alice/public")])[label]
            msg = one_line_error(r, want)
            if who in ("revoked", "expired", "garbage"):
                assert msg == "Invalid credentials in Authorization header"
            if want == 404:
                assert r.headers.get("X-Error-Code") == "RepoNotFound"  # the same answer as a repo that does not exist
    assert {rid: srv.api().model_info(rid).sha for rid in heads} == heads
    assert srv.api().model_info("alice/secret").private is True
    assert srv.request("GET", "/api/models/alice/public-new").status_code == 404
    assert_up(srv)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", "application/jsonx"])
def test_wrong_content_types_on_every_write_route(repos, verify_hrefs, ctype: str) -> None:
    srv = repos
    head = srv.api().model_info("alice/public").sha
    calls = _write_calls(srv, "alice/public", verify_hrefs["alice/public"])
    calls.append(("validate-yaml", "POST", "/api/validate-yaml", {"json": {"content": "---\nlicense: mit\n---\n"}}))
    calls.append(("paths-info", "POST", "/api/models/alice/public/paths-info/main", {"json": {"paths": ["file.txt"]}}))
    for label, method, url, kw in calls:
        if label == "paths-info" and ctype == "application/x-www-form-urlencoded":
            continue  # huggingface_hub sends a form there
        body = json.dumps(kw["json"]).encode() if "json" in kw else kw["content"]
        r = srv.request(method, url, content=body, headers={"Content-Type": ctype})
        assert r.status_code == 415, (label, r.status_code, r.text[:200])
        msg = r.json()["errors"][0]["message"] if label == "validate-yaml" else r.json()["error"]
        assert "Content-Type" in msg or "JSON body" in msg or "form" in msg or "NDJSON" in msg, msg
        assert "\n" not in msg
    # Refused before acting: nothing was created, deleted or committed.
    assert srv.request("GET", "/api/models/alice/public-new").status_code == 404
    assert srv.api().model_info("alice/public").sha == head
    assert_up(srv)
