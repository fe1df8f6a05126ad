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

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_train import bench_speed, parse_speed_arguments, speed_arguments
from benchkit import load_average, load_note

HERE = Path(__file__).resolve().parent
PEER_NAME = "train_text_to_image_lora_sdxl.py"
#: The copy the README figures were measured with (huggingface/diffusers main of 2026-08-23, 58eb52c,
#: check_min_version("0.40.0.dev0")); another version still runs, with a note.
PEER_SHA256 = "077e947b54a02c47fdf304fb547990bed6d31398884c2519a221d987bd0585f1"
PEER_URL = "https://raw.githubusercontent.com/huggingface/diffusers/main/examples/text_to_image/" + PEER_NAME
RESOLUTION = 128


def main() -> int:
    args = parse_speed_arguments(speed_arguments(__doc__, 40, 8, PEER_NAME, PEER_URL))
    load = load_average()
    print(load_note())
    (HERE / "out").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-train-sdxl-", dir=HERE / "out"))
    try:
        t = time.perf_counter()
        figures, ok = bench_speed(args, work, PEER_NAME, PEER_SHA256, family="sdxl", resolution=RESOLUTION)
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
