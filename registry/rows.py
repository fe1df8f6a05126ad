"""Writing and reading registry rows in bulk (SQLAlchemy Core over the sqlmodel tables).

Every writer (the folder indexer, the record importer, later the Hub indexer
and the server) describes adapters as :class:`AdapterDraft` objects and hands
them to :func:`write_adapters`, which inserts new ones and replaces existing
ones (same ``source_key``, or ``existing_id``) in a few statements per batch:
no per-row round trips.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from lorahub.schemas.registry import HASH_FIELDS, HASH_LENGTHS, DupeGroup, SearchResult

from . import text as T
from .database import Raw, as_datetime
from .tables import Adapter, AdapterFile, AdapterTag, AdapterVersion, TriggerWord, utcnow

A = Adapter.__table__
V = AdapterVersion.__table__
F = AdapterFile.__table__
TG = AdapterTag.__table__
TW = TriggerWord.__table__

#: Longest description kept (PostgreSQL's tsvector has a 1 MB limit).
MAX_DESCRIPTION = 65_536
CHUNK = 500


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


def chunks(seq: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


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
        "tags_text": "\n".join(tags),
        "trigger_words_text": "\n".join(words),
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
    for part in chunks(list(ids)):
        for table in (TW, TG, F, V):
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
    if word_rows:
        conn.execute(insert(TW), word_rows)
    if tag_rows:
        conn.execute(insert(TG), tag_rows)

    by_key = {d.source_key: aid for d, aid in zip(todo, ids, strict=True)}
    return [int(by_key[d.source_key]) for d in drafts]


# --------------------------------------------------------------------------------------------
# Reading results

_RESULT_COLUMNS = """
a.id, a.name, a.title, a.source_kind, a.source_key, a.url, a.author, a.license, a.base_family,
a.base_model, a.format, a.rank, a.tags_text, a.trigger_words_text, a.downloads, a.published_at,
substr(a.description, 1, 200) AS description, a.repo_id,
f.filename, f.size, f.sha256, f.autov3, f.path, f.repo_path, f.url AS file_url, v.name AS version_name,
v.revision
"""

_HASHES = ", " + ", ".join(f"f.{c} AS h_{c}" for c in HASH_FIELDS)


def _source(row: Any) -> str:
    kind = row.source_kind
    if kind == "local":
        return row.path or row.source_key.split(":", 1)[-1]
    if kind == "hub":
        at = f"@{row.revision[:12]}" if row.revision else ""
        inside = f":{row.repo_path}" if row.repo_path else ""
        return f"{row.repo_id or row.source_key}{at}{inside}"
    return row.source_key.split(":", 1)[-1] if row.source_key.startswith("record:") else row.source_key


def _split(value: str | None) -> list[str]:
    return [v for v in (value or "").split("\n") if v]


def _utc(dt: datetime | None) -> datetime | None:
    """Stored naive in UTC (see :func:`_naive`); results say so, so that their JSON carries the offset."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def to_result(row: Any, score: float = 0.0, matched: Sequence[str] = ()) -> SearchResult:
    desc = row.description
    if desc:
        desc = " ".join(desc.split())
    # Rows come from our own tables: build without re-validating every field.
    return SearchResult.model_construct(
        id=row.id,
        name=row.name,
        title=row.title,
        source_kind=row.source_kind,
        source=_source(row),
        url=row.url or row.file_url,
        author=row.author,
        license=row.license,
        base_family=row.base_family if row.base_family in T.FAMILIES else "unknown",
        base_model=row.base_model,
        format=row.format,
        rank=row.rank,
        tags=_split(row.tags_text),
        trigger_words=_split(row.trigger_words_text),
        downloads=int(row.downloads or 0),
        published_at=_utc(as_datetime(row.published_at)),
        description=desc or None,
        version=row.version_name,
        file_name=row.filename,
        size=row.size,
        sha256=row.sha256,
        autov3=row.autov3.upper() if row.autov3 else None,
        score=round(score, 6),
        matched_hashes=list(matched),
    )


def results_for(conn: Connection, ids: Sequence[int], scores: dict[int, float] | None = None) -> list[SearchResult]:
    """Search results for adapter ``ids`` (primary file shown), in the order given."""
    if not ids:
        return []
    rows = Raw(conn).all(
        f"SELECT {_RESULT_COLUMNS} FROM adapters a "
        "LEFT JOIN adapter_files f ON f.adapter_id = a.id AND f.is_primary = :true "
        "LEFT JOIN adapter_versions v ON v.id = f.version_id WHERE a.id IN :ids",
        {"ids": list(ids), "true": True},
        prepare=True,  # primary-key lookups: planning cost as much as running it
    )
    by_id = {r.id: r for r in rows}
    scores = scores or {}
    return [to_result(by_id[i], scores.get(i, 0.0)) for i in ids if i in by_id]


def _visibility(viewer: int | None, params: dict[str, Any]) -> str:
    params["false"] = False
    if viewer is None:
        return "a.private = :false"
    params["viewer"] = viewer
    return "(a.private = :false OR a.owner_id = :viewer)"


def file_rows_where(conn: Connection, where: str, params: dict[str, Any], viewer: int | None,
                    order: str = "a.downloads DESC, a.id DESC, f.id") -> list[Any]:
    cond = _visibility(viewer, params)
    return Raw(conn).all(
        f"SELECT {_RESULT_COLUMNS}{_HASHES} FROM adapter_files f JOIN adapters a ON a.id = f.adapter_id "
        f"JOIN adapter_versions v ON v.id = f.version_id WHERE ({where}) AND {cond} ORDER BY {order}",
        params,
    )


def by_hash(conn: Connection, query: str, viewer: int | None = None) -> list[SearchResult]:
    """Files matching a lower-case hex ``query`` exactly or as a prefix, on every fingerprint column.

    A query of 8 hex also matches a CRC32 stored with its bytes reversed
    (Civitai's scanner printed CRC32 little-endian).
    """
    n = len(query)
    params: dict[str, Any] = {"h": query, "h_hi": query + "g"}
    conds = []
    for col in HASH_FIELDS:
        length = HASH_LENGTHS[col]
        if n > length:
            continue
        conds.append(f"{col} = :h" if n == length else f"{col} >= :h AND {col} < :h_hi")
    reversed_crc = None
    if n == 8:
        reversed_crc = "".join(reversed([query[i : i + 2] for i in range(0, 8, 2)]))
        if reversed_crc != query:
            params["h_rev"] = reversed_crc
            conds.append("crc32 = :h_rev")
    if not conds:
        return []
    # One indexed lookup per column (an OR across columns would scan the table).
    union = " UNION ".join(f"SELECT id FROM adapter_files WHERE {c}" for c in conds)
    out = []
    for row in file_rows_where(conn, f"f.id IN ({union})", params, viewer):
        matched = []
        for col in HASH_FIELDS:
            value = getattr(row, f"h_{col}")
            if value and (value.startswith(query) if n < HASH_LENGTHS[col] else value == query):
                matched.append(col)
        if reversed_crc and row.h_crc32 == reversed_crc and "crc32" not in matched:
            matched.append("crc32")
        out.append(to_result(row, 0.0, matched))
    return out


def dupes(conn: Connection, viewer: int | None = None) -> list[DupeGroup]:
    """Groups of files with the same AutoV3 (identical tensor data), biggest groups first."""
    raw = Raw(conn)
    params: dict[str, Any] = {}
    cond = _visibility(viewer, params)
    keys = [
        r[0]
        for r in raw.all(
            "SELECT f.autov3 FROM adapter_files f JOIN adapters a ON a.id = f.adapter_id "
            f"WHERE f.autov3 IS NOT NULL AND {cond} GROUP BY f.autov3 HAVING count(*) > 1 "
            "ORDER BY count(*) DESC, f.autov3",
            params,
        )
    ]
    groups = []
    for part in chunks(keys):
        params = {"keys": list(part)}
        cond = _visibility(viewer, params)
        members: dict[str, list[Any]] = {}
        for row in raw.all(
            f"SELECT {_RESULT_COLUMNS}{_HASHES} FROM adapter_files f JOIN adapters a ON a.id = f.adapter_id "
            f"JOIN adapter_versions v ON v.id = f.version_id WHERE f.autov3 IN :keys AND {cond} "
            "ORDER BY f.autov3, a.name, f.id",
            params,
        ):
            members.setdefault(row.h_autov3, []).append(row)
        for key in part:
            rows = members.get(key, [])
            if len(rows) < 2:
                continue
            shas = {r.h_sha256 for r in rows}
            tensors = {r.h_tensor_sha256 for r in rows if r.h_tensor_sha256}
            groups.append(
                DupeGroup(
                    autov3=key.upper(),
                    tensor_sha256=next(iter(tensors)) if len(tensors) == 1 else None,
                    identical_files=len(shas) == 1 and None not in shas,
                    members=[to_result(r, 0.0, ["autov3"]) for r in rows],
                )
            )
    return groups


__all__ = [
    "AdapterDraft",
    "FileDraft",
    "VersionDraft",
    "by_hash",
    "delete_adapters",
    "dupes",
    "results_for",
    "to_result",
    "write_adapters",
]
