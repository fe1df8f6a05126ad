"""The key layouts lorahub writes, which tool loads which, and the module shapes of the base families.

lorahub writes adapters in two layouts (``docs/formats.md``):

- ``kohya``: ``lora_unet_<module path, dots as _>.lora_down.weight`` /
  ``.lora_up.weight`` / ``.alpha`` and ``lora_te_text_model_...``, as
  kohya-ss/sd-scripts ``networks/lora.py`` names them. SD 1.x/2.x module paths
  are diffusers' (kohya trains those on the diffusers UNet); SDXL ones are the
  paths of the original (SGM) UNet kohya trains SDXL on
  (``input_blocks_4_1_transformer_blocks_0_attn1_to_q``, ``middle_block_1_...``,
  ``output_blocks_0_1_...``; :func:`sgm_module_path`) with ``lora_te1_`` and
  ``lora_te2_`` for the two text encoders. AUTOMATIC1111/Forge, ComfyUI and
  kohya load it fully, and diffusers converts it on load.
- ``diffusers``: the component prefix and the module path (``unet.<path>``,
  ``text_encoder.text_model.<path>``) with peft ``lora_A``/``lora_B`` (or the
  older ``lora.down``/``lora.up`` of diffusers' training scripts). diffusers
  loads it; ComfyUI maps only the modules outside the attention blocks of an
  SD UNet (it expects ``...processor.to_q`` names there), so it is not the
  file to give to UIs.

Strength: a layout without an alpha tensor (diffusers) is written with
``alpha / rank`` folded into the up (B) factor, so a loader that reads no
metadata (alpha = rank, scale 1) applies the same update as one that does.

Conv modules keep their 4-D shapes in every layout: ``down`` is ``[r, in,
kh, kw]`` and ``up`` is ``[out, r, 1, 1]``, because diffusers (peft) and kohya
build conv layers for them and refuse 2-D factors. :func:`conv_kernel` knows
which modules of a family are convolutions, so that LyCORIS factors (which
store conv modules flattened to 2-D) can be given their kernel back.

Nothing here needs torch.
"""

from __future__ import annotations

import re

from ..errors import UsageError

#: Layouts lorahub writes; the first is the default of commands whose files go to UIs.
WRITE_FORMATS = ("kohya", "diffusers")

#: The tools lorahub writes for, in the order cards list them.
TOOLS = ("diffusers", "a1111", "comfyui", "kohya")
TOOL_NAMES = {
    "diffusers": "diffusers",
    "a1111": "AUTOMATIC1111 / Forge",
    "comfyui": "ComfyUI",
    "kohya": "kohya-ss sd-scripts",
}

#: Families whose modules lorahub can name in the kohya layout. UNets: SD 1.x/2.x diffusers paths, dots as
#: ``_``; SDXL the SGM (original UNet) paths kohya trains on (:func:`sgm_module_path`); an adapter of unknown
#: family with one text encoder is named as SD 1.x/2.x ones are. Flux.1 and SD3: the original model's paths
#: with q/k/v fused (:func:`lorahub.adapters.mmdit.kohya_modules`, kohya ``networks/lora_flux.py`` /
#: ``lora_sd3.py``).
KOHYA_FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux", "unknown")

#: ``modelspec.implementation`` of kohya-layout SDXL files: the original (SGM) UNet their names belong to,
#: as kohya-ss/sd-scripts writes it (``library/sai_model_spec.py``, ``IMPL_STABILITY_AI``).
SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"

#: The UNet layout of SDXL base 1.0 (``stabilityai/stable-diffusion-xl-base-1.0/unet/config.json``): what
#: SDXL-architecture checkpoints (Pony, Illustrious, NoobAI...) share and the embedded tiny SDXL copies.
#: Used to name the modules of SDXL adapters written without a base at hand (blends, conversions).
SDXL_UNET_LAYOUT = {
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
}

#: diffusers ``ResnetBlock2D`` children -> their names in the SGM ``ResBlock`` (kohya's
#: ``library/sdxl_model_util.py`` ``make_unet_conversion_map``; ComfyUI ``comfy/utils.py`` ``UNET_MAP_RESNET``).
_SGM_RESNET = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
               "conv_shortcut": "skip_connection", "norm1": "in_layers.0", "norm2": "out_layers.0"}
#: Modules outside the blocks (``UNET_MAP_BASIC``; kohya ``make_unet_conversion_map``).
_SGM_BASIC = {"conv_in": "input_blocks.0.0", "conv_out": "out.2", "conv_norm_out": "out.0",
              "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def sgm_block_map(unet_config: dict | None = None) -> dict[str, str]:
    """diffusers block prefixes -> SGM (original UNet) block prefixes, derived from a UNet config.

    ``unet_config``: a diffusers ``UNet2DConditionModel`` config (``block_out_channels``,
    ``layers_per_block``, ``down_block_types``, ``up_block_types``); default :data:`SDXL_UNET_LAYOUT`.
    The numbering is the one the original UNet builds and ComfyUI's ``comfy/utils.py``
    ``unet_to_diffusers`` and kohya's ``library/sdxl_model_util.py`` ``make_unet_conversion_map`` encode:
    ``input_blocks.0`` is ``conv_in``; then per down level ``layers_per_block`` blocks ``[resnet,
    attention]`` and, except on the last level, one block holding the downsampler (``.0.op``); the
    middle block is ``[resnet, attention, resnet]``; per up level ``layers_per_block + 1`` blocks
    ``[resnet, attention]``, the last of which (except on the last level) also holds the upsampler
    (``.1.conv`` without an attention, ``.2.conv`` with one). SDXL: ``down_blocks.1.attentions.0`` ->
    ``input_blocks.4.1``, ``up_blocks.0.upsamplers.0`` -> ``output_blocks.2.2``.
    """
    cfg = dict(SDXL_UNET_LAYOUT if unet_config is None else unet_config)
    levels = len(cfg["block_out_channels"])
    lpb = cfg.get("layers_per_block", 2)
    lpb = [int(lpb)] * levels if isinstance(lpb, int) else [int(x) for x in lpb]
    down_attn = ["CrossAttn" in str(t) for t in cfg["down_block_types"]]
    up_attn = ["CrossAttn" in str(t) for t in cfg["up_block_types"]]
    out: dict[str, str] = {}
    n = 1
    for x in range(levels):
        for i in range(lpb[x]):
            out[f"down_blocks.{x}.resnets.{i}"] = f"input_blocks.{n}.0"
            if down_attn[x]:
                out[f"down_blocks.{x}.attentions.{i}"] = f"input_blocks.{n}.1"
            n += 1
        if x < levels - 1:
            out[f"down_blocks.{x}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
            n += 1
    out["mid_block.resnets.0"] = "middle_block.0"
    out["mid_block.attentions.0"] = "middle_block.1"
    out["mid_block.resnets.1"] = "middle_block.2"
    up_lpb = list(reversed(lpb))
    n = 0
    for x in range(levels):
        layers = up_lpb[x] + 1
        for i in range(layers):
            out[f"up_blocks.{x}.resnets.{i}"] = f"output_blocks.{n}.0"
            if up_attn[x]:
                out[f"up_blocks.{x}.attentions.{i}"] = f"output_blocks.{n}.1"
            if i == layers - 1 and x < levels - 1:
                out[f"up_blocks.{x}.upsamplers.0.conv"] = f"output_blocks.{n}.{2 if up_attn[x] else 1}.conv"
            n += 1
    return out


_BLOCK = re.compile(r"^((?:down_blocks|up_blocks)\.\d+\.(?:resnets|attentions)\.\d+|mid_block\.(?:resnets|attentions)\.\d+)\.(.+)$")


def sgm_module_path(path: str, unet_config: dict | None = None, *, blocks: dict[str, str] | None = None) -> str | None:
    """The SGM (original UNet) path of a diffusers UNet module path, or None when it has none.

    ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`` ->
    ``input_blocks.4.1.transformer_blocks.0.attn1.to_q``; ``mid_block.resnets.0.conv1`` ->
    ``middle_block.0.in_layers.2``; ``conv_in`` -> ``input_blocks.0.0`` (see :func:`sgm_block_map`;
    ``blocks`` saves recomputing it).
    """
    if path in _SGM_BASIC:
        return _SGM_BASIC[path]
    table = blocks if blocks is not None else sgm_block_map(unet_config)
    if path in table:  # the samplers' convolutions
        return table[path]
    m = _BLOCK.match(path)
    if not m or m.group(1) not in table:
        return None
    prefix, rest = m.group(1), m.group(2)
    if ".resnets." in prefix:
        rest = _SGM_RESNET.get(rest)
        if rest is None:
            return None
    return f"{table[prefix]}.{rest}"

_SEP = r"[._]"
_CONV_3X3 = re.compile(
    rf"(?:^|{_SEP})(?:resnets{_SEP}\d+{_SEP}conv[12]|(?:down|up)samplers{_SEP}0{_SEP}conv|conv_in|conv_out)$"
)
_CONV_1X1 = re.compile(rf"(?:^|{_SEP})resnets{_SEP}\d+{_SEP}conv_shortcut$")
_PROJ = re.compile(rf"(?:^|{_SEP})attentions{_SEP}\d+{_SEP}proj_(?:in|out)$")
#: Families whose transformer blocks project with 1x1 convolutions (``use_linear_projection=False``).
_CONV_PROJ_FAMILIES = ("sd1",)


def conv_kernel(family: str | None, module: str) -> tuple[int, int] | None:
    """``(kh, kw)`` when ``module`` is a convolution of ``family``'s UNet, else None (linear or unknown).

    ``module`` may be spelled in any layout (``unet.down_blocks.0.resnets.0.conv1``,
    ``lora_unet_down_blocks_0_resnets_0_conv1``). SD UNets (1.x, 2.x, SDXL) have
    3x3 ``conv1``/``conv2``/``conv_in``/``conv_out`` and down/up-samplers and a
    1x1 ``conv_shortcut``; their transformer ``proj_in``/``proj_out`` are 1x1
    convolutions in SD 1.x and linear layers in SD 2.x and SDXL.
    """
    if family in ("sd3", "flux") or ("conv" not in module and "proj_" not in module):  # each pattern needs one
        return None
    if _CONV_3X3.search(module):
        return (3, 3)
    if _CONV_1X1.search(module):
        return (1, 1)
    if _PROJ.search(module) and family in _CONV_PROJ_FAMILIES:
        return (1, 1)
    return None


def linear_projection(family: str | None, module: str) -> bool:
    """Whether ``module`` is a transformer ``proj_in``/``proj_out`` that ``family`` builds as a linear layer."""
    return bool(_PROJ.search(module)) and family in ("sd2", "sdxl")


def kohya_name(key: str, family: str | None, unet_config: dict | None = None) -> str:
    """The kohya module name of a canonical key (``unet.<path>``, ``text_encoder.text_model.<path>``).

    ``unet.down_blocks.1.attentions.0.proj_in`` -> ``lora_unet_down_blocks_1_attentions_0_proj_in``;
    ``text_encoder.text_model.encoder.layers.0.self_attn.q_proj`` ->
    ``lora_te_text_model_encoder_layers_0_self_attn_q_proj``. SDXL: the UNet module's SGM path
    (:func:`sgm_module_path` over ``unet_config``, default SDXL base 1.0's layout), as kohya names the
    modules of the UNet it trains SDXL on (``library/sdxl_original_unet.py``):
    ``unet.down_blocks.1.attentions.0.proj_in`` -> ``lora_unet_input_blocks_4_1_proj_in``; text encoders
    ``lora_te1_`` and ``lora_te2_`` (``text_encoder_2``).
    """
    if family in ("sd3", "flux"):
        raise ValueError("Flux.1/SD3 modules are named by lorahub.adapters.mmdit.kohya_modules (fused q/k/v)")
    if family not in KOHYA_FAMILIES and not (family in (None, "unknown") and not key.startswith("text_encoder_2.")):
        raise UsageError(
            f"lorahub writes the kohya layout for SD 1.x, SD 2.x, SDXL, SD3 and Flux.1 adapters, not for "
            f"{family or 'unknown'} ones",
            hint="use --format diffusers",
        )
    component, _, path = key.partition(".")
    if component == "unet":
        if family == "sdxl":
            sgm = sgm_module_path(path, unet_config)
            if sgm is None:
                raise UsageError(f"no SDXL (SGM) kohya name for the UNet module '{path}'",
                                 hint="use --format diffusers")
            path = sgm
        return "lora_unet_" + path.replace(".", "_")
    if component in ("text_encoder", "text_encoder_2"):
        if not path.startswith("text_model."):
            path = "text_model." + path
        if component == "text_encoder_2":
            prefix = "lora_te2_"
        else:
            prefix = "lora_te1_" if family == "sdxl" else "lora_te_"
        return prefix + path.replace(".", "_")
    raise UsageError(f"no kohya name for the module '{key}' (component {component})")


#: Formats (as :func:`lorahub.adapters.formats.analyze` detects them) -> the UIs/trainers that load them fully.
#: diffusers is decided per file (``diffusers_loadable``).
_FULL_LOADERS = {
    "kohya-lora": ("a1111", "comfyui", "kohya"),
    "kohya-locon": ("a1111", "comfyui", "kohya"),
    "lycoris-loha": ("a1111", "comfyui"),
    "lycoris-lokr": ("a1111", "comfyui"),
    "lycoris-full": ("a1111", "comfyui"),
}


_DIFFUSERS_UNET_NAME = re.compile(r"^lora_unet_(?:down_blocks|mid_block|up_blocks)_")


def naming_gaps(fmt: str, family: str | None, names: list[str]) -> dict[str, str]:
    """Tools that skip modules of a kohya-format file because of its UNet names: tool -> why.

    SDXL kohya files name the UNet's modules by their SGM paths (kohya trains SDXL on that UNet). A file
    that uses diffusers paths instead (``lora_unet_down_blocks_1_attentions_0_...``) is only converted by
    some loaders: kohya-ss/sd-scripts converts it in ``networks/lora.py`` ``create_network_from_weights``
    (``convert_diffusers_to_sai_if_needed``), but ``networks/sdxl_merge_lora.py`` and
    ``LoRANetwork.load_weights`` (``train_network.py --network_weights``) look the names up in its SGM
    UNet and skip them; AUTOMATIC1111 (``extensions-builtin/Lora/networks.py``
    ``convert_diffusers_name_to_compvis``) numbers the blocks as SD 1.x's, which SDXL's transformer
    blocks happen to fit but not the first upsampler (``up_blocks_0_upsamplers_0_conv`` -> SD 1.x's
    ``output_blocks_2_1_conv``; SDXL's is ``output_blocks_2_2_conv``). ComfyUI maps both spellings.
    """
    if family != "sdxl" or not fmt.startswith(("kohya", "lycoris")):
        return {}
    diffusers_named = [n for n in names if _DIFFUSERS_UNET_NAME.match(n)]
    if not diffusers_named:
        return {}
    gaps: dict[str, str] = {}
    if fmt.startswith("kohya"):
        gaps["kohya"] = (
            f"{len(diffusers_named)} SDXL UNet module(s) use diffusers names (e.g. '{diffusers_named[0]}'), not the "
            "SGM names kohya's SDXL merge and --network_weights look up: convert the file (lorahub convert) for them"
        )
    upsampler = [n for n in diffusers_named if n.startswith("lora_unet_up_blocks_0_upsamplers_0")]
    if upsampler:
        gaps["a1111"] = (f"AUTOMATIC1111 maps '{upsampler[0]}' to the SD 1.x block, not SDXL's: that module is "
                         "skipped there (lorahub convert writes SGM names)")
    return gaps


def full_loaders(fmt: str, diffusers_loadable: bool, family: str = "unknown", modules: list[str] | None = None) -> list[str]:
    """The tools (:data:`TOOLS`) that load every module of a file of format ``fmt``.

    The UI rules come from the tools' key mappings: ComfyUI (``comfy/lora.py``
    ``model_lora_keys_unet``) names the attention modules of an SD UNet's
    diffusers layout ``unet.<block>.attn1.processor.to_q``, so ``unet.<...>.to_q``
    keys are skipped with "lora key not loaded"; kohya-layout keys are mapped
    for every module. ``tests/adapters/test_tool_layouts.py`` checks these claims
    against re-implementations of the tools' rules. Flux.1 and SD3: :func:`mmdit_loaders`.
    Other families are recognised, not checked: no tool is claimed for them.
    """
    if family in ("flux", "sd3"):
        return mmdit_loaders(fmt, diffusers_loadable, family, modules or [])
    if family not in ("sd1", "sd2", "sdxl", "unknown"):
        return []
    tools = ["diffusers"] if diffusers_loadable else []
    tools += list(_FULL_LOADERS.get(fmt, ()))
    return [t for t in TOOLS if t in tools]


def mmdit_loaders(fmt: str, diffusers_loadable: bool, family: str, modules: list[str]) -> list[str]:
    """The tools that load every module of a Flux.1/SD3 file, from its layout (``docs/formats.md``).

    - ComfyUI (``comfy/lora.py`` ``model_lora_keys_unet``/``model_lora_keys_clip``, ``comfy/lora_convert.py``):
      ``lora_unet_``/``diffusion_model.`` + the original model's paths, ``transformer.`` and OneTrainer's
      ``lora_transformer_`` + diffusers paths, ``lora_te1_``/``lora_te2_``/``lora_te3_`` and
      ``text_encoder(_2).text_model.`` CLIP keys, BFL Control LoRAs; not XLabs' ``processor`` keys, not T5 keys
      in the diffusers layout.
    - kohya sd-scripts (``networks/lora_flux.py``/``lora_sd3.py`` ``create_network_from_weights``): its own
      names only; for Flux.1 only the double/single-block modules (no ``img_in``, ``final_layer``...: its
      ``in_dims`` are not read from weights) and ``lora_te1_``/``lora_te3_``.
    AUTOMATIC1111 loads neither family; Forge is not checked, so it is not claimed.
    """
    from . import mmdit

    tools = ["diffusers"] if diffusers_loadable else []
    enc = mmdit.ENCODERS[family]
    t5 = enc["t5"] + "."
    comfy = fmt in ("kohya-lora", "kohya-dora", "comfyui", "lycoris-lokr", "lycoris-loha", "flux-control", "peft",
                    "peft-dora", "diffusers")
    if fmt in ("peft", "peft-dora", "diffusers") and any(m.startswith(t5) for m in modules):
        comfy = False
    if comfy and any(
        mmdit.targets(family, m, None, None) is None and mmdit.text_encoder_target(family, m) is None
        and mmdit.original_name(family, m) is None and mmdit.diffusers_name(family, m) is None
        for m in modules
    ):
        comfy = False
    if fmt == "flux-control" and "img_in" not in modules:
        comfy = False  # comfy/lora_convert.py convert_lora recognises a Control LoRA by its img_in (and norm scales)
    if comfy:
        tools.append("comfyui")
    if fmt == "kohya-lora" and all(m.startswith(("lora_unet_", "lora_te1_", "lora_te2_", "lora_te3_")) for m in modules):
        blocks = (r"lora_unet_(double|single)_blocks_\d+_" if family == "flux" else r"lora_unet_")
        te = ("lora_te1_", "lora_te3_") if family == "flux" else ("lora_te1_", "lora_te2_", "lora_te3_")
        if all(m.startswith(te) or re.match(blocks, m) for m in modules):
            tools.append("kohya")
    return [t for t in TOOLS if t in tools]
