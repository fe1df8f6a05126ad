#!/usr/bin/env python
"""Benchmark: the start of an exported Space that indexes 1,000 LoRA repos of a local `lorahub serve`.

    python benchmarks/bench_space_start.py [--repos 1000] [--rounds 2]

Starts `lorahub serve` on a loopback port (temp data folder, SQLite) and fills it with N repos of one author,
each holding a small kohya LoRA (the same file: its upload is deduplicated; every repo's header is read
all the same) and a card. Then, per round, in a fresh process state, what `app.py` does before it listens:
`lorahub.cli.spacehost.space_blocks(demo_adapters=True)` with `LORAHUB_SPACE_INDEX=endpoint=URL, author=bench`
(the registry opened, the demo adapters of the embedded base written and indexed, every repo listed and
its header read with range requests, the page built). Round 1 starts on an empty registry (a new Space);
later rounds on the registry the first one left (a restart: unchanged repos are not read again).
Goal (issue 23): a start with 1,000 repos indexed under a minute on CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import load_note, start_writable_server

GOAL_S = 60.0

CHILD = r"""
import os, sys, time
t = time.perf_counter()
from lorahub.cli.spacehost import space_blocks
blocks = space_blocks(demo_adapters=True, say=lambda m: print(m, file=sys.stderr))
took = time.perf_counter() - t
from lorahub.base.synthetic import DEMO_ADAPTERS
n = blocks.lorahub_host.registry.count() - len(DEMO_ADAPTERS)
blocks.lorahub_host.close()
print(f"{took:.2f} {n}")
"""


def fill(url: str, token: str, n: int, work: Path) -> float:
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import CommitOperationAdd

    from lorahub.base import make_adapter
    from lorahub.hub.endpoint import hf_api

    adapter = make_adapter(work / "bench_style.safetensors", rank=4, seed=3, fmt="kohya", trigger="benchword")
    api = hf_api(url, token=token)
    started = time.perf_counter()

    def one(i: int) -> None:
        rid = f"bench/style-{i:04d}"
        api.create_repo(rid, exist_ok=True)
        card = f"---\nlicense: mit\ntags: [lora, bench]\ninstance_prompt: benchword{i}\n---\n# style {i}\n"
        api.create_commit(rid, operations=[CommitOperationAdd("style.safetensors", str(adapter)),
                                           CommitOperationAdd("README.md", card.encode())], commit_message="add")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repos", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lorahub-bench-space-"))
    proc = None
    try:
        os.environ["LORAHUB_HOME"] = str(work / "home")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        proc, url, token = start_writable_server(work / "serve")
        print(f"filling {url} with {args.repos} repos...", file=sys.stderr)
        print(f"fill: {fill(url, token, args.repos, work):.1f} s (not part of the figure)")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LORAHUB_DATABASE", "LORAHUB_SPACE"))}
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        env.update(LORAHUB_HOME=str(work / "space-home"), LORAHUB_SPACE_INDEX=f"endpoint={url}, author=bench",
                   HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        # the Space's own home starts with the embedded base already built (as the test session's does):
        # building it is the same for any Space and measured by bench_embedded_base.py
        from lorahub.base.embedded import embedded_path, ensure_embedded

        target = embedded_path(Path(env["LORAHUB_HOME"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(ensure_embedded(), target_is_directory=True)
        worst = 0.0
        for r in range(args.rounds):
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            took, found = out.stdout.split()
            kind = "first start (empty registry)" if r == 0 else "restart"
            print(f"round {r + 1}, {kind}: {float(took):.1f} s to the page, {found} of {args.repos} repos searchable")
            if int(found) != args.repos:
                print("FAIL: not every repo was indexed")
                return 1
            worst = max(worst, float(took))
        print(load_note())
        ok = worst < GOAL_S
        print(f"{'PASS' if ok else 'FAIL'}: slowest start {worst:.1f} s (goal < {GOAL_S:.0f} s with {args.repos} repos)")
        return 0 if ok else 1
    finally:
        if proc is not None:
            from lorahub.cli.serving import stop_serve

            stop_serve(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
