"""The embedded SDXL base model: deterministic, a real SDXL pipeline (two text encoders, added conditioning),
reachable through every ``--base`` spelling, and loadable from a single-file checkpoint in the SGM layout."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.base.embedded import (
    MARKER,
    SDXL_ID,
    SDXL_NAME,
    build_embedded,
    embedded_path,
    is_complete,
)
from lorahub.base.resolve import load_pipeline, resolve_base
from lorahub.cli.main import cli

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_thread")]  # tiny models: fastest on one torch thread


def digests(folder: Path, pattern: str = "*.safetensors") -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob(pattern))}


def test_build_is_deterministic_and_complete(embedded_xl_base: Path, embedded_base: Path, tmp_path: Path) -> None:
    again = build_embedded(tmp_path / "again", seed=0, family="sdxl")
    first = digests(embedded_xl_base)
    assert set(first) == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
    }
    assert first == digests(again)
    assert digests(embedded_xl_base, "*/*.json") == digests(again, "*/*.json")
    other = digests(build_embedded(tmp_path / "other", seed=1, family="sdxl"))
    assert all(other[k] != first[k] for k in first)
    # the SD 1.x model of the same seed shares no weights with it
    assert digests(embedded_base)["text_encoder/model.safetensors"] != first["text_encoder/model.safetensors"]
    # a build without its second text encoder is not complete
    assert is_complete(embedded_xl_base) and is_complete(embedded_xl_base, "sdxl")
    broken = tmp_path / "broken"
    shutil.copytree(embedded_xl_base, broken)
    shutil.rmtree(broken / "text_encoder_2")
    assert not is_complete(broken)
    assert embedded_path(tmp_path, family="sdxl") == tmp_path / "models" / SDXL_NAME


def test_sdxl_architecture(embedded_xl_base: Path) -> None:
    marker = json.loads((embedded_xl_base / MARKER).read_text())
    assert marker["id"] == SDXL_ID and marker["family"] == "sdxl" and marker["seed"] == 0
    assert marker["name"] == SDXL_NAME == "embedded-sdxl-tiny-v1"
    index = json.loads((embedded_xl_base / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]
    assert index["force_zeros_for_empty_prompt"] is True

    def cfg(sub: str, name: str = "config.json") -> dict:
        return json.loads((embedded_xl_base / sub / name).read_text())

    unet, te1, te2, vae = cfg("unet"), cfg("text_encoder"), cfg("text_encoder_2"), cfg("vae")
    assert unet["addition_embed_type"] == "text_time" and unet["use_linear_projection"] is True
    assert unet["cross_attention_dim"] == te1["hidden_size"] + te2["hidden_size"]
    assert unet["projection_class_embeddings_input_dim"] == te2["projection_dim"] + 6 * unet["addition_time_embed_dim"]
    assert unet["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert unet["transformer_layers_per_block"] == [1, 1, 2]
    assert te2["hidden_size"] > te1["hidden_size"] and te2["hidden_act"] == "gelu"
    assert vae["scaling_factor"] == 0.13025 and vae["force_upcast"] is True
    sched = cfg("scheduler", "scheduler_config.json")
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"]) == ("scaled_linear", 0.00085, 0.012)
    assert sched["timestep_spacing"] == "leading" and sched["prediction_type"] == "epsilon"
    assert not [p for p in embedded_xl_base.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]


def test_from_pretrained_is_a_working_sdxl_pipeline(embedded_xl_base: Path) -> None:
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    pipe = StableDiffusionXLPipeline.from_pretrained(embedded_xl_base)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 128  # native size: 1024 / 8

    def draw(prompt: str, size: int = 64, **kw):  # noqa: ANN003, ANN202
        gen = torch.Generator("cpu").manual_seed(0)
        return pipe(prompt, num_inference_steps=2, generator=gen, output_type="np", height=size, width=size,
                    **kw).images

    assert draw("a photo of a cat", size=None).shape == (1, 128, 128, 3)  # the default size: the native one
    img = draw("a photo of a cat")
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all() and img.std() > 0.02
    assert np.array_equal(img, draw("a photo of a cat"))
    assert np.abs(img - draw("zzzz qqqq")).mean() > 1e-4  # the prompt conditions the picture
    # micro-conditioning reaches the UNet: another original size changes the picture
    assert np.abs(img - draw("a photo of a cat", original_size=(512, 256))).mean() > 1e-4

    # SDXL module names where LoRAs go: no attention at the highest resolution, two transformer
    # blocks at the deepest level (SDXL has ten), linear projections
    names = dict(pipe.unet.named_modules())
    for block in ("down_blocks.1.attentions.1", "down_blocks.2.attentions.0", "mid_block.attentions.0",
                  "up_blocks.0.attentions.2", "up_blocks.1.attentions.0"):
        for leaf in ("attn1.to_q", "attn2.to_k", "attn2.to_out.0"):
            assert f"{block}.transformer_blocks.0.{leaf}" in names
    assert "down_blocks.2.attentions.1.transformer_blocks.1.attn1.to_q" in names
    assert "down_blocks.0.attentions.0" not in names and "up_blocks.2.attentions.0" not in names
    assert isinstance(names["down_blocks.1.attentions.0.proj_in"], torch.nn.Linear)
    assert "add_embedding.linear_1" in names
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.pad_token == "<|endoftext|>"
    ids = pipe.tokenizer_2("mystyle", padding="max_length", max_length=77).input_ids
    assert ids[0] == 0 and ids.count(1) == 1 and ids[-1] == pipe.tokenizer_2.pad_token_id


@pytest.mark.parametrize("spec", ["lorahub/embedded-sdxl-tiny", "embedded-sdxl"])
def test_resolve_and_load(spec: str, embedded_xl_home: Path) -> None:
    ref = resolve_base(spec)
    assert (ref.kind, ref.family, ref.name, ref.seed) == ("embedded", "sdxl", SDXL_ID, 0)
    assert ref.pipeline_class == "StableDiffusionXLPipeline" and Path(ref.location) == embedded_xl_home
    pipe = load_pipeline(spec)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    folder = resolve_base(str(embedded_xl_home))  # the folder itself: its marker names the family and seed
    assert (folder.kind, folder.family, folder.seed) == ("folder", "sdxl", 0)


def test_resolve_without_building(lorahub_home: Path) -> None:
    ref = resolve_base(SDXL_ID, build=False)
    assert ref.kind == "embedded" and ref.family == "sdxl" and ref.seed is None
    assert Path(ref.location) == embedded_path(lorahub_home, family="sdxl") and not Path(ref.location).exists()


def test_cli_build_and_info(lorahub_home: Path) -> None:
    res = CliRunner().invoke(cli, ["base", "build", "--family", "sdxl", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data == {"id": SDXL_ID, "path": str(embedded_path(lorahub_home, family="sdxl")), "seed": 0,
                    "weights": "random", "family": "sdxl"}
    assert is_complete(data["path"]) and not embedded_path(lorahub_home).exists()  # the SD 1.x model is not built
    again = CliRunner().invoke(cli, ["base", "build", "--family", "sdxl"])
    assert again.exit_code == 0 and "already built" in again.stderr
    info = CliRunner().invoke(cli, ["base", "info", SDXL_ID, "--json"])
    assert info.exit_code == 0, info.output
    doc = json.loads(info.stdout)
    assert doc["family"] == "sdxl" and doc["built"] is True and doc["name"] == SDXL_ID
    assert doc["components"]["text_encoder_2"] == "transformers.CLIPTextModelWithProjection"
    bad = CliRunner().invoke(cli, ["base", "build", "--family", "sd4"])
    assert bad.exit_code == 2


# --------------------------------------------------------------------------------------- single file


@pytest.fixture(scope="module")
def xl_checkpoint(embedded_xl_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lorahub.base.checkpoint import export_single_file

    return export_single_file(embedded_xl_base, tmp_path_factory.mktemp("xl-single") / "tiny-sdxl.safetensors")


def test_single_file_has_the_sgm_layout(xl_checkpoint: Path, embedded_xl_base: Path) -> None:
    from safetensors.numpy import load_file

    from lorahub.adapters.header import read_header
    from lorahub.base.checkpoint import checkpoint_family, context_dim

    header = read_header(xl_checkpoint)
    assert checkpoint_family(header) == "sdxl" and context_dim(header) == 96
    assert header.string_metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    shapes = {k: tuple(v.shape) for k, v in header.tensors.items()}
    for key in (
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.input_blocks.4.1.proj_in.weight",
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.1.attn2.to_k.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.1.attn1.to_q.weight",
        "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.attn1.to_out.0.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "conditioner.embedders.0.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight",
        "conditioner.embedders.1.model.transformer.resblocks.3.mlp.c_proj.weight",
        "conditioner.embedders.1.model.positional_embedding",
        "conditioner.embedders.1.model.ln_final.weight",
    ):
        assert key in shapes, key
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] == (192, 64)
    assert not [k for k in shapes if k.startswith("conditioner.embedders.1.")
                and re.search(r"\.[qkv]_proj\.", k)]  # q/k/v are stacked, as OpenCLIP stores them
    assert "model.diffusion_model.output_blocks.8.2.conv.weight" not in shapes  # the last up block has no upsampler
    # OpenCLIP multiplies x @ text_projection: the transpose of transformers' Linear weight
    te2 = load_file(str(embedded_xl_base / "text_encoder_2" / "model.safetensors"))
    ours = load_file(str(xl_checkpoint))
    assert (ours["conditioner.embedders.1.model.text_projection"] == te2["text_projection.weight"].T).all()


def test_single_file_unet_names_exist_in_a_real_sdxl_lora(xl_checkpoint: Path, shared_fixtures: Path) -> None:
    """Every attention module of the tiny UNet, in SGM names, is a module a real SDXL kohya LoRA targets."""
    from lorahub.adapters.header import read_header

    real = json.loads((shared_fixtures / "shapes" / "alien_style_sdxl.shapes.json").read_text())
    real_modules = {k.split(".")[0] for k in real if k.startswith("lora_unet_")}
    ours = set()
    for key in read_header(xl_checkpoint).tensors:
        m = re.match(r"model\.diffusion_model\.(.+\.attn[12]\.to_[qkv])\.weight$", key)
        if m:
            ours.add("lora_unet_" + m[1].replace(".", "_"))
    assert len(ours) == 17 * 2 * 3
    assert ours <= real_modules, sorted(ours - real_modules)[:5]


def test_single_file_loads_through_base_with_the_same_weights(
    xl_checkpoint: Path, embedded_xl_base: Path, embedded_xl_home: Path
) -> None:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    ref = resolve_base(str(xl_checkpoint))
    assert (ref.kind, ref.family, ref.config) == ("single_file", "sdxl", str(embedded_xl_home))
    pipe = load_pipeline(ref)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.vae.config.scaling_factor == 0.13025
    for comp, fname in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                        ("text_encoder", "model.safetensors"), ("text_encoder_2", "model.safetensors")):
        want = load_file(str(embedded_xl_base / comp / fname))
        got = getattr(pipe, comp).state_dict()
        assert set(want) == set(got), comp
        assert [k for k in want if not torch.equal(want[k], got[k])] == [], comp
    folder = load_pipeline(str(embedded_xl_base))

    def draw(p):  # noqa: ANN001, ANN202
        return p("a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                 generator=torch.Generator().manual_seed(3)).images

    assert np.array_equal(draw(pipe), draw(folder))
