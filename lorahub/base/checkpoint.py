"""Single-file Stable Diffusion checkpoints: recognise them, and write one from a diffusers folder.

A "single-file" checkpoint is the original CompVis/LDM layout that A1111,
ComfyUI and Civitai use: one ``.safetensors`` with ``model.diffusion_model.*``
(UNet), ``first_stage_model.*`` (VAE) and ``cond_stage_model.*`` (SD 1.x/2.x
text encoder) or ``conditioner.embedders.*`` (SDXL).

:func:`checkpoint_family` reads only the header. :func:`export_single_file`
is the inverse of diffusers' ``convert_ldm_*_checkpoint`` /
``convert_open_clip_checkpoint`` functions for SD 1.x and SDXL pipelines of any
width and depth (the embedded tiny models included); it needs numpy and
safetensors, not torch. It exists so that the single-file loading path can be
exercised offline, and so that users can hand the embedded models to tools that
only read single files.

The SDXL layout (Stability's SGM code, as ``sd_xl_base_1.0.safetensors`` has it):
the UNet under ``model.diffusion_model.`` as SD 1.x (plus ``label_emb.0.{0,2}``,
the added-conditioning MLP diffusers calls ``add_embedding.linear_{1,2}``); the
first text encoder (CLIP ViT-L) in transformers' layout under
``conditioner.embedders.0.transformer.text_model.``; the second (OpenCLIP
ViT-bigG) in OpenCLIP's layout under ``conditioner.embedders.1.model.``:
``transformer.resblocks.N.{ln_1,attn.in_proj_weight/bias (q, k, v stacked),
attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}``, ``token_embedding.weight``,
``positional_embedding``, ``ln_final`` and ``text_projection`` (the transpose of
transformers' ``text_projection.weight``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..adapters.header import SafetensorsHeader, read_header
from ..errors import BaseModelError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
#: SDXL: the first text encoder (transformers' CLIP layout) and the second (OpenCLIP's layout).
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."


def checkpoint_family(header: SafetensorsHeader) -> str | None:
    """``"sd1"``, ``"sd2"``, ``"sdxl"`` from the key layout of a single-file checkpoint, else ``None``.

    ``None`` also means "not a full Stable Diffusion checkpoint" (a LoRA, a
    lone VAE, another architecture).
    """
    names = header.tensors.keys()
    has_unet = any(n.startswith(UNET_PREFIX) for n in names)
    if not has_unet:
        return None
    if any(n.startswith("conditioner.embedders.") for n in names):
        return "sdxl"
    if any(n.startswith("cond_stage_model.model.") for n in names):
        return "sd2"
    if any(n.startswith("cond_stage_model.transformer.") for n in names):
        return "sd1"
    # UNet only (no text encoder): tell SD1 from SD2 by the cross-attention width.
    for name, info in header.tensors.items():
        if name.endswith("attn2.to_k.weight") and len(info.shape) == 2:
            return {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(info.shape[1])
    return None


def context_dim(header: SafetensorsHeader) -> int | None:
    """The cross-attention width of the UNet in a single-file checkpoint (768 for SD 1.x)."""
    for name, info in header.tensors.items():
        if name.startswith(UNET_PREFIX) and name.endswith("attn2.to_k.weight") and len(info.shape) == 2:
            return info.shape[1]
    return None


_RESNET_UNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
    # SDXL's added conditioning (pooled text embedding + micro-conditioning time ids)
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
}


def _resnet_unet(rest: str) -> str:
    for old, new in _RESNET_UNET:
        if rest.startswith(old):
            return new + rest[len(old) :]
    raise BaseModelError(f"unexpected UNet resnet parameter '{rest}'")


def unet_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    """Map one diffusers UNet parameter name to its LDM name (without the prefix)."""
    lpb = int(config["layers_per_block"])
    up_types = list(config["up_block_types"])
    for old, new in _UNET_TOP.items():
        if key.startswith(old):
            return new + key[len(old) :]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", key)
    if m:
        b, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = 1 + b * (lpb + 1) + layer
        return f"input_blocks.{idx}.0.{_resnet_unet(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", key)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key)
    if m:
        kind, i, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * i}.{_resnet_unet(rest)}"
        return f"middle_block.{2 * i + 1}.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", key)
    if m:
        b, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = b * (lpb + 1) + layer
        return f"output_blocks.{idx}.0.{_resnet_unet(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", key)
    if m:
        b = int(m[1])
        slot = 2 if up_types[b].startswith("CrossAttn") else 1
        return f"output_blocks.{b * (lpb + 1) + lpb}.{slot}.conv.{m[2]}"
    raise BaseModelError(f"cannot map UNet parameter '{key}' to the single-file layout")


_VAE_ATTN = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def vae_key_to_ldm(key: str, config: dict[str, Any]) -> tuple[str, bool]:
    """Map one diffusers VAE parameter name to its LDM name; the flag says "reshape to a 1x1 conv"."""
    n_up = len(config["up_block_types"])
    for part in ("encoder", "decoder"):
        for old, new in (("conv_in.", "conv_in."), ("conv_out.", "conv_out."), ("conv_norm_out.", "norm_out.")):
            if key.startswith(f"{part}.{old}"):
                return f"{part}.{new}{key[len(part) + 1 + len(old):]}", False
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key, False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}", False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key)
    if m:
        b = n_up - 1 - int(m[1])
        return f"decoder.up.{b}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", key)
    if m:
        return f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)$", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}", False
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$", key)
    if m:
        rest = m[2]
        for old, new in _VAE_ATTN:
            if rest.startswith(old):
                return f"{m[1]}.mid.attn_1.{new}{rest[len(old):]}", rest.endswith("weight") and old != "group_norm."
    raise BaseModelError(f"cannot map VAE parameter '{key}' to the single-file layout")


_OPENCLIP_LAYER = (
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("self_attn.out_proj.", "attn.out_proj."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
)

_OPENCLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def openclip_arrays(weights: dict[str, Any]) -> dict[str, Any]:
    """A transformers ``CLIPTextModelWithProjection`` state dict in OpenCLIP's layout (SDXL's second encoder).

    q, k and v projections are stacked into ``attn.in_proj_weight``/``in_proj_bias``;
    ``text_projection`` is transposed (OpenCLIP multiplies ``x @ text_projection``).
    """
    import numpy as np

    out: dict[str, Any] = {}
    qkv: dict[tuple[int, str], dict[str, Any]] = {}
    for key, arr in weights.items():
        if key.endswith("position_ids"):
            continue
        if key in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[key]] = arr
            continue
        if key == "text_projection.weight":
            out["text_projection"] = np.ascontiguousarray(arr.T)
            continue
        m = re.match(r"(?:text_model\.)?encoder\.layers\.(\d+)\.(.+)$", key)
        if not m:
            raise BaseModelError(f"cannot map text-encoder parameter '{key}' to the OpenCLIP layout")
        layer, rest = int(m[1]), m[2]
        q = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if q:
            qkv.setdefault((layer, q[2]), {})[q[1]] = arr
            continue
        for old, new in _OPENCLIP_LAYER:
            if rest.startswith(old):
                out[f"transformer.resblocks.{layer}.{new}{rest[len(old):]}"] = arr
                break
        else:
            raise BaseModelError(f"cannot map text-encoder parameter '{key}' to the OpenCLIP layout")
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise BaseModelError(f"text-encoder layer {layer} lacks one of q_proj/k_proj/v_proj ({kind})")
        name = "in_proj_weight" if kind == "weight" else "in_proj_bias"
        out[f"transformer.resblocks.{layer}.attn.{name}"] = np.concatenate([parts["q"], parts["k"], parts["v"]])
    return out


#: The pipeline classes :func:`export_single_file` writes, with their modelspec architecture.
_EXPORTABLE = {
    "StableDiffusionPipeline": "stable-diffusion-v1",
    "StableDiffusionXLPipeline": "stable-diffusion-xl-v1-base",
}


def export_single_file(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the SD 1.x or SDXL diffusers pipeline in ``folder`` as one original-layout ``.safetensors``.

    Tensors keep their dtypes. The file loads with
    ``StableDiffusionPipeline.from_single_file(out, config=folder)`` (SD 1.x) or
    ``StableDiffusionXLPipeline.from_single_file(out, config=folder)`` (SDXL).
    """
    from safetensors.numpy import load_file

    from ..adapters.writer import write_numpy

    root = Path(folder)
    try:
        index = json.loads((root / "model_index.json").read_text(encoding="utf-8"))
        unet_cfg = json.loads((root / "unet" / "config.json").read_text(encoding="utf-8"))
        vae_cfg = json.loads((root / "vae" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"{root}: not a readable diffusers pipeline folder ({exc})") from None
    cls = index.get("_class_name")
    if cls not in _EXPORTABLE:
        raise BaseModelError(
            f"{root}: only StableDiffusionPipeline and StableDiffusionXLPipeline folders can be exported, not {cls}"
        )
    xl = cls == "StableDiffusionXLPipeline"
    if unet_cfg.get("use_linear_projection") and not xl:
        raise BaseModelError(f"{root}: linear-projection UNets (SD 2.x) are not supported by the exporter")

    def weights(sub: str) -> dict[str, Any]:
        cands = sorted((root / sub).glob("*.safetensors"))
        cands = [c for c in cands if c.name.count(".") == 1] or cands  # prefer the non-variant file
        if not cands:
            raise BaseModelError(f"{root / sub}: no .safetensors weights")
        return load_file(str(cands[0]))

    arrays: dict[str, Any] = {}
    for key, arr in weights("unet").items():
        arrays[UNET_PREFIX + unet_key_to_ldm(key, unet_cfg)] = arr
    for key, arr in weights("vae").items():
        name, to_conv = vae_key_to_ldm(key, vae_cfg)
        if to_conv and arr.ndim == 2:
            arr = arr.reshape(*arr.shape, 1, 1)
        arrays[VAE_PREFIX + name] = arr
    clip_prefix = SDXL_CLIP_PREFIX if xl else CLIP_PREFIX
    for key, arr in weights("text_encoder").items():
        key = key.removeprefix("text_model.")
        if key.endswith("position_ids"):
            continue
        arrays[clip_prefix + key] = arr
    if xl:
        for key, arr in openclip_arrays(weights("text_encoder_2")).items():
            arrays[SDXL_OPENCLIP_PREFIX + key] = arr
    md = {"format": "pt", "modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": _EXPORTABLE[cls]}
    md.update(metadata or {})
    return write_numpy(out, arrays, md)


def read_checkpoint_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """The header of a single-file checkpoint (pickle files are refused by name and content)."""
    return read_header(path)
