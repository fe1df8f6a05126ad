"""How other tools find a LoRA's weights: small re-implementations of their key-mapping rules.

Read from the tools' code (through the search tools; none of it is copied here):

- ComfyUI, ``comfy/lora.py`` ``model_lora_keys_unet`` / ``model_lora_keys_clip`` and ``comfy/utils.py``
  ``unet_to_diffusers`` (the key map), ``comfy/weight_adapter/lora.py`` ``LoRAAdapter.load`` (the tensor
  suffixes a mapped module is read with) and ``LoRAAdapter.calculate_weight`` (the update:
  ``up @ down * alpha / rank * strength``, alpha/rank = 1 without an ``.alpha`` tensor).
  ``comfy/lora_convert.py`` ``convert_lora`` rewrites only Flux/Wan/USO/TwinFlow files, none of SD 1.x.
- kohya-ss/sd-scripts, ``networks/lora.py`` ``create_network_from_weights`` and ``LoRANetwork.__init__``
  ``create_modules`` (module names: prefix + the module path inside the UNet / text encoder, dots as ``_``;
  modules: the Linear/Conv2d children of ``Transformer2DModel``, ``ResnetBlock2D``, ``Downsample2D``,
  ``Upsample2D`` and of ``CLIPAttention``/``CLIPMLP``) and ``LoRAModule.__init__`` (tensor shapes:
  Conv2d -> down ``[r, in, kh, kw]``, up ``[out, r, 1, 1]``; Linear -> ``[r, in]``, ``[out, r]``).

SDXL (:func:`sdxl_rules`), read from the same tools:

- ComfyUI maps both spellings of an SDXL UNet module: ``lora_unet_`` + the module's path in its own (SGM,
  original-UNet) model, for every weight of the model (``model_lora_keys_unet``, first loop), and
  ``lora_unet_`` + the diffusers path that ``comfy/utils.py`` ``unet_to_diffusers`` maps to it (second loop).
  ``unet_to_diffusers`` is re-implemented in :func:`comfy_unet_to_diffusers`. Text encoders
  (``model_lora_keys_clip`` with ``clip_l`` and ``clip_g`` present): ``lora_te_``/``lora_te1_`` and
  ``text_encoder.`` for CLIP-L, ``lora_te2_`` and ``text_encoder_2.`` for CLIP-G.
- kohya trains SDXL on its own UNet (``library/sdxl_original_unet.py`` ``SdxlUNet2DConditionModel``):
  module names are ``lora_unet_`` + SGM paths (``input_blocks_4_1_transformer_blocks_0_attn1_to_q``;
  resnets ``in_layers_2``/``emb_layers_1``/``out_layers_3``/``skip_connection``, ``Downsample2D.op``,
  ``Upsample2D.conv``). The diffusers -> SGM correspondence is kohya's own
  ``library/sdxl_model_util.py`` ``make_unet_conversion_map`` (which ``convert_diffusers_unet_state_dict_to_sdxl``
  applies by longest prefix, ``convert_unet_state_dict``), re-implemented in :func:`kohya_sdxl_conversion_map`.
  Text encoders ``lora_te1_``/``lora_te2_`` (``LoRANetwork.LORA_PREFIX_TEXT_ENCODER1/2``). The names are
  what ``networks/sdxl_merge_lora.py`` ``merge_to_sd_model`` and ``LoRANetwork.load_weights`` look up;
  only ``create_network_from_weights`` also converts diffusers names (``convert_diffusers_to_sai_if_needed``).
- AUTOMATIC1111 (``extensions-builtin/Lora/networks.py`` at commit 873edba, ``load_network``,
  ``convert_diffusers_name_to_compvis``, ``assign_network_names_to_compvis_modules``): layer names are the
  SGM model's (``diffusion_model_input_blocks_4_1_...``), the first embedder's CLIP-L
  (``0_transformer_text_model_...``) and the second's OpenCLIP-G (``1_model_transformer_resblocks_N_attn``,
  a ``MultiheadAttention`` whose q/k/v LoRAs are applied only when q, k, v and out_proj are all present,
  ``network_apply_weights``; ``..._mlp_c_fc``/``_mlp_c_proj``). A key is converted by the SD 1.x
  arithmetic first, then ``lora_unet`` -> ``diffusion_model`` and ``lora_te1_text_model`` ->
  ``0_transformer_text_model`` (:func:`a1111_load`).

Families plug in through :data:`FAMILIES` (a function from the diffusers pipeline's module tree to the
rules): SD 1.x and SDXL, the two families of lorahub's embedded bases.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: comfy/lora.py LORA_CLIP_MAP: the text-encoder modules ComfyUI maps kohya/diffusers names for.
LORA_CLIP_MAP = {
    "mlp.fc1": "mlp_fc1",
    "mlp.fc2": "mlp_fc2",
    "self_attn.k_proj": "self_attn_k_proj",
    "self_attn.q_proj": "self_attn_q_proj",
    "self_attn.v_proj": "self_attn_v_proj",
    "self_attn.out_proj": "self_attn_out_proj",
}

#: comfy/weight_adapter/lora.py LoRAAdapter.load: (up suffix, down suffix) pairs, tried in this order.
COMFY_LORA_SUFFIXES = (
    (".lora_up.weight", ".lora_down.weight"),
    ("_lora.up.weight", "_lora.down.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora.up.weight", ".lora.down.weight"),
    (".lora_B", ".lora_A"),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"),
    (".lora_B.default.weight", ".lora_A.default.weight"),
)

#: kohya networks/lora.py: the module classes whose Linear/Conv2d children get a LoRA module.
KOHYA_UNET_CLASSES = ("Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D")
KOHYA_TE_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


@dataclass
class Target:
    """A weight of the model a tool patches: the component and its diffusers module path, and its shape."""

    component: str  # "unet", "text_encoder" or "text_encoder_2"
    path: str  # module path in the diffusers pipeline (transformers 5 spelling for the text encoder)
    shape: tuple[int, ...]
    conv: bool


@dataclass
class ToolRules:
    """One family's rules: LoRA module name -> the weight it patches, per tool."""

    comfy: dict[str, Target] = field(default_factory=dict)
    kohya: dict[str, Target] = field(default_factory=dict)
    #: AUTOMATIC1111's layer names -> weights (SDXL only here; empty: not modelled for the family)
    a1111: dict[str, Target] = field(default_factory=dict)


def _te_real(path: str) -> str:
    """transformers 5 flattens CLIPTextModel (no ``text_model.`` level); files use the real-world spelling."""
    return path if path.startswith("text_model.") else "text_model." + path


#: comfy/utils.py: UNET_MAP_ATTENTIONS, TRANSFORMER_BLOCKS, UNET_MAP_RESNET (SGM -> diffusers) and UNET_MAP_BASIC
#: (weights only, as module paths).
COMFY_ATTENTIONS = ("proj_in", "proj_out", "norm")
COMFY_TRANSFORMER_BLOCKS = ("norm1", "norm2", "norm3", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                            "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
COMFY_RESNET = {"in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.3": "conv2",
                "skip_connection": "conv_shortcut", "in_layers.0": "norm1", "out_layers.0": "norm2"}
COMFY_BASIC = (("label_emb.0.0", "class_embedding.linear_1"), ("label_emb.0.2", "class_embedding.linear_2"),
               ("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"),
               ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out"),
               ("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"))


def comfy_unet_to_diffusers(unet_config: dict[str, Any]) -> dict[str, str]:
    """``comfy/utils.py`` ``unet_to_diffusers``: diffusers module path -> SGM module path (weights only).

    Block structure as comfy derives it from its ``unet_config``: ``num_res_blocks`` resnets per level,
    transformer blocks where ``transformer_depth`` says, ``transformer_depth_middle`` in the mid block,
    ``num_res_blocks + 1`` resnets per up level (``transformer_depth_output`` popped from the end), the
    upsampler in the last block of an up level after its resnet and attention (``output_blocks.n.c.conv``).
    """
    nres = list(unet_config["num_res_blocks"])
    depth = list(unet_config["transformer_depth"])
    depth_out = list(unet_config["transformer_depth_output"])
    levels = len(unet_config["channel_mult"])
    out: dict[str, str] = {}
    for x in range(levels):
        n = 1 + (nres[x] + 1) * x
        for i in range(nres[x]):
            for sgm, diff in COMFY_RESNET.items():
                out[f"down_blocks.{x}.resnets.{i}.{diff}"] = f"input_blocks.{n}.0.{sgm}"
            t = depth.pop(0)
            if t > 0:
                for b in COMFY_ATTENTIONS:
                    out[f"down_blocks.{x}.attentions.{i}.{b}"] = f"input_blocks.{n}.1.{b}"
                for j in range(t):
                    for b in COMFY_TRANSFORMER_BLOCKS:
                        out[f"down_blocks.{x}.attentions.{i}.transformer_blocks.{j}.{b}"] = \
                            f"input_blocks.{n}.1.transformer_blocks.{j}.{b}"
            n += 1
        out[f"down_blocks.{x}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
    for b in COMFY_ATTENTIONS:
        out[f"mid_block.attentions.0.{b}"] = f"middle_block.1.{b}"
    for j in range(unet_config["transformer_depth_middle"]):
        for b in COMFY_TRANSFORMER_BLOCKS:
            out[f"mid_block.attentions.0.transformer_blocks.{j}.{b}"] = f"middle_block.1.transformer_blocks.{j}.{b}"
    for i, n in enumerate((0, 2)):
        for sgm, diff in COMFY_RESNET.items():
            out[f"mid_block.resnets.{i}.{diff}"] = f"middle_block.{n}.{sgm}"
    nres_up = list(reversed(nres))
    for x in range(levels):
        n = (nres_up[x] + 1) * x
        layers = nres_up[x] + 1
        for i in range(layers):
            c = 0
            for sgm, diff in COMFY_RESNET.items():
                out[f"up_blocks.{x}.resnets.{i}.{diff}"] = f"output_blocks.{n}.0.{sgm}"
            c += 1
            t = depth_out.pop()
            if t > 0:
                c += 1
                for b in COMFY_ATTENTIONS:
                    out[f"up_blocks.{x}.attentions.{i}.{b}"] = f"output_blocks.{n}.1.{b}"
                for j in range(t):
                    for b in COMFY_TRANSFORMER_BLOCKS:
                        out[f"up_blocks.{x}.attentions.{i}.transformer_blocks.{j}.{b}"] = \
                            f"output_blocks.{n}.1.transformer_blocks.{j}.{b}"
            if i == layers - 1:
                out[f"up_blocks.{x}.upsamplers.0.conv"] = f"output_blocks.{n}.{c}.conv"
            n += 1
    for sgm, diff in COMFY_BASIC:
        out[diff] = sgm
    return out


def comfy_unet_diffusers_keys(unet_config: dict[str, Any]) -> set[str]:
    """The diffusers module paths of a UNet that ``comfy/utils.py`` ``unet_to_diffusers`` lists (weights only)."""
    return set(comfy_unet_to_diffusers(unet_config))


def comfy_config(unet: Any) -> dict[str, Any]:
    """What comfy's model detection reads from a checkpoint of this diffusers UNet's architecture:
    ``num_res_blocks``, ``channel_mult`` and the transformer depth per input / output block and in the middle."""
    cfg = unet.config
    levels = len(cfg.block_out_channels)
    lpb = cfg.layers_per_block
    tl = cfg.transformer_layers_per_block
    tl = [int(tl)] * levels if isinstance(tl, int) else [int(t) for t in tl]
    depth = [tl[x] if t.startswith("CrossAttn") else 0 for x, t in enumerate(cfg.down_block_types)]
    return {
        "num_res_blocks": [lpb] * levels,
        "channel_mult": list(range(levels)),
        "transformer_depth": [d for d in depth for _ in range(lpb)],
        "transformer_depth_output": [d for d in depth for _ in range(lpb + 1)],
        "transformer_depth_middle": tl[-1],
    }


def kohya_sdxl_conversion_map() -> dict[str, str]:
    """kohya ``library/sdxl_model_util.py`` ``make_unet_conversion_map``, as ``{diffusers prefix: SGM prefix}``
    (``convert_diffusers_unet_state_dict_to_sdxl``). Fixed to SDXL's layout: 3 levels, 2 resnets down, 3 up."""
    layer: list[tuple[str, str]] = []
    for i in range(3):
        for j in range(2):
            layer.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            layer.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(3):
            layer.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            layer.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        layer.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        layer.append((f"output_blocks.{3 * i + 2}.2.", f"up_blocks.{i}.upsamplers.0."))
    layer.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        layer.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    resnet = [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("out_layers.0.", "norm2."),
              ("out_layers.3.", "conv2."), ("emb_layers.1.", "time_emb_proj."), ("skip_connection.", "conv_shortcut.")]
    pairs: list[tuple[str, str]] = []
    for sd, hf in layer:
        if "resnets" in hf:
            pairs += [(sd + sd_r, hf + hf_r) for sd_r, hf_r in resnet]
        else:
            pairs.append((sd, hf))
    for j in range(2):
        pairs.append((f"time_embed.{j * 2}.", f"time_embedding.linear_{j + 1}."))
        pairs.append((f"label_emb.0.{j * 2}.", f"add_embedding.linear_{j + 1}."))
    pairs += [("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out.")]
    return {hf: sd for sd, hf in pairs}


def kohya_sgm_path(path: str, conversion: dict[str, str]) -> str | None:
    """kohya ``convert_unet_state_dict``: the longest prefix of ``path`` (dot-separated) in the map, replaced."""
    key = path + ".weight"
    fragments = key.split(".")[:-1]
    while fragments:
        prefix = ".".join(fragments) + "."
        if prefix in conversion:
            return (conversion[prefix] + key[len(prefix):])[: -len(".weight")]
        fragments.pop()
    return None


def _comfy_diffusers_names(rules: ToolRules, path: str, t: Target) -> None:
    """ComfyUI's keys for a UNet module under its diffusers ``path``: lora_unet_/lycoris_ + the path, and the
    path with attention processor spelling (bare and under ``unet.``)."""
    rules.comfy["lora_unet_" + path.replace(".", "_")] = t
    rules.comfy["lycoris_" + path.replace(".", "_")] = t
    for p in ("", "unet."):
        key = p + path.replace(".to_", ".processor.to_")
        if key.endswith(".to_out.0"):
            key = key[:-2]
        rules.comfy[key] = t


def _kohya_modules(rules: ToolRules, target: Any, models: tuple[tuple[str, Any, str], ...],
                   kohya_path: Callable[[str, str], str | None]) -> None:
    """kohya's create_modules: every Linear/Conv2d inside a module of its target classes, for each
    (component, model, prefix) of ``models``, named ``prefix`` + ``kohya_path(component, path)`` (None: not
    reachable by that name, left out)."""
    import torch

    for comp, model, prefix in models:
        classes = KOHYA_UNET_CLASSES if comp == "unet" else KOHYA_TE_CLASSES
        for name, mod in model.named_modules():
            if type(mod).__name__ not in classes:
                continue
            for child, sub in mod.named_modules():
                if not child or not isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)):
                    continue
                path = f"{name}.{child}"
                named = kohya_path(comp, path)
                if named is not None:
                    rules.kohya[(prefix + "." + named).replace(".", "_")] = target(comp, path)


def sd1_rules(pipe: Any) -> ToolRules:
    """SD 1.x: the rules of both tools over the module tree of ``pipe`` (a diffusers SD 1.x pipeline)."""

    unet, te = pipe.unet, pipe.text_encoder
    target = _targets(pipe)
    rules = ToolRules()

    # ComfyUI UNet: model_lora_keys_unet over unet_to_diffusers
    for k in comfy_unet_diffusers_keys(comfy_config(unet)):
        t = target("unet", k)
        if t is None:
            continue
        _comfy_diffusers_names(rules, k, t)
    # ComfyUI CLIP (SD 1.x: clip_l): model_lora_keys_clip
    layers = te.config.num_hidden_layers
    for b in range(layers):
        for c, flat in LORA_CLIP_MAP.items():
            t = target("text_encoder", f"encoder.layers.{b}.{c}")
            if t is None:
                continue
            rules.comfy[f"lora_te_text_model_encoder_layers_{b}_{flat}"] = t
            rules.comfy[f"lora_te1_text_model_encoder_layers_{b}_{flat}"] = t
            rules.comfy[f"text_encoder.text_model.encoder.layers.{b}.{c}"] = t
            rules.comfy[f"text_encoders.clip_l.transformer.text_model.encoder.layers.{b}.{c}"] = t
    # kohya: create_modules over the module classes
    _kohya_modules(rules, target, (("unet", unet, "lora_unet"), ("text_encoder", te, "lora_te")),
                   lambda comp, path: _te_real(path) if comp == "text_encoder" else path)
    return rules


def _targets(pipe: Any) -> Any:
    """``target(component, path)``: the Linear/Conv2d weight at ``path`` in the pipeline's component, or None."""
    import torch

    weights: dict[tuple[str, str], tuple[tuple[int, ...], bool]] = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, comp, None)
        if model is None:
            continue
        for name, mod in model.named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                weights[(comp, name)] = (tuple(mod.weight.shape), isinstance(mod, torch.nn.Conv2d))

    def target(comp: str, path: str) -> Target | None:
        w = weights.get((comp, path))
        return Target(comp, path, w[0], w[1]) if w else None

    return target


def _te_layer(te: Any, b: int, c: str) -> str:
    """The module path of CLIP layer ``b``'s ``c`` in a transformers model (with or without ``text_model.``)."""
    return f"{'text_model.' if hasattr(te, 'text_model') else ''}encoder.layers.{b}.{c}"


def sdxl_rules(pipe: Any) -> ToolRules:
    """SDXL: ComfyUI's, kohya's and AUTOMATIC1111's rules over the module tree of ``pipe``
    (a diffusers ``StableDiffusionXLPipeline``; see the module docstring)."""

    unet, te1, te2 = pipe.unet, pipe.text_encoder, pipe.text_encoder_2
    target = _targets(pipe)
    rules = ToolRules()
    to_sgm = comfy_unet_to_diffusers(comfy_config(unet))
    # ComfyUI UNet. First loop: every weight of comfy's (SGM) model, lora_unet_ + its path
    for diff, sgm in to_sgm.items():
        t = target("unet", diff)
        if t is None:
            continue
        rules.comfy["lora_unet_" + sgm.replace(".", "_")] = t
        rules.comfy[f"diffusion_model.{sgm}"] = t  # generic format
        _comfy_diffusers_names(rules, diff, t)  # second loop: unet_to_diffusers' diffusers names
        # AUTOMATIC1111: the SGM model's layer names
        rules.a1111["diffusion_model_" + sgm.replace(".", "_")] = t
    # ComfyUI CLIP (clip_l and clip_g present): model_lora_keys_clip
    for comp, te, name in (("text_encoder", te1, "clip_l"), ("text_encoder_2", te2, "clip_g")):
        for b in range(te.config.num_hidden_layers):
            for c, flat in LORA_CLIP_MAP.items():
                t = target(comp, _te_layer(te, b, c))
                if t is None:
                    continue
                rules.comfy[f"text_encoders.{name}.transformer.text_model.encoder.layers.{b}.{c}"] = t
                if comp == "text_encoder":
                    rules.comfy[f"lora_te_text_model_encoder_layers_{b}_{flat}"] = t
                    rules.comfy[f"lora_te1_text_model_encoder_layers_{b}_{flat}"] = t
                    rules.comfy[f"text_encoder.text_model.encoder.layers.{b}.{c}"] = t
                    rules.a1111[f"0_transformer_text_model_encoder_layers_{b}_{flat}"] = t
                else:
                    rules.comfy[f"lora_te2_text_model_encoder_layers_{b}_{flat}"] = t
                    rules.comfy[f"text_encoder_2.text_model.encoder.layers.{b}.{c}"] = t
                    # OpenCLIP's resblock: attn (MultiheadAttention: q/k/v in in_proj), attn.out_proj, mlp.c_fc/c_proj
                    open_clip = {"self_attn.q_proj": "attn_q_proj", "self_attn.k_proj": "attn_k_proj",
                                 "self_attn.v_proj": "attn_v_proj", "self_attn.out_proj": "attn_out_proj",
                                 "mlp.fc1": "mlp_c_fc", "mlp.fc2": "mlp_c_proj"}[c]
                    rules.a1111[f"1_model_transformer_resblocks_{b}_{open_clip}"] = t
    # kohya: create_modules over its SDXL UNet's classes; names through make_unet_conversion_map
    conversion = kohya_sdxl_conversion_map()
    _kohya_modules(rules, target, (("unet", unet, "lora_unet"), ("text_encoder", te1, "lora_te1"),
                                   ("text_encoder_2", te2, "lora_te2")),
                   lambda comp, path: kohya_sgm_path(path, conversion) if comp == "unet" else _te_real(path))
    return rules


#: family -> rules builder over a diffusers pipeline of that family.
FAMILIES = {"sd1": sd1_rules, "sdxl": sdxl_rules}


@dataclass
class Loaded:
    """What a tool makes of a file: the module updates it applies and the keys it left."""

    deltas: dict[tuple[str, str], Any]  # (component, module path) -> delta weight at strength 1
    unloaded: list[str]
    shape_errors: list[str]


def comfy_load(tensors: dict[str, Any], rules: ToolRules) -> Loaded:
    """ComfyUI's load_lora + calculate_weight on ``tensors`` (a state dict), as re-implemented here."""
    import torch

    loaded: set[str] = set()
    deltas: dict[tuple[str, str], Any] = {}
    errors: list[str] = []
    for x, t in rules.comfy.items():
        for up_s, down_s in COMFY_LORA_SUFFIXES:
            if x + up_s in tensors:
                up, down = tensors[x + up_s].float(), tensors[x + down_s].float()
                alpha_t = tensors.get(x + ".alpha")
                loaded |= {x + up_s, x + down_s}
                if alpha_t is not None:
                    loaded.add(x + ".alpha")
                scale = float(alpha_t) / down.shape[0] if alpha_t is not None else 1.0
                diff = torch.mm(up.flatten(start_dim=1), down.flatten(start_dim=1))
                if diff.numel() != torch.Size(t.shape).numel():
                    errors.append(f"{x}: {tuple(diff.shape)} does not reshape to {t.shape}")
                    break
                deltas[(t.component, t.path)] = diff.reshape(t.shape) * scale
                break
    return Loaded(deltas, sorted(k for k in tensors if k not in loaded), errors)


def kohya_check(tensors: dict[str, Any], rules: ToolRules) -> Loaded:
    """kohya's create_network_from_weights + load_state_dict: names, tensor suffixes and shapes."""

    loaded: set[str] = set()
    deltas: dict[tuple[str, str], Any] = {}
    errors: list[str] = []
    modules = {k.split(".", 1)[0] for k in tensors}
    for name in sorted(modules):
        t = rules.kohya.get(name)
        if t is None:
            continue
        down, up = tensors.get(f"{name}.lora_down.weight"), tensors.get(f"{name}.lora_up.weight")
        if down is None or up is None:
            continue
        r = down.shape[0]
        want_down = (r, t.shape[1], *t.shape[2:]) if t.conv else (r, t.shape[1])
        want_up = (t.shape[0], r, 1, 1) if t.conv else (t.shape[0], r)
        if tuple(down.shape) != want_down or tuple(up.shape) != want_up:
            errors.append(f"{name}: down {tuple(down.shape)} / up {tuple(up.shape)}, kohya builds {want_down} / {want_up}")
            continue
        alpha_t = tensors.get(f"{name}.alpha")
        alpha = float(alpha_t) if alpha_t is not None and float(alpha_t) != 0 else r
        loaded |= {f"{name}.lora_down.weight", f"{name}.lora_up.weight"} | ({f"{name}.alpha"} if alpha_t is not None else set())
        deltas[(t.component, t.path)] = (up.float().flatten(1) @ down.float().flatten(1)).reshape(t.shape) * (alpha / r)
    return Loaded(deltas, sorted(k for k in tensors if k not in loaded), errors)


_DIFFUSERS_KEY = re.compile(r"^(unet|text_encoder|text_encoder_2)\.(.+?)\.(?:lora_[AB]\.weight|lora\.(?:up|down)\.weight|"
                            r"lora_linear_layer\.(?:up|down)\.weight)$")


def plain_load(tensors: dict[str, Any], targets: dict[tuple[str, str], tuple[int, ...]]) -> Loaded:
    """A loader that reads only tensors (no metadata), on diffusers-layout keys: ``up @ down``, alpha = rank."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    unloaded = []
    for k, v in tensors.items():
        m = _DIFFUSERS_KEY.match(k)
        if not m:
            unloaded.append(k)
            continue
        comp, path = m.group(1), m.group(2)
        if comp != "unet" and (comp, path) not in targets:  # transformers 5: CLIPTextModel has no text_model
            path = path.removeprefix("text_model.")
        side = "up" if (".lora_B." in k or ".up." in k) else "down"
        groups.setdefault((comp, path), {})[side] = v.float()
    deltas = {}
    errors = []
    for key, g in groups.items():
        shape = targets.get(key)
        if shape is None or "up" not in g or "down" not in g:
            errors.append(f"{key}: no such module or an unpaired factor")
            continue
        deltas[key] = (g["up"].flatten(1) @ g["down"].flatten(1)).reshape(shape)
    return Loaded(deltas, sorted(unloaded), errors)


#: AUTOMATIC1111 networks.py: re_x_proj (q/k/v LoRAs of a MultiheadAttention) and suffix_conversion["resnets"].
_A1111_X_PROJ = re.compile(r"(.*)_([qkv]_proj)$")
_A1111_RESNETS = {"conv1": "in_layers_2", "conv2": "out_layers_3", "time_emb_proj": "emb_layers_1",
                  "conv_shortcut": "skip_connection"}


def a1111_convert(key: str) -> str:
    """``convert_diffusers_name_to_compvis(key, is_sd2=False)``: the SD 1.x numbering of diffusers names."""
    def sub(m: re.Match, kind: int, index: int) -> str:
        return _A1111_RESNETS.get(m.group(index), m.group(index)) if m.group(kind) == "resnets" else m.group(index)

    if m := re.match(r"lora_unet_conv_in(.*)", key):
        return f"diffusion_model_input_blocks_0_0{m.group(1)}"
    if m := re.match(r"lora_unet_conv_out(.*)", key):
        return f"diffusion_model_out_2{m.group(1)}"
    if m := re.match(r"lora_unet_time_embedding_linear_(\d+)(.*)", key):
        return f"diffusion_model_time_embed_{int(m.group(1)) * 2 - 2}{m.group(2)}"
    if m := re.match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
        n = 1 + int(m.group(1)) * 3 + int(m.group(3))
        return f"diffusion_model_input_blocks_{n}_{1 if m.group(2) == 'attentions' else 0}_{sub(m, 2, 4)}"
    if m := re.match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key):
        n = 1 if m.group(1) == "attentions" else int(m.group(2)) * 2
        return f"diffusion_model_middle_block_{n}_{sub(m, 1, 3)}"
    if m := re.match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
        n = int(m.group(1)) * 3 + int(m.group(3))
        return f"diffusion_model_output_blocks_{n}_{1 if m.group(2) == 'attentions' else 0}_{sub(m, 2, 4)}"
    if m := re.match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", key):
        return f"diffusion_model_input_blocks_{3 + int(m.group(1)) * 3}_0_op"
    if m := re.match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", key):
        x = int(m.group(1))
        return f"diffusion_model_output_blocks_{2 + x * 3}_{2 if x > 0 else 1}_conv"
    if m := re.match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", key):
        return f"transformer_text_model_encoder_layers_{m.group(1)}_{m.group(2)}"
    if m := re.match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", key):
        rest = m.group(2).replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj").replace("self_attn", "attn")
        return f"1_model_transformer_resblocks_{m.group(1)}_{rest}"
    return key


def a1111_load(tensors: dict[str, Any], rules: ToolRules) -> Loaded:
    """AUTOMATIC1111's ``load_network`` (key matching with its fallbacks) and ``network_apply_weights`` on SDXL:
    ``up @ down * alpha / rank`` per matched layer; an OpenCLIP attention's q/k/v only with q, k, v and out_proj."""
    layers = set(rules.a1111)
    # the MultiheadAttention layers of OpenCLIP: "..._attn" exists as a layer too
    layers |= {k[: -len("_q_proj")] for k in rules.a1111 if k.endswith("_attn_q_proj")}
    matched: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for key_network, weight in tensors.items():
        name, _, part = key_network.partition(".")
        key = a1111_convert(name)
        found = key in layers
        if not found and (m := _A1111_X_PROJ.match(key)):
            found = m.group(1) in layers
        if not found and "lora_unet" in name:
            key = name.replace("lora_unet", "diffusion_model")
            found = key in layers
        elif not found and "lora_te1_text_model" in name:
            key = name.replace("lora_te1_text_model", "0_transformer_text_model")
            found = key in layers
        if not found:
            failed.append(key_network)
            continue
        matched.setdefault(key, {})[part] = weight
    deltas: dict[tuple[str, str], Any] = {}
    errors: list[str] = []
    for key, w in matched.items():
        if "lora_up.weight" not in w or "lora_down.weight" not in w:
            errors.append(f"{key}: not a LoRA module ({sorted(w)})")
            continue
        m = _A1111_X_PROJ.match(key)
        if m and m.group(1) + "_q_proj" in rules.a1111:  # OpenCLIP attention: q, k, v and out_proj together
            if not all(f"{m.group(1)}_{p}" in matched for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
                errors.append(f"{key}: applied only with q, k, v and out_proj of its attention")
                continue
        t = rules.a1111[key]
        up, down = w["lora_up.weight"].float(), w["lora_down.weight"].float()
        alpha = w.get("alpha")
        scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
        deltas[(t.component, t.path)] = (up.flatten(1) @ down.flatten(1)).reshape(t.shape) * scale
    return Loaded(deltas, sorted(failed), errors)
