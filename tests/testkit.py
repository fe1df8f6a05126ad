"""Plain helpers shared by the test suite (import them as ``from testkit import ...``).

They live here and not in ``conftest.py`` because several folders have a
conftest of their own, and ``from conftest import`` would pick whichever was
imported last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
FIXTURES = SHARED / "fixtures"
CORPORA = SHARED / "corpora"


def manifest_to_safetensors(manifest: Path, out: Path, metadata: dict[str, str] | None = None) -> Path:
    """Turn a key -> {shape, dtype} manifest into a real safetensors file with zero-filled tensors."""
    from lorahub.adapters.writer import write_safetensors_zeros

    spec = json.loads(manifest.read_text())
    tensors = {}
    for name, entry in spec.items():
        dtype = str(entry["dtype"]).replace("torch.", "")
        tensors[name] = (dtype, [int(d) for d in entry["shape"]])
    write_safetensors_zeros(out, tensors, metadata=metadata)
    return out


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def server_fixtures():  # noqa: ANN201 - the module tests/server/conftest.py
    """``tests/server/conftest.py`` as a module of its own name (start_server, stop_server, ...).

    For tests outside that folder (or needing a server with other options) that start a real `lorahub serve`.
    """
    import importlib.util
    import sys

    name = "lorahub_server_test_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "server" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
