#!/usr/bin/env python
"""Benchmark: hot-swapping, weights and blending on one loaded pipeline (lorahub.pipeline.live).

    python benchmarks/bench_pipeline.py [--family sd1|sdxl|flux|sd3] [--rounds 10] [--steps 2] [--threads 1] [--swaps 10]
                                        [--device cpu] [--inductor] [--no-compile] [--text-encoders]

On the embedded base model (``--family sdxl``: the embedded SDXL base,
``StableDiffusionXLPipeline``; ``flux``: the embedded Flux.1-dev base, ``FluxPipeline``;
``sd3``: the embedded SD 3.5 base), in one process, with its own temporary ``LORAHUB_HOME``
and synthetic adapters (UNet/transformer attention LoRAs, ranks 2-16, different alphas; on
SDXL, Flux and SD3 every other one in the kohya layout: kohya's SDXL names, Flux's and SD3's
fused q/k/v written by ``lorahub convert``; ``--text-encoders``: with CLIP text-encoder parts
too, both encoders on SDXL and SD3, ranks capped at 12 on Flux/SD3 whose tiny CLIPs are 12 wide):

* hot-swap of an adapter in place (``LivePipeline.swap``: UNet part through
  ``load_lora_adapter(..., hotswap=True)``, exact verification, weights re-applied)
  against unload + load of the same adapter (``remove(unload=True)`` + ``add``),
  median of ``--rounds``; goal: ratio <= 0.3. Both paths include lorahub's checks;
  prepared files are cached, so the first (cold) load of a file is reported apart.
  Plain diffusers on a second pipeline (``load_lora_weights(hotswap=True)`` against
  ``delete_adapters`` + ``load_lora_weights``) is reported for reference.
* weight change (``set_weight``), median (reported; no goal).
* per-image time with 0, 2 and 4 active adapters (rank-16 slots), median; the
  overheads of 2 and 4 adapters against none are reported (no goal).
* under ``torch.compile`` of the UNet (``eager`` backend, which counts
  recompilations on CPU cheaply; ``--inductor`` adds an inductor run): frames
  compiled across ``--swaps`` swaps of adapters with ranks up to the target rank
  (16), one image after each swap and a weight change, measured with
  ``torch._dynamo.utils.counters["frames"]["total"]``; goal: 0 recompilations.

Prints the load average and flags a busy machine; prints PASS/FAIL per goal and
exits 1 when a goal fails.
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

from benchkit import load_note

GOAL_SWAP_RATIO = 0.3
GOAL_RECOMPILES = 0
TARGET_RANK = 16
RANKS = [(4, 4), (8, 16), (16, 4), (2, 2), (12, 6), (6, 12), (16, 16), (4, 1), (8, 8), (10, 5), (16, 32)]


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=["sd1", "sdxl", "flux", "sd3"], default="sd1", help="which embedded base")
    ap.add_argument("--text-encoders", action="store_true", help="adapters with text-encoder parts too")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--inductor", action="store_true", help="also compile with inductor (slow on CPU)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile part")
    args = ap.parse_args()

    print(load_note())
    home = Path(tempfile.mkdtemp(prefix="lorahub-bench-pipeline-"))
    os.environ["LORAHUB_HOME"] = str(home)
    failures: list[str] = []
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}")
        from lorahub.base.embedded import ensure_embedded
        from lorahub.base.resolve import load_pipeline
        from lorahub.base.synthetic import make_adapter
        from lorahub.pipeline.live import LivePipeline, quiet

        base = ensure_embedded(family=args.family)
        mmdit = args.family in ("flux", "sd3")
        files = []
        for i, (r, a) in enumerate(RANKS):
            kohya = args.family != "sd1" and i % 2 == 1
            path = home / f"r{r}a{a}-{i}.safetensors"
            rank = min(r, 12) if mmdit and args.text_encoders else r
            made = make_adapter(path.with_suffix(".d.safetensors") if mmdit and kohya else path, base=base,
                                rank=rank, alpha=a, seed=100 + i, text_encoder=args.text_encoders,
                                fmt="kohya" if kohya and not mmdit else "diffusers")
            if mmdit and kohya:  # Flux/SD3 kohya files: fused q/k/v, written by lorahub's exporter
                from lorahub.pipeline.convert import convert

                made = Path(convert(made, path, format="kohya", dtype="float32").path)
            files.append(made)
        print(f"base: {args.family} ({base.name}); adapters: {'transformer' if mmdit else 'UNet'} attention"
              + (" + text encoder(s)" if args.text_encoders else ""))

        # ---------------------------------------------------------------- hot-swap vs unload + load
        t = time.perf_counter()
        live = LivePipeline(base, target_rank=TARGET_RANK, device=args.device)
        print(f"base loaded in {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        live.add("x", files[0])
        cold = time.perf_counter() - t
        live.render("warm up", steps=args.steps)
        for f in files[1:4]:  # warm the prepared-file cache for both paths alike
            live.swap("x", f)
        swaps, reloads = [], []
        for i in range(args.rounds):
            f = files[1 + i % 3]
            t = time.perf_counter()
            live.swap("x", f)
            swaps.append(time.perf_counter() - t)
            t = time.perf_counter()
            live.remove("x", unload=True)
            live.add("x", f)
            reloads.append(time.perf_counter() - t)
        ratio = statistics.median(swaps) / statistics.median(reloads)

        p_swaps, p_reloads = [], []
        if not args.text_encoders:  # diffusers refuses hotswap=True for text encoders (the pitfall LivePipeline avoids)
            plain = load_pipeline(base, device=args.device)
            with quiet():
                plain.enable_lora_hotswap(target_rank=TARGET_RANK)
                plain.load_lora_weights(str(files[0]), adapter_name="plain")
            # diffusers' kohya Flux converter assumes FLUX.1's real widths (3072): on the tiny bases the plain
            # reference swaps between the diffusers-layout files only
            plain_files = [files[2], files[4], files[6]] if mmdit else files[1:4]
            for i in range(args.rounds):
                f = str(plain_files[i % 3])
                with quiet():
                    t = time.perf_counter()
                    plain.load_lora_weights(f, adapter_name="plain", hotswap=True)
                    p_swaps.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    plain.delete_adapters("plain")
                    plain.load_lora_weights(f, adapter_name="plain")
                    p_reloads.append(time.perf_counter() - t)
            del plain

        # ---------------------------------------------------------------- weights
        weights = []
        for i in range(args.rounds):
            t = time.perf_counter()
            live.set_weight("x", 0.1 + 0.05 * i)
            weights.append(time.perf_counter() - t)

        # ---------------------------------------------------------------- per-image overhead
        for i, f in enumerate(files[4:7]):
            live.add(f"y{i}", f)

        def images(active: list[str]) -> float:
            for ad in live.adapters:
                live.enable(ad.name, ad.name in active)
            live.set_weights({n: 0.5 for n in active})
            live.render("warm", steps=args.steps)
            out = []
            for r in range(args.rounds):
                out.append(live.render("a lighthouse", seed=r, steps=args.steps).seconds)
            return statistics.median(out)

        t0 = images([])
        t2 = images(["x", "y0"])
        t4 = images(["x", "y0", "y1", "y2"])
        stats = live.summary()["stats"]
        live.close()

        print()
        print(f"first load of a file (read, check, convert, load, verify): {cold * 1000:.1f} ms")
        print(f"hot-swap (LivePipeline.swap), median of {args.rounds}:        {median_ms(swaps):8.1f} ms")
        print(f"unload + load (remove + add), median of {args.rounds}:        {median_ms(reloads):8.1f} ms")
        ok = ratio <= GOAL_SWAP_RATIO
        print(f"  hot-swap / unload+load = {ratio:.2f} (goal <= {GOAL_SWAP_RATIO}): {'PASS' if ok else 'FAIL'}")
        if not ok:
            failures.append("swap ratio")
        if p_swaps:
            print(f"plain diffusers: hotswap=True {median_ms(p_swaps):.1f} ms, delete + load "
                  f"{median_ms(p_reloads):.1f} ms (ratio {statistics.median(p_swaps) / statistics.median(p_reloads):.2f})")
        else:
            print("plain diffusers: refuses hotswap=True for text encoders (no reference)")
        print(f"weight change (set_weight), median:                 {median_ms(weights):8.2f} ms")
        print(f"image {args.steps} steps 64x64: no adapter {t0 * 1000:.1f} ms, 2 adapters {t2 * 1000:.1f} ms "
              f"({t2 / t0:.2f}x), 4 adapters {t4 * 1000:.1f} ms ({t4 / t0:.2f}x)")
        print(f"base loads: {stats['base_loads']}, hot-swaps {stats['hotswaps']}, renders {stats['renders']}")

        # ---------------------------------------------------------------- torch.compile
        if not args.no_compile:
            backends = ["eager"] + (["inductor"] if args.inductor else [])
            for backend in backends:
                import torch._dynamo
                from torch._dynamo.utils import counters

                torch._dynamo.reset()
                lc = LivePipeline(base, target_rank=TARGET_RANK, device=args.device, compile=backend)
                lc.add("p", files[0])
                lc.add("q", files[1], weight=0.5)
                t = time.perf_counter()
                lc.render("compile", steps=args.steps)
                first = time.perf_counter() - t
                frames0 = int(counters["frames"]["total"])
                swap_t, img_t = [], []
                ranks = []
                for i in range(args.swaps):
                    f = files[2 + i % (len(files) - 2)]
                    ranks.append(RANKS[files.index(f)][0])
                    t = time.perf_counter()
                    lc.swap("p" if i % 2 == 0 else "q", f)
                    swap_t.append(time.perf_counter() - t)
                    lc.set_weight("q", 0.2 + 0.05 * i)
                    img_t.append(lc.render("after swap", seed=i, steps=args.steps).seconds)
                recompiles = int(counters["frames"]["total"]) - frames0
                assert recompiles == lc.recompilations()
                ok = recompiles <= GOAL_RECOMPILES and lc.stats["reloads"] == 0
                print(f"torch.compile({backend}): first image {first:.1f} s; {args.swaps} swaps (ranks {ranks}, "
                      f"target {TARGET_RANK}) median {median_ms(swap_t):.1f} ms, image after swap median "
                      f"{median_ms(img_t):.1f} ms; recompilations {recompiles} (goal {GOAL_RECOMPILES}): "
                      f"{'PASS' if ok else 'FAIL'}")
                if not ok:
                    failures.append(f"recompilations ({backend})")
                lc.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("\nALL PASS" if not failures else f"\nFAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
