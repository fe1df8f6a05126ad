"""Model cards: the YAML front matter of ``README.md`` -> ``cardData``, tags, pipeline tag.

The Hub derives repo tags from the card: its ``tags`` list, ``library_name``, ``pipeline_tag``,
``license:<id>``, ``base_model:<id>`` and, when ``base_model_relation`` is ``adapter`` (or the
repo holds a LoRA), ``base_model:adapter:<id>``. ``/api/validate-yaml`` and commits that change
``README.md`` use :func:`check_card`.
"""

from __future__ import annotations

from typing import Any

from lorahub import safeyaml
from lorahub.errors import YamlError

#: README files larger than this are stored but their metadata is not parsed.
MAX_CARD_BYTES = 1 << 20
#: Bounds of the metadata's YAML (see :func:`parse_card`).
MAX_CARD_NODES = safeyaml.MAX_NODES
MAX_CARD_DEPTH = safeyaml.MAX_DEPTH


class CardError(ValueError):
    pass


def split_front_matter(text: str) -> str | None:
    """The YAML between the leading ``---`` lines, or ``None`` when there is none."""
    from lorahub.hub.card import front_matter

    return front_matter(text)[0]


def parse_card(text: str) -> dict[str, Any] | None:
    """``cardData`` of a README; ``None`` without front matter. Raises :class:`CardError`.

    The YAML is parsed within :mod:`lorahub.safeyaml`'s bounds (no anchors or aliases, at most
    :data:`MAX_CARD_NODES` values nested at most :data:`MAX_CARD_DEPTH` deep, at most
    :data:`MAX_CARD_BYTES`): a README is text from anyone with a write token, ``/api/validate-yaml``
    text from anyone at all."""
    block = split_front_matter(text)
    if block is None:
        return None
    try:
        data = (
            safeyaml.load(
                block,
                max_bytes=MAX_CARD_BYTES,
                max_nodes=MAX_CARD_NODES,
                max_depth=MAX_CARD_DEPTH,
                first_line=2,
                what="README.md metadata",
            )
            if block.strip()
            else {}
        )
    except YamlError as exc:
        raise CardError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CardError(f"README.md metadata must be a YAML mapping, not a {type(data).__name__}")
    # Dates and other YAML types become plain JSON values.
    return safeyaml.jsonable(data)


def check_card(text: str) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for a README's metadata, as ``/api/validate-yaml`` reports them."""
    try:
        data = parse_card(text)
    except CardError as exc:
        return [str(exc)], []
    if data is None:
        return [], []
    errors: list[str] = []
    warnings: list[str] = []
    for key in ("license", "pipeline_tag", "library_name", "base_model_relation", "language", "datasets"):
        value = data.get(key)
        if value is None:
            continue
        if key in ("language", "datasets"):
            if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                errors.append(f'"{key}" must be a string or a list of strings')
        elif not isinstance(value, str):
            errors.append(f'"{key}" must be a string')
    tags = data.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, (str, int, float)) for t in tags)):
        errors.append('"tags" must be a list of strings')
    base = data.get("base_model")
    if base is not None and not (isinstance(base, str) or (isinstance(base, list) and all(isinstance(b, str) for b in base))):
        errors.append('"base_model" must be a string or a list of strings')
    widget = data.get("widget")
    if widget is not None and not isinstance(widget, list):
        errors.append('"widget" must be a list')
    rel = data.get("base_model_relation")
    if isinstance(rel, str) and rel not in ("adapter", "merge", "quantized", "finetune"):
        warnings.append(f'"base_model_relation" {rel!r} is not one of adapter, merge, quantized, finetune')
    return errors, warnings


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int, float))]
    return []


def derive(card: dict[str, Any] | None, *, has_safetensors: bool = False, has_adapter: bool = False) -> dict[str, Any]:
    """``{"tags", "pipeline_tag", "library_name"}`` as the Hub derives them."""
    card = card or {}
    tags: list[str] = []

    def add(tag: str) -> None:
        tag = tag.strip()
        if tag and tag not in tags and len(tag) <= 200:
            tags.append(tag)

    for t in _as_list(card.get("tags")):
        add(t)
    library = card.get("library_name") if isinstance(card.get("library_name"), str) else None
    pipeline = card.get("pipeline_tag") if isinstance(card.get("pipeline_tag"), str) else None
    if library:
        add(library)
    if pipeline:
        add(pipeline)
    if has_safetensors:
        add("safetensors")
    for lic in _as_list(card.get("license")):
        add(f"license:{lic}")
    relation = card.get("base_model_relation")
    for base in _as_list(card.get("base_model")):
        add(f"base_model:{base}")
        if relation == "adapter" or (relation is None and has_adapter):
            add(f"base_model:adapter:{base}")
    if has_adapter:
        add("lora")
    return {"tags": tags, "pipeline_tag": pipeline, "library_name": library}
