#!/usr/bin/env python
"""Benchmark: ``lorahub train`` against diffusers' own LoRA example, on the CPU; and the adapter size.

    python benchmarks/bench_train.py [--steps 60] [--short 10] [--rounds 2] [--threads 1] [--peer PATH]

The peer is ``examples/text_to_image/train_text_to_image_lora.py`` of huggingface/diffusers,
the script most users start from. It is not part of lorahub: the script looks for it in
``benchmarks/out/peer/`` (git-ignored) and, when it is not there, downloads it once from
GitHub (``--peer-url``). It needs ``datasets`` (in the dev extra) and ``torchvision``; the
torchvision wheel on the index fails to import beside torch 2.13+cpu, so the peer runs through
``benchmarks/peer_shim/run_peer.py``, which hands the script's own ``from torchvision import
transforms`` a PIL + torch re-implementation of the few transforms it uses
(``benchmarks/peer_shim/torchvision``) and hides it from everything else.

Both tools train the same thing: the embedded tiny SD 1.x base (built into a temporary
folder, passed to both as a diffusers folder), the same 8 generated 64x64 images with
captions (an imagefolder with ``metadata.jsonl``), rank 4 on to_q/to_k/to_v/to_out.0,
resolution 64 (center crop), batch 1, lr 1e-4 constant, seed 42, fp32, no checkpoints,
one process, ``--threads`` torch threads (OMP_NUM_THREADS) each.

Each tool runs ``--short`` and ``--steps`` steps as separate processes, ``--rounds`` times,
interleaved. Steps per second is the training loop's own rate, best of the rounds of the
``--steps`` run: lorahub reports it (``--json``); the peer's is taken from its training
progress bar (``peer_shim/run_peer.py`` times it without changing the script). As a
cross-check, (steps - short) / (wall(steps) - wall(short)) from the best wall times is printed
too (start-up, loading and saving cancel out; noisy on a shared machine). Peak RSS is the
maximum resident set of the ``--steps`` run (``getrusage`` of the child, exact), best of the
rounds.

Goals: lorahub steps/s >= 1.0 x the peer's; lorahub peak RSS <= 1.0 x the peer's.

Then the adapter size: the LoRA shapes of SD 1.5's real UNet (rank 4, attention
projections; built on the meta device, no download) filled with random values and written
by lorahub's exporter in fp16 with its full metadata. Goal: at most 2 MB (2,000,000 bytes).

Exits 1 when a goal fails. Prints the load average: timings on shared vCPUs vary, rerun
when the machine is idle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchkit import load_average, load_note

HERE = Path(__file__).resolve().parent
PEER_DIR = HERE / "out" / "peer"
PEER_NAME = "train_text_to_image_lora.py"
#: The copy the figures in README.md were measured with (huggingface/diffusers main, mid 2025,
#: check_min_version("0.37.0.dev0")); another version still runs, with a note.
PEER_SHA256 = "2ff60880c2e2b744234dc5d499a80095f049522314e87d32980e5741a3f995dd"
PEER_URL = "https://raw.githubusercontent.com/huggingface/diffusers/main/examples/text_to_image/" + PEER_NAME

#: Runs a command, then prints its wall time and the peak RSS of the finished child (KiB).
WRAPPER = r"""
import json, resource, subprocess, sys, time
cmd = json.loads(sys.argv[1])
t = time.perf_counter()
p = subprocess.run(cmd, stdout=open(sys.argv[2] + ".out", "wb"), stderr=open(sys.argv[2], "wb"))
wall = time.perf_counter() - t
print(json.dumps({"rc": p.returncode, "wall": wall, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""

SIZE_GOAL = 2_000_000


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(cmd), str(log)], env=env, capture_output=True,
                         text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out["rc"] != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"command failed (exit {out['rc']}): {' '.join(cmd)}\n{tail}")
    return out


def get_peer(path: str | None, url: str, name: str = PEER_NAME, sha256: str = PEER_SHA256) -> Path:
    """The peer script: ``path``, else ``benchmarks/out/peer/<name>``, else downloaded there once from ``url``."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise SystemExit(f"--peer {p}: no such file")
        return p
    p = PEER_DIR / name
    if not p.is_file():
        print(f"fetching the peer script from {url} into {PEER_DIR} (git-ignored)")
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - fixed https URL
                data = r.read()
        except OSError as exc:
            raise SystemExit(
                f"cannot download the peer script ({exc}); put diffusers' {url.split('/main/', 1)[-1]} "
                f"at {p} or pass --peer PATH"
            ) from None
        PEER_DIR.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    note = "the copy the README figures were measured with" if digest == sha256 else "another version than the README's"
    print(f"peer: {p} (sha256 {digest[:12]}..., {note})")
    return p


def prepare(work: Path, threads: int, family: str = "sd1", resolution: int = 64) -> tuple[Path, Path, dict[str, str]]:
    """The environment of both tools, the embedded ``family`` base and 8 captioned ``resolution`` images in ``work``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORAHUB_", "ACCELERATE_"))}
    env.update({
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LORAHUB_HOME": str(work / "home"),
        "HF_HOME": str(work / "hf"), "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
        "CUDA_VISIBLE_DEVICES": "",
    })
    base, data = work / "base", work / "data"
    code = (
        "import json\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "from lorahub.base.embedded import ensure_embedded\n"
        "from lorahub.training.demo_data import demo_image, demo_caption\n"
        f"ensure_embedded(path={str(base)!r}, family={family!r})\n"
        f"d = Path({str(data)!r}); d.mkdir(parents=True)\n"
        "rows = []\n"
        "for i in range(8):\n"
        f"    Image.fromarray(demo_image(i, {resolution})).save(d / f'img{{i}}.png')\n"
        "    rows.append(json.dumps({'file_name': f'img{i}.png', 'text': demo_caption(i)}))\n"
        "(d / 'metadata.jsonl').write_text('\\n'.join(rows) + '\\n')\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return base, data, env


def commands(tool: str, steps: int, base: Path, data: Path, out: Path, peer: Path, resolution: int = 64) -> list[str]:
    res = str(resolution)
    if tool == "peer":
        return [
            sys.executable, str(HERE / "peer_shim" / "run_peer.py"), str(peer), "--pretrained_model_name_or_path",
            str(base), "--train_data_dir", str(data), "--resolution", res, "--center_crop", "--train_batch_size", "1",
            "--max_train_steps", str(steps), "--learning_rate", "1e-4", "--lr_scheduler", "constant",
            "--lr_warmup_steps", "0", "--rank", "4", "--seed", "42", "--output_dir", str(out), "--report_to", "all",
            "--checkpointing_steps", "1000000", "--mixed_precision", "no", "--dataloader_num_workers", "0",
        ]
    return [
        sys.executable, "-m", "lorahub.cli", "train", str(data), "--out", str(out), "--base", str(base),
        "--steps", str(steps), "--rank", "4", "--alpha", "4", "--resolution", res, "--no-buckets",
        "--batch-size", "1", "--lr", "1e-4", "--lr-scheduler", "constant", "--seed", "42",
        "--mixed-precision", "no", "--no-progress", "--json",
    ]


def loop_speed(tool: str, log: Path, timing: Path) -> float:
    """Steps per second of the training loop alone, as each tool measures it.

    lorahub: ``steps_per_second`` of ``--json`` (first step to last). The peer: its
    ``desc="Steps"`` progress bar, timed by ``peer_shim/run_peer.py`` (creation, just before
    the loop, to the last step).
    """
    if tool == "lorahub":
        return float(json.loads(Path(str(log) + ".out").read_text())["steps_per_second"])
    doc = json.loads(timing.read_text())
    return doc["steps"] / doc["seconds"]


def bench_speed(args: argparse.Namespace, work: Path, peer_name: str = PEER_NAME, peer_sha256: str = PEER_SHA256,
                family: str = "sd1", resolution: int = 64, make_command: Callable[..., list[str]] | None = None,
                ) -> tuple[dict, bool]:
    """Both tools, ``--short`` and ``--steps`` steps, ``--rounds`` times interleaved, on the embedded ``family``
    base at ``resolution``; the peer is ``peer_name``; ``make_command`` (default :func:`commands`) builds each
    tool's command line. The figures and whether both goals pass."""
    make_command = make_command or commands
    peer = get_peer(args.peer, args.peer_url, peer_name, peer_sha256)
    base, data, env = prepare(work, args.threads, family, resolution)
    best: dict[tuple[str, int], dict] = {}
    n = 0
    for rnd in range(args.rounds):
        for steps in (args.short, args.steps):
            for tool in ("peer", "lorahub"):
                n += 1
                out = work / f"run{n}-{tool}-{steps}"
                timing = work / f"run{n}.timing.json"
                run_env = dict(env, HF_DATASETS_CACHE=str(work / f"dscache{n}"), BENCH_PEER_TIMING=str(timing))
                r = run_measured(make_command(tool, steps, base, data, out, peer, resolution), run_env,
                                 work / f"run{n}.log")
                r["loop_steps_per_s"] = loop_speed(tool, work / f"run{n}.log", timing)
                weights = out / "pytorch_lora_weights.safetensors"
                if not weights.is_file():
                    raise SystemExit(f"{tool} wrote no {weights}")
                print(f"  round {rnd + 1}: {tool:<8} {steps:>4} steps  {r['wall']:7.2f} s  "
                      f"loop {r['loop_steps_per_s']:6.2f} steps/s  peak RSS {r['maxrss_kib'] / 1024:7.1f} MiB",
                      flush=True)
                key = (tool, steps)
                prev = best.get(key)
                best[key] = {
                    "wall": min(r["wall"], prev["wall"]) if prev else r["wall"],
                    "maxrss_kib": min(r["maxrss_kib"], prev["maxrss_kib"]) if prev else r["maxrss_kib"],
                    "loop_steps_per_s": max(r["loop_steps_per_s"], prev["loop_steps_per_s"]) if prev else r["loop_steps_per_s"],
                }
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(work / f"dscache{n}", ignore_errors=True)
    figures: dict = {}
    for tool in ("peer", "lorahub"):
        dt = best[(tool, args.steps)]["wall"] - best[(tool, args.short)]["wall"]
        figures[tool] = {
            "loop_steps_per_s": best[(tool, args.steps)]["loop_steps_per_s"],
            "steps_per_s_from_walls": (args.steps - args.short) / dt if dt > 0 else float("nan"),
            "wall_short": best[(tool, args.short)]["wall"],
            "wall_long": best[(tool, args.steps)]["wall"],
            "peak_rss_mib": best[(tool, args.steps)]["maxrss_kib"] / 1024,
        }
    speed = figures["lorahub"]["loop_steps_per_s"] / figures["peer"]["loop_steps_per_s"]
    walls = figures["lorahub"]["steps_per_s_from_walls"] / figures["peer"]["steps_per_s_from_walls"]
    rss = figures["lorahub"]["peak_rss_mib"] / figures["peer"]["peak_rss_mib"]
    print()
    print(f"| tool | wall {args.short} steps (s) | wall {args.steps} steps (s) | steps/s, loop | "
          f"steps/s, from walls | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for tool, label in (("peer", f"diffusers {peer_name}"), ("lorahub", "lorahub train")):
        f = figures[tool]
        walls_txt = "n/a (noise)" if f["steps_per_s_from_walls"] != f["steps_per_s_from_walls"] else \
            f"{f['steps_per_s_from_walls']:.2f}"
        print(f"| {label} | {f['wall_short']:.2f} | {f['wall_long']:.2f} | {f['loop_steps_per_s']:.2f} | "
              f"{walls_txt} | {f['peak_rss_mib']:.0f} |")
    ok_speed, ok_rss = speed >= 1.0, rss <= 1.0
    print(f"- steps/s lorahub / peer = **{speed:.2f}** (training loops, best of {args.rounds}; goal >= 1.0): "
          f"{'PASS' if ok_speed else 'FAIL'}")
    print(f"- cross-check from wall times ((steps - short) / (wall difference)): {walls:.2f}")
    print(f"- peak RSS lorahub / peer = **{rss:.2f}** (goal <= 1.0): {'PASS' if ok_rss else 'FAIL'}")
    figures["ratios"] = {"speed": speed, "speed_from_walls": walls, "rss": rss}
    return figures, ok_speed and ok_rss


def bench_size(work: Path) -> tuple[dict, bool]:
    import torch

    sys.path.insert(0, str(HERE))
    from sd15_arch import lora_shapes

    from lorahub.training.export import diffusers_records, kohya_records, write_weights

    shapes = lora_shapes(["to_q", "to_k", "to_v", "to_out.0"], 4)
    g = torch.Generator().manual_seed(0)
    unet = {m: (torch.randn(a, generator=g) / 4, torch.randn(b, generator=g) / 4) for m, (a, b) in shapes.items()}
    params = sum(a.numel() + b.numel() for a, b in unet.values())
    md = {f"ss_filler_{i}": "x" * 40 for i in range(60)}  # about the size of lorahub's real ss_* block
    path = write_weights(work / "sd15_rank4.safetensors", diffusers_records(unet, {}, "fp16"), md)
    kpath = write_weights(work / "sd15_rank4_kohya.safetensors", kohya_records(unet, {}, 4.0, "fp16"), md)
    size, ksize = path.stat().st_size, kpath.stat().st_size
    ok = size <= SIZE_GOAL and ksize <= SIZE_GOAL
    print()
    print(f"adapter size, SD 1.5 UNet, rank 4, {len(unet)} attention modules, {params:,} parameters, fp16:")
    print(f"- diffusers file {size:,} bytes ({size / 1e6:.2f} MB), kohya file {ksize:,} bytes (goal <= 2 MB): "
          f"{'PASS' if ok else 'FAIL'}")
    return {"modules": len(unet), "parameters": params, "bytes": size, "kohya_bytes": ksize}, ok


def speed_arguments(doc: str, steps: int, short: int, peer_name: str, peer_url: str) -> argparse.ArgumentParser:
    """The options of a training speed benchmark against a peer script (``--steps`` .. ``--keep``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--short", type=int, default=short)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each tool (OMP_NUM_THREADS)")
    ap.add_argument("--peer", default=None, help=f"path of {peer_name} (default: benchmarks/out/peer/)")
    ap.add_argument("--peer-url", default=peer_url)
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    return ap


def parse_speed_arguments(ap: argparse.ArgumentParser) -> argparse.Namespace:
    args = ap.parse_args()
    if args.steps <= args.short:
        ap.error("--steps must be larger than --short")
    return args


def main() -> int:
    ap = speed_arguments(__doc__, 60, 10, PEER_NAME, PEER_URL)
    ap.add_argument("--size-only", action="store_true", help="only the adapter-size goal")
    args = parse_speed_arguments(ap)

    load = load_average()
    print(load_note())
    work = Path(tempfile.mkdtemp(prefix="bench-train-", dir=HERE / "out" if (HERE / "out").is_dir() else None))
    results: dict = {"load_average": load, "threads": args.threads}
    ok = True
    try:
        if not args.size_only:
            t = time.perf_counter()
            results["speed"], ok_speed = bench_speed(args, work)
            ok &= ok_speed
            print(f"(speed benchmark took {time.perf_counter() - t:.0f} s)")
        results["size"], ok_size = bench_size(work)
        ok &= ok_size
        (HERE / "out").mkdir(exist_ok=True)
        (HERE / "out" / "bench_train.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
