"""Adapter drafts: what the catalogue writes, before it is rows; one builder per kind of source.

A draft (:class:`AdapterDraft` with its :class:`VersionDraft` releases and their :class:`FileDraft`
files) describes one adapter as a source knows it; :func:`lorahub.registry.rows.write_adapters`
inserts it or replaces the adapter with the same ``source_key``. The builders:

- :func:`local_file_draft`  a local ``.safetensors`` file (``lorahub index PATH``);
- :func:`hub_repo_draft`    a Hub repo at a commit (the server's catalogue sync, ``lorahub index
  --hub``, and the repos ``lorahub push`` and ``pull`` record);
- :func:`record_draft`      an imported catalogue record (``lorahub index --records``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from lorahub.schemas.registry import (
    HASH_FIELDS,
    AdapterRecord,
    hub_source_key,
    local_source_key,
    record_source_key,
)

from .text import family_from_label

if TYPE_CHECKING:  # pragma: no cover
    from lorahub.schemas.adapters import InspectReport


@dataclass
class FileDraft:
    filename: str
    size: int | None = None
    format: str | None = None
    base_family: str | None = None
    rank: int | None = None
    alpha: float | None = None
    dtype: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    path: str | None = None
    mtime_ns: int | None = None
    inode: int | None = None
    repo_path: str | None = None
    url: str | None = None
    is_primary: bool = False
    #: The serialised ΔW sketch of the file's weights (:mod:`lorahub.adapters.sketch`), when they were read.
    sketch: bytes | None = None


@dataclass
class VersionDraft:
    name: str | None = None
    external_id: str | None = None
    revision: str | None = None
    base_family: str = "unknown"
    base_model: str | None = None
    url: str | None = None
    published_at: datetime | None = None
    trigger_words: list[str] = field(default_factory=list)
    files: list[FileDraft] = field(default_factory=list)


@dataclass
class AdapterDraft:
    source_kind: str
    source_key: str
    name: str
    title: str | None = None
    description: str | None = None
    author: str | None = None
    license: str | None = None
    url: str | None = None
    repo_id: str | None = None
    base_family: str | None = None
    base_model: str | None = None
    format: str | None = None
    rank: int | None = None
    alpha: float | None = None
    nsfw: bool = False
    downloads: int = 0
    published_at: datetime | None = None
    tags: list[str] = field(default_factory=list)
    trigger_words: list[str] = field(default_factory=list)
    extra: dict[str, Any] | None = None
    private: bool = False
    owner_id: int | None = None
    versions: list[VersionDraft] = field(default_factory=list)
    #: Replace this adapter (e.g. a moved file) instead of looking it up by source_key.
    existing_id: int | None = None
    #: A lorahub blend's sources (:func:`blend_sources`): ``sha256``, ``autov3``, ``name``, ``reference``.
    blend_sources: list[dict[str, str | None]] = field(default_factory=list)


def blend_sources(report: Any) -> list[dict[str, str | None]]:
    """The sources of the recipe a blend's InspectReport carries (none for other adapters)."""
    recipe = getattr(report, "recipe", None)
    if recipe is None:
        return []
    return [{"sha256": s.sha256.lower(), "autov3": s.autov3.lower(), "name": s.name, "reference": s.reference()}
            for s in recipe.sources]


#: Preferred names of the primary adapter file of a repo, in order.
PRIMARY_NAMES = ("pytorch_lora_weights.safetensors",)


def local_file_draft(path: str, st: os.stat_result, report: InspectReport, hashes: dict[str, Any]) -> AdapterDraft:
    """A local ``.safetensors`` file (``path``: its real path) from its InspectReport and fingerprints."""
    spec = report.modelspec
    tags = [t.strip() for t in (spec.get("modelspec.tags") or "").split(",") if t.strip()]
    published = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc).replace(tzinfo=None)
    file = FileDraft(
        filename=os.path.basename(path),
        size=st.st_size,
        format=report.format,
        base_family=report.base_family,
        rank=report.rank,
        alpha=report.alpha,
        dtype=report.dtype,
        hashes={c: hashes[c] for c in HASH_FIELDS if hashes.get(c)},
        sketch=hashes.get("sketch"),
        path=path,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        url=Path(path).as_uri(),
        is_primary=True,
    )
    extra: dict[str, Any] = {}
    if report.trigger_source:
        extra["trigger_source"] = report.trigger_source
    if report.declared_base_family and report.declared_base_family != report.base_family:
        extra["declared_base_family"] = report.declared_base_family
    return AdapterDraft(
        source_kind="local",
        source_key=local_source_key(path),
        name=Path(path).stem,
        title=report.title,
        description=spec.get("modelspec.description") or None,
        author=spec.get("modelspec.author") or None,
        license=spec.get("modelspec.license") or None,
        base_family=report.base_family,
        format=report.format,
        rank=report.rank,
        alpha=report.alpha,
        published_at=published,
        tags=tags,
        trigger_words=list(report.trigger_words),
        extra=extra or None,
        versions=[VersionDraft(base_family=report.base_family, published_at=published, files=[file])],
        blend_sources=blend_sources(report),
    )


def choose_primary(paths: list[str], sizes: dict[str, int]) -> str:
    """The primary adapter file of a repo: by name (:data:`PRIMARY_NAMES`), else the largest."""
    for name in PRIMARY_NAMES:
        for p in paths:
            if PurePosixPath(p).name == name:
                return p
    return sorted(paths, key=lambda p: (-sizes.get(p, 0), p))[0]


def _readme_body(text: str) -> str:
    """The README without its YAML front matter."""
    from lorahub.hub.card import front_matter

    if front_matter(text)[0] is None:
        return text.strip()
    # drop the front matter: everything up to the second '---' line
    lines = text.lstrip("\ufeff").splitlines()
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "\n".join(lines[i + 1 :]).strip()
    return text.strip()


def hub_repo_draft(
    *,
    endpoint: str,
    repo_id: str,
    url_prefix: str,
    namespace: str,
    name: str,
    private: bool,
    owner_id: int | None,
    downloads: int,
    created_at: Any,
    commit_oid: str,
    commit_title: str,
    card: dict[str, Any] | None,
    readme: str | None,
    adapters: list[tuple[str, int, Any, dict[str, str]]],  # (path, size, InspectReport or RepoAdapter, hashes)
) -> AdapterDraft:
    """A Hub repo whose head (``commit_oid``) holds ``adapters``: one version (the commit), one file
    per adapter with its fingerprints; the card gives licence, base model, tags and instance prompt.
    The server's catalogue sync, ``lorahub index --hub``, push and pull all record repos this way."""
    card = card or {}
    sizes = {p: s for p, s, _, _ in adapters}
    primary = choose_primary([p for p, _, _, _ in adapters], sizes)
    prim_report = next(r for p, _, r, _ in adapters if p == primary)
    base = card.get("base_model")
    base_model = base if isinstance(base, str) else (base[0] if isinstance(base, list) and base else None)
    lic = card.get("license") if isinstance(card.get("license"), str) else None
    tags = [str(t) for t in card.get("tags", []) if isinstance(t, (str, int, float))] if isinstance(card.get("tags"), list) else []
    words: list[str] = []
    ip = card.get("instance_prompt")
    if isinstance(ip, str) and ip.strip():
        words.append(ip.strip())
    for _, _, rep, _ in adapters:
        words.extend(rep.trigger_words)
    title = card.get("title") if isinstance(card.get("title"), str) else (prim_report.title or None)
    web = f"{endpoint}/{url_prefix}{repo_id}"
    files = [
        FileDraft(
            filename=PurePosixPath(p).name,
            size=s,
            format=rep.format,
            base_family=rep.base_family,
            rank=rep.rank,
            alpha=rep.alpha,
            dtype=rep.dtype,
            hashes=h,
            repo_path=p,
            url=f"{web}/resolve/{commit_oid}/{p}",
            is_primary=(p == primary),
        )
        for p, s, rep, h in sorted(adapters, key=lambda a: a[0])
    ]
    return AdapterDraft(
        source_kind="hub",
        source_key=hub_source_key(endpoint, repo_id, url_prefix),
        name=name,
        title=title,
        description=(readme or None) and _readme_body(readme)[:20000] or None,
        author=namespace,
        license=lic,
        url=web,
        repo_id=repo_id,
        base_family=prim_report.base_family,
        base_model=base_model,
        format=prim_report.format,
        rank=prim_report.rank,
        alpha=prim_report.alpha,
        downloads=downloads,
        published_at=created_at,
        tags=tags,
        # the Hub's mark of adult content (its model cards' tag): what Civitai calls nsfw
        nsfw="not-for-all-audiences" in {t.lower() for t in tags},
        trigger_words=words,
        private=private,
        owner_id=owner_id,
        blend_sources=blend_sources(prim_report),
        versions=[
            VersionDraft(
                name=commit_title or commit_oid[:12],
                external_id=commit_oid,
                revision=commit_oid,
                base_family=prim_report.base_family,
                base_model=base_model,
                url=f"{web}/tree/{commit_oid}",
                files=files,
            )
        ],
    )


def record_draft(rec: AdapterRecord) -> AdapterDraft:
    """An imported catalogue record (:class:`~lorahub.schemas.registry.AdapterRecord`)."""
    versions = []
    for v in rec.versions:
        family = v.base_family or family_from_label(v.base_model or rec.base_model)
        versions.append(
            VersionDraft(
                name=v.name,
                external_id=v.id,
                base_family=family,
                base_model=v.base_model or rec.base_model,
                url=v.url,
                published_at=v.created_at,
                trigger_words=list(v.trigger_words),
                files=[
                    FileDraft(
                        filename=f.name,
                        size=f.size,
                        format=f.format,
                        base_family=family,
                        rank=f.rank,
                        hashes=dict(f.hashes),
                        url=f.url,
                        is_primary=f.primary,
                    )
                    for f in v.files
                ],
            )
        )
    family = rec.base_family or family_from_label(rec.base_model)
    dates = [v.created_at for v in rec.versions if v.created_at]
    return AdapterDraft(
        source_kind="record",
        source_key=record_source_key(rec.source, rec.id),
        name=rec.name,
        description=rec.description,
        author=rec.author,
        license=rec.license,
        url=rec.url,
        base_family=family,
        base_model=rec.base_model,
        format=rec.format,
        rank=rec.rank,
        nsfw=rec.nsfw,
        downloads=rec.downloads,
        published_at=rec.created_at or (max(dates) if dates else None),
        tags=list(rec.tags),
        trigger_words=list(rec.trigger_words),
        extra=rec.extra or None,
        versions=versions,
    )


__all__ = [
    "AdapterDraft",
    "FileDraft",
    "VersionDraft",
    "choose_primary",
    "hub_repo_draft",
    "local_file_draft",
    "record_draft",
]
