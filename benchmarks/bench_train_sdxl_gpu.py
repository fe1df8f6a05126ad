#!/usr/bin/env python
"""Benchmark: SDXL LoRA training on one GPU with lorahub's small-GPU settings: peak memory and steps per second.

    python benchmarks/bench_train_sdxl_gpu.py [--steps 60] [--resolution 1024] [--rank 8] [--smoke]

Self-contained and offline: it builds Stable Diffusion XL base 1.0's UNet, VAE and both text encoders
at their real sizes with random weights (``benchmarks/sdxl_arch.py``; memory and speed do not depend on
the values), saves them as a diffusers folder in the dtype the settings train in, writes 8 generated
1024x1024 training images with captions, and trains with lorahub's trainer (the code ``lorahub train``
runs) with the settings ``lorahub train --small-gpu`` picks
(``lorahub.training.config.small_gpu_settings``): bf16 mixed precision where the GPU has it (else fp16),
gradient checkpointing, cached latents, 8-bit AdamW only when bitsandbytes is installed; the captions
do not change, so the text-encoder outputs are cached too and the VAE and both text encoders leave the
GPU before the UNet arrives. The LoRA: rank 8 on the UNet's to_q/to_k/to_v/to_out.0, batch 1; a final
20-step 1024x1024 preview.

Reported: the card's name; ``torch.cuda.max_memory_allocated`` over loading, caching and step 1, over
steps 2..N, and over the final preview and packaging; steps per second after a warm-up tenth; the wall
time of each phase. Goal (issue 16): peak GPU memory of training (loading, caching and every step) at
most 8 GiB (8 x 1024^3 bytes), kohya's documented floor for SDXL LoRA. The preview is reported apart
(the modules that left the GPU come back for it). Figures also go to
``benchmarks/out/bench_train_sdxl_gpu.json``.

``--smoke`` runs the same path on the CPU with the embedded tiny SDXL configuration (128x128, 3 steps,
no mixed precision) to check the script itself without a GPU.
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

GOAL_BYTES = 8 * 1024**3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, measures nothing")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.resolution = min(args.steps, 3), 128

    started = gpu_run_start(args.smoke, "bench-train-sdxl-gpu-")
    if started is None:
        return 2
    device, card, work = started
    phases: dict[str, float] = {}
    try:
        import torch
        from sdxl_arch import save_pipeline

        from lorahub.training.config import small_gpu_settings

        settings = small_gpu_settings()
        if args.smoke:
            settings["mixed_precision"] = "no"  # a CPU has no fp16 autocast; the rest is the same path
        dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(settings["mixed_precision"], "float32")
        t = time.perf_counter()
        base = save_pipeline(work / "sdxl-random", tiny=args.smoke, device=device, dtype=dtype)
        phases["build_and_save_pipeline"] = time.perf_counter() - t
        marks: dict[int, float] = {}
        peaks = {"to_step_1": 0, "steps": 0, "preview": 0}

        def on_step(step: int, _loss: float) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
                if step == 1:  # loading, caching and the first step
                    peaks["to_step_1"] = torch.cuda.max_memory_allocated()
                else:
                    peaks["steps"] = max(peaks["steps"], torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            marks[step] = time.perf_counter()

        result = train_random_base(work, base, device=device, resolution=args.resolution, on_step=on_step,
                                   phases=phases, rank=args.rank, steps=args.steps, batch_size=1, **settings)
        if device == "cuda":
            torch.cuda.synchronize()
            peaks["preview"] = torch.cuda.max_memory_allocated()  # since the last step: preview and packaging
        training_peak = max(peaks["to_step_1"], peaks["steps"])

        cuda = device == "cuda"
        figures = {
            "card": card,
            "torch": torch.__version__,
            "steps": args.steps,
            "resolution": args.resolution,
            "rank": args.rank,
            "settings": settings,
            "peak_gpu_bytes_training": training_peak if cuda else None,
            "peak_gpu_bytes_to_step_1": peaks["to_step_1"] if cuda else None,
            "peak_gpu_bytes_steps_2_on": peaks["steps"] if cuda else None,
            "peak_gpu_bytes_preview": peaks["preview"] if cuda else None,
            **training_figures(result, steps_per_second(marks, args.steps), phases),
        }
        print()
        print(f"card: {card}")
        arch = "tiny stand-in with SDXL's block layout" if args.smoke else "SDXL base 1.0 architecture"
        print(f"{arch} (random weights), {args.resolution}x{args.resolution}, batch 1, rank {args.rank}, UNet only, "
              f"{args.steps} steps, settings {settings}")
        if cuda:
            gib = 1024**3
            ok = training_peak <= GOAL_BYTES
            print(f"- peak GPU memory, training (loading, caching, every step): {training_peak / gib:.2f} GiB "
                  f"(goal <= 8 GiB): {'PASS' if ok else 'FAIL'}")
            print(f"- peak GPU memory: to step 1 {peaks['to_step_1'] / gib:.2f} GiB, steps 2..{args.steps} "
                  f"{peaks['steps'] / gib:.2f} GiB, final preview {peaks['preview'] / gib:.2f} GiB (not in the goal)")
        else:
            ok = True
            print("- smoke run on the CPU: the script works; no GPU figures")
        report_training(figures, result,
                        "bench_train_sdxl_gpu_smoke.json" if args.smoke else "bench_train_sdxl_gpu.json")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
