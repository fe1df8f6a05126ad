"""Export the JSON Schema of every contract in :data:`lorahub.schemas.EXPORTED`."""

from __future__ import annotations

import json
from pathlib import Path

from . import EXPORTED

JSON_DIR = Path(__file__).resolve().parent / "json"


def render(name: str) -> str:
    schema = EXPORTED[name].model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"lorahub:{name}", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in EXPORTED:
        path = directory / f"{name}.schema.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    for p in export():
        print(p)
