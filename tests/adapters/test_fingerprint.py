"""Fingerprints: every hash checked against an independent computation over explicit byte ranges."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import zlib
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorahub.adapters import fingerprint as fp
from lorahub.adapters.fingerprint import (
    embedded_hash_status,
    expand_paths,
    fingerprint_file,
    fingerprint_paths,
    fingerprint_record,
    same_hash,
)
from lorahub.adapters.hashcache import FILENAME, HashCache
from lorahub.errors import AdapterFileError
from lorahub.schemas.adapters import FingerprintReport

MiB = 1 << 20
PAST = 1_600_000_000  # 2020: well outside the "racily clean" window


def a1111_model_hash(path: Path) -> str:
    """The old A1111 "model hash" the way the tools compute it, re-implemented from their code:
    AUTOMATIC1111/stable-diffusion-webui ``modules/sd_models.py`` ``model_hash`` and kohya-ss/sd-scripts
    ``library/train_util.py`` ``model_hash``: ``file.seek(0x100000); m.update(file.read(0x10000))``, the
    first 8 hex of the SHA-256 of whatever the (possibly short or empty) read returned."""
    with open(path, "rb") as file:
        m = hashlib.sha256()
        file.seek(0x100000)
        m.update(file.read(0x10000))
        return m.hexdigest()[0:8].upper()


def expected(path: Path) -> dict:
    """The definitions of docs/hashes.md, computed the plain way."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    tensor = hashlib.sha256(data[8 + n :]).hexdigest()
    whole = hashlib.sha256(data).hexdigest()
    return {
        "size": len(data),
        "sha256": whole,
        "autov1": a1111_model_hash(path),
        "autov2": whole[:10].upper(),
        "autov3": tensor[:12].upper(),
        "tensor_sha256": tensor,
        "crc32": f"{zlib.crc32(data):08X}",
        "blake3": blake3.blake3(data).hexdigest(),
    }


def make_file(path: Path, total: int, *, metadata: dict[str, str] | None = None, seed: int = 0) -> Path:
    """A valid safetensors file of exactly ``total`` bytes: one U8 tensor of random bytes."""
    import random

    def header(length: int, pad: int = 0) -> bytes:
        obj: dict = {}
        if metadata:
            obj["__metadata__"] = metadata
        obj["w"] = {"dtype": "U8", "shape": [length], "data_offsets": [0, length]}
        return json.dumps(obj).encode() + b" " * pad

    length = max(0, total - 8 - len(header(0)))
    while 8 + len(header(length)) + length > total and length > 0:
        length -= 1
    raw = header(length, total - 8 - length - len(header(length)))
    assert 8 + len(raw) + length == total, "total too small for a header"
    rng = random.Random(seed)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + rng.randbytes(length))
    return path


def old(path: Path) -> Path:
    os.utime(path, (PAST, PAST))
    return path


def check(rec: dict, path: Path) -> None:
    exp = expected(path)
    for key, value in exp.items():
        assert rec[key] == value, key


@pytest.fixture(params=["kernel", "hashlib"])
def sha_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the two SHA-256 values are computed: the interleaved kernel (lorahub/_sha256x2.c) where it
    runs, and hashlib (no compiler at install, or no SHA extensions)."""
    if request.param == "hashlib":
        monkeypatch.setattr(fp, "_sha256_pair", lambda offset: None)
    elif fp._sha256_pair(0) is None:
        pytest.skip("no SHA-extension kernel here (tests/adapters/test_sha256x2.py says where it must run)")
    return request.param


# --- real fixtures -------------------------------------------------------------------------------


def test_real_fixtures(shared_fixtures: Path) -> None:
    files = sorted(shared_fixtures.glob("*/*.safetensors"))
    assert len(files) >= 6
    for f in files:
        rec = fingerprint_record(f, use_cache=False)
        check(rec, f)
        assert rec["warnings"] == []


def test_lokr_embedded_hash_is_the_tensor_hash(lokr_file: Path) -> None:
    # sd-scripts recorded kohya's tensor hash in sshs_model_hash (tests/lycoriskit.py, kohya_hashes=True).
    rep = fingerprint_file(lokr_file, use_cache=False)
    assert isinstance(rep, FingerprintReport)
    exp = expected(lokr_file)
    assert rep.embedded_sshs_model_hash == exp["tensor_sha256"] == rep.tensor_sha256
    assert rep.embedded_hash == "match"
    assert rep.autov3 == exp["tensor_sha256"][:12].upper()
    assert lokr_file.stat().st_size < MiB and rep.autov1 == "E3B0C442"  # the hash of the empty read past the end
    check(fingerprint_record(lokr_file, use_cache=False), lokr_file)


def test_lycoris_4_embedded_hash_is_unverifiable(tmp_path: Path) -> None:
    """LyCORIS 4 writes its own ``0x`` hash (SHA-256 over per-tensor serialisations): not a tensor hash."""
    pytest.importorskip("lycoris")
    from lycoriskit import write_lycoris

    f = write_lycoris(tmp_path / "loha.safetensors", "loha")
    rec = fingerprint_record(f, use_cache=False)
    assert rec["embedded_sshs_model_hash"].startswith("0x") and rec["embedded_hash"] == "unverifiable"
    check(rec, f)


def test_real_lokr_embedded_hash_is_the_tensor_hash(real_lokr_file: Path) -> None:
    # The real LyCORIS file predates the 0x hashes: its sshs_model_hash is kohya's tensor hash.
    rep = fingerprint_file(real_lokr_file, use_cache=False)
    assert isinstance(rep, FingerprintReport)
    assert rep.embedded_sshs_model_hash == "150ef207aad02214f69756f53c3fc56efacdf6c79e32dd76e5fcbcf6c6a5350f"
    assert rep.tensor_sha256 == rep.embedded_sshs_model_hash
    assert rep.embedded_hash == "match"
    assert rep.autov3 == "150EF207AAD0"
    assert rep.autov1 == "E3B0C442"  # 647,722 bytes: A1111 and kohya hash the empty read past the end
    assert rep.size == real_lokr_file.stat().st_size


def test_legacy_files_have_no_embedded_hash(legacy_files: list[Path]) -> None:
    for f in legacy_files:
        rec = fingerprint_record(f, use_cache=False)
        assert rec["embedded_hash"] == "absent"
        check(rec, f)


# --- synthetic sizes around the edges ------------------------------------------------------------


@pytest.mark.parametrize(
    "total",
    [
        200,
        MiB - 1,
        MiB,  # window empty: the SHA-256 of nothing
        MiB + 1,
        MiB + 5,
        MiB + 0x10000 - 1,  # window partially present
        MiB + 0x10000,
        MiB + 0x10000 + 3,  # > 1.0625 MiB
        3 * MiB + 12345,
    ],
)
def test_sizes_around_autov1_window(tmp_path: Path, total: int, sha_path: str) -> None:
    f = make_file(tmp_path / "a.safetensors", total)
    rec = fingerprint_record(f, use_cache=False)
    check(rec, f)
    assert (rec["autov1"] == "E3B0C442") == (total <= MiB)
    if MiB < total < MiB + 0x10000:
        # A1111: f.seek(0x100000); f.read(0x10000) hashes whatever exists
        assert rec["autov1"] == hashlib.sha256(f.read_bytes()[MiB:]).hexdigest()[:8].upper()


def test_empty_data_region(tmp_path: Path, sha_path: str) -> None:
    raw = json.dumps({"__metadata__": {"a": "b"}}).encode()
    f = tmp_path / "empty.safetensors"
    f.write_bytes(len(raw).to_bytes(8, "little") + raw)
    rec = fingerprint_record(f, use_cache=False)
    assert rec["tensor_sha256"] == hashlib.sha256(b"").hexdigest()
    assert rec["autov3"] == "E3B0C44298FC"
    assert rec["warnings"] == []
    check(rec, f)


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize("chunk", [4096 + 3, 65536, MiB])
def test_threaded_engine_any_chunking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, chunk: int,
                                      sha_path: str) -> None:
    monkeypatch.setattr(fp, "THREADED_MIN_SIZE", 0)
    monkeypatch.setattr(fp, "_workers", lambda: workers)
    f = make_file(tmp_path / "t.safetensors", MiB + 0x10000 + 777, metadata={"k": "v" * 5000}, seed=workers)
    seen: list[int] = []
    rec = fingerprint_record(f, use_cache=False, progress=seen.append, _chunk=chunk)
    check(rec, f)
    assert sum(seen) == f.stat().st_size


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(total=st.integers(150, 300_000), chunk=st.integers(1, 70_000), workers=st.integers(1, 3), pad=st.integers(0, 9),
       kernel=st.booleans())
def test_property_any_size_chunk_and_header(tmp_path: Path, total: int, chunk: int, workers: int, pad: int,
                                            kernel: bool) -> None:
    old_min, old_workers, old_pair = fp.THREADED_MIN_SIZE, fp._workers, fp._sha256_pair
    fp.THREADED_MIN_SIZE, fp._workers = 0, (lambda: workers)
    if not kernel:
        fp._sha256_pair = lambda offset: None
    try:
        f = make_file(tmp_path / "p.safetensors", total, metadata={"x": "y" * pad}, seed=total)
        rec = fingerprint_record(f, use_cache=False, _chunk=max(chunk, 16))
    finally:
        fp.THREADED_MIN_SIZE, fp._workers, fp._sha256_pair = old_min, old_workers, old_pair
    check(rec, f)


@pytest.mark.slow
def test_big_file_default_threaded_path(tmp_path: Path) -> None:
    f = make_file(tmp_path / "big.safetensors", 20 * MiB + 11)
    rec = fingerprint_record(f, use_cache=False)
    check(rec, f)


# --- files that are not safetensors --------------------------------------------------------------


def test_not_safetensors_still_gets_whole_file_hashes(tmp_path: Path) -> None:
    f = tmp_path / "noise.safetensors"
    f.write_bytes(os.urandom(MiB + 100))
    rec = fingerprint_record(f, use_cache=False)
    data = f.read_bytes()
    assert rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["autov1"] == hashlib.sha256(data[MiB : MiB + 0x10000]).hexdigest()[:8].upper()
    assert rec["crc32"] == f"{zlib.crc32(data):08X}"
    assert rec["blake3"] == blake3.blake3(data).hexdigest()
    assert rec["tensor_sha256"] is None and rec["autov3"] is None
    assert rec["embedded_hash"] == "absent"
    assert rec["warnings"] and "no tensor hash" in rec["warnings"][0]
    FingerprintReport(**rec)


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.bin"
    f.write_bytes(b"")
    rec = fingerprint_record(f, use_cache=False)
    assert rec["sha256"] == hashlib.sha256(b"").hexdigest()
    assert rec["crc32"] == "00000000"
    assert rec["blake3"] == blake3.blake3(b"").hexdigest()
    assert rec["autov1"] == "E3B0C442" and rec["tensor_sha256"] is None


class _Touch:
    """Unpickling this would create a file."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (Path(self.target),))


def test_pickle_is_hashed_never_loaded(tmp_path: Path) -> None:
    sentinel = tmp_path / "unpickled"
    f = tmp_path / "model.ckpt"
    f.write_bytes(pickle.dumps(_Touch(str(sentinel)), protocol=4))
    rec = fingerprint_record(f, use_cache=False)
    assert not sentinel.exists()
    assert rec["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert rec["tensor_sha256"] is None
    assert "pickle" in rec["warnings"][0]


# --- embedded hash ------------------------------------------------------------------------------


def test_embedded_hash_status_rules() -> None:
    t = "ab" * 32
    assert embedded_hash_status(None, t) == "absent"
    assert embedded_hash_status(t, t) == "match"
    assert embedded_hash_status(t.upper(), t) == "match"
    assert embedded_hash_status("cd" * 32, t) == "mismatch"
    assert embedded_hash_status("0x" + t, t) == "unverifiable"
    assert embedded_hash_status("0X" + t, t) == "unverifiable"
    assert embedded_hash_status("1234abcd", t) == "unverifiable"
    assert embedded_hash_status("zz" * 32, t) == "unverifiable"
    assert embedded_hash_status(12, t) == "unverifiable"
    assert embedded_hash_status(t, None) == "unverifiable"


@pytest.mark.parametrize("kind", ["match", "upper", "mismatch", "lycoris", "absent"])
def test_embedded_hash_in_files(tmp_path: Path, kind: str) -> None:
    probe = make_file(tmp_path / "probe.safetensors", 5000, metadata={"sshs_model_hash": "0" * 64})
    tensor = expected(probe)["tensor_sha256"]
    value = {
        "match": tensor,
        "upper": tensor.upper(),
        "mismatch": "f" * 64,
        "lycoris": "0x" + tensor,
        "absent": None,
    }[kind]
    md = {"ss_output_name": "x"} if value is None else {"sshs_model_hash": value}
    f = make_file(tmp_path / "e.safetensors", 5000, metadata=md)
    rec = fingerprint_record(f, use_cache=False)
    want = {"upper": "match", "lycoris": "unverifiable"}.get(kind, kind)
    assert rec["embedded_hash"] == want
    assert rec["embedded_sshs_model_hash"] == value
    check(rec, f)


def test_hex_case_and_same_hash_ignores_case(lokr_file: Path) -> None:
    rec = fingerprint_record(lokr_file, use_cache=False)
    for key in ("sha256", "tensor_sha256", "blake3"):
        assert rec[key] == rec[key].lower()
    for key in ("autov2", "autov3", "crc32"):  # as Civitai shows them
        assert rec[key] == rec[key].upper()
    assert same_hash(rec["autov3"].lower(), rec["autov3"])
    assert not same_hash(None, rec["autov3"])


# --- cache -------------------------------------------------------------------------------------


def test_cache_hit_and_invalidation(tmp_path: Path, lorahub_home: Path) -> None:
    f = old(make_file(tmp_path / "c.safetensors", 50_000, seed=1))
    first = fingerprint_record(f)
    assert first["cached"] is False
    assert (lorahub_home / "cache" / FILENAME).exists()
    second = fingerprint_record(f)
    assert second["cached"] is True
    assert {k: v for k, v in second.items() if k != "cached"} == {k: v for k, v in first.items() if k != "cached"}
    assert fingerprint_file(f).cached is True

    # touched: re-hashed
    os.utime(f, (PAST + 10, PAST + 10))
    assert fingerprint_record(f)["cached"] is False
    assert fingerprint_record(f)["cached"] is True

    # same size, same mtime, different bytes: ctime changes, re-hashed
    make_file(f, 50_000, seed=2)
    os.utime(f, (PAST + 10, PAST + 10))
    third = fingerprint_record(f)
    assert third["cached"] is False
    assert third["sha256"] != first["sha256"]
    check(third, f)

    # replaced by another file (new inode)
    g = old(make_file(tmp_path / "g.safetensors", 50_000, seed=3))
    os.replace(g, f)
    rec = fingerprint_record(f)
    assert rec["cached"] is False
    check(rec, f)


def test_cache_key_is_the_real_path(tmp_path: Path) -> None:
    f = old(make_file(tmp_path / "r.safetensors", 4000))
    link = tmp_path / "link.safetensors"
    link.symlink_to(f)
    assert fingerprint_record(f)["cached"] is False
    rec = fingerprint_record(link)
    assert rec["cached"] is True
    assert rec["path"] == str(link)


def test_no_cache_neither_reads_nor_writes(tmp_path: Path, lorahub_home: Path) -> None:
    f = old(make_file(tmp_path / "n.safetensors", 4000))
    fingerprint_record(f, use_cache=False)
    assert fingerprint_record(f)["cached"] is False  # nothing was stored
    assert fingerprint_record(f)["cached"] is True
    assert fingerprint_record(f, use_cache=False)["cached"] is False


def test_recently_modified_file_is_not_cached(tmp_path: Path) -> None:
    f = make_file(tmp_path / "fresh.safetensors", 4000)  # mtime = now
    assert fingerprint_record(f)["cached"] is False
    assert fingerprint_record(f)["cached"] is False
    os.utime(f, (time.time() - 10, time.time() - 10))
    fingerprint_record(f)
    assert fingerprint_record(f)["cached"] is True


@pytest.mark.parametrize("garbage", [b"", b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_cache_is_rebuilt_silently(tmp_path: Path, lorahub_home: Path, garbage: bytes) -> None:
    db = lorahub_home / "cache" / FILENAME
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(garbage)
    f = old(make_file(tmp_path / "x.safetensors", 4000))
    assert fingerprint_record(f)["cached"] is False
    assert fingerprint_record(f)["cached"] is True
    with HashCache(db) as cache:
        assert len(cache) == 1


def test_malformed_cached_row_is_a_miss(tmp_path: Path, lorahub_home: Path) -> None:
    import sqlite3

    f = old(make_file(tmp_path / "w.safetensors", 4000))
    fingerprint_record(f)
    conn = sqlite3.connect(lorahub_home / "cache" / FILENAME)
    conn.execute("UPDATE fingerprints SET report = ?", (json.dumps({"sha256": "0" * 64}),))
    conn.commit()
    conn.close()
    rec = fingerprint_record(f)
    assert rec["cached"] is False
    check(rec, f)
    assert fingerprint_record(f)["cached"] is True


def test_zlib_fallback_gives_the_same_crc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = make_file(tmp_path / "z.safetensors", MiB + 99)
    monkeypatch.setattr(fp, "_crc32_function", lambda: zlib.crc32)
    assert fingerprint_record(f, use_cache=False)["crc32"] == f"{zlib.crc32(f.read_bytes()):08X}"


def test_cache_of_another_version_is_dropped(tmp_path: Path, lorahub_home: Path) -> None:
    import sqlite3

    f = old(make_file(tmp_path / "v.safetensors", 4000))
    fingerprint_record(f)
    db = lorahub_home / "cache" / FILENAME
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=999")
    conn.commit()
    conn.close()
    assert fingerprint_record(f)["cached"] is False
    assert fingerprint_record(f)["cached"] is True


def test_connections_opening_a_new_cache_side_by_side_keep_each_others_rows(tmp_path: Path) -> None:
    """Connections that open a new cache file together all find its layout version unset; the one that builds
    it second must not drop the table the first has built and filled (a folder's files hashed side by side lost
    their rows so: 148 rounds in 200 before the rebuild looked again under the write lock)."""
    import threading

    from lorahub.adapters.hashcache import FileKey

    lost = 0
    for round_ in range(40):
        db = tmp_path / f"c{round_}.sqlite"
        start = threading.Barrier(4)

        def put(i: int, db: Path = db, start: threading.Barrier = start) -> None:
            cache = HashCache(db)
            start.wait()
            assert cache.put(FileKey(f"/f{i}", 1, 1, 1, 1, 1), {"i": i})
            cache.close()

        threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with HashCache(db) as cache:
            lost += 4 - len(cache)
    assert lost == 0


def test_unwritable_home_still_fingerprints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    monkeypatch.setenv("LORAHUB_HOME", str(blocker / "home"))
    f = old(make_file(tmp_path / "u.safetensors", 4000))
    rec = fingerprint_record(f)
    assert rec["cached"] is False
    check(rec, f)


def test_cached_lookup_imports_neither_blake3_numpy_nor_pydantic(tmp_path: Path) -> None:
    f = old(make_file(tmp_path / "i.safetensors", 4000))
    fingerprint_record(f)  # fill the cache
    code = (
        "import sys\n"
        "from lorahub.adapters.fingerprint import fingerprint_record\n"
        f"r = fingerprint_record({str(f)!r})\n"
        "assert r['cached'], r\n"
        "heavy = [m for m in ('blake3', 'numpy', 'pydantic', 'isal', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert res.returncode == 0, res.stderr


def test_concurrent_processes_share_the_cache(tmp_path: Path, lorahub_home: Path) -> None:
    files = [old(make_file(tmp_path / f"m{i}.safetensors", 20_000, seed=i)) for i in range(6)]
    code = (
        "import sys\n"
        "from lorahub.adapters.fingerprint import fingerprint_records\n"
        "recs = fingerprint_records(sys.argv[1:])\n"
        "print(len(recs))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=os.environ.copy())
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "6"
    with HashCache(lorahub_home / "cache" / FILENAME) as cache:
        assert len(cache) == 6
    assert all(r["cached"] for r in fp.fingerprint_records(files))


# --- errors and many files ---------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(AdapterFileError, match="no such file"):
        fingerprint_record(tmp_path / "nope.safetensors")
    with pytest.raises(AdapterFileError, match="folder"):
        fingerprint_record(tmp_path)


def test_file_growing_while_read_is_an_error_and_not_cached(tmp_path: Path) -> None:
    f = old(make_file(tmp_path / "grow.safetensors", 9000))

    def grow(_: int) -> None:
        with open(f, "ab") as fh:
            fh.write(b"more")

    with pytest.raises(AdapterFileError, match="changed while it was read"):
        fingerprint_record(f, progress=grow)
    os.utime(f, (PAST, PAST))
    assert fingerprint_record(f)["cached"] is False


def test_paths_recurse_into_folders(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    a = make_file(tmp_path / "a.safetensors", 3000, seed=1)
    b = make_file(tmp_path / "sub" / "deeper" / "b.safetensors", 3000, seed=2)
    (tmp_path / "sub" / "notes.txt").write_text("not me")
    other = tmp_path / "sub" / "notes.txt"
    assert expand_paths([tmp_path]) == [str(a), str(b)]
    assert expand_paths([tmp_path, a, other]) == [str(a), str(b), str(other)]
    reports = fingerprint_paths([tmp_path])
    assert [r.path for r in reports] == [str(a), str(b)]
    assert all(isinstance(r, FingerprintReport) for r in reports)
    assert reports[1].sha256 == expected(b)["sha256"]
    with pytest.raises(AdapterFileError, match="no such file"):
        fingerprint_paths([tmp_path / "missing"])


def test_record_has_exactly_the_report_fields(lokr_file: Path) -> None:
    rec = fingerprint_record(lokr_file, use_cache=False)
    assert list(rec) == list(FingerprintReport.model_fields)
    assert FingerprintReport(**rec).model_dump(mode="json") == rec


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_threads_hash_a_large_file_with_as_many_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        threads: int | None) -> None:
    """``threads``: one thread runs every hasher (a caller hashing files side by side: lorahub index); by
    default a large file gets a thread per core (up to 4). The values are the same either way."""
    f = make_file(tmp_path / "big.safetensors", fp.THREADED_MIN_SIZE + 4321)
    monkeypatch.setattr(fp, "_workers", lambda: 3)
    started: list[str] = []
    real = fp.threading.Thread

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started.append(kwargs.get("name", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(fp.threading, "Thread", counting)
    rec = fingerprint_record(f, use_cache=False, threads=threads)
    monkeypatch.undo()
    hashers = [n for n in started if n.startswith("lorahub-hash")]
    assert len(hashers) == {None: 3, 1: 0, 2: 2}[threads]  # one thread: the caller's own, no others
    check(rec, f)


def test_map_files_keeps_order_and_gives_one_thread_while_files_wait() -> None:
    """map_files: results in the order of the paths whatever order the files finish in; a file begun while
    others wait gets threads=1, the last ones begun None (the default); fewer than 4 files, or one worker, run
    one after the other in the caller's thread, each with the default."""
    import threading
    import time as _time

    seen: dict[str, int | None] = {}
    callers: set[str] = set()
    cancels: list[object] = []

    def fn(path: str, threads: int | None, cancel: object) -> str:
        seen[path] = threads
        cancels.append(cancel)
        callers.add(threading.current_thread().name)
        _time.sleep(0.02 if path == "p0" else 0.0)  # the first finishes last
        return path.upper()

    paths = [f"p{i}" for i in range(7)]
    assert list(fp.map_files(fn, paths, workers=2)) == [p.upper() for p in paths]
    assert sorted(seen.values(), key=lambda t: t is None) == [1] * 6 + [None]
    assert all(name.startswith("lorahub-files") for name in callers)
    assert len({id(c) for c in cancels}) == 1 and cancels[0].is_set()  # one event, set when the iteration ended
    seen.clear()
    callers.clear()
    cancels.clear()
    assert list(fp.map_files(fn, paths[:3], workers=2)) == ["P0", "P1", "P2"]
    assert list(fp.map_files(fn, paths, workers=1)) == [p.upper() for p in paths]
    assert set(seen.values()) == {None} and callers == {threading.current_thread().name}
    assert set(cancels) == {None}  # one after the other: nothing runs beside the caller to stop


def test_map_files_raises_at_the_failing_path_and_begins_no_more() -> None:
    import threading

    started: list[str] = []
    gate = threading.Event()

    def fn(path: str, threads: int | None, cancel: object) -> str:
        started.append(path)
        if path == "p1":
            raise AdapterFileError(path, "broken")
        gate.wait(1.0)
        return path

    got: list[str] = []
    with pytest.raises(AdapterFileError, match="broken"):
        for r in fp.map_files(fn, [f"p{i}" for i in range(40)], workers=2):
            got.append(r)
            gate.set()
    assert got == ["p0"]
    assert len(started) < 40  # the files not begun when p1 failed were cancelled


def test_folder_records_side_by_side_match_the_definitions(tmp_path: Path, lorahub_home: Path) -> None:
    """fingerprint_records of a folder hashes its files several at a time (a cache connection per thread):
    every record is the plain definitions' and in path order, the progress adds up to the folder's bytes, and
    a second run is answered from the cache."""
    folder = tmp_path / "many"
    folder.mkdir()
    files = [old(make_file(folder / f"f{i}.safetensors", fp.THREADED_MIN_SIZE + 1000 * i, seed=i)) for i in range(5)]
    seen: list[int] = []
    recs = fp.fingerprint_records([folder], progress=seen.append)
    assert [r["path"] for r in recs] == [str(f.resolve()) for f in sorted(files)]
    for r, f in zip(recs, sorted(files), strict=True):
        check(r, f)
        assert r["cached"] is False
    assert sum(seen) == sum(f.stat().st_size for f in files)
    assert all(r["cached"] for r in fp.fingerprint_records([folder]))


def test_leaving_a_folder_early_stops_the_files_being_hashed(tmp_path: Path) -> None:
    """When the caller of iter_records leaves (an error, Ctrl-C, a closed generator) the files being hashed
    stop at their next buffer (map_files sets the cancel event it hands them), rather than being hashed to the end for
    nobody: a folder of large files is not read through after the first record."""
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(5):  # the first small: when its record comes, the two begun after it have just begun
        make_file(folder / f"b{i}.safetensors", (2 if i == 0 else 64) * MiB, seed=i)
    read: list[int] = []
    real = fp._hash_ring

    def counting(fh, size, jobs, bufs, **kw):  # noqa: ANN001, ANN003, ANN202
        try:
            return real(fh, size, jobs, bufs, **kw)
        finally:
            read.append(fh.tell())

    fp._hash_ring, saved = counting, real
    try:
        records = fp.iter_records(sorted(str(p) for p in folder.iterdir()), use_cache=False, workers=2, _chunk=64 << 10)
        first = next(records)
        records.close()  # the caller leaves after one record
    finally:
        fp._hash_ring = saved
    check(first, folder / "b0.safetensors")
    assert len(read) <= 3  # the first file, and those begun beside it; none begun after
    assert sum(read) < 2 * MiB + 64 * MiB  # the two begun stopped part-way (hashed through: 130 MiB)

    stop = __import__("threading").Event()
    stop.set()
    with pytest.raises(fp.Cancelled):
        fingerprint_record(folder / "b1.safetensors", use_cache=False, cancel=stop)


def test_thread_caches_give_each_thread_its_own_connection(lorahub_home: Path) -> None:
    import threading

    from lorahub.adapters.hashcache import ThreadCaches

    with ThreadCaches() as caches:
        mine = caches.get()
        assert mine is caches.get() and mine is not None and mine._connect() is not None
        other: list[object] = []

        def use() -> None:
            cache = caches.get()
            assert cache is not None and cache._connect() is not None
            other.append(cache)

        t = threading.Thread(target=use)
        t.start()
        t.join()
        assert other[0] is not mine
        opened = list(caches._opened)
        assert len(opened) == 2 and all(c._conn is not None for c in opened)
    assert all(c._conn is None for c in opened)  # closed with the block
    assert ThreadCaches(enabled=False).get() is None
