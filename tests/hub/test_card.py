"""Model cards: the metadata the Hub indexes, values it accepts, a user's card kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from testkit import SHARED

from lorahub.adapters.inspect import inspect_file
from lorahub.adapters.writer import write_safetensors_zeros
from lorahub.hub.card import CardInputs, Sample, card_metadata, merge_card, render_card, split_card
from lorahub.schemas.adapters import FingerprintReport

MOD = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"


@pytest.fixture
def inputs(tmp_path: Path) -> CardInputs:
    f = write_safetensors_zeros(
        tmp_path / "pytorch_lora_weights.safetensors",
        {f"{MOD}.lora.down.weight": ("F16", [4, 768]), f"{MOD}.lora.up.weight": ("F16", [320, 4])},
        metadata={"modelspec.trigger_phrase": "mystyle", "modelspec.title": "My Style"},
    )
    fp = FingerprintReport(
        path=str(f), size=f.stat().st_size, sha256="a" * 64, autov1="E3B0C442", autov2="a" * 10, autov3="B" * 12,
        tensor_sha256="b" * 64, crc32="DEADBEEF", blake3="c" * 64, embedded_hash="absent",
    )
    return CardInputs(
        repo_id="alice/mystyle",
        weight_name="pytorch_lora_weights.safetensors",
        report=inspect_file(f),
        fingerprint=fp,
        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        tags=["style"],
        samples=[Sample("samples/0.png", "mystyle, a cat")],
    )


def test_metadata(inputs: CardInputs) -> None:
    meta = card_metadata(inputs)
    assert meta["base_model_relation"] == "adapter"
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-image"
    assert meta["license"] == "creativeml-openrail-m"
    assert {"lora", "text-to-image", "diffusers", "template:sd-lora", "style", "stable-diffusion"} <= set(meta["tags"])
    assert meta["instance_prompt"] == "mystyle"
    assert meta["widget"] == [{"text": "mystyle, a cat", "output": {"url": "samples/0.png"}}]


def test_rendered_card_parses_and_has_the_body(inputs: CardInputs) -> None:
    text = render_card(inputs)
    meta, body = split_card(text)
    assert meta == card_metadata(inputs)
    assert "# My Style" in body
    assert 'pipe.load_lora_weights("alice/mystyle", weight_name="pytorch_lora_weights.safetensors")' in body
    # a diffusers-layout file alone: ComfyUI skips its UNet attention, so the UIs are sent to `lorahub convert`
    assert "<lora:" not in body and "lorahub convert" in body
    assert "| ComfyUI | none of these files" in body and "| diffusers | `pytorch_lora_weights.safetensors` |" in body
    assert "BBBBBBBBBBBB" in body and "a" * 64 in body and "c" * 64 in body
    assert "![mystyle, a cat](samples/0.png)" in body
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    assert card.data.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert card.data.to_dict()["instance_prompt"] == "mystyle"


def test_values_are_ones_the_hub_accepts(inputs: CardInputs) -> None:
    ref = SHARED / "reference" / "hf-tasks.json"
    if not ref.exists():
        pytest.skip(f"{ref} is absent: the shared reference lives in ../shared beside the project")
    tasks = json.loads(ref.read_text())
    meta = card_metadata(inputs)
    assert meta["pipeline_tag"] in tasks["pipeline_types"]
    assert meta["library_name"] in tasks["model_library_keys"]
    assert meta["pipeline_tag"] in tasks["library_to_tasks"][meta["library_name"]]


def test_user_card_is_kept(inputs: CardInputs) -> None:
    mine = "---\nlicense: mit\ntags: [mine]\n---\n\n# My own words\n\nHand-written.\n"
    merged, added = merge_card(mine, inputs)
    meta, body = split_card(merged)
    assert body.startswith("# My own words") and "Hand-written." in body
    assert meta["license"] == "mit"  # never overwritten
    assert meta["tags"][0] == "mine" and "lora" in meta["tags"]
    assert meta["base_model"] == inputs.base_model and "base_model" in added and "license" not in added
    no_yaml, added2 = merge_card("# Just text\n", inputs)
    assert yaml.safe_load(no_yaml.split("---")[1])["pipeline_tag"] == "text-to-image"
    assert "# Just text" in no_yaml and "pipeline_tag" in added2


def test_card_names_the_file_each_tool_loads_fully(inputs: CardInputs, tmp_path: Path) -> None:
    """A package with a diffusers-layout and a kohya-layout file: diffusers gets the first, the UIs the second."""
    from lorahub.hub.card import tool_files

    kohya = write_safetensors_zeros(
        tmp_path / "mystyle_kohya.safetensors",
        {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": ("F16", [4, 768]),
         "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": ("F16", [320, 4]),
         "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": ("F16", [])},
        metadata={"ss_base_model_version": "sd_v1"},
    )
    reports = {"pytorch_lora_weights.safetensors": inputs.report, "mystyle_kohya.safetensors": inspect_file(kohya)}
    assert inputs.report.loaders == ["diffusers"]
    assert reports["mystyle_kohya.safetensors"].loaders == ["diffusers", "a1111", "comfyui", "kohya"]
    files = tool_files(reports, "pytorch_lora_weights.safetensors")
    assert files == {"diffusers": "pytorch_lora_weights.safetensors", "a1111": "mystyle_kohya.safetensors",
                     "comfyui": "mystyle_kohya.safetensors", "kohya": "mystyle_kohya.safetensors"}
    inputs.tool_files = files
    body = split_card(render_card(inputs))[1]
    assert 'weight_name="pytorch_lora_weights.safetensors"' in body
    assert "Download `mystyle_kohya.safetensors` into your LoRA folder" in body and "<lora:mystyle_kohya:0.8>" in body
    for tool in ("AUTOMATIC1111 / Forge", "ComfyUI", "kohya-ss sd-scripts"):
        assert f"| {tool} | `mystyle_kohya.safetensors` |" in body


def test_sdxl_card_names_sdxl_base_license_pipeline_and_the_kohya_file(sdxl_kohya_file: Path, tmp_path: Path) -> None:
    """An SDXL package (a diffusers file with both text encoders and a kohya file with SGM names): base_model SDXL
    base 1.0 unless a Hub id is declared, openrail++, StableDiffusionXLPipeline in the snippet, the kohya file for
    the UIs."""
    from lorahub.hub.card import hub_base_model, tool_files

    te2 = "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"
    diffusers = write_safetensors_zeros(
        tmp_path / "pytorch_lora_weights.safetensors",
        {f"{MOD}.lora.down.weight": ("F16", [4, 640]), f"{MOD}.lora.up.weight": ("F16", [640, 4]),
         f"{te2}.lora_linear_layer.down.weight": ("F16", [4, 1280]),
         f"{te2}.lora_linear_layer.up.weight": ("F16", [1280, 4])},
        metadata={"ss_base_model_version": "sdxl_base_v1-0", "modelspec.trigger_phrase": "xlstyle"},
    )
    reports = {"pytorch_lora_weights.safetensors": inspect_file(diffusers), "xl_kohya.safetensors": inspect_file(sdxl_kohya_file)}
    assert {r.base_family for r in reports.values()} == {"sdxl"}
    # what the package declares: a local path or a file name is no Hub id; an embedded model folder is its id
    assert hub_base_model(str(tmp_path), "sdxl") == "stabilityai/stable-diffusion-xl-base-1.0"
    assert hub_base_model("sd_xl_base_1.0.safetensors", "sdxl") == "stabilityai/stable-diffusion-xl-base-1.0"
    assert hub_base_model(None, "sdxl") == "stabilityai/stable-diffusion-xl-base-1.0"
    assert hub_base_model("cagliostrolab/animagine-xl-3.1", "sdxl") == "cagliostrolab/animagine-xl-3.1"
    assert hub_base_model(None, "sd1") is None and hub_base_model("./local", "sd1") == "./local"  # SD 1.x: as before
    assert hub_base_model(str(tmp_path / "models" / "embedded-sdxl-tiny-v1"), "sdxl") == "lorahub/embedded-sdxl-tiny"
    # decided from the text: an uploaded package's train_config may name any path, which is never read
    assert hub_base_model("/etc", "sdxl") == "stabilityai/stable-diffusion-xl-base-1.0"

    inp = CardInputs(repo_id="alice/xlstyle", weight_name="pytorch_lora_weights.safetensors",
                     report=reports["pytorch_lora_weights.safetensors"],
                     tool_files=tool_files(reports, "pytorch_lora_weights.safetensors"),
                     base_model=hub_base_model(str(tmp_path / "model.safetensors"), "sdxl"))
    meta, body = split_card(render_card(inp))
    assert meta["base_model"] == "stabilityai/stable-diffusion-xl-base-1.0" and meta["license"] == "openrail++"
    assert {"stable-diffusion-xl", "stable-diffusion-xl-diffusers", "base:sdxl"} <= set(meta["tags"])
    assert "from diffusers import StableDiffusionXLPipeline" in body
    assert 'StableDiffusionXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0"' in body
    assert 'weight_name="pytorch_lora_weights.safetensors"' in body
    assert "Download `xl_kohya.safetensors` into your LoRA folder" in body and "<lora:xl_kohya:0.8>" in body
    assert "It is an SDXL LoRA" in body
    for tool in ("AUTOMATIC1111 / Forge", "ComfyUI", "kohya-ss sd-scripts"):
        assert f"| {tool} | `xl_kohya.safetensors` |" in body
