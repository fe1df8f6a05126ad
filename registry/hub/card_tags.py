"""The tags the Hub derives from a model card's metadata (``cardData``).

The Hub derives repo tags from the card: its ``tags`` list, ``library_name``, ``pipeline_tag``,
``license:<id>``, ``base_model:<id>`` and, when ``base_model_relation`` is ``adapter`` (or the
repo holds a LoRA), ``base_model:adapter:<id>``. Reading the card itself (its YAML, within
bounds) and checking it against the Hub's rules is the library's :mod:`lorahub.hub.card`
(``parse_card``, ``check_card``).
"""

from __future__ import annotations

from typing import Any


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
