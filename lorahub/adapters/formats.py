"""Key formats, module grouping, rank/alpha and base-family inference.

Everything here works from the parsed header alone (plus the few bytes of the
scalar ``.alpha`` tensors): the formats of :data:`FORMAT_NAMES` (kohya-ss/sd-scripts,
diffusers, peft, KohakuBlueleaf/LyCORIS, cloneofsimo/lora, ComfyUI, XLabs, BFL Control
LoRAs), told apart by their key names, and the base family from layer widths
(:data:`FAMILY_BY_CROSS_WIDTH`) or, for transformer (DiT) families, from module names
and widths (:mod:`lorahub.adapters.families`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from . import families as fam
from .header import SafetensorsHeader, TensorInfo, _short, read_scalars

# --------------------------------------------------------------------------- key parsing

#: Suffix -> normalised part name, longest first.
_SUFFIXES: list[tuple[str, str]] = sorted(
    [
        (".lora_down.weight", "down"),
        (".lora_up.weight", "up"),
        (".lora_mid.weight", "mid"),
        (".lora.down.weight", "down"),
        (".lora.up.weight", "up"),
        (".lora_linear_layer.down.weight", "down"),
        (".lora_linear_layer.up.weight", "up"),
        (".lora_A.weight", "down"),
        (".lora_B.weight", "up"),
        (".lora_B.bias", "up_bias"),
        (".lora_magnitude_vector", "magnitude"),
        (".lora_magnitude_vector.weight", "magnitude"),
        (".lora_embedding_A", "down"),
        (".lora_embedding_B", "up"),
        (".down.weight", "down"),
        (".up.weight", "up"),
        (".alpha", "alpha"),
        (".scale", "scale_tensor"),
        (".dora_scale", "dora"),
        (".hada_w1_a", "hada_w1_a"),
        (".hada_w1_b", "hada_w1_b"),
        (".hada_w2_a", "hada_w2_a"),
        (".hada_w2_b", "hada_w2_b"),
        (".hada_t1", "hada_t1"),
        (".hada_t2", "hada_t2"),
        (".lokr_w1", "lokr_w1"),
        (".lokr_w1_a", "lokr_w1_a"),
        (".lokr_w1_b", "lokr_w1_b"),
        (".lokr_w2", "lokr_w2"),
        (".lokr_w2_a", "lokr_w2_a"),
        (".lokr_w2_b", "lokr_w2_b"),
        (".lokr_t2", "lokr_t2"),
        (".diff", "diff"),
        (".diff_b", "diff_b"),
        (".w_norm", "w_norm"),
        (".b_norm", "b_norm"),
        (".on_input", "on_input"),
        (".oft_blocks", "oft_blocks"),
        (".oft_diag", "oft_blocks"),
        (".a1.weight", "glora_a1"),
        (".a2.weight", "glora_a2"),
        (".b1.weight", "glora_b1"),
        (".b2.weight", "glora_b2"),
    ],
    key=lambda kv: -len(kv[0]),
)

_CLONEOFSIMO = re.compile(r"^(unet|text_encoder):(\d+):(up|down)$")
_ATTNPROC = re.compile(r"^(.*\.processor\.(?:to_q|to_k|to_v|to_out)_lora)\.(down|up)\.weight$")

KOHYA_PREFIXES = {
    "lora_unet_": "unet",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te3_": "text_encoder_3",
    "lora_te_": "text_encoder",
    "lora_transformer_": "transformer",
}
DOTTED_PREFIXES = {
    "text_encoders.clip_l.": "text_encoder",
    "text_encoders.clip_g.": "text_encoder_2",
    "text_encoders.t5xxl.": "text_encoder_3",
    "unet.": "unet",
    "text_encoder.": "text_encoder",
    "text_encoder_2.": "text_encoder_2",
    "text_encoder_3.": "text_encoder_3",
    "transformer.": "transformer",
    "base_model.model.": "unknown",
    "diffusion_model.": "transformer",
}


#: The suffixes by their number of dot-separated segments, most first (a longer matching suffix has at least
#: as many; two matching suffixes are tails of one name, so the one with more segments is the longer).
_SUFFIX_BY_SEGMENTS: list[tuple[int, dict[str, str]]] = sorted(
    {n: {sfx: part for sfx, part in _SUFFIXES if sfx.count(".") == n} for n in {sfx.count(".") for sfx, _ in _SUFFIXES}}.items(),
    reverse=True,
)


@lru_cache(maxsize=1 << 16)  # the files of a library share their tensor names
def split_key(name: str) -> tuple[str, str] | None:
    """``(module, part)`` of a tensor key, or None for a key lorahub does not know (the longest suffix of
    :data:`_SUFFIXES` it ends with, after a non-empty module name)."""
    if ":" in name:
        m = _CLONEOFSIMO.match(name)
        if m:
            return f"{m.group(1)}:{m.group(2)}", m.group(3)
    if ".processor." in name:
        m = _ATTNPROC.match(name)
        if m:
            return m.group(1), m.group(2)
    for segments, table in _SUFFIX_BY_SEGMENTS:
        cut = len(name)
        for _ in range(segments):
            cut = name.rfind(".", 0, cut)
            if cut < 0:
                break
        if cut > 0:
            part = table.get(name[cut:])
            if part is not None:
                return name[:cut], part
    return None


_KOHYA_LONGEST_FIRST = sorted(KOHYA_PREFIXES, key=len, reverse=True)
_DOTTED_LONGEST_FIRST = sorted(DOTTED_PREFIXES, key=len, reverse=True)
_DIT_BLOCKS = re.compile(r"(double_blocks|single_blocks|joint_blocks)")


def component_of(module: str) -> str:
    if ":" in module:
        return "unet" if module.startswith("unet:") else "text_encoder"
    for prefix in _KOHYA_LONGEST_FIRST:
        if module.startswith(prefix):
            comp = KOHYA_PREFIXES[prefix]
            if comp == "unet" and _DIT_BLOCKS.search(module):
                return "transformer"
            return comp
    for prefix in _DOTTED_LONGEST_FIRST:
        if module.startswith(prefix):
            return DOTTED_PREFIXES[prefix]
    return "unknown"


# --------------------------------------------------------------------------- modules


@dataclass
class Module:
    name: str
    component: str
    parts: dict[str, TensorInfo] = field(default_factory=dict)
    kind: str = "lora"
    rank: int | None = None
    alpha: float | None = None
    in_features: int | None = None
    out_features: int | None = None
    conv: bool = False
    dora: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def scale(self) -> float | None:
        if self.kind == "lokr" and self.rank is None:
            return 1.0
        if self.rank:
            return (self.alpha if self.alpha is not None else float(self.rank)) / self.rank
        return None


def _dims(t: TensorInfo | None) -> tuple[int, ...]:
    return t.shape if t is not None else ()


def _flat_in(shape: tuple[int, ...]) -> int | None:
    if len(shape) < 2:
        return None
    return shape[1]


def _label(mod: Module) -> str:
    """How a problem names its module (only when there is one: the escaping costs a few microseconds)."""
    return f"module '{_short(mod.name)}'"


def _resolve_module(mod: Module) -> None:
    p = mod.parts
    if "hada_w1_a" in p or "hada_w1_b" in p or "hada_w2_a" in p or "hada_w2_b" in p:
        mod.kind = "loha"
        need = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"]
        missing = [n for n in need if n not in p]
        if missing:
            mod.problems.append(f"{_label(mod)}: LoHa tensors {', '.join(missing)} are missing")
            return
        w1a, w1b, w2a, w2b = (p[n].shape for n in need)
        if len(w1a) < 2 or len(w1b) < 2 or len(w2a) < 2 or len(w2b) < 2:
            mod.problems.append(f"{_label(mod)}: LoHa factors must be matrices")
            return
        mod.rank = w1b[0]
        if w1a[1] != w1b[0] or w2a[1] != w2b[0] or w1b[0] != w2b[0]:
            mod.problems.append(
                f"{_label(mod)}: inconsistent LoHa ranks (w1 {w1a[1]}/{w1b[0]}, w2 {w2a[1]}/{w2b[0]})"
            )
        mod.out_features, mod.in_features = w1a[0], w1b[1]
        mod.conv = "hada_t1" in p or len(w1b) > 2
    elif any(n.startswith("lokr_") for n in p):
        mod.kind = "lokr"
        sides = []
        for side in ("w1", "w2"):
            full = p.get(f"lokr_{side}")
            a, b = p.get(f"lokr_{side}_a"), p.get(f"lokr_{side}_b")
            if full is not None:
                shape = full.shape
                if len(shape) < 2:
                    mod.problems.append(f"{_label(mod)}: lokr_{side} must have at least 2 dimensions")
                    return
                sides.append((shape[0], shape[1], None, len(shape) > 2))
            elif a is not None and b is not None:
                if len(a.shape) < 2 or len(b.shape) < 2:
                    mod.problems.append(f"{_label(mod)}: lokr_{side}_a/_b must be matrices")
                    return
                if a.shape[1] != b.shape[0]:
                    mod.problems.append(
                        f"{_label(mod)}: inconsistent LoKr rank in {side} ({a.shape[1]} vs {b.shape[0]})"
                    )
                sides.append((a.shape[0], b.shape[1], b.shape[0], len(b.shape) > 2 or "lokr_t2" in p))
            else:
                have = "a" if a is not None else "b" if b is not None else None
                what = f"lokr_{side}_{'b' if have == 'a' else 'a'}" if have else f"lokr_{side}"
                mod.problems.append(f"{_label(mod)}: LoKr tensor {what} is missing")
                return
        (o1, i1, r1, _), (o2, i2, r2, conv2) = sides
        ranks = [r for r in (r1, r2) if r is not None]
        mod.rank = max(ranks) if ranks else None
        mod.out_features = o1 * o2
        mod.in_features = i1 * i2
        mod.conv = conv2
    elif "down" in p or "up" in p:
        mod.kind = "cloneofsimo" if ":" in mod.name else "lora"
        down, up = p.get("down"), p.get("up")
        if down is None or up is None:
            missing = "down (A)" if down is None else "up (B)"
            mod.problems.append(f"{_label(mod)}: has no {missing} weight to pair with")
            if down is not None and down.shape:
                mod.rank = down.shape[0]
            elif up is not None and len(up.shape) > 1:
                mod.rank = up.shape[1]
            return
        ds, us = down.shape, up.shape
        if len(ds) < 2 or len(us) < 2:
            mod.problems.append(f"{_label(mod)}: up/down weights must have at least 2 dimensions")
            return
        mod.rank = ds[0]
        if us[1] != ds[0]:
            mod.problems.append(f"{_label(mod)}: inconsistent rank: down has {ds[0]} rows, up has {us[1]} columns")
        mod.in_features, mod.out_features = ds[1], us[0]
        mod.conv = len(ds) == 4
        if "mid" in p:
            mod.conv = True
    elif "diff" in p:
        mod.kind = "full"
        s = p["diff"].shape
        if len(s) >= 2:
            mod.out_features, mod.in_features = s[0], s[1]
    elif "on_input" in p:
        mod.kind = "ia3"
    elif "oft_blocks" in p:
        mod.kind = "oft"
    elif any(n.startswith("glora_") for n in p):
        mod.kind = "glora"
    elif "w_norm" in p or "b_norm" in p:
        mod.kind = "norm"
    elif set(p) == {"scale_tensor"} and re.search(r"norm$", mod.name):
        mod.kind = "set"  # a norm's new scale (BFL Control LoRAs; ComfyUI loads it as set_weight)
    elif "alpha" in p or "dora" in p or "scale_tensor" in p:
        mod.problems.append(f"module '{_short(mod.name)}': has {', '.join(sorted(p))} but no weights")
        mod.kind = "orphan"
    mod.dora = "dora" in p or "magnitude" in p


# --------------------------------------------------------------------------- analysis

FAMILY_BY_CROSS_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl"}
FAMILY_BY_TE_WIDTH = {768: "sd1", 1024: "sd2"}

FORMAT_NAMES = {
    "kohya-lora": "kohya LoRA",
    "kohya-locon": "kohya LoCon (LoRA with conv layers)",
    "kohya-dora": "kohya DoRA",
    "diffusers": "diffusers LoRA (older lora.down/lora.up keys)",
    "diffusers-attnprocs": "diffusers LoRA (old attention-processor format)",
    "peft": "diffusers/PEFT LoRA (unet./text_encoder. prefixes, lora_A/lora_B keys)",
    "peft-dora": "PEFT DoRA (diffusers prefixes)",
    "peft-raw": "raw PEFT adapter (base_model.model. prefix)",
    "lycoris-loha": "LyCORIS LoHa",
    "lycoris-lokr": "LyCORIS LoKr",
    "lycoris-ia3": "LyCORIS (IA)^3",
    "lycoris-full": "LyCORIS full (diff) weights",
    "lycoris-oft": "LyCORIS OFT/BOFT",
    "lycoris-glora": "LyCORIS GLoRA",
    "lycoris-norm": "LyCORIS norm layers",
    "cloneofsimo": "legacy cloneofsimo lora_diffusion",
    "comfyui": "ComfyUI layout (diffusion_model.<original module path>; Flux: BFL names, as ai-toolkit writes them)",
    "xlabs": "XLabs Flux LoRA (double_blocks.N.processor.qkv_lora1/proj_lora1, lora2 for the text stream)",
    "flux-control": "BFL Flux Control LoRA (lora_A/lora_B with biases, new norm scales, a wider img_in)",
    "bare": "LoRA without a component prefix (the model's own module paths)",
    "unknown": "unknown",
}

NOT_LOADABLE_REASON = {
    "lycoris-loha": "diffusers cannot load LyCORIS LoHa files (convert to LoRA first)",
    "lycoris-lokr": "diffusers cannot load LyCORIS LoKr files (convert to LoRA first)",
    "lycoris-ia3": "diffusers cannot load LyCORIS (IA)^3 files",
    "lycoris-full": "diffusers cannot load LyCORIS full-weight files",
    "lycoris-oft": "diffusers cannot load LyCORIS OFT files",
    "lycoris-glora": "diffusers cannot load LyCORIS GLoRA files",
    "lycoris-norm": "diffusers cannot load LyCORIS norm files",
    "cloneofsimo": "legacy cloneofsimo lora_diffusion format: neither diffusers nor ComfyUI loads it",
    "peft-raw": "raw PEFT keys (base_model.model.*): pipe.load_lora_weights loads nothing; rewrite the prefix to unet.",
    "diffusers-attnprocs": "old attention-processor keys: current diffusers may not load them",
    "bare": "keys without a component prefix: diffusers' loaders only convert such keys for some models",
    "unknown": "no LoRA keys lorahub recognises",
}


@dataclass
class Analysis:
    """What the keys and shapes of one file say."""

    modules: dict[str, Module]
    unknown_keys: list[str]
    format: str
    base_family: str
    family_evidence: list[str]
    cross_attention_dim: int | None
    shape_family: str | None
    errors: list[str]
    warnings: list[str]
    #: Modules whose factor shapes do not fit the family's layer (2-D factors for a convolution, 4-D for a
    #: linear layer): diffusers (peft) refuses the whole file.
    shape_mismatches: list[str] = field(default_factory=list)
    #: Tools that miss modules because of how the file names them (tool -> why; :func:`layouts.naming_gaps`).
    naming_gaps: dict[str, str] = field(default_factory=dict)
    #: Why diffusers does not load every module of a Flux.1/SD3 file (:func:`lorahub.adapters.mmdit.diffusers_problem`).
    diffusers_problem: str | None = None
    #: Hidden width of a transformer family's modules, when they say it.
    hidden_size: int | None = None

    @property
    def diffusers_loadable(self) -> bool:
        if self.format in NOT_LOADABLE_REASON or self.shape_mismatches or self.diffusers_problem:
            return False
        return not any("mid" in m.parts for m in self.modules.values())

    @property
    def full_loaders(self) -> list[str]:
        """The tools that load every module of the file (:func:`lorahub.adapters.layouts.full_loaders`)."""
        from .layouts import full_loaders

        if self.errors or self.shape_mismatches:
            return []
        names = [n for n, m in self.modules.items() if m.kind not in ("set", "orphan")]
        return [t for t in full_loaders(self.format, self.diffusers_loadable, self.base_family, names)
                if t not in self.naming_gaps]


def analyze(header: SafetensorsHeader, *, read_alpha: bool = True) -> Analysis:
    """Group tensors into modules, detect the format and infer the base family."""
    modules: dict[str, Module] = {}
    unknown: list[str] = []
    embeddings = 0
    for name, info in header.tensors.items():
        split = split_key(name)
        if split is None:
            if re.fullmatch(r"<[^>]{1,64}>", name):  # cloneofsimo / pivotal-tuning embeddings
                embeddings += 1
                continue
            unknown.append(name)
            continue
        mod_name, part = split
        mod = modules.get(mod_name)
        if mod is None:
            mod = modules[mod_name] = Module(name=mod_name, component=component_of(mod_name))
        mod.parts[part] = info
    for mod in modules.values():
        _resolve_module(mod)

    # alpha values: kohya `.alpha` scalars (a few bytes each), else peft metadata.
    md = header.string_metadata()
    alpha_names = [m.parts["alpha"].name for m in modules.values() if "alpha" in m.parts]
    values = read_scalars(header, alpha_names) if (read_alpha and alpha_names) else {}
    peft_alpha = _peft_alphas(md)
    for mod in modules.values():
        t = mod.parts.get("alpha")
        if t is not None and t.name in values:
            a = values[t.name]
            if a != a or a in (float("inf"), float("-inf")):
                mod.problems.append(f"module '{_short(mod.name)}': alpha is {a} (loaders would scale by it)")
                a = 0.0
            elif a < 0:
                mod.problems.append(f"module '{_short(mod.name)}': alpha is negative ({a:g}): the update would be inverted")
            mod.alpha = a if a != 0 else None
        elif mod.kind in ("lora", "lokr", "loha") and peft_alpha is not None:
            mod.alpha = peft_alpha(mod)
        if mod.kind == "cloneofsimo" and mod.alpha is None and mod.rank:
            mod.alpha = float(mod.rank)

    fmt = _detect_format(header, modules, md)
    errors: list[str] = []
    warnings: list[str] = []
    for mod in modules.values():
        errors.extend(mod.problems)
    if unknown:
        shown = ", ".join(f"'{_short(k)}'" for k in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        warnings.append(f"{len(unknown)} unknown key(s): {shown}{more}")
    if fmt.startswith("kohya") or fmt.startswith("lycoris"):
        no_alpha = [m for m in modules.values() if m.kind in ("lora", "loha", "lokr") and "alpha" not in m.parts]
        if no_alpha and not (fmt == "lycoris-lokr" and all(m.rank is None for m in no_alpha)):
            warnings.append(
                f"{len(no_alpha)} module(s) have no alpha (e.g. '{_short(no_alpha[0].name)}'): loaders use alpha = rank"
            )
    if not modules and not embeddings:
        warnings.append("no adapter weights found: this does not look like a LoRA file")

    family, evidence, cross, shape_family, hidden = _infer_family(modules, fmt)
    declared = declared_family(md)
    named = fam.resolve(shape_family, declared)[0] if shape_family else (declared or family)
    problem = None
    if hidden is not None or named not in fam.UNET_FAMILIES + ("unknown",):
        _transformer_components(modules, named)
    if named in fam.MMDIT_FAMILIES:
        from .mmdit import diffusers_problem, shape_problems

        if fmt not in NOT_LOADABLE_REASON:
            problem = diffusers_problem(named, fmt, modules)
        for level, msg in shape_problems(named, modules, hidden):
            (errors if level == "error" else warnings).append(msg)
    from .layouts import naming_gaps

    gaps = naming_gaps(fmt, shape_family or declared or family, list(modules))
    warnings.extend(gaps.values())
    return Analysis(
        naming_gaps=gaps,
        diffusers_problem=problem,
        hidden_size=hidden or None,
        shape_mismatches=_shape_mismatches(modules, shape_family or declared_family(md) or family),
        modules=modules,
        unknown_keys=unknown,
        format=fmt,
        base_family=family,
        family_evidence=evidence,
        cross_attention_dim=cross,
        shape_family=shape_family,
        errors=errors,
        warnings=warnings,
    )


def _shape_mismatches(modules: dict[str, Module], family: str) -> list[str]:
    """LoRA modules whose factors are 2-D where ``family`` has a convolution, or 4-D where it has a linear layer."""
    from .layouts import conv_kernel, linear_projection

    out = []
    for m in modules.values():
        if m.kind != "lora" or "down" not in m.parts or m.problems:
            continue
        four_d = len(m.parts["down"].shape) == 4
        if not four_d and conv_kernel(family, m.name) is not None:
            out.append(f"'{_short(m.name)}' has 2-D factors, but the {family} layer is a convolution")
        elif four_d and linear_projection(family, m.name):
            out.append(f"'{_short(m.name)}' has 4-D factors, but the {family} layer is linear")
    return out


def _peft_alphas(md: dict[str, str]):  # noqa: ANN202
    raw = md.get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        conf = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(conf, dict):
        return None
    # diffusers stores {"unet.r": ..., "unet.lora_alpha": ...} or a plain LoraConfig dict.
    def pick(key: str, comp: str):  # noqa: ANN202
        for k in (f"{comp}.{key}", key):
            if k in conf:
                return conf[k]
        return None

    def alpha_for(mod: Module) -> float | None:
        comp = mod.component
        alpha = pick("lora_alpha", comp)
        patterns = pick("alpha_pattern", comp) or {}
        if isinstance(patterns, dict):
            for pat, value in patterns.items():
                if isinstance(pat, str) and pat and pat in mod.name and _finite(value) is not None:
                    alpha = value
        value = _finite(alpha)
        if pick("use_rslora", comp) and value is not None and mod.rank:
            return value * mod.rank / (mod.rank**0.5)  # effective alpha/r = alpha/sqrt(r)
        return value

    return alpha_for


def _finite(value: object) -> float | None:
    """A JSON number as a float; None for other types and numbers past float range."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except OverflowError:  # a 400-digit integer in hostile metadata
        return None
    return out if out == out and abs(out) != float("inf") else None


def _detect_format(header: SafetensorsHeader, modules: dict[str, Module], md: dict[str, str]) -> str:
    names = list(header.tensors)
    kinds = Counter(m.kind for m in modules.values())
    if kinds.get("cloneofsimo"):
        return "cloneofsimo"
    for kind, fmt in (
        ("loha", "lycoris-loha"),
        ("lokr", "lycoris-lokr"),
        ("oft", "lycoris-oft"),
        ("glora", "lycoris-glora"),
        ("full", "lycoris-full"),
        ("ia3", "lycoris-ia3"),
        ("norm", "lycoris-norm"),
    ):
        if kinds.get(kind) and kinds[kind] >= max(1, kinds.get("lora", 0)):
            return fmt
    for kind, fmt in (("loha", "lycoris-loha"), ("lokr", "lycoris-lokr")):
        if kinds.get(kind):
            return fmt
    if not kinds.get("lora"):
        return "unknown"
    # Each rule below scans the names only where its words occur somewhere in them (one search of them all:
    # most rules match none of a file's names, and a scan of an SDXL file's 3,000 names costs 0.2-0.5 ms).
    every = "\n".join(names)
    if "base_model.model." in every and any(n.startswith("base_model.model.") for n in names):
        return "peft-raw"
    if ".processor." in every and any(_ATTNPROC.match(n) for n in names):
        return "diffusers-attnprocs"
    if "_blocks." in every and any(_XLABS_KEY.search(n) for n in names):
        return "xlabs"
    if kinds.get("set") and ".lora_A.weight" in every and any(n.endswith(".lora_A.weight") for n in names):
        return "flux-control"
    if ("diffusion_model." in every or "text_encoders." in every) and any(
        n.startswith(("diffusion_model.", "model.diffusion_model.", "text_encoders.")) for n in names
    ):
        return "comfyui"
    if ".lora_A." in every:  # a word without a newline occurs in the joined names only within a name
        return "peft-dora" if "lora_magnitude_vector" in every else "peft"
    if ".lora.down." in every or "lora_linear_layer" in every:
        return "diffusers"
    if any(n.startswith(tuple(KOHYA_PREFIXES)) for n in names):
        if any(m.dora for m in modules.values()):
            return "kohya-dora"
        args = md.get("ss_network_args", "")
        conv = any(
            m.conv and re.search(r"(resnets|conv|downsamplers|upsamplers|_op$|in_layers|out_layers|skip_connection)", m.name)
            for m in modules.values()
        )
        if conv or "conv_dim" in args or '"locon"' in args:
            return "kohya-locon"
        return "kohya-lora"
    if any(n.endswith((".lora_down.weight", ".lora_up.weight")) for n in names):
        return "bare"
    return "unknown"


_XLABS_KEY = re.compile(r"(^|\.)(double|single)_blocks\.\d+\.processor\.(qkv|proj)_lora[12]?\.(down|up)\.weight$")


_CROSS_K = re.compile(r"attn2(?:[._]processor)?[._]to_[kv](?:_lora)?$")
_SGM = re.compile(r"(input_blocks_\d+_\d+_|output_blocks_\d+_\d+_|middle_block_\d+_)")


def _infer_family(
    modules: dict[str, Module], fmt: str
) -> tuple[str, list[str], int | None, str | None, int | None]:
    """Return (family, evidence, cross_attention_dim, family_from_shapes, hidden width of a transformer: 0 when
    the names are a transformer's but no module says its width, None for a UNet's)."""
    guess = fam.detect(modules)
    if guess.transformer:
        return guess.family or "unknown", guess.evidence, None, guess.family, guess.hidden or 0
    evidence: list[str] = []
    comps = Counter(m.component for m in modules.values())
    names = list(modules)
    joined = "\n".join(names)

    if comps.get("text_encoder_3"):
        evidence.append("a third (T5) text encoder")
        return "sd3", evidence, None, "sd3", None

    cross = None
    for m in modules.values():
        if m.component == "unet" and _CROSS_K.search(m.name) and m.in_features:
            cross = m.in_features
            break
    te_width = None
    for m in modules.values():
        if m.component == "text_encoder" and m.in_features and re.search(r"(q_proj|k_proj|v_proj)$", m.name):
            te_width = m.in_features
            break

    shape_family: str | None = None
    if cross in FAMILY_BY_CROSS_WIDTH:
        shape_family = FAMILY_BY_CROSS_WIDTH[cross]
        evidence.append(f"cross-attention key width {cross}")
    elif comps.get("text_encoder_2"):
        shape_family = "sdxl"
        evidence.append("two CLIP text encoders (te1 + te2)")
    elif _SGM.search(joined):
        shape_family = "sdxl"
        evidence.append("SGM UNet block names (input_blocks/output_blocks)")
    elif te_width in FAMILY_BY_TE_WIDTH:
        shape_family = FAMILY_BY_TE_WIDTH[te_width]
        evidence.append(f"text-encoder width {te_width}")
    elif cross is not None:
        evidence.append(f"cross-attention key width {cross} fits no standard family")
    elif te_width is not None:
        evidence.append(f"text-encoder width {te_width} fits no standard family")
    if fmt == "cloneofsimo" and shape_family is None:
        widths = {m.in_features for m in modules.values() if m.in_features}
        if 768 in widths:
            shape_family = "sd1"
            evidence.append("768-wide text-encoder/attention weights")
    if shape_family in ("sdxl", None):
        kolors = fam.detect_kolors(modules)
        if kolors:
            evidence.append(kolors)
            return "kolors", evidence, cross, "kolors", None
    if shape_family == "sdxl" and comps.get("text_encoder") and not comps.get("text_encoder_2") and cross != 2048:
        # SDXL files always carry both encoders when they carry one.
        evidence.append("only one text encoder, unusual for SDXL")
    return shape_family or "unknown", evidence, cross, shape_family, None


def _transformer_components(modules: dict[str, Module], family: str) -> None:
    """Components of a transformer family's modules: ``transformer`` for the denoiser (bare, ``lora_unet_``
    and ``diffusion_model.`` names too) and the diffusers pipeline's name for each text encoder (Flux's
    T5-XXL is ``text_encoder_2``, whether kohya calls it ``lora_te3_`` or OneTrainer ``lora_te2_``)."""
    from . import mmdit

    for m in modules.values():
        if family in fam.MMDIT_FAMILIES:
            key = mmdit.text_encoder_target(family, m.name)
            if key is not None:
                m.component = key.split(".", 1)[0]
                continue
        if m.component in ("unet", "unknown"):
            m.component = "transformer"


def declared_family(md: dict[str, str]) -> str | None:
    """The family the metadata declares (kohya ss_*, modelspec), or None."""
    arch = md.get("modelspec.architecture", "").lower()
    if arch:
        for prefix, family in fam.ARCHITECTURES:
            if arch.startswith(prefix):
                return family
    ver = md.get("ss_base_model_version", "").lower()
    if ver:
        if ver.startswith("sdxl"):
            return "sdxl"
        if ver.startswith("sd_v1"):
            return "sd1"
        if ver.startswith("sd_v2"):
            return "sd2"
        if ver.startswith(("sd3", "medium", "5-medium", "5-large", "sd35", "sd3.5")):
            return "sd3"
        for prefix, family in fam.BASE_VERSIONS:
            if ver.startswith(prefix):
                return family
        return None
    v2 = md.get("ss_v2")
    if v2 == "True":
        return "sd2"
    if v2 == "False":
        return "sd1"
    return None


def prediction_type(md: dict[str, str]) -> str | None:
    pt = md.get("modelspec.prediction_type")
    if pt:
        return pt
    ver = md.get("ss_base_model_version", "")
    if ver.startswith("sd_v2"):
        return "v" if ver.endswith("_v") else "epsilon"
    return None
