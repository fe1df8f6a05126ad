"""The exported JSON Schema files are exactly what the pydantic models say."""

from __future__ import annotations

import json

from testkit import REPO

from lorahub.schemas import EXPORTED
from lorahub.schemas.export import render


def test_json_schema_files_in_sync() -> None:
    folder = REPO / "schemas" / "json"
    stale = []
    for name in EXPORTED:
        path = folder / f"{name}.schema.json"
        if not path.exists() or path.read_text(encoding="utf-8") != render(name):
            stale.append(path.name)
    assert not stale, f"run `python -m lorahub.schemas` to regenerate: {stale}"
    extra = {p.name for p in folder.glob("*.schema.json")} - {f"{n}.schema.json" for n in EXPORTED}
    assert not extra, f"schema files without a model: {extra}"


def test_schemas_are_valid_json_schema_documents() -> None:
    for name in EXPORTED:
        doc = json.loads(render(name))
        assert doc["type"] == "object"
        assert doc["properties"]
        assert set(doc.get("required", [])) <= set(doc["properties"])
