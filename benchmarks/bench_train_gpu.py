#!/usr/bin/env python
"""Benchmark: LoRA training of an SD 1.5-size pipeline on one GPU: peak memory and steps per second.

    python benchmarks/bench_train_gpu.py [--steps 200] [--resolution 512] [--batch-size 1] [--rank 4]
                                         [--mixed-precision fp16] [--no-gradient-checkpointing] [--smoke]

Self-contained and offline: it builds Stable Diffusion 1.5's UNet, VAE and CLIP text encoder at
their real sizes with random weights (``benchmarks/sd15_arch.py``; memory and speed do not
depend on the values), saves them as a diffusers folder in fp16, writes 8 generated 512x512
training images with captions, and trains with lorahub's trainer (the code ``lorahub train``
runs): rank 4 on to_q/to_k/to_v/to_out.0, batch 1, fp16 mixed precision and gradient
checkpointing by default, cached latents, a final preview.

Reported: the card's name; ``torch.cuda.max_memory_allocated`` over the whole run (model,
latent caching, training, preview) and over the training steps alone (after the first step);
steps per second over the steps after a warm-up tenth; the wall time of each phase. Goal
(issue 3): peak GPU memory at most 6 GB (6 x 1024^3 bytes) with fp16 and gradient
checkpointing. The figures are also written to ``benchmarks/out/bench_train_gpu.json``.
About 2-3 minutes on an H100 with the defaults (building and saving the 2 GB pipeline
included).

``--smoke`` runs the same path on the CPU with a tiny stand-in of the same block layout
(64x64, 3 steps, no mixed precision) to check the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchkit import gpu_run_start, report_training, steps_per_second, train_random_base, training_figures  # noqa: E402

GOAL_BYTES = 6 * 1024**3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="fp16")
    ap.add_argument("--no-gradient-checkpointing", dest="gc", action="store_false")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, measures nothing")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.resolution, args.mixed_precision = min(args.steps, 3), 64, "no"

    started = gpu_run_start(args.smoke, "bench-train-gpu-")
    if started is None:
        return 2
    device, card, work = started
    phases: dict[str, float] = {}
    try:
        import torch
        from sd15_arch import save_pipeline

        t = time.perf_counter()
        base = save_pipeline(work / "sd15-random", tiny=args.smoke, device=device, dtype="float16")
        phases["build_and_save_pipeline"] = time.perf_counter() - t
        marks: dict[int, float] = {}
        peaks = {"before_step_2": 0, "training_steps": 0}

        def on_step(step: int, _loss: float) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
                if step == 1:  # model, latent caching and the first step
                    peaks["before_step_2"] = torch.cuda.max_memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                else:  # steps 2.. (the counter runs from the reset)
                    peaks["training_steps"] = torch.cuda.max_memory_allocated()
            marks[step] = time.perf_counter()

        result = train_random_base(work, base, device=device, resolution=args.resolution, on_step=on_step,
                                   phases=phases, rank=args.rank, steps=args.steps, batch_size=args.batch_size,
                                   mixed_precision=args.mixed_precision, gradient_checkpointing=args.gc)
        overall = 0
        if device == "cuda":
            torch.cuda.synchronize()
            # after the run the counter also covers the final preview
            overall = max(peaks["before_step_2"], torch.cuda.max_memory_allocated())

        figures = {
            "card": card,
            "torch": torch.__version__,
            "steps": args.steps,
            "resolution": args.resolution,
            "batch_size": args.batch_size,
            "rank": args.rank,
            "mixed_precision": args.mixed_precision,
            "gradient_checkpointing": args.gc,
            "peak_gpu_bytes": overall if device == "cuda" else None,
            "peak_gpu_bytes_before_step_2": peaks["before_step_2"] if device == "cuda" else None,
            "peak_gpu_bytes_training_steps": peaks["training_steps"] if device == "cuda" else None,
            **training_figures(result, steps_per_second(marks, args.steps), phases),
        }
        print()
        print(f"card: {card}")
        arch = "tiny stand-in with SD 1.5's block layout" if args.smoke else "SD 1.5 architecture"
        print(f"{arch} (random weights), {args.resolution}x{args.resolution}, batch {args.batch_size}, "
              f"rank {args.rank}, mixed precision {args.mixed_precision}, gradient checkpointing {args.gc}, "
              f"{args.steps} steps")
        if device == "cuda":
            gib = 1024**3
            ok = figures["peak_gpu_bytes"] <= GOAL_BYTES
            print(f"- peak GPU memory (whole run): {figures['peak_gpu_bytes'] / gib:.2f} GiB "
                  f"(goal <= 6 GiB): {'PASS' if ok else 'FAIL'}")
            print(f"- peak GPU memory: loading + latent caching + step 1 {peaks['before_step_2'] / gib:.2f} GiB, "
                  f"steps 2..{args.steps} {peaks['training_steps'] / gib:.2f} GiB")
        else:
            ok = True
            print("- smoke run on the CPU: the script works; no GPU figures")
        report_training(figures, result, "bench_train_gpu_smoke.json" if args.smoke else "bench_train_gpu.json")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
