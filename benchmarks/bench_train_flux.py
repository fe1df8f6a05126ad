#!/usr/bin/env python
"""Benchmark: ``lorahub train`` on the embedded Flux.1 / SD 3.5 base against diffusers' own DreamBooth LoRA
scripts, on the CPU.

    python benchmarks/bench_train_flux.py [--family flux|sd3] [--steps 40] [--short 8] [--rounds 2]
                                          [--threads 1] [--peer PATH]

The peer is ``examples/dreambooth/train_dreambooth_lora_flux.py`` (``--family flux``) or
``train_dreambooth_lora_sd3.py`` (``--family sd3``) of huggingface/diffusers, run unchanged. It is not
part of lorahub: the script looks for it in ``benchmarks/out/peer/`` (git-ignored) and, when it is not
there, downloads it once from GitHub (``--peer-url``). Without network access, take it from a diffusers
clone: ``git -C diffusers show main:examples/dreambooth/train_dreambooth_lora_flux.py >
benchmarks/out/peer/train_dreambooth_lora_flux.py`` (the README figures: main of 2026-08-23, 58eb52c,
``check_min_version("0.40.0.dev0")``), or pass ``--peer PATH``. It runs through
``benchmarks/peer_shim/run_peer.py`` as ``bench_train_sdxl.py``'s peer does.

Both tools train the same thing: the embedded tiny base (``lorahub/embedded-flux-tiny`` or
``lorahub/embedded-sd3-tiny``, built into a temporary folder and passed to both as a diffusers folder), the
same 8 generated 64x64 images (the bases' native size) with captions (an imagefolder with
``metadata.jsonl``; the peer reads it with ``--dataset_name``/``--caption_column``), transformer only, rank 4
on the same attention modules (lorahub ``--targets attention``; the peer ``--lora_layers`` naming them),
resolution 64 (square centre crop), batch 1, lr 1e-4 constant, seed 42, fp32, T5 at each tool's default
length (Flux 512, SD3 77: the same), no checkpoints, one process, ``--threads`` torch threads each. Each
tool keeps its defaults otherwise: lorahub caches latents and the text encoders' outputs, frees the
encoders and writes a final preview; the peer encodes every batch with the VAE and the text encoders each
step (custom captions keep its encoders) and reloads the pipeline at the end.

Each tool runs ``--short`` and ``--steps`` steps as separate processes, ``--rounds`` times, interleaved.
Steps/s is each training loop's own rate, best of the rounds of the ``--steps`` run; peak RSS is the
maximum resident set of the ``--steps`` run, best of the rounds.

Goals (issue 19): lorahub steps/s >= 1.0 x the peer's; lorahub peak RSS <= 1.0 x the peer's. Exits 1
when a goal fails. Writes ``benchmarks/out/bench_train_<family>.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_train import HERE, bench_speed, parse_speed_arguments, speed_arguments
from benchkit import load_average, load_note

PEERS = {
    "flux": ("train_dreambooth_lora_flux.py",
             "1e7862bbfb16f2d5fa6f3424a93c2d8383ba4b5f1509c6265777e1eb84d070ef"),
    "sd3": ("train_dreambooth_lora_sd3.py",
            "74f4cfd22527673c10f4e7a7b2a2b117ef554a0190bfa5876210f7d365e393bb"),
}
URL = "https://raw.githubusercontent.com/huggingface/diffusers/main/examples/dreambooth/"
RESOLUTION = 64
#: lorahub's --targets attention, in the peer's --lora_layers spelling (peft matches name suffixes)
ATTENTION = {
    "flux": "attn.to_k,attn.to_q,attn.to_v,attn.to_out.0,attn.add_k_proj,attn.add_q_proj,attn.add_v_proj,"
            "attn.to_add_out",
    "sd3": "attn.to_k,attn.to_q,attn.to_v,attn.to_out.0,attn.add_k_proj,attn.add_q_proj,attn.add_v_proj,"
           "attn.to_add_out,attn2.to_k,attn2.to_q,attn2.to_v,attn2.to_out.0",
}


def command_builder(family: str):  # noqa: ANN201 - the bench_speed callback
    def commands(tool: str, steps: int, base: Path, data: Path, out: Path, peer: Path, resolution: int) -> list[str]:
        res = str(resolution)
        if tool == "peer":
            return [
                sys.executable, str(HERE / "peer_shim" / "run_peer.py"), str(peer), "--pretrained_model_name_or_path",
                str(base), "--dataset_name", str(data), "--caption_column", "text", "--instance_prompt", "lhstripes",
                "--resolution", res, "--center_crop", "--train_batch_size", "1", "--max_train_steps", str(steps),
                "--learning_rate", "1e-4", "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--rank", "4",
                "--lora_layers", ATTENTION[family], "--seed", "42", "--output_dir", str(out), "--report_to", "all",
                "--checkpointing_steps", "1000000", "--mixed_precision", "no", "--dataloader_num_workers", "0",
            ]
        return [
            sys.executable, "-m", "lorahub.cli", "train", str(data), "--out", str(out), "--base", str(base),
            "--steps", str(steps), "--rank", "4", "--alpha", "4", "--resolution", res, "--no-buckets",
            "--targets", "attention", "--batch-size", "1", "--lr", "1e-4", "--lr-scheduler", "constant",
            "--seed", "42", "--mixed-precision", "no", "--no-progress", "--json",
        ]

    return commands


def main() -> int:
    ap = speed_arguments(__doc__, 40, 8, "train_dreambooth_lora_<family>.py", "")
    ap.add_argument("--family", choices=sorted(PEERS), default="flux")
    args = parse_speed_arguments(ap)
    family = args.family
    name, sha = PEERS[family]
    args.peer_url = args.peer_url or URL + name
    load = load_average()
    print(load_note())
    (HERE / "out").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"bench-train-{family}-", dir=HERE / "out"))
    try:
        t = time.perf_counter()
        figures, ok = bench_speed(args, work, name, sha, family=family, resolution=RESOLUTION,
                                  make_command=command_builder(family))
        print(f"(took {time.perf_counter() - t:.0f} s)")
        figures.update(family=family, load_average=load, threads=args.threads, steps=args.steps, short=args.short,
                       rounds=args.rounds)
        (HERE / "out" / f"bench_train_{family}.json").write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
