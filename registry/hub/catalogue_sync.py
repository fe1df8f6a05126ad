"""Commit -> catalogue: the main head of every repo is one catalogue adapter.

On the main branch the commit's landing transaction replaces the repo's catalogue entry (a
:func:`lorahub.registry.drafts.hub_repo_draft` of the head's valid adapters, written with
:func:`lorahub.registry.rows.write_adapters`), so a search finds a pushed adapter as soon as the
commit call returns; a head without adapters, and a deleted repo, leave no entry. A visibility
change re-indexes the head. Everything here works in the caller's session (see
:mod:`lorahub.registry.hub`): the catalogue and the ``hub_*`` tables change in one transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from lorahub.schemas.registry import HASH_FIELDS, hub_source_key

from . import policy
from .blobstore import BlobCache, BlobStore
from .config import HubConfig
from .names import URL_PREFIX, repo_id_of
from .tables import HubCommit, HubRepo
from .trees import files_of

#: (path, size, InspectReport, sha256) of each valid adapter of a tree (see :func:`policy.check_files`).
Adapters = list[tuple[str, int, Any, str]]

_FINGERPRINTS = BlobCache()


def blob_fingerprints(
    sha256: str, local: Path | Callable[[], AbstractContextManager[Path]], known: dict[str, str] | None = None
) -> dict[str, str]:
    """Every fingerprint of a blob (cached by sha256; ``known`` from the registry skips hashing).
    ``local``: its file, or a function holding one (a blob stored as chunks is rebuilt only when
    its fingerprints must be computed)."""
    hit = _FINGERPRINTS.get(sha256)
    if hit is not None:
        return hit
    if known and all(known.get(k) for k in ("sha256", "blake3", "crc32")):
        out = {k: v for k, v in known.items() if v}
    else:
        from lorahub.adapters.fingerprint import fingerprint_record

        if callable(local):
            with local() as held:
                rec = fingerprint_record(os.fspath(held), use_cache=False)
        else:
            rec = fingerprint_record(os.fspath(local), use_cache=False)
        out = {k: rec[k] for k in HASH_FIELDS if rec.get(k)}
    _FINGERPRINTS.put(sha256, out)
    return out


class CatalogueSync:
    """Keeps each repo's catalogue adapter in step with its main head (``config.index_adapters``)."""

    def __init__(self, store: BlobStore, config: HubConfig) -> None:
        self.store = store
        self.config = config

    def source_key(self, repo: HubRepo) -> str:
        return hub_source_key(self.config.public_url, repo_id_of(repo), URL_PREFIX[repo.repo_type])

    def known_hashes(self, s: Session, shas: set[str]) -> dict[str, dict[str, str]]:
        """Fingerprints the catalogue already holds for these blobs (by sha256)."""
        from lorahub.registry.tables import AdapterFile

        cols = [getattr(AdapterFile, c) for c in HASH_FIELDS]
        wanted = sorted(shas)
        out: dict[str, dict[str, str]] = {}
        for i in range(0, len(wanted), 500):
            rows = s.execute(
                sa.select(AdapterFile.sha256, *cols).where(
                    AdapterFile.sha256.in_(wanted[i : i + 500]), AdapterFile.blake3.is_not(None)
                )
            )
            for sha, *values in rows:
                out.setdefault(sha, {c: v for c, v in zip(HASH_FIELDS, values, strict=True) if v})
        return out

    def fingerprints(self, adapters: Adapters, known: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        """Fingerprints of the adapters to index: cached by sha256, else ``known`` to the registry, else computed."""
        hashes: dict[str, dict[str, str]] = {}
        for _p, _, _, sha in adapters:
            if sha not in hashes:
                hashes[sha] = blob_fingerprints(sha, partial(self.store.materialized, sha), known.get(sha))
        return hashes

    def index(
        self,
        s: Session,
        repo: HubRepo,
        oid: str,
        title: str,
        card: dict[str, Any] | None,
        readme: str | None,
        adapters: Adapters,
        hashes: dict[str, dict[str, str]],
    ) -> None:
        """Replace the repo's catalogue adapter by its head ``oid`` (none when it holds no adapter)."""
        from lorahub.registry.drafts import hub_repo_draft
        from lorahub.registry.rows import delete_adapters, write_adapters
        from lorahub.registry.tables import Adapter

        conn = s.connection()
        if not adapters:
            ids = [r[0] for r in conn.execute(sa.select(Adapter.id).where(Adapter.source_key == self.source_key(repo)))]
            delete_adapters(conn, ids)
            return
        draft = hub_repo_draft(
            endpoint=self.config.public_url,
            repo_id=repo_id_of(repo),
            url_prefix=URL_PREFIX[repo.repo_type],
            namespace=repo.namespace,
            name=repo.name,
            private=repo.private,
            owner_id=repo.owner_id,
            downloads=int(repo.downloads or 0),
            created_at=repo.created_at,
            commit_oid=oid,
            commit_title=title,
            card=card,
            readme=readme,
            adapters=[(p, size, rep, hashes.get(sha) or {"sha256": sha}) for p, size, rep, sha in adapters],
        )
        write_adapters(conn, [draft])

    def unindex(self, s: Session, repo: HubRepo) -> None:
        if not self.config.index_adapters:
            return
        from lorahub.registry.rows import delete_adapters
        from lorahub.registry.tables import Adapter

        conn = s.connection()
        ids = [r[0] for r in conn.execute(sa.select(Adapter.id).where(Adapter.source_key == self.source_key(repo)))]
        delete_adapters(conn, ids)

    def reindex(self, s: Session, repo: HubRepo) -> None:
        """Re-index the main head (after a visibility change)."""
        if not self.config.index_adapters or not repo.sha:
            return
        head = s.exec(select(HubCommit).where(HubCommit.repo_id == repo.id, HubCommit.oid == repo.sha)).first()
        if head is None:
            return
        files = files_of(s, head)
        card, adapters, readme = policy.check_files(self.store, files, files)
        hashes = {}
        for _, _, _, sha in adapters:
            hashes[sha] = blob_fingerprints(sha, partial(self.store.materialized, sha), None)
        self.index(s, repo, head.oid, head.title, card, readme, adapters, hashes)


__all__ = ["CatalogueSync", "blob_fingerprints"]
