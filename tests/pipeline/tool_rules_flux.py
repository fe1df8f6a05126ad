"""How ComfyUI and kohya find the weights of a Flux.1 / SD3 LoRA: small re-implementations of their rules.

Read from the tools' code (through the search tools; none of it is copied here):

- ComfyUI (Comfy-Org/ComfyUI, ``comfy/lora.py``):
  ``model_lora_keys_unet``: for every weight ``diffusion_model.<path>.weight`` of the model (the original
  BFL/SAI module paths), ``lora_unet_<path with _>`` and ``diffusion_model.<path>``; for Flux models also
  ``transformer.<diffusers path>``, ``lora_transformer_<diffusers path with _>`` and ``lycoris_...`` through
  ``comfy/utils.py`` ``flux_to_diffusers`` (q/k/v as row slices of ``img_attn.qkv``/``txt_attn.qkv``/``linear1``,
  ``proj_mlp`` as the rows after 3 x hidden, ``norm_out.linear`` as ``final_layer.adaLN_modulation.1`` through
  ``swap_scale_shift``); for SD3 ``transformer.<diffusers path>`` through ``mmdit_to_diffusers`` (slices of
  ``depth x 64`` rows: SD3's hidden width is 64 x its depth, which a test-size model's is not, so the SD3
  rules here take the hidden width as the offset).
  ``model_lora_keys_clip``: ``lora_te1_text_model_encoder_layers_N_<LORA_CLIP_MAP>`` and
  ``text_encoder.text_model.encoder.layers.N.<module>`` for CLIP-L, ``lora_te2_``/``text_encoder_2.`` for
  CLIP-G (when CLIP-L is there too), and for T5-XXL ``lora_te{n}_<path with _>`` with n = 2 and 3 when only
  CLIP-L is there (Flux: OneTrainer's te2 and kohya's te3), n = 3 with CLIP-L and CLIP-G (SD3).
  ``load_lora``: per mapped module the first of ``.lora_up.weight``/``.lora_B.weight``... pairs (tool_rules.py
  ``COMFY_LORA_SUFFIXES``) and ``.alpha``; a tensor no module consumed is logged "lora key not loaded".
  The update (``comfy/weight_adapter/lora.py`` ``calculate_weight``): ``up @ down * alpha / rank`` (1 without
  alpha), through the mapping's function, added to the (sliced) weight.
- kohya-ss/sd-scripts ``networks/lora_flux.py`` / ``lora_sd3.py`` ``create_network_from_weights`` and
  ``LoRANetwork.create_modules``: modules are the ``Linear`` children of ``DoubleStreamBlock``/
  ``SingleStreamBlock`` (Flux; ``in_dims`` modules such as ``img_in`` are not created from weights) or of
  ``SingleDiTBlock`` plus the embedders and final layer (SD3, ``emb_dims``), named
  ``lora_unet_<path with _>``; text encoders ``lora_te1_`` (CLIP-L), ``lora_te2_`` (SD3's CLIP-G),
  ``lora_te3_`` (T5-XXL); ``lora_down [r, in]``, ``lora_up [out, r]``, ``alpha``.
"""

from __future__ import annotations

from typing import Any

import torch
from tool_rules import COMFY_LORA_SUFFIXES, LORA_CLIP_MAP

CLIP_LAYERS = 2
T5_MODULES = {"layer.0.SelfAttention.q": (1, 1), "layer.0.SelfAttention.k": (1, 1), "layer.0.SelfAttention.v": (1, 1),
              "layer.0.SelfAttention.o": (1, 1), "layer.1.DenseReluDense.wi_0": (1, 2),
              "layer.1.DenseReluDense.wi_1": (1, 2), "layer.1.DenseReluDense.wo": (2, 1)}


def _flat(path: str) -> str:
    return path.replace(".", "_")


def flux_weights(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Linear weights of the original (BFL) Flux model of a diffusers config: path -> (in, out).

    black-forest-labs/flux ``src/flux/model.py`` ``Flux`` and ``modules/layers.py``; mlp_ratio 4."""
    h = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    mlp = 4 * h
    out: dict[str, tuple[int, int]] = {
        "img_in": (cfg["in_channels"], h), "txt_in": (cfg["joint_attention_dim"], h),
        "time_in.in_layer": (256, h), "time_in.out_layer": (h, h),
        "vector_in.in_layer": (cfg["pooled_projection_dim"], h), "vector_in.out_layer": (h, h),
        "final_layer.linear": (h, cfg["patch_size"] ** 2 * cfg["in_channels"]), "final_layer.adaLN_modulation.1": (h, 2 * h),
    }
    if cfg.get("guidance_embeds"):
        out.update({"guidance_in.in_layer": (256, h), "guidance_in.out_layer": (h, h)})
    for i in range(cfg["num_layers"]):
        for s in ("img", "txt"):
            out.update({f"double_blocks.{i}.{s}_mod.lin": (h, 6 * h), f"double_blocks.{i}.{s}_attn.qkv": (h, 3 * h),
                        f"double_blocks.{i}.{s}_attn.proj": (h, h), f"double_blocks.{i}.{s}_mlp.0": (h, mlp),
                        f"double_blocks.{i}.{s}_mlp.2": (mlp, h)})
    for i in range(cfg["num_single_layers"]):
        out.update({f"single_blocks.{i}.linear1": (h, 3 * h + mlp), f"single_blocks.{i}.linear2": (h + mlp, h),
                    f"single_blocks.{i}.modulation.lin": (h, 3 * h)})
    return out


def sd3_weights(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Linear weights of the original (SAI MMDiT) SD3 model of a diffusers config: path -> (in, out)
    (Stability-AI/sd3.5 ``mmditx.py``; the convolution ``x_embedder.proj`` is left out)."""
    h = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    n = cfg["num_layers"]
    dual = set(cfg.get("dual_attention_layers", ()))
    out: dict[str, tuple[int, int]] = {
        "context_embedder": (cfg["joint_attention_dim"], cfg["caption_projection_dim"]),
        "t_embedder.mlp.0": (256, h), "t_embedder.mlp.2": (h, h),
        "y_embedder.mlp.0": (cfg["pooled_projection_dim"], h), "y_embedder.mlp.2": (h, h),
        "final_layer.linear": (h, cfg["patch_size"] ** 2 * cfg["out_channels"]), "final_layer.adaLN_modulation.1": (h, 2 * h),
    }
    for i in range(n):
        b = f"joint_blocks.{i}"
        out.update({f"{b}.x_block.attn.qkv": (h, 3 * h), f"{b}.x_block.attn.proj": (h, h),
                    f"{b}.x_block.mlp.fc1": (h, 4 * h), f"{b}.x_block.mlp.fc2": (4 * h, h),
                    f"{b}.x_block.adaLN_modulation.1": (h, (9 if i in dual else 6) * h),
                    f"{b}.context_block.attn.qkv": (h, 3 * h)})
        if i in dual:
            out.update({f"{b}.x_block.attn2.qkv": (h, 3 * h), f"{b}.x_block.attn2.proj": (h, h)})
        if i < n - 1:
            out.update({f"{b}.context_block.attn.proj": (h, h), f"{b}.context_block.mlp.fc1": (h, 4 * h),
                        f"{b}.context_block.mlp.fc2": (4 * h, h), f"{b}.context_block.adaLN_modulation.1": (h, 6 * h)})
        else:
            out[f"{b}.context_block.adaLN_modulation.1"] = (h, 2 * h)
    return out


def _swap(t: torch.Tensor) -> torch.Tensor:
    shift, scale = t.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def comfy_key_map(family: str, cfg: dict[str, Any], encoders: dict[str, int]) -> dict[str, Any]:
    """LoRA module name -> target: ``(weight, (start, size) | None, function | None)``.

    ``encoders``: the text encoders the ComfyUI model has and their widths (``clip_l``, ``clip_g``, ``t5xxl``).
    """
    weights = flux_weights(cfg) if family == "flux" else sd3_weights(cfg)
    h = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    km: dict[str, Any] = {}
    for path in weights:
        w = f"diffusion_model.{path}.weight"
        km[f"lora_unet_{_flat(path)}"] = (w, None, None)
        km[f"diffusion_model.{path}"] = (w, None, None)
    diff: dict[str, Any] = {}
    if family == "flux":
        for i in range(cfg["num_layers"]):
            b, o = f"transformer_blocks.{i}", f"diffusion_model.double_blocks.{i}"
            for j, p in enumerate("qkv"):
                diff[f"{b}.attn.to_{p}"] = (f"{o}.img_attn.qkv", (j * h, h), None)
                diff[f"{b}.attn.add_{p}_proj"] = (f"{o}.txt_attn.qkv", (j * h, h), None)
            for d, bfl in (("attn.to_out.0", "img_attn.proj"), ("norm1.linear", "img_mod.lin"),
                           ("norm1_context.linear", "txt_mod.lin"), ("attn.to_add_out", "txt_attn.proj"),
                           ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
                           ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2")):
                diff[f"{b}.{d}"] = (f"{o}.{bfl}", None, None)
        for i in range(cfg["num_single_layers"]):
            b, o = f"single_transformer_blocks.{i}", f"diffusion_model.single_blocks.{i}"
            for j, p in enumerate("qkv"):
                diff[f"{b}.attn.to_{p}"] = (f"{o}.linear1", (j * h, h), None)
            diff[f"{b}.proj_mlp"] = (f"{o}.linear1", (3 * h, 4 * h), None)
            diff[f"{b}.norm.linear"] = (f"{o}.modulation.lin", None, None)
            diff[f"{b}.proj_out"] = (f"{o}.linear2", None, None)
        for bfl, d in (("final_layer.linear", "proj_out"), ("img_in", "x_embedder"), ("txt_in", "context_embedder"),
                       ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
                       ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
                       ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
                       ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
                       ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                       ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")):
            diff[d] = (f"diffusion_model.{bfl}", None, None)
        diff["norm_out.linear"] = ("diffusion_model.final_layer.adaLN_modulation.1", None, _swap)
        for d, target in diff.items():
            km[f"transformer.{d}"] = target
            km[f"lora_transformer_{_flat(d)}"] = target
    else:
        n = cfg["num_layers"]
        for i in range(n):
            b, o = f"transformer_blocks.{i}", f"diffusion_model.joint_blocks.{i}"
            for j, p in enumerate("qkv"):
                diff[f"{b}.attn.to_{p}"] = (f"{o}.x_block.attn.qkv", (j * h, h), None)
                diff[f"{b}.attn.add_{p}_proj"] = (f"{o}.context_block.attn.qkv", (j * h, h), None)
                diff[f"{b}.attn2.to_{p}"] = (f"{o}.x_block.attn2.qkv", (j * h, h), None)
            for d, sai in (("norm1_context.linear", "context_block.adaLN_modulation.1"),
                           ("attn.to_add_out", "context_block.attn.proj"), ("ff_context.net.0.proj", "context_block.mlp.fc1"),
                           ("ff_context.net.2", "context_block.mlp.fc2"), ("norm1.linear", "x_block.adaLN_modulation.1"),
                           ("attn.to_out.0", "x_block.attn.proj"), ("attn2.to_out.0", "x_block.attn2.proj"),
                           ("ff.net.0.proj", "x_block.mlp.fc1"), ("ff.net.2", "x_block.mlp.fc2")):
                diff[f"{b}.{d}"] = (f"{o}.{sai}", None, None)
        diff[f"transformer_blocks.{n - 1}.norm1_context.linear"] = (
            f"diffusion_model.joint_blocks.{n - 1}.context_block.adaLN_modulation.1", None, _swap)
        for sai, d in (("context_embedder", "context_embedder"), ("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
                       ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
                       ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
                       ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"), ("final_layer.linear", "proj_out")):
            diff[d] = (f"diffusion_model.{sai}", None, None)
        diff["norm_out.linear"] = ("diffusion_model.final_layer.adaLN_modulation.1", None, _swap)
        for d, target in diff.items():
            km[f"transformer.{d}"] = target
    # the model's weights are "<module>.weight" (comfy/utils.py appends it to every mapped name)
    km = {k: (w if w.endswith(".weight") else f"{w}.weight", rows, fn) for k, (w, rows, fn) in km.items()}
    # model_lora_keys_clip
    clip_l, clip_g = "clip_l" in encoders, "clip_g" in encoders
    for b in range(CLIP_LAYERS):
        for c, lk in LORA_CLIP_MAP.items():
            if clip_l:
                w = f"clip_l.transformer.text_model.encoder.layers.{b}.{c}.weight"
                for key in (f"lora_te_text_model_encoder_layers_{b}_{lk}", f"lora_te1_text_model_encoder_layers_{b}_{lk}",
                            f"text_encoder.text_model.encoder.layers.{b}.{c}"):
                    km[key] = (w, None, None)
            if clip_g and clip_l:
                w = f"clip_g.transformer.text_model.encoder.layers.{b}.{c}.weight"
                for key in (f"lora_te2_text_model_encoder_layers_{b}_{lk}", f"text_encoder_2.text_model.encoder.layers.{b}.{c}"):
                    km[key] = (w, None, None)
    if "t5xxl" in encoders:
        for b in range(CLIP_LAYERS):
            for m in T5_MODULES:
                path = f"encoder.block.{b}.{m}"
                w = f"t5xxl.transformer.{path}.weight"
                km[f"text_encoders.t5xxl.transformer.{path}"] = (w, None, None)
                index = 1 + clip_g + clip_l
                if clip_l and index == 2:
                    km[f"lora_te2_{_flat(path)}"] = (w, None, None)  # OneTrainer Flux
                    index += 1
                km[f"lora_te{index}_{_flat(path)}"] = (w, None, None)
    for b in range(CLIP_LAYERS):
        for c in LORA_CLIP_MAP:
            for enc in ("clip_l", "clip_g"):
                if enc in encoders:
                    w = f"{enc}.transformer.text_model.encoder.layers.{b}.{c}.weight"
                    km[f"text_encoders.{enc}.transformer.text_model.encoder.layers.{b}.{c}"] = (w, None, None)
    return km


def weight_shapes(family: str, cfg: dict[str, Any], encoders: dict[str, int]) -> dict[str, tuple[int, int]]:
    """ComfyUI model weight -> (out, in)."""
    weights = flux_weights(cfg) if family == "flux" else sd3_weights(cfg)
    out = {f"diffusion_model.{p}.weight": (o, i) for p, (i, o) in weights.items()}
    for enc, width in encoders.items():
        for b in range(CLIP_LAYERS):
            if enc == "t5xxl":
                for m, (a, c) in T5_MODULES.items():
                    out[f"t5xxl.transformer.encoder.block.{b}.{m}.weight"] = (c * width, a * width)
            else:
                for c in LORA_CLIP_MAP:
                    shape = (2 * width, width) if c == "mlp.fc1" else (width, 2 * width) if c == "mlp.fc2" else (width, width)
                    out[f"{enc}.transformer.text_model.encoder.layers.{b}.{c}.weight"] = shape
    return out


def comfy_load(tensors: dict[str, torch.Tensor], key_map: dict[str, Any],
               shapes: dict[str, tuple[int, int]]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(update per model weight at strength 1, keys not loaded) as ComfyUI computes them."""
    updates: dict[str, torch.Tensor] = {}
    loaded: set[str] = set()
    for x, (weight, rows, fn) in key_map.items():
        pair = next(((f"{x}{u}", f"{x}{d}") for u, d in COMFY_LORA_SUFFIXES if f"{x}{u}" in tensors), None)
        if pair is None:
            continue
        up, down = tensors[pair[0]].float(), tensors[pair[1]].float()
        loaded.update(pair)
        alpha_key = f"{x}.alpha"
        scale = 1.0
        if alpha_key in tensors:
            loaded.add(alpha_key)
            scale = float(tensors[alpha_key]) / down.shape[0]
        delta = (up.flatten(1) @ down.flatten(1)) * scale
        if fn is not None:
            delta = fn(delta)
        full = updates.setdefault(weight, torch.zeros(shapes[weight]))
        if rows is None:
            assert delta.shape == full.shape, f"{x}: update {tuple(delta.shape)} for {weight} {tuple(full.shape)}"
            full += delta
        else:
            start, size = rows
            assert delta.shape == (size, full.shape[1]), f"{x}: update {tuple(delta.shape)} for rows of {weight}"
            full[start:start + size] += delta
    return updates, sorted(k for k in tensors if k not in loaded)


def kohya_modules(family: str, cfg: dict[str, Any], encoders: dict[str, int]) -> dict[str, tuple[int, int]]:
    """kohya module name -> (in, out) of the modules its network creates from weights."""
    weights = flux_weights(cfg) if family == "flux" else sd3_weights(cfg)
    out = {}
    for path, shape in weights.items():
        if family == "flux" and not path.startswith(("double_blocks.", "single_blocks.")):
            continue  # in_dims modules: not created by create_network_from_weights
        out[f"lora_unet_{_flat(path)}"] = shape
    prefixes = {"clip_l": "lora_te1_", "clip_g": "lora_te2_", "t5xxl": "lora_te3_"}
    for enc, width in encoders.items():
        for b in range(CLIP_LAYERS):
            if enc == "t5xxl":
                for m, (a, c) in T5_MODULES.items():
                    out[f"lora_te3_encoder_block_{b}_{_flat(m)}"] = (a * width, c * width)
            else:
                for c, lk in LORA_CLIP_MAP.items():
                    shape = (width, 2 * width) if c == "mlp.fc1" else (2 * width, width) if c == "mlp.fc2" else (width, width)
                    out[f"{prefixes[enc]}text_model_encoder_layers_{b}_{lk}"] = shape
    return out


def kohya_problems(tensors: dict[str, torch.Tensor], modules: dict[str, tuple[int, int]]) -> list[str]:
    """What kohya would not load (unknown module names, wrong shapes, missing tensors)."""
    problems = []
    names = {k.split(".", 1)[0] for k in tensors}
    for name in sorted(names):
        if name not in modules:
            problems.append(f"{name}: no such kohya module")
            continue
        inp, out = modules[name]
        down, up = tensors.get(f"{name}.lora_down.weight"), tensors.get(f"{name}.lora_up.weight")
        if down is None or up is None or f"{name}.alpha" not in tensors:
            problems.append(f"{name}: lora_down/lora_up/alpha missing")
            continue
        r = down.shape[0]
        if tuple(down.shape) != (r, inp) or tuple(up.shape) != (out, r):
            problems.append(f"{name}: down {tuple(down.shape)}, up {tuple(up.shape)} for a {inp} -> {out} layer")
    return problems
