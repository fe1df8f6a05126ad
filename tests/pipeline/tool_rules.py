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

Families plug in through :data:`FAMILIES` (a function from the diffusers pipeline's module tree to the
rules); SD 1.x is the one lorahub's embedded base and tests have now.
"""

from __future__ import annotations

import re
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

    component: str  # "unet" or "text_encoder"
    path: str  # module path in the diffusers pipeline (transformers 5 spelling for the text encoder)
    shape: tuple[int, ...]
    conv: bool


@dataclass
class ToolRules:
    """One family's rules: LoRA module name -> the weight it patches, per tool."""

    comfy: dict[str, Target] = field(default_factory=dict)
    kohya: dict[str, Target] = field(default_factory=dict)


def _te_real(path: str) -> str:
    """transformers 5 flattens CLIPTextModel (no ``text_model.`` level); files use the real-world spelling."""
    return path if path.startswith("text_model.") else "text_model." + path


def comfy_unet_diffusers_keys(unet_config: dict[str, Any]) -> set[str]:
    """The diffusers module paths of a UNet that ``comfy/utils.py`` ``unet_to_diffusers`` lists (weights only).

    Block structure as comfy derives it from its ``unet_config``: ``num_res_blocks`` resnets per level,
    transformer blocks where ``transformer_depth`` says, ``transformer_depth_middle`` in the mid block,
    ``num_res_blocks + 1`` resnets per up level; per attention block UNET_MAP_ATTENTIONS (proj_in, proj_out,
    norm) and TRANSFORMER_BLOCKS (attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2, norms), per
    resnet UNET_MAP_RESNET (conv1, conv2, time_emb_proj, conv_shortcut, norms), samplers' conv and UNET_MAP_BASIC.
    """
    attn = ["proj_in", "proj_out", "norm"]
    tblock = ["norm1", "norm2", "norm3", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
              "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"]
    resnet = ["conv1", "time_emb_proj", "conv2", "conv_shortcut", "norm1", "norm2"]
    nres = list(unet_config["num_res_blocks"])
    depth = list(unet_config["transformer_depth"])
    depth_out = list(unet_config["transformer_depth_output"])
    out: set[str] = set()
    for x in range(len(unet_config["channel_mult"])):
        for i in range(nres[x]):
            out |= {f"down_blocks.{x}.resnets.{i}.{b}" for b in resnet}
            t = depth.pop(0)
            if t > 0:
                out |= {f"down_blocks.{x}.attentions.{i}.{b}" for b in attn}
                out |= {f"down_blocks.{x}.attentions.{i}.transformer_blocks.{j}.{b}" for j in range(t) for b in tblock}
        out.add(f"down_blocks.{x}.downsamplers.0.conv")
    out |= {f"mid_block.attentions.0.{b}" for b in attn}
    out |= {f"mid_block.attentions.0.transformer_blocks.{j}.{b}" for j in range(unet_config["transformer_depth_middle"])
            for b in tblock}
    out |= {f"mid_block.resnets.{i}.{b}" for i in (0, 1) for b in resnet}
    nres_up = list(reversed(nres))
    for x in range(len(unet_config["channel_mult"])):
        for i in range(nres_up[x] + 1):
            out |= {f"up_blocks.{x}.resnets.{i}.{b}" for b in resnet}
            t = depth_out.pop()
            if t > 0:
                out |= {f"up_blocks.{x}.attentions.{i}.{b}" for b in attn}
                out |= {f"up_blocks.{x}.attentions.{i}.transformer_blocks.{j}.{b}" for j in range(t) for b in tblock}
            if i == nres_up[x]:
                out.add(f"up_blocks.{x}.upsamplers.0.conv")
    out |= {"conv_in", "conv_out", "conv_norm_out", "time_embedding.linear_1", "time_embedding.linear_2"}
    return out


def sd1_rules(pipe: Any) -> ToolRules:
    """SD 1.x: the rules of both tools over the module tree of ``pipe`` (a diffusers SD 1.x pipeline)."""
    import torch

    unet, te = pipe.unet, pipe.text_encoder
    cfg = unet.config
    levels = len(cfg.block_out_channels)
    has_attn = [t.startswith("CrossAttn") for t in cfg.down_block_types]
    comfy_config = {  # what comfy's model detection reads from an SD 1.x checkpoint
        "num_res_blocks": [cfg.layers_per_block] * levels,
        "channel_mult": list(range(levels)),
        "transformer_depth": [1 if a else 0 for a in has_attn for _ in range(cfg.layers_per_block)],
        "transformer_depth_output": [1 if a else 0 for a in has_attn for _ in range(cfg.layers_per_block + 1)],
        "transformer_depth_middle": 1,
    }
    weights: dict[tuple[str, str], tuple[tuple[int, ...], bool]] = {}
    for comp, model in (("unet", unet), ("text_encoder", te)):
        for name, mod in model.named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                weights[(comp, name)] = (tuple(mod.weight.shape), isinstance(mod, torch.nn.Conv2d))
    rules = ToolRules()

    def target(comp: str, path: str) -> Target | None:
        w = weights.get((comp, path))
        return Target(comp, path, w[0], w[1]) if w else None

    # ComfyUI UNet: model_lora_keys_unet over unet_to_diffusers
    for k in comfy_unet_diffusers_keys(comfy_config):
        t = target("unet", k)
        if t is None:
            continue
        rules.comfy["lora_unet_" + k.replace(".", "_")] = t
        rules.comfy["lycoris_" + k.replace(".", "_")] = t
        for p in ("", "unet."):
            key = p + k.replace(".to_", ".processor.to_")
            if key.endswith(".to_out.0"):
                key = key[:-2]
            rules.comfy[key] = t
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
    for comp, model, prefix, classes in (("unet", unet, "lora_unet", KOHYA_UNET_CLASSES),
                                         ("text_encoder", te, "lora_te", KOHYA_TE_CLASSES)):
        for name, mod in model.named_modules():
            if type(mod).__name__ not in classes:
                continue
            for child, sub in mod.named_modules():
                if not child or not isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)):
                    continue
                path = f"{name}.{child}"
                real = _te_real(path) if comp == "text_encoder" else path
                rules.kohya[(prefix + "." + real).replace(".", "_")] = target(comp, path)
    return rules


#: family -> rules builder over a diffusers pipeline of that family.
FAMILIES = {"sd1": sd1_rules}


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


_DIFFUSERS_KEY = re.compile(r"^(unet|text_encoder)\.(.+?)\.(?:lora_[AB]\.weight|lora\.(?:up|down)\.weight|"
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
        if comp == "text_encoder":
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
