"""The key layouts lorahub writes, which tool loads which, and the module shapes of the base families.

lorahub writes adapters in two layouts (``docs/formats.md``):

- ``kohya``: ``lora_unet_<module path, dots as _>.lora_down.weight`` /
  ``.lora_up.weight`` / ``.alpha`` and ``lora_te_text_model_...`` (SDXL:
  ``lora_te1_``/``lora_te2_``), as kohya-ss/sd-scripts ``networks/lora.py``
  names them. AUTOMATIC1111/Forge, ComfyUI and kohya load it fully, and
  diffusers converts it on load.
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

#: Families whose modules lorahub can name in the kohya layout. UNets: diffusers paths, dots as ``_``
#: (kohya converts SDXL's diffusers names to its SGM names itself, ``networks/lora.py``
#: ``convert_diffusers_to_sai_if_needed``); an adapter of unknown family with one text encoder is
#: named as SD 1.x/2.x ones are. Flux.1 and SD3: the original model's paths with q/k/v fused
#: (:func:`lorahub.adapters.mmdit.kohya_modules`, kohya ``networks/lora_flux.py`` / ``lora_sd3.py``).
KOHYA_FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux", "unknown")

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
    if family in ("sd3", "flux"):
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


def kohya_name(key: str, family: str | None) -> str:
    """The kohya module name of a canonical key (``unet.<path>``, ``text_encoder.text_model.<path>``).

    ``unet.down_blocks.1.attentions.0.proj_in`` -> ``lora_unet_down_blocks_1_attentions_0_proj_in``;
    ``text_encoder.text_model.encoder.layers.0.self_attn.q_proj`` ->
    ``lora_te_text_model_encoder_layers_0_self_attn_q_proj`` (SDXL: ``lora_te1_``,
    and ``lora_te2_`` for ``text_encoder_2``).
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
