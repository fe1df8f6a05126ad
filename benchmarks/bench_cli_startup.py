#!/usr/bin/env python
"""Benchmark: whole-process start-up of the CLI, ``inspect`` reading the header only, and the
registry commands on a registry of 100k records.

    python benchmarks/bench_cli_startup.py [--rounds 10] [--dir DIR] [--parts inspect,registry]
        [--records 100000] [--backends sqlite,postgres] [--pg-url postgresql://postgres@127.0.0.1:5432/test]
        [--cache FILE.jsonl]

Times, best of ``--rounds`` interleaved runs of whole processes:

* ``lorahub --help`` and ``lorahub inspect SMALL --json``: goal < 0.5 s each
  (no torch import; ``python -c pass`` is printed as the floor);
* ``lorahub inspect BIG --json`` (2 GiB) against ``lorahub inspect SMALL --json``
  (2 MB), both with the same 200-module kohya header: goal ratio <= 1.1, i.e.
  the time does not depend on the data size. BIG is a sparse file (the header is
  written, the data region is a hole): reading its 2 GiB would still cost
  seconds, so a ratio near 1 shows that no data is read.
* registry commands (issue 24) on ``--records`` generated records (tests/corpuskit.py;
  one record in a hundred shares its newest file's tensors with another: 1,000 files in 500
  groups for ``dupes``), a folder of
  ``FOLDER_FILES`` indexed adapter files and two tokens: ``search anime`` (text and
  ``--json``), ``search --hash`` (10 hex), ``dupes``, ``index FOLDER`` of the unchanged folder
  (warm) and ``token list``. Goal: each <= 0.4 s on SQLite, <= 0.6 s on PostgreSQL (a private
  schema in ``--pg-url``'s database, dropped afterwards; skipped with a note when the server
  is unreachable).

Skips the inspect parts (with a note) when ``lorahub inspect`` is not available.
Prints PASS/FAIL per goal and the load average; exits 1 when a goal fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchkit import load_note, lorahub_cmd

GOAL_START_S = 0.5
GOAL_INSPECT_RATIO = 1.1
MODULES = 200
#: Issue 24: registry commands, whole processes, at 100k records.
GOAL_REGISTRY_S = {"sqlite": 0.4, "postgres": 0.6}
FOLDER_FILES = 200
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TESTS = Path(__file__).resolve().parents[1] / "tests"


def make_lora(path: Path, dim: int, rank: int, *, sparse: bool, marker: int = 0) -> int:
    """A kohya-style LoRA header of MODULES F16 modules; returns the file size. The data is zeros
    but for ``marker`` in its first 8 bytes (files of other markers have other tensors)."""
    from lorahub.adapters.writer import encode_header

    entries: dict[str, dict] = {}
    pos = 0
    for i in range(MODULES):
        base = f"lora_unet_down_blocks_{i // 20}_attentions_{i % 2}_transformer_blocks_{i % 10}_attn1_to_q_{i}"
        for suffix, shape in ((".alpha", []), (".lora_down.weight", [rank, dim]), (".lora_up.weight", [dim, rank])):
            n = 2
            for d in shape:
                n *= d
            entries[base + suffix] = {"dtype": "F16", "shape": shape, "data_offsets": [pos, pos + n]}
            pos += n
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
                "ss_base_model_version": "sd_v1", "ss_output_name": path.stem}
    head = encode_header(entries, metadata)
    with open(path, "wb") as fh:
        fh.write(head)
        if sparse:
            fh.truncate(len(head) + pos)
        else:
            fh.write(marker.to_bytes(8, "little"))
            left = pos - 8
            while left:
                n = min(left, 1 << 20)
                fh.write(bytes(n))
                left -= n
    return len(head) + pos


def registry_records(n: int, cache: Path | None = None) -> tuple[list, str]:
    """``n`` generated records (tests/corpuskit.py), pairs of them sharing their tensors; and the
    first 10 hex of one record's SHA-256. ``cache``: a JSON Lines file of them, written on the
    first run and read on the next ones (generating 100k records takes minutes)."""
    from lorahub.schemas.registry import AdapterRecord

    if cache is not None and cache.exists():
        recs = [AdapterRecord.model_validate_json(line) for line in cache.read_text(encoding="utf-8").splitlines()]
        if len(recs) != n + 18 and len(recs) != n:  # corpuskit adds its 18 planted records
            raise SystemExit(f"{cache} holds {len(recs)} records, not {n}: remove it or give its --records")
        return recs, _known(recs)
    sys.path.insert(0, str(TESTS))
    from corpuskit import records

    recs = records(n)
    for i in range(0, len(recs) - 1, 100):  # one record in a hundred: its newest file re-uploaded as the next one's
        tensor = hashlib.sha256(b"twin %d" % i).hexdigest()
        for rec in (recs[i], recs[i + 1]):
            rec.versions[0].files[0].hashes.update(tensor_sha256=tensor, autov3=tensor[:12])
    if cache is not None:
        cache.write_text("".join(r.model_dump_json() + "\n" for r in recs), encoding="utf-8")
    return recs, _known(recs)


def _known(recs: list) -> str:
    known = next(f.hashes["sha256"] for r in recs[len(recs) // 2:] for v in r.versions for f in v.files
                 if f.hashes.get("sha256"))
    return known[:10]


def pg_schema(base: str) -> tuple[str, object] | None:
    """A private schema in ``base``'s database: (URL whose search_path is that schema, drop function),
    or None when the server is unreachable."""
    import psycopg

    conninfo = base.replace("postgresql+psycopg://", "postgresql://", 1)
    schema = f"lh_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        print(f"SKIP postgres: {str(exc).strip().splitlines()[0]}")
        return None

    def drop() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def build_registry(url: str, recs: list, folder: Path, lh: list[str]) -> None:
    """Import the records, index the folder (cold) and create two tokens, in ``url``."""
    from lorahub.registry.catalogue import Registry

    t0 = time.perf_counter()
    with Registry(url) as reg:
        reg.import_records(recs)
        summary = reg.index_paths([folder])
        if summary.failed or summary.added != FOLDER_FILES:
            raise RuntimeError(f"indexing {folder} failed: {summary.failed[:3]}")
        count = reg.count()
    for user in ("alice", "bob"):
        timed([*lh, "token", "create", "--user", user, "--database", url])
    print(f"  {count:,} adapters ({len(recs):,} records, {FOLDER_FILES} files) in {time.perf_counter() - t0:.0f} s")


def registry_commands(lh: list[str], url: str, folder: Path, known: str) -> dict[str, list[str]]:
    db = ["--database", url]
    return {
        "search anime": [*lh, "search", "anime", *db],
        "search anime --json": [*lh, "search", "anime", "--json", *db],
        "search --hash": [*lh, "search", "--hash", known, *db],
        "dupes": [*lh, "dupes", *db],
        "index FOLDER (warm)": [*lh, "index", str(folder), *db],
        "token list": [*lh, "token", "list", *db],
    }


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--parts", default="inspect,registry", help="inspect, registry or both (comma separated)")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    ap.add_argument("--cache", type=Path, default=None, metavar="FILE.jsonl",
                    help="Keep the generated records in FILE (read back on the next run with the same --records).")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    tmp = Path(tempfile.mkdtemp(prefix="lorahub-bench-", dir=args.dir))
    os.environ["LORAHUB_HOME"] = str(tmp / "home")
    os.environ.pop("LORAHUB_DEBUG", None)
    lh = lorahub_cmd()
    drops: list = []
    try:
        cmds: dict[str, list[str]] = {"python -c pass": [sys.executable, "-c", "pass"]}
        goals: dict[str, float] = {}  # registry command -> goal (s)
        failed = False
        try:
            timed([*lh, "--help"])
            cmds["lorahub --help"] = [*lh, "--help"]
        except RuntimeError as exc:
            failed = True
            print(f"FAIL lorahub --help: {str(exc).splitlines()[-1]}")
        inspect_ok = "inspect" in parts
        if inspect_ok:
            small, big = tmp / "small.safetensors", tmp / "big.safetensors"
            small_size = make_lora(small, 320, 8, sparse=False)
            big_size = make_lora(big, 4096, 655, sparse=True)
            print(f"small: {small_size:,} bytes; big: {big_size:,} bytes (sparse); {MODULES} modules each")
            try:
                timed([*lh, "inspect", str(small), "--json"])
                timed([*lh, "inspect", str(big), "--json"])
            except RuntimeError as exc:
                inspect_ok = False
                print(f"SKIP inspect (not ready?): {str(exc).splitlines()[-1]}")
        if inspect_ok:
            cmds["lorahub inspect SMALL --json"] = [*lh, "inspect", str(small), "--json"]
            cmds["lorahub inspect BIG --json"] = [*lh, "inspect", str(big), "--json"]

        if "registry" in parts:
            folder = tmp / "loras"
            folder.mkdir()
            for i in range(FOLDER_FILES):
                make_lora(folder / f"adapter_{i:03d}.safetensors", 64, 4 + i % 5, sparse=False, marker=i + 1)
            t0 = time.perf_counter()
            recs, known = registry_records(args.records, args.cache)
            print(f"registry: {len(recs):,} generated records in {time.perf_counter() - t0:.0f} s")
            for backend in backends:
                if backend == "sqlite":
                    url = f"sqlite:///{tmp / 'registry.sqlite'}"
                else:
                    made = pg_schema(args.pg_url)
                    if made is None:
                        continue
                    url, drop = made
                    drops.append(drop)
                print(f"{backend}:")
                build_registry(url, recs, folder, lh)
                for name, cmd in registry_commands(lh, url, folder, known).items():
                    timed(cmd)  # it works (and warms the page cache)
                    cmds[f"{backend}: {name}"] = cmd
                    goals[f"{backend}: {name}"] = GOAL_REGISTRY_S[backend]
            del recs

        print(f"before: {load_note(busy_above=0.5)}")
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                times[name].append(timed(cmd))
        best = {k: min(v) for k, v in times.items()}
        print()
        width = max(30, *map(len, cmds))
        print(f"{'command':<{width}} {'best s':>8} {'median s':>9}")
        for name, v in times.items():
            print(f"{name:<{width}} {best[name]:8.3f} {statistics.median(v):9.3f}")
        print()

        for name in ("lorahub --help", "lorahub inspect SMALL --json"):
            if name in best:
                ok = best[name] < GOAL_START_S
                failed |= not ok
                print(f"{name:<{width}} = {best[name]:.3f} s  (goal < {GOAL_START_S} s)  {'PASS' if ok else 'FAIL'}")
        if inspect_ok:
            ratio = best["lorahub inspect BIG --json"] / best["lorahub inspect SMALL --json"]
            ok = ratio <= GOAL_INSPECT_RATIO
            failed |= not ok
            print(f"{'inspect 2 GiB / 2 MB':<{width}} = {ratio:.2f}  (goal <= {GOAL_INSPECT_RATIO})  {'PASS' if ok else 'FAIL'}")
        for name, goal in goals.items():
            ok = best[name] <= goal
            failed |= not ok
            print(f"{name:<{width}} = {best[name]:.3f} s  (goal <= {goal} s)  {'PASS' if ok else 'FAIL'}")
        print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}, {load_note(busy_above=0.5)}")
        return 1 if failed else 0
    finally:
        for drop in drops:
            drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
