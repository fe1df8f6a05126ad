"""Writing adapter rows in bulk (SQLAlchemy Core over :mod:`.coretables`, the sqlmodel tables' columns without
sqlmodel: a cold ``lorahub index`` does not import it).

Every source (the folder indexer, the record importer, the Hub indexer, the server's catalogue
sync) describes adapters as drafts (:mod:`lorahub.registry.drafts`) and hands them to
:func:`write_adapters`, which inserts new ones and replaces existing ones (same ``source_key``,
or ``existing_id``) in a few statements per batch: no per-row round trips. Reading them back is
:mod:`lorahub.registry.lookups` and :mod:`lorahub.registry.search`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from lorahub.schemas.registry import HASH_FIELDS

from . import text as T
from .coretables import (
    ADAPTER_EMBEDDINGS,
    ADAPTER_FILES,
    ADAPTER_SKETCHES,
    ADAPTER_TAGS,
    ADAPTER_VERSIONS,
    ADAPTERS,
    BLEND_SOURCES,
    TRIGGER_WORDS,
)
from .database import chunks, utcnow
from .drafts import AdapterDraft, FileDraft, VersionDraft

# Core tables, not the sqlmodel ones (.tables): a cold `lorahub index` does not import sqlmodel (coretables).
A = ADAPTERS
V = ADAPTER_VERSIONS
F = ADAPTER_FILES
TG = ADAPTER_TAGS
TW = TRIGGER_WORDS
BS = BLEND_SOURCES
EMB = ADAPTER_EMBEDDINGS

#: Longest description kept (PostgreSQL's tsvector has a 1 MB limit).
MAX_DESCRIPTION = 65_536


def _naive(dt: datetime | None) -> datetime | None:
    if dt is None or dt.tzinfo is None:
        return dt
    from datetime import timezone

    return dt.astimezone(timezone.utc).replace(tzinfo=None)


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for v in values:
        v = " ".join(str(v).split())
        if v and v.lower() not in seen:
            seen.add(v.lower())
            out.append(v)
    return out


def _primary(d: AdapterDraft) -> FileDraft | None:
    for v in d.versions:
        if v.files:
            return next((f for f in v.files if f.is_primary), v.files[0])
    return None


def _adapter_row(d: AdapterDraft, now: datetime) -> dict[str, Any]:
    primary = _primary(d)
    family = d.base_family
    if not family or family == "unknown":
        family = next((v.base_family for v in d.versions if v.base_family and v.base_family != "unknown"), None)
        family = family or (primary.base_family if primary else None) or "unknown"
    base_model = d.base_model or next((v.base_model for v in d.versions if v.base_model), None)
    fmt = d.format or (primary.format if primary else None)
    rank = d.rank if d.rank is not None else (primary.rank if primary else None)
    alpha = d.alpha if d.alpha is not None else (primary.alpha if primary else None)
    tags = [t.lower() for t in _dedupe(d.tags)]
    words = _dedupe([*d.trigger_words, *(w for v in d.versions for w in v.trigger_words)])
    published = _naive(d.published_at) or next((_naive(v.published_at) for v in d.versions if v.published_at), None)
    description = d.description[:MAX_DESCRIPTION] if d.description else d.description
    return {
        "source_kind": d.source_kind,
        "source_key": d.source_key,
        "name": d.name,
        "name_norm": T.norm_name(d.name),
        "title": d.title if d.title and d.title != d.name else None,
        "description": description,
        "author": d.author,
        "owner_id": d.owner_id,
        "private": bool(d.private),
        "license": d.license,
        "url": d.url,
        "repo_id": d.repo_id,
        "base_family": family,
        "base_model": base_model,
        "format": fmt,
        "rank": rank,
        "alpha": alpha,
        "nsfw": bool(d.nsfw),
        "downloads": max(int(d.downloads or 0), 0),
        "published_at": published or now,
        "updated_at": now,
        "tags_text": T.join_lines(tags),
        "trigger_words_text": T.join_lines(words),
        "search_facets": T.adapter_facets(
            base_family=family,
            base_model=base_model,
            format=fmt,
            tags=tags,
            author=d.author,
            license=d.license,
            private=bool(d.private),
            owner_id=d.owner_id,
        ),
        "extra": json.dumps(d.extra, ensure_ascii=False, default=str) if d.extra else None,
    }


def allocate_ids(conn: Connection, table: Any, n: int) -> list[int]:
    """``n`` new primary keys of ``table``, known before the insert (no RETURNING round trip per row).

    SQLite: after the largest id, safe because the caller holds the write lock
    (BEGIN IMMEDIATE). PostgreSQL: from the table's sequence.
    """
    if n <= 0:
        return []
    if conn.dialect.name == "postgresql":
        seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table.name}).scalar_one()
        rows = conn.execute(text("SELECT nextval(CAST(:s AS regclass)) FROM generate_series(1, :n)"), {"s": seq, "n": n})
        return [int(r[0]) for r in rows]
    start = conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()
    return list(range(int(start) + 1, int(start) + 1 + n))


def delete_children(conn: Connection, ids: Sequence[int]) -> None:
    from .semantic import prune_removals

    prune_removals(conn)  # the vectors' removals are noted by the database (search processes catch up on them)
    for part in chunks(list(ids)):
        for table in (EMB, BS, TW, TG, F, V):
            conn.execute(delete(table).where(table.c.adapter_id.in_(part)))


def delete_adapters(conn: Connection, ids: Sequence[int]) -> int:
    if not ids:
        return 0
    delete_children(conn, ids)
    for part in chunks(list(ids)):
        conn.execute(delete(A).where(A.c.id.in_(part)))
    return len(ids)


def write_adapters(conn: Connection, drafts: Sequence[AdapterDraft]) -> list[int]:
    """Insert or replace ``drafts`` (inside the caller's transaction); their ids, in order."""
    if not drafts:
        return []
    now = utcnow()
    # The last draft of a source_key wins.
    last: dict[str, int] = {}
    for i, d in enumerate(drafts):
        last[d.source_key] = i
    keep = [i for i, d in enumerate(drafts) if last[d.source_key] == i]
    todo = [drafts[i] for i in keep]

    existing: dict[str, int] = {}
    lookup = [d.source_key for d in todo if d.existing_id is None]
    for part in chunks(lookup):
        for key, aid in conn.execute(select(A.c.source_key, A.c.id).where(A.c.source_key.in_(part))):
            existing[key] = aid
    ids: list[int | None] = [d.existing_id or existing.get(d.source_key) for d in todo]

    rows = [_adapter_row(d, now) for d in todo]
    old = [(aid, row) for aid, row in zip(ids, rows, strict=True) if aid is not None]
    if old:
        delete_children(conn, [aid for aid, _ in old])
        stmt = update(A).where(A.c.id == bindparam("b_id"))
        conn.execute(stmt, [{"b_id": aid, **row} for aid, row in old])
    fresh = [i for i, aid in enumerate(ids) if aid is None]
    if fresh:
        for i, aid in zip(fresh, allocate_ids(conn, A, len(fresh)), strict=True):
            ids[i] = aid
        conn.execute(insert(A), [{**rows[i], "id": ids[i], "created_at": now} for i in fresh])

    version_rows: list[dict[str, Any]] = []
    version_owner: list[tuple[int, VersionDraft]] = []
    for aid, d in zip(ids, todo, strict=True):
        for pos, v in enumerate(d.versions):
            version_rows.append(
                {
                    "adapter_id": aid,
                    "position": pos,
                    "name": v.name,
                    "external_id": v.external_id,
                    "revision": v.revision,
                    "base_family": v.base_family or "unknown",
                    "base_model": v.base_model,
                    "url": v.url,
                    "published_at": _naive(v.published_at),
                }
            )
            version_owner.append((aid, v))
    version_ids = allocate_ids(conn, V, len(version_rows))
    if version_rows:
        for row, vid in zip(version_rows, version_ids, strict=True):
            row["id"] = vid
        conn.execute(insert(V), version_rows)

    file_rows: list[dict[str, Any]] = []
    sketch_rows: dict[str, dict[str, Any]] = {}
    word_rows: list[dict[str, Any]] = []
    primaries = {id(_primary(d)) for d in todo}
    for vid, (aid, v) in zip(version_ids, version_owner, strict=True):
        for f in v.files:
            row = {
                "adapter_id": aid,
                "version_id": vid,
                "is_primary": id(f) in primaries,
                "filename": f.filename,
                "size": f.size,
                "format": f.format,
                "base_family": f.base_family,
                "rank": f.rank,
                "alpha": f.alpha,
                "dtype": f.dtype,
                "path": f.path,
                "mtime_ns": f.mtime_ns,
                "inode": f.inode,
                "repo_path": f.repo_path,
                "url": f.url,
                "indexed_at": now,
            }
            for col in HASH_FIELDS:
                value = f.hashes.get(col)
                row[col] = value.lower() if value else None
            file_rows.append(row)
            if f.sketch and row["sha256"]:
                sketch_rows[row["sha256"]] = sketch_row(row["sha256"], f.sketch, now)
        for pos, w in enumerate(_dedupe(v.trigger_words)):
            word_rows.append({"adapter_id": aid, "version_id": vid, "position": pos, "word": w})
    tag_rows = []
    for aid, d in zip(ids, todo, strict=True):
        for pos, w in enumerate(_dedupe(d.trigger_words)):
            word_rows.append({"adapter_id": aid, "version_id": None, "position": pos, "word": w})
        for t in dict.fromkeys(t.lower() for t in _dedupe(d.tags)):
            tag_rows.append({"adapter_id": aid, "tag": t[:200]})
    if file_rows:
        conn.execute(insert(F), file_rows)
    if sketch_rows:
        write_sketches(conn, list(sketch_rows.values()))
    if word_rows:
        conn.execute(insert(TW), word_rows)
    if tag_rows:
        conn.execute(insert(TG), tag_rows)
    blend_rows = [{"adapter_id": aid, "position": pos, **src}
                  for aid, d in zip(ids, todo, strict=True) for pos, src in enumerate(d.blend_sources)]
    if blend_rows:
        conn.execute(insert(BS), blend_rows)

    # The records' sentence embeddings (semantic search), in the same transaction.
    from .semantic import write_embeddings

    write_embeddings(conn, [int(aid) for aid in ids], rows, replace=False)  # delete_children removed theirs

    by_key = {d.source_key: aid for d, aid in zip(todo, ids, strict=True)}
    return [int(by_key[d.source_key]) for d in drafts]


def sketch_row(sha256: str, data: bytes, now: datetime) -> dict[str, Any]:
    """The ``adapter_sketches`` row of a serialised sketch (its version and vector read from it)."""
    from lorahub.adapters.sketch import VERSION, stored_parts

    version, modules, vector = stored_parts(data)
    return {"sha256": sha256.lower(), "version": version if version == VERSION else -1, "modules": modules,
            "vector": vector, "data": data, "created_at": now}


def write_sketches(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert sketches; a SHA-256 already sketched keeps its row (the same bytes give the same sketch) unless
    that row is of another sketch version, which the new one replaces."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    for part in chunks(rows, 200):
        stmt = upsert(ADAPTER_SKETCHES).values(list(part))
        new = stmt.excluded
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["sha256"],
            set_={"version": new.version, "modules": new.modules, "vector": new.vector, "data": new.data,
                  "created_at": new.created_at},
            where=ADAPTER_SKETCHES.c.version != new.version,
        ))


__all__ = [
    "A", "BS", "F", "TG", "TW", "V", "allocate_ids", "delete_adapters", "sketch_row", "write_adapters", "write_sketches",
]
