"""Every base family lorahub names is recognised from a LoRA's key layout and shapes; SD/Flux/SD3 detection holds.

The fixtures (``tests/fixtures/shapes``) are written by ``tests/family_shapes.py`` from the published model
configs; one test regenerates them and compares.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from family_shapes import FAMILY, FIXTURES, OUT, write_fixture

from lorahub.adapters.families import FAMILIES, FAMILY_NAMES
from lorahub.adapters.inspect import inspect_file
from lorahub.adapters.validate import validate_file
from lorahub.adapters.writer import write_safetensors_zeros
from lorahub.schemas.adapters import BaseFamily


@pytest.mark.parametrize("name", FIXTURES)
def test_each_family_is_named(name: str, tmp_path: Path) -> None:
    path = write_fixture(name, tmp_path)
    r = inspect_file(path)
    assert r.base_family == FAMILY[name], (r.base_family, r.family_evidence)
    assert r.family_evidence
    assert r.rank == 4
    v = validate_file(path)
    assert v.valid, v.errors
    assert not any("declares" in w for w in v.warnings), v.warnings


def test_every_family_has_a_fixture() -> None:
    assert set(FAMILY.values()) == set(FAMILIES) - {"sd1", "sd2", "sdxl", "unknown"}


def test_family_vocabulary_is_one() -> None:
    from registry.text import FAMILIES as REGISTRY_FAMILIES

    assert tuple(typing.get_args(BaseFamily)) == FAMILIES == REGISTRY_FAMILIES
    assert set(FAMILY_NAMES) == set(FAMILIES)


def test_sd_unet_detection_is_unchanged(sd15_kohya_file: Path, sdxl_kohya_file: Path) -> None:
    assert inspect_file(sd15_kohya_file).base_family == "sd1"
    assert inspect_file(sdxl_kohya_file).base_family == "sdxl"


def _zeros(path: Path, modules: dict[str, tuple[int, int]], metadata: dict[str, str] | None = None) -> Path:
    tensors: dict[str, Any] = {}
    for name, (inp, out) in modules.items():
        tensors[f"{name}.lora_A.weight"] = ("F16", [4, inp])
        tensors[f"{name}.lora_B.weight"] = ("F16", [out, 4])
    return write_safetensors_zeros(path, tensors, metadata=metadata)


def test_flux_detection_holds_for_each_width_and_block_set(tmp_path: Path) -> None:
    """Flux.1 files of test size and double-block-only diffusers files stay flux; SD3 widths are sd3."""
    tiny = _zeros(tmp_path / "tiny.safetensors", {"transformer.single_transformer_blocks.0.attn.to_q": (32, 32)})
    assert inspect_file(tiny).base_family == "flux"
    dbl = _zeros(tmp_path / "dbl.safetensors", {"transformer.transformer_blocks.3.attn.add_q_proj": (3072, 3072)})
    assert inspect_file(dbl).base_family == "flux"
    sd3 = _zeros(tmp_path / "sd3.safetensors", {"transformer.transformer_blocks.3.attn.add_q_proj": (1536, 1536)})
    assert inspect_file(sd3).base_family == "sd3"
    # test-size joint blocks say nothing on their own: the metadata decides
    odd = _zeros(tmp_path / "odd.safetensors", {"transformer.transformer_blocks.0.attn.add_q_proj": (32, 32)},
                 {"modelspec.architecture": "stable-diffusion-3-medium/lora"})
    r = inspect_file(odd)
    assert r.base_family == "sd3" and any("declare" in e for e in r.family_evidence)


def test_lookalike_families_follow_the_metadata(tmp_path: Path) -> None:
    flux = {"lora_unet_double_blocks_0_img_attn_qkv": (3072, 9216)}
    chroma = _zeros(tmp_path / "c.safetensors", flux, {"modelspec.architecture": "chroma/lora"})
    r = inspect_file(chroma)
    assert r.base_family == "chroma" and not any("declares" in w for w in r.warnings)
    wrong = _zeros(tmp_path / "w.safetensors", flux, {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"})
    r = inspect_file(wrong)
    assert r.base_family == "flux" and any("declares sdxl" in w for w in r.warnings)


def test_flux2_shapes_are_not_flux1(tmp_path: Path) -> None:
    path = _zeros(tmp_path / "f2.safetensors", {"diffusion_model.single_blocks.0.linear1": (6144, 9 * 6144)})
    r = inspect_file(path)
    assert r.base_family == "unknown" and any("Flux.2" in e for e in r.family_evidence)


def test_hunyuanvideo_and_qwen_are_told_from_flux_by_names_and_depth(tmp_path: Path) -> None:
    hy = _zeros(tmp_path / "hy.safetensors", {"transformer.double_blocks.0.img_attn_qkv": (3072, 9216)})
    assert inspect_file(hy).base_family == "hunyuanvideo"
    deep = _zeros(tmp_path / "deep.safetensors", {"transformer.single_transformer_blocks.39.attn.to_q": (3072, 3072)})
    assert inspect_file(deep).base_family == "hunyuanvideo"
    qwen = _zeros(tmp_path / "q.safetensors", {"transformer.transformer_blocks.45.attn.add_q_proj": (3072, 3072)})
    assert inspect_file(qwen).base_family == "qwen"


@pytest.mark.torch
def test_fixtures_are_what_the_generator_writes() -> None:
    pytest.importorskip("diffusers")
    from family_shapes import build

    for name in FIXTURES:
        assert json.loads((OUT / f"{name}.json").read_text()) == json.loads(json.dumps(build(name))), name


# --------------------------------------------------------------------------------------------- real files (../shared)

REAL = {  # manifest: (format, family, most common rank, tools that load it fully)
    "invokeai_flux_lora_kohya_format": ("kohya-lora", "flux", 16, ["diffusers", "comfyui", "kohya"]),
    "invokeai_flux_lora_diffusers_format": ("peft", "flux", 32, ["diffusers", "comfyui"]),
    "invokeai_flux_lora_aitoolkit_format": ("comfyui", "flux", 16, ["comfyui"]),
    "invokeai_flux_lora_xlabs_format": ("xlabs", "flux", 16, ["diffusers"]),
    "invokeai_flux_dora_onetrainer_format": ("kohya-dora", "flux", 4, ["comfyui"]),
    "invokeai_flux_lokr_bfl_format": ("lycoris-lokr", "flux", None, []),
    "invokeai_flux_control_lora_format": ("flux-control", "flux", 128, ["diffusers", "comfyui"]),
    "invokeai_qwen_image_lora_diffusers_format": ("bare", "qwen", 64, []),
    "invokeai_qwen_image_lora_kohya_format": ("lycoris-lokr", "qwen", None, []),
    "invokeai_anima_lora_kohya_format": ("kohya-lora", "cosmos", 8, []),
    "invokeai_anima_lora_kohya_with_te_format": ("kohya-lora", "cosmos", 8, []),
    "invokeai_anima_lora_lokr_format": ("lycoris-lokr", "cosmos", None, []),
    "invokeai_anima_lora_peft_format": ("comfyui", "cosmos", 8, []),
}


def sparse_safetensors(manifest: Path, out: Path) -> Path:
    """A real file's keys and shapes as a safetensors file whose data is a hole (zeros, no disk blocks)."""
    import struct

    from lorahub.adapters.writer import dtype_code

    spec = json.loads(manifest.read_text())
    header: dict[str, Any] = {}
    offset = 0
    sizes = {"F16": 2, "BF16": 2, "F32": 4}
    for name, entry in spec.items():
        code = dtype_code(str(entry["dtype"]).replace("torch.", ""))
        n = sizes[code]
        for d in entry["shape"]:
            n *= int(d)
        header[name] = {"dtype": code, "shape": entry["shape"], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(out, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)
    return out


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_are_named_with_their_layout(name: str, tmp_path: Path) -> None:
    from testkit import FIXTURES as SHARED

    manifest = SHARED / "shapes" / f"{name}.shapes.json"
    if not manifest.is_file():
        pytest.skip(f"{manifest} is absent: the shared fixtures live in ../shared beside the project")
    fmt, family, rank, loaders = REAL[name]
    path = sparse_safetensors(manifest, tmp_path / f"{name}.safetensors")
    r = inspect_file(path)
    assert (r.format, r.base_family, r.rank, r.loaders) == (fmt, family, rank, loaders), r.family_evidence
    v = validate_file(path)
    if name == "invokeai_flux_lokr_bfl_format":  # a sample: its LoKr factors do not multiply out to Flux's widths
        assert not v.valid and any("output rows" in e for e in v.errors)
    else:
        assert v.valid, v.errors


@pytest.mark.parametrize("name", ["qwen_image_peft", "kolors_peft_unet", "flux1_kohya"])
def test_previews_refuse_other_families_in_one_line(name: str, tmp_path: Path) -> None:
    from lorahub.errors import AdapterCompatibilityError
    from lorahub.pipeline.compat import BaseInfo, check_report

    report = inspect_file(write_fixture(name, tmp_path))
    base = BaseInfo(name="lorahub/embedded-sdxl-tiny", family="sdxl", cross_attention_dim=2048,
                    pipeline_class="StableDiffusionXLPipeline", components=("unet", "text_encoder", "text_encoder_2"))
    with pytest.raises(AdapterCompatibilityError) as err:
        check_report(report, base)
    assert "\n" not in str(err.value)
    if name == "flux1_kohya":  # a family the live pipeline loads, on a base of another one
        assert "a Flux.1 adapter" in str(err.value) and "does not fit the SDXL base" in str(err.value)
        assert err.value.hint == "load it on a Flux.1 base model"
    else:
        assert "cannot be used with the SDXL base" in str(err.value)
        assert "SD 1.x, SD 2.x, SDXL, Flux.1 and SD3" in (err.value.hint or "")


@pytest.mark.parametrize(
    "family, label, civitai",
    [
        ("sd1", None, "SD 1.5"),
        ("sd1", "CompVis/stable-diffusion-v1-4", "SD 1.4"),
        ("sd2", None, "SD 2.1"),
        ("sdxl", None, "SDXL 1.0"),
        ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "SDXL 1.0"),
        ("sdxl", "Pony", "Pony"),
        ("sdxl", "OnomaAIResearch/Illustrious-xl-early-release-v0", "Illustrious"),
        ("sdxl", "Laxhar/noobai-XL-1.1", "NoobAI"),
        ("sd3", None, "SD 3.5"),
        ("sd3", "stabilityai/stable-diffusion-3.5-large", "SD 3.5 Large"),
        ("sd3", "stabilityai/stable-diffusion-3-medium", "SD 3"),
        ("flux", None, "Flux.1 D"),
        ("flux", "black-forest-labs/FLUX.1-schnell", "Flux.1 S"),
        ("chroma", None, "Chroma"),
        ("qwen", None, "Qwen"),
        ("unknown", None, "Other"),
        ("unknown", "Pony", "Pony"),  # the weights cannot tell: the card's label does
        ("sd1", "Pony", "SD 1.5"),  # the weights say SD 1.x: a card naming an SDXL model is wrong
        ("sdxl", "SDXL 1.0", "SDXL 1.0"),  # already Civitai's
        ("bogus", None, "Other"),
    ],
)
def test_civitai_base_model(family: str, label: str | None, civitai: str) -> None:
    from lorahub.adapters.families import civitai_base_model

    assert civitai_base_model(family, label) == civitai


def test_civitai_labels_read_back_as_their_family() -> None:
    """`lorahub resolve` reads Civitai's labels back (family_from_label): every label the server answers
    with names the family it was made from."""
    from lorahub.adapters.families import CIVITAI_BASE_MODELS, FAMILIES, civitai_base_model, family_from_label

    assert set(CIVITAI_BASE_MODELS) == set(FAMILIES)
    for family in FAMILIES:
        assert family_from_label(civitai_base_model(family)) == family, family


def test_every_signature_detect_looks_for_is_in_the_prefilter() -> None:
    """detect() matches its patterns only against the names that match one of ``_SIGNATURES`` (the prefilter
    that lets a UNet's names, which match none, pass once): a pattern it uses that is missing from the tuple
    would never match. Read from detect's source, so a new pattern cannot be forgotten."""
    import ast
    import inspect

    from lorahub.adapters import families

    tree = ast.parse(inspect.getsource(families.detect))
    used = {
        call.args[1].id
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "_matches" and isinstance(call.args[1], ast.Name)
    }
    inline = [
        call for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "_matches" and not isinstance(call.args[1], ast.Name)
    ]
    assert not inline, "detect() matches a pattern built inline: name it and add it to families._SIGNATURES"
    assert len(used) >= 15
    signatures = {id(rx) for rx in families._SIGNATURES}
    missing = sorted(name for name in used if id(getattr(families, name)) not in signatures)
    assert not missing, f"patterns detect() uses but families._SIGNATURES lacks: {missing}"
    for name in used:  # and each pattern is anchored, so the prefilter costs one match attempt per name
        assert getattr(families, name).pattern.startswith("^"), name
