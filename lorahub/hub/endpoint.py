"""Hub endpoints: the real Hugging Face Hub or a ``lorahub serve``.

huggingface_hub 2.x uploads every LFS-mode file through Xet whenever ``hf_xet`` is importable,
with no fallback. ``lorahub serve`` speaks Xet too (docs/server.md), but other self-hosted hubs and
older ``lorahub serve`` versions speak only the classic LFS protocol, which every hub accepts; and
with LFS an upload is one commit (Xet splits ``upload_folder`` into several) of exactly the bytes
lorahub already hashed. :func:`hf_api` therefore keeps switching Xet off
(``huggingface_hub.constants.HF_HUB_DISABLE_XET``, checked at call time) for every endpoint that is
not the real Hub. The switch is process-wide: a later upload to the real Hub from the same process
uses LFS, which the Hub still accepts.

Used by ``lorahub push``, ``pull`` and ``index --hub``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

#: Hosts that are the real Hub (Xet stays available there).
HUB_HOSTS = frozenset({"huggingface.co", "hf.co", "www.huggingface.co", "hub-ci.huggingface.co"})
DEFAULT_ENDPOINT = "https://huggingface.co"


def normalize_endpoint(endpoint: str | None) -> str:
    """``endpoint`` (default ``$HF_ENDPOINT`` or the Hub) without a trailing slash; checked."""
    from lorahub.errors import UsageError

    value = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"not a Hub endpoint URL: {value!r}", hint="e.g. https://huggingface.co or http://127.0.0.1:8000")
    return value


def is_hf_hub(endpoint: str | None) -> bool:
    host = (urlparse(normalize_endpoint(endpoint)).hostname or "").lower()
    return host in HUB_HOSTS


def disable_xet() -> None:
    import huggingface_hub.constants as constants

    constants.HF_HUB_DISABLE_XET = True


@contextmanager
def xet_disabled() -> Iterator[None]:
    """Xet off inside the block, restored afterwards (for code that also talks to the real Hub)."""
    import huggingface_hub.constants as constants

    before = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = before


def prepare_endpoint(endpoint: str | None) -> str:
    """Normalise ``endpoint`` and disable Xet unless it is the real Hub; returns the endpoint."""
    ep = normalize_endpoint(endpoint)
    if not is_hf_hub(ep):
        disable_xet()
    return ep


def hf_api(endpoint: str | None = None, token: str | bool | None = None, **kwargs: Any):  # noqa: ANN201 - HfApi
    """A ``huggingface_hub.HfApi`` for ``endpoint`` (Xet disabled unless it is the real Hub).

    ``token`` defaults to ``HF_TOKEN`` / the huggingface_hub login, as in huggingface_hub.
    """
    from huggingface_hub import HfApi

    ep = prepare_endpoint(endpoint)
    return HfApi(endpoint=ep, token=token, **kwargs)


__all__ = ["DEFAULT_ENDPOINT", "disable_xet", "hf_api", "is_hf_hub", "normalize_endpoint", "prepare_endpoint", "xet_disabled"]
