"""Unit tests of the Hub building blocks: names, ids, blob storage, cards, signed URLs, trees."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from lorahub.errors import YamlError
from lorahub.hub.card import check_card, parse_card
from lorahub.registry.hub import card_tags, lfs, trees
from lorahub.registry.hub.auth import UrlSigner, generate_token, looks_like_token
from lorahub.registry.hub.blobstore import HashMismatch, LocalBlobStore, SizeMismatch
from lorahub.registry.hub.errors import BadRequest, HubApiError, PayloadTooLarge
from lorahub.registry.hub.gitobj import git_blob_id, lfs_pointer, lfs_pointer_info
from lorahub.registry.hub.names import (
    check_path,
    check_repo_name,
    check_user_name,
    normalization_clash,
    path_problem,
    split_repo_id,
)
from lorahub.registry.hub.trees import FileEntry
from lorahub.registry.server.hub_views import tree_items


def test_git_blob_id_matches_git(tmp_path: Path) -> None:
    data = b"hello lorahub\n"
    f = tmp_path / "f"
    f.write_bytes(data)
    try:
        expected = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):  # pragma: no cover - git is part of the dev setup
        pytest.skip("git is not available")
    assert git_blob_id(data) == expected
    ptr = lfs_pointer("a" * 64, 123)
    assert ptr == b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 123\n"
    assert lfs_pointer_info("a" * 64, 123) == (git_blob_id(ptr), len(ptr))


@pytest.mark.parametrize("name", ["alice", "Alice_2", "a", "a.b-c_d", "x" * 42])
def test_good_user_names(name: str) -> None:
    assert check_user_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a--b", "a..b", "x.git", "api", "datasets", "é", "a/b", "a b", "x" * 43, "..", "a\x00"])
def test_bad_user_names(name: str) -> None:
    with pytest.raises(BadRequest):
        check_user_name(name)


@pytest.mark.parametrize("name", ["my-lora", "sd1.5_style", "A", "x" * 96])
def test_good_repo_names(name: str) -> None:
    assert check_repo_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "a--b", "a..b", "x.git", "x" * 97, "a/b", "ümlaut", "trailing-"])
def test_bad_repo_names(name: str) -> None:
    with pytest.raises(BadRequest):
        check_repo_name(name)


def test_split_repo_id() -> None:
    assert split_repo_id("alice/my-lora") == ("alice", "my-lora")
    for bad in ("alice", "a/b/c", "../x", "alice/../x", "/x"):
        with pytest.raises(BadRequest):
            split_repo_id(bad)


@pytest.mark.parametrize(
    "path",
    ["a.txt", "dir/sub/file.safetensors", "ünïcode/文件.txt", "with space.txt", ".gitattributes", ".github/x.yml",
     "a/.gitignore", "git/config", "a.git/x", "git~/x", "git~1x/y", ".gits/x", "console/conf.txt", "e\u0301.txt",
     "lpt/com10.txt", "\U0001f600.png"],
)
def test_good_paths(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize(
    "path",
    ["", "/abs", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a\x00b", "tab\there", "\x7f", "rtl\u202e",
     "\ud800", ".git/config", "x" * 1025,
     # .git under every name a file system gives it (a file named .git is a gitdir pointer: refused too)
     "a/.git", ".GIT/config", ".Git/hooks/x", "sub/.git/config", "git~1/config", "GIT~1/config", "a/git~2/x",
     ".git./config", ".git /config", ".git. . /config", "\u200c.git/config", ".g\u200dit/x", ".git\ufeff/x",
     ".git::$INDEX_ALLOCATION/config", ".git:$I30:$INDEX_ALLOCATION/x", "\uff0e\uff47\uff49\uff54/config",
     "/".join(["a"] * 65), "s" * 256 + "/f",
     # invisible and line-breaking characters
     "zero\u200bwidth", "join\u200d", "soft\u00adhyphen", "line\u2028sep", "para\u2029sep", "private\ue000",
     # names Windows cannot store (clients download files under their repo path)
     "CON", "nul.txt", "d/aux.safetensors", "COM1", "lpt9.bin", "com\u00b9", "a:b", "stream.txt:evil", "q?.txt",
     "star*", "pipe|x", "<tag>", 'quote".txt', "dot.", "d./f", "space ", "trail /f"],
)
def test_bad_paths(path: str) -> None:
    assert path_problem(path) is not None
    with pytest.raises(BadRequest):
        check_path(path)


def test_paths_differing_only_by_unicode_normalisation() -> None:
    nfc, nfd = "caf\u00e9.safetensors", "cafe\u0301.safetensors"
    assert normalization_clash([nfc, nfd]) == (nfc, nfd)
    assert normalization_clash(["x/" + nfd, "a.txt", "x/" + nfc]) == ("x/" + nfd, "x/" + nfc)
    assert normalization_clash([nfc, "a.txt"]) is None
    assert normalization_clash([nfd, "a.txt"]) is None
    assert normalization_clash(["\u212b", "\u00c5"]) == ("\u212b", "\u00c5")  # ANGSTROM SIGN vs A WITH RING


def test_blob_store_is_atomic_and_checked(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    # A wrong hash: nothing becomes visible, no temp file is left.
    w = store.begin(expected_size=len(data))
    w.write(data)
    with pytest.raises(HashMismatch):
        w.commit("0" * 64)
    assert not store.exists(sha) and list(store.tmp_dir.iterdir()) == []
    # Too many bytes for the announced size.
    w = store.begin(expected_size=10)
    with pytest.raises(SizeMismatch):
        w.write(data)
    assert list(store.tmp_dir.iterdir()) == []
    # Too few.
    w = store.begin(expected_size=len(data))
    w.write(data[:10])
    with pytest.raises(SizeMismatch):
        w.commit(sha)
    # Over the limit without an announced size.
    w = store.begin(max_size=1000)
    with pytest.raises(PayloadTooLarge):
        w.write(data)
    # A good one, in chunks; path layout sha256/ab/cd/<hex>, read-only, idempotent.
    stored = store.put_stream([data[:4096], data[4096:]], expected_sha256=sha, expected_size=len(data), git_sha1=True)
    assert stored.created and stored.sha256 == sha and stored.size == len(data) and stored.git_sha1 == git_blob_id(data)
    path = tmp_path / "blobs" / "sha256" / sha[:2] / sha[2:4] / sha
    assert path.read_bytes() == data and store.local_path(sha) == path and store.size(sha) == len(data)
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    again = store.put_bytes(data)
    assert not again.created and again.sha256 == sha
    with store.open(sha) as fh:
        assert fh.read(10) == data[:10]
    assert list(store.iter_blobs()) == [sha]
    store.delete(sha)
    assert not store.exists(sha)
    with pytest.raises(BadRequest):
        store.path_of("../../etc/passwd")


def test_blob_store_sweeps_old_partial_uploads(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    old = store.tmp_dir / "old.part"
    new = store.tmp_dir / "new.part"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.sweep_tmp(older_than_s=3600) == 1
    assert not old.exists() and new.exists()


def test_storage_errors_are_clean(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    os.chmod(store.tmp_dir, 0o500)
    try:
        if os.access(store.tmp_dir, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: a read-only folder is still writable")
        with pytest.raises(HubApiError) as err:
            store.begin(expected_size=1)
        assert err.value.status in (503, 507)
    finally:
        os.chmod(store.tmp_dir, 0o700)


def test_cards_parse_check_and_derive() -> None:
    text = "---\nlicense: mit\ntags: [anime, 3d]\nbase_model: org/base\nbase_model_relation: adapter\npipeline_tag: text-to-image\nlibrary_name: diffusers\ndate: 2024-01-01\n---\nbody"
    card = parse_card(text)
    assert card["license"] == "mit" and card["date"] == "2024-01-01"
    assert check_card(text) == ([], [])
    d = card_tags.derive(card, has_safetensors=True, has_adapter=True)
    assert d["tags"][:2] == ["anime", "3d"]
    assert {"diffusers", "text-to-image", "safetensors", "license:mit", "base_model:org/base", "base_model:adapter:org/base", "lora"} <= set(d["tags"])
    assert d["pipeline_tag"] == "text-to-image" and d["library_name"] == "diffusers"
    assert parse_card("no front matter") is None
    assert parse_card("---\n---\n") == {}
    errors, _ = check_card("---\n- a list\n---\n")
    assert errors and "mapping" in errors[0]
    errors, _ = check_card("---\ntags: {a: 1}\nlicense: [1]\n---\n")
    assert len(errors) == 2
    with pytest.raises(YamlError):
        parse_card("---\nkey: [unclosed\n---\n")
    with pytest.raises(YamlError):  # no Python objects from YAML
        parse_card("---\nx: !!python/object/apply:os.system ['true']\n---\n")


def test_signed_upload_urls() -> None:
    s = UrlSigner(b"k" * 32)
    key = "model/alice/x"
    f = s.upload_fields(7, key, "a" * 64, 100, 3)
    assert s.check(f["sig"], "upload", 7, key, "a" * 64, 100, 3, int(f["exp"]))
    assert not s.check(f["sig"], "upload", 8, key, "a" * 64, 100, 3, int(f["exp"]))
    assert not s.check(f["sig"], "upload", 7, "model/alice/y", "a" * 64, 100, 3, int(f["exp"]))  # the name is signed too
    assert not s.check(f["sig"], "upload", 7, key, "a" * 64, 101, 3, int(f["exp"]))
    assert not UrlSigner(b"other" * 8).check(f["sig"], "upload", 7, key, "a" * 64, 100, 3, int(f["exp"]))
    assert not s.check("", "upload", 7, key, "a" * 64, 100, 3, int(f["exp"]))
    tok = generate_token()
    assert looks_like_token(tok) and tok != generate_token() and len(tok) >= 45


def test_upload_mode_and_tree_entries() -> None:
    def upload_mode(path: str, size: int, sample: bytes) -> str:
        return lfs.upload_mode(path, size, sample, lfs_threshold=1000)

    assert upload_mode("a.safetensors", 10, b"{}") == "lfs"
    assert upload_mode("README.md", 10, b"# hi") == "regular"
    assert upload_mode("README.md", 0, b"") == "regular"
    assert upload_mode("big.txt", 1000, b"aaaa") == "lfs"
    assert upload_mode("bin.dat", 10, b"\x00\x01") == "lfs"
    assert upload_mode("cut.txt", 512, "é".encode() * 255 + b"\xc3") == "regular"  # a character cut by the sample
    assert upload_mode("latin1.txt", 20, b"caf\xe9 au lait, more text") == "lfs"

    f = FileEntry(1, "0" * 64, "1" * 40, False)
    files = {"a.txt": f, "d/b.txt": f, "d/e/c.txt": f}
    top = tree_items(trees.tree_entries(files, "", False))
    assert [(e["type"], e["path"]) for e in top] == [("file", "a.txt"), ("directory", "d")]
    rec = tree_items(trees.tree_entries(files, "", True))
    assert [e["path"] for e in rec] == ["a.txt", "d", "d/b.txt", "d/e", "d/e/c.txt"]
    assert [e["path"] for e in tree_items(trees.tree_entries(files, "d", False))] == ["d/b.txt", "d/e"]
    with pytest.raises(HubApiError):
        trees.tree_entries(files, "nope", False)
    assert [e["path"] for e in tree_items(trees.paths_info(files, ["a.txt", "d", "zz"]))] == ["a.txt", "d"]
    # Applying operations: a path cannot be a file and a folder at once.
    from lorahub.registry.hub.commits import Commits, _Op

    with pytest.raises(BadRequest):
        Commits._apply(files, [_Op("file", "a.txt/x", f)])
    with pytest.raises(BadRequest):
        Commits._apply(files, [_Op("file", "d", f)])
    out = Commits._apply(files, [_Op("deletedFolder", "d"), _Op("file", "d", f)])
    assert sorted(out) == ["a.txt", "d"]
