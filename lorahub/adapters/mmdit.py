"""Flux.1 and SD3 module names in every layout, and how fused modules map to diffusers' split ones.

lorahub's canonical names are diffusers' (``FluxTransformer2DModel``,
``SD3Transformer2DModel``, with the pipeline component in front):
``transformer.transformer_blocks.0.attn.to_q``,
``text_encoder.text_model.encoder.layers.0.self_attn.q_proj`` (CLIP-L),
``text_encoder_2...`` (Flux: T5-XXL; SD3: CLIP-G), ``text_encoder_3.encoder.block.0.layer.0.SelfAttention.q``
(SD3's T5-XXL).

The original models fuse some of diffusers' modules (the rows of one weight
stacked):

- Flux.1 (black-forest-labs/flux ``src/flux/modules/layers.py``): ``double_blocks.N.img_attn.qkv`` =
  ``attn.to_q`` + ``to_k`` + ``to_v`` (3 x hidden rows), ``txt_attn.qkv`` = ``add_{q,k,v}_proj``,
  ``single_blocks.N.linear1`` = ``to_q`` + ``to_k`` + ``to_v`` + ``proj_mlp`` (3 x hidden + 4 x hidden);
- SD3 (Stability-AI/sd3.5 ``mmditx.py``; kohya ``library/sd3_models.py``):
  ``joint_blocks.N.x_block.attn.qkv`` = ``attn.to_{q,k,v}``, ``context_block.attn.qkv`` = ``add_{q,k,v}_proj``,
  ``x_block.attn2.qkv`` = ``attn2.to_{q,k,v}`` (3.5 Medium).

``final_layer.adaLN_modulation.1`` is diffusers' ``norm_out.linear`` with its two halves (shift, scale) swapped,
and so is SD3's last ``context_block.adaLN_modulation.1`` (``norm1_context.linear`` of the last, context-pre-only
block, the only one 2 x hidden wide): diffusers ``loaders/single_file_utils.py`` ``swap_scale_shift`` and
ComfyUI ``comfy/utils.py`` ``flux_to_diffusers`` / ``mmdit_to_diffusers`` say the same.

The layouts, module names as they appear before the tensor suffix:

=============== ===================================================================================
kohya           ``lora_unet_double_blocks_0_img_attn_qkv``, ``lora_unet_single_blocks_0_linear1``,
                ``lora_unet_joint_blocks_0_x_block_attn_qkv``; ``lora_te1_`` CLIP-L,
                ``lora_te2_`` CLIP-G (SD3), ``lora_te3_`` T5 (kohya-ss/sd-scripts
                ``networks/lora_flux.py`` / ``lora_sd3.py`` ``LoRANetwork``)
comfyui         ``diffusion_model.double_blocks.0.img_attn.qkv`` (ComfyUI ``comfy/lora.py``
                ``model_lora_keys_unet``; ai-toolkit, ComfyUI's trainer), ``text_encoders.clip_l.
                transformer.text_model...`` and ``text_encoders.t5xxl.transformer.encoder...``
bare            ``double_blocks.0.img_attn.qkv`` (BFL Control LoRAs)
xlabs           ``double_blocks.0.processor.qkv_lora1`` (image stream), ``..._lora2`` (text stream),
                ``single_blocks.0.processor.qkv_lora`` (XLabs-AI/x-flux)
diffusers       ``transformer.transformer_blocks.0.attn.to_q``, ``text_encoder.text_model...``
onetrainer      ``lora_transformer_transformer_blocks_0_attn_to_q``, ``lora_te1_`` CLIP-L,
                ``lora_te2_`` T5 (Flux); ComfyUI maps ``lora_transformer_``; SimpleTuner's ``lycoris_``
                prefix names the same paths
=============== ===================================================================================

Nothing here needs torch: :func:`targets` says which canonical modules (and which rows of them) a file's
module is, :func:`kohya_modules` groups canonical modules back into the kohya layout's fused ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------- Flux.1

#: BFL double-block module -> the diffusers modules it stacks (in row order).
FLUX_DOUBLE = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn.proj": ("attn.to_out.0",),
    "img_mlp.0": ("ff.net.0.proj",),
    "img_mlp.2": ("ff.net.2",),
    "img_mod.lin": ("norm1.linear",),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn.proj": ("attn.to_add_out",),
    "txt_mlp.0": ("ff_context.net.0.proj",),
    "txt_mlp.2": ("ff_context.net.2",),
    "txt_mod.lin": ("norm1_context.linear",),
}
FLUX_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation.lin": ("norm.linear",),
}
FLUX_TOP = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
}
#: XLabs-AI/x-flux LoRA processors -> BFL modules (lora1: image stream, lora2: text stream).
XLABS = {"qkv_lora1": "img_attn.qkv", "proj_lora1": "img_attn.proj", "qkv_lora2": "txt_attn.qkv",
         "proj_lora2": "txt_attn.proj", "qkv_lora": "linear1", "proj_lora": "linear2"}

# --------------------------------------------------------------------------------------------- SD3

SD3_BLOCK = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "x_block.attn.proj": ("attn.to_out.0",),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
    "x_block.attn2.proj": ("attn2.to_out.0",),
    "x_block.mlp.fc1": ("ff.net.0.proj",),
    "x_block.mlp.fc2": ("ff.net.2",),
    "x_block.adaLN_modulation.1": ("norm1.linear",),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "context_block.attn.proj": ("attn.to_add_out",),
    "context_block.mlp.fc1": ("ff_context.net.0.proj",),
    "context_block.mlp.fc2": ("ff_context.net.2",),
    "context_block.adaLN_modulation.1": ("norm1_context.linear",),
}
SD3_TOP = {
    "context_embedder": "context_embedder",
    "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
    "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
}

#: CLIP text-encoder modules (kohya/ComfyUI LORA_CLIP_MAP) and T5 (kohya TEXT_ENCODER_TARGET_REPLACE_MODULE).
CLIP_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
T5_MODULES = ("layer.0.SelfAttention.q", "layer.0.SelfAttention.k", "layer.0.SelfAttention.v",
              "layer.0.SelfAttention.o", "layer.1.DenseReluDense.wi_0", "layer.1.DenseReluDense.wi_1",
              "layer.1.DenseReluDense.wo", "layer.1.DenseReluDense.wi")

#: The pipeline component of each text encoder, per family (diffusers FluxPipeline / StableDiffusion3Pipeline).
ENCODERS = {
    "flux": {"clip_l": "text_encoder", "t5": "text_encoder_2"},
    "sd3": {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5": "text_encoder_3"},
}
#: kohya prefixes of the text encoders (networks/lora_flux.py, lora_sd3.py): te3 is T5 in both.
KOHYA_TE = {"clip_l": "lora_te1_", "clip_g": "lora_te2_", "t5": "lora_te3_"}


def _flat(path: str) -> str:
    return path.replace(".", "_")


IDX = "{i}"  # the block-index placeholder of the path templates below


def _diffusers_suffixes(family: str) -> list[str]:
    """Every diffusers module path (block ones with the index as ``{i}``)."""
    if family == "flux":
        dbl = sorted({p for parts in FLUX_DOUBLE.values() for p in parts})
        sgl = sorted({p for parts in FLUX_SINGLE.values() for p in parts})
        return ([f"transformer_blocks.{IDX}.{p}" for p in dbl] + [f"single_transformer_blocks.{IDX}.{p}" for p in sgl]
                + sorted(FLUX_TOP.values()))
    blk = sorted({p for parts in SD3_BLOCK.values() for p in parts})
    return [f"transformer_blocks.{IDX}.{p}" for p in blk] + sorted(SD3_TOP.values())


def _original_paths(family: str) -> list[str]:
    if family == "flux":
        return ([f"double_blocks.{IDX}.{k}" for k in FLUX_DOUBLE] + [f"single_blocks.{IDX}.{k}" for k in FLUX_SINGLE]
                + list(FLUX_TOP))
    return [f"joint_blocks.{IDX}.{k}" for k in SD3_BLOCK] + list(SD3_TOP)


def _template_rx(template: str, flat: bool) -> re.Pattern[str]:
    text = _flat(template) if flat else template
    return re.compile("^" + r"(\d+)".join(re.escape(p) for p in text.split(IDX)) + "$")


_TABLES: dict[tuple[str, str], list[tuple[re.Pattern[str], str]]] = {}


def _unflatten(family: str, kind: str, name: str) -> str | None:
    """A path of the ``original`` (BFL/SAI) or ``diffusers`` model from its dotted or kohya spelling (dots as
    ``_``): ``double_blocks_0_img_attn_qkv`` -> ``double_blocks.0.img_attn.qkv``."""
    key = (family, kind)
    if key not in _TABLES:
        paths = _original_paths(family) if kind == "original" else _diffusers_suffixes(family)
        table = []
        for p in sorted(paths, key=len, reverse=True):
            table.append((_template_rx(p, False), p))
            table.append((_template_rx(p, True), p))
        _TABLES[key] = table
    for rx, path in _TABLES[key]:
        m = rx.match(name)
        if m:
            return path.replace(IDX, m.group(1)) if m.groups() else path
    return None


# --------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of a file's module are the canonical module ``key`` (``swap``: halves swapped)."""

    key: str
    start: int
    stop: int
    swap: bool = False


def original_name(family: str, name: str) -> str | None:
    """The original-model (BFL/SAI) dotted path a module name of any layout denotes, or None.

    ``lora_unet_double_blocks_0_img_attn_qkv``, ``diffusion_model.double_blocks.0.img_attn.qkv``,
    ``double_blocks.0.img_attn.qkv`` and XLabs' ``double_blocks.0.processor.qkv_lora1`` all give
    ``double_blocks.0.img_attn.qkv``.
    """
    for prefix in ("model.diffusion_model.", "diffusion_model.", "lora_unet_", "lycoris_", "transformer."):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if family == "flux":
        m = re.fullmatch(r"(double_blocks|single_blocks)\.(\d+)\.processor\.(\w+)", name)
        if m and m.group(3) in XLABS:
            return f"{m.group(1)}.{m.group(2)}.{XLABS[m.group(3)]}"
    return _unflatten(family, "original", name)


def diffusers_name(family: str, name: str) -> str | None:
    """The diffusers module path a diffusers/OneTrainer/SimpleTuner name denotes, or None."""
    for prefix in ("transformer.", "lora_transformer_", "lycoris_", "base_model.model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return _unflatten(family, "diffusers", name)


def text_encoder_target(family: str, name: str) -> str | None:
    """The canonical key of a text-encoder module of any layout (kohya ``lora_te1_``, OneTrainer ``lora_te2_``
    T5, ComfyUI ``text_encoders.clip_l.transformer.``, diffusers ``text_encoder.``), or None."""
    enc = ENCODERS[family]
    rest: str | None = None
    which: str | None = None
    for prefix, w in (("text_encoders.clip_l.transformer.", "clip_l"), ("text_encoders.clip_g.transformer.", "clip_g"),
                      ("text_encoders.t5xxl.transformer.", "t5")):
        if name.startswith(prefix):
            rest, which = name[len(prefix):], w
            break
    if rest is None:
        for comp in sorted(set(enc.values()), key=len, reverse=True):
            if name.startswith(comp + "."):
                rest = name[len(comp) + 1:]
                which = next(w for w, c in enc.items() if c == comp)
                break
    if rest is None:
        m = re.match(r"^lora_te([123]?)_(.+)$", name)
        if not m:
            return None
        rest = m.group(2)
        clip = _clip_path(rest)
        if clip is not None:
            which = {"": "clip_l", "1": "clip_l", "2": "clip_g"}.get(m.group(1))
            rest = clip
        else:
            t5 = _t5_path(rest)
            if t5 is None:
                return None
            which, rest = "t5", t5
    if which not in enc or rest is None:
        return None
    if which == "t5":
        path = _t5_path(rest)
    else:
        path = _clip_path(rest)
    return f"{enc[which]}.{path}" if path else None


def _clip_path(rest: str) -> str | None:
    rest = rest.removeprefix("text_model.").removeprefix("text_model_")
    m = re.fullmatch(r"encoder[._]layers[._](\d+)[._](.+)", rest)
    if not m:
        return None
    for mod in CLIP_MODULES:
        if m.group(2) in (mod, _flat(mod)):
            return f"text_model.encoder.layers.{m.group(1)}.{mod}"
    return None


def _t5_path(rest: str) -> str | None:
    m = re.fullmatch(r"encoder[._]block[._](\d+)[._](.+)", rest)
    if not m:
        return None
    for mod in T5_MODULES:
        if m.group(2) in (mod, _flat(mod)):
            return f"encoder.block.{m.group(1)}.{mod}"
    return None


def _split_sizes(parts: tuple[str, ...], original: str, in_features: int, out_features: int) -> list[int] | None:
    """Row counts of the diffusers modules stacked in a fused module (None: the shape does not fit)."""
    if len(parts) == 1:
        return [out_features]
    if original.endswith("linear1"):
        hidden = in_features
        if out_features == 3 * hidden:  # XLabs' single-block qkv_lora covers the attention rows only
            return [hidden] * 3
        mlp = out_features - 3 * hidden
        return [hidden, hidden, hidden, mlp] if mlp > 0 else None
    if out_features % 3:
        return None
    return [out_features // 3] * 3


def targets(family: str, name: str, in_features: int | None, out_features: int | None) -> list[Piece] | None:
    """The canonical modules (and rows) a file's module ``name`` is, in any layout; None when lorahub cannot
    place it. ``in_features``/``out_features`` are the module's (fused modules are split by them)."""
    te = text_encoder_target(family, name)
    if te is not None:
        return [Piece(te, 0, out_features or 0)]
    diff = diffusers_name(family, name) if not name.startswith(("lora_unet_", "diffusion_model.")) else None
    if diff is not None:
        return [Piece(f"transformer.{diff}", 0, out_features or 0)]
    orig = original_name(family, name)
    if orig is None or not in_features or not out_features:
        return None
    return _original_targets(family, orig, in_features, out_features)


def _original_targets(family: str, orig: str, in_features: int, out_features: int) -> list[Piece] | None:
    if family == "flux":
        m = re.fullmatch(r"(double_blocks|single_blocks)\.(\d+)\.(.+)", orig)
        if m:
            table = FLUX_DOUBLE if m.group(1) == "double_blocks" else FLUX_SINGLE
            block = "transformer_blocks" if m.group(1) == "double_blocks" else "single_transformer_blocks"
            parts = table.get(m.group(3))
            prefix = f"transformer.{block}.{m.group(2)}."
        else:
            parts = (FLUX_TOP[orig],) if orig in FLUX_TOP else None
            prefix = "transformer."
    else:
        m = re.fullmatch(r"joint_blocks\.(\d+)\.(.+)", orig)
        if m:
            parts = SD3_BLOCK.get(m.group(2))
            prefix = f"transformer.transformer_blocks.{m.group(1)}."
        else:
            parts = (SD3_TOP[orig],) if orig in SD3_TOP else None
            prefix = "transformer."
    if parts is None:
        return None
    sizes = _split_sizes(parts, orig, in_features, out_features)
    if sizes is None:
        return None
    swap = orig == "final_layer.adaLN_modulation.1" or (
        family == "sd3" and orig.endswith("context_block.adaLN_modulation.1") and out_features == 2 * in_features
    )
    out, row = [], 0
    for part, size in zip(parts[: len(sizes)], sizes, strict=True):  # XLabs' single-block qkv: q, k, v only
        out.append(Piece(prefix + part, row, row + size, swap))
        row += size
    return out


# --------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class FusedModule:
    """A module of the kohya layout and the canonical modules it stacks, in row order."""

    name: str  # kohya name, e.g. lora_unet_double_blocks_0_img_attn_qkv
    parts: tuple[str, ...]  # canonical keys
    swap: bool = False  # halves swapped (final_layer.adaLN_modulation.1)


def kohya_modules(family: str, keys: list[str], out_features: dict[str, int]) -> list[FusedModule]:
    """Group canonical keys into the modules of the kohya layout (kohya ``networks/lora_flux.py`` /
    ``lora_sd3.py`` names: ``lora_unet_`` + the original model's path, dots as ``_``; text encoders
    ``lora_te1_`` CLIP-L, ``lora_te2_`` CLIP-G, ``lora_te3_`` T5).

    Raises ValueError naming the first key that has no place in the layout.
    """
    table = _reverse_table(family)
    enc = {c: w for w, c in ENCODERS[family].items()}
    out: list[FusedModule] = []
    seen: set[str] = set()
    for key in sorted(keys):
        comp, _, path = key.partition(".")
        if comp in enc:
            if enc[comp] == "t5":
                rest = path.removeprefix("encoder.")
                out.append(FusedModule(KOHYA_TE["t5"] + "encoder_" + _flat(rest), (key,)))
            else:
                out.append(FusedModule(KOHYA_TE[enc[comp]] + _flat(path), (key,)))
            continue
        hit = None
        if comp == "transformer":
            for rx, (orig, parts) in table:
                m = rx.match(path)
                if m:
                    idx = m.group(1) if m.groups() else ""
                    hit = (orig.replace(IDX, idx), tuple("transformer." + p.replace(IDX, idx) for p in parts))
                    break
        if hit is None:
            raise ValueError(f"no kohya name for the {family} module '{key}'")
        orig_name, part_keys = hit
        if orig_name in seen:
            continue
        seen.add(orig_name)
        swap = orig_name == "final_layer.adaLN_modulation.1" or (
            family == "sd3" and orig_name.endswith("context_block.adaLN_modulation.1")
            and _is_last_context(part_keys[0], out_features)
        )
        out.append(FusedModule("lora_unet_" + _flat(orig_name), part_keys, swap))
    return out


def _is_last_context(key: str, out_features: dict[str, int]) -> bool:
    """SD3's last block: its norm1_context.linear is 2 x hidden wide (AdaLayerNormContinuous), the others 6 x
    (the hidden width is read from the block's other modules, else from norm1.linear: 6 or 9 x hidden)."""
    block = key.rsplit(".norm1_context.linear", 1)[0]
    width = out_features.get(key)
    if width is None:
        return False
    for k, v in out_features.items():
        if k.startswith(block + ".") and k.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "add_q_proj", "to_add_out"):
            return width == 2 * v
    return False


def _reverse_table(family: str) -> list[tuple[re.Pattern[str], tuple[str, tuple[str, ...]]]]:
    """diffusers path -> (the original module stacking it, the diffusers paths stacked), as regexes."""
    rows: list[tuple[str, tuple[str, tuple[str, ...]]]] = []
    if family == "flux":
        groups = [("transformer_blocks", "double_blocks", FLUX_DOUBLE),
                  ("single_transformer_blocks", "single_blocks", FLUX_SINGLE)]
        top = FLUX_TOP
    else:
        groups = [("transformer_blocks", "joint_blocks", SD3_BLOCK)]
        top = SD3_TOP
    for dblock, oblock, tab in groups:
        for orig, parts in tab.items():
            full = tuple(f"{dblock}.{IDX}.{q}" for q in parts)
            rows.extend((p, (f"{oblock}.{IDX}.{orig}", full)) for p in full)
    rows.extend((diff, (orig, (diff,))) for orig, diff in top.items())
    return [(_template_rx(p, False), v) for p, v in rows]


def fused_sizes(family: str, module: FusedModule, out_features: dict[str, int], in_features: int) -> list[int]:
    """Row counts of each part of a fused module; a part the adapter lacks gets the size the model gives it
    (q/k/v: hidden = the module's input width; Flux's proj_mlp: 4 x hidden, the mlp_ratio of every Flux.1)."""
    sizes = []
    for key in module.parts:
        if key in out_features:
            sizes.append(out_features[key])
        elif key.endswith("proj_mlp"):
            sizes.append(4 * in_features)
        else:
            sizes.append(in_features)
    return sizes


# --------------------------------------------------------------------------------------------- checks

#: (input, output) widths of each diffusers module as multiples of the hidden width; None: not hidden-based.
_WIDTHS: dict[str, dict[str, tuple[int | None, tuple[int, ...] | None]]] = {
    "flux": {
        "transformer_blocks.attn.to_q": (1, (1,)), "transformer_blocks.attn.to_k": (1, (1,)),
        "transformer_blocks.attn.to_v": (1, (1,)), "transformer_blocks.attn.to_out.0": (1, (1,)),
        "transformer_blocks.attn.add_q_proj": (1, (1,)), "transformer_blocks.attn.add_k_proj": (1, (1,)),
        "transformer_blocks.attn.add_v_proj": (1, (1,)), "transformer_blocks.attn.to_add_out": (1, (1,)),
        "transformer_blocks.ff.net.0.proj": (1, (4,)), "transformer_blocks.ff.net.2": (4, (1,)),
        "transformer_blocks.ff_context.net.0.proj": (1, (4,)), "transformer_blocks.ff_context.net.2": (4, (1,)),
        "transformer_blocks.norm1.linear": (1, (6,)), "transformer_blocks.norm1_context.linear": (1, (6,)),
        "single_transformer_blocks.attn.to_q": (1, (1,)), "single_transformer_blocks.attn.to_k": (1, (1,)),
        "single_transformer_blocks.attn.to_v": (1, (1,)), "single_transformer_blocks.proj_mlp": (1, (4,)),
        "single_transformer_blocks.proj_out": (5, (1,)), "single_transformer_blocks.norm.linear": (1, (3,)),
        "x_embedder": (None, (1,)), "context_embedder": (None, (1,)),
        "time_text_embed.timestep_embedder.linear_1": (None, (1,)), "time_text_embed.timestep_embedder.linear_2": (1, (1,)),
        "time_text_embed.text_embedder.linear_1": (None, (1,)), "time_text_embed.text_embedder.linear_2": (1, (1,)),
        "time_text_embed.guidance_embedder.linear_1": (None, (1,)),
        "time_text_embed.guidance_embedder.linear_2": (1, (1,)),
        "norm_out.linear": (1, (2,)), "proj_out": (1, None),
    },
    "sd3": {
        "transformer_blocks.attn.to_q": (1, (1,)), "transformer_blocks.attn.to_k": (1, (1,)),
        "transformer_blocks.attn.to_v": (1, (1,)), "transformer_blocks.attn.to_out.0": (1, (1,)),
        "transformer_blocks.attn.add_q_proj": (1, (1,)), "transformer_blocks.attn.add_k_proj": (1, (1,)),
        "transformer_blocks.attn.add_v_proj": (1, (1,)), "transformer_blocks.attn.to_add_out": (1, (1,)),
        "transformer_blocks.attn2.to_q": (1, (1,)), "transformer_blocks.attn2.to_k": (1, (1,)),
        "transformer_blocks.attn2.to_v": (1, (1,)), "transformer_blocks.attn2.to_out.0": (1, (1,)),
        "transformer_blocks.ff.net.0.proj": (1, (4,)), "transformer_blocks.ff.net.2": (4, (1,)),
        "transformer_blocks.ff_context.net.0.proj": (1, (4,)), "transformer_blocks.ff_context.net.2": (4, (1,)),
        "transformer_blocks.norm1.linear": (1, (6, 9)), "transformer_blocks.norm1_context.linear": (1, (6, 2)),
        "context_embedder": (None, (1,)), "pos_embed.proj": (None, (1,)),
        "time_text_embed.timestep_embedder.linear_1": (None, (1,)), "time_text_embed.timestep_embedder.linear_2": (1, (1,)),
        "time_text_embed.text_embedder.linear_1": (None, (1,)), "time_text_embed.text_embedder.linear_2": (1, (1,)),
        "norm_out.linear": (1, (2,)), "proj_out": (1, None),
    },
}

#: Hidden widths of the published configs (black-forest-labs/FLUX.1-dev and -schnell; stabilityai/
#: stable-diffusion-3-medium, stable-diffusion-3.5-medium, stable-diffusion-3.5-large transformer/config.json).
PUBLISHED_HIDDEN = {"flux": (3072,), "sd3": (1536, 2432)}


def _generic(key: str) -> str:
    """``transformer.transformer_blocks.3.attn.to_q`` -> ``transformer_blocks.attn.to_q``."""
    path = key.removeprefix("transformer.")
    return re.sub(r"^((?:single_)?transformer_blocks)\.\d+\.", r"\1.", path)


def shape_problems(family: str, modules: dict, hidden: int | None = None) -> list[tuple[str, str]]:  # noqa: ANN001
    """("error" | "warning", message) for the transformer modules of a Flux.1/SD3 file whose widths do not fit
    the model: a fused qkv that is not 3 x its input wide, a ``linear1`` that is not q, k, v and a 4 x MLP,
    modules made for different hidden widths, a module lorahub cannot place, a width no published config has.

    ``modules`` are :class:`lorahub.adapters.formats.Module` objects.
    """
    out: list[tuple[str, str]] = []
    widths = _WIDTHS[family]
    seen: dict[int, str] = {}
    unplaced = []
    for name in sorted(modules):
        m = modules[name]
        if m.kind in ("orphan", "set") or m.problems or not m.component == "transformer":
            continue
        if not (m.in_features and m.out_features):
            continue
        pieces = targets(family, name, m.in_features, m.out_features)
        if pieces is None:
            orig = original_name(family, name)
            if orig is not None and orig.endswith(("qkv", "linear1")):
                what = "3 x" if orig.endswith("qkv") else "3 x + a"
                out.append(("error", f"fused module '{name}' has {m.out_features} output rows, which do not split "
                                     f"into {what} its input width {m.in_features}"))
            else:
                unplaced.append(name)
            continue
        for p in pieces:
            rule = widths.get(_generic(p.key))
            if rule is None:
                continue
            in_mult, out_mults = rule
            rows = p.stop - p.start
            if in_mult is not None:
                if m.in_features % in_mult:
                    implied = None
                else:
                    implied = m.in_features // in_mult
            elif out_mults is not None and len(out_mults) == 1 and rows % out_mults[0] == 0:
                implied = rows // out_mults[0]
            else:
                implied = None
            if implied is None:
                out.append(("error", f"module '{name}' ({m.in_features} -> {m.out_features}) does not fit "
                                     f"{family} '{p.key}'"))
                break
            if out_mults is not None and rows not in tuple(k * implied for k in out_mults):
                want = " or ".join(f"{k} x {implied}" for k in out_mults)
                part = f" (rows {p.start}-{p.stop} of it are '{p.key}')" if len(pieces) > 1 else ""
                out.append(("error", f"module '{name}' has {rows} output rows{part}; the model's layer has {want}"))
                break
            seen.setdefault(implied, name)
    if len(seen) > 1:
        (w1, n1), (w2, n2) = sorted(seen.items())[:2]
        out.append(("error", f"modules are made for different hidden widths: '{n1}' for {w1}, '{n2}' for {w2}"))
    elif seen:
        width = next(iter(seen))
        if width not in PUBLISHED_HIDDEN[family]:
            published = " or ".join(str(w) for w in PUBLISHED_HIDDEN[family])
            out.append(("warning", f"hidden width {width} is not that of a published {family} model ({published}): "
                                   "a test-size base?"))
    if unplaced:
        more = f" and {len(unplaced) - 1} more" if len(unplaced) > 1 else ""
        out.append(("warning", f"module '{unplaced[0]}'{more} has no place in the {family} transformer lorahub knows"))
    return out


def diffusers_problem(family: str, fmt: str, modules: dict) -> str | None:  # noqa: ANN001
    """Why diffusers (0.42) does not load every module of a Flux.1/SD3 file, or None when it does.

    Read from diffusers' ``loaders/lora_pipeline.py`` (``FluxLoraLoaderMixin.lora_state_dict``,
    ``SD3LoraLoaderMixin.lora_state_dict``, ``_lora_loadable_modules``) and ``lora_conversion_utils.py``
    (``_convert_kohya_flux_lora_to_diffusers``); ``tests/pipeline/test_flux_formats.py`` checks the claims.
    """
    names = sorted(modules)
    t5 = [n for n in names if modules[n].component == ENCODERS[family]["t5"]]
    if family == "sd3":
        if fmt in ("kohya-lora", "kohya-dora", "kohya-locon", "comfyui", "bare"):
            return ("diffusers has no converter for SD3 LoRAs in this layout: StableDiffusion3Pipeline loads none "
                    "of its modules (lorahub convert --format diffusers rewrites it)")
        if t5:
            return (f"StableDiffusion3Pipeline loads LoRAs into the transformer and the two CLIP encoders only: "
                    f"{len(t5)} T5 module(s) would be left out")
        if fmt in ("peft", "peft-dora", "diffusers") and any(
            modules[n].component == "transformer" and not n.startswith("transformer.") for n in names
        ):
            return "transformer keys without the transformer. prefix: diffusers loads none of them"
        return None
    if fmt == "comfyui" and not any("down" in modules[n].parts and n.startswith(("diffusion_model.", "text_encoders."))
                                   and modules[n].parts["down"].name.endswith(".lora_down.weight") for n in names):
        return ("ComfyUI-layout keys (diffusion_model.*.lora_A): diffusers' Flux loader converts only kohya-style "
                "lora_down keys and loads none of them (lorahub convert --format diffusers rewrites it)")
    if fmt == "bare":
        return "keys without a prefix: diffusers' Flux loader loads none of them"
    if fmt in ("peft", "peft-dora", "diffusers") and any(
        modules[n].component == "transformer" and not n.startswith("transformer.") for n in names
    ):
        return "transformer keys without the transformer. prefix: diffusers loads none of them"
    if t5:
        return (f"FluxPipeline loads LoRAs into the transformer and the CLIP text encoder only: {len(t5)} T5 "
                "module(s) would be left out (diffusers drops them or fails on them)")
    if fmt in ("kohya-lora", "kohya-dora", "kohya-locon", "comfyui"):
        if any(n.startswith("lora_transformer_") for n in names):
            if any("alpha" not in modules[n].parts for n in names if modules[n].kind == "lora"):
                return "OneTrainer-layout modules without alpha: diffusers' converter needs one per module"
            other = [n for n in names if re.match(r"lora_transformer_(single_)?transformer_blocks_\d+_", n)
                     and "_attn_" not in n]
            if other:
                return (f"diffusers' OneTrainer converter maps attention modules only: '{other[0]}' and "
                        f"{len(other) - 1} more would collapse onto their block's name")
            return None
        for n in names:
            m = modules[n]
            if re.search(r"single_blocks[._]\d+[._]linear1$", n) and (m.in_features, m.out_features) != (3072, 21504):
                return (f"diffusers' kohya Flux converter splits linear1 at Flux.1's widths (3072 -> 3 x 3072 + "
                        f"12288) and fails on '{n}' ({m.in_features} -> {m.out_features})")
    return None
