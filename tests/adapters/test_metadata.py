"""``set_metadata`` rewrites the header only: tensor bytes (and so AutoV3) are kept."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from lorahub.adapters import metadata as meta_mod
from lorahub.adapters.fingerprint import fingerprint_record
from lorahub.adapters.header import layout_problems, read_header
from lorahub.adapters.metadata import new_metadata, read_metadata, set_metadata
from lorahub.adapters.writer import write_safetensors
from lorahub.errors import AdapterFileError, InvalidAdapterError, MetadataError, PickleRefusedError


def data_region(path: Path) -> bytes:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return raw[8 + n :]


def entries(path: Path) -> list[tuple]:
    h = read_header(path)
    return [(t.name, t.dtype, t.shape, t.begin, t.end) for t in h.tensors.values()]


@pytest.fixture
def lokr_copy(lokr_file: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "lokr.safetensors"
    shutil.copyfile(lokr_file, dst)
    os.chmod(dst, 0o644)
    return dst


def assert_valid(path: Path) -> None:
    h = read_header(path)
    assert h.problems == [] and layout_problems(h) == []


def test_set_keeps_tensor_bytes_and_autov3(lokr_copy: Path) -> None:
    before = fingerprint_record(lokr_copy, use_cache=False)
    old_md = read_metadata(lokr_copy)
    old_entries = entries(lokr_copy)
    old_data = data_region(lokr_copy)

    set_metadata(lokr_copy, {"ss_output_name": "falcon", "lorahub.note": "héllo \"quoted\" {json}"})

    after = fingerprint_record(lokr_copy, use_cache=False)
    assert after["tensor_sha256"] == before["tensor_sha256"]
    assert after["autov3"] == before["autov3"]
    assert after["embedded_hash"] == "match"
    assert after["sha256"] != before["sha256"]
    assert after["autov2"] != before["autov2"]
    assert data_region(lokr_copy) == old_data
    assert entries(lokr_copy) == old_entries
    assert_valid(lokr_copy)
    md = read_metadata(lokr_copy)
    assert md["ss_output_name"] == "falcon"
    assert md["lorahub.note"] == "héllo \"quoted\" {json}"
    assert {k: v for k, v in md.items() if k not in ("ss_output_name", "lorahub.note")} == {
        k: v for k, v in old_md.items() if k != "ss_output_name"
    }
    n = int.from_bytes(lokr_copy.read_bytes()[:8], "little")
    assert n % 8 == 0


def test_loads_with_the_safetensors_library(lokr_copy: Path, lokr_file: Path) -> None:
    from safetensors.numpy import load_file

    set_metadata(lokr_copy, {"a": "b"})
    before, after = load_file(str(lokr_file)), load_file(str(lokr_copy))
    assert before.keys() == after.keys()
    for k in before:
        assert before[k].tobytes() == after[k].tobytes()


def test_remove_and_replace(lokr_copy: Path) -> None:
    md = read_metadata(lokr_copy)
    assert "ss_seed" in md
    set_metadata(lokr_copy, remove=["ss_seed", "not-there"])
    assert "ss_seed" not in read_metadata(lokr_copy)
    assert len(read_metadata(lokr_copy)) == len(md) - 1
    set_metadata(lokr_copy, {"only": "this"}, replace=True)
    assert read_metadata(lokr_copy) == {"only": "this"}
    set_metadata(lokr_copy, replace=True)
    assert read_metadata(lokr_copy) == {}
    assert b"__metadata__" not in lokr_copy.read_bytes()[:4096]
    assert_valid(lokr_copy)


def test_out_leaves_the_source_untouched(lokr_file: Path, tmp_path: Path) -> None:
    original = lokr_file.read_bytes()
    out = tmp_path / "new" / "copy.safetensors"
    written = set_metadata(lokr_file, {"k": "v"}, out=out)  # the fixture folder is read-only: only out is written
    assert written == out
    assert lokr_file.read_bytes() == original
    assert read_metadata(out)["k"] == "v"
    assert data_region(out) == data_region(lokr_file)


@pytest.mark.parametrize("bad", [1, 1.5, True, None, ["a"], {"a": "b"}])
def test_non_string_value_refused_and_file_unchanged(lokr_copy: Path, bad: object) -> None:
    original = lokr_copy.read_bytes()
    with pytest.raises(MetadataError, match="not a string"):
        set_metadata(lokr_copy, {"good": "x", "bad": bad})  # type: ignore[dict-item]
    assert lokr_copy.read_bytes() == original
    assert sorted(p.name for p in lokr_copy.parent.iterdir()) == ["lokr.safetensors"]  # no temp file left


def test_bad_keys_and_conflicts(lokr_copy: Path) -> None:
    original = lokr_copy.read_bytes()
    with pytest.raises(MetadataError):
        set_metadata(lokr_copy, {"": "x"})
    with pytest.raises(MetadataError, match="both set and removed"):
        set_metadata(lokr_copy, {"a": "x"}, remove=["a"])
    assert lokr_copy.read_bytes() == original


def test_failure_during_copy_leaves_original(lokr_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = lokr_copy.read_bytes()

    def boom(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(meta_mod, "_copy_range", boom)
    with pytest.raises(AdapterFileError, match="No space left"):
        set_metadata(lokr_copy, {"a": "b"})
    assert lokr_copy.read_bytes() == original
    assert sorted(p.name for p in lokr_copy.parent.iterdir()) == ["lokr.safetensors"]


def test_copy_fallbacks_give_the_same_bytes(lokr_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(*_a: object, **_k: object) -> int:
        raise OSError(95, "Operation not supported")

    set_metadata(lokr_copy, {"a": "b"}, out=tmp_path / "fast.safetensors")
    monkeypatch.setattr(os, "copy_file_range", unsupported, raising=False)
    monkeypatch.setattr(os, "sendfile", unsupported, raising=False)
    set_metadata(lokr_copy, {"a": "b"}, out=tmp_path / "slow.safetensors")
    assert (tmp_path / "fast.safetensors").read_bytes() == (tmp_path / "slow.safetensors").read_bytes()


def test_big_data_region(tmp_path: Path) -> None:
    blob = os.urandom(9 << 20)
    f = write_safetensors(tmp_path / "big.safetensors", {"w": ("U8", [len(blob)], blob)}, {"a": "1"})
    set_metadata(f, {"a": "2", "b": "3"})
    assert data_region(f) == blob
    assert read_metadata(f) == {"a": "2", "b": "3"}
    assert_valid(f)


def test_empty_data_region(tmp_path: Path) -> None:
    f = write_safetensors(tmp_path / "e.safetensors", {}, {"a": "1"})
    set_metadata(f, {"b": "2"})
    assert read_metadata(f) == {"a": "1", "b": "2"}
    assert data_region(f) == b""
    assert fingerprint_record(f, use_cache=False)["tensor_sha256"] == hashlib.sha256(b"").hexdigest()


def test_invalid_file_refused(tmp_path: Path) -> None:
    f = write_safetensors(tmp_path / "t.safetensors", {"w": ("F16", [4], bytes(8))}, {"a": "1"})
    with open(f, "ab") as fh:
        fh.write(b"trailing")
    original = f.read_bytes()
    with pytest.raises(InvalidAdapterError, match="trailing"):
        set_metadata(f, {"a": "2"})
    assert f.read_bytes() == original

    g = tmp_path / "trunc.safetensors"
    g.write_bytes(original[:-12])
    with pytest.raises(InvalidAdapterError):
        set_metadata(g, {"a": "2"})

    h = tmp_path / "junk.safetensors"
    h.write_bytes(b"\x05" * 100)
    with pytest.raises(AdapterFileError):
        set_metadata(h, {"a": "2"})


def test_pickle_refused(tmp_path: Path) -> None:
    import pickle

    f = tmp_path / "x.ckpt"
    f.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(PickleRefusedError):
        set_metadata(f, {"a": "b"})


def test_existing_non_string_metadata(tmp_path: Path) -> None:
    raw = json.dumps({"__metadata__": {"n": 5, "s": "x"}, "w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})
    raw_b = raw.encode()
    f = tmp_path / "n.safetensors"
    f.write_bytes(len(raw_b).to_bytes(8, "little") + raw_b + b"ab")
    with pytest.raises(MetadataError, match="existing metadata value of 'n'"):
        set_metadata(f, {"s": "y"})
    set_metadata(f, {"s": "y"}, remove=["n"])
    assert read_metadata(f) == {"s": "y"}
    assert data_region(f) == b"ab"


def test_new_metadata_order() -> None:
    assert new_metadata({"a": "1", "b": "2"}, {"c": "3", "a": "9"}, remove=["b"]) == {"a": "9", "c": "3"}


def test_unwritable_target_error(lokr_file: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(AdapterFileError, match="cannot write"):
        set_metadata(lokr_file, {"a": "b"}, out=blocker / "x.safetensors")
