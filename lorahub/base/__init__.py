"""Base models: the embedded tiny SD 1.x default, resolving ``--base`` specs, synthetic adapters.

Importing this package does not import torch; :func:`load_pipeline`,
:func:`ensure_embedded` (when it has to build) and :func:`build_embedded` do.
"""

from .embedded import EMBEDDED_ID, build_embedded, embedded_path, ensure_embedded
from .resolve import BaseRef, load_pipeline, resolve_base
from .synthetic import make_adapter

__all__ = [
    "EMBEDDED_ID",
    "BaseRef",
    "build_embedded",
    "embedded_path",
    "ensure_embedded",
    "load_pipeline",
    "make_adapter",
    "resolve_base",
]
