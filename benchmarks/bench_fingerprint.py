#!/usr/bin/env python
"""Benchmark: ``lorahub fingerprint`` and a cold ``lorahub index`` against the SHA-256 floor.

    python benchmarks/bench_fingerprint.py [--size-gib 1] [--rounds 5] [--dir DIR] [--index-files 8]
        [--index-gib 1,4] [--skip-index]

Creates a safetensors file of random bytes (not zeros: no hasher gets an easy
ride) in a temporary folder, reads it once so that every tool reads from the
page cache, then times whole processes, best of ``--rounds`` interleaved rounds:

* ``openssl dgst -sha256 FILE``: one SHA-256 chain;
* two ``openssl dgst -sha256 FILE`` at once: **the floor**. lorahub must compute two SHA-256 chains (the
  whole file, and the tensor data for kohya/A1111/AutoV3), each sequential; everything else (BLAKE3,
  CRC32, AutoV1, ΔW sketch) should hide beside them;
* ``sha256sum FILE``: what users run today (coreutils, no SHA-NI);
* ``b3sum FILE``: if installed;
* ``lorahub fingerprint --no-cache --json FILE``: SHA-256 of the file, SHA-256 of
  the tensor data, AutoV1, CRC32 and BLAKE3 from one read;
* ``lorahub fingerprint --json FILE`` again with the cache filled.

Then (unless ``--skip-index``) folders of ``--index-gib`` GiB (default 1 and 4), each of ``--index-files``
kohya LoRAs a GiB (128 MiB each: random fp16 weights, 264 modules), and a cold ``lorahub index FOLDER`` (a
migrated empty SQLite registry, an empty fingerprint cache: every file is inspected, fingerprinted and
sketched) against the floor over the folder's bytes: two ``openssl dgst -sha256`` of every file at once.
From the two sizes it prints the index's fixed cost (interpreter start, imports, the database write: about
half a second, which the floor, two C programs, does not have) and its cost per further GiB.

Goals (issue 18, cold indexing speed): fingerprint <= 1.25 x the two parallel chains; cold index <= 1.3 x
the two chains over its bytes, judged at the largest folder (a library of adapters is many GiB; at 1 GiB
the fixed cost alone is over half the floor, and the 1 GiB ratio is printed for information); cached
re-run < 0.3 s. Prints the ratios (least of the rounds each), PASS or FAIL per goal and the load average
(the ratios mean something on an idle machine only); exits 1 when a goal fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import load_note, lorahub_cmd

GOAL_RATIO = 1.25
GOAL_INDEX_RATIO = 1.3
GOAL_CACHED_S = 0.3
TWO_CHAINS = "2 x openssl dgst -sha256 at once"


def make_file(path: Path, size: int) -> None:
    """A kohya-like header (64 F16 tensors) followed by ``size`` random bytes."""
    import numpy as np

    ntensors = 64
    per = size // ntensors
    entries = {}
    pos = 0
    for i in range(ntensors):
        n = per if i < ntensors - 1 else size - pos
        n -= n % 2
        entries[f"lora_unet_block_{i}.lora_down.weight"] = {"dtype": "F16", "shape": [n // 2], "data_offsets": [pos, pos + n]}
        pos += n
    header = json.dumps({"__metadata__": {"ss_network_module": "networks.lora"}, **entries}, separators=(",", ":"))
    raw = header.encode() + b" " * ((8 - len(header) % 8) % 8)
    rng = np.random.default_rng(1234)
    block = 64 << 20
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        left = pos
        while left:
            n = min(block, left)
            fh.write(rng.bytes(n))
            left -= n
    old = time.time() - 3600  # outside the cache's "modified just now" window
    os.utime(path, (old, old))


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(16 << 20)
        while fh.readinto(buf):
            pass


def make_folder(folder: Path, files: int, size: int) -> None:
    """``files`` kohya LoRAs of ``size`` bytes in all: 264 modules of 1280 x 1280 at the rank that fills them,
    random fp16 weights (normal, x0.01), alpha = rank."""
    import numpy as np

    from lorahub.adapters.writer import write_safetensors

    folder.mkdir()
    per_file = size // files
    modules = 264
    rank = max(1, per_file // (modules * 2 * 1280 * 2))
    rng = np.random.default_rng(18)
    for f in range(files):
        tensors = {}
        for m in range(modules):
            name = f"lora_unet_down_blocks_{m % 4}_attentions_{m // 4 % 2}_transformer_blocks_{m // 8}_attn1_to_q"
            for part, shape in (("lora_down", [rank, 1280]), ("lora_up", [1280, rank])):
                values = (rng.standard_normal(rank * 1280, dtype=np.float32) * 0.01).astype("<f2")
                tensors[f"{name}.{part}.weight"] = ("F16", shape, values.tobytes())
            tensors[f"{name}.alpha"] = ("F16", [], np.float16(rank).tobytes())
        write_safetensors(folder / f"lora{f:03d}.safetensors", tensors, {"ss_network_module": "networks.lora"})
    old = time.time() - 3600
    for p in folder.iterdir():
        os.utime(p, (old, old))


CPU: dict[str, list[float]] = {}


def copy_cost(path: Path, rounds: int = 2) -> tuple[float, float]:
    """System CPU seconds per GiB to read ``path`` (cached) in 1 MiB reads into a buffer 16 bytes past a page
    boundary (where ``bytearray(1 MiB)`` begins) and into a page-aligned one (``lorahub._readbuf``)."""
    import resource

    from lorahub._readbuf import read_buffer

    size = path.stat().st_size
    raw = read_buffer((1 << 20) + 4096)
    out = []
    for offset in (16, 0):
        view = memoryview(raw)[offset : offset + (1 << 20)]
        best = float("inf")
        for _ in range(rounds):
            s0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            with open(path, "rb", buffering=0) as fh:
                while fh.readinto(view):
                    pass
            best = min(best, resource.getrusage(resource.RUSAGE_SELF).ru_stime - s0)
        view.release()
        out.append(best / (size / (1 << 30)))
    return out[0], out[1]


def children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    t = os.times()
    return t.children_user + t.children_system


def parallel(cmds: list[list[str]]) -> float:
    """Wall time of ``cmds`` run at once (their CPU time is added to ``CPU[TWO_CHAINS]``)."""
    c0 = children_cpu()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"failed: {' '.join(p.args)}\n{err.decode(errors='replace')}")
    dt = time.perf_counter() - t0
    CPU.setdefault(TWO_CHAINS, []).append(children_cpu() - c0)
    return dt


def _time_index(tmp: Path, folder: Path, rounds: int, template: Path) -> dict[str, list[float]]:
    """Interleaved rounds of the floor over ``folder``, a cold ``lorahub index`` of it and of an empty folder:
    wall and CPU seconds of each run."""
    paths = sorted(str(p) for p in folder.iterdir())
    for p in paths:
        warm(Path(p))
    lh = lorahub_cmd()
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    # One untimed run first: it writes the bytecode of the modules the index imports.
    shutil.copy(template, tmp / "warm.sqlite")
    subprocess.run([*lh, "index", str(folder), "--database", f"sqlite:///{tmp / 'warm.sqlite'}"], capture_output=True,
                   env={**os.environ, "LORAHUB_HOME": str(tmp / f"home-warm-{folder.name}")}, check=True)
    out: dict[str, list[float]] = {k: [] for k in ("floor", "index", "start", "floor_cpu", "index_cpu", "start_cpu")}
    for r in range(rounds):
        c0 = children_cpu()
        out["floor"].append(parallel([["openssl", "dgst", "-sha256", *paths]] * 2))
        out["floor_cpu"].append(children_cpu() - c0)
        for what, target in (("start", empty), ("index", folder)):
            db = tmp / f"{what}-{r}.sqlite"
            shutil.copy(template, db)
            env = {**os.environ, "LORAHUB_HOME": str(tmp / f"home-{what}-{folder.name}-{r}")}
            c0 = children_cpu()
            t0 = time.perf_counter()
            res = subprocess.run([*lh, "index", str(target), "--database", f"sqlite:///{db}"], capture_output=True,
                                 text=True, env=env)
            out[what].append(time.perf_counter() - t0)
            out[f"{what}_cpu"].append(children_cpu() - c0)
            if res.returncode != 0:
                raise SystemExit(f"lorahub index failed:\n{res.stderr}")
            db.unlink()
    return out


def bench_index(tmp: Path, files_per_gib: int, sizes_gib: list[float], rounds: int) -> bool:
    """A cold index of a folder of each size against the floor over its bytes. The goal is judged at the
    largest (a library: its bytes dominate); each size's ratio is printed, and from the two smallest the
    index's fixed cost (start-up, imports, the write) and its cost per further GiB."""
    from lorahub.registry.catalogue import Registry

    template = tmp / "template.sqlite"
    reg = Registry(f"sqlite:///{template}")
    reg.migrate()
    reg.close()
    runs: dict[float, dict[str, list[float]]] = {}
    ok = True
    for gib in sorted(sizes_gib):
        files = max(1, round(files_per_gib * gib))
        folder = tmp / f"folder-{gib:g}gib"
        t0 = time.perf_counter()
        make_folder(folder, files, int(gib * (1 << 30)))
        total = sum(p.stat().st_size for p in folder.iterdir())
        print(f"\nindex: {files} kohya LoRAs, {total:,} bytes, made in {time.perf_counter() - t0:.1f} s")
        r = runs[gib] = _time_index(tmp, folder, rounds, template)
        check = Registry(f"sqlite:///{tmp / f'check-{gib:g}.sqlite'}")
        check.migrate()
        os.environ["LORAHUB_HOME"] = str(tmp / f"home-check-{gib:g}")
        summary = check.index_paths([folder])
        with check.reading() as raw:
            sketched = raw.all("SELECT count(*) FROM adapter_sketches")[0][0]
        check.close()
        assert summary.added == files and sketched == files, (summary, sketched)
        ratio = min(r["index"]) / min(r["floor"])
        judged = gib == max(sizes_gib)
        verdict = ("PASS" if ratio <= GOAL_INDEX_RATIO else "FAIL") if judged else "info"
        ok = ok and (ratio <= GOAL_INDEX_RATIO or not judged)
        print(f"{TWO_CHAINS} over the folder: best {min(r['floor']):.3f} s (runs {', '.join(f'{x:.2f}' for x in r['floor'])})")
        print(f"lorahub index (cold, every file fingerprinted and sketched): best {min(r['index']):.3f} s "
              f"(runs {', '.join(f'{x:.2f}' for x in r['index'])})")
        print(f"lorahub index of an empty folder (start-up, no write): best {min(r['start']):.3f} s")
        print(f"index / two SHA-256 chains, {gib:g} GiB = {ratio:.2f}  (goal <= {GOAL_INDEX_RATIO}, judged at "
              f"{max(sizes_gib):g} GiB)  {verdict}  [{load_note(busy_above=0.5)}]")
        ci, cf, cs = min(r["index_cpu"]), min(r["floor_cpu"]), min(r["start_cpu"])
        print(f"CPU time (least of {rounds}): index {ci:.2f} s, two chains {cf:.2f} s: ratio {ci / cf:.2f}; "
              f"empty-folder start-up {cs:.2f} s  (info: what a busy machine changes least; on two idle cores the "
              "index's wall time is about its CPU time / 2, the two chains' about theirs / 2)")
        shutil.rmtree(folder, ignore_errors=True)
    if len(runs) >= 2:
        (a, ra), (b, rb) = sorted(runs.items())[:2]
        per_index = (min(rb["index"]) - min(ra["index"])) / (b - a)
        per_floor = (min(rb["floor"]) - min(ra["floor"])) / (b - a)
        fixed = min(ra["index"]) - a * per_index
        print(f"\nper further GiB: index {per_index:.3f} s, two chains {per_floor:.3f} s: ratio "
              f"{per_index / per_floor:.2f}; the index's fixed cost (start-up, imports, the write) {fixed:.2f} s  "
              f"(info: from the {a:g} and {b:g} GiB folders)")
    return ok


def timed(cmd: list[str], name: str = "") -> tuple[float, str]:
    c0 = children_cpu()
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    CPU.setdefault(name, []).append(children_cpu() - c0)
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr}")
    return dt, res.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0, help="size of the tensor data (default 1)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is reported")
    ap.add_argument("--dir", type=Path, default=None, help="where to create the file (default: a temp folder)")
    ap.add_argument("--index-files", type=int, default=8, help="adapters per GiB in the indexed folders (default 8)")
    ap.add_argument("--index-gib", default="1,4",
                    help="sizes of the indexed folders, GiB (default 1,4; the goal is judged at the largest)")
    ap.add_argument("--skip-index", action="store_true", help="time the fingerprint only")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lorahub-bench-", dir=args.dir))
    home = tmp / "home"
    os.environ["LORAHUB_HOME"] = str(home)
    os.environ.pop("LORAHUB_DEBUG", None)
    # Time lorahub as installed: with its bytecode cached (an editable checkout under PYTHONDONTWRITEBYTECODE
    # would compile every module of every run from source).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        path = tmp / "bench.safetensors"
        size = int(args.size_gib * (1 << 30))
        t0 = time.perf_counter()
        make_file(path, size)
        print(f"file: {path} ({path.stat().st_size:,} bytes, random data, made in {time.perf_counter() - t0:.1f} s)")
        warm(path)
        print(f"before: {load_note(busy_above=0.5)}")

        lh = lorahub_cmd()
        tools: dict[str, list[str]] = {}
        if shutil.which("openssl"):
            tools["openssl dgst -sha256"] = ["openssl", "dgst", "-sha256", str(path)]
        else:
            print("openssl not found: ratios against it are skipped")
        if shutil.which("sha256sum"):
            tools["sha256sum"] = ["sha256sum", str(path)]
        if shutil.which("b3sum"):
            tools["b3sum"] = ["b3sum", str(path)]
        tools["lorahub fingerprint --no-cache"] = [*lh, "fingerprint", "--no-cache", "--json", str(path)]

        # Correctness first (and the cache fill for the cached runs).
        _, out = timed([*lh, "fingerprint", "--json", str(path)])
        rec = json.loads(out)[0]
        if "openssl dgst -sha256" in tools:
            _, ssl = timed(tools["openssl dgst -sha256"])
            assert ssl.strip().endswith(rec["sha256"]), (ssl, rec["sha256"])
        assert rec["tensor_sha256"] and rec["autov1"] and rec["blake3"] and rec["crc32"], rec
        tools["lorahub fingerprint (cached)"] = [*lh, "fingerprint", "--json", str(path)]

        times: dict[str, list[float]] = {name: [] for name in tools}
        if "openssl dgst -sha256" in tools:
            times[TWO_CHAINS] = []
        for _ in range(args.rounds):
            for name, cmd in tools.items():
                dt, out = timed(cmd, name)
                if name == "lorahub fingerprint (cached)":
                    assert json.loads(out)[0]["cached"] is True
                times[name].append(dt)
                if name == "openssl dgst -sha256":
                    times[TWO_CHAINS].append(parallel([cmd, cmd]))

        best = {name: min(v) for name, v in times.items()}
        print()
        print(f"{'command':<34} {'best s':>8} {'median s':>9}  {'GB/s':>6}")
        for name, v in times.items():
            rate = "" if "cached" in name else f"{size / best[name] / 1e9:6.2f}"
            print(f"{name:<34} {best[name]:8.3f} {statistics.median(v):9.3f}  {rate:>6}")
        print()

        failed = False
        fp = best["lorahub fingerprint --no-cache"]
        if "openssl dgst -sha256" in best:
            ssl = best["openssl dgst -sha256"]
            two = best[TWO_CHAINS]
            ratio = fp / two
            ok = ratio <= GOAL_RATIO
            failed |= not ok
            print(f"fingerprint / two SHA-256 chains  = {ratio:.2f}  (goal <= {GOAL_RATIO})  {'PASS' if ok else 'FAIL'}")
            print(f"fingerprint / openssl sha256      = {fp / ssl:.2f}  (info: one chain; issue 2's goal was 1.5)")
            print(f"two chains / one chain            = {two / ssl:.2f}  (info: 1.0 when the two run on two idle cores)")
            fp_cpu, two_cpu = min(CPU["lorahub fingerprint --no-cache"]), min(CPU[TWO_CHAINS])
            print(f"CPU time: fingerprint {fp_cpu:.2f} s, two chains {two_cpu:.2f} s: ratio {fp_cpu / two_cpu:.2f}  "
                  "(info: what a busy machine changes least; on two idle cores the wall ratio is about this)")
            if "sha256sum" in best:
                print(f"sha256sum / openssl sha256        = {best['sha256sum'] / ssl:.2f}  (info: coreutils, no SHA-NI)")
        if "sha256sum" in best:
            print(f"fingerprint / sha256sum           = {fp / best['sha256sum']:.2f}  (info: all five hashes vs one)")
        if "b3sum" in best:
            print(f"fingerprint / b3sum               = {fp / best['b3sum']:.2f}  (info)")
        cached = best["lorahub fingerprint (cached)"]
        ok = cached < GOAL_CACHED_S
        failed |= not ok
        print(f"cached re-run, whole process      = {cached:.3f} s  (goal < {GOAL_CACHED_S} s)  {'PASS' if ok else 'FAIL'}")
        slow, fast = copy_cost(path)
        print(f"copy out of the page cache, 1 MiB reads: {slow:.2f} s of system CPU per GiB into a buffer 16 bytes "
              f"past a page, {fast:.2f} s into a page-aligned one  (info: lorahub reads into page-aligned buffers)")
        print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}, {load_note(busy_above=0.5)}")
        if not args.skip_index and "openssl dgst -sha256" in tools:
            failed |= not bench_index(tmp, args.index_files, [float(x) for x in args.index_gib.split(",")], args.rounds)
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
