"""``lorahub demo``: every capability shows itself on the embedded default base model.

Each capability registers one step with :func:`step`; the demo runs them in
order inside one working folder and reports what each did. Steps must run
offline, on CPU, in seconds to a minute.
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


@step("base", "Build the embedded base model (tiny SD 1.x architecture, random weights, offline)")
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
    again = fingerprint_file(ctx.state["adapter"])
    ctx.state["fingerprint"] = fp
    return (
        f"SHA256 {fp.sha256[:16]}..., AutoV2 {fp.autov2}, AutoV3 {fp.autov3}, CRC32 {fp.crc32}, "
        f"BLAKE3 {fp.blake3[:16]}... (second run from cache: {again.cached})",
        fp.model_dump(mode="json"),
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
