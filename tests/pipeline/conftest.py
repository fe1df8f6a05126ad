"""Fixtures of the preview-pipeline tests: synthetic adapters for the embedded base, a reference pipeline.

Pipelines are module-scoped (one base load per test module); they run torch on one thread
(``one_thread``, tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pipeline_testkit import PROMPT, render_np


@pytest.fixture(scope="session")
def adapters(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real LoRAs for the embedded base, in different formats, ranks and alphas.

    - a: diffusers/peft, rank 4, alpha 2, UNet + text encoder, trigger "astyle"
    - b: kohya, rank 8, alpha 16, UNet + text encoder, trigger "bstyle"
    - c: kohya, rank 2, UNet only
    - d: diffusers/peft, rank 16, alpha 4, UNet only
    - e: diffusers/peft, rank 4, UNet attn1 only (a subset of the others' modules)
    """
    from lorahub.base.synthetic import make_adapter

    d = tmp_path_factory.mktemp("adapters")
    return {
        "a": make_adapter(d / "a.safetensors", base=embedded_base, rank=4, alpha=2, seed=1, text_encoder=True,
                          trigger="astyle"),
        "b": make_adapter(d / "b.safetensors", base=embedded_base, rank=8, alpha=16, seed=2, fmt="kohya",
                          text_encoder=True, trigger="bstyle"),
        "c": make_adapter(d / "c.safetensors", base=embedded_base, rank=2, seed=3, fmt="kohya"),
        "d": make_adapter(d / "d.safetensors", base=embedded_base, rank=16, alpha=4, seed=4),
        "e": make_adapter(d / "e.safetensors", base=embedded_base, rank=4, seed=5,
                          targets=("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")),
    }


@pytest.fixture(scope="session")
def xl_adapters(embedded_xl_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real LoRAs for the embedded SDXL base (kohya ones with kohya's SDXL names: SGM UNet paths,
    lora_te1_/lora_te2_).

    - a: diffusers/peft, rank 4, alpha 2, UNet + both text encoders, trigger "axl"
    - b: kohya, rank 8, alpha 16, UNet + both text encoders, trigger "bxl"
    - c: kohya, rank 2, UNet only
    - e: diffusers/peft, rank 4, UNet attn1 only (a subset of the others' modules)
    """
    from lorahub.base.synthetic import make_adapter

    d = tmp_path_factory.mktemp("xl-adapters")
    base = embedded_xl_base
    return {
        "a": make_adapter(d / "a.safetensors", base=base, rank=4, alpha=2, seed=11, text_encoder=True, trigger="axl"),
        "b": make_adapter(d / "b.safetensors", base=base, rank=8, alpha=16, seed=12, fmt="kohya", text_encoder=True,
                          trigger="bxl"),
        "c": make_adapter(d / "c.safetensors", base=base, rank=2, seed=13, fmt="kohya"),
        "e": make_adapter(d / "e.safetensors", base=base, rank=4, seed=15,
                          targets=("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")),
    }


def _reference(base: Path) -> Callable[..., Any]:
    from lorahub.base.resolve import load_pipeline
    from lorahub.pipeline.live import quiet

    pipe = load_pipeline(base)

    def make(items: list[tuple[Path, Any]], seed: int = 0, prompt: str = PROMPT) -> Any:
        with quiet():
            pipe.unload_lora_weights()
            names = []
            for i, (path, _w) in enumerate(items):
                name = f"ref{i:02d}x"
                pipe.load_lora_weights(str(path), adapter_name=name)
                names.append(name)
            if names:
                pipe.set_adapters(names, [w for _p, w in items])
        return render_np(pipe, seed=seed, prompt=prompt)

    make.pipe = pipe  # type: ignore[attr-defined]
    return make


@pytest.fixture(scope="module")
def reference(embedded_base: Path, one_thread: None) -> Callable[..., Any]:
    """``reference([(path, weight | {"unet": u, "text_encoder": t}), ...], seed=0)``: the image plain diffusers
    makes with those adapters (``load_lora_weights`` + ``set_adapters``) on a separate pipeline."""
    return _reference(embedded_base)


@pytest.fixture(scope="module")
def xl_reference(embedded_xl_base: Path, one_thread: None) -> Callable[..., Any]:
    """The same on the embedded SDXL base (``StableDiffusionXLPipeline``; weights may name ``text_encoder_2``)."""
    return _reference(embedded_xl_base)
