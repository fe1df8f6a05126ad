"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
FIXTURES = SHARED / "fixtures"
CORPORA = SHARED / "corpora"


@pytest.fixture(autouse=True)
def lorahub_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty $LORAHUB_HOME (the embedded base model is shared, see below)."""
    home = tmp_path_factory.mktemp("lorahub-home")
    monkeypatch.setenv("LORAHUB_HOME", str(home))
    monkeypatch.delenv("LORAHUB_DEBUG", raising=False)
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    return home


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared fixtures live in ../shared beside the project")
    return path


@pytest.fixture
def shared_fixtures() -> Path:
    return _need(FIXTURES)


@pytest.fixture
def lokr_file() -> Path:
    return _need(FIXTURES / "lycoris" / "smart_falcon_4_lokr.safetensors")


@pytest.fixture
def legacy_files() -> list[Path]:
    _need(FIXTURES / "legacy")
    return sorted((FIXTURES / "legacy").glob("*.safetensors"))


@pytest.fixture
def civitai_corpus() -> Path:
    return _need(CORPORA / "civitai-lora-models-2023-07.jsonl")


def manifest_to_safetensors(manifest: Path, out: Path, metadata: dict[str, str] | None = None) -> Path:
    """Turn a key -> {shape, dtype} manifest into a real safetensors file with zero-filled tensors."""
    from lorahub.adapters.writer import write_safetensors_zeros

    spec = json.loads(manifest.read_text())
    tensors = {}
    for name, entry in spec.items():
        dtype = str(entry["dtype"]).replace("torch.", "")
        tensors[name] = (dtype, [int(d) for d in entry["shape"]])
    write_safetensors_zeros(out, tensors, metadata=metadata)
    return out


@pytest.fixture
def sd15_kohya_file(tmp_path: Path) -> Path:
    manifest = _need(FIXTURES / "shapes" / "shinkai_makoto_offset.shapes.json")
    return manifest_to_safetensors(manifest, tmp_path / "shinkai_makoto_offset.safetensors")


@pytest.fixture
def sdxl_kohya_file(tmp_path: Path) -> Path:
    manifest = _need(FIXTURES / "shapes" / "alien_style_sdxl.shapes.json")
    return manifest_to_safetensors(manifest, tmp_path / "alien_style_sdxl.safetensors")


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
