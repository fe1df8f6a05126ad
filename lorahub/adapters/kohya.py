"""kohya ``ss_*`` metadata and trigger words.

Most ``ss_*`` values are Python ``str()`` renderings (``"True"``, ``"None"``,
``"(512, 512)"``), a few are JSON. Both are decoded without ``eval``:
``ast.literal_eval`` accepts literals only, and inputs are bounded in size.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from typing import Any

JSON_KEYS = {
    "ss_datasets",
    "ss_tag_frequency",
    "ss_dataset_dirs",
    "ss_reg_dataset_dirs",
    "ss_bucket_info",
    "ss_network_args",
}

_MAX_LITERAL = 10_000
#: Decoded JSON deeper than this stays text (reports must serialise; pydantic stops near 255).
MAX_JSON_DEPTH = 64


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (decoded JSON) nests at most ``limit`` containers deep. Not recursive."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def loads_bounded(text: str) -> Any:
    """``json.loads`` that raises ValueError (never RecursionError) and refuses deep nesting."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not json_depth_ok(value):
        raise ValueError("JSON nested too deeply")
    return value


def decode_value(key: str, value: str) -> Any:
    """Decode one ``ss_*`` value to a Python value; undecodable text stays text."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if key in JSON_KEYS or (text[:1] in "{[" and len(text) < 5_000_000):
        try:
            return loads_bounded(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    if re.fullmatch(r"[-+]?\d+", text):
        try:
            return int(text)
        except ValueError:  # pragma: no cover - absurdly long digit strings
            return text
    if re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", text):
        try:
            return float(text)
        except ValueError:  # pragma: no cover
            return text
    if text[:1] == "(" and len(text) <= _MAX_LITERAL:
        try:
            lit = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return value
        plain = _plain(lit)
        return value if plain is _NOT_PLAIN else plain
    return value


_NOT_PLAIN = object()

#: "1024", "(1024, 768)", "[1024, 768]", "1024,768", "1024x768": width first (kohya's --resolution order).
_RESOLUTION = re.compile(r"^[(\[]?\s*(\d{1,5})\s*(?:[,x×*]\s*(\d{1,5})\s*)?[)\]]?$")


def parse_resolution(value: str) -> tuple[int, int] | None:
    """(width, height) from a kohya ``ss_resolution`` or ``modelspec.resolution`` text, or None."""
    m = _RESOLUTION.match(value.strip()) if isinstance(value, str) and len(value) < 64 else None
    if not m:
        return None
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    return (w, h) if w > 0 and h > 0 else None


def training_resolution(md: dict[str, str]) -> tuple[tuple[int, int] | None, list[str]]:
    """The resolution an adapter was trained at, from ``ss_resolution`` (else ``modelspec.resolution``).

    Returns ((width, height) or None, problems): a value that does not parse, or
    the two keys disagreeing.
    """
    problems: list[str] = []
    found: dict[str, tuple[int, int]] = {}
    for key in ("ss_resolution", "modelspec.resolution"):
        raw = md.get(key)
        if raw is None or not raw.strip() or raw.strip() == "None":
            continue
        res = parse_resolution(raw)
        if res is None:
            problems.append(f"metadata {key} {raw[:40]!r} is not a resolution")
        else:
            found[key] = res
    if len(found) == 2 and found["ss_resolution"] != found["modelspec.resolution"]:
        a, b = found["ss_resolution"], found["modelspec.resolution"]
        problems.append(f"ss_resolution says {a[0]}x{a[1]} but modelspec.resolution says {b[0]}x{b[1]}")
    best = found.get("ss_resolution") or found.get("modelspec.resolution")
    return best, problems


def _plain(lit: Any, depth: int = 0) -> Any:
    """A Python literal as JSON-ready data (tuples/sets -> lists), or ``_NOT_PLAIN``
    for what JSON cannot hold (``...``, bytes, complex, tuple keys, deep nesting)."""
    if lit is None or isinstance(lit, (str, bool, int, float)):
        return lit
    if depth >= MAX_JSON_DEPTH:
        return _NOT_PLAIN
    if isinstance(lit, (tuple, list, set, frozenset)):
        items = sorted(lit, key=repr) if isinstance(lit, (set, frozenset)) else lit
        out = [_plain(x, depth + 1) for x in items]
        return _NOT_PLAIN if any(x is _NOT_PLAIN for x in out) else out
    if isinstance(lit, dict):
        result = {}
        for k, v in lit.items():
            pv = _plain(v, depth + 1)
            if not isinstance(k, (str, int, float, bool)) or pv is _NOT_PLAIN:
                return _NOT_PLAIN
            result[str(k)] = pv
        return result
    return _NOT_PLAIN


def training_parameters(md: dict[str, str]) -> dict[str, Any]:
    """All ``ss_*`` keys, decoded, without the ``ss_`` prefix (hashes excluded)."""
    out: dict[str, Any] = {}
    for key in sorted(md):
        if key.startswith("ss_"):
            out[key[3:]] = decode_value(key, md[key])
    return out


def _strip_repeats(folder: str) -> str:
    m = re.match(r"^\d+_(.+)$", folder.strip())
    return (m.group(1) if m else folder).strip()


def utf8(text: str) -> str:
    """``text`` without lone surrogates (YAML "\\ud800" escapes make them; JSON output cannot hold them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def trigger_words(md: dict[str, str], card: dict[str, Any] | None = None) -> tuple[list[str], str | None]:
    """Trigger words and where they came from, best source first: ``modelspec.trigger_phrase``,
    an ``instance_prompt``/``trigger_words`` key, the model card, kohya's ``ss_tag_frequency``,
    then the ``<repeats>_<token>`` folder names of ``ss_dataset_dirs``."""
    phrase = md.get("modelspec.trigger_phrase", "").strip()
    if phrase:
        return _split_words(phrase), "modelspec.trigger_phrase"
    for key in ("instance_prompt", "trigger_words", "trigger_word"):
        if md.get(key, "").strip():
            return _split_words(md[key]), key
    if card:
        inst = card.get("instance_prompt")
        if isinstance(inst, str) and inst.strip():
            return _split_words(utf8(inst)), "model card instance_prompt"
        words = card.get("trigger_words") or card.get("trainedWords")
        if isinstance(words, list) and words:
            # str() of nested YAML aliases (a "billion laughs" card) would never finish: scalars only
            words = [utf8(str(w)).strip() for w in words if isinstance(w, (str, int, float)) and str(w).strip()]
            if words:
                return words, "model card"
    freq_raw = md.get("ss_tag_frequency")
    if freq_raw:
        try:
            freq = loads_bounded(freq_raw)
        except ValueError:
            freq = None
        if isinstance(freq, dict) and freq:
            words = _from_tag_frequency(freq, md)
            if words:
                return words, "ss_tag_frequency"
    dirs_raw = md.get("ss_dataset_dirs")
    if dirs_raw:
        try:
            dirs = loads_bounded(dirs_raw)
        except ValueError:
            dirs = None
        if isinstance(dirs, dict):
            words = _dedupe(_strip_repeats(d) for d in dirs if re.match(r"^\d+_", d))
            if words:
                return words, "ss_dataset_dirs"
    return [], None


def _split_words(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"[,\n]", text)]
    return _dedupe(p for p in parts if p)


def _dedupe(items) -> list[str]:  # noqa: ANN001
    seen: set[str] = set()
    out = []
    for item in items:
        key = item.lower()
        if item and key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _count(value: Any) -> bool:
    """A plausible tag or image count: a number, not bool, NaN or a 400-digit integer."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -1e18 < value < 1e18


def _from_tag_frequency(freq: dict[str, Any], md: dict[str, str]) -> list[str]:
    """Folder class tokens first, then tags present in (nearly) every image of a folder."""
    image_counts: dict[str, int] = {}
    try:
        dirs = loads_bounded(md.get("ss_dataset_dirs", "{}"))
        if isinstance(dirs, dict):
            for name, info in dirs.items():
                if isinstance(info, dict) and _count(info.get("img_count")) and isinstance(info["img_count"], int):
                    image_counts[name] = info["img_count"]
    except ValueError:
        pass
    candidates: list[str] = []
    tag_hits: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for folder, tags in freq.items():
        if not isinstance(tags, dict) or not tags:
            continue
        token = _strip_repeats(str(folder))
        counts = {str(t).strip(): c for t, c in tags.items() if _count(c) and str(t).strip()}
        if not counts:
            continue
        lengths = [len(t) for t in counts]
        prose = sum(lengths) / len(lengths) >= 16 and len(counts) > 1 and max(counts.values()) <= 1
        total = image_counts.get(str(folder)) or max(counts.values())
        if re.match(r"^\d+_", str(folder)) and token and not prose:
            candidates.append(token)
        if prose:
            continue
        for tag, count in counts.items():
            first_seen.setdefault(tag, len(first_seen))
            if total and count >= 0.9 * total:
                tag_hits[tag] += 1
    folders = sum(1 for tags in freq.values() if isinstance(tags, dict) and tags)
    ranked = [t for t, n in sorted(tag_hits.items(), key=lambda kv: (-kv[1], first_seen[kv[0]])) if n == folders]
    words = _dedupe(candidates + ranked)
    return words[:8]
