"""Model cards of Flux.1 and SD3 adapters: the checkpoint a card names (FLUX.1 [dev] or [schnell], SD 3.5 Large or
Medium, SD3 Medium) decided from the user's base model, the file's metadata or its shapes; each checkpoint's own
licence fields; the pipeline class, dtype and steps of the diffusers snippet; the file ComfyUI users download.

The files are zero-filled headers at the real models' widths (Flux.1 3072, SD 3.5 Large 2432, Medium 1536)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit import SHARED

from lorahub.adapters.inspect import inspect_file
from lorahub.adapters.writer import write_safetensors_zeros
from lorahub.hub.card import (
    CHECKPOINTS,
    CardInputs,
    card_metadata,
    check_card,
    hub_base_model,
    reference_checkpoint,
    render_card,
    split_card,
    tool_files,
)

FLUX = 3072
DEV_LICENSE = {"license": "other", "license_name": "flux-1-dev-non-commercial-license",
               "license_link": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"}


def _kohya(path: Path, modules: dict[str, tuple[int, int]], metadata: dict[str, str] | None = None) -> Path:
    tensors = {}
    for name, (inp, out) in modules.items():
        tensors[f"{name}.lora_down.weight"] = ("BF16", [4, inp])
        tensors[f"{name}.lora_up.weight"] = ("BF16", [out, 4])
        tensors[f"{name}.alpha"] = ("BF16", [])
    return write_safetensors_zeros(path, tensors, metadata=metadata)


def flux_kohya(path: Path, metadata: dict[str, str] | None = None) -> Path:
    return _kohya(path, {"lora_unet_double_blocks_0_img_attn_qkv": (FLUX, 3 * FLUX),
                         "lora_unet_single_blocks_0_linear2": (5 * FLUX, FLUX)}, metadata)


def flux_diffusers(path: Path, metadata: dict[str, str] | None = None) -> Path:
    tensors = {}
    for proj in ("to_q", "to_k", "to_v"):
        tensors[f"transformer.transformer_blocks.0.attn.{proj}.lora_A.weight"] = ("BF16", [4, FLUX])
        tensors[f"transformer.transformer_blocks.0.attn.{proj}.lora_B.weight"] = ("BF16", [FLUX, 4])
    return write_safetensors_zeros(path, tensors, metadata=metadata)


def sd3_kohya(path: Path, hidden: int, *, attn2: bool = False, metadata: dict[str, str] | None = None) -> Path:
    mods = {"lora_unet_joint_blocks_0_x_block_attn_qkv": (hidden, 3 * hidden),
            "lora_unet_joint_blocks_0_context_block_attn_qkv": (hidden, 3 * hidden)}
    if attn2:
        mods["lora_unet_joint_blocks_0_x_block_attn2_qkv"] = (hidden, 3 * hidden)
    return _kohya(path, mods, metadata)


@pytest.mark.parametrize(("metadata", "declared", "want"), [
    ({}, None, "flux-dev"),
    ({"modelspec.architecture": "flux-1-dev/lora"}, None, "flux-dev"),
    ({"modelspec.architecture": "flux-1-schnell/lora"}, None, "flux-schnell"),
    ({"ss_base_model_version": "flux1", "ss_sd_model_name": "flux1-schnell-fp8.safetensors"}, None, "flux-schnell"),
    ({"modelspec.architecture": "flux-1/lora"}, "black-forest-labs/FLUX.1-schnell", "flux-schnell"),
    ({"modelspec.architecture": "flux-1-schnell/lora"}, "black-forest-labs/FLUX.1-dev", "flux-dev"),  # the user's
    ({"ss_output_name": "devil_schnell_style"}, None, "flux-dev"),  # titles are the user's words, not read
])
def test_the_flux_checkpoint_from_the_users_base_the_metadata_or_dev(tmp_path: Path, metadata, declared, want) -> None:
    r = inspect_file(flux_kohya(tmp_path / "f.safetensors", metadata))
    assert r.base_family == "flux"
    assert reference_checkpoint(r, declared) == CHECKPOINTS[want]


@pytest.mark.parametrize(("hidden", "attn2", "metadata", "want"), [
    (2432, False, {}, "sd3.5-large"),
    (1536, True, {}, "sd3.5-medium"),  # dual attention: 3.5 Medium's
    (1536, False, {}, "sd3.5-medium"),  # the width SD3 Medium shares: the one trained now
    (1536, False, {"modelspec.architecture": "stable-diffusion-3-m/lora"}, "sd3-medium"),  # kohya's names
    (1536, False, {"modelspec.architecture": "stable-diffusion-3-5-medium/lora"}, "sd3.5-medium"),
    (2432, False, {"modelspec.architecture": "stable-diffusion-3-5-large/lora"}, "sd3.5-large"),
    (1536, False, {"ss_base_model_version": "medium"}, "sd3-medium"),
    (2432, False, {"ss_base_model_version": "5-large"}, "sd3.5-large"),
])
def test_the_sd3_checkpoint_from_the_metadata_or_the_shapes(tmp_path: Path, hidden, attn2, metadata, want) -> None:
    r = inspect_file(sd3_kohya(tmp_path / "s.safetensors", hidden, attn2=attn2, metadata=metadata))
    assert (r.base_family, r.hidden_size) == ("sd3", hidden)
    assert reference_checkpoint(r, None) == CHECKPOINTS[want]


def test_sd3_medium_named_by_the_user_wins_over_the_shapes(tmp_path: Path) -> None:
    r = inspect_file(sd3_kohya(tmp_path / "s.safetensors", 1536))
    assert reference_checkpoint(r, "stabilityai/stable-diffusion-3-medium-diffusers") == CHECKPOINTS["sd3-medium"]
    assert hub_base_model(None, "sd3", r) == "stabilityai/stable-diffusion-3.5-medium"
    assert hub_base_model("/models/sd3.5_large.safetensors", "sd3", r) == "stabilityai/stable-diffusion-3.5-large"
    assert hub_base_model("someone/sd35-finetune", "sd3", r) == "someone/sd35-finetune"  # a Hub id: kept


def _card(tmp_path: Path, files: dict[str, Path], primary: str, base_model: str | None = None,
          license: str | None = None) -> tuple[dict, str]:  # noqa: A002
    reports = {name: inspect_file(f) for name, f in files.items()}
    rep = reports[primary]
    inp = CardInputs(repo_id="alice/fluxstyle", weight_name=primary, report=rep,
                     tool_files=tool_files(reports, primary), license=license,
                     base_model=base_model or hub_base_model(None, rep.base_family, rep))
    text = render_card(inp)
    assert check_card(text) == ([], [])
    meta, body = split_card(text)
    assert meta == card_metadata(inp)
    return meta, body


def test_flux_dev_card_licence_pipeline_and_comfyui_file(tmp_path: Path) -> None:
    """A Flux.1 package (a diffusers file and a kohya one): FLUX.1-dev with its non-commercial licence named and
    linked, FluxPipeline in bfloat16 at 28 steps and guidance 3.5, the kohya file for ComfyUI users."""
    files = {"pytorch_lora_weights.safetensors": flux_diffusers(tmp_path / "pytorch_lora_weights.safetensors"),
             "fluxstyle_kohya.safetensors": flux_kohya(tmp_path / "fluxstyle_kohya.safetensors")}
    meta, body = _card(tmp_path, files, "pytorch_lora_weights.safetensors")
    assert meta["base_model"] == "black-forest-labs/FLUX.1-dev" and meta["base_model_relation"] == "adapter"
    assert {k: meta[k] for k in DEV_LICENSE} == DEV_LICENSE
    assert {"flux", "flux-diffusers", "base:flux"} <= set(meta["tags"])
    assert "from diffusers import FluxPipeline" in body
    assert 'FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16)' in body
    assert 'weight_name="pytorch_lora_weights.safetensors"' in body
    assert "num_inference_steps=28, guidance_scale=3.5)" in body
    assert "## Use it in ComfyUI" in body
    assert "Download `fluxstyle_kohya.safetensors` into `ComfyUI/models/loras/`" in body
    assert "| ComfyUI | `fluxstyle_kohya.safetensors` |" in body
    assert "<lora:" not in body and "AUTOMATIC1111 does not load Flux.1 LoRAs" in body
    from huggingface_hub import ModelCard

    data = ModelCard(render_card(CardInputs(repo_id="a/b", weight_name="x.safetensors",
                                            report=inspect_file(files["fluxstyle_kohya.safetensors"]),
                                            base_model="black-forest-labs/FLUX.1-dev"))).data
    assert (data.license, data.license_name, data.license_link) == tuple(DEV_LICENSE.values())


def test_flux_schnell_card_is_apache_with_four_steps(tmp_path: Path) -> None:
    f = flux_kohya(tmp_path / "s.safetensors", {"modelspec.architecture": "flux-1-schnell/lora"})
    meta, body = _card(tmp_path, {"s.safetensors": f}, "s.safetensors")
    assert meta["base_model"] == "black-forest-labs/FLUX.1-schnell" and meta["license"] == "apache-2.0"
    assert "license_name" not in meta and "license_link" not in meta
    # at Flux.1's widths diffusers loads the kohya layout itself (its own converter)
    assert 'FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-schnell", torch_dtype=torch.bfloat16)' in body
    assert "num_inference_steps=4, guidance_scale=0, max_sequence_length=256)" in body


def test_the_users_licence_and_base_model_are_kept(tmp_path: Path) -> None:
    f = flux_kohya(tmp_path / "k.safetensors")
    meta, body = _card(tmp_path, {"k.safetensors": f}, "k.safetensors", base_model="alice/flux-finetune",
                       license="mit")
    assert meta["license"] == "mit" and "license_name" not in meta
    assert meta["base_model"] == "alice/flux-finetune"
    assert 'FluxPipeline.from_pretrained("alice/flux-finetune", torch_dtype=torch.bfloat16)' in body


@pytest.mark.parametrize(("hidden", "attn2", "repo", "steps"), [
    (2432, False, "stabilityai/stable-diffusion-3.5-large", "num_inference_steps=28, guidance_scale=3.5)"),
    (1536, True, "stabilityai/stable-diffusion-3.5-medium", "num_inference_steps=40, guidance_scale=4.5)"),
])
def test_sd35_cards_name_the_checkpoint_the_community_licence_and_the_pipeline(tmp_path: Path, hidden, attn2,
                                                                               repo, steps) -> None:
    f = sd3_kohya(tmp_path / "s.safetensors", hidden, attn2=attn2)
    meta, body = _card(tmp_path, {"s.safetensors": f}, "s.safetensors")
    assert meta["base_model"] == repo
    assert (meta["license"], meta["license_name"], meta["license_link"]) == (
        "other", "stabilityai-ai-community", f"https://huggingface.co/{repo}/blob/main/LICENSE.md")
    assert {"sd3", "sd3-diffusers", "base:sd3"} <= set(meta["tags"])
    # diffusers does not load SD3's kohya layout: the card says how to convert it, and names the file for ComfyUI
    assert "from_pretrained" not in body and "--format diffusers" in body
    assert "Download `s.safetensors` into `ComfyUI/models/loras/`" in body and "SD 3.5 / SD3 LoRA" in body


def test_licence_fields_are_ones_the_hub_accepts() -> None:
    ref = SHARED / "reference" / "hf-tasks.json"
    if not ref.exists():
        pytest.skip(f"{ref} is absent: the shared reference lives in ../shared beside the project")
    tasks = json.loads(ref.read_text())
    for c in CHECKPOINTS.values():
        assert c.dtype in ("bfloat16", "float16") and c.id.count("/") == 1
        assert (c.license == "other") == bool(c.license_name and c.license_link)
        if c.license_link:
            assert c.license_link == f"https://huggingface.co/{c.id}/blob/main/LICENSE.md"
    assert "text-to-image" in tasks["library_to_tasks"]["diffusers"]


def test_a_push_takes_the_checkpoint_from_the_file_that_declares_it(tmp_path: Path) -> None:
    """A package whose diffusers file carries no modelspec (diffusers writes none) beside a kohya file that says
    flux-1-schnell: the card names FLUX.1-schnell and its licence."""
    from lorahub.hub.push import push

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    flux_diffusers(pkg / "pytorch_lora_weights.safetensors")
    flux_kohya(pkg / "style_kohya.safetensors", {"modelspec.architecture": "flux-1-schnell/lora"})
    res = push(pkg, repo="me/style", endpoint="http://127.0.0.1:9", token=False, dry_run=True)
    meta, body = split_card(res.card)
    assert meta["base_model"] == "black-forest-labs/FLUX.1-schnell" and meta["license"] == "apache-2.0"
    assert "num_inference_steps=4" in body
