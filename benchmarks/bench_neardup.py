"""ΔW near-duplicates (issue 18): what sketching adds to `lorahub index`, and `dupes --near` at 100k.

    python benchmarks/bench_neardup.py [--families 3] [--rounds 3] [--sketches 100000] [--groups 500]
        [--skip-index] [--skip-near] [--trained]

Index: the generated near-duplicate set of the tests (tests/neardupkit.py: full kohya SD 1.5 LoRAs, rank 8,
264 modules, 9.5 MB each; ``--families`` originals with their 8 variants) indexed cold (new SQLite
registry, empty fingerprint cache, files in the page cache) with sketching turned off and on, ``--rounds``
times each, alternating; the medians of the wall times are compared (the goal), and the least CPU times of
the process (all threads; what a busy machine changes least) are printed beside them. Also printed: the sketch and the fingerprint of one file
alone, per file. Goal: sketching adds <= 20% to the index time.

Near: ``--sketches`` adapters with generated sketches inserted directly (``Registry.upsert``; 32 modules
each, one of 8 layouts drawn from a pool of 300 module names, so the table stays small and module names
alone tell adapters of one layout nothing; the query reads only the 64-value vectors
and the sketches of candidate pairs, so the module count does not change its time much), ``--groups`` of
them planted as near-duplicate groups of 4 (an original, a noisy copy, a half-strength copy, a 3/4 subset). Timed: in-process
``Registry.near_dupes()`` (hashed candidates above 20,000 sketches), then the `lorahub dupes --near --json`
command, and ``search --like`` in-process. Goal: answers in seconds (we ask <= 10 s), every planted group
found, nothing else grouped.

Trained (``--trained``): the heart concept trained twice with ``lorahub train`` on the same 12 images, two
seeds, and the similarity of the two, beside the shipped demo adapters (trained on other data). Reported.

Exit code 1 when a goal fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# As `lorahub index` runs (cli/commands/registry.py): one OpenBLAS thread, set before numpy loads. With numpy's
# default threads the index's numpy work spins against its own hashing threads (+53% here, idle, 2026-12-05).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from benchkit import load_note, lorahub_cmd  # noqa: E402

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"


def bench_index(families: int, rounds: int, work: Path) -> bool:
    sys.path.insert(0, str(TESTS))
    from neardupkit import write_family

    from lorahub.adapters.fingerprint import fingerprint_record
    from lorahub.adapters.sketch import StreamSketch, sketch_file
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.sources import folders

    folder = work / "adapters"
    folder.mkdir()
    t = time.perf_counter()
    for i in range(families):
        write_family(folder, i)
    files = sorted(folder.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    print(f"index: {len(files)} files, {size / 2**20:.0f} MiB, generated in {time.perf_counter() - t:.1f} s")
    for f in files:  # page cache
        f.read_bytes()

    real_sketch, real_stream = folders._sketch, folders._stream
    own: list[float] = []  # CPU seconds of the threads, inside StreamSketch and the sketch's serialisation

    def timed(f: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                own.append(time.thread_time() - t)
        return run

    timed_sketch, timed_stream = timed(real_sketch), timed(real_stream)
    real_update = StreamSketch.update
    StreamSketch.update = timed(real_update)  # type: ignore[method-assign]
    times: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    sketch_cpu: list[float] = []
    for r in range(rounds):
        for mode in ("off", "on"):
            os.environ["LORAHUB_HOME"] = str(work / f"home-{mode}-{r}")
            folders._sketch = timed_sketch if mode == "on" else (lambda *a, **k: None)
            folders._stream = timed_stream if mode == "on" else (lambda *a, **k: None)
            own.clear()
            reg = Registry(f"sqlite:///{work / f'index-{mode}-{r}.sqlite'}")
            reg.migrate()
            t, c = time.perf_counter(), time.process_time()
            summary = reg.index_paths([folder])
            times[mode].append(time.perf_counter() - t)
            cpu[mode].append(time.process_time() - c)
            assert summary.added == len(files), summary
            reg.close()
            if mode == "on":
                sketch_cpu.append(sum(own))
    folders._sketch, folders._stream = real_sketch, real_stream
    StreamSketch.update = real_update  # type: ignore[method-assign]
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    overhead = (on - off) / off
    cpu_off, cpu_on = min(cpu["off"]), min(cpu["on"])
    t = time.perf_counter()
    for f in files:
        sketch_file(f)
    per_sketch = (time.perf_counter() - t) / len(files)
    t = time.perf_counter()
    for f in files:
        fingerprint_record(f, use_cache=False)
    per_fp = (time.perf_counter() - t) / len(files)
    print(f"index cold, sketching off: {off:.2f} s (runs {', '.join(f'{x:.2f}' for x in times['off'])})")
    print(f"index cold, sketching on:  {on:.2f} s (runs {', '.join(f'{x:.2f}' for x in times['on'])})")
    print(f"index CPU time (all threads, least of {rounds}): off {cpu_off:.2f} s, on {cpu_on:.2f} s: "
          f"sketching adds {(cpu_on - cpu_off) / cpu_off:+.1%} CPU")
    print(f"one file alone: sketch_file (header, analysis, read, sketch) {per_sketch * 1000:.1f} ms, "
          f"fingerprint {per_fp * 1000:.1f} ms")
    inside = statistics.median(sketch_cpu)
    print(f"the sketch's own CPU inside the index (its threads' time in StreamSketch, median of {rounds}): "
          f"{inside:.3f} s, {inside / len(files) * 1000:.1f} ms a file: {inside / statistics.median(cpu['off']):+.1%} "
          "of the index's CPU without sketching (median)")
    best_off, best_on = min(times["off"]), min(times["on"])
    print(f"best of {rounds}: off {best_off:.2f} s, on {best_on:.2f} s: {(best_on - best_off) / best_off:+.1%} (info)")
    ok = overhead <= 0.20
    print(f"sketching adds {overhead:+.1%} to index (goal <= +20%): {'PASS' if ok else 'FAIL'}  [{load_note()}]")
    return ok


def _random_unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    a = rng.standard_normal(shape)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def bench_near(count: int, groups: int, work: Path) -> bool:
    from lorahub.adapters import sketch as sk
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.drafts import AdapterDraft, FileDraft, VersionDraft

    rng = np.random.default_rng(18)
    pool = np.sort(rng.choice(2**32, size=300, replace=False).astype(np.uint32))
    mixers = np.stack([sk._mixer(int(h)) for h in pool]).astype(np.float64)  # [300, K*K, D]
    modules = 32

    def blob(idx: np.ndarray, norms: np.ndarray, units: np.ndarray) -> bytes:
        vec = np.einsum("n,nk,nkd->d", norms, units, mixers[idx])
        vec /= np.linalg.norm(vec)
        return sk.Sketch(hashes=pool[idx], norms=norms.astype(np.float32), units=units.astype(np.float16),
                         vector=vec.astype(np.float16)).to_bytes()

    # adapters share layouts (as every full SD 1.5 LoRA has the same 264 modules): the module names alone
    # tell nothing apart
    layouts = [np.sort(rng.choice(300, size=modules, replace=False)) for _ in range(8)]
    blobs: list[bytes] = []
    planted: list[tuple[int, ...]] = []
    for _ in range(groups):
        idx = layouts[rng.integers(len(layouts))]
        norms = rng.uniform(0.1, 1.0, modules)
        units = _random_unit(rng, (modules, sk.K * sk.K))
        noisy = units + rng.normal(0, 0.01, units.shape)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        keep = np.sort(rng.choice(modules, size=modules * 3 // 4, replace=False))
        start = len(blobs)
        blobs += [blob(idx, norms, units), blob(idx, norms, noisy), blob(idx, norms * 0.5, units),
                  blob(idx[keep], norms[keep], units[keep])]
        planted.append(tuple(range(start, start + 4)))
    while len(blobs) < count:
        idx = layouts[rng.integers(len(layouts))]
        blobs.append(blob(idx, rng.uniform(0.1, 1.0, modules), _random_unit(rng, (modules, sk.K * sk.K))))
    del blobs[count:]

    url = f"sqlite:///{work / 'near.sqlite'}"
    reg = Registry(url)
    reg.migrate()
    t = time.perf_counter()
    for start in range(0, count, 5000):
        drafts = []
        for i in range(start, min(count, start + 5000)):
            sha = f"{i:064x}"
            f = FileDraft(filename=f"a{i}.safetensors", format="kohya-lora", base_family="sd1", rank=8,
                          dtype="float16", hashes={"sha256": sha}, sketch=blobs[i], is_primary=True)
            drafts.append(AdapterDraft(source_kind="record", source_key=f"record:bench:{i}", name=f"a{i}",
                                       base_family="sd1", versions=[VersionDraft(base_family="sd1", files=[f])]))
        reg.upsert(drafts)
    print(f"near: {count} sketches ({len(blobs[-1])} bytes each, {groups} planted groups of 4) inserted in "
          f"{time.perf_counter() - t:.0f} s")

    t, c = time.perf_counter(), time.process_time()
    found = reg.near_dupes()
    in_process = time.perf_counter() - t
    in_process_cpu = time.process_time() - c
    names = [sorted(int(m.adapter.name[1:]) for m in [g.reference, *g.members]) for g in found]
    want = [list(p) for p in planted]
    hit = sum(1 for p in want if p in names)
    extra = [n for n in names if n not in want]
    print(f"near_dupes in-process: {in_process:.2f} s ({in_process_cpu:.2f} s CPU); planted groups found whole "
          f"{hit}/{len(want)}, other groups {len(extra)}")

    t = time.perf_counter()
    out = subprocess.run([*lorahub_cmd(), "dupes", "--near", "--json", "--database", url],
                         capture_output=True, text=True, check=False)
    command = time.perf_counter() - t
    ok_cmd = out.returncode == 0 and len(json.loads(out.stdout)) == len(found)
    print(f"`lorahub dupes --near --json`: {command:.2f} s (exit {out.returncode})")

    from lorahub.registry import near

    query = sk.Sketch.from_bytes(blobs[planted[0][1]])
    t = time.perf_counter()
    with reg.reading() as raw:
        like = near.like(raw, query, sk.Facts(), limit=10)
    like_s = time.perf_counter() - t
    print(f"search --like in-process: {like_s:.2f} s, {len(like)} matches "
          f"({', '.join(m.adapter.name for m in like)})")
    reg.close()
    ok = in_process <= 10 and command <= 10 and ok_cmd and hit == len(want) and not extra
    print(f"dupes --near over {count} sketches: {'PASS' if ok else 'FAIL'} (goal: <= 10 s, every planted group, "
          f"nothing else)  [{load_note()}]")
    return ok


def bench_trained(work: Path, seeds: tuple[int, int] = (42, 7)) -> bool:
    """Real training: the heart concept trained twice on the same 12 images with two seeds (``lorahub train``
    at the drawing base's defaults), and how similar the two are; beside them the shipped demo adapters,
    each trained on other data (a heart, a checkered texture, a sunset). Reported, no goal: two seeds on
    the same data learn the same concept along other directions, and the sketch compares directions."""
    import itertools

    from lorahub import world
    from lorahub.adapters.sketch import compare, sketch_file
    from lorahub.base import drawing
    from lorahub.training.demo_data import make_concept_dataset

    exe = Path(sys.executable).with_name("lorahub")
    data = make_concept_dataset(work / "data-heart", "heart", count=12)
    files = {}
    for seed in seeds:
        out = work / f"heart-seed{seed}"
        t = time.perf_counter()
        subprocess.run([str(exe), "train", str(data), "--out", str(out), "--base", "drawing", "--trigger",
                        world.CONCEPTS["heart"].trigger, "--seed", str(seed), "--device", "cpu", "--json"],
                       check=True, capture_output=True, text=True)
        files[f"heart, seed {seed}"] = out / f"{out.name}_kohya.safetensors"
        print(f"trained: heart, seed {seed}, in {time.perf_counter() - t:.0f} s")
    for f in sorted(drawing.DEMO_ADAPTERS.glob("*.safetensors")):
        files[f"shipped {f.stem.removeprefix('drawing_')}"] = f
    sketches = {k: sketch_file(f) for k, f in files.items()}
    for a, b in itertools.combinations(sketches, 2):
        c = compare(sketches[a], sketches[b])
        print(f"similarity {a} / {b}: {c.similarity:+.3f}")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sketches", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=500)
    ap.add_argument("--skip-index", action="store_true")
    ap.add_argument("--skip-near", action="store_true")
    ap.add_argument("--trained", action="store_true", help="also train two seeds on the same data (about 1 min)")
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="lorahub-bench-neardup-") as tmp:
        work = Path(tmp)
        if not args.skip_index:
            ok &= bench_index(args.families, args.rounds, work)
        if not args.skip_near:
            ok &= bench_near(args.sketches, args.groups, work)
        if args.trained:
            ok &= bench_trained(work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
