"""Reading adapters back as results: by id, by any fingerprint (exact or prefix), duplicates.

Rows are read on the driver's cursor (a :class:`lorahub.registry.database.Raw` reader) and built into
:class:`~lorahub.schemas.registry.SearchResult` without re-validation; the text search that
ranks ids is :mod:`lorahub.registry.search`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from lorahub.schemas.construct import builder
from lorahub.schemas.registry import HASH_FIELDS, HASH_LENGTHS, DupeGroup, SearchResult

from . import text as T
from .database import Raw, as_datetime, chunks

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


_FAMILIES = frozenset(T.FAMILIES)


def _values(row: Any) -> dict[str, Any]:
    """A result's fields of a row of :data:`_RESULT_COLUMNS`, less its score and matched hashes."""
    desc = row.description
    desc = " ".join(desc.split()) or None if desc else None
    published = row.published_at
    if published is not None and type(published) is not datetime:
        published = as_datetime(published)  # SQLite's raw cursor hands back text
    if published is not None and published.tzinfo is None:
        published = published.replace(tzinfo=timezone.utc)  # stored naive in UTC (see .rows): the JSON says so
    family = row.base_family
    autov3 = row.autov3
    return {
        "id": row.id,
        "name": row.name,
        "title": row.title,
        "source_kind": row.source_kind,
        "source": _source(row),
        "url": row.url or row.file_url,
        "author": row.author,
        "license": row.license,
        "base_family": family if family in _FAMILIES else "unknown",
        "base_model": row.base_model,
        "format": row.format,
        "rank": row.rank,
        "tags": T.lines(row.tags_text),
        "trigger_words": T.lines(row.trigger_words_text),
        "downloads": int(row.downloads or 0),
        "published_at": published,
        "description": desc,
        "version": row.version_name,
        "file_name": row.filename,
        "size": row.size,
        "sha256": row.sha256,
        "autov3": autov3.upper() if autov3 else None,
    }


#: A SearchResult of every field's value, without re-validating every field (about 8 us a result): rows come from
#: our own tables (:func:`lorahub.schemas.construct.builder`).
_built = builder(SearchResult)


def to_result(row: Any, score: float = 0.0, matched: Sequence[str] = ()) -> SearchResult:
    """A SearchResult of a row of :data:`_RESULT_COLUMNS`."""
    values = _values(row)
    values["score"] = round(score, 6)
    values["matched_hashes"] = list(matched)
    return _built(values)


#: Result rows a process keeps per database (:func:`results_for`), at most.
KEPT_ROWS = 20_000


class _Kept:
    """The result fields (:func:`_values`) of the rows read while the database's data version was ``version``."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.values: dict[int, dict[str, Any]] = {}


_kept: dict[str, _Kept] = {}  # Raw.key -> the rows kept of that database
_kept_lock = threading.Lock()


def _kept_for(raw: Raw, version: int) -> _Kept | None:
    """The rows kept for ``raw``'s database at ``version``: a newer version starts afresh. An older one (a
    search whose statement read it before another search read a newer one, or a database put back to an
    earlier state under a running process) gets None, and the rows kept go: its versions to come would
    otherwise meet theirs."""
    with _kept_lock:
        kept = _kept.get(raw.key)
        if kept is not None and kept.version > version:
            del _kept[raw.key]
            return None
        if kept is None or kept.version < version:
            kept = _kept[raw.key] = _Kept(version)
        return kept


def results_for(raw: Raw, ids: Sequence[int], scores: dict[int, float] | None = None, *,
                version: int | None = None) -> list[SearchResult]:
    """Search results for adapter ``ids`` (primary file shown), in the order given.

    ``version``: the data version (``registry_data_version``, migration 0116: raised by every transaction that
    writes the tables a result shows, with the rows, whoever writes them) that a statement of this search read
    before its hits (:func:`~.search.search_page`). The rows read are kept under it, and a later search that
    reads the same version is answered from them, with no statement: rows read after a search's statement are
    never older than it, none are kept past a newer version, and an older one drops them. The results'
    statement was about a third of PostgreSQL's work in a search of the HTTP benchmark's mix, and 0.43 ms of a
    SQLite server's 2.1-2.5 ms of CPU a request (2026-12-06)."""
    if not ids:
        return []
    scores = scores or {}
    kept = _kept_for(raw, version) if version is not None else None
    if kept is None:
        by_id = {r.id: _values(r) for r in _rows(raw, ids)}
    else:
        by_id = {}
        missing = []
        for i in ids:
            values = kept.values.get(i)
            if values is None:
                missing.append(i)
            else:
                by_id[i] = values
        if missing:
            read = {r.id: _values(r) for r in _rows(raw, missing)}
            with _kept_lock:
                if len(kept.values) + len(read) > KEPT_ROWS:
                    kept.values.clear()
                kept.values.update(read)
            by_id.update(read)
    out = []
    for i in ids:
        values = by_id.get(i)
        if values is not None:
            # A result of its own: its lists are not the kept ones (a caller may change its result).
            out.append(_built({**values, "tags": list(values["tags"]), "trigger_words": list(values["trigger_words"]),
                               "score": round(scores.get(i, 0.0), 6), "matched_hashes": []}))
    return out


def _rows(raw: Raw, ids: Sequence[int]) -> list[Any]:
    return raw.all(
        f"SELECT {_RESULT_COLUMNS} FROM adapters a "
        "LEFT JOIN adapter_files f ON f.adapter_id = a.id AND f.is_primary = :true "
        "LEFT JOIN adapter_versions v ON v.id = f.version_id WHERE a.id IN :ids",
        {"ids": list(ids), "true": True},
        prepare=True,  # primary-key lookups: planning cost as much as running it
    )


def viewer_owners(viewer: Any) -> tuple[bool, tuple[int, ...]]:
    """``(every private adapter, owner ids whose private adapters)`` a viewer sees: ``viewer`` is None
    (anonymous), a user id, or a ``PrivateView`` of :func:`lorahub.registry.hub.access.private_view`
    (the Hub server's policy: the caller's own and their organisations' adapters)."""
    if viewer is None:
        return False, ()
    if isinstance(viewer, int):
        return False, (viewer,)
    return bool(viewer.everything), tuple(sorted({int(o) for o in viewer.owners}))


def visibility_sql(viewer: Any, params: dict[str, Any]) -> str:
    """The SQL condition on ``adapters a`` of what ``viewer`` (see :func:`viewer_owners`) may see."""
    params["false"] = False
    everything, owners = viewer_owners(viewer)
    if everything:
        return "(a.private = :false OR a.private <> :false)"
    if not owners:
        return "a.private = :false"
    params["viewers"] = list(owners)
    return "(a.private = :false OR a.owner_id IN :viewers)"


_visibility = visibility_sql


def file_rows_where(raw: Raw, where: str, params: dict[str, Any], viewer: Any,
                    order: str = "a.downloads DESC, a.id DESC, f.id") -> list[Any]:
    cond = _visibility(viewer, params)
    return raw.all(
        f"SELECT {_RESULT_COLUMNS}{_HASHES} FROM adapter_files f JOIN adapters a ON a.id = f.adapter_id "
        f"JOIN adapter_versions v ON v.id = f.version_id WHERE ({where}) AND {cond} ORDER BY {order}",
        params,
    )


def _hash_conds(query: str) -> tuple[list[str], dict[str, Any], str | None]:
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
    return conds, params, reversed_crc


def by_hash_rows(raw: Raw, query: str, viewer: Any = None) -> list[Any]:
    """The file rows (with ``h_<hash>`` columns) :func:`by_hash` reports."""
    conds, params, _ = _hash_conds(query)
    if not conds:
        return []
    # One indexed lookup per column (an OR across columns would scan the table).
    union = " UNION ".join(f"SELECT id FROM adapter_files WHERE {c}" for c in conds)
    return file_rows_where(raw, f"f.id IN ({union})", params, viewer)


def by_hash(raw: Raw, query: str, viewer: Any = None) -> list[SearchResult]:
    """Files matching a lower-case hex ``query`` exactly or as a prefix, on every fingerprint column.

    A query of 8 hex also matches a CRC32 stored with its bytes reversed
    (Civitai's scanner printed CRC32 little-endian).
    """
    n = len(query)
    _, _, reversed_crc = _hash_conds(query)
    out = []
    for row in by_hash_rows(raw, query, viewer):
        matched = []
        for col in HASH_FIELDS:
            value = getattr(row, f"h_{col}")
            if value and (value.startswith(query) if n < HASH_LENGTHS[col] else value == query):
                matched.append(col)
        if reversed_crc and row.h_crc32 == reversed_crc and "crc32" not in matched:
            matched.append("crc32")
        out.append(to_result(row, 0.0, matched))
    return out


def used_by(raw: Raw, source: str, viewer: Any = None, *, hex_query: str | None = None) -> list[SearchResult]:
    """Blends (adapters whose recipe names their sources) made from ``source``.

    ``hex_query`` (lower-case hex, 8-64 digits): a source's SHA-256 or AutoV3, exact or a prefix, or
    any fingerprint of a registry file whose SHA-256 a blend names. Else ``source`` is a name: the
    adapters called (or titled) so, whose files' SHA-256 a blend names, or a source the recipe itself
    calls so."""
    params: dict[str, Any] = {}
    if hex_query is not None:
        params.update(h=hex_query, h_hi=hex_query + "g")
        conds = ["b.sha256 >= :h AND b.sha256 < :h_hi"]
        if len(hex_query) <= 12:
            conds.append("b.autov3 >= :h AND b.autov3 < :h_hi")
        files = [r.h_sha256 for r in by_hash_rows(raw, hex_query, viewer) if r.h_sha256]
    else:
        params["n"] = source.strip().lower()
        conds = ["lower(b.name) = :n"]
        vis: dict[str, Any] = {"n": params["n"]}
        named = raw.all(
            "SELECT f.sha256 FROM adapters a JOIN adapter_files f ON f.adapter_id = a.id "
            f"WHERE (lower(a.name) = :n OR lower(a.title) = :n) AND {_visibility(viewer, vis)}",
            vis,
        )
        files = [r[0] for r in named if r[0]]
    if files:
        params["files"] = sorted(set(files))
        conds.append("b.sha256 IN :files")
    cond = _visibility(viewer, params)
    union = " UNION ".join(f"SELECT b.adapter_id FROM blend_sources b WHERE {c}" for c in conds)
    rows = raw.all(f"SELECT a.id FROM adapters a WHERE a.id IN ({union}) AND {cond} "
                   "ORDER BY a.downloads DESC, a.id DESC", params)
    return results_for(raw, [r[0] for r in rows])


def dupes(raw: Raw, viewer: Any = None) -> list[DupeGroup]:
    """Groups of files with the same AutoV3 (identical tensor data), biggest groups first."""
    params: dict[str, Any] = {}
    cond = _visibility(viewer, params)
    keys = [
        r[0]
        for r in raw.all(
            "SELECT f.autov3 FROM adapter_files f JOIN adapters a ON a.id = f.adapter_id "
            f"WHERE f.id IN (SELECT id FROM adapter_files WHERE autov3 IS NOT NULL) AND {cond} "
            "GROUP BY f.autov3 HAVING count(*) > 1 "
            "ORDER BY count(*) DESC, f.autov3",
            params,
        )
    ]
    groups = []
    for part in chunks(keys):
        params = {"keys": list(part)}
        cond = _visibility(viewer, params)
        members: dict[str, list[Any]] = {}
        # The files by id, their ids by AutoV3 (as by_hash does; also above): with the AutoV3 condition
        # on the join, SQLite (whose statistics count the NULLs of files without AutoV3 as one value)
        # scanned every adapter to build a Bloom filter, 6-20x slower at 100k.
        for row in raw.all(
            f"SELECT {_RESULT_COLUMNS}{_HASHES} FROM adapter_files f JOIN adapters a ON a.id = f.adapter_id "
            "JOIN adapter_versions v ON v.id = f.version_id "
            f"WHERE f.id IN (SELECT id FROM adapter_files WHERE autov3 IN :keys) AND {cond} "
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


__all__ = ["by_hash", "dupes", "file_rows_where", "results_for", "to_result"]
