#!/usr/bin/env python
"""Benchmark: the stock client uploading a 100 MB adapter and a re-labelled copy to `lorahub serve`,
through Xet (hf_xet) against the classic LFS path.

    python benchmarks/bench_xet.py [--size-mb 100]

Starts `lorahub serve` on a loopback port (temp data folder, SQLite), writes a valid ~100 MB kohya LoRA and a
re-labelled copy (same tensors, another metadata header), and uploads each with `HfApi.upload_file` in a fresh
client process: once with `HF_HUB_DISABLE_XET=1` (LFS: every byte is sent), once with hf_xet (the second upload from
the same client, whose local Xet cache knows the first). Prints seconds, the bytes each Xet upload sent (the xorbs the
server received for the first time, from its database), the new chunk bytes the server stored, and what each upload
added on the server's disk (blob files + chunk files; the Xet uploads go to a second server, so the LFS blobs are not
counted for them). Goals (issue 22): the re-labelled copy through Xet sends, stores and adds on disk < 2 % of the file
(a Xet file lives only as its chunks), in at most 1.5x the time LFS takes on loopback (where sending costs nothing:
the time is the client chunking and hashing the file and the server verifying it and checking the adapter; the
script also prints what sending the bytes would add at 100 Mbit/s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_push import make_adapter, start_server  # noqa: E402

UPLOAD = """
import os, sys
from huggingface_hub import HfApi
api = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=os.environ["HF_TOKEN"])
api.create_repo(sys.argv[2])
api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo="pytorch_lora_weights.safetensors", repo_id=sys.argv[2])
"""


def upload(url: str, token: str, path: Path, repo: str, *, xet: bool, cache: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=url, HF_TOKEN=token, HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HOME=str(cache / "hf-home"), HF_XET_CACHE=str(cache / "xet"))
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", UPLOAD, str(path), repo], env=env, check=True)
    return time.perf_counter() - t0


def relabel(src: Path, dst: Path, **metadata: str) -> Path:
    """A copy of safetensors ``src`` whose metadata header says more (tensor bytes unchanged)."""
    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = {**header.get("__metadata__", {}), **metadata}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])
    return dst


def xet_figures(data: Path) -> tuple[int, int, int]:
    """(bytes of xorbs received, bytes of chunk files stored, bytes on disk: blob files + chunk files) so far."""
    import sqlite3

    with sqlite3.connect(data / "lorahub-server.sqlite") as db:
        received = db.execute("SELECT COALESCE(SUM(received_bytes), 0) FROM hub_xet_xorbs").fetchone()[0]
    stored = sum(p.stat().st_size for p in (data / "xet" / "chunks").glob("*/*"))
    blobs = sum(p.stat().st_size for p in (data / "blobs" / "sha256").glob("*/*/*"))
    return received, stored, stored + blobs


def timed_get(url: str, token: str, headers: dict[str, str] | None = None, rounds: int = 3) -> tuple[float, int]:
    """(seconds, bytes) of a plain GET, the body streamed and dropped: the best of ``rounds``."""
    import httpx

    best, n = float("inf"), 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        n = 0
        with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}", **(headers or {})}, timeout=300) as r:
            r.raise_for_status()
            for block in r.iter_bytes(1 << 20):
                n += len(block)
        best = min(best, time.perf_counter() - t0)
    return best, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=100)
    args = ap.parse_args()
    try:
        import hf_xet  # noqa: F401
    except ImportError:
        print("hf_xet is not installed: nothing to compare")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-xet-"))
    os.environ["LORAHUB_HOME"] = str(work / "home")
    data = work / "server"
    data2 = work / "server-xet"
    proc, url, token = start_server(data)
    proc2 = None
    try:
        proc2, url2, token2 = start_server(data2)
        e0 = xet_figures(data2)[2]
        first = make_adapter(work / "a" / "pytorch_lora_weights.safetensors", args.size_mb)
        copy = relabel(first, work / "b" / "pytorch_lora_weights.safetensors", ss_output_name="relabelled",
                       **{"modelspec.title": "A re-labelled copy"})
        size = first.stat().st_size
        print(f"server {url}; adapter {size / 1e6:.1f} MB")

        d0 = xet_figures(data)[2]
        lfs_a = upload(url, token, first, "bench/lfs-a", xet=False, cache=work / "client-lfs")
        d1 = xet_figures(data)[2]
        lfs_b = upload(url, token, copy, "bench/lfs-b", xet=False, cache=work / "client-lfs")
        r0, s0, d2 = xet_figures(data)
        # The Xet uploads go to a second server (same setup): the blobs the LFS uploads stored are
        # not there, so what Xet stores on disk is measured alone.
        xet_a = upload(url2, token2, first, "bench/xet-a", xet=True, cache=work / "client-xet")
        r1, s1, e1 = xet_figures(data2)
        xet_b = upload(url2, token2, copy, "bench/xet-b", xet=True, cache=work / "client-xet")
        r2, s2, e2 = xet_figures(data2)

        rows = [
            ("LFS, adapter", lfs_a, size, None, d1 - d0),
            ("LFS, re-labelled copy", lfs_b, size, None, d2 - d1),
            ("Xet, adapter", xet_a, r1, s1, e1 - e0),
            ("Xet, re-labelled copy", xet_b, r2 - r1, s2 - s1, e2 - e1),
        ]
        # Plain GETs (curl, browsers), best of 3: the LFS blob file, and the Xet file served from its
        # chunks; and the header range read of `lorahub index --hub` (64 KiB).
        path = "resolve/main/pytorch_lora_weights.safetensors"
        gets = {
            "GET LFS blob": timed_get(f"{url}/bench/lfs-a/{path}", token),
            "GET Xet file (from chunks)": timed_get(f"{url2}/bench/xet-a/{path}", token2),
            "Range 64 KiB, LFS blob": timed_get(f"{url}/bench/lfs-a/{path}", token, {"Range": "bytes=0-65535"}),
            "Range 64 KiB, Xet file": timed_get(f"{url2}/bench/xet-a/{path}", token2, {"Range": "bytes=0-65535"}),
        }
        for name, secs, sent, stored, disk in rows:
            extra = f", {stored / 1e6:8.3f} MB new chunks stored" if stored is not None else ""
            print(f"{name:<24} {secs:7.2f} s  {sent / 1e6:8.3f} MB sent{extra}, {disk / 1e6:8.3f} MB more on disk")
        for name, (secs, n) in gets.items():
            print(f"{name:<28} {secs:7.3f} s  {n / 1e6:8.3f} MB" + (f"  ({n / secs / 1e6:.0f} MB/s)" if n > 1e6 else ""))
        ok = (r2 - r1) < 0.02 * size and (s2 - s1) < 0.02 * size and (e2 - e1) < 0.02 * size and xet_b <= 1.5 * lfs_b
        wire = 100e6 / 8
        print(f"at 100 Mbit/s the re-labelled copy would take about {lfs_b + size / wire:.1f} s by LFS, "
              f"{xet_b + (r2 - r1) / wire:.1f} s by Xet")
        print(json.dumps({"size": size, "lfs_s": [lfs_a, lfs_b], "xet_s": [xet_a, xet_b], "xet_sent": [r1, r2 - r1],
                          "xet_stored": [s1, s2 - s1], "lfs_disk": [d1 - d0, d2 - d1], "xet_disk": [e1 - e0, e2 - e1],
                          "get_s": {k: v[0] for k, v in gets.items()}}))
        print("re-labelled copy via Xet: < 2 % of the file sent, stored and added on disk, <= 1.5x LFS time on loopback: "
              f"{'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        from lorahub.cli.serving import stop_serve

        stop_serve(proc)
        if proc2 is not None:
            stop_serve(proc2)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
