"""Two SHA-256 chains interleaved on one core (lorahub/_sha256x2.c), checked against hashlib.

The fingerprint's two SHA-256 values (the whole file; the tensor data after the header) come from this kernel
where the CPU has the x86 SHA extensions: about the CPU of one chain for both (benchmarks/README.md). Every
value it gives must be hashlib's for the same bytes, however the bytes are cut into updates and wherever the
second chain starts.
"""

from __future__ import annotations

import hashlib
import platform
import random
import shutil
import threading
from pathlib import Path

import pytest

from lorahub.adapters import fingerprint as fp

try:
    from lorahub import _sha256x2
except ImportError:  # not built: no C compiler at install time
    _sha256x2 = None  # type: ignore[assignment]


def _cpu_has_sha() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " sha_ni" in flags and " sse4_1" in flags and " ssse3" in flags


#: Where the kernel must exist and run: an x86-64 Linux machine with a C compiler and SHA extensions (CI's).
#: Elsewhere the module may be missing or say AVAILABLE = False, and the fingerprint uses hashlib.
MUST_RUN = platform.machine() in ("x86_64", "AMD64") and _cpu_has_sha() and shutil.which("cc") is not None

kernel = pytest.mark.skipif(_sha256x2 is None or not _sha256x2.AVAILABLE, reason="no SHA-extension kernel here")


def test_kernel_is_built_and_used_where_it_can_be() -> None:
    if MUST_RUN:
        assert _sha256x2 is not None, "lorahub._sha256x2 was not built (setup.py: a C compiler is here)"
        assert _sha256x2.AVAILABLE is True
        assert fp._sha256_pair(0) is not None
    elif _sha256x2 is not None and not _sha256x2.AVAILABLE:
        with pytest.raises(RuntimeError, match="no SHA extensions"):
            _sha256x2.Sha256Pair(0)
        assert fp._sha256_pair(0) is None


def _both(data: bytes, offset: int) -> tuple[bytes, bytes]:
    return hashlib.sha256(data).digest(), hashlib.sha256(data[offset:]).digest()


@kernel
@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 70_001])
@pytest.mark.parametrize("offset", [0, 1, 8, 63, 64, 65, 200, 10**9])
def test_one_update_matches_hashlib(size: int, offset: int) -> None:
    data = random.Random(size * 31 + offset).randbytes(size)
    pair = _sha256x2.Sha256Pair(offset)
    pair.update(data)
    assert pair.digests() == _both(data, offset)


@kernel
def test_any_cut_into_updates_matches_hashlib() -> None:
    """Updates of every kind of length: under a block, across block and offset boundaries, under and over
    the size where the GIL is released (2,048 bytes), as bytes, bytearray and memoryview slices."""
    rng = random.Random(7)
    for trial in range(400):
        size = rng.choice([rng.randrange(0, 300), rng.randrange(0, 5000), rng.randrange(0, 400_000)])
        data = rng.randbytes(size)
        offset = rng.choice([0, 1, 8, 64, size, size + 3, rng.randrange(0, size + 2)])
        pair = _sha256x2.Sha256Pair(offset)
        view = memoryview(data)
        i = 0
        while i < size:
            n = rng.choice([1, 7, 64, 65, 2047, 2048, 4096 + 5, rng.randrange(1, size + 2)])
            piece = view[i : i + n]
            pair.update(rng.choice([bytes, bytearray, lambda v: v])(piece))
            i += n
        assert pair.digests() == _both(data, offset), (trial, size, offset)


@kernel
def test_digests_do_not_end_the_stream() -> None:
    pair = _sha256x2.Sha256Pair(3)
    pair.update(b"abcdef")
    assert pair.digests() == pair.digests() == _both(b"abcdef", 3)
    pair.update(b"ghi" * 100)
    assert pair.digests() == _both(b"abcdef" + b"ghi" * 100, 3)


@kernel
def test_known_answer() -> None:
    """FIPS 180-2's example "abc" (both chains from 0), and the empty string (the second chain past the end)."""
    pair = _sha256x2.Sha256Pair(0)
    pair.update(b"abc")
    a, b = pair.digests()
    assert a.hex() == b.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    pair = _sha256x2.Sha256Pair(3)
    pair.update(b"abc")
    assert pair.digests()[1].hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@kernel
def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        _sha256x2.Sha256Pair(-1)
    with pytest.raises(OverflowError):
        _sha256x2.Sha256Pair(2**64)
    with pytest.raises(TypeError):
        _sha256x2.Sha256Pair("8")  # type: ignore[arg-type]
    pair = _sha256x2.Sha256Pair(0)
    with pytest.raises(TypeError):
        pair.update("text")  # type: ignore[arg-type]
    pair.update(b"x")
    assert pair.digests()[0] == hashlib.sha256(b"x").digest()


@kernel
def test_threads_hash_their_own_pairs_at_once() -> None:
    """Large updates release the GIL: pairs in several threads at once each get their own stream's values."""
    rng = random.Random(3)
    datas = [rng.randbytes(3 << 20) for _ in range(4)]
    out: dict[int, tuple[bytes, bytes]] = {}

    def work(i: int) -> None:
        pair = _sha256x2.Sha256Pair(100 + i)
        view = memoryview(datas[i])
        for k in range(0, len(view), 65536 + i):
            pair.update(view[k : k + 65536 + i])
        out[i] = pair.digests()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out[i] == _both(datas[i], 100 + i) for i in range(4))


@kernel
def test_fingerprint_uses_one_pair_for_both_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprint's two SHA-256 values come from the kernel (no hashlib SHA-256 chain of the file), and are
    the values the plain definitions give; without the kernel the hashlib path gives the same record."""
    from test_fingerprint import check, make_file

    f = make_file(tmp_path / "a.safetensors", (3 << 20) + 12345, metadata={"k": "v" * 300})
    made: list[int] = []
    real = fp._sha256_pair

    def spy(offset: int):  # noqa: ANN202
        made.append(offset)
        return real(offset)

    monkeypatch.setattr(fp, "_sha256_pair", spy)
    chains: list[int] = []
    real_sha256 = hashlib.sha256

    def counting_sha256(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        chains.append(1)
        return real_sha256(*args, **kwargs)

    monkeypatch.setattr(fp.hashlib, "sha256", counting_sha256)
    rec = fp.fingerprint_record(f, use_cache=False)
    assert len(chains) == 1  # AutoV1's 64 KiB window only
    monkeypatch.setattr(fp, "_sha256_pair", lambda offset: None)
    chains.clear()
    plain = fp.fingerprint_record(f, use_cache=False)
    assert len(chains) == 3  # the file, its tensor data, AutoV1's window
    monkeypatch.undo()
    check(rec, f)
    header_len = int.from_bytes(f.read_bytes()[:8], "little")
    assert made == [8 + header_len]
    assert {k: plain[k] for k in rec if k != "cached"} == {k: rec[k] for k in rec if k != "cached"}
