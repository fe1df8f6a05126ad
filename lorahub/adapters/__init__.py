"""The adapter-file layer: read, check, fingerprint and rewrite LoRA files.

Everything above it (training output, push, registry indexing, pipeline
compatibility checks) calls these functions. No torch here, and importing the
package imports nothing heavy: the functions below load their modules on first use.

>>> from lorahub.adapters import inspect_file, validate_file, fingerprint_file
"""

from __future__ import annotations

import importlib
from typing import Any

from .header import SafetensorsHeader, TensorInfo, read_header

_LAZY = {
    "inspect_file": "inspect",
    "validate_file": "validate",
    "validate_paths": "validate",
    "fingerprint_file": "fingerprint",
    "fingerprint_paths": "fingerprint",
    "set_metadata": "metadata",
}

__all__ = ["SafetensorsHeader", "TensorInfo", "read_header", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
