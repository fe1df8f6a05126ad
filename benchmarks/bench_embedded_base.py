#!/usr/bin/env python
"""Benchmark: the embedded base model is cheap enough for tests, the demo and CPU training.

    python benchmarks/bench_embedded_base.py [--rounds 10] [--steps 2]

In one process (torch imported once, as in a test session), with its own
temporary ``LORAHUB_HOME``:

* import of torch + diffusers + transformers (reported, no goal);
* build + save of the embedded model (goal < 3 s);
* ``load_pipeline`` of it (goal < 2 s);
* first 64x64 generation, ``--steps`` steps (warm-up; goal < 6 s);
* steady 64x64 generation, best of ``--rounds`` (goal < 0.5 s), and the ratio
  first / steady;
* ``load_lora_weights`` of a synthetic rank-4 adapter, best of ``--rounds``
  (goal < 0.5 s), and steady generation with it (goal < 0.5 s).

Prints the load average and flags a busy machine (timings on 2 shared vCPUs vary
a lot; rerun when idle). Prints PASS/FAIL per goal; exits 1 when a goal fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchkit import load_note

GOALS = {"build": 3.0, "load": 2.0, "first": 6.0, "steady": 0.5, "lora_load": 0.5, "steady_lora": 0.5}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()

    print(load_note())
    home = Path(tempfile.mkdtemp(prefix="lorahub-bench-"))
    os.environ["LORAHUB_HOME"] = str(home)
    try:
        t = time.perf_counter()
        import diffusers
        import torch
        import transformers  # noqa: F401
        from diffusers import StableDiffusionPipeline  # noqa: F401 - the lazy import costs seconds

        print(f"import torch/diffusers/transformers: {time.perf_counter() - t:.2f} s (torch threads: {torch.get_num_threads()})")
        diffusers.utils.logging.set_verbosity_error()

        from lorahub.base import ensure_embedded, load_pipeline, make_adapter

        times: dict[str, float] = {}
        t = time.perf_counter()
        path = ensure_embedded()
        times["build"] = time.perf_counter() - t
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

        t = time.perf_counter()
        pipe = load_pipeline(None)
        times["load"] = time.perf_counter() - t

        def draw() -> float:
            gen = torch.Generator("cpu").manual_seed(0)
            t0 = time.perf_counter()
            pipe("a photo of mystyle", num_inference_steps=args.steps, height=64, width=64, generator=gen,
                 output_type="np")
            return time.perf_counter() - t0

        times["first"] = draw()
        times["steady"] = min(draw() for _ in range(args.rounds))

        adapter = make_adapter(home / "syn.safetensors", rank=4)
        loads = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            pipe.load_lora_weights(str(adapter), adapter_name="syn")
            loads.append(time.perf_counter() - t)
            pipe.delete_adapters("syn")
        times["lora_load"] = min(loads)
        pipe.load_lora_weights(str(adapter), adapter_name="syn")
        draw()
        times["steady_lora"] = min(draw() for _ in range(args.rounds))
    finally:
        shutil.rmtree(home, ignore_errors=True)

    print(f"embedded model folder: {size / 1e6:.1f} MB")
    failed = False
    print(f"{'step':<12} {'seconds':>8} {'goal':>6}")
    for name, goal in GOALS.items():
        ok = times[name] < goal
        failed |= not ok
        print(f"{name:<12} {times[name]:>8.3f} {goal:>6.1f}  {'PASS' if ok else 'FAIL'}")
    print(f"first / steady = {times['first'] / times['steady']:.1f}; steady with LoRA / without = "
          f"{times['steady_lora'] / times['steady']:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
