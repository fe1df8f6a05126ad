"""Contracts of the registry: the JSON Lines import record, search queries and results,
hash lookups, duplicate groups and index summaries.

The import record (:class:`AdapterRecord`, one JSON object per line) is how
catalogues from elsewhere enter the registry (``lorahub index --records
FILE.jsonl``); ``docs/registry.md`` documents it with an example.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .adapters import AdapterFormat, BaseFamily

SourceKind = Literal["local", "hub", "record"]
SortOrder = Literal["relevance", "newest", "downloads"]
#: How words are matched: ``auto`` is ``hybrid`` where the registry has sentence embeddings and the model is
#: installed, else ``keyword``.
SearchMode = Literal["auto", "keyword", "semantic", "hybrid"]

#: The one definition of the fingerprint fields: name -> hex length (lower case in the database), in
#: lookup order. :data:`HashType`, :data:`HASH_FIELDS`, the ``adapter_files`` hash columns, a record's
#: ``hashes`` and what push and pull record all come from it.
HASH_LENGTHS: dict[str, int] = {
    "sha256": 64,
    "autov1": 8,
    "autov2": 10,
    "autov3": 12,
    "tensor_sha256": 64,
    "crc32": 8,
    "blake3": 64,
}
#: Every fingerprint field, in lookup order.
HASH_FIELDS: tuple[str, ...] = tuple(HASH_LENGTHS)
HashType = Literal[HASH_FIELDS]  # type: ignore[valid-type] - Literal["sha256", "autov1", ...]

#: Spellings accepted as hash names in import records (compared lower case).
HASH_ALIASES: dict[str, str] = {
    **{name: name for name in HASH_FIELDS},
    "sha-256": "sha256",
    "tensor-sha256": "tensor_sha256",
    "sshs_model_hash": "tensor_sha256",
}


def local_source_key(path: str) -> str:
    """``adapters.source_key`` of a local file (its absolute real path)."""
    return f"local:{path}"


def hub_source_key(endpoint: str, repo_id: str, url_prefix: str = "") -> str:
    """``adapters.source_key`` of a Hub repo: ``hub:<endpoint>/<URL prefix><repo id>`` (the prefix is
    ``datasets/`` or ``spaces/`` for those repo types, empty for models)."""
    return f"hub:{endpoint}/{url_prefix}{repo_id}"


def record_source_key(source: str, record_id: str) -> str:
    """``adapters.source_key`` of an imported record: ``record:<catalogue>:<id>``."""
    return f"record:{source}:{record_id}"


_HEX = re.compile(r"[0-9a-f]+")

#: Largest page * limit a search serves (deep pages cost time on every backend).
MAX_SEARCH_WINDOW = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


def normalize_hashes(value: Any) -> dict[str, str]:
    """Hash names to canonical lower-case keys, values to lower-case hex; checks lengths.

    Empty values are dropped; ``autov2`` is derived from ``sha256`` and
    ``autov3`` from ``tensor_sha256``, and contradicting pairs are refused.
    Civitai's names (``SHA256``, ``AutoV2``, ``CRC32``...) are accepted.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("hashes must be an object of hash name -> hex string")
    out: dict[str, str] = {}
    for raw_key, raw in value.items():
        key = HASH_ALIASES.get(str(raw_key).strip().lower())
        if key is None:
            raise ValueError(f"unknown hash type {raw_key!r} (known: {', '.join(HASH_LENGTHS)})")
        if raw is None or raw == "":
            continue
        if not isinstance(raw, str):
            raise ValueError(f"hash {raw_key} must be a string")
        hexv = raw.strip().lower()
        if hexv.startswith("0x"):
            hexv = hexv[2:]
        if not _HEX.fullmatch(hexv) or len(hexv) != HASH_LENGTHS[key]:
            raise ValueError(f"hash {raw_key} must be {HASH_LENGTHS[key]} hex digits, got {raw!r}")
        out[key] = hexv
    for full, short in (("sha256", "autov2"), ("tensor_sha256", "autov3")):
        if full in out:
            derived = out[full][: HASH_LENGTHS[short]]
            if short in out and out[short] != derived:
                raise ValueError(f"{short} {out[short]} contradicts {full} {out[full]}")
            out[short] = derived
    return out


def _clean_words(values: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for v in values:
        text = " ".join(str(v).split())
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out


class RecordFile(_Model):
    """One downloadable file of a record version."""

    name: str = Field(description="File name, e.g. add_detail.safetensors")
    size: int | None = Field(None, ge=0, description="Size in bytes")
    url: str | None = Field(None, description="Download URL")
    primary: bool = Field(False, description="The version's main file (default: the first file)")
    format: AdapterFormat | None = Field(None, description="Key format, when known")
    rank: int | None = Field(None, ge=1)
    hashes: dict[HashType, str] = Field(
        default_factory=dict,
        description=f"Any of {', '.join(HASH_FIELDS)} (Civitai spellings accepted; "
        "case-insensitive); autov2/autov3 are derived from sha256/tensor_sha256",
    )

    @field_validator("hashes", mode="before")
    @classmethod
    def _hashes(cls, value: Any) -> dict[str, str]:
        return normalize_hashes(value)


class RecordVersion(_Model):
    """One version (release) of a record; Civitai model versions map here."""

    id: str | None = Field(None, description="Version id at the source")
    name: str | None = None
    base_model: str | None = Field(None, description="Base model label as the source says it (SD 1.5, SDXL 1.0, Pony...)")
    base_family: BaseFamily | None = Field(None, description="Derived from base_model when absent")
    trigger_words: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    url: str | None = None
    files: list[RecordFile] = Field(default_factory=list)

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("trigger_words")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        return _clean_words(value)


class AdapterRecord(_Model):
    """One line of a ``lorahub index --records`` JSON Lines file: an adapter known by metadata and hashes.

    ``(source, id)`` identifies the record: importing it again replaces it.
    ``files`` is a shortcut for a record with a single unnamed version.
    """

    source: str = Field("import", min_length=1, max_length=64, description="Catalogue name, e.g. civitai")
    id: str = Field(min_length=1, max_length=200, description="Identifier inside the catalogue")
    name: str = Field(min_length=1)
    url: str | None = None
    author: str | None = None
    description: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    trigger_words: list[str] = Field(default_factory=list, description="Added to every version's trigger words")
    base_model: str | None = Field(None, description="Label of the newest version's base model, if versions lack one")
    base_family: BaseFamily | None = None
    format: AdapterFormat | None = None
    rank: int | None = Field(None, ge=1)
    nsfw: bool = False
    downloads: int = Field(0, ge=0)
    created_at: datetime | None = Field(None, description="Publication time (default: the newest version's)")
    versions: list[RecordVersion] = Field(default_factory=list, description="Newest first")
    files: list[RecordFile] = Field(default_factory=list, description="Shortcut: files of a single version")
    extra: dict[str, Any] = Field(default_factory=dict, description="Anything else the catalogue knows (kept, not searched)")

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return [t.lower() for t in _clean_words(value)]

    @field_validator("trigger_words")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        return _clean_words(value)

    @model_validator(mode="after")
    def _files_shortcut(self) -> AdapterRecord:
        if self.files:
            if self.versions:
                raise ValueError("give either files or versions, not both")
            self.versions = [RecordVersion(files=self.files)]
            self.files = []
        return self


class SearchQuery(_Model):
    """A registry search: words plus filters, sorted and paginated."""

    query: str | None = Field(None, description="Words to find in name/title, trigger words/tags and description")
    base: str | None = Field(None, description="Base family (sd1, sd2, sdxl, sd3, flux, chroma, qwen, wan, hunyuanvideo, hidream, lumina, pixart, kolors, auraflow, ltxv, cosmos, unknown) or a base label (pony, illustrious...)")
    format: str | None = Field(None, description="Adapter format, e.g. kohya-lora")
    tags: list[str] = Field(default_factory=list, description="Every tag must be present")
    author: str | None = None
    license: str | None = None
    min_rank: int | None = Field(None, ge=1)
    max_rank: int | None = Field(None, ge=1)
    sort: SortOrder = "relevance"
    limit: int = Field(20, ge=1, le=500)
    page: int = Field(1, ge=1)
    mode: SearchMode = Field(
        "auto",
        description="keyword: words as written (tiers); semantic: by meaning (sentence embeddings); hybrid: both "
        "fused (exact names, trigger words and hashes still first); auto: hybrid where the registry has "
        "embeddings, else keyword. semantic and hybrid rank by relevance only",
    )

    @model_validator(mode="after")
    def _window(self) -> SearchQuery:
        if self.page * self.limit > MAX_SEARCH_WINDOW:
            raise ValueError(f"page * limit must be at most {MAX_SEARCH_WINDOW}; narrow the search instead")
        if self.min_rank and self.max_rank and self.min_rank > self.max_rank:
            raise ValueError("min_rank is larger than max_rank")
        if self.mode in ("semantic", "hybrid") and self.sort != "relevance":
            raise ValueError(f"mode {self.mode} ranks by relevance: use sort=relevance (or mode keyword)")
        return self


class SearchResult(_Model):
    """One adapter found by a search (or one file found by a hash lookup)."""

    id: int = Field(description="Registry id of the adapter")
    name: str
    title: str | None = None
    source_kind: SourceKind
    source: str = Field(description="Local path, hub repo@revision, or the record's catalogue:id")
    url: str | None = None
    author: str | None = None
    license: str | None = None
    base_family: BaseFamily
    base_model: str | None = Field(None, description="Base model label (e.g. Pony) when the source gives one")
    format: str | None = None
    rank: int | None = None
    tags: list[str] = Field(default_factory=list)
    trigger_words: list[str] = Field(default_factory=list)
    downloads: int = 0
    published_at: datetime | None = None
    description: str | None = Field(None, description="First 200 characters of the description")
    version: str | None = Field(None, description="Version name of the file shown")
    file_name: str | None = None
    size: int | None = None
    sha256: str | None = None
    autov3: str | None = Field(None, description="Upper case, as Civitai shows it")
    score: float = Field(
        0.0,
        description="Relevance: integer part = match tier (4 exact name, 3 every word in the name, 2 in name/trigger "
        "words/tags, 1 anywhere), fraction = popularity; higher is better. Other sort orders and hash lookups: "
        "popularity only (or 0)",
    )
    matched_hashes: list[HashType] = Field(default_factory=list, description="Hash lookups: which fingerprints matched")

    @field_validator("published_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """The registry stores naive UTC: say so, so that JSON carries the offset an RFC 3339
        ``date-time`` needs (``...Z``; found by schemathesis against the server's OpenAPI)."""
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class HashLookup(_Model):
    """The answer to one hash lookup."""

    query: str
    matches: list[SearchResult] = Field(default_factory=list)


class DupeGroup(_Model):
    """Files whose tensor data is identical (same AutoV3)."""

    autov3: str
    tensor_sha256: str | None = None
    identical_files: bool = Field(description="Every member is byte-identical (same sha256): copies, not re-saves")
    members: list[SearchResult]


class NearMember(_Model):
    """One adapter of a near-duplicate group (or a ``search --like`` match), and how it relates to the
    group's reference (or to the query file)."""

    adapter: SearchResult
    dtype: str | None = None
    similarity: float = Field(
        description="Cosine of the two weight changes (ΔW) over their common modules, each module weighted by "
        "its energy; 1 for the reference itself"
    )
    relations: list[str] = Field(
        default_factory=list,
        description="How it relates: identical-tensors, module-subset, rank-reduction, scaled-copy, "
        "layout-conversion, dtype-change, same-weights or similar (several may apply)",
    )
    scale: float = Field(1.0, description="Its ΔW norm over the reference's, over their common modules")
    coverage: float = Field(
        1.0, description="Share of the smaller adapter's ΔW energy in the modules both have (1: one holds the other)"
    )


class NearGroup(_Model):
    """Adapters whose weight changes agree (``lorahub dupes --near``): the reference (most modules, highest
    rank, widest dtype) first, then the others with their relation to it."""

    reference: NearMember
    members: list[NearMember]


class IndexFailure(_Model):
    path: str
    error: str


class IndexSummary(_Model):
    """What ``lorahub index`` did."""

    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    records: int = Field(0, description="Imported records (added or replaced)")
    failed: list[IndexFailure] = Field(default_factory=list)
    seconds: float = 0.0
    database: str = Field("", description="Database URL (password hidden)")


__all__ = [
    "AdapterRecord",
    "DupeGroup",
    "NearGroup",
    "NearMember",
    "HASH_FIELDS",
    "HASH_LENGTHS",
    "HashLookup",
    "HashType",
    "IndexFailure",
    "IndexSummary",
    "MAX_SEARCH_WINDOW",
    "RecordFile",
    "RecordVersion",
    "SearchQuery",
    "SearchResult",
    "SortOrder",
    "SourceKind",
    "hub_source_key",
    "local_source_key",
    "normalize_hashes",
    "record_source_key",
]
