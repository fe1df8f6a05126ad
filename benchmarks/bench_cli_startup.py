#!/usr/bin/env python
"""Benchmark: whole-process start-up of the CLI, and ``inspect`` reading the header only.

    python benchmarks/bench_cli_startup.py [--rounds 10] [--dir DIR]

Times, best of ``--rounds`` interleaved runs of whole processes:

* ``lorahub --help`` and ``lorahub inspect SMALL --json``: goal < 0.5 s each
  (no torch import; ``python -c pass`` is printed as the floor);
* ``lorahub inspect BIG --json`` (2 GiB) against ``lorahub inspect SMALL --json``
  (2 MB), both with the same 200-module kohya header: goal ratio <= 1.1, i.e.
  the time does not depend on the data size. BIG is a sparse file (the header is
  written, the data region is a hole): reading its 2 GiB would still cost
  seconds, so a ratio near 1 shows that no data is read.

Skips the inspect parts (with a note) when ``lorahub inspect`` is not available.
Prints PASS/FAIL per goal; exits 1 when a goal fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import load_note, lorahub_cmd

GOAL_START_S = 0.5
GOAL_INSPECT_RATIO = 1.1
MODULES = 200


def make_lora(path: Path, dim: int, rank: int, *, sparse: bool) -> int:
    """A kohya-style LoRA header of MODULES F16 modules; returns the file size."""
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
            left = pos
            while left:
                n = min(left, 1 << 20)
                fh.write(bytes(n))
                left -= n
    return len(head) + pos


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
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lorahub-bench-", dir=args.dir))
    os.environ["LORAHUB_HOME"] = str(tmp / "home")
    os.environ.pop("LORAHUB_DEBUG", None)
    lh = lorahub_cmd()
    try:
        small, big = tmp / "small.safetensors", tmp / "big.safetensors"
        small_size = make_lora(small, 320, 8, sparse=False)
        big_size = make_lora(big, 4096, 655, sparse=True)
        print(f"small: {small_size:,} bytes; big: {big_size:,} bytes (sparse); {MODULES} modules each")
        print(f"before: {load_note(busy_above=0.5)}")

        cmds: dict[str, list[str]] = {"python -c pass": [sys.executable, "-c", "pass"]}
        failed = False
        try:
            timed([*lh, "--help"])
            cmds["lorahub --help"] = [*lh, "--help"]
        except RuntimeError as exc:
            failed = True
            print(f"FAIL lorahub --help: {str(exc).splitlines()[-1]}")
        inspect_ok = True
        try:
            timed([*lh, "inspect", str(small), "--json"])
            timed([*lh, "inspect", str(big), "--json"])
        except RuntimeError as exc:
            inspect_ok = False
            print(f"SKIP inspect (not ready?): {str(exc).splitlines()[-1]}")
        if inspect_ok:
            cmds["lorahub inspect SMALL --json"] = [*lh, "inspect", str(small), "--json"]
            cmds["lorahub inspect BIG --json"] = [*lh, "inspect", str(big), "--json"]

        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                times[name].append(timed(cmd))
        best = {k: min(v) for k, v in times.items()}
        print()
        print(f"{'command':<30} {'best s':>8} {'median s':>9}")
        for name, v in times.items():
            print(f"{name:<30} {best[name]:8.3f} {statistics.median(v):9.3f}")
        print()

        for name in ("lorahub --help", "lorahub inspect SMALL --json"):
            if name in best:
                ok = best[name] < GOAL_START_S
                failed |= not ok
                print(f"{name:<30} = {best[name]:.3f} s  (goal < {GOAL_START_S} s)  {'PASS' if ok else 'FAIL'}")
        if inspect_ok:
            ratio = best["lorahub inspect BIG --json"] / best["lorahub inspect SMALL --json"]
            ok = ratio <= GOAL_INSPECT_RATIO
            failed |= not ok
            print(f"{'inspect 2 GiB / 2 MB':<30} = {ratio:.2f}  (goal <= {GOAL_INSPECT_RATIO})  {'PASS' if ok else 'FAIL'}")
        print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}, {load_note(busy_above=0.5)}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
