"""Fixtures: adapter files of other tools, written at test time; the real ones beside the project.

A pytest plugin (declared in tests/conftest.py ``pytest_plugins``). Every behaviour is tested on files
written here: kohya by lorahub's exporter (tests/kohyakit.py), LyCORIS by the lycoris-lora package
(tests/lycoriskit.py), legacy cloneofsimo by a writer of its documented layout (tests/legacykit.py).
The ``real_*`` fixtures and ``shared_fixtures`` are third-party files from ``../shared`` (see
tests/testkit.py ``SHARED``): the extra checks on them skip without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import FIXTURES, manifest_to_safetensors


def need_shared(path: Path) -> Path:
    """``path`` under ``../shared``, or skip the calling test (the extra checks on real data)."""
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared fixtures live in ../shared beside the project")
    return path


def read_only(path: Path) -> Path:
    path.chmod(0o444)
    return path


# --- written at test time -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def sd15_kohya_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full kohya LoRA for SD 1.5 (264 modules, 1x1-conv proj_in/out; rank 8, alpha 4, float16) written
    at test time by lorahub's writer (tests/kohyakit.py). Read-only: shared by the session."""
    from kohyakit import write_kohya

    path = write_kohya(tmp_path_factory.mktemp("kohya-sd15") / "sd15_style_kohya.safetensors", "sd1", rank=8, alpha=4)
    return read_only(path)


@pytest.fixture(scope="session")
def sdxl_kohya_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full kohya LoRA for SDXL (986 modules, lora_te1_/lora_te2_; rank 4, alpha 4, bfloat16), as above."""
    from kohyakit import write_kohya

    path = write_kohya(tmp_path_factory.mktemp("kohya-sdxl") / "sdxl_style_kohya.safetensors", "sdxl", rank=4,
                       dtype="bfloat16")
    return read_only(path)


@pytest.fixture(scope="session")
def lokr_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SD 1.5 LyCORIS LoKr (rank 4, alpha 4, float16, both Kronecker factors low-rank; UNet and text
    encoder; kohya ``ss_*`` metadata with trigger word ``lhfalcon``; the tensor hash in
    ``sshs_model_hash`` as sd-scripts recorded it) written by lycoris-lora's own code
    (tests/lycoriskit.py). Read-only: shared by the session."""
    pytest.importorskip("lycoris", reason="lycoris-lora (the dev extra) writes the LyCORIS files")
    from lycoriskit import write_lycoris

    path = write_lycoris(tmp_path_factory.mktemp("lycoris") / "falcon_lokr.safetensors", "lokr", rank=4, alpha=4,
                         kohya_hashes=True)
    return read_only(path)


@pytest.fixture(scope="session")
def legacy_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two legacy cloneofsimo LoRAs for SD 1.5 (tests/legacykit.py): rank 4 float16; rank 1 float32 with
    two learned embeddings ``<s1>``, ``<s2>``. Read-only."""
    from legacykit import write_cloneofsimo

    d = tmp_path_factory.mktemp("legacy")
    return [
        read_only(write_cloneofsimo(d / "cloneofsimo_rank4.safetensors", rank=4, dtype="float16")),
        read_only(write_cloneofsimo(d / "cloneofsimo_embeds.safetensors", rank=1, dtype="float32",
                                    embeddings=("<s1>", "<s2>"), seed=1)),
    ]


# --- real files beside the project (extra checks; skip without ../shared) -------------------------


@pytest.fixture
def shared_fixtures() -> Path:
    return need_shared(FIXTURES)


@pytest.fixture
def real_lokr_file() -> Path:
    """A real SD 1.5 LyCORIS LoKr (kohya sd-scripts + LyCORIS, 2023; rank 4, 350 modules)."""
    return need_shared(FIXTURES / "lycoris" / "smart_falcon_4_lokr.safetensors")


@pytest.fixture
def real_legacy_files() -> list[Path]:
    """Real cloneofsimo ``lora_diffusion`` files (rank 4 float16; rank 1 float32 with embeddings)."""
    need_shared(FIXTURES / "legacy")
    return sorted((FIXTURES / "legacy").glob("*.safetensors"))


@pytest.fixture
def sd15_kohya_manifest_file(tmp_path: Path) -> Path:
    """A real SD 1.5 kohya LoRA's keys and shapes (rank 128, float16), zero-filled; skips without ../shared."""
    manifest = need_shared(FIXTURES / "shapes" / "shinkai_makoto_offset.shapes.json")
    return manifest_to_safetensors(manifest, tmp_path / "shinkai_makoto_offset.safetensors")


@pytest.fixture
def sdxl_kohya_manifest_file(tmp_path: Path) -> Path:
    """A real SDXL kohya LoRA's keys and shapes (rank 32, bfloat16), zero-filled; skips without ../shared."""
    manifest = need_shared(FIXTURES / "shapes" / "alien_style_sdxl.shapes.json")
    return manifest_to_safetensors(manifest, tmp_path / "alien_style_sdxl.safetensors")
