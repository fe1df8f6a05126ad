"""Words, names and filter tokens, computed the same way for SQLite and PostgreSQL.

* Words: maximal runs of letters and digits, lower case (underscores, dashes,
  dots and spaces separate words). SQLite's ``unicode61`` tokenizer and the
  PostgreSQL index expression (``regexp_replace(..., '[^[:alnum:]]+', ' ')``
  with the ``simple`` configuration) split text the same way; nothing is
  stemmed, so ``anime`` never matches ``animal``.
* Facets: one word-like token per filter value (``zbsdxl`` = base family sdxl),
  stored in ``adapters.search_facets``; filters then run inside the text index
  on SQLite (FTS5) and through a GIN array index on PostgreSQL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

# One copy, in the library (``lorahub resolve`` reads Civitai's labels too); importable from here.
from lorahub.adapters.families import family_from_label

WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)

#: Dropped from queries when other words remain ("detail tweaker lora" finds "Detail Tweaker").
STOP_WORDS = frozenset(
    "a an and at by for from in is it of on or the to with lora loras locon lycoris".split()
)

FAMILIES = (
    "sd1", "sd2", "sdxl", "sd3", "flux", "chroma", "qwen", "wan", "hunyuanvideo", "hidream", "lumina", "pixart",
    "kolors", "auraflow", "ltxv", "cosmos", "unknown",
)

#: Facet prefixes.
F_FAMILY, F_BASE_LABEL, F_FORMAT, F_TAG, F_AUTHOR, F_LICENSE = "zb", "zm", "zf", "zt", "za", "zl"
F_PRIVATE = "zprv"
F_OWNER = "zo"


def join_lines(entries: Iterable[str]) -> str:
    """A list column's value (``adapters.tags_text``, ``trigger_words_text``): its entries, one a line."""
    return "\n".join(entries)


def lines(value: str | None) -> list[str]:
    """The entries of a list column (:func:`join_lines`), empty ones left out."""
    if not value:
        return []
    out = value.split("\n")
    return out if "" not in out else [v for v in out if v]


def words(text: str | None) -> list[str]:
    return WORD_RE.findall(text.lower()) if text else []


def norm_name(name: str | None) -> str:
    """Lower-case words joined by one space: ``Cute_girl-Mix4`` -> ``cute girl mix4``."""
    return " ".join(words(name))


def query_terms(query: str | None) -> list[str]:
    """Distinct words of a query, stop words dropped unless nothing else is left."""
    seen: list[str] = []
    for w in words(query):
        if w not in seen:
            seen.append(w)
    content = [w for w in seen if w not in STOP_WORDS]
    return content or seen


def facet(prefix: str, value: str | None) -> str | None:
    key = "".join(words(value))
    return prefix + key if key else None


def adapter_facets(
    *,
    base_family: str | None,
    base_model: str | None,
    format: str | None,
    tags: Iterable[str],
    author: str | None,
    license: str | None,
    private: bool,
    owner_id: int | None,
) -> str:
    tokens = [
        facet(F_FAMILY, base_family or "unknown"),
        facet(F_BASE_LABEL, base_model),
        facet(F_FORMAT, format),
        facet(F_AUTHOR, author),
        facet(F_LICENSE, license),
    ]
    tokens += [facet(F_TAG, t) for t in tags]
    if private:
        tokens.append(F_PRIVATE)
    if owner_id is not None:
        tokens.append(f"{F_OWNER}{int(owner_id)}")
    out: list[str] = []
    for t in tokens:
        if t and t not in out:
            out.append(t)
    return " ".join(out)


def base_facet(base: str) -> str | None:
    """``--base``: a family name (sd1, sdxl...) or a base-model label (pony, illustrious...)."""
    value = base.strip().lower()
    if value in FAMILIES:
        return F_FAMILY + value
    return facet(F_BASE_LABEL, value)


def popularity(downloads: int | None) -> float:
    """A number in [0, 1) that grows with downloads (the fraction part of a score)."""
    return min(math.log10(1 + max(int(downloads or 0), 0)) / 10.0, 0.999)


__all__ = [
    "FAMILIES",
    "STOP_WORDS",
    "adapter_facets",
    "base_facet",
    "facet",
    "family_from_label",
    "norm_name",
    "popularity",
    "query_terms",
    "words",
]
