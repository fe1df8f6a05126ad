"""The Hub's limits and switches (``lorahub serve`` fills them from its settings)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class HubConfig:
    #: Largest LFS object (bytes) accepted by the batch API and the upload route.
    max_upload_size: int = 20 * GiB
    #: Largest NDJSON commit body (regular files travel inline, base64).
    max_commit_bytes: int = 64 * MiB
    #: Largest regular (non-LFS) file.
    max_regular_file: int = 10 * MiB
    #: Files at least this big are LFS.
    lfs_threshold: int = 10 * MiB
    #: Most operations in one commit / objects in one LFS batch.
    max_operations: int = 25_000
    max_batch_objects: int = 1000
    #: Index committed adapters into the registry (``adapters`` tables).
    index_adapters: bool = True
    #: Base URL used in registry source keys and adapter URLs (``lorahub serve --public-url``).
    public_url: str = "http://127.0.0.1:8000"


__all__ = ["GiB", "HubConfig", "MiB"]
