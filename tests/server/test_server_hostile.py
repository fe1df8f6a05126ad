"""Hostile files through the Hub API: the CLI's mutation suite, uploaded to a running ``lorahub serve``.

The cases are the ones of ``tests/adapters/test_hostile.py`` (seeds and mutators in
``tests/fuzzkit.py``: mutated real and synthetic adapters, random JSON headers, absurd length
claims), committed by a pool of HTTP clients, each to a repo of its own: most inline in an NDJSON
commit (one request: the cheapest path to the server's content check), some through the LFS path
a real client takes (preupload, LFS batch, PUT to the signed URL, verify, commit of an ``lfsFile``),
some as a pipeline component (beside a ``config.json``: layout check only).

For every case the server's answer must agree with lorahub's own checks run here on the same
bytes: a file they refuse gets ``422`` with one line naming the path and the first reason; a file
they accept (a mutation can stay valid) lands, reads back byte for byte and, as an adapter, is
found by its SHA-256 with the format, family and rank the inspector reports. No answer is a 5xx,
none takes longer than ``REQUEST_TIMEOUT_S``; afterwards the server is alive and answering, its
log has no unexpected error, and its peak memory (``VmHWM``) grew by less than ``MAX_GROWTH``.

Bounded like the CLI's loop: ``LORAHUB_FUZZ_SERVER_CASES`` cases or ``LORAHUB_FUZZ_SERVER_SECONDS``
seconds, whichever comes first (PostgreSQL runs a fifth of both); ``LORAHUB_FUZZ_SEED`` picks
the cases. A failing case is saved under the test's tmp folder and named in the message.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fuzzkit import Seed, draw_case, real_excerpts, real_seeds, synthetic_seeds
from hubkit import NDJSON, ndjson
from testkit import raw_http

from lorahub.adapters.header import MAX_HEADER_BYTES
from lorahub.adapters.pickles import REASON as PICKLE_REASON
from lorahub.registry.hub import policy

SEED = int(os.environ.get("LORAHUB_FUZZ_SEED", "20240611"))
MAX_CASES = int(os.environ.get("LORAHUB_FUZZ_SERVER_CASES", "1500"))
BUDGET_S = float(os.environ.get("LORAHUB_FUZZ_SERVER_SECONDS", "30"))
#: PostgreSQL runs this fraction of the cases and seconds (the content checks do not depend on it).
PG_SHARE = 0.2
#: HTTP clients uploading at once, each to its own repo.
WORKERS = 6
#: An answer slower than this is a hang.
REQUEST_TIMEOUT_S = 30.0
#: Fewer cases than this (times PG_SHARE) means the loop did not really run.
MIN_CASES = 200
#: Share of cases uploaded through preupload / LFS batch / PUT / commit instead of inline.
P_LFS = 0.06
#: Share of .safetensors cases committed as a pipeline component (beside comp/config.json).
P_COMPONENT = 0.12
#: Real whole files (~2 MB, ~1750 tensors) are drawn this often (the CLI's loop: 4%).
P_REAL = 0.015
#: Peak RSS growth of the server allowed over the whole loop.
MAX_GROWTH = 256 << 20
# --------------------------------------------------------------------------- the server's memory


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS to its current RSS (``clear_refs`` 5); return that RSS in bytes."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:  # not allowed here: the peak so far stays the baseline (a weaker check)
        return _status_kib(pid, "VmHWM") << 10
    return _status_kib(pid, "VmRSS") << 10


def peak(pid: int) -> int:
    return _status_kib(pid, "VmHWM") << 10


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")


# --------------------------------------------------------------------------- uploading


class Uploader:
    """One HTTP client, the write token of alice."""

    def __init__(self, srv, timeout: float = REQUEST_TIMEOUT_S) -> None:  # noqa: ANN001 - HubServer
        self.srv = srv
        self.http = httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {srv.tokens['alice']}"}, timeout=timeout
        )
        self.requests = 0
        self.slowest = (0.0, "")

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, url: str, **kw) -> httpx.Response:  # noqa: ANN003
        t0 = time.perf_counter()
        r = self.http.request(method, url, **kw)
        took = time.perf_counter() - t0
        self.requests += 1
        if took > self.slowest[0]:
            self.slowest = (took, f"{method} {urlsplit(url).path[:80]}")
        return r

    def commit_inline(self, repo: str, path: str, data: bytes) -> httpx.Response:
        body = ndjson(
            {"key": "header", "value": {"summary": "fuzz"}},
            {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}},
        )
        return self._call("POST", f"/api/models/{repo}/commit/main", content=body, headers=NDJSON)

    def commit_lfs(self, repo: str, path: str, data: bytes) -> httpx.Response:
        """What huggingface_hub does for an LFS file; every step before the commit must succeed."""
        pre = self._call(
            "POST",
            f"/api/models/{repo}/preupload/main",
            json={"files": [{"path": path, "sample": base64.b64encode(data[:512]).decode(), "size": len(data)}]},
        )
        assert pre.status_code == 200, pre.text
        if pre.json()["files"][0]["uploadMode"] != "lfs":  # an empty file is regular
            return self.commit_inline(repo, path, data)
        oid = hashlib.sha256(data).hexdigest()
        batch = self._call(
            "POST",
            f"/{repo}.git/info/lfs/objects/batch",
            json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}], "hash_algo": "sha256"},
            headers={"Accept": "application/vnd.git-lfs+json"},
        )
        assert batch.status_code == 200, batch.text
        actions = batch.json()["objects"][0].get("actions")
        if actions:  # absent when this repo already holds the object
            put = self._call("PUT", actions["upload"]["href"], content=data, headers={"Authorization": ""})
            assert put.status_code == 200, put.text
            ver = self._call("POST", actions["verify"]["href"], json={"oid": oid, "size": len(data)})
            assert ver.status_code == 200, ver.text
        body = ndjson(
            {"key": "header", "value": {"summary": "fuzz (lfs)"}},
            {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": len(data)}},
        )
        return self._call("POST", f"/api/models/{repo}/commit/main", content=body, headers=NDJSON)


def expected(path: str, data: bytes, local: Path, *, component: bool) -> policy.BlobCheck:
    """What lorahub's checks say of these bytes at this path (run here, in the test process)."""
    if path.lower().endswith(policy.REFUSED_SUFFIXES):
        return policy.BlobCheck(False, [PICKLE_REASON])  # the one pickle message (lorahub.adapters.pickles)
    return policy.check_blob(path, hashlib.sha256(data).hexdigest(), local, component=component)


def judge(up: Uploader, repo: str, path: str, data: bytes, want: policy.BlobCheck, r: httpx.Response) -> str | None:
    """The first broken promise of the server's answer ``r`` to committing ``data`` at ``path``, or None."""
    srv = up.srv
    if r.status_code >= 500:
        return f"{r.status_code}: {r.text[:300]}"
    if not want.ok:
        if r.status_code != 422:
            return f"refused locally ({want.errors[0][:200]}) but the server answered {r.status_code}: {r.text[:300]}"
        try:
            msg = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            return f"422 without a JSON error: {r.text[:300]!r}"
        if not isinstance(msg, str) or not msg.strip() or "\n" in msg or "\r" in msg:
            return f"not a one-line message: {str(msg)[:300]!r}"
        if len(msg) > 3500:
            return f"{len(msg)}-character message: {msg[:200]!r}..."
        if not msg.startswith(f"{path}: "):
            return f"the message does not name the file: {msg[:300]!r}"
        if want.errors[0] not in msg:
            return f"the message lacks the validator's first reason {want.errors[0][:200]!r}: {msg[:300]!r}"
        if str(srv.data) in msg:
            return f"the message shows the server's storage path: {msg[:300]!r}"
        return None
    if r.status_code != 200:
        return f"valid locally but refused with {r.status_code}: {r.text[:300]}"
    oid = r.json().get("commitOid")
    back = up._call("GET", f"/{repo}/resolve/{oid}/{path}")
    if back.status_code != 200 or back.content != data:
        return f"landed as {oid} but reads back {back.status_code} with {len(back.content)} bytes (sent {len(data)})"
    if want.is_adapter:
        sha = hashlib.sha256(data).hexdigest()
        found = up._call("GET", f"/api/lorahub/by-hash/{sha}")
        mine = [m for m in found.json().get("matches", []) if m["name"] == repo.split("/")[1] and m["sha256"] == sha]
        if found.status_code != 200 or len(mine) != 1:
            return f"landed adapter {sha} not found by hash: {found.status_code} {found.text[:300]}"
        m, rep = mine[0], want.report
        got = (m["file_name"], m["format"], m["base_family"], m["rank"])
        if got != (Path(path).name, rep.format, rep.base_family, rep.rank):
            return f"indexed as {got}, inspect says {(Path(path).name, rep.format, rep.base_family, rep.rank)}"
    return None


# --------------------------------------------------------------------------- tests


def _valid_adapter_bytes(kohya_lora) -> bytes:  # noqa: ANN001
    return kohya_lora("claims.safetensors", rank=2).read_bytes()


@needs_proc
def test_length_claims_of_gigabytes_are_refused_unread(hub_server, kohya_lora, tmp_path: Path) -> None:
    """Header length claims past the file and past the 100 MB header limit, and HTTP bodies that
    announce gigabytes: refused from the claim, with the server's peak memory flat."""
    srv = hub_server
    api = srv.api()
    repo = f"alice/claims-{srv.backend}"
    api.create_repo(repo)
    up = Uploader(srv)
    pid = srv.proc.pid
    good = _valid_adapter_bytes(kohya_lora)
    try:
        # 1. Safetensors header lengths of gigabytes in a small file: past the end of the file.
        for claim in (2**32, 2**40, 2**63, 2**64 - 1):
            data = struct.pack("<Q", claim) + good[8:]
            r = up.commit_lfs(repo, "claim.safetensors", data)
            assert r.status_code == 422, r.text
            msg = r.json()["error"]
            assert f"header length {claim}" in msg and "runs past the end" in msg and "\n" not in msg, msg

        # 2. A 100 MB file whose header claims more than the limit: refused without reading it.
        n = MAX_HEADER_BYTES + 8
        big = struct.pack("<Q", n) + b"{" + bytes(n + 4096)
        before = reset_peak(pid)
        r = up.commit_lfs(repo, "big.safetensors", big)
        grown = peak(pid) - before
        assert r.status_code == 422, r.text
        assert f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit" in r.json()["error"]
        assert grown < 32 << 20, f"the server's peak RSS grew by {grown >> 20} MiB for a refused {len(big) >> 20} MB header"
        del big

        # 3. HTTP bodies announcing gigabytes: answered from the Content-Length alone, body never sent.
        auth = f"Authorization: Bearer {srv.tokens['alice']}\r\n"
        host = urlsplit(srv.url).netloc
        for method, path, ctype in (
            ("POST", f"/api/models/{repo}/commit/main", "application/x-ndjson"),
            ("POST", "/api/repos/create", "application/json"),
            ("POST", f"/api/models/{repo}/preupload/main", "application/json"),
            ("POST", f"/{repo}.git/info/lfs/objects/batch", "application/vnd.git-lfs+json"),
        ):
            head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: {ctype}\r\nContent-Length: {10 << 30}\r\n\r\n"
            answer = raw_http(srv.url, head.encode("latin-1"))
            assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:300])
        # An LFS object of a terabyte is refused by the batch API (per object, as the protocol says).
        oid = "a" * 64
        b = up.http.post(f"/{repo}.git/info/lfs/objects/batch", json={"operation": "upload", "objects": [{"oid": oid, "size": 1 << 40}]})
        assert b.status_code == 200 and b.json()["objects"][0]["error"]["code"] == 413
        assert "actions" not in b.json()["objects"][0]
        # A signed upload URL for 1 KB does not take a body announced as 10 GB.
        data = os.urandom(1024)
        b = up.http.post(
            f"/{repo}.git/info/lfs/objects/batch",
            json={"operation": "upload", "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": 1024}]},
        )
        href = urlsplit(b.json()["objects"][0]["actions"]["upload"]["href"])
        head = f"PUT {href.path}?{href.query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {10 << 30}\r\n\r\n"
        assert raw_http(srv.url, head.encode("latin-1")).startswith(b"HTTP/1.1 400")
        assert peak(pid) - before < 32 << 20
        assert [s.rfilename for s in api.model_info(repo).siblings] == [".gitattributes"]
        assert srv.proc.poll() is None and up.http.get("/api/whoami-v2").status_code == 200
    finally:
        up.close()


@needs_proc
@pytest.mark.slow
def test_mutated_adapters_through_the_hub_api(hub_server, tmp_path: Path) -> None:
    srv = hub_server
    share = 1.0 if srv.backend == "sqlite" else PG_SHARE
    max_cases, budget_s, min_cases = int(MAX_CASES * share), BUDGET_S * share, int(MIN_CASES * share)
    synth = [Seed(p) for p in synthetic_seeds(tmp_path / "seeds")]
    excerpts = [Seed(p) for p in real_excerpts(tmp_path / "excerpts")]
    real = [Seed(p) for p in real_seeds()]

    api = srv.api()
    repos = [f"alice/fuzz-{srv.backend}-{w}" for w in range(WORKERS)]
    for repo in repos:
        api.create_repo(repo)
        api.upload_file(path_or_fileobj=b"{}", path_in_repo="comp/config.json", repo_id=repo)
    pid = srv.proc.pid
    before = reset_peak(pid)

    lock = threading.Lock()
    state = {"cases": 0}
    failures: list[str] = []
    counts: Counter[str] = Counter()
    start = time.monotonic()

    def worker(w: int) -> Uploader:
        rng = random.Random(f"{SEED}-{w}")
        up = Uploader(srv)
        work = tmp_path / f"w{w}"
        work.mkdir()
        n = 0
        while True:
            with lock:
                if state["cases"] >= max_cases or time.monotonic() - start > budget_s or len(failures) >= 20:
                    return up
                state["cases"] += 1
            n += 1
            seed, mutate, data, suffix = draw_case(rng, synth, excerpts, real, p_real=P_REAL)
            component = suffix == ".safetensors" and rng.random() < P_COMPONENT
            path = "comp/model.safetensors" if component else f"fuzz{suffix}"
            via_lfs = rng.random() < P_LFS
            local = work / f"case{suffix}"
            local.write_bytes(data)
            want = expected(path, data, local, component=component)
            try:
                r = (up.commit_lfs if via_lfs else up.commit_inline)(repos[w], path, data)
                problem = judge(up, repos[w], path, data, want, r)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except AssertionError as exc:
                problem = f"LFS upload step failed: {str(exc)[:300]}"
            with lock:
                counts[mutate.__name__] += 1
                counts["landed" if want.ok else "refused"] += 1
                counts["indexed"] += want.ok and want.is_adapter
                counts["lfs"] += via_lfs
                counts["component"] += component
                if problem is not None:
                    kept = tmp_path / f"FAILED-w{w}-case{n}{suffix}"
                    local.rename(kept)
                    failures.append(
                        f"worker {w} case {n} ({mutate.__name__} on {seed.path.name}, {path}, "
                        f"{'lfs' if via_lfs else 'inline'}, seed {SEED}): {problem} [{kept}]"
                    )

    with ThreadPoolExecutor(WORKERS) as pool:
        uploaders = list(pool.map(worker, range(WORKERS)))
    elapsed = time.monotonic() - start
    grown = peak(pid) - before
    slowest = max(u.slowest for u in uploaders)
    requests = sum(u.requests for u in uploaders)
    for u in uploaders:
        u.close()
    cases = state["cases"]
    print(
        f"\nserver hostile loop ({srv.backend}): {cases} cases, {requests} requests in {elapsed:.1f} s "
        f"({WORKERS} clients, seed {SEED}), slowest answer {slowest[0] * 1000:.0f} ms ({slowest[1]}), "
        f"server peak RSS grew {grown >> 20} MiB; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    assert not failures, "\n".join(failures)
    assert cases >= min_cases, f"only {cases} cases ran in {budget_s} s"
    assert counts["indexed"] and counts["refused"] > counts["landed"], counts
    # Alive, answering, nothing unexpected logged, no upload left half-written, memory bounded.
    assert srv.proc.poll() is None, "the server died"
    who = httpx.get(f"{srv.url}/api/whoami-v2", headers={"Authorization": f"Bearer {srv.tokens['alice']}"}, timeout=10)
    assert who.status_code == 200 and who.json()["name"] == "alice"
    log = srv.log_text()
    assert "unexpected error" not in log and "Traceback" not in log, log[-3000:]
    assert list((srv.data / "blobs" / "tmp").glob("*.part")) == []
    assert grown < MAX_GROWTH, f"the server's peak RSS grew by {grown >> 20} MiB"
