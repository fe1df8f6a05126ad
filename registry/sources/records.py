"""Bulk import of metadata-only records (JSON Lines).

* ``lorahub`` format: one :class:`lorahub.schemas.registry.AdapterRecord` per
  line (``docs/registry.md``; JSON Schema ``schemas/json/adapter-record.schema.json``).
* ``civitai`` format: one Civitai model object per line as the public API
  returns it (``/api/v1/models``: ``id, name, type, tags, creator, description,
  stats, license, versions[files[hashes]]``), converted by :func:`civitai_to_record`.

Every line is parsed and checked before anything is written; one bad line fails
the import with ``FILE:LINE: reason``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lorahub.errors import RegistryError, UsageError
from lorahub.schemas.registry import AdapterRecord, RecordFile, RecordVersion

from ..text import family_from_label

FORMATS = ("lorahub", "civitai")


#: Licence Civitai shows for a base family (the uploader's extra permissions go to ``extra.permissions``).
CIVITAI_FAMILY_LICENSE = {"sd1": "creativeml-openrail-m", "sd2": "creativeml-openrail-m", "sdxl": "openrail++"}


def _date(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def civitai_to_record(obj: dict[str, Any]) -> AdapterRecord:
    """One Civitai model object -> an :class:`AdapterRecord` (source ``civitai``)."""
    if not isinstance(obj, dict) or "id" not in obj or "name" not in obj:
        raise ValueError("not a Civitai model object (needs id and name)")
    mid = obj["id"]
    versions = []
    for v in obj.get("versions") or obj.get("modelVersions") or []:
        vid = v.get("id")
        files = []
        model_files = [f for f in v.get("files") or [] if (f.get("type") or "Model") == "Model"]
        primary_seen = any(f.get("primary") for f in model_files)
        for i, f in enumerate(model_files):
            size_kb = f.get("sizeKB")
            files.append(
                RecordFile(
                    name=f.get("name") or f"{mid}-{vid}-{i}",
                    size=int(round(float(size_kb) * 1024)) if size_kb is not None else None,
                    url=f.get("downloadUrl") or (f"https://civitai.com/api/download/models/{vid}" if vid else None),
                    primary=bool(f.get("primary")) if primary_seen else i == 0,
                    hashes=f.get("hashes") or {},
                )
            )
        base = v.get("baseModel")
        versions.append(
            RecordVersion(
                id=str(vid) if vid is not None else None,
                name=v.get("name"),
                base_model=base,
                base_family=family_from_label(base),  # type: ignore[arg-type]
                trigger_words=[w for w in v.get("trainedWords") or [] if isinstance(w, str)],
                created_at=_date(v.get("createdAt") or v.get("publishedAt")),
                url=f"https://civitai.com/models/{mid}?modelVersionId={vid}" if vid else None,
                files=files,
            )
        )
    family = next((v.base_family for v in versions if v.base_family), "unknown")
    stats = obj.get("stats") or {}
    creator = obj.get("creator")
    author = creator.get("username") if isinstance(creator, dict) else creator
    extra: dict[str, Any] = {"type": obj.get("type")}
    if isinstance(obj.get("license"), dict):
        extra["permissions"] = obj["license"]
    for key in ("favoriteCount", "rating", "ratingCount"):
        if key in stats:
            extra[key] = stats[key]
    dates = [v.created_at for v in versions if v.created_at]
    return AdapterRecord(
        source="civitai",
        id=str(mid),
        name=str(obj["name"]).strip() or str(mid),
        url=f"https://civitai.com/models/{mid}",
        author=author,
        description=obj.get("description") or None,
        license=CIVITAI_FAMILY_LICENSE.get(family),
        tags=[t for t in obj.get("tags") or [] if isinstance(t, str)],
        base_model=versions[0].base_model if versions else None,
        base_family=family,  # type: ignore[arg-type]
        nsfw=bool(obj.get("nsfw")),
        downloads=int(stats.get("downloadCount") or 0),
        created_at=max(dates) if dates else None,
        versions=versions,
        extra=extra,
    )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        fh = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    yield n, line
        except UnicodeDecodeError as exc:
            raise RegistryError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _why(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = err.get("msg", "invalid")
    return f"{loc}: {msg}" if loc else msg


def read_records(path: Path, *, fmt: str = "lorahub") -> list[AdapterRecord]:
    """Parse and check every line of a JSON Lines file; RegistryError names the first bad line."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown record format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    out = []
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{path}:{n}: not JSON ({exc.msg})") from None
        try:
            out.append(civitai_to_record(obj) if fmt == "civitai" else AdapterRecord.model_validate(obj))
        except ValidationError as exc:
            raise RegistryError(f"{path}:{n}: {_why(exc)}") from None
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"{path}:{n}: {exc}") from None
    return out


__all__ = ["FORMATS", "civitai_to_record", "read_records"]
