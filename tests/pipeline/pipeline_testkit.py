"""Helpers shared by the preview-pipeline tests (imported by name; not a test module)."""

from __future__ import annotations

from typing import Any

PROMPT = "a lighthouse at dusk"
#: The guidance of every compared render: the reference pipelines' here, and a LivePipeline's where named (its own
#: default is its base's: 3 on the embedded SD 1.x base, which is the drawing base).
GUIDANCE = 7.5


def render_np(pipe: Any, seed: int = 0, prompt: str = PROMPT, steps: int = 2) -> Any:
    import torch

    with torch.inference_mode():
        return pipe(prompt, num_inference_steps=steps, guidance_scale=GUIDANCE, width=64, height=64,
                    generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]


def max_diff(x: Any, y: Any) -> float:
    import numpy as np

    return float(np.abs(np.asarray(x, dtype="float64") - np.asarray(y, dtype="float64")).max())
