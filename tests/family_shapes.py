"""Shape fixtures: LoRA key names and shapes for every base family lorahub names, from the published configs.

``python tests/family_shapes.py`` (re)writes ``tests/fixtures/shapes/<fixture>.json`` (key -> shape and dtype,
plus ``__metadata__`` where the family is declared rather than shaped); ``tests/adapters/test_families.py``
checks that each is recognised and that the committed files are what this generator writes.

Where diffusers has the model, the modules are read from its class built on the ``meta`` device with the
published config (no weights, no downloads); the original (ComfyUI/kohya) layouts are written from the
original repositories' module names with widths from the same configs. Every LoRA is rank 4, bfloat16;
only a few blocks are kept. Sources:

- Flux.1: black-forest-labs/FLUX.1-dev ``transformer/config.json``; BFL names from black-forest-labs/flux
  ``src/flux/modules/layers.py``.
- SD 3.5: stabilityai/stable-diffusion-3.5-large and -medium ``transformer/config.json``; SAI names from
  Stability-AI/sd3.5 ``mmditx.py``.
- Qwen-Image: Qwen/Qwen-Image ``transformer/config.json``.
- Wan 2.1: Wan-AI/Wan2.1-T2V-14B-Diffusers and Wan2.1-T2V-1.3B-Diffusers ``transformer/config.json``; original
  names from Wan-Video/Wan2.1 ``wan/modules/model.py`` (``WanAttentionBlock``).
- HunyuanVideo: hunyuanvideo-community/HunyuanVideo ``transformer/config.json``; original names from
  Tencent-Hunyuan/HunyuanVideo ``hyvideo/modules/models.py`` (``MMDoubleStreamBlock``, ``MMSingleStreamBlock``).
- Chroma: lodestones/Chroma1-HD ``transformer/config.json`` (Flux.1-schnell's blocks without modulation
  layers, plus ``distilled_guidance_layer``).
- HiDream-I1: HiDream-ai/HiDream-I1-Full ``transformer/config.json``.
- Lumina-Image 2.0: Alpha-VLLM/Lumina-Image-2.0 ``transformer/config.json``; original names from
  Alpha-VLLM/Lumina-Image-2.0 ``models/model.py`` (``JointTransformerBlock``: fused ``attention.qkv``).
- PixArt-Σ: PixArt-alpha/PixArt-Sigma-XL-2-1024-MS ``transformer/config.json``.
- Kolors: Kwai-Kolors/Kolors-diffusers ``unet/config.json``; ChatGLM3 text encoder THUDM/chatglm3-6b
  ``config.json`` (hidden 4096, 2 query groups x 128 for k and v, ffn 13696 doubled by SwiGLU).
- AuraFlow: fal/AuraFlow-v0.3 ``transformer/config.json``.
- LTX-Video: Lightricks/LTX-Video ``transformer/config.json`` (0.9.x, 2B).
- Cosmos Predict2 / Anima: nvidia/Cosmos-Predict2-2B-Text2Image ``transformer/config.json``; original names
  from nvidia-cosmos/cosmos-predict2 ``minimal_v4_dit.py`` as Anima's kohya LoRAs write them.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "fixtures" / "shapes"
RANK = 4
DTYPE = "bfloat16"

# ---------------------------------------------------------------------------------------- published configs

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "flux1-dev": ("FluxTransformer2DModel", dict(
        attention_head_dim=128, guidance_embeds=True, in_channels=64, joint_attention_dim=4096, num_attention_heads=24,
        num_layers=19, num_single_layers=38, patch_size=1, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56))),
    "sd35-large": ("SD3Transformer2DModel", dict(
        attention_head_dim=64, caption_projection_dim=2432, in_channels=16, joint_attention_dim=4096,
        num_attention_heads=38, num_layers=38, out_channels=16, patch_size=2, pooled_projection_dim=2048,
        pos_embed_max_size=192, qk_norm="rms_norm", sample_size=128)),
    "sd35-medium": ("SD3Transformer2DModel", dict(
        attention_head_dim=64, caption_projection_dim=1536, dual_attention_layers=tuple(range(13)), in_channels=16,
        joint_attention_dim=4096, num_attention_heads=24, num_layers=24, out_channels=16, patch_size=2,
        pooled_projection_dim=2048, pos_embed_max_size=384, qk_norm="rms_norm", sample_size=128)),
    "qwen-image": ("QwenImageTransformer2DModel", dict(
        attention_head_dim=128, axes_dims_rope=(16, 56, 56), guidance_embeds=False, in_channels=64,
        joint_attention_dim=3584, num_attention_heads=24, num_layers=60, out_channels=16, patch_size=2)),
    "wan21-t2v-14b": ("WanTransformer3DModel", dict(
        added_kv_proj_dim=None, attention_head_dim=128, cross_attn_norm=True, eps=1e-6, ffn_dim=13824, freq_dim=256,
        image_dim=None, in_channels=16, num_attention_heads=40, num_layers=40, out_channels=16, patch_size=(1, 2, 2),
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024, text_dim=4096)),
    "wan21-t2v-1.3b": ("WanTransformer3DModel", dict(
        added_kv_proj_dim=None, attention_head_dim=128, cross_attn_norm=True, eps=1e-6, ffn_dim=8960, freq_dim=256,
        image_dim=None, in_channels=16, num_attention_heads=12, num_layers=30, out_channels=16, patch_size=(1, 2, 2),
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024, text_dim=4096)),
    "hunyuanvideo": ("HunyuanVideoTransformer3DModel", dict(
        attention_head_dim=128, guidance_embeds=True, in_channels=16, mlp_ratio=4.0, num_attention_heads=24,
        num_layers=20, num_refiner_layers=2, num_single_layers=40, out_channels=16, patch_size=2, patch_size_t=1,
        pooled_projection_dim=768, qk_norm="rms_norm", rope_axes_dim=(16, 56, 56), rope_theta=256.0,
        text_embed_dim=4096)),
    "chroma1-hd": ("ChromaTransformer2DModel", dict(
        approximator_hidden_dim=5120, approximator_layers=5, approximator_num_channels=64, attention_head_dim=128,
        axes_dims_rope=(16, 56, 56), in_channels=64, joint_attention_dim=4096, num_attention_heads=24, num_layers=19,
        num_single_layers=38, patch_size=1)),
    "hidream-i1-full": ("HiDreamImageTransformer2DModel", dict(
        attention_head_dim=128, caption_channels=[4096, 4096], in_channels=16, max_resolution=(128, 128),
        num_activated_experts=2, num_attention_heads=20, num_layers=16, num_routed_experts=4, num_single_layers=32,
        out_channels=16, patch_size=2, text_emb_dim=2048,
        llama_layers=list(range(48)))),  # one Llama layer per block; only the caption projections depend on it
    "lumina-image-2": ("Lumina2Transformer2DModel", dict(
        axes_dim_rope=(32, 32, 32), axes_lens=(300, 512, 512), cap_feat_dim=2304, ffn_dim_multiplier=None,
        hidden_size=2304, in_channels=16, multiple_of=256, norm_eps=1e-5, num_attention_heads=24, num_kv_heads=8,
        num_layers=26, num_refiner_layers=2, patch_size=2, sample_size=128, scaling_factor=1.0)),
    "pixart-sigma": ("PixArtTransformer2DModel", dict(
        activation_fn="gelu-approximate", attention_bias=True, attention_head_dim=72, caption_channels=4096,
        cross_attention_dim=1152, in_channels=4, interpolation_scale=2, norm_elementwise_affine=False, norm_eps=1e-6,
        norm_type="ada_norm_single", num_attention_heads=16, num_embeds_ada_norm=1000, num_layers=28, out_channels=8,
        patch_size=2, sample_size=128, use_additional_conditions=False)),
    "auraflow-v0.3": ("AuraFlowTransformer2DModel", dict(
        attention_head_dim=256, caption_projection_dim=3072, in_channels=4, joint_attention_dim=2048,
        num_attention_heads=12, num_mmdit_layers=4, num_single_dit_layers=32, out_channels=4, patch_size=2,
        pos_embed_max_size=9216, sample_size=64)),
    "ltx-video": ("LTXVideoTransformer3DModel", dict(
        activation_fn="gelu-approximate", attention_bias=True, attention_head_dim=64, attention_out_bias=True,
        caption_channels=4096, cross_attention_dim=2048, in_channels=128, norm_elementwise_affine=False, norm_eps=1e-6,
        num_attention_heads=32, num_layers=28, out_channels=128, patch_size=1, patch_size_t=1,
        qk_norm="rms_norm_across_heads")),
    "cosmos-predict2-2b": ("CosmosTransformer3DModel", dict(
        adaln_lora_dim=256, attention_head_dim=128, in_channels=16, mlp_ratio=4.0, num_attention_heads=16, num_layers=28,
        out_channels=16, patch_size=(1, 2, 2), text_embed_dim=1024)),
    "kolors": ("UNet2DConditionModel", dict(
        act_fn="silu", addition_embed_type="text_time", addition_time_embed_dim=256, attention_head_dim=[5, 10, 20],
        block_out_channels=[320, 640, 1280], center_input_sample=False, cross_attention_dim=2048,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], encoder_hid_dim=4096,
        encoder_hid_dim_type="text_proj", flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
        mid_block_type="UNetMidBlock2DCrossAttn", norm_num_groups=32, out_channels=4,
        projection_class_embeddings_input_dim=5632, sample_size=128, transformer_layers_per_block=[1, 2, 10],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True)),
}
#: THUDM/chatglm3-6b config.json: the text encoder Kolors conditions on.
CHATGLM3 = dict(hidden_size=4096, kv_channels=128, multi_query_group_num=2, ffn_hidden_size=13696, num_layers=28)


def _hidden(cfg: dict[str, Any]) -> int:
    return cfg.get("hidden_size") or cfg["num_attention_heads"] * cfg["attention_head_dim"]


@functools.cache
def _model_linears(config: str) -> dict[str, tuple[int, int]]:
    import diffusers
    import torch

    cls, cfg = CONFIGS[config]
    with torch.device("meta"):
        model = getattr(diffusers, cls)(**cfg)
    return {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def diffusers_linears(config: str, keep: str) -> dict[str, tuple[int, int]]:
    """{module path: (in, out)} of the Linear modules of a diffusers model built from a published config on the
    meta device, those whose path matches ``keep``."""
    rx = re.compile(keep)
    return {n: v for n, v in _model_linears(config).items() if rx.search(n)}


def _lora(modules: dict[str, tuple[int, int]], style: str) -> dict[str, dict[str, Any]]:
    """Key -> {shape, dtype} of a LoRA on ``modules``: ``peft`` (lora_A/lora_B) or ``kohya`` (lora_down/up/alpha)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (inp, o) in modules.items():
        if style == "peft":
            out[f"{name}.lora_A.weight"] = {"shape": [RANK, inp], "dtype": DTYPE}
            out[f"{name}.lora_B.weight"] = {"shape": [o, RANK], "dtype": DTYPE}
        else:
            out[f"{name}.lora_down.weight"] = {"shape": [RANK, inp], "dtype": DTYPE}
            out[f"{name}.lora_up.weight"] = {"shape": [o, RANK], "dtype": DTYPE}
            out[f"{name}.alpha"] = {"shape": [], "dtype": DTYPE}
    return out


def _prefixed(prefix: str, modules: dict[str, tuple[int, int]], flat: bool = False) -> dict[str, tuple[int, int]]:
    return {prefix + (n.replace(".", "_") if flat else n): v for n, v in modules.items()}


# ---------------------------------------------------------------------------------------- original layouts


def flux_original(cfg: dict[str, Any], blocks: tuple[int, ...], singles: tuple[int, ...], *, mods: bool) -> dict[str, tuple[int, int]]:
    h = _hidden(cfg)
    out = {}
    for i in blocks:
        for s in ("img", "txt"):
            out.update({f"double_blocks.{i}.{s}_attn.qkv": (h, 3 * h), f"double_blocks.{i}.{s}_attn.proj": (h, h),
                        f"double_blocks.{i}.{s}_mlp.0": (h, 4 * h), f"double_blocks.{i}.{s}_mlp.2": (4 * h, h)})
            if mods:
                out[f"double_blocks.{i}.{s}_mod.lin"] = (h, 6 * h)
    for i in singles:
        out.update({f"single_blocks.{i}.linear1": (h, 7 * h), f"single_blocks.{i}.linear2": (5 * h, h)})
        if mods:
            out[f"single_blocks.{i}.modulation.lin"] = (h, 3 * h)
    return out


def sd3_original(cfg: dict[str, Any], blocks: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    h = _hidden(cfg)
    dual = set(cfg.get("dual_attention_layers", ()))
    out = {}
    for i in blocks:
        b = f"joint_blocks.{i}"
        out.update({f"{b}.x_block.attn.qkv": (h, 3 * h), f"{b}.x_block.attn.proj": (h, h),
                    f"{b}.x_block.mlp.fc1": (h, 4 * h), f"{b}.x_block.mlp.fc2": (4 * h, h),
                    f"{b}.x_block.adaLN_modulation.1": (h, (9 if i in dual else 6) * h),
                    f"{b}.context_block.attn.qkv": (h, 3 * h), f"{b}.context_block.attn.proj": (h, h)})
        if i in dual:
            out.update({f"{b}.x_block.attn2.qkv": (h, 3 * h), f"{b}.x_block.attn2.proj": (h, h)})
    return out


def wan_original(cfg: dict[str, Any], blocks: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    d, f = _hidden(cfg), cfg["ffn_dim"]
    out = {}
    for i in blocks:
        for attn in ("self_attn", "cross_attn"):
            out.update({f"blocks.{i}.{attn}.{p}": (d, d) for p in "qkvo"})
        out.update({f"blocks.{i}.ffn.0": (d, f), f"blocks.{i}.ffn.2": (f, d)})
    return out


def hunyuan_original(cfg: dict[str, Any], blocks: tuple[int, ...], singles: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    h = _hidden(cfg)
    mlp = int(h * cfg["mlp_ratio"])
    out = {}
    for i in blocks:
        for s in ("img", "txt"):
            out.update({f"double_blocks.{i}.{s}_mod.linear": (h, 6 * h), f"double_blocks.{i}.{s}_attn_qkv": (h, 3 * h),
                        f"double_blocks.{i}.{s}_attn_proj": (h, h), f"double_blocks.{i}.{s}_mlp.fc1": (h, mlp),
                        f"double_blocks.{i}.{s}_mlp.fc2": (mlp, h)})
    for i in singles:
        out.update({f"single_blocks.{i}.linear1": (h, 3 * h + mlp), f"single_blocks.{i}.linear2": (h + mlp, h),
                    f"single_blocks.{i}.modulation.linear": (h, 3 * h)})
    return out


def lumina_original(cfg: dict[str, Any], layers: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    d = cfg["hidden_size"]
    head = d // cfg["num_attention_heads"]
    qkv = (cfg["num_attention_heads"] + 2 * cfg["num_kv_heads"]) * head
    ffn = diffusers_linears("lumina-image-2", r"^layers\.0\.feed_forward\.linear_1$")["layers.0.feed_forward.linear_1"][1]
    out = {}
    for i in layers:
        out.update({f"layers.{i}.attention.qkv": (d, qkv), f"layers.{i}.attention.out": (d, d),
                    f"layers.{i}.feed_forward.w1": (d, ffn), f"layers.{i}.feed_forward.w2": (ffn, d),
                    f"layers.{i}.feed_forward.w3": (d, ffn), f"layers.{i}.adaLN_modulation.1": (min(d, 1024), 4 * d)})
    return out


def cosmos_original(cfg: dict[str, Any], blocks: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    h, t, lora = _hidden(cfg), cfg["text_embed_dim"], cfg["adaln_lora_dim"]
    mlp = int(h * cfg["mlp_ratio"])
    out = {}
    for i in blocks:
        b = f"blocks.{i}"
        out.update({f"{b}.self_attn.{p}_proj": (h, h) for p in "qkv"})
        out.update({f"{b}.self_attn.output_proj": (h, h), f"{b}.cross_attn.q_proj": (h, h),
                    f"{b}.cross_attn.k_proj": (t, h), f"{b}.cross_attn.v_proj": (t, h),
                    f"{b}.cross_attn.output_proj": (h, h), f"{b}.mlp.layer1": (h, mlp), f"{b}.mlp.layer2": (mlp, h)})
        for part in ("self_attn", "cross_attn", "mlp"):
            out.update({f"{b}.adaln_modulation_{part}.1": (h, lora), f"{b}.adaln_modulation_{part}.2": (lora, 3 * h)})
    return out


def chatglm3(layers: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    c = CHATGLM3
    h = c["hidden_size"]
    qkv = h + 2 * c["multi_query_group_num"] * c["kv_channels"]
    out = {}
    for i in layers:
        out.update({f"encoder.layers.{i}.self_attention.query_key_value": (h, qkv),
                    f"encoder.layers.{i}.self_attention.dense": (h, h),
                    f"encoder.layers.{i}.mlp.dense_h_to_4h": (h, 2 * c["ffn_hidden_size"]),
                    f"encoder.layers.{i}.mlp.dense_4h_to_h": (c["ffn_hidden_size"], h)})
    return out


# ---------------------------------------------------------------------------------------- the fixtures

#: fixture -> (family lorahub must report, builder); builders return (key -> {shape, dtype}, metadata).
def _fixtures() -> dict[str, tuple[str, Any]]:
    C = {k: v[1] for k, v in CONFIGS.items()}  # noqa: N806
    dl = diffusers_linears
    return {
        "flux1_peft": ("flux", lambda: (_lora(_prefixed("transformer.", dl(
            "flux1-dev", r"^(transformer_blocks\.0|single_transformer_blocks\.(0|37))\.")), "peft"), None)),
        "flux1_kohya": ("flux", lambda: (_lora(_prefixed("lora_unet_", flux_original(
            C["flux1-dev"], (0, 18), (0, 37), mods=True), flat=True), "kohya"), None)),
        "sd35_large_peft": ("sd3", lambda: (_lora(_prefixed("transformer.", dl(
            "sd35-large", r"^transformer_blocks\.(0|37)\.attn\.")), "peft"), None)),
        "sd35_medium_kohya": ("sd3", lambda: (_lora(_prefixed("lora_unet_", sd3_original(
            C["sd35-medium"], (0, 23)), flat=True), "kohya"), None)),
        "qwen_image_peft": ("qwen", lambda: (_lora(_prefixed("transformer.", dl(
            "qwen-image", r"^transformer_blocks\.(0|59)\.(attn|img_mlp|txt_mlp|img_mod)")), "peft"), None)),
        "wan21_14b_peft": ("wan", lambda: (_lora(_prefixed("transformer.", dl(
            "wan21-t2v-14b", r"^blocks\.(0|39)\.")), "peft"), None)),
        "wan21_1.3b_comfyui": ("wan", lambda: (_lora(_prefixed("diffusion_model.", wan_original(
            C["wan21-t2v-1.3b"], (0, 29))), "peft"), None)),
        "hunyuanvideo_peft": ("hunyuanvideo", lambda: (_lora(_prefixed("transformer.", dl(
            "hunyuanvideo", r"^(transformer_blocks\.(0|19)|single_transformer_blocks\.(0|39))\.attn\.")), "peft"), None)),
        "hunyuanvideo_comfyui": ("hunyuanvideo", lambda: (_lora(_prefixed("diffusion_model.", hunyuan_original(
            C["hunyuanvideo"], (0,), (0,))), "peft"), None)),
        "chroma_peft": ("chroma", lambda: (_lora(_prefixed("transformer.", dl(
            "chroma1-hd", r"^(transformer_blocks\.0\.attn|distilled_guidance_layer\.(in_proj|out_proj|layers\.0))")),
            "peft"), None)),
        "chroma_kohya_declared": ("chroma", lambda: (_lora(_prefixed("lora_unet_", flux_original(
            C["chroma1-hd"], (0,), (0,), mods=False), flat=True), "kohya"),
            {"modelspec.architecture": "chroma/lora", "ss_base_model_version": "chroma"})),
        "hidream_i1_peft": ("hidream", lambda: (_lora(_prefixed("transformer.", dl(
            "hidream-i1-full", r"^(double_stream_blocks\.0|single_stream_blocks\.31)\.block\.(attn1|ff_i\.shared)")),
            "peft"), None)),
        "lumina2_peft": ("lumina", lambda: (_lora(_prefixed("transformer.", dl(
            "lumina-image-2", r"^layers\.(0|25)\.(attn|feed_forward)")), "peft"), None)),
        "lumina2_comfyui": ("lumina", lambda: (_lora(_prefixed("diffusion_model.", lumina_original(
            C["lumina-image-2"], (0, 25))), "peft"), None)),
        "pixart_sigma_peft": ("pixart", lambda: (_lora(_prefixed("transformer.", dl(
            "pixart-sigma", r"^transformer_blocks\.(0|27)\.(attn1|attn2|ff)")), "peft"), None)),
        "kolors_peft_chatglm": ("kolors", lambda: (
            _lora({**_prefixed("unet.", dl("kolors", r"^down_blocks\.2\.attentions\.0\.transformer_blocks\.0\.attn2\.to_[qkv]$")),
                   **_prefixed("text_encoder.", chatglm3((0,)))}, "peft"), None)),
        "kolors_peft_unet": ("kolors", lambda: (_lora(_prefixed("unet.", dl(
            "kolors", r"^(encoder_hid_proj|mid_block\.attentions\.0\.transformer_blocks\.0\.attn2\.to_[kv])$")), "peft"),
            None)),
        "auraflow_peft": ("auraflow", lambda: (_lora(_prefixed("transformer.", dl(
            "auraflow-v0.3", r"^(joint_transformer_blocks\.0|single_transformer_blocks\.31)\.")), "peft"), None)),
        "auraflow_single_peft": ("auraflow", lambda: (_lora(_prefixed("transformer.", dl(
            "auraflow-v0.3", r"^single_transformer_blocks\.(0|31)\.(attn|ff)")), "peft"), None)),
        "ltx_video_peft": ("ltxv", lambda: (_lora(_prefixed("transformer.", dl(
            "ltx-video", r"^transformer_blocks\.(0|27)\.(attn1|attn2)\.")), "peft"), None)),
        "cosmos2_peft": ("cosmos", lambda: (_lora(_prefixed("transformer.", dl(
            "cosmos-predict2-2b", r"^transformer_blocks\.0\.(attn1|attn2)\.")), "peft"), None)),
        "anima_kohya": ("cosmos", lambda: (_lora(_prefixed("lora_unet_", cosmos_original(
            C["cosmos-predict2-2b"], (0, 27)), flat=True), "kohya"), None)),
    }


FIXTURES = tuple(_fixtures())
FAMILY = {name: family for name, (family, _) in _fixtures().items()}


def build(name: str) -> dict[str, Any]:
    """The manifest of one fixture: ``{"family": ..., "__metadata__": {...}?, key: {shape, dtype}}``."""
    family, builder = _fixtures()[name]
    tensors, metadata = builder()
    out: dict[str, Any] = {"family": family}
    if metadata:
        out["__metadata__"] = metadata
    out.update(dict(sorted(tensors.items())))
    return out


def write_fixture(name: str, folder: Path) -> Path:
    """The committed fixture ``name`` as a zero-filled ``<folder>/<name>.safetensors`` (shapes, dtypes, metadata)."""
    from lorahub.adapters.writer import write_safetensors_zeros

    spec = json.loads((OUT / f"{name}.json").read_text())
    spec.pop("family")
    metadata = spec.pop("__metadata__", None)
    tensors = {k: (v["dtype"], v["shape"]) for k, v in spec.items()}
    return write_safetensors_zeros(folder / f"{name}.safetensors", tensors, metadata=metadata)


def main(argv: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in argv or FIXTURES:
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(build(name), indent=1) + "\n")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
