"""The Hub API of ``lorahub serve`` driven by the real huggingface_hub client (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from hubkit import sha256
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from lorahub.registry.hub.gitobj import git_blob_id, lfs_pointer


def test_whoami_and_create_repo(hub_server) -> None:
    api = hub_server.api()
    me = api.whoami()
    assert me["name"] == "alice"
    assert me["auth"]["accessToken"]["role"] == "write"
    assert hub_server.api("alice_ro").whoami()["auth"]["accessToken"]["role"] == "read"

    url = api.create_repo("alice/first")
    assert str(url) == f"{hub_server.url}/alice/first"
    assert url.repo_id == "alice/first"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/first")
    assert err.value.response.status_code == 409
    assert api.create_repo("alice/first", exist_ok=True).repo_id == "alice/first"
    # Repo ids are unique ignoring case, as on the Hub.
    with pytest.raises(HfHubHTTPError):
        api.create_repo("alice/FIRST")

    info = api.model_info("alice/first", files_metadata=True)
    assert re.fullmatch(r"[0-9a-f]{40}", info.sha)
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert info.private is False
    assert api.repo_exists("alice/first") and not api.repo_exists("alice/nothing")


def test_upload_file_model_info_tree_and_download(hub_server, tmp_path: Path) -> None:
    api = hub_server.api()
    api.create_repo("alice/files")
    text = b"hello lorahub\n"
    blob = os.urandom(300_000)
    api.upload_file(path_or_fileobj=text, path_in_repo="hello.txt", repo_id="alice/files")
    ci = api.upload_file(path_or_fileobj=blob, path_in_repo="weights/data.bin.raw", repo_id="alice/files")
    assert re.fullmatch(r"[0-9a-f]{40}", ci.oid)

    info = api.model_info("alice/files", files_metadata=True)
    assert info.sha == ci.oid
    sib = {s.rfilename: s for s in info.siblings}
    assert sib["hello.txt"].size == len(text)
    assert sib["hello.txt"].blob_id == git_blob_id(text)  # git blob SHA-1 of the content
    assert sib["hello.txt"].lfs is None
    lfs = sib["weights/data.bin.raw"].lfs
    assert lfs is not None and lfs.sha256 == sha256(blob) and lfs.size == len(blob)
    assert lfs.pointer_size == len(lfs_pointer(sha256(blob), len(blob)))
    assert sib["weights/data.bin.raw"].blob_id == git_blob_id(lfs_pointer(sha256(blob), len(blob)))

    tree = {e.path: e for e in api.list_repo_tree("alice/files", recursive=True)}
    assert set(tree) == {".gitattributes", "hello.txt", "weights", "weights/data.bin.raw"}
    assert type(tree["weights"]).__name__ == "RepoFolder"
    assert tree["weights/data.bin.raw"].lfs.sha256 == sha256(blob)
    top = [e.path for e in api.list_repo_tree("alice/files")]
    assert top == [".gitattributes", "hello.txt", "weights"]
    assert [e.path for e in api.list_repo_tree("alice/files", path_in_repo="weights")] == ["weights/data.bin.raw"]
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree("alice/files", path_in_repo="nowhere"))
    assert sorted(api.list_repo_files("alice/files")) == [".gitattributes", "hello.txt", "weights/data.bin.raw"]

    cache = tmp_path / "cache"
    p = hf_hub_download("alice/files", "weights/data.bin.raw", endpoint=hub_server.url, token=hub_server.tokens["alice"], cache_dir=cache)
    assert Path(p).read_bytes() == blob
    p = hf_hub_download("alice/files", "hello.txt", endpoint=hub_server.url, cache_dir=cache)  # anonymous, public repo
    assert Path(p).read_bytes() == text
    assert api.file_exists("alice/files", "hello.txt")
    assert not api.file_exists("alice/files", "missing.txt")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("alice/files", "missing.txt", endpoint=hub_server.url, cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/files", "hello.txt", revision="no-such-branch", endpoint=hub_server.url, cache_dir=cache)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/nope", "hello.txt", endpoint=hub_server.url, cache_dir=cache)

    # Download at an older commit: the file list of that commit.
    old = api.list_repo_commits("alice/files")
    assert [c.commit_id for c in old][0] == ci.oid and len(old) == 3  # initial commit + 2 uploads
    assert api.list_repo_files("alice/files", revision=old[1].commit_id) == [".gitattributes", "hello.txt"]


def test_resolve_headers_and_resumed_range_download(hub_server, tmp_path: Path) -> None:
    api = hub_server.api()
    api.create_repo("alice/ranges")
    blob = os.urandom(2_500_000)
    ci = api.upload_file(path_or_fileobj=blob, path_in_repo="big.safetensors.part", repo_id="alice/ranges")

    head = httpx.head(f"{hub_server.url}/alice/ranges/resolve/main/big.safetensors.part", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == ci.oid
    assert head.headers["X-Linked-Etag"].strip('"') == sha256(blob)
    assert head.headers["X-Linked-Size"] == str(len(blob))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert not any(k.lower().startswith("x-xet") for k in head.headers)
    part = httpx.get(f"{hub_server.url}/alice/ranges/resolve/{ci.oid}/big.safetensors.part", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == blob[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(blob)}"

    # A download cut in the middle: huggingface_hub resumes it with "Range: bytes=N-" and gets a 206.
    with CuttingProxy(hub_server.url, cut_after=1_200_000) as proxy:
        p = hf_hub_download("alice/ranges", "big.safetensors.part", endpoint=proxy.url, cache_dir=tmp_path / "cache")
        assert proxy.cuts == 1
    assert Path(p).read_bytes() == blob
    resumed = re.findall(r'"GET /alice/ranges/resolve/\S+/big\.safetensors\.part" 206 (\d+) ', hub_server.log_text())
    assert resumed and 0 < int(resumed[-1]) < len(blob)


class CuttingProxy:
    """A loopback TCP proxy that cuts the first connection once it has relayed ``cut_after`` response bytes."""

    def __init__(self, target: str, cut_after: int) -> None:
        import socket
        import threading
        from urllib.parse import urlparse

        u = urlparse(target)
        self.target = (u.hostname, u.port)
        self.cut_after = cut_after
        self.cuts = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.sock.close()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src, dst, response: bool) -> None:  # noqa: ANN001
        import socket

        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                if response and sent > self.cut_after:
                    with self._lock:
                        if self.cuts == 0:
                            self.cuts = 1
                            for s in (src, dst):
                                s.shutdown(socket.SHUT_RDWR)
                            break
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_upload_folder_card_and_snapshot(hub_server, tmp_path: Path) -> None:
    api = hub_server.api()
    src = tmp_path / "folder"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "README.md").write_text(
        "---\nlicense: mit\ntags:\n- anime\n- style\nbase_model: runwayml/stable-diffusion-v1-5\n"
        "base_model_relation: adapter\nlibrary_name: diffusers\npipeline_tag: text-to-image\n---\n# Folder\n"
    )
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "notes.txt").write_text("notes")
    (src / "sub" / "deeper" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(5000))
    api.create_repo("alice/folder")
    ci = api.upload_folder(folder_path=src, repo_id="alice/folder", commit_message="add folder")
    commits = api.list_repo_commits("alice/folder")
    assert len(commits) == 2 and commits[0].title == "add folder"  # one commit for the whole folder

    info = api.model_info("alice/folder")
    assert info.sha == ci.oid
    assert info.card_data["license"] == "mit"
    assert info.pipeline_tag == "text-to-image" and info.library_name == "diffusers"
    for tag in ("anime", "style", "license:mit", "base_model:runwayml/stable-diffusion-v1-5",
                "base_model:adapter:runwayml/stable-diffusion-v1-5", "diffusers", "text-to-image"):
        assert tag in info.tags
    assert [m.id for m in api.list_models(filter="anime", author="alice")] == ["alice/folder"]
    assert [m.id for m in api.list_models(filter=["anime", "license:mit"])] == ["alice/folder"]
    assert list(api.list_models(filter="license:apache-2.0")) == []
    assert [m.id for m in api.list_models(search="fold")] == ["alice/folder"]
    full = next(iter(api.list_models(search="alice/folder", full=True, cardData=True)))
    assert {s.rfilename for s in full.siblings} >= {"README.md", "sub/deeper/image.png"}
    assert full.card_data["license"] == "mit"

    out = snapshot_download("alice/folder", endpoint=hub_server.url, cache_dir=tmp_path / "cache")
    for rel in ("README.md", "config.json", "sub/notes.txt", "sub/deeper/image.png"):
        assert (Path(out) / rel).read_bytes() == (src / rel).read_bytes()
    local = tmp_path / "local"
    snapshot_download("alice/folder", endpoint=hub_server.url, local_dir=local, allow_patterns=["sub/*"])
    assert (local / "sub" / "notes.txt").read_text() == "notes" and not (local / "README.md").exists()

    # Re-uploading the unchanged folder makes no commit and sends no LFS bytes.
    before = hub_server.log_text().count("/api/lorahub/lfs/")
    again = api.upload_folder(folder_path=src, repo_id="alice/folder")
    assert again.oid == ci.oid
    assert hub_server.log_text().count("/api/lorahub/lfs/") == before


def test_create_commit_parent_conflict_and_deletions(hub_server) -> None:
    api = hub_server.api()
    api.create_repo("alice/commits")
    head = api.model_info("alice/commits").sha
    add = [CommitOperationAdd(path_in_repo=f"d/f{i}.txt", path_or_fileobj=f"{i}".encode()) for i in range(3)]
    c1 = api.create_commit("alice/commits", add, commit_message="three", parent_commit=head)
    with pytest.raises(HfHubHTTPError) as err:  # stale parent: refused, nothing merged
        api.create_commit(
            "alice/commits", [CommitOperationAdd(path_in_repo="late.txt", path_or_fileobj=b"x")], commit_message="late", parent_commit=head
        )
    assert err.value.response.status_code == 409
    assert "late.txt" not in api.list_repo_files("alice/commits")
    c2 = api.create_commit(
        "alice/commits",
        [CommitOperationDelete(path_in_repo="d/f0.txt"), CommitOperationAdd(path_in_repo="top.txt", path_or_fileobj=b"t")],
        commit_message="delete one",
        parent_commit=c1.oid,
    )
    assert sorted(api.list_repo_files("alice/commits")) == [".gitattributes", "d/f1.txt", "d/f2.txt", "top.txt"]
    with pytest.raises(RemoteEntryNotFoundError):
        api.delete_file("d/f0.txt", "alice/commits")
    api.delete_folder("d", "alice/commits")
    assert sorted(api.list_repo_files("alice/commits")) == [".gitattributes", "top.txt"]
    assert api.list_repo_files("alice/commits", revision=c2.oid) == [".gitattributes", "d/f1.txt", "d/f2.txt", "top.txt"]
    # A file where a folder exists (and the reverse) is refused.
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="top.txt/inner.txt", repo_id="alice/commits")
    assert err.value.response.status_code == 400


def test_list_models_link_pagination(hub_server) -> None:
    api = hub_server.api("bob")
    for i in range(5):
        api.create_repo(f"bob/page-{i}")
    first = httpx.get(f"{hub_server.url}/api/models", params={"author": "bob", "limit": 2})
    assert first.status_code == 200 and len(first.json()) == 2
    nxt = first.links["next"]["url"]
    seen = [m["id"] for m in first.json()]
    while nxt:
        page = httpx.get(nxt)
        seen += [m["id"] for m in page.json()]
        nxt = page.links.get("next", {}).get("url")
    assert sorted(seen) == [f"bob/page-{i}" for i in range(5)]
    assert len({m.id for m in api.list_models(author="bob")}) == 5
    assert len(list(api.list_models(author="bob", limit=3))) == 3
    newest = [m.id for m in api.list_models(author="bob", sort="createdAt")]
    assert newest[0] == "bob/page-4"


def test_safetensors_metadata_and_pull_request(hub_server, kohya_lora) -> None:
    api = hub_server.api()
    api.create_repo("alice/st")
    lora = kohya_lora(rank=4)
    api.upload_file(path_or_fileobj=lora, path_in_repo="model.safetensors", repo_id="alice/st")
    meta = api.get_safetensors_metadata("alice/st")
    assert len(meta.files_metadata["model.safetensors"].tensors) == 12
    assert meta.files_metadata["model.safetensors"].metadata["ss_output_name"] == "tinystyle"
    one = api.parse_safetensors_file_metadata("alice/st", "model.safetensors")
    assert one.tensors["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"].shape == [4, 320]

    pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="pr.txt", repo_id="alice/st", create_pr=True)
    assert pr.pr_url.endswith("/alice/st/discussions/1") and pr.pr_num == 1
    assert "pr.txt" not in api.list_repo_files("alice/st")
    assert "pr.txt" in api.list_repo_files("alice/st", revision="refs/pr/1")
    p = hf_hub_download("alice/st", "pr.txt", revision="refs/pr/1", endpoint=hub_server.url)
    assert Path(p).read_bytes() == b"proposal"
    refs = api.list_repo_refs("alice/st", include_pull_requests=True)
    assert [b.name for b in refs.branches] == ["main"]
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]


def test_validate_yaml_xet_and_delete(hub_server) -> None:
    bad = httpx.post(f"{hub_server.url}/api/validate-yaml", json={"content": "---\ntags: [a\n---\n", "repoType": "model"})
    assert bad.status_code == 400 and "YAML" in bad.json()["errors"][0]["message"]
    good = httpx.post(f"{hub_server.url}/api/validate-yaml", json={"content": "---\nlicense: mit\n---\nhi", "repoType": "model"})
    assert good.status_code == 200 and good.json() == {"errors": [], "warnings": []}

    api = hub_server.api()
    api.create_repo("alice/gone")
    with pytest.raises(ValueError):  # the client checks README metadata with /api/validate-yaml first
        api.upload_file(path_or_fileobj=b"---\ntags: [a\n---\n", path_in_repo="README.md", repo_id="alice/gone")

    # Xet tokens: a write token needs a write token of the namespace; anonymous gets none.
    assert httpx.get(f"{hub_server.url}/api/models/alice/gone/xet-write-token/main").status_code == 401
    assert hub_server.request("GET", "/api/models/alice/gone/xet-write-token/main", user="bob").status_code == 403
    xet = hub_server.request("GET", "/api/models/alice/gone/xet-write-token/main")
    assert xet.status_code == 200 and xet.headers["X-Xet-Cas-Url"] == f"{hub_server.url}/api/lorahub/xet"
    assert xet.json()["accessToken"] == xet.headers["X-Xet-Access-Token"]
    assert int(xet.headers["X-Xet-Token-Expiration"]) == xet.json()["exp"]

    api.delete_repo("alice/gone")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/gone")
    api.create_repo("alice/gone")  # the name is free again
    assert [s.rfilename for s in api.model_info("alice/gone").siblings] == [".gitattributes"]


def test_concurrent_commits_land_or_conflict(hub_server) -> None:
    """Eight clients commit to one branch at once: without parentCommit all land (rebased on the new head,
    nothing lost); with the same parentCommit exactly one lands and the others get 409."""
    from concurrent.futures import ThreadPoolExecutor

    api = hub_server.api()
    api.create_repo("alice/race")

    def add(i: int, parent: str | None = None):  # noqa: ANN202
        try:
            return api.create_commit(
                "alice/race", [CommitOperationAdd(f"f{i}.txt", f"{i}".encode())], commit_message=f"c{i}", parent_commit=parent
            )
        except HfHubHTTPError as exc:
            return exc.response.status_code

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(add, range(8)))
    assert all(not isinstance(r, int) for r in results), results
    files = api.list_repo_files("alice/race")
    assert sorted(files) == sorted([".gitattributes"] + [f"f{i}.txt" for i in range(8)])
    assert len(api.list_repo_commits("alice/race")) == 9  # a linear history: initial + 8

    head = api.model_info("alice/race").sha
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: add(100 + i, head), range(8)))
    landed = [r for r in results if not isinstance(r, int)]
    assert len(landed) == 1 and sorted(r for r in results if isinstance(r, int)) == [409] * 7
    assert len(api.list_repo_files("alice/race")) == 10


def test_dataset_repos(hub_server, tmp_path: Path) -> None:
    api = hub_server.api()
    url = api.create_repo("alice/captions", repo_type="dataset")
    assert str(url) == f"{hub_server.url}/datasets/alice/captions"
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id="alice/captions", repo_type="dataset")
    info = api.dataset_info("alice/captions", files_metadata=True)
    assert {s.rfilename for s in info.siblings} == {".gitattributes", "data/train.csv"}
    assert [d.id for d in api.list_datasets(author="alice")] == ["alice/captions"]
    assert list(api.list_models(author="alice", search="captions")) == []  # types do not mix
    p = hf_hub_download("alice/captions", "data/train.csv", repo_type="dataset", endpoint=hub_server.url, cache_dir=tmp_path)
    assert Path(p).read_bytes() == b"a,b\n1,2\n"
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/captions")
