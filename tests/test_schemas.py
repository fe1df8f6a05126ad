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


def test_hash_fields_have_one_definition(tmp_path) -> None:  # noqa: ANN001
    """The fingerprint fields are defined once (``schemas.registry.HASH_LENGTHS``); what spells them
    again for its own reasons agrees: the ``adapter_files`` columns (each as wide as its hash), the
    fingerprint record lorahub computes (no pydantic on that path, so it cannot import the list) and
    the FingerprintReport contract."""
    from typing import get_args

    from lorahub.adapters.fingerprint import fingerprint_record
    from lorahub.registry.tables import AdapterFile
    from lorahub.schemas.adapters import FingerprintReport
    from lorahub.schemas.registry import HASH_ALIASES, HASH_FIELDS, HASH_LENGTHS, HashType

    assert HASH_FIELDS == tuple(HASH_LENGTHS) == get_args(HashType)
    assert HASH_FIELDS == ("sha256", "autov1", "autov2", "autov3", "tensor_sha256", "crc32", "blake3")
    assert {HASH_ALIASES[name] for name in HASH_FIELDS} == set(HASH_FIELDS)
    columns = AdapterFile.__table__.c
    assert {name: columns[name].type.length for name in HASH_FIELDS} == HASH_LENGTHS
    some_file = tmp_path / "x.bin"
    some_file.write_bytes(b"\0" * 100)
    assert set(HASH_FIELDS) <= set(fingerprint_record(some_file, use_cache=False))
    assert set(HASH_FIELDS) <= set(FingerprintReport.model_fields)


def test_source_keys() -> None:
    """``adapters.source_key`` of each source kind, built by one function each (see registry/tables.py)."""
    from lorahub.schemas.registry import hub_source_key, local_source_key, record_source_key

    assert local_source_key("/a/b.safetensors") == "local:/a/b.safetensors"
    assert hub_source_key("http://h:1", "alice/x") == "hub:http://h:1/alice/x"
    assert hub_source_key("http://h:1", "alice/x", "datasets/") == "hub:http://h:1/datasets/alice/x"
    assert record_source_key("civitai", "42") == "record:civitai:42"
