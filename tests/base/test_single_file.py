"""Single-file checkpoints: export the embedded model in the original SD layout, load it back offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub.adapters.header import read_header
from lorahub.base.checkpoint import checkpoint_family, context_dim, export_single_file
from lorahub.base.resolve import BaseRef, load_pipeline, resolve_base
from lorahub.errors import BaseModelError

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny_checkpoint(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_single_file(embedded_base, tmp_path_factory.mktemp("single") / "tiny-sd1.safetensors")


def test_export_uses_the_original_layout(tiny_checkpoint: Path) -> None:
    header = read_header(tiny_checkpoint)
    names = set(header.tensors)
    assert checkpoint_family(header) == "sd1"
    assert context_dim(header) == 64
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",  # upsampler after a block without attention
        "model.diffusion_model.output_blocks.5.2.conv.weight",  # upsampler after a block with attention
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "first_stage_model.decoder.up.2.upsample.conv.weight",  # three VAE levels (the drawing base's)
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
    ):
        assert key in names, key
    assert header.tensors["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert not [n for n in names if n.startswith(("unet.", "vae.", "down_blocks", "text_model."))]


def test_single_file_loads_offline_with_the_same_weights(
    tiny_checkpoint: Path, embedded_base: Path, embedded_home: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    ref = resolve_base(str(tiny_checkpoint))
    assert ref.kind == "single_file" and ref.config == str(embedded_home)
    pipe = load_pipeline(ref)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    for comp, fname in (
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ):
        want = load_file(str(embedded_base / comp / fname))
        got = getattr(pipe, comp).state_dict()
        assert set(want) == set(got), comp
        diff = [k for k in want if not torch.equal(want[k], got[k])]
        assert diff == [], (comp, diff[:3])
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(embedded_base), subfolder="tokenizer")
    assert pipe.tokenizer("a cat").input_ids == tokenizer("a cat").input_ids == [
        0, *tokenizer.convert_tokens_to_ids(["a</w>", "c", "at</w>"]), 1]  # the config folder's tokenizer


def test_single_file_without_config_fails_clearly(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    ref = BaseRef(kind="single_file", location=str(tiny_checkpoint), family="sd1")
    with pytest.raises(BaseModelError, match="--base-config FOLDER"):
        load_pipeline(ref)
