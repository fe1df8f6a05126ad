"""The embedded Flux.1 and SD 3.5 base models: deterministic, real FluxPipeline / StableDiffusion3Pipeline
folders (T5 tokenizer built offline), the real transformer module names, reachable through ``--base``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.base.embedded import MARKER, build_embedded, embedded_path, is_complete, model
from lorahub.base.embedded_mmdit import (
    FLUX_ID,
    FLUX_NAME,
    SD3_ID,
    SD3_NAME,
    build_t5_tokenizer,
)
from lorahub.base.resolve import load_pipeline, resolve_base
from lorahub.cli.main import cli

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_thread")]

BASES = {"flux": "embedded_flux_base", "sd3": "embedded_sd3_base"}


def digests(folder: Path, pattern: str = "*.safetensors") -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob(pattern))}


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_build_is_deterministic_and_complete(family: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    built: Path = request.getfixturevalue(BASES[family])
    first = digests(built)
    encoders = ["text_encoder", "text_encoder_2"] + (["text_encoder_3"] if family == "sd3" else [])
    assert set(first) == {"transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                          *(f"{e}/model.safetensors" for e in encoders)}
    again = build_embedded(tmp_path / "again", seed=0, family=family)
    assert digests(again) == first
    assert digests(again, "*/*.json") == digests(built, "*/*.json")
    other = digests(build_embedded(tmp_path / "other", seed=1, family=family))
    assert all(other[k] != first[k] for k in first)
    assert is_complete(built) and is_complete(built, family) and not is_complete(built, "sdxl")
    broken = tmp_path / "broken"
    shutil.copytree(built, broken)
    shutil.rmtree(broken / encoders[-1])
    assert not is_complete(broken)
    assert embedded_path(tmp_path, family=family) == tmp_path / "models" / {"flux": FLUX_NAME, "sd3": SD3_NAME}[family]
    assert not [p for p in built.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth", ".model")]


def test_flux_and_sd3_share_no_weights(embedded_flux_base: Path, embedded_sd3_base: Path) -> None:
    flux, sd3 = digests(embedded_flux_base), digests(embedded_sd3_base)
    assert flux["vae/diffusion_pytorch_model.safetensors"] != sd3["vae/diffusion_pytorch_model.safetensors"]
    assert flux["text_encoder_2/model.safetensors"] != sd3["text_encoder_3/model.safetensors"]


def test_flux_architecture(embedded_flux_base: Path) -> None:
    marker = json.loads((embedded_flux_base / MARKER).read_text())
    assert (marker["id"], marker["name"], marker["family"], marker["seed"]) == (FLUX_ID, FLUX_NAME, "flux", 0)
    assert FLUX_NAME == "embedded-flux-tiny-v1" and model("flux").denoiser == "transformer"
    index = json.loads((embedded_flux_base / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]

    def cfg(sub: str, name: str = "config.json") -> dict:
        return json.loads((embedded_flux_base / sub / name).read_text())

    tr, vae, clip, t5 = cfg("transformer"), cfg("vae"), cfg("text_encoder"), cfg("text_encoder_2")
    assert tr["guidance_embeds"] is True and tr["num_layers"] >= 1 and tr["num_single_layers"] >= 1
    assert tr["in_channels"] == 4 * vae["latent_channels"] == 64  # 16 latent channels, packed 2x2
    assert tr["joint_attention_dim"] == t5["d_model"] and tr["pooled_projection_dim"] == clip["hidden_size"]
    assert sum(tr["axes_dims_rope"]) == tr["attention_head_dim"]
    assert (vae["use_quant_conv"], vae["use_post_quant_conv"]) == (False, False)
    assert (vae["scaling_factor"], vae["shift_factor"]) == (0.3611, 0.1159)
    assert t5["feed_forward_proj"] == "gated-gelu" and t5["is_gated_act"] is True
    sched = cfg("scheduler", "scheduler_config.json")
    assert sched["use_dynamic_shifting"] is True and sched["shift"] == 3.0
    assert (sched["base_shift"], sched["max_shift"], sched["base_image_seq_len"], sched["max_image_seq_len"]) == (
        0.5, 1.15, 256, 4096)


def test_sd3_architecture(embedded_sd3_base: Path) -> None:
    marker = json.loads((embedded_sd3_base / MARKER).read_text())
    assert (marker["id"], marker["name"], marker["family"]) == (SD3_ID, SD3_NAME, "sd3")
    index = json.loads((embedded_sd3_base / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"]
    assert index["text_encoder"] == index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["text_encoder_3"] == ["transformers", "T5EncoderModel"]

    def cfg(sub: str) -> dict:
        return json.loads((embedded_sd3_base / sub / "config.json").read_text())

    tr, vae, te1, te2, te3 = cfg("transformer"), cfg("vae"), cfg("text_encoder"), cfg("text_encoder_2"), cfg("text_encoder_3")
    assert tr["pooled_projection_dim"] == te1["projection_dim"] + te2["projection_dim"]
    assert tr["joint_attention_dim"] == te3["d_model"] >= te1["hidden_size"] + te2["hidden_size"]
    assert tr["in_channels"] == vae["latent_channels"] == 16 and tr["dual_attention_layers"] == [0]
    assert (vae["scaling_factor"], vae["shift_factor"]) == (1.5305, 0.0609)


def test_t5_tokenizer_is_built_offline_and_round_trips(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, T5TokenizerFast

    tok = build_t5_tokenizer()
    ids = tok("a photo of a Cat, 2 dogs!").input_ids
    assert ids[-1] == tok.eos_token_id == 1 and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "a photo of a Cat, 2 dogs!"
    assert tok("a cat").input_ids != tok("a Cat").input_ids  # case-sensitive, as T5's
    padded = tok("mystyle", padding="max_length", max_length=16).input_ids
    assert padded[:8] == tok("mystyle").input_ids and padded[8:] == [tok.pad_token_id] * 8 == [0] * 8
    tok.save_pretrained(tmp_path / "t5")
    for cls in (T5TokenizerFast, AutoTokenizer):
        again = cls.from_pretrained(tmp_path / "t5")
        assert isinstance(again, T5TokenizerFast) and again.model_max_length == 512
        assert again("a photo of a Cat, 2 dogs!").input_ids == ids


def _draw(pipe, prompt: str, **kw):  # noqa: ANN001, ANN003, ANN202
    import torch

    gen = torch.Generator("cpu").manual_seed(0)
    return pipe(prompt, num_inference_steps=2, generator=gen, output_type="np", height=64, width=64,
                max_sequence_length=32, **kw).images


def test_from_pretrained_is_a_working_flux_pipeline(embedded_flux_base: Path) -> None:
    import numpy as np
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(embedded_flux_base)
    pipe.set_progress_bar_config(disable=True)
    img = _draw(pipe, "a photo of a cat")
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all() and img.std() > 0.02
    assert np.array_equal(img, _draw(pipe, "a photo of a cat"))
    assert np.abs(img - _draw(pipe, "zzzz qqqq")).mean() > 1e-4  # the prompt conditions the picture
    assert np.abs(img - _draw(pipe, "a photo of a cat", guidance_scale=9.0)).mean() > 1e-4  # guidance embedding
    names = dict(pipe.transformer.named_modules())
    for leaf in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                 "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                 "norm1.linear", "norm1_context.linear"):
        assert f"transformer_blocks.1.{leaf}" in names
    for leaf in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out", "norm.linear"):
        assert f"single_transformer_blocks.1.{leaf}" in names
    assert "time_text_embed.guidance_embedder.linear_1" in names
    assert isinstance(names["single_transformer_blocks.0.attn.to_q"], torch.nn.Linear)


def test_from_pretrained_is_a_working_sd3_pipeline(embedded_sd3_base: Path) -> None:
    import numpy as np
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(embedded_sd3_base)
    pipe.set_progress_bar_config(disable=True)
    gen_default = pipe("a cat", num_inference_steps=1, output_type="np", max_sequence_length=16).images
    assert gen_default.shape == (1, 64, 64, 3)  # the default size: the native one
    img = _draw(pipe, "a photo of a cat")
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all() and img.std() > 0.02
    assert np.array_equal(img, _draw(pipe, "a photo of a cat"))
    assert np.abs(img - _draw(pipe, "zzzz qqqq")).mean() > 1e-4
    # T5 alone (the same CLIP prompts) still changes the picture: the third encoder is wired in
    assert np.abs(img - _draw(pipe, "a photo of a cat", prompt_3="a red bicycle")).mean() > 1e-4
    names = dict(pipe.transformer.named_modules())
    for leaf in ("attn.to_q", "attn.add_q_proj", "attn.to_add_out", "ff.net.0.proj", "ff_context.net.2",
                 "norm1.linear", "norm1_context.linear"):
        assert f"transformer_blocks.0.{leaf}" in names
    assert "transformer_blocks.0.attn2.to_q" in names and "transformer_blocks.1.attn2.to_q" not in names
    assert "transformer_blocks.2.ff_context" not in names  # the last block is context-pre-only, as SD3's


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_test_size_lora_modules_fit_the_base(family: str, request: pytest.FixtureRequest) -> None:
    """Every module the test-size LoRA files of tests/mmditkit.py write exists in the base with that shape."""
    import mmditkit as K
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    folder: Path = request.getfixturevalue(BASES[family])
    cls = FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel
    mods = dict(cls.from_pretrained(folder / "transformer").named_modules())
    wanted = K.diffusers_modules(family)
    assert len(wanted) > 20
    for key, (inp, out) in wanted.items():
        mod = mods[key.removeprefix("transformer.")]
        assert isinstance(mod, torch.nn.Linear) and (mod.in_features, mod.out_features) == (inp, out), key


@pytest.mark.parametrize(("spec", "family", "cls"), [
    (FLUX_ID, "flux", "FluxPipeline"), ("embedded-flux", "flux", "FluxPipeline"),
    (SD3_ID, "sd3", "StableDiffusion3Pipeline"), ("embedded-sd3", "sd3", "StableDiffusion3Pipeline"),
])
def test_resolve_and_load(spec: str, family: str, cls: str, request: pytest.FixtureRequest,
                          lorahub_home: Path) -> None:
    built: Path = request.getfixturevalue(BASES[family])
    target = embedded_path(lorahub_home, family=family)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(built, target_is_directory=True)
    ref = resolve_base(spec)
    assert (ref.kind, ref.family, ref.name, ref.seed, ref.pipeline_class) == ("embedded", family, model(family).id, 0, cls)
    assert type(load_pipeline(spec)).__name__ == cls
    folder = resolve_base(str(built))
    assert (folder.kind, folder.family, folder.pipeline_class, folder.seed) == ("folder", family, cls, 0)


def test_geometry_without_building(lorahub_home: Path) -> None:
    from lorahub.training.trainer import base_geometry

    assert base_geometry(FLUX_ID) == (64, 16, "flux")  # 8 (VAE) x 2 (Flux packs latents 2x2)
    assert base_geometry("embedded-sd3") == (64, 16, "sd3")  # 8 (VAE) x 2 (SD3's patch size)
    assert not embedded_path(lorahub_home, family="flux").exists()


def test_a_folder_without_its_transformer_is_refused(embedded_flux_base: Path, tmp_path: Path) -> None:
    from lorahub.errors import BaseModelError

    broken = tmp_path / "broken"
    shutil.copytree(embedded_flux_base, broken)
    (broken / MARKER).unlink()
    assert resolve_base(str(broken)).family == "flux"  # the pipeline class names the family
    index = json.loads((broken / "model_index.json").read_text())
    del index["transformer"]
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(BaseModelError, match="lacks transformer"):
        resolve_base(str(broken))


def test_cli_build(lorahub_home: Path) -> None:
    for family, model_id in (("flux", FLUX_ID), ("sd3", SD3_ID)):
        res = CliRunner().invoke(cli, ["base", "build", "--family", family, "--json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data == {"id": model_id, "path": str(embedded_path(lorahub_home, family=family)), "seed": 0,
                        "weights": "random", "family": family}
        assert is_complete(data["path"], family)
        again = CliRunner().invoke(cli, ["base", "build", "--family", family])
        assert again.exit_code == 0 and "already built" in again.stderr
    assert not embedded_path(lorahub_home).exists()


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_synthetic_adapters_for_the_transformer_bases(family: str, request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    from lorahub.adapters.header import read_header
    from lorahub.adapters.inspect import inspect_file
    from lorahub.base.synthetic import make_adapter
    from lorahub.errors import UsageError

    folder: Path = request.getfixturevalue(BASES[family])
    path = make_adapter(tmp_path / "a.safetensors", base=folder, rank=4, alpha=2, text_encoder=True)
    header = read_header(path)
    comps = {name.split(".", 1)[0] for name in header.tensors}
    # the CLIP encoders get LoRA parts, the T5 ones (Flux's text_encoder_2, SD3's text_encoder_3) none
    assert comps == ({"transformer", "text_encoder"} if family == "flux" else
                     {"transformer", "text_encoder", "text_encoder_2"})
    assert "transformer.single_transformer_blocks.1.attn.to_q.lora_A.weight" in header.tensors or family == "sd3"
    assert "transformer.transformer_blocks.0.attn2.to_q.lora_A.weight" in header.tensors or family == "flux"
    md = header.string_metadata()
    assert md["modelspec.architecture"] == {"flux": "flux-1-dev/lora", "sd3": "stable-diffusion-3.5-medium/lora"}[family]
    assert md["modelspec.resolution"] == "64x64" and "modelspec.prediction_type" not in md
    report = inspect_file(path)
    assert (report.base_family, report.rank) == (family, 4)
    with pytest.raises(UsageError, match="kohya names"):
        make_adapter(tmp_path / "k.safetensors", base=folder, fmt="kohya")
