"""SDXL files lorahub writes load fully, at the intended strength, in diffusers, ComfyUI, kohya and AUTOMATIC1111.

The files: a trained SDXL package (both layouts, UNet + both text encoders), every blend method in both
layouts, conversions, and a LyCORIS LoKr file for the SDXL base (written by the ``lycoris-lora`` package,
convolutions included) blended and converted.

- diffusers is run for real: ``StableDiffusionXLPipeline.load_lora_weights`` into the embedded SDXL base must
  not refuse the file or warn about keys, every component of the file (UNet, TE1, TE2) must be listed, and
  the weights ``fuse_lora`` writes must move by exactly the update ComfyUI's rule computes from the file's
  tensors (every module, no other weight).
- ComfyUI, kohya and AUTOMATIC1111 are checked against their key mappings, re-implemented in
  ``tool_rules.py`` with the citations (``sdxl_rules``): every key of a kohya-layout file is consumed by each
  tool's rules with the right shapes, and their updates agree.
- The names: kohya-layout SDXL files name the UNet's modules by their SGM paths, as kohya's SDXL UNet
  (``library/sdxl_original_unet.py``) does; lorahub derives them from the UNet config, and on real SDXL's
  module tree (built on the meta device) they equal kohya's and ComfyUI's own mappings.
- The negative control: the same file with diffusers UNet names (what lorahub wrote for SDXL before) is
  skipped by kohya's SGM lookups and loses the first upsampler in AUTOMATIC1111; inspect says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import FIXTURES

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from interop_kit import (  # noqa: E402
    COMMON_KINDS,
    LAYOUTS,
    STRENGTH,
    file_update,
    fused_changes,
    is_kohya_layout,
    kind_file,
    load_collecting,
    module_weights,
    read_tensors,
    restore,
    write_kinds,
)
from tool_rules import FAMILIES, a1111_load, comfy_load, kohya_check  # noqa: E402

KINDS = COMMON_KINDS + [f"lokr-{job}-{f}" for job in ("blend", "convert") for f in LAYOUTS]
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
SGM_UNET = re.compile(r"^lora_unet_(?:input_blocks|middle_block|output_blocks|time_embed|label_emb|out)_")
LYCO_META = {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "lycoris.kohya",
             "modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}


@pytest.fixture(scope="module")
def pipe(embedded_xl_base: Path, one_thread: None) -> Any:
    from lorahub.base.resolve import load_pipeline

    p = load_pipeline(embedded_xl_base)
    assert type(p).__name__ == "StableDiffusionXLPipeline"
    return p


@pytest.fixture(scope="module")
def written(xl_adapters: dict[str, Path], pipe: Any, embedded_xl_base: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> a file lorahub wrote for the SDXL base (LyCORIS kinds only with lycoris-lora).

    a: diffusers rank 4 alpha 2 + TE1/TE2; b: kohya rank 8 alpha 16 + TE1/TE2; c: kohya rank 2, UNet only.
    The LoKr file: transformer blocks, resnets, samplers (3x3 convolutions) and both text encoders."""
    from lorahub.base.embedded import build_xl_pipeline

    return write_kinds(tmp_path_factory.mktemp("written-xl"), xl_adapters,
                       {"base": str(embedded_xl_base), "trigger": "txl"}, {"lokr": 7}, build_xl_pipeline, LYCO_META)


@pytest.fixture(scope="module")
def rules(pipe: Any) -> Any:
    return FAMILIES["sdxl"](pipe)


@pytest.fixture(scope="module")
def base_weights(pipe: Any) -> dict[tuple[str, str], Any]:
    return module_weights(pipe, COMPONENTS)


@pytest.fixture
def clean(pipe: Any, base_weights: dict) -> Iterator[None]:
    yield
    restore(pipe, base_weights)


@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_sdxl_loads_every_module_at_the_intended_strength(kind, written, pipe, rules, base_weights,
                                                                    clean) -> None:
    from lorahub.adapters.inspect import inspect_file

    path = kind_file(written, kind)
    report = inspect_file(path)
    assert report.base_family == "sdxl" and report.diffusers_loadable, report.warnings
    tensors = read_tensors(path)
    expected = file_update(tensors, rules, base_weights)
    messages, adapters = load_collecting(pipe, path)
    assert not messages, messages[:3]
    components = {comp for comp, _ in expected}
    assert components == set(COMPONENTS)  # every kind carries UNet, TE1 and TE2 modules
    assert {c for c, names in adapters.items() if "probe" in names} == components
    pipe.fuse_lora(components=sorted(components), lora_scale=STRENGTH, adapter_names=["probe"])
    changed = fused_changes(pipe, base_weights)
    # SDXL conditions on the penultimate layer of both encoders: a trained file's last-layer TE modules get no
    # gradient and stay zero (so they change nothing)
    moving = {k for k, d in expected.items() if bool(d.abs().max() > 0)}
    assert set(changed) == moving, sorted(set(changed) ^ moving)[:3]
    for key in moving:
        want = STRENGTH * expected[key]
        assert torch.allclose(changed[key], want, atol=1e-5 + 1e-3 * float(want.abs().max())), key


@pytest.mark.parametrize("kind", KINDS)
def test_sdxl_key_layout_matches_comfyui_kohya_and_a1111(kind, written, rules) -> None:
    from lorahub.adapters.inspect import inspect_file

    path = kind_file(written, kind)
    report = inspect_file(path)
    tensors = read_tensors(path)
    comfy = comfy_load(tensors, rules)
    md = report.metadata
    assert md["ss_base_model_version"] == "sdxl_base_v1-0"
    assert md["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    if is_kohya_layout(tensors):
        assert report.loaders == ["diffusers", "a1111", "comfyui", "kohya"], report.warnings
        unet_keys = [k for k in tensors if k.startswith("lora_unet_")]
        assert unet_keys and all(SGM_UNET.match(k) for k in unet_keys), [k for k in unet_keys if not SGM_UNET.match(k)][:3]
        assert md["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
        assert not comfy.unloaded and not comfy.shape_errors, (comfy.unloaded[:3], comfy.shape_errors[:3])
        for name, loaded in (("kohya", kohya_check(tensors, rules)), ("a1111", a1111_load(tensors, rules))):
            assert not loaded.unloaded and not loaded.shape_errors, (name, loaded.unloaded[:3], loaded.shape_errors[:3])
            assert set(loaded.deltas) == set(comfy.deltas), name
            for key, d in loaded.deltas.items():
                assert torch.allclose(d, comfy.deltas[key], atol=1e-6), (name, key)
    else:
        assert report.loaders == ["diffusers"]
        assert md["modelspec.implementation"] == "diffusers"
        assert any(".attn1.to_q." in k for k in comfy.unloaded)  # ComfyUI's processor spelling, not this one
    # linear projections in SDXL; convolutions (resnets, samplers) stay 4-D
    for k, t in tensors.items():
        if re.search(r"proj_(in|out)[._](lora_down|lora_A)", k):
            assert t.ndim == 2, k
        if re.search(r"(in_layers_2|out_layers_3|_op|_conv|conv[12]|samplers\.0\.conv)[._](lora_down|lora_A)", k):
            assert t.ndim == 4, k


def test_trained_sdxl_package_carries_both_text_encoders_in_both_layouts(written) -> None:
    """The trained package: the kohya file holds the same modules as the diffusers one (UNet, TE1, TE2),
    named as kohya names them, with the training alpha per module (kohya's own layout)."""
    from lorahub.adapters.inspect import inspect_file

    d, k = inspect_file(written["train-diffusers"]), inspect_file(written["train-kohya"])
    assert d.modules == k.modules and k.coverage.text_encoder and k.coverage.text_encoder_2
    assert k.coverage.unet == d.coverage.unet and k.coverage.text_encoder_2 == d.coverage.text_encoder_2
    tensors = read_tensors(written["train-kohya"])
    alphas = {float(v) for key, v in tensors.items() if key.endswith(".alpha")}
    assert alphas == {2.0}
    assert any(key.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.") for key in tensors)
    assert any(key.startswith("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.") for key in tensors)
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
    assert "lora_unet_middle_block_1_transformer_blocks_1_attn2_to_k.lora_down.weight" in tensors


def test_diffusers_unet_names_are_what_kohya_and_a1111_miss(written, rules, tmp_path: Path) -> None:
    """Negative control: the LoKr conversion (convolutions included) renamed to diffusers UNet paths, as lorahub
    wrote SDXL kohya files before. ComfyUI still maps every key; kohya's SGM lookups (sdxl_merge_lora,
    load_weights) find no UNet module; AUTOMATIC1111's SD 1.x numbering misses the first upsampler. inspect
    drops both tools from the file's loaders and says why."""
    from lorahub.adapters.inspect import inspect_file
    from lorahub.adapters.writer import write_numpy
    from lorahub.pipeline.canonical import canonical_keys

    src = kind_file(written, "lokr-convert-kohya")
    tensors = read_tensors(src)
    modules = sorted({k.split(".", 1)[0] for k in tensors})
    keys = canonical_keys(modules)
    rename = {m: "lora_unet_" + keys[m].removeprefix("unet.").replace(".", "_") if m.startswith("lora_unet_") else m
              for m in modules}
    old = {rename[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v.numpy() for k, v in tensors.items()}
    path = write_numpy(tmp_path / "diffusers-named.safetensors", old, {"ss_base_model_version": "sdxl_base_v1-0"})
    renamed = read_tensors(path)
    assert any(k.startswith("lora_unet_up_blocks_0_upsamplers_0_conv.") for k in renamed)
    comfy = comfy_load(renamed, rules)
    assert not comfy.unloaded and not comfy.shape_errors
    kohya = kohya_check(renamed, rules)
    assert kohya.unloaded and all(k.startswith("lora_unet_") for k in kohya.unloaded)
    assert not any(c == "unet" for c, _ in kohya.deltas)
    a1111 = a1111_load(renamed, rules)
    assert {k.split(".", 1)[0] for k in a1111.unloaded} == {"lora_unet_up_blocks_0_upsamplers_0_conv"}
    report = inspect_file(path)
    assert report.loaders == ["diffusers", "comfyui"]
    assert any("SGM names kohya" in w for w in report.warnings) and any("AUTOMATIC1111" in w for w in report.warnings)
    assert inspect_file(src).loaders == ["diffusers", "a1111", "comfyui", "kohya"]


def _sdxl_meta_unet() -> Any:
    """SDXL base 1.0's UNet (its config.json values) on the meta device: module tree and shapes, no weights."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )


@pytest.mark.parametrize("which", ["embedded", "sdxl-base-1.0"])
def test_sgm_names_are_kohyas_and_comfyuis_and_diffusers_maps_them_back(which, pipe) -> None:
    """lorahub's diffusers -> SGM names (derived from the UNet config) equal kohya's make_unet_conversion_map and
    ComfyUI's unet_to_diffusers for every Linear/Conv2d of the UNet, and diffusers' own SGM converter
    (what load_lora_weights uses) maps each name back to its module."""
    from tool_rules import comfy_config, comfy_unet_to_diffusers, kohya_sdxl_conversion_map, kohya_sgm_path

    from lorahub.adapters.layouts import kohya_name
    from lorahub.pipeline.canonical import canonical_keys

    unet = pipe.unet if which == "embedded" else _sdxl_meta_unet()
    config = dict(unet.config)
    comfy = comfy_unet_to_diffusers(comfy_config(unet))
    kohya = kohya_sdxl_conversion_map()
    names = {}
    for path, mod in unet.named_modules():
        if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        name = kohya_name(f"unet.{path}", "sdxl", config)
        assert name == "lora_unet_" + comfy[path].replace(".", "_"), path
        assert name == "lora_unet_" + kohya_sgm_path(path, kohya).replace(".", "_"), path
        names[name] = path
    assert len(names) == (264 if which == "embedded" else 794)
    back = canonical_keys(list(names), layers_per_block=config["layers_per_block"])
    assert {back[n] for n in names} == {f"unet.{p}" for p in names.values()}


def test_kohya_sdxl_files_with_sgm_keys_map_onto_sdxl_base_1_0(sdxl_kohya_file: Path) -> None:
    """A full kohya SDXL LoRA (tests/kohyakit.py: 986 modules, SGM names, real shapes): every module maps to a
    module of SDXL base 1.0's UNet / CLIP-L / CLIP-G of that shape, and lorahub names them back identically."""
    from lorahub.adapters.layouts import kohya_name
    from lorahub.pipeline.canonical import load_adapter_file

    lora = load_adapter_file(sdxl_kohya_file)
    assert lora.family == "sdxl" and not lora.unmapped and len(lora.modules) == 986
    from lorahub.adapters.header import read_header

    unet = _sdxl_meta_unet()
    for key, f in lora.modules.items():
        comp, _, path = key.partition(".")
        if comp == "unet":
            w = unet.get_submodule(path).weight
            assert (f.B.shape[0], f.A.shape[1]) == (w.shape[0], w.shape[1]), key
    names = {k.split(".", 1)[0] for k in read_header(sdxl_kohya_file).tensors}
    assert {kohya_name(key, "sdxl") for key in lora.modules} == names


def test_real_sdxl_manifest_names_are_lorahubs(tmp_path: Path) -> None:
    """The UNet module names of a real kohya SDXL LoRA (../shared shape manifest) are exactly the names lorahub
    gives SDXL base 1.0's transformer-block modules."""
    manifest = FIXTURES / "shapes" / "alien_style_sdxl.shapes.json"
    if not manifest.exists():
        pytest.skip(f"{manifest} is absent: the shared fixtures live in ../shared beside the project")
    import json

    from lorahub.adapters.layouts import kohya_name

    real = {k.split(".", 1)[0] for k in json.loads(manifest.read_text()) if k.startswith("lora_unet_")}
    unet = _sdxl_meta_unet()
    ours = {kohya_name(f"unet.{p}", "sdxl") for p, m in unet.named_modules()
            if isinstance(m, torch.nn.Linear) and ".attentions." in p}
    assert real == ours
