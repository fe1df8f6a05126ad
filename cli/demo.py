"""``lorahub demo``: every capability shows itself on the embedded default base model (and the SDXL step on
the embedded SDXL base).

Each capability registers one step with :func:`step`; the demo runs them in
order inside one working folder and reports what each did. Steps must run
offline, on CPU, in seconds to a minute. The demo belongs to the CLI: it
composes the library, the registry and the server (docs/architecture.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DemoContext:
    workdir: Path
    log: Callable[[str], None]
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepResult:
    name: str
    summary: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


StepFn = Callable[[DemoContext], "tuple[str, dict[str, Any]]"]
STEPS: list[tuple[str, str, StepFn]] = []


def step(name: str, title: str) -> Callable[[StepFn], StepFn]:
    def register(fn: StepFn) -> StepFn:
        STEPS.append((name, title, fn))
        return fn

    return register


# --------------------------------------------------------------------------- foundation steps


@step("base", "Install the embedded base model (tiny SD 1.x architecture pretrained to draw, offline)")
def _base(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    from lorahub.base.embedded import EMBEDDED_ID, ensure_embedded

    path = ensure_embedded()
    ctx.state["base_path"] = path
    return f"{EMBEDDED_ID} ready at {path}", {"path": str(path)}


@step("adapter", "Write a small LoRA for it (diffusers format, rank 4)")
def _adapter(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    from lorahub.base.synthetic import make_adapter

    out = ctx.workdir / "demo-style" / "pytorch_lora_weights.safetensors"
    make_adapter(out, rank=4, seed=1, fmt="diffusers", trigger="demostyle")
    kohya = ctx.workdir / "demo-style-kohya.safetensors"
    make_adapter(kohya, rank=8, seed=2, fmt="kohya", trigger="kohyastyle")
    ctx.state["adapter"] = out
    ctx.state["adapter_kohya"] = kohya
    return f"wrote {out} ({out.stat().st_size:,} bytes) and {kohya.name}", {"files": [str(out), str(kohya)]}


@step("inspect", "Inspect it from the header alone")
def _inspect(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    from lorahub.adapters.inspect import inspect_file

    lines = []
    reports = {}
    for key in ("adapter", "adapter_kohya"):
        r = inspect_file(ctx.state[key])
        reports[key] = r.model_dump(mode="json", exclude={"module_details", "metadata"})
        lines.append(
            f"{Path(r.path).name}: {r.format}, base {r.base_family}, rank {r.rank}, alpha {r.alpha:g}, "
            f"{r.modules} modules, trigger {', '.join(r.trigger_words) or '-'}"
        )
    return "; ".join(lines), reports


@step("validate", "Validate it (deep: every tensor read and checked)")
def _validate(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    from lorahub.adapters.validate import validate_file

    out = []
    for key in ("adapter", "adapter_kohya"):
        r = validate_file(ctx.state[key], deep=True)
        if not r.valid:
            from lorahub.errors import InvalidAdapterError

            raise InvalidAdapterError(r.path, r.errors)
        out.append(r)
    return f"{len(out)} files valid, {sum(len(r.warnings) for r in out)} warning(s)", {
        "reports": [r.model_dump(mode="json") for r in out]
    }


@step("fingerprint", "Fingerprint it with every hash the community uses")
def _fingerprint(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    from lorahub.adapters.fingerprint import fingerprint_file

    fp = fingerprint_file(ctx.state["adapter"])
    ctx.state["fingerprint"] = fp
    return (
        f"SHA256 {fp.sha256[:16]}..., AutoV2 {fp.autov2}, AutoV3 {fp.autov3}, CRC32 {fp.crc32}, "
        f"BLAKE3 {fp.blake3[:16]}..., embedded sshs_model_hash: {fp.embedded_hash}",
        fp.model_dump(mode="json"),
    )


@step("train", "Train a LoRA on a small generated dataset (a few steps at 64x64), then inspect and validate it")
def _train(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    import torch

    from lorahub.adapters.inspect import inspect_file
    from lorahub.adapters.validate import validate_file
    from lorahub.errors import InvalidAdapterError
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.demo_data import DEMO_TRIGGER, make_demo_dataset
    from lorahub.training.trainer import train

    data = make_demo_dataset(ctx.workdir / "train-data", count=8, size=64)
    out = ctx.workdir / "demo-trained"
    config = TrainConfig(
        data=str(data), out=str(out), trigger=DEMO_TRIGGER, rank=4, steps=24, lr=1e-2, resolution=64,
        sample_steps=4, seed=0,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's matrices are too small to gain from threads (and busy CPUs hurt)
    try:
        result = train(config, overwrite=True, log=lambda _m: None, progress=False)
    finally:
        torch.set_num_threads(threads)
    reports = [validate_file(p, deep=True) for p in (result.weights, result.kohya_weights)]
    for r in reports:
        if not r.valid:
            raise InvalidAdapterError(r.path, r.errors)
    report = inspect_file(result.weights)
    ctx.state["trained"] = Path(result.weights)
    return (
        f"{result.steps} steps on {result.images} images ({result.steps_per_second:.1f} steps/s), loss "
        f"{result.first_loss:.3f} -> {result.last_loss:.3f}; {Path(result.weights).name}: {report.format}, base "
        f"{report.base_family}, rank {report.rank}, trigger {', '.join(report.trigger_words) or '-'}; "
        f"kohya copy valid",
        {"result": result.model_dump(mode="json"), "inspect": report.model_dump(mode="json", exclude={"module_details", "metadata"})},
    )


@step("preview", "Hot-swap and blend: a weight grid of two adapters on one loaded pipeline, and a baked blend")
def _preview(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    import numpy as np

    from lorahub import world
    from lorahub.base import drawing
    from lorahub.base.resolve import resolve_base
    from lorahub.base.synthetic import make_adapter
    from lorahub.pipeline.blend import blend
    from lorahub.pipeline.grid import Cell, render_grid
    from lorahub.pipeline.live import LivePipeline

    base = ctx.state.get("base_path")
    draws = drawing.is_drawing_ref(resolve_base(str(base) if base else None, download=False, build=False))
    if draws:  # the default base draws: blend its shipped heart (a shape) and sunset (a colour scheme) LoRAs
        by_concept = dict(zip(drawing.DEMO_CONCEPTS, drawing.demo_adapters(), strict=True))
        a, b, names, steps = by_concept["heart"], by_concept["sunset"], ("heart", "sunset"), 12
        scene = world.scenes(drawing.PREVIEW_SEED, 1, "concept", concept="heart")[0]
        prompt = scene.caption.rsplit(", ", 1)[0] + ", sunset background"  # both trigger words
    else:  # random weights (lorahub base build --seed N): two random adapters
        a = ctx.state.get("adapter") or make_adapter(ctx.workdir / "demo-style.safetensors", rank=4, seed=1)
        b = ctx.state.get("adapter_kohya") or make_adapter(ctx.workdir / "demo-kohya.safetensors", rank=8, seed=2,
                                                           fmt="kohya")
        names, steps, prompt = ("style", "kohya"), 2, "a lighthouse at dusk"
    first, second = names
    seen: dict[str, str] = {}

    def judged(row: int, col: int, out: Any) -> None:
        v = world.judge(np.asarray(out.image))
        seen[f"{first} {weights[col]:g}, {second} {weights[row]:g}"] = \
            f"{v.shape or 'nothing'} on {v.background or 'an unknown background'}"

    live = LivePipeline(base, target_rank=16)  # >= the two ranks: the cat blend fits a slot
    live.add(first, a)
    live.add(second, b)
    weights = (0.0, 1.0)
    done = render_grid(live, prompt, [[Cell({first: wa, second: wb}) for wa in weights] for wb in weights],
                       col_labels=[f"{first} {w:g}" for w in weights], row_labels=[f"{second} {w:g}" for w in weights],
                       title=prompt, seed=0, steps=steps, width=64, height=64, on_image=judged if draws else None)
    times = done.seconds
    grid_path = ctx.workdir / "blend-grid.png"
    done.image.save(grid_path)

    # the same blend baked into one file (cat: exact), hot-swapped into the first slot
    baked = blend([(a, 0.5), (b, 0.5)], method="cat", out=ctx.workdir / "blend-cat.safetensors")
    live.set_weights({first: 0.5, second: 0.5})
    stacked = live.render(prompt, seed=0, steps=steps, output_type="np").image
    live.swap(first, baked.path)
    live.set_weights({first: 1.0}, exclusive=True)
    single = live.render(prompt, seed=0, steps=steps, output_type="np").image
    diff = float(abs(stacked - single).max())
    stats = live.summary()["stats"]
    live.close()
    per = sum(times) / len(times)
    said = f"; the judge saw {'; '.join(f'{k}: {v}' for k, v in seen.items())}" if seen else ""
    return (
        f"{grid_path.name} (2x2 weights, {per:.2f} s per image){said}; {Path(baked.path).name} (cat, rank "
        f"{baked.rank}); baked vs stacked image: max difference {diff:.1e}; base loaded {stats['base_loads']} time, "
        f"{stats['hotswaps']} hot-swap(s)",
        {"grid": str(grid_path), "prompt": prompt, "judged": seen, "blend": baked.path, "seconds_per_image": per,
         "max_pixel_difference": diff, "stats": stats},
    )


@step("drawing", "The drawing base: train a LoRA on 12 pictures of a heart (lorahub train's defaults), then let the "
      "judge read what a weight grid draws")
def _drawing(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    import numpy as np

    from lorahub import world
    from lorahub.pipeline.grid import Cell, render_grid
    from lorahub.pipeline.live import LivePipeline
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.demo_data import make_concept_dataset
    from lorahub.training.trainer import train

    data = make_concept_dataset(ctx.workdir / "heart-data", "heart", count=12)
    config = TrainConfig(data=str(data), out=str(ctx.workdir / "heart"), base="drawing", trigger="heart", device="cpu")
    result = train(config, overwrite=True, log=lambda _m: None, progress=False)
    prompt = world.scenes(5, 1, "concept", concept="heart")[0].caption  # a scene the adapter never saw
    live = LivePipeline("drawing")
    live.add("heart", result.weights)
    weights, seeds = (0.0, 0.5, 1.0), range(4)
    seen: dict[float, list[str]] = {w: [] for w in weights}

    def judged(row: int, _col: int, out: Any) -> None:
        verdict = world.judge(np.asarray(out.image))
        seen[weights[row]].append(str(verdict.shape or "nothing"))

    done = render_grid(live, prompt, [[Cell({"heart": w}, seed=s) for s in seeds] for w in weights],
                       col_labels=[f"seed {s}" for s in seeds], row_labels=[f"heart {w:g}" for w in weights],
                       title=prompt, on_image=judged, steps=20)
    live.close()
    grid_path = ctx.workdir / "drawing-grid.png"
    done.image.save(grid_path)
    said = "; ".join(f"weight {w:g}: {', '.join(seen[w])}" for w in weights)
    return (
        f"heart LoRA trained in {result.seconds:.0f} s ({result.steps} steps); \"{prompt}\": the judge saw {said}; "
        f"{grid_path.name}",
        {"result": result.model_dump(mode="json"), "prompt": prompt, "judged": {str(w): seen[w] for w in weights},
         "grid": str(grid_path)},
    )


@step("sdxl", "SDXL: build the embedded SDXL base, train a few steps (both layouts, kohya's SDXL names), preview "
      "and blend on it")
def _sdxl(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    import torch

    from lorahub.adapters.inspect import inspect_file
    from lorahub.base.embedded import SDXL_ID, ensure_embedded
    from lorahub.base.synthetic import make_adapter
    from lorahub.pipeline.blend import blend
    from lorahub.pipeline.live import LivePipeline
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.demo_data import DEMO_TRIGGER, make_demo_dataset
    from lorahub.training.trainer import train

    started = time.perf_counter()
    base = ensure_embedded(family="sdxl")
    built = time.perf_counter() - started
    data = make_demo_dataset(ctx.workdir / "train-data-xl", count=4, size=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(TrainConfig(data=str(data), out=str(ctx.workdir / "demo-xl"), base=SDXL_ID,
                                   trigger=DEMO_TRIGGER, rank=4, steps=8, lr=1e-2, resolution=64, sample_steps=2,
                                   seed=0), overwrite=True, log=lambda _m: None, progress=False)
        kohya = inspect_file(result.kohya_weights)
        other = make_adapter(ctx.workdir / "demo-xl-other.safetensors", base=base, rank=4, seed=5, fmt="kohya",
                             text_encoder=True, trigger="xlother")
        live = LivePipeline(base, target_rank=16)
        live.add("trained", result.kohya_weights)
        live.add("other", other, te=0.5, unet=0.8, te2=0.25)  # per component: UNet, TE1, TE2
        r = live.render("a lighthouse at dusk", seed=0, steps=2, width=64, height=64)
        baked = blend([(result.kohya_weights, 1.0), (other, (0.5, 0.8, 0.25))], method="cat",
                      out=ctx.workdir / "blend-xl-cat.safetensors")
        live.swap("trained", baked.path)
        live.set_weights({"trained": 1.0}, exclusive=True)
        single = live.render("a lighthouse at dusk", seed=0, steps=2, width=64, height=64)
        stats = live.summary()["stats"]
        live.close()
    finally:
        torch.set_num_threads(threads)
    sgm = sum(1 for m in kohya.module_details if m.name.startswith(("lora_unet_input_blocks", "lora_unet_middle_block",
                                                                      "lora_unet_output_blocks")))
    r.image.save(ctx.workdir / "sdxl-preview.png")
    return (
        f"{SDXL_ID} ({'built' if built > 1 else 'ready'} in {built:.1f} s); trained {result.steps} steps "
        f"({result.steps_per_second:.1f} steps/s), loss {result.first_loss:.3f} -> {result.last_loss:.3f}; "
        f"{Path(result.kohya_weights).name}: {kohya.modules} modules, {sgm} with SGM UNet names, loads in "
        f"{', '.join(kohya.loaders)}; preview {r.seconds:.2f} s per image, cat blend rank {baked.rank} hot-swapped "
        f"in ({single.seconds:.2f} s); base loaded {stats['base_loads']} time",
        {"result": result.model_dump(mode="json"), "kohya_loaders": kohya.loaders, "sgm_modules": sgm,
         "blend": baked.path, "stats": stats},
    )


def run_demo(
    workdir: Path,
    *,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    log: Callable[[str], None] = print,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(workdir=workdir, log=log)
    results = []
    for name, title, fn in STEPS:
        if (only and name not in only) or (skip and name in skip):
            continue
        log(f"==> {title}")
        t0 = time.perf_counter()
        summary, details = fn(ctx)
        res = StepResult(name=name, summary=summary, seconds=time.perf_counter() - t0, details=details)
        results.append(res)
        if on_step:
            on_step(res)
    return results


@step("registry", "Index the demo's adapters into the registry; search by words and by hash")
def _registry(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    from lorahub.registry.catalogue import Registry
    from lorahub.schemas.registry import SearchQuery

    with Registry() as reg:
        summary = reg.index_paths([ctx.workdir])
        hits = reg.search(SearchQuery(query="demostyle"))
        fp = ctx.state.get("fingerprint")
        by_hash = reg.by_hash(fp.autov3) if fp is not None and fp.autov3 else []
    return (
        f"indexed {summary.model_dump().get('added', summary)} into {reg.display_url}; "
        f"search 'demostyle': {', '.join(h.name for h in hits[:3]) or 'nothing'}; "
        f"by AutoV3 {fp.autov3 if fp else '-'}: {len(by_hash)} file(s)",
        {"index": summary.model_dump(mode="json"), "search": [h.model_dump(mode="json") for h in hits[:5]]},
    )


@step("share", "Start `lorahub serve` on loopback, push the trained adapter with its model card, pull it back, "
      "check the server's storage")
def _share(ctx: DemoContext) -> tuple[str, dict[str, Any]]:
    from sqlmodel import Session

    from lorahub.cli.serving import start_serve, stop_serve
    from lorahub.hub.pull import pull
    from lorahub.hub.push import push
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.hub.auth import create_token
    from lorahub.registry.hub.check import check_storage
    from lorahub.registry.server.run import prepare

    trained = ctx.state.get("trained")
    if trained is None:
        from lorahub.base.synthetic import make_adapter

        trained = make_adapter(ctx.workdir / "share" / "pytorch_lora_weights.safetensors", rank=4, seed=3,
                               trigger="sharestyle")
    package = Path(trained).parent
    data = ctx.workdir / "server"
    _, url, registry = prepare(data, None)
    try:
        with Session(registry.engine, expire_on_commit=False) as s:
            token, _, _ = create_token(s, "demo", write=True, name="demo")
    finally:
        registry.close()
    proc, endpoint = start_serve(["--port", "0", "--data", str(data), "--no-ui"], log=data / "server.log", timeout=60)
    try:
        # as `lorahub push` and `lorahub pull` do: the push is recorded in the local registry, the pull is
        # verified against that record and recorded in turn
        with Registry() as reg:
            first = push(package, repo="demo/demo-trained", endpoint=endpoint, token=token)
            reg.record_hub_files(first)
            first.registered = True
            again = push(package, repo="demo/demo-trained", endpoint=endpoint, token=token)
            got = pull("demo/demo-trained", to=ctx.workdir / "pulled", endpoint=endpoint, token=token,
                       known=reg.hub_files(endpoint, "demo/demo-trained"))
            reg.record_hub_files(got)
            got.registered = True
    finally:
        stop_serve(proc)
    checked = check_storage(data)  # `lorahub registry check --data DIR`: every blob hashed, every reference
    if not checked.ok:
        raise RuntimeError(f"the server's storage check found {checked.errors} problem(s)")
    return (
        f"pushed {first.url} (commit {str(first.commit)[:12]}, card {first.card_action}, "
        f"{len(first.files)} files); unchanged re-push made {'a' if again.changed else 'no'} commit; "
        f"pulled {len(got.files)} adapter file(s) into {Path(got.folder).name}/, verified against "
        f"{', '.join(sorted({f.verified for f in got.files}))}; storage check: {checked.blob_files} blobs "
        f"verified, {checked.errors} errors",
        {"push": first.model_dump(mode="json", exclude={"card"}), "pull": got.model_dump(mode="json"),
         "check": checked.model_dump(mode="json", exclude={"issues"})},
    )
