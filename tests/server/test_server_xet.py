"""The Xet protocol of ``lorahub serve``: the unchanged huggingface_hub with hf_xet, and no
``HF_HUB_DISABLE_XET``, uploads, downloads, deduplicates and resumes an interrupted upload (SQLite
and PostgreSQL); a Xet file is stored once, as its chunks, and served from them (GET, Range, HEAD,
header range reads); hostile xorbs and shards are refused with nothing stored.

The stock client runs in a subprocess whose environment has no ``HF_HUB_DISABLE_XET`` (the
in-process fixtures switch Xet off for the LFS tests), with its own ``HF_XET_CACHE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hubkit import write_kohya_lora

from lorahub.registry.hub import xet

pytest.importorskip("hf_xet")

CLIENT = r"""
import json, os, sys
from huggingface_hub import HfApi, hf_hub_download, constants
assert not constants.HF_HUB_DISABLE_XET
args = json.loads(sys.argv[1])
api = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=os.environ.get("HF_TOKEN"))
op = args["op"]
if op == "upload_file":
    ci = api.upload_file(path_or_fileobj=args["src"], path_in_repo=args["dst"], repo_id=args["repo"])
    print(json.dumps({"oid": ci.oid}))
elif op == "upload_folder":
    ci = api.upload_folder(folder_path=args["src"], repo_id=args["repo"])
    print(json.dumps({"oid": ci.oid}))
elif op == "download":
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url
    meta = get_hf_file_metadata(hf_hub_url(args["repo"], args["path"], endpoint=os.environ["HF_ENDPOINT"]), token=os.environ.get("HF_TOKEN"))
    p = hf_hub_download(args["repo"], args["path"], cache_dir=args["dl"], endpoint=os.environ["HF_ENDPOINT"])
    print(json.dumps({"path": p, "xet": meta.xet_file_data is not None}))
"""


def _settled_log(server, quiet_s: float = 0.5, most_s: float = 10.0) -> str:  # noqa: ANN001
    """The server's log once no line has come for ``quiet_s`` (at most ``most_s``): the access line of a request
    is written after its answer, so on a busy machine it can land after the client has returned, in the next
    step's window of the log (a count of requests per step seen off by one in CI)."""
    import time

    text, deadline = server.log_text(), time.monotonic() + most_s
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = server.log_text()
        if now == text:
            break
        text = now
    return text


def _client(server, tmp: Path, user: str, cache: str | None = None, env_extra: dict | None = None, **args) -> dict:
    env = server.env(user)
    env.pop("HF_HUB_DISABLE_XET")
    env["HF_XET_CACHE"] = str(tmp / f"xet-cache-{cache or user}")
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(args)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _chunk_files(server) -> dict[str, int]:
    root = server.data / "xet" / "chunks"
    return {p.name: p.stat().st_size for p in root.glob("*/*")} if root.exists() else {}


def _first_chunk(server, sha256: str) -> Path:
    """The chunk file holding the first bytes of the content ``sha256`` uploaded through Xet."""
    import sqlalchemy as sa

    engine = sa.create_engine(server.database)
    try:
        with engine.connect() as conn:
            terms = conn.execute(sa.text("SELECT terms FROM hub_xet_files WHERE sha256 = :s"), {"s": sha256}).scalar_one()
            xh, start = json.loads(terms)[0][:2]
            chunks = conn.execute(sa.text("SELECT chunks FROM hub_xet_xorbs WHERE hash = :h"), {"h": xh}).scalar_one()
    finally:
        engine.dispose()
    h = json.loads(chunks)[start][0]
    return server.data / "xet" / "chunks" / h[:2] / h


def _token(server, repo: str, user: str = "alice", kind: str = "write") -> tuple[str, str]:
    r = server.request("GET", f"/api/models/{repo}/xet-{kind}-token/main", user=user)
    assert r.status_code == 200, r.text
    return r.headers["X-Xet-Cas-Url"], r.headers["X-Xet-Access-Token"]


def test_stock_client_uploads_downloads_and_dedupes(hub_server, tmp_path: Path) -> None:
    api = hub_server.api()
    api.create_repo("alice/xet-lora")
    lora = write_kohya_lora(tmp_path / "a" / "style.safetensors", rank=128, title="firststyle")
    data = lora.read_bytes()
    assert len(data) > 500_000  # several ~64 KiB chunks

    before = _chunk_files(hub_server)
    _client(hub_server, tmp_path, "alice", op="upload_file", src=str(lora), dst="style.safetensors", repo="alice/xet-lora")
    after_first = _chunk_files(hub_server)
    first_bytes = sum(after_first[h] for h in set(after_first) - set(before))
    assert len(after_first) - len(before) >= 5 and first_bytes > 0

    # Committed and indexed exactly like an LFS upload: the tree names its sha256, the registry has it.
    info = api.model_info("alice/xet-lora", files_metadata=True)
    (sib,) = [s for s in info.siblings if s.rfilename == "style.safetensors"]
    assert sib.lfs is not None and sib.lfs.sha256 == hashlib.sha256(data).hexdigest() and sib.lfs.size == len(data)
    assert api.parse_safetensors_file_metadata("alice/xet-lora", "style.safetensors").metadata["ss_output_name"] == "firststyle"

    # The resolve HEAD carries the Xet headers, so the stock client reconstructs from the CAS ...
    got = _client(hub_server, tmp_path, "bob", op="download", repo="alice/xet-lora", path="style.safetensors", dl=str(tmp_path / "dl"))
    assert got["xet"] is True
    assert Path(got["path"]).read_bytes() == data
    # ... and a plain GET still answers the bytes (curl, browsers), rebuilt from the chunks: the
    # file is stored once, as its chunks, with no blob file besides.
    sha = hashlib.sha256(data).hexdigest()
    assert not (hub_server.data / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha).exists()
    assert not list((hub_server.data / "blobs" / "tmp").glob("*.part"))  # the copy the commit checked is gone
    url = f"{hub_server.url}/alice/xet-lora/resolve/main/style.safetensors"
    plain = httpx.get(url)
    assert plain.status_code == 200 and plain.content == data and plain.headers["content-length"] == str(len(data))
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""
    # Range requests, across chunk boundaries (chunks are ~64 KiB), as for a blob file.
    for rng, want in [("bytes=100-300000", data[100:300001]), ("bytes=-5000", data[-5000:]), (f"bytes={len(data) - 10}-", data[-10:])]:
        r = httpx.get(url, headers={"Range": rng})
        assert r.status_code == 206 and r.content == want, rng
        assert r.headers["content-range"].endswith(f"/{len(data)}")
    assert httpx.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    # The Civitai-compatible download route answers the same bytes from the chunks (it shares the Hub's
    # blob answer; it once looked only for a blob file and answered 500).
    found = httpx.get(f"{hub_server.url}/api/v1/model-versions/by-hash/{sha}")
    assert found.status_code == 200, found.text
    civitai = httpx.get(f"{hub_server.url}/api/download/models/{found.json()['id']}")
    assert civitai.status_code == 200 and civitai.content == data
    part = httpx.get(f"{hub_server.url}/api/download/models/{found.json()['id']}", headers={"Range": "bytes=70000-70009"})
    assert part.status_code == 206 and part.content == data[70000:70010]
    # The header range reads of `lorahub index --hub` (what the registry indexer does against a hub).
    from lorahub.registry.sources.hub import read_remote_header

    header = read_remote_header(hub_server.url, "alice/xet-lora", "main", "style.safetensors", len(data), None)
    assert header.metadata["ss_output_name"] == "firststyle"

    # A re-labelled copy (same tensors, another metadata header) stores only its new chunks.
    relabelled = write_kohya_lora(tmp_path / "b" / "style.safetensors", rank=128, title="secondstyle")
    other = relabelled.read_bytes()
    assert other != data
    api.create_repo("alice/xet-lora-copy")
    _client(hub_server, tmp_path, "alice", op="upload_folder", src=str(relabelled.parent), repo="alice/xet-lora-copy")
    after_second = _chunk_files(hub_server)
    new = set(after_second) - set(after_first)
    new_bytes = sum(after_second[h] for h in new)
    assert 0 < len(new) <= 3, (len(new), len(after_first) - len(before))
    assert new_bytes < len(other) / 4
    other_sha = hashlib.sha256(other).hexdigest()
    assert not (hub_server.data / "blobs" / "sha256" / other_sha[:2] / other_sha[2:4] / other_sha).exists()  # only the new chunks
    got2 = _client(hub_server, tmp_path, "bob", op="download", repo="alice/xet-lora-copy", path="style.safetensors", dl=str(tmp_path / "dl2"))
    assert Path(got2["path"]).read_bytes() == other

    # bob, another user with a fresh client, uploads the same copy: the server stores no chunk again.
    hub_server.api("bob").create_repo("bob/xet-copy")
    _client(hub_server, tmp_path, "bob", op="upload_file", src=str(relabelled), dst="copy.safetensors", repo="bob/xet-copy")
    assert _chunk_files(hub_server) == after_second

    # alice on a fresh client (no local cache) uploads her file again: the global dedupe query
    # answers a shard naming her xorb, so the client sends no xorb at all, only the shard.
    api.create_repo("alice/xet-again")
    posts = hub_server.log_text().count("POST /api/lorahub/xet/v1/xorbs/")
    _client(hub_server, tmp_path, "alice", cache="alice-fresh", op="upload_file", src=str(lora), dst="again.safetensors", repo="alice/xet-again")
    assert hub_server.log_text().count("POST /api/lorahub/xet/v1/xorbs/") == posts
    assert "GET /api/lorahub/xet/v1/chunks/" in hub_server.log_text()
    assert api.model_info("alice/xet-again", files_metadata=True).siblings[-1].lfs.sha256 == hashlib.sha256(data).hexdigest()


def test_two_users_sharing_one_client_cache(hub_server, tmp_path: Path) -> None:
    """bob's client knows alice's xorbs from the cache they share and names them in its shard,
    with the verification hashes that prove holding the chunks: accepted; bob gains no other right
    to alice's xorb (the dedupe query still answers him nothing)."""
    hub_server.api().create_repo("alice/shared-cache")
    hub_server.api("bob").create_repo("bob/shared-cache")
    content = os.urandom(300_000)
    (tmp_path / "f.bin").write_bytes(content)
    _client(hub_server, tmp_path, "alice", cache="shared", op="upload_file", src=str(tmp_path / "f.bin"), dst="f.bin", repo="alice/shared-cache")
    posts = hub_server.log_text().count("POST /api/lorahub/xet/v1/xorbs/")
    _client(hub_server, tmp_path, "bob", cache="shared", op="upload_file", src=str(tmp_path / "f.bin"), dst="f.bin", repo="bob/shared-cache")
    assert hub_server.log_text().count("POST /api/lorahub/xet/v1/xorbs/") == posts  # bob sent no xorb
    got = _client(hub_server, tmp_path, "bob", op="download", repo="bob/shared-cache", path="f.bin", dl=str(tmp_path / "dl"))
    assert got["xet"] and Path(got["path"]).read_bytes() == content
    cas, tok = _token(hub_server, "bob/shared-cache", user="bob", kind="read")
    file_hash = hub_server.request("HEAD", "/bob/shared-cache/resolve/main/f.bin", user="bob").headers["X-Xet-Hash"]
    body = httpx.get(f"{cas}/v1/reconstructions/{file_hash}", headers={"Authorization": f"Bearer {tok}"}).json()
    term = body["terms"][0]
    (fi,) = [f for f in body["fetch_info"][term["hash"]] if f["range"] == term["range"]]
    raw = httpx.get(fi["url"], headers={"Range": f"bytes={fi['url_range']['start']}-{fi['url_range']['end']}"}).content
    first_chunk = xet.hex_of(xet.chunk_hash(xet.decode_record(raw[: 8 + int.from_bytes(raw[1:4], "little")])))
    assert httpx.get(f"{cas}/v1/chunks/default/{first_chunk}", headers={"Authorization": f"Bearer {tok}"}).status_code == 404
    _, alice_tok = _token(hub_server, "alice/shared-cache", kind="read")
    assert httpx.get(f"{cas}/v1/chunks/default/{first_chunk}", headers={"Authorization": f"Bearer {alice_tok}"}).status_code == 200


def test_upload_folder_of_several_files_in_one_shard(hub_server, tmp_path: Path) -> None:
    api = hub_server.api()
    api.create_repo("alice/xet-folder")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    files = {
        "a.safetensors.bin": os.urandom(150_000),
        "sub/b.bin": os.urandom(90_000) * 3,  # repeats itself: chunks shared within the file
        "sub/c.bin": b"\0" * 70_000,
        "notes.txt": b"regular file, inline in the commit\n",
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    _client(hub_server, tmp_path, "alice", op="upload_folder", src=str(folder), repo="alice/xet-folder")
    assert sorted(api.list_repo_files("alice/xet-folder")) == sorted([".gitattributes", *files])
    for name, content in files.items():
        got = _client(hub_server, tmp_path, "bob", op="download", repo="alice/xet-folder", path=name, dl=str(tmp_path / "dl"))
        assert Path(got["path"]).read_bytes() == content
        assert got["xet"] is (name != "notes.txt")


def test_private_files_never_reconstruct_for_others(hub_server, tmp_path: Path) -> None:
    api = hub_server.api()
    api.create_repo("alice/xet-private", private=True)
    blob = os.urandom(200_000)
    (tmp_path / "secret.bin").write_bytes(blob)
    _client(hub_server, tmp_path, "alice", op="upload_file", src=str(tmp_path / "secret.bin"), dst="secret.safetensors.bin", repo="alice/xet-private")
    head = hub_server.request("HEAD", "/alice/xet-private/resolve/main/secret.safetensors.bin")
    file_hash = head.headers["X-Xet-Hash"]
    # bob cannot get a token for the private repo, and his token for his own repo does not reach it.
    assert hub_server.request("GET", "/api/models/alice/xet-private/xet-read-token/main", user="bob").status_code in (401, 404)
    hub_server.api("bob").create_repo("bob/mine")
    cas, tok = _token(hub_server, "bob/mine", user="bob", kind="read")
    r = httpx.get(f"{cas}/v1/reconstructions/{file_hash}", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 404
    assert httpx.get(f"{cas}/v2/reconstructions/{file_hash}", headers={"Authorization": f"Bearer {tok}"}).status_code == 404
    assert "X-Xet-Hash" not in hub_server.request("HEAD", "/alice/xet-private/resolve/main/secret.safetensors.bin", user="bob").headers
    # Once bob's repo holds the same bytes (his own LFS upload), his file answers through Xet too.
    hub_server.api("bob").upload_file(path_or_fileobj=blob, path_in_repo="same.bin", repo_id="bob/mine")
    assert hub_server.request("HEAD", "/bob/mine/resolve/main/same.bin", user="bob").headers["X-Xet-Hash"] == file_hash
    assert httpx.get(f"{cas}/v1/reconstructions/{file_hash}", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    # A read token never writes.
    cas, ro = _token(hub_server, "alice/xet-private", kind="read")
    assert httpx.post(f"{cas}/v1/shards", content=b"x", headers={"Authorization": f"Bearer {ro}"}).status_code == 403
    # alice's own read token reconstructs, ranges included.
    r = httpx.get(f"{cas}/v1/reconstructions/{file_hash}", headers={"Authorization": f"Bearer {ro}", "Range": "bytes=1000-1999"})
    assert r.status_code == 200, r.text
    body = r.json()
    out = bytearray()
    for term in body["terms"]:
        (fi,) = [f for f in body["fetch_info"][term["hash"]] if f["range"] == term["range"]]
        raw = httpx.get(fi["url"], headers={"Range": f"bytes={fi['url_range']['start']}-{fi['url_range']['end']}"}).content
        pos = 0
        while pos < len(raw):
            clen = int.from_bytes(raw[pos + 1 : pos + 4], "little")
            out += xet.decode_record(raw[pos : pos + 8 + clen])
            pos += 8 + clen
    start = body["offset_into_first_range"]
    assert bytes(out[start : start + 1000]) == blob[1000:2000]
    url = body["fetch_info"][body["terms"][0]["hash"]][0]["url"]
    assert httpx.get(url.replace("sig=", "sig=A")).status_code == 403
    # A fetch URL is signed for its byte range only (a xorb may hold chunks of other files).
    assert httpx.get(re.sub(r"\?r=\d+-\d+", "?r=0-99999999", url)).status_code == 403
    assert httpx.get(re.sub(r"\?r=\d+-\d+", lambda m: m.group(0) + ",0-99999999", url)).status_code == 403
    assert httpx.get(url, headers={"Range": "bytes=0-999999999"}).status_code == 416
    past = httpx.get(f"{cas}/v1/reconstructions/{file_hash}", headers={"Authorization": f"Bearer {ro}", "Range": f"bytes={len(blob)}-{len(blob) + 5}"})
    assert past.status_code == 416


def test_xet_tokens_are_rechecked_on_every_call(hub_server, tmp_path: Path) -> None:
    from sqlmodel import Session

    from lorahub.registry.database import make_engine
    from lorahub.registry.hub.auth import create_token, revoke_token

    api = hub_server.api()
    api.create_repo("alice/xet-open")
    (tmp_path / "w.bin").write_bytes(os.urandom(100_000))
    _client(hub_server, tmp_path, "alice", op="upload_file", src=str(tmp_path / "w.bin"), dst="w.safetensors.bin", repo="alice/xet-open")
    file_hash = hub_server.request("HEAD", "/alice/xet-open/resolve/main/w.safetensors.bin", user=None).headers["X-Xet-Hash"]
    # Anyone may read a public repo: an anonymous read token reconstructs ...
    r = httpx.get(f"{hub_server.url}/api/models/alice/xet-open/xet-read-token/main")
    cas, anon = r.headers["X-Xet-Cas-Url"], r.headers["X-Xet-Access-Token"]
    recon = f"{cas}/v1/reconstructions/{file_hash}"
    assert httpx.get(recon, headers={"Authorization": f"Bearer {anon}"}).status_code == 200
    _, bob = _token(hub_server, "alice/xet-open", user="bob", kind="read")
    # ... until the repo is made private: the tokens already handed out stop answering at once.
    api.update_repo_settings("alice/xet-open", private=True)
    assert httpx.get(recon, headers={"Authorization": f"Bearer {anon}"}).status_code == 401
    assert httpx.get(recon, headers={"Authorization": f"Bearer {bob}"}).status_code == 401
    # A Xet token dies with the lh_ token it was issued for.
    engine = make_engine(hub_server.database)
    try:
        with Session(engine) as s:
            temp, _, _ = create_token(s, "alice", write=True, name="temp")
        r = httpx.get(f"{hub_server.url}/api/models/alice/xet-open/xet-write-token/main", headers={"Authorization": f"Bearer {temp}"})
        tok = r.headers["X-Xet-Access-Token"]
        assert httpx.get(recon, headers={"Authorization": f"Bearer {tok}"}).status_code == 200
        with Session(engine) as s:
            revoke_token(s, temp)
        assert httpx.get(recon, headers={"Authorization": f"Bearer {tok}"}).status_code == 401
    finally:
        engine.dispose()
    # A token of a deleted repo is dead even when a repo of the same name is created again.
    _, w = _token(hub_server, "alice/xet-open")
    api.delete_repo("alice/xet-open")
    api.create_repo("alice/xet-open")
    assert httpx.post(f"{cas}/v1/shards", content=b"x", headers={"Authorization": f"Bearer {w}"}).status_code == 401


# -- hostile inputs ----------------------------------------------------------------------------


def _record(data: bytes) -> bytes:
    return bytes([0]) + len(data).to_bytes(3, "little") + bytes([0]) + len(data).to_bytes(3, "little") + data


def _xorb(chunks: list[bytes]) -> tuple[str, bytes]:
    h = xet.xorb_hash([(xet.chunk_hash(c), len(c)) for c in chunks])
    return xet.hex_of(h), b"".join(_record(c) for c in chunks)


def _shard(files: list[tuple[bytes, list[tuple[bytes, int, int, int]], bytes | None]], proofs: list[bytes] | None = None) -> bytes:
    """A shard upload; ``proofs``: one verification hash per term (of a one-file shard)."""
    out = bytearray(xet.SHARD_TAG + struct.pack("<QQ", 2, 0))
    for fh, terms, sha in files:
        flags = (xet.FLAG_METADATA_EXT if sha is not None else 0) | (xet.FLAG_VERIFICATION if proofs else 0)
        out += fh + struct.pack("<IIQ", flags, len(terms), 0)
        for xh, unpacked, start, end in terms:
            out += xh + struct.pack("<IIII", 0, unpacked, start, end)
        for proof in proofs or ():
            out += proof + bytes(16)
        if sha is not None:
            out += sha + bytes(16)
    out += xet.BOOKEND + bytes(16) + xet.BOOKEND + bytes(16)
    return bytes(out)


def test_v2_reconstruction_one_url_per_xorb_and_multirange(hub_server, tmp_path: Path) -> None:
    """A file whose terms use chunks 2, 0 and 2 again of one xorb: the V2 answer gives that xorb one
    URL for two byte ranges (chunk 1 is not the file's: not fetchable); the stock client reconstructs
    through V2, with single-range fetches (its default) and with one multi-range fetch
    (multipart/byteranges); V1 still answers."""
    api = hub_server.api()
    api.create_repo("alice/xet-v2")
    cas, tok = _token(hub_server, "alice/xet-v2")
    auth = {"Authorization": f"Bearer {tok}"}
    chunks = [os.urandom(30_000), os.urandom(20_000), os.urandom(25_000)]
    xh, body = _xorb(chunks)
    assert httpx.post(f"{cas}/v1/xorbs/default/{xh}", content=body, headers=auth).json() == {"was_inserted": True}
    order = [2, 0, 2]
    content = b"".join(chunks[i] for i in order)
    fh = xet.file_hash([(xet.chunk_hash(chunks[i]), len(chunks[i])) for i in order])
    sha = hashlib.sha256(content).hexdigest()
    raw = xet.hash_of_hex(xh)
    terms = [(raw, len(chunks[i]), i, i + 1) for i in order]
    assert httpx.post(f"{cas}/v1/shards", content=_shard([(fh, terms, xet.hash_of_hex(sha))]), headers=auth).json() == {"result": 1}
    from hubkit import NDJSON, ndjson

    line = {"key": "lfsFile", "value": {"path": "v2.bin", "algo": "sha256", "oid": sha, "size": len(content)}}
    r = hub_server.request("POST", "/api/models/alice/xet-v2/commit/main", content=ndjson({"key": "header", "value": {"summary": "v2"}}, line), headers=NDJSON)
    assert r.status_code == 200, r.text

    v2 = httpx.get(f"{cas}/v2/reconstructions/{xet.hex_of(fh)}", headers=auth)
    assert v2.status_code == 200, v2.text
    answer = v2.json()
    assert [t["range"] for t in answer["terms"]] == [{"start": 2, "end": 3}, {"start": 0, "end": 1}, {"start": 2, "end": 3}]
    (fetch,) = answer["xorbs"][xh]  # one URL for the xorb ...
    rec = [len(_record(c)) for c in chunks]
    assert fetch["ranges"] == [  # ... covering chunks 0 and 2, each once
        {"chunks": {"start": 0, "end": 1}, "bytes": {"start": 0, "end": rec[0] - 1}},
        {"chunks": {"start": 2, "end": 3}, "bytes": {"start": rec[0] + rec[1], "end": sum(rec) - 1}},
    ]
    (a0, a1), (b0, b1) = [(d["bytes"]["start"], d["bytes"]["end"]) for d in fetch["ranges"]]
    one = httpx.get(fetch["url"], headers={"Range": f"bytes={b0}-{b1}"})
    assert one.status_code == 206 and one.content == _record(chunks[2])
    both = httpx.get(fetch["url"], headers={"Range": f"bytes={a0}-{a1},{b0}-{b1}"})
    assert both.status_code == 206 and both.headers["content-type"].startswith("multipart/byteranges")
    assert _record(chunks[0]) in both.content and _record(chunks[2]) in both.content and len(both.content) == int(both.headers["content-length"])
    # chunk 1 is not the file's: this URL does not give its bytes, alone or among others
    assert httpx.get(fetch["url"], headers={"Range": f"bytes={a1 + 1}-{b0 - 1}"}).status_code == 416
    assert httpx.get(fetch["url"], headers={"Range": f"bytes={a0}-{a1},{a1 + 1}-{b0 - 1}"}).status_code == 416
    assert httpx.get(fetch["url"], headers={"Range": f"bytes={a0}-{b1}"}).status_code == 416
    assert httpx.get(re.sub(r"r=[0-9,-]+", f"r={a0}-{b1}", fetch["url"])).status_code == 403  # the ranges are signed
    v1 = httpx.get(f"{cas}/v1/reconstructions/{xet.hex_of(fh)}", headers=auth).json()
    assert set(v1["fetch_info"]) == {xh} and len(v1["fetch_info"][xh]) == 3

    fetches = []
    for n, extra in enumerate([{}, {"HF_XET_CLIENT_ENABLE_MULTIRANGE_FETCHING": "true"}, {"HF_XET_CLIENT_RECONSTRUCTION_API_VERSION": "1"}]):
        log_from = len(_settled_log(hub_server))
        got = _client(hub_server, tmp_path, "bob", cache=f"v2-{n}", env_extra=extra, op="download", repo="alice/xet-v2", path="v2.bin", dl=str(tmp_path / f"dl{n}"))
        assert got["xet"] and Path(got["path"]).read_bytes() == content, extra
        log = _settled_log(hub_server)[log_from:]
        fetches.append((log.count("/xet/v2/reconstructions/"), log.count("/xet/v1/reconstructions/"), log.count(f"GET /api/lorahub/xet/xorbs/{xh}")))
    assert fetches[0][:2] == (1, 0) and fetches[1][:2] == (1, 0) and fetches[2][:2] == (0, 1)  # V2 unless told otherwise
    # V2 by default: one request per range; with multi-range fetching: both ranges in one request
    assert fetches[0][2] == 2 and fetches[1][2] == 1


def test_hostile_xorbs_and_shards_are_refused(hub_server) -> None:
    api = hub_server.api()
    api.create_repo("alice/xet-hostile")
    hub_server.api("bob").create_repo("bob/xet-hostile")
    cas, tok = _token(hub_server, "alice/xet-hostile")
    auth = {"Authorization": f"Bearer {tok}"}
    chunks = [os.urandom(30_000), os.urandom(20_000)]
    good_hash, good = _xorb(chunks)
    stored = _chunk_files(hub_server)

    def post_xorb(h: str, body: bytes, headers: dict = auth) -> httpx.Response:
        return httpx.post(f"{cas}/v1/xorbs/default/{h}", content=body, headers=headers, timeout=60)

    assert post_xorb(good_hash, good, {}).status_code == 401
    assert post_xorb(good_hash, good, {"Authorization": f"Bearer {tok[:-2]}xx"}).status_code == 401
    assert post_xorb("0" * 64, good).status_code == 400  # wrong xorb hash
    assert post_xorb(good_hash, good[:-10]).status_code == 400  # truncated
    flipped = bytearray(good)
    flipped[100] ^= 1
    assert post_xorb(good_hash, bytes(flipped)).status_code == 400  # a chunk's bytes changed
    lying = bytearray(good)
    lying[5:8] = (30_001).to_bytes(3, "little")  # header says another length
    assert post_xorb(good_hash, bytes(lying)).status_code == 400
    huge = _record(b"\0" * (xet.MAX_CHUNK_SIZE + 1))
    assert post_xorb(good_hash, huge).status_code == 400  # oversized chunk
    assert post_xorb(good_hash, b"\0" * (xet.MAX_XORB_BYTES + 1)).status_code == 413  # oversized xorb
    assert post_xorb(good_hash, b"").status_code == 400

    # Without a Content-Length (chunked), an oversized body is cut off while it streams in: 413,
    # the server stops reading there (it never holds a xorb in memory: the body goes to xet/tmp).
    sent = 0

    def endless():  # noqa: ANN202
        nonlocal sent
        block = good * (1 << 20 // len(good) + 1)
        while sent < 4 * xet.MAX_XORB_BYTES:
            sent += len(block)
            yield block

    try:
        r = post_xorb(good_hash, endless())
        assert r.status_code == 413, r.text
    except httpx.TransportError:
        pass  # the server may close the connection before the client reads its answer
    assert sent < 2 * xet.MAX_XORB_BYTES  # stopped soon after the limit, not read to the end
    assert "cut off past" in hub_server.log_text()
    assert not list((hub_server.data / "xet" / "tmp").glob("*.part"))  # the spooled part removed
    assert _chunk_files(hub_server) == stored  # nothing stored

    # bob uploads a xorb: alice may not name it in her shard (it is refused like one that does not exist).
    _, bob_tok = _token(hub_server, "bob/xet-hostile", user="bob")
    bob_chunks = [os.urandom(25_000)]
    bob_hash, bob_body = _xorb(bob_chunks)
    assert post_xorb(bob_hash, bob_body, {"Authorization": f"Bearer {bob_tok}"}).json() == {"was_inserted": True}
    assert post_xorb(good_hash, good).json() == {"was_inserted": True}
    # The global dedupe query answers alice (a shard listing her xorb), not bob, who never uploaded it.
    first = xet.hex_of(xet.chunk_hash(chunks[0]))
    dd = httpx.get(f"{cas}/v1/chunks/default-merkledb/{first}", headers=auth)
    assert dd.status_code == 200 and xet.parse_shard(dd.content) == []
    assert good_hash in dd.content.hex() or xet.hash_of_hex(good_hash) in dd.content
    assert httpx.get(f"{cas}/v1/chunks/default/{first}", headers={"Authorization": f"Bearer {bob_tok}"}).status_code == 404

    leaves = [(xet.chunk_hash(c), len(c)) for c in chunks]
    fh = xet.file_hash(leaves)
    sha = xet.hash_of_hex(hashlib.sha256(b"".join(chunks)).hexdigest())  # shards hold it word-reversed
    gx = xet.hash_of_hex(good_hash)

    def post_shard(body: bytes) -> httpx.Response:
        return httpx.post(f"{cas}/v1/shards", content=body, headers=auth, timeout=60)

    bx = xet.hash_of_hex(bob_hash)
    bob_fh = xet.file_hash([(xet.chunk_hash(bob_chunks[0]), 25_000)])
    assert post_shard(_shard([(bob_fh, [(bx, 25_000, 0, 1)], None)])).status_code == 400  # not her xorb
    assert post_shard(_shard([(bob_fh, [(bx, 25_000, 0, 1)], None)], proofs=[bytes(32)])).status_code == 400  # a wrong proof
    assert post_shard(_shard([(fh, [(gx, 50_000, 0, 3)], sha)])).status_code == 400  # range past the xorb
    assert post_shard(_shard([(fh, [(gx, 49_999, 0, 2)], sha)])).status_code == 400  # wrong unpacked length
    assert post_shard(_shard([(bytes(32), [(gx, 50_000, 0, 2)], sha)])).status_code == 400  # wrong file hash
    assert post_shard(_shard([(fh, [(gx, 50_000, 0, 2)], bytes(32))])).status_code == 400  # wrong sha256
    assert post_shard(_shard([(fh, [(gx, 50_000, 0, 2)], sha)])[:-20]).status_code == 400  # truncated
    assert post_shard(_shard([(fh, [(gx, 50_000, 0, 2)], sha)])[:100]).status_code == 400
    assert post_shard(b"not a shard" * 10).status_code == 400
    bomb = xet.SHARD_TAG + struct.pack("<QQ", 2, 0) + fh + struct.pack("<IIQ", 0, 0xFFFFFFFF, 0)
    assert post_shard(bomb).status_code == 400  # a count larger than the body
    blobs = hub_server.data / "blobs" / "sha256"
    oid = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert not (blobs / oid[:2] / oid[2:4] / oid).exists()  # nothing registered

    # Two files, the second with a wrong SHA-256: the shard fails whole, the first is not recorded either.
    from hubkit import NDJSON, ndjson

    fh1 = xet.file_hash(leaves[:1])
    assert post_shard(_shard([(fh, [(gx, 50_000, 0, 2)], sha), (fh1, [(gx, 30_000, 0, 1)], bytes(32))])).status_code == 400
    line = {"key": "lfsFile", "value": {"path": "data.bin", "algo": "sha256", "oid": oid, "size": 50_000}}
    head = {"key": "header", "value": {"summary": "xet file"}}
    r = hub_server.request("POST", "/api/models/alice/xet-hostile/commit/main", content=ndjson(head, line), headers=NDJSON)
    assert r.status_code >= 400, r.text

    # With the verification hash of exactly the chunks (which only their bytes give), another
    # user's xorb may be named: what two users sharing one client cache send.
    proof = xet.range_hash([xet.chunk_hash(bob_chunks[0])])
    bob_sha = xet.hash_of_hex(hashlib.sha256(bob_chunks[0]).hexdigest())
    assert post_shard(_shard([(bob_fh, [(bx, 25_000, 0, 1)], bob_sha)], proofs=[proof])).json() == {"result": 1}

    ok = post_shard(_shard([(fh, [(gx, 50_000, 0, 2)], sha)]))
    assert ok.status_code == 200 and ok.json() == {"result": 1}
    assert not (blobs / oid[:2] / oid[2:4] / oid).exists()  # stored once: as its chunks, no blob file
    # Registered for alice's repo: a commit may name it (checked like an LFS object); bob's repo may not.
    r = hub_server.request("POST", "/api/models/alice/xet-hostile/commit/main", content=ndjson(head, line), headers=NDJSON)
    assert r.status_code == 200, r.text
    assert hub_server.request("GET", "/alice/xet-hostile/resolve/main/data.bin").content == b"".join(chunks)
    r = hub_server.request("POST", "/api/models/bob/xet-hostile/commit/main", user="bob", content=ndjson(head, line), headers=NDJSON)
    assert r.status_code >= 400


def test_registry_check_covers_xet(hub_server, tmp_path: Path) -> None:
    from lorahub.registry.hub.check import check_storage

    api = hub_server.api()
    api.create_repo("alice/xet-check-a")
    api.create_repo("alice/xet-check-b")
    one = write_kohya_lora(tmp_path / "one" / "m.safetensors", rank=64, title="checkone")
    two = write_kohya_lora(tmp_path / "two" / "m.safetensors", rank=64, title="checktwo")
    _client(hub_server, tmp_path, "alice", op="upload_file", src=str(one), dst="m.safetensors", repo="alice/xet-check-a")
    _client(hub_server, tmp_path, "alice", op="upload_file", src=str(two), dst="m.safetensors", repo="alice/xet-check-b")

    report = check_storage(hub_server.data, hub_server.database, grace_s=3600)
    assert report.ok, [i.message for i in report.issues if i.severity == "error"]
    # Both files are stored only as chunks (no blob file), and verified by rebuilding them.
    assert report.chunked_blobs >= 2
    for f in (one, two):
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        assert not (hub_server.data / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha).exists()
    assert report.bytes_verified >= one.stat().st_size + two.stat().st_size
    assert report.xet_xorbs >= 2 and report.xet_files >= 2 and report.xet_chunks >= 5
    # the second file shares all but its header chunks with the first
    assert report.xet_bytes_saved >= two.stat().st_size // 2

    # A chunk file whose bytes changed is an error, named; --repair quarantines it (still an error:
    # a xorb needs it); putting it back makes the store whole again.
    chunk = _first_chunk(hub_server, hashlib.sha256(one.read_bytes()).hexdigest())  # one's header: its own
    good = chunk.read_bytes()
    chunk.chmod(0o644)
    chunk.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    bad = check_storage(hub_server.data, hub_server.database)
    errors = [i for i in bad.issues if i.severity == "error"]
    assert not bad.ok and [i.kind for i in errors if i.kind.startswith("xet")] == ["xet_corrupt_chunk"]
    # ... and so is each committed file built on it, named with its commits (its bytes live only in the chunks)
    damaged = [i for i in errors if i.kind == "corrupt"]
    assert damaged and all(chunk.name in i.message and i.path is None and i.references for i in damaged), damaged
    chunk.write_bytes(good)
    # A chunk file no xorb names (a crashed upload) is an orphan; --repair removes it once old.
    stray = xet.hex_of(xet.chunk_hash(b"never in a xorb"))
    orphan = hub_server.data / "xet" / "chunks" / stray[:2] / stray
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(_record(b"never in a xorb"))
    os.utime(orphan, (1, 1))
    found = check_storage(hub_server.data, hub_server.database)
    assert found.ok and [i.kind for i in found.issues if i.kind.startswith("xet")] == ["xet_orphan_chunk"]
    fixed = check_storage(hub_server.data, hub_server.database, repair=True)
    assert fixed.repaired >= 1 and not orphan.exists()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_mid_upload_then_check_and_repush(backend: str, tmp_path: Path) -> None:
    """Killed after a xorb's chunks are on disk, before its row: the check sees orphan chunks (no
    error), and pushing again completes the upload with nothing left over."""
    import signal

    from hubkit import drop_pg_database, fresh_pg_database, start_server, stop_server
    from testkit import wait_for

    from lorahub.registry.hub.check import check_storage
    from lorahub.registry.hub.faults import ENV, ENV_DIR

    url = fresh_pg_database() if backend == "postgres" else None
    data = tmp_path / "data"
    started = []
    try:
        server = start_server(data, url, backend, env={ENV: "xet-xorb-before-row", ENV_DIR: str(tmp_path / "faults")})
        started.append(server)
        (tmp_path / "faults").mkdir()
        server.api().create_repo("alice/crash")
        lora = write_kohya_lora(tmp_path / "m.safetensors", rank=64)
        env = server.env("alice")
        env.pop("HF_HUB_DISABLE_XET")
        env["HF_XET_CACHE"] = str(tmp_path / "xet-cache-1")
        args = json.dumps({"op": "upload_file", "src": str(lora), "dst": "m.safetensors", "repo": "alice/crash"})
        client = subprocess.Popen([sys.executable, "-c", CLIENT, args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: (tmp_path / "faults" / "xet-xorb-before-row.reached").exists(), "the xet-xorb-before-row fault point")
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=15)
        finally:
            client.kill()
            client.wait(timeout=30)
        assert _chunk_files(server)  # the chunks landed, the xorb row did not

        server = start_server(data, server.database, backend)
        started.append(server)
        report = check_storage(data, server.database)
        assert report.ok and report.xet_xorbs == 0
        # the chunks, and the xorb body the killed server was reading (xet/tmp/*.part)
        assert {(i.kind, i.severity) for i in report.issues} == {("xet_orphan_chunk", "pending"), ("stale_part", "pending")}
        assert all("xet/tmp/" in i.path for i in report.issues if i.kind == "stale_part")
        assert not server.api().file_exists("alice/crash", "m.safetensors")

        got = _client(server, tmp_path, "alice", cache="2", op="upload_file", src=str(lora), dst="m.safetensors", repo="alice/crash")
        assert got["oid"]
        down = _client(server, tmp_path, "bob", op="download", repo="alice/crash", path="m.safetensors", dl=str(tmp_path / "dl"))
        assert down["xet"] and Path(down["path"]).read_bytes() == lora.read_bytes()
        clean = check_storage(data, server.database, grace_s=0)
        # the re-push reused the orphan chunks; the killed request's body is the only leftover
        assert clean.ok and [(i.kind, i.severity) for i in clean.issues] == [("stale_part", "orphan")], clean.issues
        assert check_storage(data, server.database, grace_s=0, repair=True).repaired == 1
        assert check_storage(data, server.database, grace_s=0).issues == []
    finally:
        for s in started:
            stop_server(s)
        if url:
            drop_pg_database(url)


def _xorb_rows(database: str) -> dict[str, int]:
    """hash -> bytes received, of every xorb the server stored."""
    import sqlalchemy as sa

    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT hash, received_bytes FROM hub_xet_xorbs")).all())
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_interrupted_upload_resumes_sending_only_what_is_missing(backend: str, tmp_path: Path) -> None:
    """A file of three xorbs: the first is stored, the second is on its way when the client is
    SIGKILLed and the server stopped. Re-running the same upload (the unchanged client, its own
    cache) completes it; the client learns the stored xorb from the global dedupe query and sends
    only the others: the server receives about the file's size minus the first xorb."""
    import re
    import signal

    from hubkit import drop_pg_database, fresh_pg_database, start_server, stop_server
    from testkit import wait_for

    from lorahub.registry.hub.faults import ENV, ENV_DIR

    url = fresh_pg_database() if backend == "postgres" else None
    data = tmp_path / "data"
    content = os.urandom(140 * 10**6)  # incompressible: xorbs of 64 MiB, 64 MiB and the rest
    src = tmp_path / "big.bin"
    src.write_bytes(content)
    del content
    started = []
    try:
        # the second xorb to arrive blocks before its row (its chunks land); the first one passes
        server = start_server(data, url, backend, env={ENV: "xet-xorb-before-row@2", ENV_DIR: str(tmp_path / "faults")})
        started.append(server)
        (tmp_path / "faults").mkdir()
        server.api().create_repo("alice/resume")
        env = server.env("alice")
        env.pop("HF_HUB_DISABLE_XET")
        env["HF_XET_CACHE"] = str(tmp_path / "xet-cache")
        args = json.dumps({"op": "upload_file", "src": str(src), "dst": "big.bin", "repo": "alice/resume"})
        client = subprocess.Popen([sys.executable, "-c", CLIENT, args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: (tmp_path / "faults" / "xet-xorb-before-row.reached").exists(), "the second xorb", timeout=240)
        finally:
            client.send_signal(signal.SIGKILL)
            client.wait(timeout=30)
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=15)
        before = _xorb_rows(server.database)
        assert len(before) == 1, before  # the first xorb is stored, the rest is not
        ((first, first_bytes),) = before.items()
        assert first_bytes > 60 * 2**20

        server = start_server(data, server.database, backend)
        started.append(server)
        assert not server.api().file_exists("alice/resume", "big.bin")
        log_from = len(_settled_log(server))
        _client(server, tmp_path, "alice", cache="xet-cache", op="upload_file", src=str(src), dst="big.bin", repo="alice/resume")
        log = _settled_log(server)[log_from:]
        posted = re.findall(r"POST /api/lorahub/xet/v1/xorbs/default/([0-9a-f]{64})", log)
        after = _xorb_rows(server.database)
        assert first not in posted  # the stored xorb was not sent again ...
        assert "GET /api/lorahub/xet/v1/chunks/" in log  # ... the dedupe query told the client about it
        assert posted and set(posted) == set(after) - {first} and len(posted) == len(set(posted))
        received = sum(after[h] for h in posted)
        assert received <= src.stat().st_size - first_bytes + 2**20, (received, first_bytes)
        assert first_bytes + received >= src.stat().st_size  # every byte arrived exactly once overall

        info = server.api().model_info("alice/resume", files_metadata=True)
        (sib,) = [x for x in info.siblings if x.rfilename == "big.bin"]
        assert sib.lfs.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
        r = httpx.get(f"{server.url}/alice/resume/resolve/main/big.bin", headers={"Range": "bytes=67000000-67200000"})
        assert r.status_code == 206 and r.content == src.read_bytes()[67_000_000:67_200_001]
        # Stored once, as chunks, and whole: the check rebuilds it; the killed request's body is the only leftover.
        from lorahub.registry.hub.check import check_storage

        report = check_storage(data, server.database, grace_s=0)
        assert report.ok and report.chunked_blobs == 1 and report.bytes_verified >= src.stat().st_size
        assert {i.kind for i in report.issues} <= {"stale_part"}, report.issues
    finally:
        for s in started:
            stop_server(s)
        if url:
            drop_pg_database(url)


DIFFUSERS = r"""
import json
import torch
from diffusers import StableDiffusionPipeline
from huggingface_hub import constants
assert not constants.HF_HUB_DISABLE_XET
pipe = StableDiffusionPipeline.from_pretrained("alice/xet-sd1-tiny", safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
def run():
    g = torch.Generator().manual_seed(0)
    return pipe("a tnystl painting", num_inference_steps=2, generator=g, output_type="np", height=64, width=64).images
before = run()
pipe.load_lora_weights("alice/xet-tiny-lora")
after = run()
print("RESULT " + json.dumps({"adapters": pipe.get_list_adapters(), "diff": float(abs(after - before).max())}))
"""


@pytest.mark.torch
@pytest.mark.slow
def test_diffusers_loads_a_lora_uploaded_and_downloaded_through_xet(sqlite_server, embedded_base: Path, tmp_path: Path) -> None:
    from lorahub.base.synthetic import make_adapter

    srv = sqlite_server
    api = srv.api()
    api.create_repo("alice/xet-sd1-tiny")
    api.upload_folder(folder_path=embedded_base, repo_id="alice/xet-sd1-tiny")  # LFS (in-process: Xet off)
    lora = make_adapter(tmp_path / "lora" / "pytorch_lora_weights.safetensors", base=embedded_base, rank=4, fmt="diffusers", trigger="tnystl")
    api.create_repo("alice/xet-tiny-lora", private=True)
    _client(srv, tmp_path, "alice", op="upload_folder", src=str(lora.parent), repo="alice/xet-tiny-lora")  # Xet

    env = srv.env("alice")
    env.pop("HF_HUB_DISABLE_XET")
    env["HF_XET_CACHE"] = str(tmp_path / "xet-cache-diffusers")
    proc = subprocess.run([sys.executable, "-c", DIFFUSERS], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert result["adapters"]["unet"] and result["diff"] > 1e-4
    log = srv.log_text()
    assert '"GET /api/models/alice/xet-tiny-lora/xet-read-token/' in log and "/api/lorahub/xet/v2/reconstructions/" in log
    hits = srv.request("GET", "/api/lorahub/search", params={"q": "xet-tiny-lora"}).json()
    assert [h["name"] for h in hits] == ["xet-tiny-lora"]  # indexed like an LFS upload
