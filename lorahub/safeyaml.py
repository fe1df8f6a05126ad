"""YAML from strangers, parsed within bounds (model card front matter, ``/api/validate-yaml``).

``yaml.safe_load`` constructs no objects of its own choosing, but it still expands what the text
asks for: aliases (``*a``) make a 338-byte "billion laughs" card grow into hundreds of millions of
values once anything walks it (``json.dumps``, a deep copy), and a 5,000-deep ``[[[...]]]``
overflows the Python stack. :func:`load` therefore reads the event stream first (libyaml's C
parser when it is installed; iterative, no recursion) and refuses, before anything is built:

* text longer than ``max_bytes`` (UTF-8);
* any anchor (``&a``) or alias (``*a``): cards have no use for them;
* more than ``max_nodes`` values, or collections nested deeper than ``max_depth``;
* more than one document.

Then it constructs the document with the safe loader. Every failure, including the constructor's
own (an impossible date, an unhashable key, an integer of 5,000 digits), is a :class:`YamlError`
with one line of text. :func:`jsonable` turns the result into plain JSON values.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from lorahub.errors import YamlError

#: Defaults: a model card's metadata is a few kilobytes and a few hundred values; the Hub's
#: ``model-index`` of a much-evaluated model stays well below these.
MAX_BYTES = 1 << 20
MAX_NODES = 20_000
MAX_DEPTH = 64


def _loader() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _where(mark: Any, first_line: int) -> str:
    return f" (line {mark.line + first_line})" if mark is not None else ""


def load(
    text: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
    first_line: int = 1,
    what: str = "YAML",
) -> Any:
    """The value of one YAML document, within the bounds above; raises :class:`YamlError`.

    ``first_line``: the line number of the text's first line in its file (for messages);
    ``what``: how messages name the text (``"README.md metadata"``)."""
    import yaml

    if not isinstance(text, str):
        raise YamlError(f"{what} must be text")
    if len(text) > max_bytes or len(text.encode("utf-8", errors="replace")) > max_bytes:
        raise YamlError(f"{what} is larger than {max_bytes} bytes")
    loader = _loader()
    nodes = depth = documents = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.AliasEvent):
                raise YamlError(f"{what}: aliases (*name) are not allowed{_where(event.start_mark, first_line)}")
            if isinstance(event, yaml.NodeEvent):  # scalar, sequence start, mapping start
                if event.anchor is not None:
                    raise YamlError(f"{what}: anchors (&name) are not allowed{_where(event.start_mark, first_line)}")
                nodes += 1
                if nodes > max_nodes:
                    raise YamlError(f"{what} has more than {max_nodes} values{_where(event.start_mark, first_line)}")
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > max_depth:
                        raise YamlError(
                            f"{what} is nested deeper than {max_depth} levels{_where(event.start_mark, first_line)}"
                        )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise YamlError(f"{what} holds more than one YAML document{_where(event.start_mark, first_line)}")
        return yaml.load(text, Loader=loader)  # noqa: S506 - the safe loader (C or Python)
    except YamlError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["invalid"])[0]
        raise YamlError(f"{what} is not valid YAML{_where(mark, first_line)}: {_one_line(problem)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # the constructor's own failures: 2024-13-45, an int of 10,000 digits, ...
        raise YamlError(f"{what} is not valid YAML: {_one_line(str(exc)) or type(exc).__name__}") from None


def jsonable(value: Any) -> Any:
    """``value`` (as :func:`load` returns it) as plain JSON values: mapping keys become strings,
    dates ISO 8601 strings, bytes and sets lists or text, NaN and infinities strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    j = jsonable(key)
    return j if isinstance(j, str) else str(j)


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "jsonable", "load"]
