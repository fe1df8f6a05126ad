#!/usr/bin/env python
"""Benchmark: ``lorahub train`` on the embedded SDXL base against diffusers' own SDXL LoRA example, on the CPU.

    python benchmarks/bench_train_sdxl.py [--steps 40] [--short 8] [--rounds 2] [--threads 1] [--peer PATH]

The peer is ``examples/text_to_image/train_text_to_image_lora_sdxl.py`` of huggingface/diffusers, run
unchanged. It is not part of lorahub: the script looks for it in ``benchmarks/out/peer/`` (git-ignored)
and, when it is not there, downloads it once from GitHub (``--peer-url``). Like ``bench_train.py`` it runs
through ``benchmarks/peer_shim/run_peer.py`` (a PIL + torch stand-in for the few torchvision transforms
the script imports, handed to the script's own imports only; the launcher also times its ``Steps``
progress bar).

Both tools train the same thing: the embedded tiny SDXL base (``lorahub/embedded-sdxl-tiny``, built into a
temporary folder and passed to both as a diffusers folder), the same 8 generated 128x128 images (the
base's native size) with captions (an imagefolder with ``metadata.jsonl``), UNet only, rank 4 on
to_q/to_k/to_v/to_out.0, resolution 128 (square centre crop), batch 1, lr 1e-4 constant, seed 42, fp32,
no checkpoints, one process, ``--threads`` torch threads each. Each tool keeps its defaults otherwise:
lorahub caches latents and text-encoder outputs and writes a final preview; the peer encodes every
batch with the VAE and both text encoders each step and reloads the pipeline at the end.

Each tool runs ``--short`` and ``--steps`` steps as separate processes, ``--rounds`` times, interleaved.
Steps/s is each training loop's own rate, best of the rounds of the ``--steps`` run; (steps - short) /
(wall(steps) - wall(short)) is printed as a cross-check. Peak RSS is the maximum resident set of the
``--steps`` run (``getrusage`` of the child), best of the rounds.

Goals (issue 16): lorahub steps/s >= 1.0 x the peer's; lorahub peak RSS <= 1.0 x the peer's. Exits 1
when a goal fails. Writes ``benchmarks/out/bench_train_sdxl.json``.
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

from bench_train import get_peer as _get_peer
from bench_train import loop_speed, run_measured
from benchkit import load_average, load_note

HERE = Path(__file__).resolve().parent
PEER_NAME = "train_text_to_image_lora_sdxl.py"
#: The copy the README figures were measured with (huggingface/diffusers main of 2026-08-23, 58eb52c,
#: check_min_version("0.40.0.dev0")); another version still runs, with a note.
PEER_SHA256 = "077e947b54a02c47fdf304fb547990bed6d31398884c2519a221d987bd0585f1"
PEER_URL = "https://raw.githubusercontent.com/huggingface/diffusers/main/examples/text_to_image/" + PEER_NAME
RESOLUTION = 128


def prepare(work: Path, threads: int) -> tuple[Path, Path, dict[str, str]]:
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
        f"ensure_embedded(path={str(base)!r}, family='sdxl')\n"
        f"d = Path({str(data)!r}); d.mkdir(parents=True)\n"
        "rows = []\n"
        "for i in range(8):\n"
        f"    Image.fromarray(demo_image(i, {RESOLUTION})).save(d / f'img{{i}}.png')\n"
        "    rows.append(json.dumps({'file_name': f'img{i}.png', 'text': demo_caption(i)}))\n"
        "(d / 'metadata.jsonl').write_text('\\n'.join(rows) + '\\n')\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return base, data, env


def commands(tool: str, steps: int, base: Path, data: Path, out: Path, peer: Path) -> list[str]:
    res = str(RESOLUTION)
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


def bench(args: argparse.Namespace, work: Path) -> tuple[dict, bool]:
    peer = _get_peer(args.peer, args.peer_url, PEER_NAME, PEER_SHA256)
    base, data, env = prepare(work, args.threads)
    best: dict[tuple[str, int], dict] = {}
    n = 0
    for rnd in range(args.rounds):
        for steps in (args.short, args.steps):
            for tool in ("peer", "lorahub"):
                n += 1
                out = work / f"run{n}-{tool}-{steps}"
                timing = work / f"run{n}.timing.json"
                run_env = dict(env, HF_DATASETS_CACHE=str(work / f"dscache{n}"), BENCH_PEER_TIMING=str(timing))
                r = run_measured(commands(tool, steps, base, data, out, peer), run_env, work / f"run{n}.log")
                r["loop_steps_per_s"] = loop_speed(tool, work / f"run{n}.log", timing)
                if not (out / "pytorch_lora_weights.safetensors").is_file():
                    raise SystemExit(f"{tool} wrote no pytorch_lora_weights.safetensors in {out}")
                print(f"  round {rnd + 1}: {tool:<8} {steps:>4} steps  {r['wall']:7.2f} s  "
                      f"loop {r['loop_steps_per_s']:6.2f} steps/s  peak RSS {r['maxrss_kib'] / 1024:7.1f} MiB",
                      flush=True)
                key = (tool, steps)
                prev = best.get(key)
                best[key] = {
                    "wall": min(r["wall"], prev["wall"]) if prev else r["wall"],
                    "maxrss_kib": min(r["maxrss_kib"], prev["maxrss_kib"]) if prev else r["maxrss_kib"],
                    "loop_steps_per_s": max(r["loop_steps_per_s"], prev["loop_steps_per_s"]) if prev
                    else r["loop_steps_per_s"],
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
    for tool, label in (("peer", f"diffusers {PEER_NAME}"), ("lorahub", "lorahub train")):
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--short", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each tool (OMP_NUM_THREADS)")
    ap.add_argument("--peer", default=None, help=f"path of {PEER_NAME} (default: benchmarks/out/peer/)")
    ap.add_argument("--peer-url", default=PEER_URL)
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    if args.steps <= args.short:
        ap.error("--steps must be larger than --short")
    load = load_average()
    print(load_note())
    (HERE / "out").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-train-sdxl-", dir=HERE / "out"))
    try:
        t = time.perf_counter()
        figures, ok = bench(args, work)
        print(f"(took {time.perf_counter() - t:.0f} s)")
        figures.update(load_average=load, threads=args.threads, steps=args.steps, short=args.short,
                       rounds=args.rounds)
        (HERE / "out" / "bench_train_sdxl.json").write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
