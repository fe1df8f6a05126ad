"""kohya-layout files written at test time (tests/kohyakit.py) against the documented layout, read by
lorahub and mapped by diffusers onto the real SD 1.5 / SDXL architectures; against the real kohya
files' shape manifests when ../shared has them (extra check).

The layout (kohya-ss/sd-scripts
``networks/lora.py``, ``LoRANetwork.__init__.create_modules`` and ``LoRAModule.__init__``): every
Linear/Conv2d of a ``Transformer2DModel`` and of ``CLIPAttention``/``CLIPMLP`` is one module
``<prefix>_<path with _>`` with ``lora_down.weight`` [r, in(, kh, kw)], ``lora_up.weight`` [out, r(, 1, 1)]
and a scalar ``alpha``; SD 1.x: prefixes ``lora_unet_``/``lora_te_``, diffusers paths, cross-attention
768, ``proj_in``/``proj_out`` 1x1 convolutions; SDXL: ``lora_te1_`` (768, 12 layers) and ``lora_te2_``
(1280, 32 layers), kohya's SGM UNet names (``input_blocks_{4,5,7,8}_1_``, ``middle_block_1_``,
``output_blocks_{0..5}_1_``), cross-attention 2048, linear projections.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest
from kohyakit import manifest_layout, modules, read_layout, write_kohya

from lorahub.adapters.fingerprint import fingerprint_file
from lorahub.adapters.inspect import inspect_file
from lorahub.adapters.validate import validate_file

SUFFIXES = {"lora_down.weight", "lora_up.weight", "alpha"}
_TE = r"text_model_encoder_layers_(\d+)_(self_attn_(q|k|v|out)_proj|mlp_fc[12])"
_BLOCK = r"transformer_blocks_(\d+)_(attn[12]_to_(q|k|v|out_0)|ff_net_0_proj|ff_net_2)"
SD15_UNET = re.compile(r"lora_unet_(down_blocks_[0-2]_attentions_[01]|mid_block_attentions_0|up_blocks_[1-3]_attentions_[0-2])_"
                       rf"(proj_in|proj_out|{_BLOCK})")
SDXL_UNET = re.compile(r"lora_unet_(input_blocks_[4578]_1|middle_block_1|output_blocks_[0-5]_1)_"
                       rf"(proj_in|proj_out|{_BLOCK})")


def _check_pairs(layout: dict[str, dict[str, list[int]]], rank: int) -> None:
    for name, tensors in layout.items():
        assert set(tensors) == SUFFIXES, name
        down, up, alpha = tensors["lora_down.weight"], tensors["lora_up.weight"], tensors["alpha"]
        assert alpha == [] and down[0] == rank and up[1] == rank, name
        assert len(down) == len(up) and (len(down) == 2 or (down[2:] == [1, 1] and up[2:] == [1, 1])), name


def test_sd15_layout_is_kohyas(sd15_kohya_file: Path) -> None:
    layout = read_layout(sd15_kohya_file)
    _check_pairs(layout, rank=8)
    unet = [n for n in layout if n.startswith("lora_unet_")]
    te = [n for n in layout if n.startswith("lora_te_")]
    assert (len(unet), len(te), len(layout)) == (192, 72, 264)  # 16 transformers x 12, 12 layers x 6
    assert all(SD15_UNET.fullmatch(n) for n in unet), [n for n in unet if not SD15_UNET.fullmatch(n)][:3]
    assert {int(re.fullmatch(f"lora_te_{_TE}", n).group(1)) for n in te} == set(range(12))
    for name, t in layout.items():
        down, up = t["lora_down.weight"], t["lora_up.weight"]
        if name.endswith(("proj_in", "proj_out")):
            assert len(down) == 4, name  # 1x1 convolutions on SD 1.x
        if "attn2_to_k" in name or "attn2_to_v" in name:
            assert down[1] == 768, name
        if name.startswith("lora_te_"):
            assert {down[1], up[0]} <= {768, 3072}, name
    widths = {n: layout[n]["lora_up.weight"][0] for n in unet if n.endswith("attn1_to_q")}
    assert Counter(widths.values()) == {320: 5, 640: 5, 1280: 6}  # down 2+2+2, mid 1, up 3+3+3


def test_sdxl_layout_is_kohyas(sdxl_kohya_file: Path) -> None:
    layout = read_layout(sdxl_kohya_file)
    _check_pairs(layout, rank=4)
    by_prefix = Counter(n.split("_")[1] for n in layout)
    assert by_prefix == {"unet": 722, "te1": 72, "te2": 192}
    assert all(SDXL_UNET.fullmatch(n) for n in layout if n.startswith("lora_unet_"))
    for prefix, layers, width in (("lora_te1_", 12, 768), ("lora_te2_", 32, 1280)):
        names = [n for n in layout if n.startswith(prefix)]
        assert {int(re.fullmatch(prefix + _TE, n).group(1)) for n in names} == set(range(layers))
        assert {layout[n]["lora_down.weight"][1] for n in names if n.endswith("q_proj")} == {width}
    cross = {layout[n]["lora_down.weight"][1] for n in layout if "attn2_to_k" in n}
    assert cross == {2048}
    assert all(len(t["lora_down.weight"]) == 2 for t in layout.values())  # linear projections
    block = re.compile(r"lora_unet_(input_blocks_\d|middle_block|output_blocks_\d)_1_")
    depth = Counter(block.match(n).group(1) for n in layout if n.endswith("attn1_to_q"))  # transformer blocks
    assert depth == {"input_blocks_4": 2, "input_blocks_5": 2, "input_blocks_7": 10, "input_blocks_8": 10,
                     "middle_block": 10, "output_blocks_0": 10, "output_blocks_1": 10, "output_blocks_2": 10,
                     "output_blocks_3": 2, "output_blocks_4": 2, "output_blocks_5": 2}


@pytest.mark.parametrize(
    ("family", "fixture", "expect"),
    [
        ("sd1", "sd15_kohya_file", {"cross_attention_dim": 768, "rank": 8, "alpha": 4.0, "dtype": "float16",
                                    "conv_modules": 32, "coverage": (192, 72, 0)}),
        ("sdxl", "sdxl_kohya_file", {"cross_attention_dim": 2048, "rank": 4, "alpha": 4.0, "dtype": "bfloat16",
                                     "conv_modules": 0, "coverage": (722, 72, 192)}),
    ],
)
def test_inspect_reads_them(family: str, fixture: str, expect: dict, request: pytest.FixtureRequest) -> None:
    r = inspect_file(request.getfixturevalue(fixture))
    assert (r.format, r.base_family, r.declared_base_family) == ("kohya-lora", family, family)
    assert (r.coverage.unet, r.coverage.text_encoder, r.coverage.text_encoder_2) == expect["coverage"]
    for key in ("cross_attention_dim", "rank", "alpha", "dtype", "conv_modules"):
        assert getattr(r, key) == expect[key], key
    assert r.ranks == [expect["rank"]] and r.diffusers_loadable and r.warnings == []
    assert r.training["network_module"] == "networks.lora"


@pytest.mark.parametrize("fixture", ["sd15_kohya_file", "sdxl_kohya_file"])
def test_valid_and_fingerprinted(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    report = validate_file(path)
    assert report.valid and report.errors == [] and report.warnings == []
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    rep = fingerprint_file(path, use_cache=False)
    assert rep.sha256 == hashlib.sha256(data).hexdigest() and rep.autov2 == rep.sha256[:10].upper()
    assert rep.tensor_sha256 == hashlib.sha256(data[8 + n :]).hexdigest() == rep.embedded_sshs_model_hash
    assert rep.embedded_hash == "match" and rep.autov3 == rep.tensor_sha256[:12].upper()
    assert rep.autov1 == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8].upper()
    assert int(rep.crc32, 16) == zlib.crc32(data)


def test_same_arguments_same_bytes(tmp_path: Path) -> None:
    a = write_kohya(tmp_path / "a.safetensors", "sd1", rank=2, seed=3)
    b = write_kohya(tmp_path / "b.safetensors", "sd1", rank=2, seed=3)
    c = write_kohya(tmp_path / "c.safetensors", "sd1", rank=2, seed=4)
    body = lambda p: p.read_bytes()[8 + struct.unpack("<Q", p.read_bytes()[:8])[0] :]  # noqa: E731
    assert body(a) == body(b) != body(c)
    with pytest.raises(ValueError, match="no kohya layout"):
        modules("flux")


def _rankless(layout: dict[str, dict[str, list[int]]]) -> dict[str, dict[str, list]]:
    """The layout with the rank dimensions (lora_down's first, lora_up's second) replaced by "r"."""
    out = {}
    for name, t in layout.items():
        down, up = list(t["lora_down.weight"]), list(t["lora_up.weight"])
        down[0] = up[1] = "r"
        out[name] = {"lora_down.weight": down, "lora_up.weight": up, "alpha": t["alpha"]}
    return out


@pytest.mark.parametrize(("fixture", "manifest"), [("sd15_kohya_file", "shinkai_makoto_offset"),
                                                   ("sdxl_kohya_file", "alien_style_sdxl")])
def test_same_layout_as_the_real_kohya_files(fixture: str, manifest: str, shared_fixtures: Path,
                                             request: pytest.FixtureRequest) -> None:
    """Extra check on real data: every name and shape (but the rank) of a real kohya LoRA (../shared manifests)."""
    real = manifest_layout(shared_fixtures / "shapes" / f"{manifest}.shapes.json")
    ours = read_layout(request.getfixturevalue(fixture))
    assert set(ours) == set(real), sorted(set(ours) ^ set(real))[:5]
    assert _rankless(ours) == _rankless(real)


# SD 1.5's UNet is diffusers' default UNet2DConditionModel with cross-attention 768; SDXL base's
# config as published with stabilityai/stable-diffusion-xl-base-1.0 (unet/config.json).
SD15_UNET_CONFIG = {"cross_attention_dim": 768}
SDXL_UNET_CONFIG = {
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "projection_class_embeddings_input_dim": 2816, "sample_size": 128, "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "use_linear_projection": True,
}
#: diffusers' names after its kohya conversion: ``<component>.<layer>.lora.down.weight`` (UNet),
#: ``.lora_linear_layer.down.weight`` (text encoders) and, for attention projections, the attention
#: processor spelling ``<attn>.processor.to_q_lora.down.weight`` / ``<self_attn>.to_q_lora.down.weight``.
_LORA_KEY = re.compile(r"^(unet|text_encoder|text_encoder_2)\.(.+?)\.(?:lora|lora_linear_layer)\.(down|up)\.weight$")
_PROC_KEY = re.compile(r"^(unet|text_encoder|text_encoder_2)\.(.+?)\.(?:processor\.)?(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_PROJ = {"unet": {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
         "text_encoder": {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}}


def _layer_of(key: str) -> tuple[str, str, str]:
    """(component, layer path, down|up) of a converted key."""
    m = _PROC_KEY.match(key)
    if m:
        component, attn, proj, side = m.groups()
        return component, f"{attn}.{_PROJ['unet' if component == 'unet' else 'text_encoder'][proj]}", side
    m = _LORA_KEY.match(key)
    assert m, key
    return m.group(1), m.group(2), m.group(3)


@pytest.mark.torch
@pytest.mark.parametrize("fixture", ["sd15_kohya_file", "sdxl_kohya_file"])
def test_diffusers_maps_every_module_onto_the_real_architecture(fixture: str, request: pytest.FixtureRequest) -> None:
    """diffusers' own kohya converter renames every key, and each lands on a layer of the full-size
    SD 1.5 / SDXL UNet and CLIP text encoders (built on the meta device) with the right widths."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    path = request.getfixturevalue(fixture)
    xl = fixture.startswith("sdxl")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**(SDXL_UNET_CONFIG if xl else SD15_UNET_CONFIG))
        parts = {"unet": unet, "text_encoder": CLIPTextModel(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12))}
        if xl:
            parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                projection_dim=1280))
    if xl:
        state, alphas = StableDiffusionXLPipeline.lora_state_dict(str(path), unet_config=unet.config)
    else:
        state, alphas = StableDiffusionPipeline.lora_state_dict(str(path))
    layers = {name: dict(model.named_modules()) for name, model in parts.items()}
    hit: set[tuple[str, str]] = set()
    for key, tensor in state.items():
        component, module_path, side = _layer_of(key)
        named = layers[component]
        layer = named.get(module_path) or named.get(module_path.removeprefix("text_model."))  # transformers 5
        assert layer is not None, f"{key}: no such layer in the {component}"
        if isinstance(layer, torch.nn.Conv2d):
            width_in, width_out = layer.in_channels, layer.out_channels
        else:
            width_in, width_out = layer.in_features, layer.out_features
        assert (tensor.shape[1] == width_in) if side == "down" else (tensor.shape[0] == width_out), key
        hit.add((component, module_path))
    assert len(hit) == len(read_layout(path)) == len(state) // 2
    assert set(alphas.values()) == {4.0}
