"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import CORPORA, FIXTURES, REPO, SHARED, manifest_to_safetensors, on_ci  # noqa: F401


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


@pytest.fixture(scope="session")
def sd15_kohya_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full kohya LoRA for SD 1.5 (264 modules, 1x1-conv proj_in/out; rank 8, alpha 4, float16) written
    at test time by lorahub's writer (tests/kohyakit.py). Read-only: shared by the session."""
    from kohyakit import write_kohya

    path = write_kohya(tmp_path_factory.mktemp("kohya-sd15") / "sd15_style_kohya.safetensors", "sd1", rank=8, alpha=4)
    path.chmod(0o444)
    return path


@pytest.fixture(scope="session")
def sdxl_kohya_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full kohya LoRA for SDXL (986 modules, lora_te1_/lora_te2_; rank 4, alpha 4, bfloat16), as above."""
    from kohyakit import write_kohya

    path = write_kohya(tmp_path_factory.mktemp("kohya-sdxl") / "sdxl_style_kohya.safetensors", "sdxl", rank=4,
                       dtype="bfloat16")
    path.chmod(0o444)
    return path


@pytest.fixture
def sd15_kohya_manifest_file(tmp_path: Path) -> Path:
    """A real SD 1.5 kohya LoRA's keys and shapes (rank 128, float16), zero-filled; skips without ../shared."""
    manifest = _need(FIXTURES / "shapes" / "shinkai_makoto_offset.shapes.json")
    return manifest_to_safetensors(manifest, tmp_path / "shinkai_makoto_offset.safetensors")


@pytest.fixture
def sdxl_kohya_manifest_file(tmp_path: Path) -> Path:
    """A real SDXL kohya LoRA's keys and shapes (rank 32, bfloat16), zero-filled; skips without ../shared."""
    manifest = _need(FIXTURES / "shapes" / "alien_style_sdxl.shapes.json")
    return manifest_to_safetensors(manifest, tmp_path / "alien_style_sdxl.safetensors")


# --- the embedded base model (lorahub.base.embedded), built once per test session ---------------


@pytest.fixture(scope="session")
def embedded_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the embedded tiny SD 1.x pipeline (seed 0), built once per session (needs torch)."""
    pytest.importorskip("diffusers", reason="the embedded base model needs the ml extra (torch, diffusers)")
    from lorahub.base.embedded import EMBEDDED_NAME, ensure_embedded

    return ensure_embedded(seed=0, path=tmp_path_factory.mktemp("embedded-base") / EMBEDDED_NAME)


@pytest.fixture
def embedded_home(embedded_base: Path, lorahub_home: Path) -> Path:
    """This test's $LORAHUB_HOME with the session's embedded model in place (a symlink, no rebuild).

    Returns the path ``resolve_base(None)`` / ``ensure_embedded()`` give in this test. Treat it as
    read-only: it is shared by the whole session.
    """
    from lorahub.base.embedded import embedded_path

    target = embedded_path(lorahub_home)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_base, target_is_directory=True)
    return target


@pytest.fixture(scope="session")
def embedded_xl_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the embedded tiny SDXL pipeline (seed 0), built once per session (needs torch)."""
    pytest.importorskip("diffusers", reason="the embedded base model needs the ml extra (torch, diffusers)")
    from lorahub.base.embedded import SDXL_NAME, ensure_embedded

    return ensure_embedded(seed=0, path=tmp_path_factory.mktemp("embedded-xl-base") / SDXL_NAME, family="sdxl")


@pytest.fixture
def embedded_xl_home(embedded_xl_base: Path, lorahub_home: Path) -> Path:
    """This test's $LORAHUB_HOME with the session's embedded SDXL model in place (a symlink; read-only)."""
    from lorahub.base.embedded import embedded_path

    target = embedded_path(lorahub_home, family="sdxl")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_xl_base, target_is_directory=True)
    return target
