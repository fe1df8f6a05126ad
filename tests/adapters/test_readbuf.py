"""Read buffers (lorahub/_readbuf.py): page-aligned, lent from a pool that never hands one buffer to two
borrowers, and the ones every large file read goes into.

Why it matters: the kernel's copy out of the page cache into a buffer that begins 8-24 bytes past a page
boundary (where ``bytearray(1 MiB)`` begins) is several times slower on AMD Zen cores; the fingerprint's
system time per GiB was 0.8-1.1 s with such buffers and 0.1-0.2 s with these (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import blake3
import numpy as np
import pytest

from lorahub import _readbuf
from lorahub.adapters import fingerprint as fp
from lorahub.adapters import sketch as sk
from lorahub.adapters.writer import write_safetensors

MiB = 1 << 20


def _address(buf: object) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


@pytest.mark.parametrize("size", [0, 1, 4095, 128 << 10, MiB, MiB + 17])
def test_read_buffer_is_page_aligned_zeroed_and_writable(tmp_path: Path, size: int) -> None:
    buf = _readbuf.read_buffer(size)
    assert len(buf) == max(1, size)
    assert _address(buf) % mmap.PAGESIZE == 0
    assert bytes(buf[:64]) == bytes(min(64, len(buf)))
    data = os.urandom(len(buf))
    (tmp_path / "f").write_bytes(data)
    with open(tmp_path / "f", "rb", buffering=0) as fh:
        assert fh.readinto(memoryview(buf)) == len(data)
    assert bytes(buf) == data


class _Recorder:
    """Wraps read_buffers; remembers the buffers it lent."""

    def __init__(self) -> None:
        self.bufs: list[object] = []

    @contextlib.contextmanager
    def __call__(self, count: int, size: int) -> Iterator[list[object]]:
        with _readbuf.read_buffers(count, size) as bufs:
            self.bufs += bufs
            yield bufs


def test_pooled_buffers_are_reused_aligned_and_capped() -> None:
    with _readbuf.read_buffers(3, 5000) as first:
        assert len(first) == 3 and len({id(b) for b in first}) == 3
        assert all(len(b) == _readbuf.POOLED_SIZE and _address(b) % mmap.PAGESIZE == 0 for b in first)
        first[0][:4] = b"used"
    with _readbuf.read_buffers(3, _readbuf.POOLED_SIZE) as again:
        assert {id(b) for b in again} == {id(b) for b in first}  # the same mappings, their pages in place
    with _readbuf.read_buffers(1, _readbuf.POOLED_SIZE + 1) as (big,):  # larger: mapped for this loan alone
        assert len(big) == _readbuf.POOLED_SIZE + 1 and _address(big) % mmap.PAGESIZE == 0
    assert all(len(b) == _readbuf.POOLED_SIZE for b in _readbuf._pool)
    with _readbuf.read_buffers(_readbuf.MAX_POOLED + 5, 1):
        pass
    assert len(_readbuf._pool) == _readbuf.MAX_POOLED


def test_concurrent_loans_never_share_a_buffer() -> None:
    seen: list[set[int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def borrow() -> None:
        with _readbuf.read_buffers(4, 1000) as bufs:
            barrier.wait()  # all four loans are out at once
            with lock:
                seen.append({id(b) for b in bufs})

    threads = [threading.Thread(target=borrow) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set().union(*seen)) == 16


def _file(path: Path, size: int) -> Path:
    payload = os.urandom(size)
    header = b'{"t":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (size, size)
    path.write_bytes(len(header).to_bytes(8, "little") + header + payload)
    return path


@pytest.mark.parametrize("threaded", [False, True])
def test_fingerprint_reads_into_read_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threaded: bool) -> None:
    rec = _Recorder()
    monkeypatch.setattr(fp, "read_buffers", rec)
    if threaded:
        monkeypatch.setattr(fp, "THREADED_MIN_SIZE", 0)
        monkeypatch.setattr(fp, "_workers", lambda: 2)
    f = _file(tmp_path / "a.safetensors", 3 * MiB + 5)
    got = fp.fingerprint_record(f, use_cache=False)
    data = f.read_bytes()
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["blake3"] == blake3.blake3(data).hexdigest()
    assert rec.bufs and all(_address(b) % mmap.PAGESIZE == 0 for b in rec.bufs)


def test_sketch_header_reads_into_a_read_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    tensors = {}
    for m in range(3):
        for part, shape in (("lora_down", [4, 64]), ("lora_up", [64, 4])):
            values = rng.standard_normal(256, dtype=np.float32)
            tensors[f"lora_unet_m{m}_to_q.{part}.weight"] = ("F32", shape, values.tobytes())
    path = write_safetensors(tmp_path / "k.safetensors", tensors, {})
    expected = sk.sketch_file(path).to_bytes()
    rec = _Recorder()
    monkeypatch.setattr(sk, "read_buffers", rec)
    assert sk.sketch_file(path).to_bytes() == expected
    assert len(rec.bufs) == 1


def test_storage_check_hashes_blobs_through_a_read_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorahub.registry.hub import check

    rec = _Recorder()
    monkeypatch.setattr(check, "read_buffers", rec)
    data = os.urandom(2 * MiB + 3)
    (tmp_path / "blob").write_bytes(data)
    blob = check._Blob(sha256=hashlib.sha256(data).hexdigest(), file=tmp_path / "blob")
    assert check._hash_file(blob) == (hashlib.sha256(data).hexdigest(), len(data))
    assert len(rec.bufs) == 1
