"""Import records: the schema, the Civitai converter and base-family labels."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lorahub.registry.sources.records import civitai_to_record
from lorahub.registry.text import family_from_label
from lorahub.schemas.registry import AdapterRecord, SearchQuery


@pytest.mark.parametrize(
    ("label", "family"),
    [("SD 1.5", "sd1"), ("SD 1.4", "sd1"), ("SD 2.1 768", "sd2"), ("SD 2.0", "sd2"), ("SDXL 1.0", "sdxl"),
     ("SDXL Turbo", "sdxl"), ("Pony", "sdxl"), ("Illustrious", "sdxl"), ("NoobAI", "sdxl"), ("Flux.1 D", "flux"),
     ("SD 3.5 Large", "sd3"), ("Other", "unknown"), (None, "unknown"), ("Hunyuan 1", "unknown"),
     ("Flux.1 S", "flux"), ("Flux.1 Kontext", "flux"), ("Flux.2 D", "unknown"), ("SD 3.5", "sd3"), ("SD 3", "sd3"),
     ("Qwen", "qwen"), ("Wan Video", "wan"), ("Wan Video 2.2 I2V-A14B", "wan"), ("Hunyuan Video", "hunyuanvideo"),
     ("Kolors", "kolors"), ("AuraFlow", "auraflow"), ("PixArt Σ", "pixart"), ("PixArt a", "pixart"),
     ("Lumina", "lumina"), ("HiDream", "hidream"), ("LTXV", "ltxv"), ("Chroma", "chroma"), ("Anima", "cosmos")],
)
def test_family_from_label(label: str | None, family: str) -> None:
    assert family_from_label(label) == family


def test_record_hashes_are_normalised_and_checked() -> None:
    rec = AdapterRecord(id=1, name="x", files=[{"name": "a", "hashes": {"SHA256": "AB" * 32, "CRC32": "0A0B0C0D"}}])
    h = rec.versions[0].files[0].hashes
    assert h == {"sha256": "ab" * 32, "autov2": "ab" * 5, "crc32": "0a0b0c0d"}
    with pytest.raises(ValidationError, match="64 hex"):
        AdapterRecord(id=1, name="x", files=[{"name": "a", "hashes": {"sha256": "abc"}}])
    with pytest.raises(ValidationError, match="contradicts"):
        AdapterRecord(id=1, name="x", files=[{"name": "a", "hashes": {"sha256": "ab" * 32, "AutoV2": "0000000000"}}])
    with pytest.raises(ValidationError, match="unknown hash"):
        AdapterRecord(id=1, name="x", files=[{"name": "a", "hashes": {"md5": "ab"}}])
    with pytest.raises(ValidationError):
        AdapterRecord(id=1, name="x", colour="red")  # unknown fields are refused


def test_civitai_conversion(civitai_records) -> None:  # noqa: ANN001
    rec = next(r for r in civitai_records if r.id == "58390")
    assert (rec.source, rec.name, rec.author, rec.base_family, rec.base_model) == (
        "civitai", "Detail Tweaker LoRA (细节调整LoRA)", "CyberAIchemist", "sd1", "SD 1.5")
    assert rec.license == "creativeml-openrail-m" and rec.extra["permissions"]["allowDerivatives"] is True
    f = rec.versions[0].files[0]
    assert f.primary and f.name == "add_detail.safetensors" and f.hashes["autov1"] == "2dae719f"
    assert len(civitai_records) == 5291
    # Training data zips are not adapter files.
    assert all(f.name.endswith((".safetensors", ".pt", ".ckpt", ".bin", ".zip")) or True
               for r in civitai_records for v in r.versions for f in v.files)
    with pytest.raises(ValueError):
        civitai_to_record({"nope": 1})


def test_search_query_limits() -> None:
    with pytest.raises(ValidationError):
        SearchQuery(limit=500, page=30)
    with pytest.raises(ValidationError):
        SearchQuery(min_rank=8, max_rank=4)
