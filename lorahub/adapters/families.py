"""Base families: the vocabulary, and which family a transformer (DiT) adapter is for.

:data:`FAMILIES` is the one list of base-family names (``schemas/adapters.py``
``BaseFamily`` spells the same values). SD 1.x/2.x/SDXL adapters are told apart
by their UNet's widths (:mod:`lorahub.adapters.formats`); the transformer
families by their module names, in every layout they circulate in, and by the
widths of the published configs where names are shared:

======================= ============================================================== ===========================
family                  module names (any prefix: ``transformer.``,                     widths (published configs)
                        ``diffusion_model.``, ``lora_unet_``, ``lora_transformer_``)
======================= ============================================================== ===========================
``flux`` (Flux.1)       ``double_blocks.N.img_attn.qkv`` / ``single_blocks.N.linear1``  hidden 3072, qkv 3h,
                        (BFL, kohya, ComfyUI, ai-toolkit), ``single_transformer_blocks``  mlp 4h, linear1 7h
                        (diffusers), ``double_blocks.N.processor.qkv_lora1`` (XLabs)
``chroma``              Flux.1 blocks without modulation layers, plus                   as Flux.1
                        ``distilled_guidance_layer``
``sd3`` (SD3 / 3.5)     ``joint_blocks.N.{x,context}_block`` (SAI, kohya);             1536 (3 / 3.5 Medium),
                        ``transformer_blocks.N.attn.add_q_proj`` (diffusers),            2432 (3.5 Large)
                        ``attn2`` (3.5 Medium dual attention)
``qwen`` (Qwen-Image)   ``transformer_blocks.N.{img,txt}_{mlp,mod}``                    3072, 60 blocks
``hunyuanvideo``        ``double_blocks.N.img_attn_qkv``, ``img_mlp.fc1``,              3072, 20 double + 40
                        ``img_mod.linear``, ``modulation.linear``, token refiner         single blocks
``wan`` (Wan 2.x)       ``blocks.N.{self_attn,cross_attn}.{q,k,v,o}``, ``ffn.0``         1536 / 3072 / 5120
                        (original), ``blocks.N.attn1.to_q``, ``ffn.net.0.proj``
``cosmos``              ``blocks.N.self_attn.q_proj``, ``output_proj``,                  2048 (2B) / 5120 (14B)
(Cosmos Predict2,       ``mlp.layer1``, ``adaln_modulation_*`` (original),
Anima)                  ``transformer_blocks.N.norm1.linear_1`` (diffusers)
``hidream``             ``double_stream_blocks`` / ``single_stream_blocks``            2560
``lumina`` (2)          ``layers.N.attention.qkv`` / ``.attn.to_q``,                     2304 (3840 is Z-Image's,
                        ``noise_refiner``, ``context_refiner``                           not a Lumina)
``pixart`` (α, Σ)       ``transformer_blocks.N.attn1/attn2`` of width 1152;              1152
                        ``blocks.N.cross_attn.kv_linear`` (original)
``ltxv`` (LTX-Video)    ``transformer_blocks.N.attn1/attn2`` of width 2048 or 4096      2048 (2B) / 4096 (13B),
                        (Cosmos's diffusers names too: its cross-attention keys are      cross-attention keys as
                        1024 wide)                                                       wide as the hidden
``auraflow``            ``joint_transformer_blocks``, single blocks with                 3072
                        ``ff.linear_1``/``out_projection`` (diffusers),
                        ``double_layers``/``single_layers`` (original)
``kolors``              an SDXL UNet plus ChatGLM3 text-encoder modules                  cross-attention 2048,
                        (``encoder.layers.N.self_attention.query_key_value``),           ChatGLM3 4096
                        ``encoder_hid_proj``, or ``add_embedding`` 5632 wide
======================= ============================================================== ===========================

Only Flux.1 and SD3 are read for conversion, blending and previews; the other
families are named so that the registry (``inspect``, ``validate``, ``index``,
``search``) reports them instead of "unknown". Nothing here needs torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

#: Every base-family name, in the order ``--base`` lists them (``BaseFamily`` in ``schemas/adapters.py``).
FAMILIES = (
    "sd1", "sd2", "sdxl", "sd3", "flux", "chroma", "qwen", "wan", "hunyuanvideo", "hidream", "lumina",
    "pixart", "kolors", "auraflow", "ltxv", "cosmos", "unknown",
)

FAMILY_NAMES = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "sd3": "SD3",
    "flux": "Flux.1",
    "chroma": "Chroma",
    "qwen": "Qwen-Image",
    "wan": "Wan 2.x",
    "hunyuanvideo": "HunyuanVideo",
    "hidream": "HiDream-I1",
    "lumina": "Lumina",
    "pixart": "PixArt",
    "kolors": "Kolors",
    "auraflow": "AuraFlow",
    "ltxv": "LTX-Video",
    "cosmos": "Cosmos Predict2 / Anima",
    "unknown": "unknown",
}

#: Families whose denoiser is a UNet (told apart by the widths of :mod:`lorahub.adapters.formats`).
UNET_FAMILIES = ("sd1", "sd2", "sdxl", "kolors")

#: Families whose adapters lorahub reads for conversion, blending and previews (the others are recognised only).
READABLE_FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux", "unknown")

#: The transformer families lorahub converts between layouts (fused qkv <-> split q/k/v).
MMDIT_FAMILIES = ("flux", "sd3")

#: Widths of the published configs (hidden size = attention heads x head dim).
FLUX1_HIDDEN = 3072  # black-forest-labs/FLUX.1-dev transformer/config.json: 24 heads x 128
SD3_HIDDEN = {1536: "SD3 / 3.5 Medium (24 heads x 64)", 2432: "SD 3.5 Large (38 heads x 64)"}


def family_name(family: str | None) -> str:
    return FAMILY_NAMES.get(family or "unknown", str(family))


#: Families a file's shapes cannot tell from the one its metadata declares (same modules and widths).
_LOOKALIKES = {("flux", "chroma"), ("sdxl", "kolors")}


def resolve(shape_family: str | None, declared: str | None) -> tuple[str | None, str | None]:
    """(family, evidence note) from the family the shapes say and the one the metadata declares.

    Chroma's blocks are Flux.1's and a Kolors UNet is SDXL's: a file whose shapes say flux (sdxl) and whose
    metadata declares chroma (kolors) is the latter. Otherwise the shapes win.
    """
    if shape_family and declared and (shape_family, declared) in _LOOKALIKES:
        return declared, f"{family_name(shape_family)}-shaped modules; the metadata declares {family_name(declared)}"
    return shape_family or declared, None


def disagree(shape_family: str | None, declared: str | None) -> bool:
    """Whether the metadata's family contradicts the shapes' (look-alike families do not)."""
    return bool(shape_family and declared and shape_family != declared and (shape_family, declared) not in _LOOKALIKES)


class _Mod(Protocol):  # the parts of formats.Module this module reads
    name: str
    component: str
    in_features: int | None
    out_features: int | None


@dataclass
class Guess:
    """A transformer family guess: ``family`` None when the names are no DiT's, or not conclusive."""

    family: str | None = None
    evidence: list[str] = field(default_factory=list)
    #: The names are a transformer's (so the UNet width rules must not run), conclusive or not.
    transformer: bool = False
    #: Hidden width read from the modules, when one says it.
    hidden: int | None = None


_S = r"[._]"
#: Prefixes of the layouts, stripped before the names are matched (longest first).
_PREFIXES = (
    "model.diffusion_model.", "base_model.model.", "diffusion_model.", "transformer.", "lora_transformer_",
    "lora_unet_", "lycoris_", "unet.",
)


def strip_prefix(name: str) -> str:
    for p in _PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace("S", _S))


# ---------------------------------------------------------------------------------------------- signatures

_BFL_BLOCKS = _rx(r"^(double|single)S?blocksS\d+S")
_BFL_FLUX = _rx(r"^(doubleS?blocksS\d+S(img|txt)S(attnS(qkv|proj)|mlpS[02]|modSlin)|singleS?blocksS\d+S(linear[12]|modulationSlin))$")
_HUNYUAN = _rx(
    r"^(doubleS?blocksS\d+S(img|txt)S(mlpSfc[12]|modSlinear)|singleS?blocksS\d+SmodulationSlinear"
    r"|txt_inS(individual_token_refiner|input_embedder|c_embedder|t_embedder))"
)
_HUNYUAN_DOTTED = re.compile(r"^double_blocks\.\d+\.(img|txt)_attn_(qkv|proj)$")
_HUNYUAN_DIFFUSERS = _rx(r"^context_embedderStoken_refiner|^x_embedderSproj$")
_XLABS = _rx(r"^(double|single)S?blocksS\d+SprocessorS(qkv|proj)_lora[12]?$")
_CHROMA = _rx(r"^distilled_guidance_layerS")
_SINGLE_DIFFUSERS = _rx(r"^single_transformer_blocksS\d+S")
_JOINT = _rx(r"^joint_blocksS\d+S(x_block|context_block)S")
_MMDIT_DIFFUSERS = _rx(r"^transformer_blocksS\d+SattnS(add_[qkv]_proj|to_add_out)$")
_DUAL_ATTN = _rx(r"^transformer_blocksS\d+Sattn2S(to_[qkv]|to_outS0)$")
_QWEN = _rx(r"^transformer_blocksS\d+S(img|txt)_(mlp|mod)S")
_WAN = _rx(
    r"^blocksS\d+S((self_attn|cross_attn)S[qkvo]|cross_attnS[kv]_img|ffnS[02]|attn[12]S(to_[qkv]|to_outS0)"
    r"|attn2Sadd_[kv]_proj|ffnSnetS0Sproj|ffnSnetS2)$|^condition_embedderS"
)
_COSMOS = _rx(
    r"^blocksS\d+S((self_attn|cross_attn)S(q_proj|k_proj|v_proj|output_proj)|mlpSlayer[12]"
    r"|adaln_modulation_(self_attn|cross_attn|mlp))|^transformer_blocksS\d+Snorm[123]Slinear_[12]$"
)
_HIDREAM = _rx(r"^(double|single)_stream_blocksS\d+S")
_LUMINA = _rx(
    r"^(layers|noise_refiner|context_refiner)S\d+S(attentionS(qkv|out|to_[qkv]|to_outS0)|attnSto_[qkv]"
    r"|feed_forwardS(w[123]|linear_[123])|adaLN_modulationS[01]|norm1Slinear)$"
)
_ATTN12 = _rx(r"^transformer_blocksS\d+Sattn[12]S(to_[qkv]|to_outS0)$")
_PIXART_ORIG = _rx(r"^blocksS\d+S(attnS(qkv|proj)|cross_attnS(q_linear|kv_linear|proj)|mlpSfc[12])$")
_AURAFLOW = _rx(
    r"^joint_transformer_blocksS\d+S|^(double|single)_layersS\d+S"
    r"|^single_transformer_blocksS\d+S(ffS(linear_[12]|out_projection)|norm1Slinear|attnSto_outS0)$"
)
_CHATGLM = _rx(r"encoderSlayersS\d+S(self_attentionS(query_key_value|dense)|mlpSdense_(h_to_4h|4h_to_h))$")
_KOLORS_UNET = _rx(r"(^|S)encoder_hid_proj$")
_ADD_EMBEDDING = _rx(r"(^|S)add_embeddingSlinear_1$")
_BLOCK_INDEX = re.compile(r"(?:^|[._])(double_blocks|single_blocks|transformer_blocks|single_transformer_blocks"
                          r"|joint_blocks|blocks|layers)[._](\d+)[._]")


def _matches(names: list[str], rx: re.Pattern[str]) -> list[str]:
    return [n for n in names if rx.search(n)]


def _max_indices(names: list[str]) -> dict[str, int]:
    """The highest index of each kind of numbered block in ``names`` (one pass)."""
    best: dict[str, int] = {}
    for n in names:
        for m in _BLOCK_INDEX.finditer(n):
            block, i = m.group(1), int(m.group(2))
            if i > best.get(block, -1):
                best[block] = i
    return best


def _hidden(mods: Mapping[str, _Mod], rx: re.Pattern[str]) -> int | None:
    """The input width of the first module whose bare name matches ``rx`` (sorted, so stable)."""
    for name in sorted(mods):
        m = mods[name]
        if m.in_features and rx.search(strip_prefix(name)):
            return int(m.in_features)
    return None


_MMDIT_QKV = _rx(r"^transformer_blocksS\d+SattnSto_[qkv]$")
#: Every pattern :func:`detect` looks for in the bare names, as one: a name that matches none of them is not
#: matched against each (most names of a UNet's adapter match none).
_SIGNATURES = (
    _HIDREAM, _AURAFLOW, _COSMOS, _WAN, _LUMINA, _PIXART_ORIG, _QWEN, _CHROMA, _HUNYUAN, _HUNYUAN_DOTTED,
    _HUNYUAN_DIFFUSERS, _BFL_BLOCKS, _SINGLE_DIFFUSERS, _XLABS, _JOINT, _MMDIT_DIFFUSERS, _MMDIT_QKV, _DUAL_ATTN,
    _ATTN12,
)
_ANY_SIGNATURE = re.compile("|".join(f"(?:{rx.pattern})" for rx in _SIGNATURES))

_QKV_IN = _rx(r"(attnS(qkv|to_q)|attn1Sto_q|attentionS(qkv|to_q)|self_attnS(q|q_proj)|linear1)$")


def detect(modules: Mapping[str, _Mod]) -> Guess:
    """The transformer family of an adapter's modules (names and shapes), or ``Guess(None)`` for a UNet's."""
    mods = {n: m for n, m in modules.items() if not m.component.startswith("text_encoder")}
    names = sorted(strip_prefix(n) for n in mods)
    signed = [n for n in names if _ANY_SIGNATURE.search(n)]  # what any signature below can match
    ev: list[str] = []

    def out(family: str | None, *why: str, hidden: int | None = None) -> Guess:
        return Guess(family, ev + list(why), True, hidden)

    if not names:
        return Guess()
    if _matches(signed, _HIDREAM):
        return out("hidream", "HiDream double/single stream blocks", hidden=_hidden(mods, _QKV_IN))
    if _matches(signed, _AURAFLOW):
        return out("auraflow", "AuraFlow joint/single transformer blocks")
    if _matches(signed, _COSMOS):
        return out("cosmos", "Cosmos Predict2 blocks (self_attn.q_proj/output_proj, mlp.layer1, adaln_modulation)",
                   hidden=_hidden(mods, _QKV_IN))
    if _matches(signed, _WAN):
        return out("wan", "Wan blocks (self_attn/cross_attn q/k/v/o, ffn)", hidden=_hidden(mods, _QKV_IN))
    lumina = _matches(signed, _LUMINA)
    if lumina:
        h = _hidden(mods, _QKV_IN)
        if h == 3840:
            return out(None, "NextDiT layers of width 3840 (Z-Image's, not a Lumina)", hidden=h)
        return out("lumina", "Lumina NextDiT layers (attention, feed_forward, noise/context refiners)"
                   + (f" of width {h}" if h else ""), hidden=h)
    if _matches(signed, _PIXART_ORIG):
        return out("pixart", "PixArt blocks (attn.qkv, cross_attn.q_linear/kv_linear)", hidden=_hidden(mods, _QKV_IN))
    if _matches(signed, _QWEN):
        return out("qwen", "Qwen-Image transformer blocks (img_mlp/txt_mlp/img_mod/txt_mod)",
                   hidden=_hidden(mods, _QKV_IN))

    if _matches(signed, _CHROMA):
        return out("chroma", "Chroma's distilled_guidance_layer (Flux.1-schnell's blocks without modulation layers)",
                   hidden=_hidden(mods, _QKV_IN))
    raw = sorted(mods)
    hunyuan = _matches(signed, _HUNYUAN) + [n for n in raw if signed and _HUNYUAN_DOTTED.search(strip_prefix(n))]
    hunyuan += _matches(signed, _HUNYUAN_DIFFUSERS)
    bfl = _matches(signed, _BFL_BLOCKS)
    single = _matches(signed, _SINGLE_DIFFUSERS)
    maxima = _max_indices(names)
    dbl_max, sgl_max = maxima.get("double_blocks"), maxima.get("single_blocks")
    sgl_diff_max = maxima.get("single_transformer_blocks")
    tb_max = maxima.get("transformer_blocks")
    if hunyuan or (dbl_max is not None and dbl_max >= 19) or (sgl_max is not None and sgl_max >= 38) or (
        single and ((sgl_diff_max or 0) >= 38 or (tb_max or 0) >= 19)
    ):
        why = (f"HunyuanVideo block names ('{hunyuan[0]}')" if hunyuan
               else "more blocks than Flux.1 has (19 double, 38 single): HunyuanVideo has 20 and 40")
        return out("hunyuanvideo", why, hidden=_hidden(mods, _QKV_IN))
    if bfl or single or _matches(signed, _XLABS):
        h = _hidden(mods, _QKV_IN)
        flux2 = _flux2_shapes(mods)
        if flux2:
            return out(None, flux2, hidden=h)
        return out("flux", "Flux.1 transformer blocks (double_blocks/single_blocks)" + (f", hidden {h}" if h else ""),
                   hidden=h)
    if _matches(signed, _JOINT):
        return out("sd3", "SD3 joint blocks (x_block/context_block)", hidden=_hidden(mods, _QKV_IN))
    if _matches(signed, _MMDIT_DIFFUSERS) or (
        _matches(signed, _MMDIT_QKV) and not _matches(signed, _ATTN12)
    ):
        h = _hidden(mods, _rx(r"^transformer_blocksS\d+SattnS(to_[qkv]|add_[qkv]_proj)$"))
        if _matches(signed, _DUAL_ATTN):
            return out("sd3", "SD 3.5 Medium dual attention (attn2) in joint blocks", hidden=h)
        if h in SD3_HIDDEN:
            return out("sd3", f"joint attention blocks of width {h}: {SD3_HIDDEN[h]}", hidden=h)
        if tb_max is not None and tb_max >= 20 and h == FLUX1_HIDDEN:
            return out("qwen", f"joint attention block {tb_max} of width 3072: more than Flux.1's 19 double "
                       "blocks and HunyuanVideo's 20 (Qwen-Image has 60)", hidden=h)
        if tb_max is not None and tb_max >= 19 and h != FLUX1_HIDDEN:
            return out("sd3", f"joint attention block {tb_max}: more than Flux.1's 19 double blocks", hidden=h)
        prefixed = any(n.startswith(("transformer.", "lora_transformer_", "lycoris_", "base_model.model.")) for n in raw)
        if h == FLUX1_HIDDEN and not prefixed:
            return out("qwen", "joint attention blocks of width 3072 named without the transformer. prefix, as "
                       "Qwen-Image trainers write them (Flux.1 files in diffusers names carry it)", hidden=h)
        if h == FLUX1_HIDDEN:
            return out("flux", "joint attention blocks of width 3072 (Flux.1's; Qwen-Image's too, but its "
                       "files also name img_mlp/txt_mlp)", hidden=h)
        return out(None, "joint attention blocks (Flux.1 or SD3)"
                   + (f" of width {h}, which neither published config has" if h else ""), hidden=h)
    attn12 = _matches(signed, _ATTN12)
    if attn12:
        h = _hidden(mods, _rx(r"^transformer_blocksS\d+Sattn1Sto_q$"))
        cross = _hidden(mods, _rx(r"^transformer_blocksS\d+Sattn2Sto_[kv]$"))
        if h == 2048 and cross == 1024:
            return out("cosmos", "attn1/attn2 transformer blocks of width 2048 with 1024-wide cross-attention keys "
                       "(Cosmos Predict2 2B; LTX-Video's are 2048)", hidden=h)
        if h == 1152:
            return out("pixart", "attn1/attn2 transformer blocks of width 1152 (PixArt-α/Σ)", hidden=h)
        if h in (2048, 4096):
            return out("ltxv", f"attn1/attn2 transformer blocks of width {h} (LTX-Video {'2B' if h == 2048 else '13B'})",
                       hidden=h)
        return out(None, "attn1/attn2 transformer blocks (PixArt or LTX-Video)"
                   + (f" of width {h}, which neither published config has" if h else ""), hidden=h)
    return Guess()


def _flux2_shapes(mods: Mapping[str, _Mod]) -> str | None:
    """Flux.2's BFL blocks reuse Flux.1's names with other ratios (MLP 3x hidden, SwiGLU): not a Flux.1 file."""
    for name in sorted(mods):
        m = mods[name]
        bare = strip_prefix(name)
        if not (m.in_features and m.out_features):
            continue
        if re.search(r"single_?blocks[._]\d+[._]linear1$", bare) and m.out_features == 9 * m.in_features:
            return f"'{bare}' is 9x its input wide (Flux.2's linear1; Flux.1's is 7x)"
        if re.search(r"double_?blocks[._]\d+[._]img_mlp[._]0$", bare) and m.out_features == 6 * m.in_features:
            return f"'{bare}' is 6x its input wide (Flux.2's SwiGLU MLP; Flux.1's is 4x)"
    return None


def detect_kolors(modules: Mapping[str, _Mod]) -> str | None:
    """Evidence that an SDXL-shaped adapter is for Kolors (SDXL UNet, ChatGLM3 text encoder), else None."""
    for name in sorted(modules):
        if "encoder" not in name and "add_embedding" not in name:  # each pattern below needs one of them
            continue
        m = modules[name]
        if _CHATGLM.search(name):
            return f"ChatGLM3 text-encoder modules ('{name}')"
        bare = strip_prefix(name)
        if _KOLORS_UNET.search(bare):
            return "encoder_hid_proj (Kolors projects ChatGLM3's 4096-wide states to 2048)"
        if _ADD_EMBEDDING.search(bare) and m.in_features == 5632:
            return "add_embedding 5632 wide (Kolors: 4096 + 6 x 256; SDXL's is 2816)"
    return None


#: ``modelspec.architecture`` prefixes -> family, longest first (``sai_model_spec``; trainers add their own).
ARCHITECTURES = (
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v1", "sd1"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-3", "sd3"),
    ("flux-2", None),
    ("flux.2", None),
    ("flux", "flux"),
    ("chroma", "chroma"),
    ("qwen-image", "qwen"),
    ("wan", "wan"),
    ("hunyuan-video", "hunyuanvideo"),
    ("hunyuanvideo", "hunyuanvideo"),
    ("hidream", "hidream"),
    ("lumina", "lumina"),
    ("pixart", "pixart"),
    ("kolors", "kolors"),
    ("auraflow", "auraflow"),
    ("ltx", "ltxv"),
    ("cosmos", "cosmos"),
    ("anima", "cosmos"),
)

#: kohya/musubi ``ss_base_model_version`` prefixes -> family (after the SD ones formats.declared_family reads).
BASE_VERSIONS = (
    ("flux2", None),
    ("flux", "flux"),
    ("chroma", "chroma"),
    ("qwen", "qwen"),
    ("wan", "wan"),
    ("hunyuan_video", "hunyuanvideo"),
    ("hunyuanvideo", "hunyuanvideo"),
    ("hidream", "hidream"),
    ("lumina", "lumina"),
    ("anima", "cosmos"),
    ("cosmos", "cosmos"),
)


# ---------------------------------------------------------------------------------------------- base-model labels

#: Civitai's ``baseModel`` label of each family (the names of Civitai's ``BaseModel`` enum), when nothing
#: names the base more precisely: the Civitai-compatible API of ``lorahub serve`` answers with them and
#: ``lorahub resolve`` reads them back (:func:`family_from_label`).
CIVITAI_BASE_MODELS = {
    "sd1": "SD 1.5",
    "sd2": "SD 2.1",
    "sdxl": "SDXL 1.0",
    "sd3": "SD 3.5",
    "flux": "Flux.1 D",
    "chroma": "Chroma",
    "qwen": "Qwen",
    "wan": "Wan Video",
    "hunyuanvideo": "Hunyuan Video",
    "hidream": "HiDream",
    "lumina": "Lumina",
    "pixart": "PixArt E",
    "kolors": "Kolors",
    "auraflow": "AuraFlow",
    "ltxv": "LTXV",
    "cosmos": "Cosmos",
    "unknown": "Other",
}

#: More precise labels, by a word of the base model a card or a record names (lower case, without
#: spaces, dashes or underscores), per family; the first match wins. Pony, Illustrious and NoobAI are
#: SDXL underneath, which only such a label tells.
_REFINED_LABELS: dict[str, tuple[tuple[str, str], ...]] = {
    "sdxl": (("pony", "Pony"), ("illustrious", "Illustrious"), ("noob", "NoobAI"), ("turbo", "SDXL Turbo"),
             ("lightning", "SDXL Lightning")),
    "sd1": (("1.4", "SD 1.4"), ("v14", "SD 1.4"), ("inpaint", "SD 1.5")),
    "sd2": (("2.0", "SD 2.0"), ("v20", "SD 2.0")),
    "sd3": (("3.5large", "SD 3.5 Large"), ("35large", "SD 3.5 Large"), ("3.5medium", "SD 3.5 Medium"),
            ("35medium", "SD 3.5 Medium"), ("3medium", "SD 3"), ("sd3medium", "SD 3")),
    "flux": (("schnell", "Flux.1 S"), ("kontext", "Flux.1 Kontext"), ("krea", "Flux.1 Krea")),
    "pixart": (("alpha", "PixArt a"), ("xl2", "PixArt a"), ("sigma", "PixArt E")),
}

#: Every label :func:`civitai_base_model` answers, lower case -> as Civitai spells it.
CIVITAI_LABELS = {label.lower(): label for label in [*CIVITAI_BASE_MODELS.values(),
                                                      *(lab for refs in _REFINED_LABELS.values() for _, lab in refs)]}


def _compact(label: str) -> str:
    return "".join(label.lower().replace("_", " ").replace("-", " ").split())


def civitai_base_model(family: str | None, label: str | None = None) -> str:
    """Civitai's ``baseModel`` label of an adapter of ``family``, refined by the base model its card or record
    names (``label``: ``Pony``, ``stabilityai/stable-diffusion-3.5-large``, Civitai's own ``SD 1.5``...).

    A label that is already Civitai's and agrees with the family is kept; a label of another family than
    the weights say is ignored (the weights decide); ``family`` unknown takes the label's family."""
    family = family if family in CIVITAI_BASE_MODELS else "unknown"
    if label and family == "unknown":
        family = family_from_label(label)
    if label:
        known = CIVITAI_LABELS.get(" ".join(label.split()).lower())
        if known and family_from_label(known) == family and family != "unknown":
            return known
        compact = _compact(label)
        for word, refined in _REFINED_LABELS.get(family, ()):
            if word in compact:
                return refined
    return CIVITAI_BASE_MODELS[family]


def family_from_label(label: str | None) -> str:
    """A base-model label (Civitai ``baseModel``, a card's base model...) -> base family.

    ``SD 1.4``/``SD 1.5``... -> sd1; ``SD 2.x`` -> sd2; ``SDXL ...``, Pony,
    Illustrious, NoobAI (SDXL underneath) -> sdxl; ``SD 3...`` -> sd3;
    ``Flux.1 ...`` (Kontext too) -> flux (``Flux.2`` is another model: unknown); ``Chroma``, ``Qwen``,
    ``Wan Video ...``, ``Hunyuan Video``, ``HiDream``, ``Lumina``, ``PixArt α/Σ``, ``Kolors``,
    ``AuraFlow``, ``LTXV``, ``Cosmos``/``Anima`` -> their families;
    anything else (``Hunyuan 1`` is HunyuanDiT) -> unknown (the label is kept beside it).
    """
    if not label:
        return "unknown"
    s = " ".join(label.lower().replace("_", " ").split())
    compact = s.replace(" ", "").replace("-", "")
    if compact.startswith(("sdxl", "pony", "illustrious", "noobai")) or "stable-diffusion-xl" in s:
        return "sdxl"
    if compact.startswith(("sd1", "sdv1")) or "stable-diffusion-v1" in s:
        return "sd1"
    if compact.startswith(("sd2", "sdv2")) or "stable-diffusion-v2" in s:
        return "sd2"
    if compact.startswith(("sd3", "sdv3")) or "stable-diffusion-3" in s:
        return "sd3"
    if compact.startswith(("flux.2", "flux2")):
        return "unknown"
    for prefix, family in (
        ("flux", "flux"), ("chroma", "chroma"), ("qwen", "qwen"), ("wan", "wan"), ("hunyuanvideo", "hunyuanvideo"),
        ("hidream", "hidream"), ("lumina", "lumina"), ("pixart", "pixart"), ("kolors", "kolors"),
        ("auraflow", "auraflow"), ("ltx", "ltxv"), ("cosmos", "cosmos"), ("anima", "cosmos"),
    ):
        if compact.startswith(prefix):
            return family
    return "unknown"
