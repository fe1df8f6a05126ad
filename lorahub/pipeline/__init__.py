"""The preview pipeline: one loaded base model, many adapters, hot-swapped and blended.

- :mod:`lorahub.pipeline.live`: :class:`~lorahub.pipeline.live.LivePipeline`, the
  loaded base with adapters managed by name (add, remove, enable/disable,
  weights, hot-swap; A1111 ``<lora:...>`` prompts; ``torch.compile`` without
  recompilation).
- :mod:`lorahub.pipeline.compat`: compatibility checks before loading and the
  no-op check after.
- :mod:`lorahub.pipeline.canonical`: any supported adapter file as LoRA factors
  with alpha folded in (LyCORIS LoHa/LoKr converted by SVD).
- :mod:`lorahub.pipeline.resolver`: names -> files (paths, adapter folders, Hub
  ids; a face may add registry names: ``lorahub.registry.resolving``).
- :mod:`lorahub.pipeline.prompt`: the A1111 prompt syntax (no torch).
- :mod:`lorahub.pipeline.blend`: ``blend`` (linear, cat, svd, ties, dare) to one file.
- :mod:`lorahub.pipeline.recipe`: blend recipes (sources by stable reference and hash): read,
  write, ``bake`` (verify every source, then blend), the recipe a blend carries.
- :mod:`lorahub.pipeline.fuse`: ``fuse`` adapters into a base and save it.
- :mod:`lorahub.pipeline.grid`, :mod:`lorahub.pipeline.script`: X/Y grids and
  scripted/interactive sessions.

Importing this package does not import torch; the submodules that need it
import it when used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LivePipeline", "parse_prompt", "Resolver"]


def __getattr__(name: str) -> Any:
    if name == "LivePipeline":
        from .live import LivePipeline

        return LivePipeline
    if name == "parse_prompt":
        from .prompt import parse_prompt

        return parse_prompt
    if name == "Resolver":
        from .resolver import Resolver

        return Resolver
    raise AttributeError(name)
