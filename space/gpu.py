"""Where the page's heavy work runs: the one place that knows about ZeroGPU.

On a Hugging Face Space with ZeroGPU hardware a GPU is attached only while a function decorated with the
``spaces`` package's ``spaces.GPU`` runs (the convention of free GPU slices on the Hub). :func:`on_gpu`
applies that decorator to the page's rendering and training functions when the hardware is ``zero-gpu``
(``$LORAHUB_SPACE_HARDWARE``, written into an exported Space's ``app.py``; ``$SPACES_ZERO_GPU``, which
the Hub sets on such Spaces, counts too) and ``spaces`` can be imported; everywhere else the function is
returned as it is and runs on whatever the process has (the CPU, or the GPU of a GPU Space).

A decorated function runs, on ZeroGPU, in a worker process: its arguments and results must pickle (plain
values, PIL images), which is why the page hands it no state object (:mod:`lorahub.space.ui` calls
module-level functions that look the process-wide state up themselves).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ENV_HARDWARE = "LORAHUB_SPACE_HARDWARE"
#: What ``lorahub space export --hardware`` offers.
HARDWARE = ("cpu", "zero-gpu", "gpu")

log = logging.getLogger("lorahub.space")


def hardware() -> str:
    """``cpu``, ``zero-gpu`` or ``gpu``: ``$LORAHUB_SPACE_HARDWARE``, else ``zero-gpu`` where the Hub says
    so (``$SPACES_ZERO_GPU``), else ``cpu``."""
    value = os.environ.get(ENV_HARDWARE, "").strip().lower()
    if value in HARDWARE:
        return value
    if os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true"):
        return "zero-gpu"
    return "cpu"


def gpu_decorator() -> Callable[..., Any] | None:
    """``spaces.GPU`` when the hardware is ZeroGPU and the ``spaces`` package imports; else None."""
    if hardware() != "zero-gpu":
        return None
    try:
        import spaces
    except ImportError:
        log.warning("hardware is zero-gpu but the `spaces` package is not installed: running on the CPU")
        return None
    return spaces.GPU


def on_gpu(fn: F, *, duration: int = 60) -> F:
    """``fn`` under ``spaces.GPU(duration=duration)`` on ZeroGPU (see :func:`gpu_decorator`), else ``fn``
    itself. ``duration``: the longest a call may hold the GPU, in seconds (the Hub's quota counts it)."""
    deco = gpu_decorator()
    if deco is None:
        return fn
    return deco(duration=duration)(fn)


__all__ = ["ENV_HARDWARE", "HARDWARE", "gpu_decorator", "hardware", "on_gpu"]
