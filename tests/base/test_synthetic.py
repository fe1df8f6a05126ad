"""Synthetic adapters: real names, real metadata, and diffusers really loads them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lorahub.adapters.header import read_header, read_scalars
from lorahub.base.synthetic import make_adapter, target_modules
from lorahub.errors import UsageError

# ---------------------------------------------------------------------------------------------
# the file (no torch needed once the base exists)


def test_diffusers_layout_and_metadata(embedded_base: Path, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "d.safetensors", base=str(embedded_base), rank=4, alpha=8, trigger="mystyle")
    header = read_header(path)
    names = set(header.tensors)
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert header.tensors[f"{key}.lora_A.weight"].shape == (4, 64)
    assert header.tensors[f"{key}.lora_B.weight"].shape == (64, 4)
    assert header.tensors["unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"].shape == (4, 64)
    assert header.tensors["unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_B.weight"].shape == (
        64,
        4,
    )
    # 16 transformer blocks x 2 attentions x 4 projections x (A, B)
    assert len(names) == 16 * 2 * 4 * 2
    assert all(n.startswith("unet.") for n in names)
    assert {t.dtype for t in header.tensors.values()} == {"F32"}
    md = header.metadata
    assert md["format"] == "pt"
    cfg = json.loads(md["lora_adapter_metadata"])
    assert cfg["unet.r"] == 4 and cfg["unet.lora_alpha"] == 8
    assert sorted(cfg["unet.target_modules"]) == ["to_k", "to_out.0", "to_q", "to_v"]
    assert md["modelspec.sai_model_spec"] == "1.0.1"
    assert md["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert md["modelspec.implementation"] == "diffusers"
    assert md["modelspec.title"] == "d"
    assert md["modelspec.trigger_phrase"] == "mystyle"
    assert not [k for k in md if k.startswith("ss_")]


def test_kohya_layout_and_metadata(embedded_base: Path, tmp_path: Path) -> None:
    path = make_adapter(
        tmp_path / "k.safetensors", base=embedded_base, fmt="kohya", rank=2, alpha=1, trigger="mystyle",
        title="My Style", text_encoder=True, dtype="float16",
    )
    header = read_header(path)
    mod = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert header.tensors[f"{mod}.lora_down.weight"].shape == (2, 64)
    assert header.tensors[f"{mod}.lora_up.weight"].shape == (64, 2)
    assert header.tensors[f"{mod}.alpha"].shape == ()
    assert header.tensors[f"{mod}.lora_down.weight"].dtype == "F16"
    te = "lora_te_text_model_encoder_layers_3_self_attn_out_proj"
    assert header.tensors[f"{te}.lora_down.weight"].shape == (2, 64)
    alphas = read_scalars(header, [n for n in header.tensors if n.endswith(".alpha")])
    assert len(alphas) == 16 * 8 + 4 * 4 and set(alphas.values()) == {1.0}
    assert all(n.startswith(("lora_unet_", "lora_te_")) for n in header.tensors)
    md = header.metadata
    assert md["ss_base_model_version"] == "sd_v1"
    assert md["ss_network_module"] == "networks.lora"
    assert md["ss_network_dim"] == "2"
    assert md["ss_network_alpha"] == "1.0"
    assert md["ss_network_args"] == "{}"
    assert md["ss_v2"] == "False"
    assert md["ss_output_name"] == "My Style"
    assert md["modelspec.title"] == "My Style"
    tags = json.loads(md["ss_tag_frequency"])
    assert tags["10_mystyle"]["mystyle"] == 12
    # The embedded tensor hash is the real one: SHA-256 of the bytes after the header.
    data = path.read_bytes()[8 + header.header_len :]
    assert md["sshs_model_hash"] == hashlib.sha256(data).hexdigest()


def test_same_seed_same_bytes(embedded_base: Path, tmp_path: Path) -> None:
    a = make_adapter(tmp_path / "a.safetensors", base=embedded_base, seed=3)
    b = make_adapter(tmp_path / "b.safetensors", base=embedded_base, seed=3, title="a")
    c = make_adapter(tmp_path / "c.safetensors", base=embedded_base, seed=4, title="a")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_targets_folders_and_errors(embedded_base: Path, tmp_path: Path) -> None:
    only_q = make_adapter(tmp_path / "q.safetensors", base=embedded_base, targets=("attn2.to_q",))
    assert len(read_header(only_q).tensors) == 16 * 2
    convs = make_adapter(tmp_path / "conv.safetensors", base=embedded_base, fmt="kohya", targets=("proj_in",))
    t = read_header(convs).tensors
    assert t["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"].shape == (4, 64, 1, 1)
    assert t["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"].shape == (64, 4, 1, 1)
    # a folder: the standard file name inside it
    out = tmp_path / "repo"
    out.mkdir()
    assert make_adapter(out, base=embedded_base).name == "pytorch_lora_weights.safetensors"
    assert len(target_modules(embedded_base, ("to_q",), ("q_proj",))) == 32 + 4

    with pytest.raises(UsageError, match="no unet module"):
        make_adapter(tmp_path / "x.safetensors", base=embedded_base, targets=("nonexistent",))
    with pytest.raises(UsageError, match="format"):
        make_adapter(tmp_path / "x.safetensors", base=embedded_base, fmt="lycoris")
    with pytest.raises(UsageError, match="rank"):
        make_adapter(tmp_path / "x.safetensors", base=embedded_base, rank=0)
    with pytest.raises(UsageError, match="rank 64 exceeds"):
        make_adapter(tmp_path / "x.safetensors", base=embedded_base, rank=64)
    with pytest.raises(UsageError, match="alpha"):
        make_adapter(tmp_path / "x.safetensors", base=embedded_base, alpha=-1)
    assert not (tmp_path / "x.safetensors").exists()


def test_default_base_is_the_embedded_model(embedded_home: Path, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "e.safetensors", fmt="kohya")
    md = read_header(path).metadata
    assert md["ss_sd_model_name"] == "lorahub/embedded-sd1-tiny"
    assert md["modelspec.resolution"] == "64x64"


def test_bfloat16(embedded_base: Path, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "bf.safetensors", base=embedded_base, dtype="bfloat16", fmt="kohya")
    header = read_header(path)
    assert {t.dtype for t in header.tensors.values()} == {"BF16"}
    alphas = read_scalars(header, [n for n in header.tensors if n.endswith(".alpha")])
    assert set(alphas.values()) == {4.0}


# ---------------------------------------------------------------------------------------------
# diffusers loads them, for real


@pytest.fixture(scope="module")
def _module_pipe(embedded_base: Path) -> Any:
    from lorahub.base.resolve import load_pipeline

    return load_pipeline(str(embedded_base))


@pytest.fixture
def tiny_pipe(_module_pipe: Any) -> Iterator[Any]:
    """The module's embedded pipeline; LoRAs loaded by a test are unloaded after it."""
    yield _module_pipe
    _module_pipe.unload_lora_weights()


@pytest.fixture(scope="module")
def render() -> Callable[..., Any]:
    """render(pipe, prompt=..., seed=0, steps=2) -> float32 array (1, 64, 64, 3) in [0, 1]."""

    def _render(pipe: Any, prompt: str = "a photo of mystyle", seed: int = 0, steps: int = 2) -> Any:
        import torch

        gen = torch.Generator("cpu").manual_seed(seed)
        return pipe(prompt, num_inference_steps=steps, height=64, width=64, generator=gen, output_type="np").images

    return _render


@pytest.fixture(scope="module")
def base_image(_module_pipe: Any, render: Callable[..., Any]) -> Any:
    """The embedded model's picture of the default prompt, without adapters."""
    return render(_module_pipe)


def _lora_modules(model: Any, adapter: str) -> dict[str, Any]:
    return {n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A}


@pytest.mark.torch
@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_loads_and_changes_the_image(
    fmt: str, embedded_base: Path, tmp_path: Path, tiny_pipe: Any, render: Callable[..., Any], base_image: Any
) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    path = make_adapter(
        tmp_path / f"{fmt}.safetensors", base=embedded_base, fmt=fmt, rank=4, alpha=8, seed=1, text_encoder=True
    )
    tiny_pipe.load_lora_weights(str(path), adapter_name="syn")
    assert tiny_pipe.get_list_adapters() == {"unet": ["syn"], "text_encoder": ["syn"]}
    unet_mods = _lora_modules(tiny_pipe.unet, "syn")
    te_mods = _lora_modules(tiny_pipe.text_encoder, "syn")
    assert len(unet_mods) == 128 and len(te_mods) == 16

    # The weights in the model are the file's, and alpha/r is honoured.
    sd = load_file(str(path))
    mod = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    te = "encoder.layers.2.self_attn.v_proj"
    if fmt == "kohya":
        down = sd[f"lora_unet_{mod.replace('.', '_')}.lora_down.weight"]
        te_up = sd[f"lora_te_text_model_{te.replace('.', '_')}.lora_up.weight"]
    else:
        down = sd[f"unet.{mod}.lora_A.weight"]
        te_up = sd[f"text_encoder.text_model.{te}.lora_B.weight"]
    assert np.array_equal(unet_mods[mod].lora_A["syn"].weight.detach().numpy(), down)
    assert np.array_equal(te_mods[te].lora_B["syn"].weight.detach().numpy(), te_up)
    assert unet_mods[mod].scaling["syn"] == pytest.approx(2.0)

    image = render(tiny_pipe)
    assert image.shape == base_image.shape == (1, 64, 64, 3)
    assert np.abs(image - base_image).mean() > 0.01

    tiny_pipe.unload_lora_weights()
    assert np.allclose(render(tiny_pipe), base_image, atol=1e-5)


@pytest.mark.torch
def test_formats_and_alphas_agree(
    embedded_base: Path, tmp_path: Path, tiny_pipe: Any, render: Callable[..., Any], base_image: Any
) -> None:
    """Same seed -> same effective update, whatever the layout, rank scaling or strength knob."""
    import numpy as np

    d = make_adapter(tmp_path / "d.safetensors", base=embedded_base, fmt="diffusers", alpha=8, seed=5)
    k = make_adapter(tmp_path / "k.safetensors", base=embedded_base, fmt="kohya", alpha=1, seed=5)
    weak = make_adapter(tmp_path / "w.safetensors", base=embedded_base, fmt="kohya", seed=5, scale=0.05)
    tiny_pipe.load_lora_weights(str(d), adapter_name="d5")
    tiny_pipe.load_lora_weights(str(k), adapter_name="k5")
    tiny_pipe.load_lora_weights(str(weak), adapter_name="w5")
    assert tiny_pipe.get_list_adapters() == {"unet": ["d5", "k5", "w5"]}
    images = {}
    for name in ("d5", "k5", "w5"):
        tiny_pipe.set_adapters([name])
        images[name] = render(tiny_pipe)
    assert np.allclose(images["d5"], images["k5"], atol=1e-4)
    strong = np.abs(images["d5"] - base_image).mean()
    faint = np.abs(images["w5"] - base_image).mean()
    assert 0 < faint < strong / 3
