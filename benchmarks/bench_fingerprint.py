#!/usr/bin/env python
"""Benchmark: ``lorahub fingerprint`` (all five hashes) against one SHA-256 chain.

    python benchmarks/bench_fingerprint.py [--size-gib 1] [--rounds 5] [--dir DIR]

Creates a safetensors file of random bytes (not zeros: no hasher gets an easy
ride) in a temporary folder, reads it once so that every tool reads from the
page cache, then times whole processes, best of ``--rounds`` interleaved rounds:

* ``openssl dgst -sha256 FILE``: one SHA-256 chain, the floor on this CPU;
* ``sha256sum FILE``: what users run today (coreutils, no SHA-NI);
* ``b3sum FILE``: if installed;
* ``lorahub fingerprint --no-cache --json FILE``: SHA-256 of the file, SHA-256 of
  the tensor data, AutoV1, CRC32 and BLAKE3 from one read;
* ``lorahub fingerprint --json FILE`` again with the cache filled.

Goals (issue section 7): fingerprint <= 1.5 x openssl; cached re-run < 0.3 s.
Prints PASS/FAIL per goal; exits 1 when a goal fails.
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

GOAL_RATIO = 1.5
GOAL_CACHED_S = 0.3


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


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr}")
    return dt, res.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0, help="size of the tensor data (default 1)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is reported")
    ap.add_argument("--dir", type=Path, default=None, help="where to create the file (default: a temp folder)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lorahub-bench-", dir=args.dir))
    home = tmp / "home"
    os.environ["LORAHUB_HOME"] = str(home)
    os.environ.pop("LORAHUB_DEBUG", None)
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
        for _ in range(args.rounds):
            for name, cmd in tools.items():
                dt, out = timed(cmd)
                if name == "lorahub fingerprint (cached)":
                    assert json.loads(out)[0]["cached"] is True
                times[name].append(dt)

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
            ratio = fp / ssl
            ok = ratio <= GOAL_RATIO
            failed |= not ok
            print(f"fingerprint / openssl sha256      = {ratio:.2f}  (goal <= {GOAL_RATIO})  {'PASS' if ok else 'FAIL'}")
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
        print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}, {load_note(busy_above=0.5)}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
