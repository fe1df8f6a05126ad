#!/usr/bin/env python
"""Benchmark: Flux.1-dev LoRA training on one GPU, with the frozen transformer quantized and without: peak memory
and steps per second.

    python benchmarks/bench_train_flux_gpu.py [--steps 20] [--resolution 1024] [--rank 16]
                                              [--quantize nf4|int8] [--only quantized|full] [--smoke]

Self-contained and offline: it builds FLUX.1-dev's transformer (11.9 B parameters), VAE, CLIP-L and T5-XXL
encoders at their real sizes with random weights, made directly on the GPU in bf16 (``benchmarks/
flux_arch.py``; memory and speed do not depend on the values), saves them as a diffusers folder, writes 8
generated 1024x1024 training images with captions, and trains with lorahub's trainer (the code ``lorahub
train`` runs): a rank 16 LoRA on the transformer's attention (``--targets attention``), batch 1, bf16 mixed
precision, gradient checkpointing, cached latents; the captions never change, so T5 and CLIP encode them
(and the preview prompt) once and are freed before the transformer reaches the GPU; 8-bit AdamW when
bitsandbytes is installed. Two runs: the frozen transformer quantized (``--quantize``: nf4 through
bitsandbytes by default, or int8 through torchao) and in bf16. Each ends with a 20-step 1024x1024 preview.

Reported per run: ``torch.cuda.max_memory_allocated`` over loading, caching and step 1, over steps 2..N and
over the preview and packaging; steps per second after a warm-up tenth; the phases' wall times. Goal
(issue 19): peak GPU memory of training with the quantized base at most 16 GiB (ai-toolkit documents 24 GB
for Flux LoRA training); the bf16 figure is reported beside it. Figures go to
``benchmarks/out/bench_train_flux_gpu.json``.

``--smoke`` runs the same path on the CPU with the embedded tiny Flux configuration (64x64, 3 steps, no
mixed precision, int8 through torchao when it is installed, else no quantization) to check the script
itself without a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchkit import gpu_run_start, report_training, steps_per_second, train_random_base, training_figures  # noqa: E402

GOAL_BYTES = 16 * 1024**3


def one_run(work: Path, base: Path, device: str, args: argparse.Namespace, quantize: str | None,
            settings: dict) -> dict:
    import torch

    phases: dict[str, float] = {}
    marks: dict[int, float] = {}
    peaks = {"to_step_1": 0, "steps": 0, "preview": 0}

    def on_step(step: int, _loss: float) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
            if step == 1:
                peaks["to_step_1"] = torch.cuda.max_memory_allocated()
            else:
                peaks["steps"] = max(peaks["steps"], torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        marks[step] = time.perf_counter()

    run = work / f"run-{quantize or 'full'}"
    run.mkdir()
    result = train_random_base(run, base, device=device, resolution=args.resolution, on_step=on_step, phases=phases,
                               rank=args.rank, steps=args.steps, batch_size=1, quantize=quantize,
                               targets="attention", **settings)
    if device == "cuda":
        torch.cuda.synchronize()
        peaks["preview"] = torch.cuda.max_memory_allocated()
        torch.cuda.empty_cache()
    cuda = device == "cuda"
    training_peak = max(peaks["to_step_1"], peaks["steps"])
    figures = {
        "quantize": quantize,
        "peak_gpu_bytes_training": training_peak if cuda else None,
        "peak_gpu_bytes_to_step_1": peaks["to_step_1"] if cuda else None,
        "peak_gpu_bytes_steps_2_on": peaks["steps"] if cuda else None,
        "peak_gpu_bytes_preview": peaks["preview"] if cuda else None,
        **training_figures(result, steps_per_second(marks, args.steps), phases),
    }
    label = f"quantized ({quantize})" if quantize else "bf16 base"
    if cuda:
        gib = 1024**3
        print(f"- {label}: peak GPU memory, training {training_peak / gib:.2f} GiB (to step 1 "
              f"{peaks['to_step_1'] / gib:.2f}, steps 2..{args.steps} {peaks['steps'] / gib:.2f}); preview "
              f"{peaks['preview'] / gib:.2f} GiB (not in the goal)")
    report_training(figures, result, f"bench_train_flux_gpu_{quantize or 'full'}{'_smoke' if args.smoke else ''}.json")
    shutil.rmtree(run, ignore_errors=True)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--quantize", choices=["nf4", "int8"], default="nf4")
    ap.add_argument("--only", choices=["quantized", "full"], default=None, help="run one of the two configurations")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, measures nothing")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.resolution = min(args.steps, 3), 64
        args.quantize = "int8" if importlib.util.find_spec("torchao") else None

    started = gpu_run_start(args.smoke, "bench-train-flux-gpu-")
    if started is None:
        return 2
    device, card, work = started
    try:
        import torch
        from flux_arch import save_pipeline, transformer_parameters

        settings = {"mixed_precision": "no" if args.smoke else "bf16", "gradient_checkpointing": True,
                    "cache_latents": True,
                    "optimizer": "adamw8bit" if device == "cuda" and importlib.util.find_spec("bitsandbytes")
                    else "adamw"}
        t = time.perf_counter()
        base = save_pipeline(work / "flux-random", tiny=args.smoke, device=device, dtype="bfloat16")
        built = time.perf_counter() - t
        size = "the embedded tiny stand-in" if args.smoke else f"{transformer_parameters() / 1e9:.1f} B parameters"
        print(f"card: {card}; FLUX.1-dev transformer: {size}; built and saved in {built:.0f} s")
        print(f"{args.resolution}x{args.resolution}, batch 1, rank {args.rank} on the attention, {args.steps} steps, "
              f"settings {settings}")
        runs = []
        if args.only in (None, "quantized"):
            runs.append(one_run(work, base, device, args, args.quantize, settings))
        if args.only in (None, "full"):
            runs.append(one_run(work, base, device, args, None, settings))
        ok = True
        if device == "cuda":
            quantized = next((r for r in runs if r["quantize"]), None)
            if quantized is not None:
                peak = quantized["peak_gpu_bytes_training"]
                ok = peak <= GOAL_BYTES
                print(f"- goal: peak GPU memory with the {args.quantize} base {peak / 1024**3:.2f} GiB <= 16 GiB: "
                      f"{'PASS' if ok else 'FAIL'}")
        else:
            print("- smoke run on the CPU: the script works; no GPU figures")
        import json

        (HERE / "out").mkdir(exist_ok=True)
        (HERE / "out" / f"bench_train_flux_gpu{'_smoke' if args.smoke else ''}.json").write_text(json.dumps(
            {"card": card, "torch": torch.__version__, "steps": args.steps, "resolution": args.resolution,
             "rank": args.rank, "settings": settings, "runs": runs}, indent=2, default=str) + "\n")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
