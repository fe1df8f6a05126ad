"""Load: N clients searching and M clients pushing to one ``lorahub serve`` at once, on SQLite and PostgreSQL.

    python benchmarks/bench_load.py [--seconds 30] [--searchers 8] [--pushers 4] [--processes 1]
        [--backend sqlite|postgres|both] [--records 100000] [--queries 400]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Per backend: a fresh database (PostgreSQL: a new database on ``--pg-url``'s server, dropped afterwards)
seeded with the registry benchmark's ``--records`` resampled Civitai records (bench_registry.py), users
alice and bob with write tokens, one repo per pusher (``alice/load-own-I`` or ``bob/load-own-I``) and one
repo all pushers share (``alice/load-shared``); then ``lorahub serve --no-access-log [--workers P]`` as its
own process and, for ``--seconds``, at the same time:

* ``--searchers`` closed-loop clients (stdlib ``http.client``, keep-alive, spread over up to 4 processes)
  sending ``GET /api/lorahub/search`` requests of the registry benchmark's query mix;
* ``--pushers`` processes, each a real ``huggingface_hub.HfApi`` (LFS, Xet off) pushing small valid kohya
  LoRAs (a fresh file every time, a unique trigger word each) with ``upload_file``, alternating between
  its own repo (3 paths overwritten in turn; ``parent_commit`` = its previous commit on every other push)
  and the shared repo (a new path every time; every other push with ``parent_commit`` = the head it read
  just before, which may be stale: a ``409`` there is the expected answer, counted as a conflict, not an
  error).

Errors, by kind: what the clients saw (``HTTP <status>`` or the exception's type; a ``409`` on a push
without ``parent_commit`` is an error) and the ``ERROR`` lines of the server's log (a 5xx that a client
retried by itself shows there).

Lost pushes, checked after the run: every push the client saw succeed has its commit in the repo's
history and its file at the right SHA-256 in that commit's tree; each repo's head tree holds exactly the
files the successful pushes leave (the last content of each own-repo path, every shared-repo path), the
bytes served for each hash to that SHA-256, and no file of a push refused with ``409``; each repo's
commit count is 1 + its successful pushes. Registry: every head file is found by
``/api/lorahub/by-hash/<sha256>`` and its repo by ``/api/lorahub/search?q=<its trigger word>``.

Goal: zero errors, zero lost pushes, zero registry misses. Exit code 1 when it fails.
The same harness runs (small, short) in tests/server/test_server_load.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import string
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_registry as BR  # noqa: E402 - the registry benchmark's records, queries and helpers
from bench_server import query_params, start_server, stop_server  # noqa: E402 - one way to run the server
from benchkit import load_note  # noqa: E402

SHARED_REPO = "alice/load-shared"
OWN_PATHS = 3
#: How long after the window a push may still be running before the run is declared stuck.
PUSH_TIMEOUT_S = 120


# -- server -------------------------------------------------------------------------------------


def seed(data: Path, url: str, records: list) -> tuple[str, dict[str, str], float]:
    """Migrate the database, import ``records``, create alice and bob with write tokens.

    Returns (database URL, tokens by user, import seconds)."""
    from sqlmodel import Session

    from lorahub.registry.hub.auth import create_token
    from lorahub.registry.server.run import prepare

    _, url, registry = prepare(data, url)
    try:
        t = time.perf_counter()
        if records:
            registry.import_records(records)
            if registry.engine.dialect.name == "postgresql":
                with registry.engine.connect() as c:
                    c.exec_driver_sql("ANALYZE")
                    c.commit()
        import_s = time.perf_counter() - t
        tokens = {}
        with Session(registry.engine, expire_on_commit=False) as s:
            for user in ("alice", "bob"):
                tokens[user], _, _ = create_token(s, user, write=True, name=f"load-{user}")
    finally:
        registry.close()
    return url, tokens, import_s


def server_log_errors(log: Path) -> Counter:
    """``ERROR`` lines (and tracebacks) of the server's log, by message (ids and numbers stripped)."""
    import re

    out: Counter = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if " ERROR " in line or line.startswith("Traceback"):
            msg = line.split(" ERROR ", 1)[-1]
            out[re.sub(r"[0-9a-f]{12,}|\d+", "N", msg)[:160]] += 1
    return out


# -- clients ------------------------------------------------------------------------------------


def write_lora(path: Path, seed: int, word: str, rank: int = 4) -> str:
    """A small, valid SD 1.x kohya LoRA (random weights) whose trigger word is ``word``; returns its sha256."""
    import numpy as np

    from lorahub.adapters.writer import write_numpy

    rng = np.random.default_rng(seed)
    tensors = {}
    for blk, inn in (("attn1_to_q", 320), ("attn1_to_k", 320), ("attn2_to_k", 768), ("attn2_to_v", 768)):
        base = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_{blk}"
        tensors[f"{base}.lora_down.weight"] = rng.standard_normal((rank, inn)).astype(np.float16)
        tensors[f"{base}.lora_up.weight"] = rng.standard_normal((320, rank)).astype(np.float16)
        tensors[f"{base}.alpha"] = np.array(float(rank), dtype=np.float16)
    metadata = {"ss_output_name": word, "ss_tag_frequency": json.dumps({f"10_{word}": {word: 10}})}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_numpy(path, tensors, metadata=metadata)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_kind(exc: BaseException) -> str:
    resp = getattr(exc, "response", None)
    status = getattr(resp, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


def error_text(exc: BaseException) -> str:
    """The exception's first line and, for an HTTP error, the server's message."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    resp = getattr(exc, "response", None)
    try:
        body = resp.json() if resp is not None else None
    except Exception:  # noqa: BLE001 - not JSON
        body = None
    if isinstance(body, dict) and body.get("error"):
        text += f" -> {str(body['error'])[:300]}"
    return text


def _search_part(endpoint: str, params: list[dict], threads: int, start: float, deadline: float) -> dict:
    """One searcher process: ``threads`` closed-loop clients, each with its own keep-alive connection."""
    import http.client
    from urllib.parse import urlencode, urlparse

    u = urlparse(endpoint)
    lat: list[float] = []
    errors: Counter = Counter()
    samples: dict[str, str] = {}
    ends: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        rng = random.Random(n)
        mine, bad, last = [], Counter(), start
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        while time.time() < deadline:
            p = params[rng.randrange(len(params))]
            t = time.perf_counter()
            try:
                conn.request("GET", "/api/lorahub/search?" + urlencode(p, doseq=True))
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    kind = f"HTTP {r.status}"
                    bad[kind] += 1
                    samples.setdefault(f"search {kind}", body[:200].decode(errors="replace"))
                else:
                    mine.append((time.perf_counter() - t) * 1000)
            except Exception as exc:  # noqa: BLE001 - counted by kind, the client reconnects
                bad[type(exc).__name__] += 1
                samples.setdefault(f"search {type(exc).__name__}", str(exc)[:200])
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            last = time.time()
        conn.close()
        with lock:
            lat.extend(mine)
            errors.update(bad)
            ends.append(last)

    while time.time() < start:
        time.sleep(0.005)
    ts = [threading.Thread(target=client, args=(os.getpid() * 100 + i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"lat": lat, "errors": dict(errors), "samples": samples, "end": max(ends, default=start)}


def _pusher(endpoint: str, tokens: dict[str, str], index: int, tag: str, work: str, start: float, deadline: float) -> dict:
    """One pusher process: ``upload_file`` in a loop, alternating its own repo and the shared one."""
    import huggingface_hub.constants as constants

    from lorahub.hub.endpoint import hf_api

    constants.HF_HUB_DISABLE_PROGRESS_BARS = True
    user = "alice" if index % 2 == 0 else "bob"
    own_repo = f"{user}/load-own-{index}"
    own_api = hf_api(endpoint, token=tokens[user])
    shared_api = hf_api(endpoint, token=tokens["alice"])
    folder = Path(work) / f"pusher-{index}"
    pushes: list[dict] = []
    samples: dict[str, str] = {}
    own_head = own_api.repo_info(own_repo).sha
    k = 0
    while time.time() < start:
        time.sleep(0.005)
    while time.time() < deadline:
        shared = k % 2 == 1
        with_parent = (k // 2) % 2 == 0
        word = f"lq{tag}p{index}n{k}"
        repo = SHARED_REPO if shared else own_repo
        api = shared_api if shared else own_api
        path = f"p{index}/n{k}.safetensors" if shared else f"adapters/a{(k // 2) % OWN_PATHS}.safetensors"
        local = folder / f"{word}.safetensors"
        sha = write_lora(local, seed=int(hashlib.sha256(word.encode()).hexdigest()[:8], 16), word=word)
        rec: dict[str, Any] = {"repo": repo, "path": path, "sha256": sha, "word": word, "seq": k, "parent": with_parent}
        t = time.perf_counter()
        try:
            parent = None
            if with_parent:
                parent = shared_api.repo_info(SHARED_REPO).sha if shared else own_head
            info = api.upload_file(
                path_or_fileobj=str(local), path_in_repo=path, repo_id=repo, commit_message=f"load {word}",
                parent_commit=parent,
            )
            rec.update(ok=True, oid=info.oid)
            if not shared:
                own_head = info.oid
        except Exception as exc:  # noqa: BLE001 - counted by kind
            kind = error_kind(exc)
            rec.update(ok=False, kind=kind)
            samples.setdefault(f"push {kind}{' (parentCommit)' if with_parent else ''}", error_text(exc))
            if not shared and kind != "HTTP 409":
                try:  # the outcome is unknown: read the head again to go on
                    own_head = own_api.repo_info(own_repo).sha
                except Exception:  # noqa: BLE001
                    pass
        rec["ms"] = (time.perf_counter() - t) * 1000
        rec["end"] = time.time()
        pushes.append(rec)
        local.unlink(missing_ok=True)
        k += 1
    return {"pushes": pushes, "samples": samples}


def _job(kind: str, args: tuple) -> dict:
    return _search_part(*args) if kind == "search" else _pusher(*args)


@dataclass
class LoadResult:
    seconds: float
    searchers: int
    pushers: int
    search_ms: list[float] = field(default_factory=list)
    search_errors: Counter = field(default_factory=Counter)
    search_wall: float = 0.0
    pushes: list[dict] = field(default_factory=list)
    push_wall: float = 0.0
    samples: dict[str, str] = field(default_factory=dict)

    @property
    def push_ok(self) -> list[dict]:
        return [p for p in self.pushes if p["ok"]]

    @property
    def conflicts(self) -> list[dict]:
        """Pushes with a parentCommit refused with 409: the expected answer to a stale parent."""
        return [p for p in self.pushes if not p["ok"] and p["parent"] and p["kind"] == "HTTP 409"]

    @property
    def push_errors(self) -> Counter:
        c: Counter = Counter()
        for p in self.pushes:
            if not p["ok"] and not (p["parent"] and p["kind"] == "HTTP 409"):
                c[p["kind"] + ("" if p["parent"] else " (no parentCommit)" if p["kind"] == "HTTP 409" else "")] += 1
        return c


def run_load(endpoint: str, tokens: dict[str, str], params: list[dict], *, searchers: int, pushers: int, seconds: float,
             work: Path) -> LoadResult:
    """``searchers`` search clients and ``pushers`` push clients against ``endpoint`` for ``seconds``."""
    import multiprocessing

    from lorahub.hub.endpoint import hf_api

    tag = "".join(random.choices(string.ascii_lowercase, k=4))
    alice = hf_api(endpoint, token=tokens["alice"])
    alice.create_repo(SHARED_REPO, exist_ok=True)
    for i in range(pushers):
        user = "alice" if i % 2 == 0 else "bob"
        hf_api(endpoint, token=tokens[user]).create_repo(f"{user}/load-own-{i}", exist_ok=True)
    procs = max(1, min(4, searchers)) if searchers else 0
    shares = [searchers // procs + (1 if i < searchers % procs else 0) for i in range(procs)]
    start = time.time() + 1.0 + 0.1 * (procs + pushers)  # every process forked and ready before it
    deadline = start + seconds
    jobs = [("search", (endpoint, params, n, start, deadline)) for n in shares if n]
    jobs += [("push", (endpoint, tokens, i, tag, str(work), start, deadline)) for i in range(pushers)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(len(jobs)) as pool:
        pending = [pool.apply_async(_job, job) for job in jobs]
        results = [(job[0], p.get(timeout=seconds + PUSH_TIMEOUT_S + 60)) for job, p in zip(jobs, pending, strict=True)]
    res = LoadResult(seconds=seconds, searchers=searchers, pushers=pushers)
    search_end = push_end = start
    for kind, r in results:
        res.samples.update(r["samples"])
        if kind == "search":
            res.search_ms += r["lat"]
            res.search_errors.update(r["errors"])
            search_end = max(search_end, r["end"])
        else:
            res.pushes += r["pushes"]
            push_end = max([push_end] + [p["end"] for p in r["pushes"]])
    res.search_wall = search_end - start
    res.push_wall = push_end - start
    return res


# -- checks after the run -----------------------------------------------------------------------


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)  # successful pushes not (rightly) in the repo
    unexpected: list[str] = field(default_factory=list)  # files or commits nobody saw succeed
    registry_missing: list[str] = field(default_factory=list)
    commit_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # repo -> (expected, found)
    checked_files: int = 0


def verify(endpoint: str, tokens: dict[str, str], res: LoadResult) -> Verdict:
    import httpx

    from lorahub.hub.endpoint import hf_api

    api = hf_api(endpoint, token=tokens["alice"])
    v = Verdict()
    by_repo: dict[str, list[dict]] = {}
    for p in res.pushes:
        by_repo.setdefault(p["repo"], []).append(p)
    uncertain = {p["repo"] for p in res.pushes if not p["ok"] and not (p["parent"] and p["kind"] == "HTTP 409")}
    http = httpx.Client(base_url=endpoint, timeout=60, headers={"Authorization": f"Bearer {tokens['alice']}"})
    try:
        for repo, pushes in sorted(by_repo.items()):
            ok = [p for p in pushes if p["ok"]]
            commits = {c.commit_id for c in api.list_repo_commits(repo)}
            v.commit_counts[repo] = (1 + len(ok), len(commits))
            if len(commits) != 1 + len(ok) and repo not in uncertain:
                v.unexpected.append(f"{repo}: {len(commits)} commits, expected {1 + len(ok)}")
            for p in ok:
                where = f"{repo}: {p['path']} (push {p['word']}, commit {p['oid'][:12]})"
                if p["oid"] not in commits:
                    v.lost.append(f"{where}: commit missing from the history")
                    continue
                info = list(api.get_paths_info(repo, [p["path"]], revision=p["oid"]))
                got = info[0].lfs.sha256 if info and getattr(info[0], "lfs", None) else None
                if got != p["sha256"]:
                    v.lost.append(f"{where}: tree of the commit has {got}, expected {p['sha256']}")
            expected: dict[str, dict] = {}
            for p in sorted(ok, key=lambda p: p["seq"]):
                expected[p["path"]] = p  # own repos: one writer, so its last success on a path wins
            head = {
                f.path: (f.lfs.sha256 if getattr(f, "lfs", None) else None)
                for f in api.list_repo_tree(repo, recursive=True)
                if hasattr(f, "size")
            }
            head.pop(".gitattributes", None)
            for path, p in expected.items():
                if head.get(path) != p["sha256"]:
                    v.lost.append(f"{repo}: head has {path} = {head.get(path)}, expected {p['sha256']} ({p['word']})")
                    continue
                body = http.get(f"/{repo}/resolve/main/{path}").content
                v.checked_files += 1
                if hashlib.sha256(body).hexdigest() != p["sha256"]:
                    v.lost.append(f"{repo}: {path}: downloaded bytes do not hash to {p['sha256']}")
                # registry: the file by its hash, the repo by the file's trigger word
                found = http.get(f"/api/lorahub/by-hash/{p['sha256']}").json().get("matches", [])
                if not any(m.get("sha256") == p["sha256"] and repo in (m.get("url") or "") for m in found):
                    v.registry_missing.append(f"{repo}: {path}: by-hash {p['sha256'][:12]} found {len(found)} match(es)")
                hits = http.get("/api/lorahub/search", params={"q": p["word"], "limit": 5}).json()
                if not any((h.get("url") or "").endswith("/" + repo) for h in hits):
                    v.registry_missing.append(f"{repo}: {path}: search q={p['word']} did not find the repo")
            for path in sorted(set(head) - set(expected)):
                refused = [p for p in pushes if not p["ok"] and p["path"] == path]
                what = "a push refused with 409" if refused and refused[0]["kind"] == "HTTP 409" else "no successful push"
                v.unexpected.append(f"{repo}: head has {path}, from {what}")
    finally:
        http.close()
    return v


# -- one backend --------------------------------------------------------------------------------


def run_backend(backend: str, url: str, work: Path, records: list, params: list[dict], *, seconds: float, searchers: int,
                pushers: int, processes: int = 1, after: Any = None) -> dict:
    """Seed, serve, load, verify. ``url``: the database (PostgreSQL: an existing empty database).

    ``after(endpoint, tokens, result)``, if given, runs once the checks are done, while the server still runs."""
    data = work / f"srv-{backend}"
    data.mkdir(parents=True, exist_ok=True)
    url, tokens, import_s = seed(data, url, records)
    load_before = os.getloadavg()[0]
    proc, endpoint = start_server(data, url, ["--workers", str(processes)] if processes > 1 else [])
    try:
        res = run_load(endpoint, tokens, params, searchers=searchers, pushers=pushers, seconds=seconds, work=work)
        load_after = os.getloadavg()[0]
        verdict = verify(endpoint, tokens, res)
        if after is not None:
            after(endpoint, tokens, res)
    finally:
        stop_server(proc)
    return {
        "backend": backend, "records": len(records), "import_s": import_s, "result": res, "verdict": verdict,
        "server_errors": server_log_errors(data / "server.log"), "load": (load_before, load_after),
        "processes": processes,
    }


def summary(run: dict) -> dict:
    """The figures of one backend run (numbers only; what the report prints and the test asserts)."""
    res: LoadResult = run["result"]
    v: Verdict = run["verdict"]
    ok = res.push_ok
    s = BR.percentiles(res.search_ms) if res.search_ms else {"p50": 0.0, "p99": 0.0, "max": 0.0}
    p = BR.percentiles([x["ms"] for x in ok]) if ok else {"p50": 0.0, "p99": 0.0, "max": 0.0}
    errors = Counter({f"search {k}": n for k, n in res.search_errors.items()})
    errors.update({f"push {k}": n for k, n in res.push_errors.items()})
    errors.update({f"server log: {k}": n for k, n in run["server_errors"].items()})
    return {
        "searches": len(res.search_ms), "search_rps": len(res.search_ms) / max(res.search_wall, 1e-9),
        "search_p50": s["p50"], "search_p99": s["p99"], "search_max": s["max"],
        "pushes": len(ok), "push_rps": len(ok) / max(res.push_wall, 1e-9), "push_p50": p["p50"], "push_p99": p["p99"],
        "push_max": p["max"], "conflicts": len(res.conflicts),
        "with_parent": sum(1 for x in ok if x["parent"]), "shared": sum(1 for x in ok if x["repo"] == SHARED_REPO),
        "errors": dict(errors), "lost": len(v.lost), "unexpected": len(v.unexpected),
        "registry_missing": len(v.registry_missing), "checked_files": v.checked_files,
    }


def report(run: dict) -> bool:
    res: LoadResult = run["result"]
    v: Verdict = run["verdict"]
    f = summary(run)
    name = {"sqlite": "SQLite", "postgres": "PostgreSQL"}.get(run["backend"], run["backend"])
    print(f"\n## load, {name}, {run['records']} records (import {run['import_s']:.1f} s), {run['processes']} server "
          f"process(es), {res.searchers} searchers + {res.pushers} pushers, {res.seconds:.0f} s "
          f"(load average {run['load'][0]:.1f} before, {run['load'][1]:.1f} after)")
    print("| clients | done | per s | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    print(f"| search | {f['searches']} | {f['search_rps']:.1f} | {f['search_p50']:.1f} | {f['search_p99']:.1f} | "
          f"{f['search_max']:.1f} |")
    print(f"| push (`upload_file`) | {f['pushes']} | {f['push_rps']:.2f} | {f['push_p50']:.1f} | {f['push_p99']:.1f} | "
          f"{f['push_max']:.1f} |")
    print(f"- pushes: {f['pushes']} landed ({f['with_parent']} with parentCommit, {f['shared']} to the shared repo); "
          f"{f['conflicts']} refused with 409 for a stale parentCommit (expected)")
    print(f"- errors: {f['errors'] or 'none'}")
    for k, msg in sorted(res.samples.items()):
        if "409 (parentCommit)" not in k:
            print(f"  - {k}: {msg}")
    print(f"- lost pushes: {f['lost']}; unexpected files/commits: {f['unexpected']}; registry misses: "
          f"{f['registry_missing']} ({f['checked_files']} head files checked, commit counts "
          f"{', '.join(f'{r}={e}/{n}' for r, (e, n) in v.commit_counts.items())})")
    for line in (v.lost + v.unexpected + v.registry_missing)[:20]:
        print(f"  - {line}")
    ok = not f["errors"] and not f["lost"] and not f["unexpected"] and not f["registry_missing"] and f["pushes"] > 0
    print(f"- zero errors, zero lost pushes, every adapter found: {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--searchers", type=int, default=8)
    ap.add_argument("--pushers", type=int, default=4)
    ap.add_argument("--processes", type=int, default=1, help="server processes (lorahub serve --workers)")
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=400, help="distinct queries of the mix")
    ap.add_argument("--pg-url", default=os.environ.get("LORAHUB_BENCH_PG_URL", BR.DEFAULT_PG))
    args = ap.parse_args()
    if not BR.CORPUS.exists():
        print(f"{BR.CORPUS} is absent: the corpus lives in ../shared beside the project", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lorahub-bench-load-"))
    os.environ["LORAHUB_HOME"] = str(work / "home")
    os.environ.pop("LORAHUB_DATABASE_URL", None)
    print(load_note())
    failed = False
    try:
        t = time.perf_counter()
        records = BR.resampled_records(args.records)
        params = [query_params(q) for q in BR.query_mix(records, args.queries)]
        print(f"{len(records)} records resampled in {time.perf_counter() - t:.1f} s; {len(params)} distinct queries")
        backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
        for backend in backends:
            drop = None
            if backend == "sqlite":
                url = f"sqlite:///{work / 'srv-sqlite' / 'lorahub-server.sqlite'}"
            else:
                try:
                    url, drop = BR.pg_database(args.pg_url)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print(f"postgres: FAIL, no database ({type(exc).__name__}: {str(exc).splitlines()[0]})")
                    failed = True
                    continue
            try:
                run = run_backend(backend, url, work, records, params, seconds=args.seconds, searchers=args.searchers,
                                  pushers=args.pushers, processes=args.processes)
            finally:
                if drop:
                    drop()
            failed |= not report(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
