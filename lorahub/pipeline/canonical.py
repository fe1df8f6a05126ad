"""Any supported adapter file as one canonical, in-memory LoRA (needs torch).

Whatever the file's format (kohya/A1111 LoRA and LoCon, diffusers, prefixed or
raw peft, old attention-processor keys, LyCORIS LoHa/LoKr/full), lorahub reads
it into a :class:`CanonicalLora`:

- module keys are diffusers module paths with the component in front:
  ``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``,
  ``text_encoder.text_model.encoder.layers.0.self_attn.q_proj``,
  ``text_encoder_2.text_model...`` (SDXL); Flux.1 and SD3:
  ``transformer.transformer_blocks.0.attn.to_q`` with q/k/v split as diffusers
  splits them, whatever the file's layout (kohya, ComfyUI/BFL, XLabs, ai-toolkit,
  OneTrainer; :mod:`lorahub.pipeline.fused` says which conversions diffusers'
  own converters do), and the text encoders as the pipelines name them (Flux.1's
  T5-XXL is ``text_encoder_2``, SD3's ``text_encoder_3``);
- every module is a pair of factors ``B @ A`` with the file's ``alpha / rank``
  (rsLoRA: ``alpha / sqrt(rank)``; LoKr with two full factors: 1) already
  folded into ``B``. A module loaded with ``lora_alpha == r`` therefore acts
  exactly as the file says, whatever rank it is padded to or swapped with
  (peft keeps a layer's first ``r``/``lora_alpha`` across swaps: peft#3581,
  #3738; see :mod:`lorahub.pipeline.live`);
- LyCORIS modules are turned into exact LoRA factors (Khatri-Rao for LoHa,
  Kronecker for LoKr, the Tucker core for LoCon ``lora_mid``) and re-factored
  by SVD at the requested rank; :attr:`CanonicalLora.conversion` reports the
  relative approximation error.

Refused with :class:`~lorahub.errors.AdapterCompatibilityError`: the legacy
cloneofsimo format (modules known only by index), DoRA (the magnitude vector
has another normalisation axis than peft), LyCORIS (IA)^3/OFT/GLoRA/norm,
Tucker-decomposed LoHa/LoKr, BFL Flux Control LoRAs (more than a LoRA) and the
families lorahub only recognises (Qwen-Image, Wan, ...).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..adapters.families import FAMILY_NAMES as _FAMILY_NAMES
from ..adapters.families import MMDIT_FAMILIES, READABLE_FAMILIES, family_name
from ..errors import AdapterCompatibilityError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from lorahub.schemas.adapters import InspectReport

    from .lowrank import Factored

#: The rank LyCORIS modules are re-factored to when the caller does not choose one.
DEFAULT_CONVERT_RANK = 32

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")

_KOHYA_COMPONENT = (
    ("lora_unet_", "unet"),
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te_", "text_encoder"),
)
_DOTTED_COMPONENT = (
    ("text_encoder_2.", "text_encoder_2"),
    ("text_encoder.", "text_encoder"),
    ("unet.", "unet"),
    ("base_model.model.", "unet"),  # a raw peft folder: pipe.load_lora_weights would load nothing
)

REFUSED = {
    "cloneofsimo": (
        "the legacy cloneofsimo lora_diffusion format names modules only by index (unet:N:up), so neither "
        "diffusers nor lorahub can tell which weights it changes",
        "convert it with the lora_diffusion tools of its time, or use a kohya/diffusers version of the adapter",
    ),
    "lycoris-ia3": ("LyCORIS (IA)^3 adapters scale activations and cannot be expressed as a LoRA", None),
    "lycoris-oft": ("LyCORIS OFT/BOFT adapters rotate weights and cannot be expressed as a LoRA", None),
    "lycoris-glora": ("LyCORIS GLoRA adapters are not supported", None),
    "lycoris-norm": ("LyCORIS norm-layer adapters are not supported", None),
    "kohya-dora": (
        "DoRA adapters need their magnitude vectors, which diffusers drops for kohya files "
        "(different normalisation axis than peft)",
        "use a plain LoRA version of the adapter",
    ),
    "peft-dora": ("DoRA adapters (lora_magnitude_vector) are not supported by the live pipeline", None),
    "flux-control": (
        "a Flux Control LoRA also adds biases, sets norm scales and widens img_in to take a control image: "
        "it is no plain LoRA of Flux.1 and cannot be rewritten as one",
        "load it as it is with diffusers' FluxControlPipeline or ComfyUI",
    ),
    "unknown": ("no LoRA keys lorahub recognises", None),
}

FAMILY_NAMES: dict[str | None, str] = {**_FAMILY_NAMES, None: "unknown"}


@dataclass
class Conversion:
    """How a LyCORIS file became a LoRA."""

    source_format: str
    rank: int
    modules: int
    relative_error: float  # over all converted modules (Frobenius)
    max_module_error: float
    exact_rank: int  # the largest exact rank before truncation

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_format": self.source_format,
            "rank": self.rank,
            "modules": self.modules,
            "relative_error": self.relative_error,
            "max_module_error": self.max_module_error,
            "exact_rank": self.exact_rank,
        }

    def summary(self) -> str:
        return (
            f"converted {self.modules} {self.source_format} module(s) to LoRA rank {self.rank} by SVD "
            f"(exact rank up to {self.exact_rank}); relative error {self.relative_error:.2%} "
            f"(worst module {self.max_module_error:.2%})"
        )


@dataclass
class CanonicalLora:
    """One adapter as factors keyed by canonical module keys (see the module docstring)."""

    path: str
    format: str
    family: str
    cross_attention_dim: int | None
    modules: dict[str, Factored]
    title: str | None = None
    trigger_words: list[str] = field(default_factory=list)
    conversion: Conversion | None = None
    unmapped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    report: InspectReport | None = None

    @property
    def name(self) -> str:
        return self.title or Path(self.path).stem

    def components(self) -> set[str]:
        return {key.split(".", 1)[0] for key in self.modules}

    def keys_of(self, component: str) -> list[str]:
        prefix = component + "."
        return sorted(k for k in self.modules if k.startswith(prefix))

    def max_rank(self, component: str | None = None) -> int:
        ranks = [f.rank for k, f in self.modules.items() if component is None or k.startswith(component + ".")]
        return max(ranks) if ranks else 0

    def records(self, fmt: str, dtype: str = "float16") -> dict[str, tuple[str, list[int], bytes]]:
        """The tensors of the adapter in the layout ``fmt`` (``kohya`` or ``diffusers``), ready for
        :func:`lorahub.adapters.writer.write_adapter`.

        Every module's ``alpha / rank`` is already folded into ``B``, so the diffusers
        layout (which has no alpha tensor) needs none: every loader applies ``B @ A`` at
        strength 1 (docs/formats.md). The kohya layout writes one ``.alpha`` for every
        module, :meth:`kohya_alpha` (the most common rank), and scales the ``up`` of a
        module of another rank ``r`` by ``r / alpha``: diffusers' kohya converter
        mis-keys per-module alphas (its ``alpha_pattern`` matches no module, so every
        module would get the most common alpha), while one alpha for all is exact in
        every loader. Conv modules are written 4-D (``[r, in, kh, kw]`` / ``[out, r, 1, 1]``).
        """
        import torch

        from ..adapters.layouts import WRITE_FORMATS, kohya_name

        if fmt not in WRITE_FORMATS:
            raise ValueError(f"unknown layout {fmt!r}")
        torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]

        def rec(t: Any, dt: Any = torch_dtype) -> tuple[str, list[int], bytes]:
            t = t.detach().to("cpu", dt).contiguous()
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            c = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[dt]
            return c, list(t.shape), raw

        def alpha(rank: int) -> tuple[str, list[int], bytes]:
            # in the weights' dtype (as kohya saves it) unless that dtype cannot hold the rank exactly
            exact = float(torch.tensor(float(rank)).to(torch_dtype)) == float(rank)
            return rec(torch.tensor(float(rank)), torch_dtype if exact else torch.float32)

        out: dict[str, tuple[str, list[int], bytes]] = {}
        modules = self.modules
        if self.family in MMDIT_FAMILIES:
            modules = self._mmdit_modules(fmt)
        common = self.kohya_alpha(modules)
        for key, f in sorted(modules.items()):
            a, b = f.weights()
            if fmt == "kohya":
                name = key if self.family in MMDIT_FAMILIES else kohya_name(key, self.family)
                out[f"{name}.lora_down.weight"] = rec(a)
                out[f"{name}.lora_up.weight"] = rec(b if f.rank == common else b * (f.rank / common))
                out[f"{name}.alpha"] = alpha(common)
            else:
                out[f"{key}.lora_A.weight"] = rec(a)
                out[f"{key}.lora_B.weight"] = rec(b)
        return out

    def _mmdit_modules(self, fmt: str) -> dict[str, Factored]:
        """Flux.1/SD3 modules as ``fmt`` names them: kohya, fused (:func:`lorahub.pipeline.fused.kohya_factors`);
        diffusers, as they are, refusing T5-XXL modules (diffusers' pipelines load no LoRA into T5)."""
        from ..adapters.mmdit import ENCODERS
        from .fused import kohya_factors

        if fmt == "kohya":
            try:
                return kohya_factors(self.family, self.modules)
            except ValueError as exc:
                raise UsageError(f"{self.path}: {exc}") from None
        t5 = ENCODERS[self.family]["t5"] + "."
        left = [k for k in self.modules if k.startswith(t5)]
        if left:
            pipe = "FluxPipeline" if self.family == "flux" else "StableDiffusion3Pipeline"
            raise UsageError(
                f"{self.path}: the adapter changes the T5-XXL text encoder ({len(left)} modules), and diffusers' "
                f"{pipe} loads LoRAs into the transformer and CLIP encoders only",
                hint="write --format kohya (ComfyUI and kohya load T5 modules)",
            )
        return self.modules

    def kohya_alpha(self, modules: dict[str, Factored] | None = None) -> int:
        """The one ``.alpha`` the kohya layout writes: the most common module rank (the largest on a tie)."""
        from collections import Counter

        counts = Counter(f.rank for f in (self.modules if modules is None else modules).values())
        if not counts:
            return 1
        best = max(counts.values())
        return max(r for r, n in counts.items() if n == best)

    def state_dict(self, dtype: Any = None) -> dict[str, Any]:
        """peft keys with diffusers prefixes (``unet.<path>.lora_A.weight``), loadable by ``load_lora_weights``."""
        out: dict[str, Any] = {}
        for key, f in sorted(self.modules.items()):
            a, b = f.weights()
            if dtype is not None:
                a, b = a.to(dtype), b.to(dtype)
            out[f"{key}.lora_A.weight"] = a
            out[f"{key}.lora_B.weight"] = b
        return out


# --------------------------------------------------------------------------- module names


def _fix_attnproc(rest: str, component: str) -> str:
    """Old attention-processor spellings -> module paths."""
    if component == "unet":
        for proj in ("q", "k", "v"):
            rest = rest.replace(f"processor.to_{proj}_lora", f"to_{proj}")
            if rest.endswith(f"to_{proj}_lora"):
                rest = rest[: -len("_lora")]
        rest = rest.replace("processor.to_out_lora", "to_out.0")
        if rest.endswith("to_out_lora"):
            rest = rest[: -len("to_out_lora")] + "to_out.0"
    else:
        for proj in ("q", "k", "v"):
            rest = rest.replace(f"to_{proj}_lora", f"{proj}_proj")
        rest = rest.replace("to_out_lora", "out_proj")
    for suffix in (".lora_linear_layer", ".lora", "_lora"):
        if rest.endswith(suffix):
            rest = rest[: -len(suffix)]
    return rest


def _te_path(rest: str) -> str:
    """Text-encoder paths always carry ``text_model.`` in canonical keys (the real-world spelling)."""
    if rest.startswith(("encoder.", "embeddings.", "final_layer_norm")):
        return "text_model." + rest
    return rest


def _kohya_component(name: str) -> tuple[str, str] | None:
    for prefix, comp in _KOHYA_COMPONENT:
        if name.startswith(prefix):
            return prefix, comp
    return None


def canonical_keys(names: list[str], *, layers_per_block: int | None = None) -> dict[str, str | None]:
    """Map the module names of a file (as :func:`lorahub.adapters.formats.analyze` groups them) to canonical keys.

    ``None`` marks a name lorahub cannot place. SDXL kohya files with SGM
    block names (``input_blocks_4_1_...``) are mapped with ``layers_per_block``
    (default 2, as SD 1.x/SDXL).
    """
    from diffusers.loaders.lora_conversion_utils import (
        _convert_text_encoder_lora_key,
        _convert_unet_lora_key,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    out: dict[str, str | None] = {}
    kohya_unet: dict[str, str] = {}
    for name in names:
        kc = _kohya_component(name)
        if kc is not None:
            prefix, comp = kc
            if comp == "unet":
                kohya_unet[name] = name
                continue
            key = _convert_text_encoder_lora_key(f"{name}.lora_down.weight", name)
            rest = key[: -len(".down.weight")]
            out[name] = f"{comp}.{_te_path(_fix_attnproc(rest, comp))}"
            continue
        comp, rest = "unet", name
        for prefix, c in _DOTTED_COMPONENT:
            if name.startswith(prefix):
                comp, rest = c, name[len(prefix) :]
                break
        if comp == "unet" and rest.startswith("lora_"):
            out[name] = None
            continue
        rest = _fix_attnproc(rest, comp)
        out[name] = f"{comp}.{_te_path(rest) if comp != 'unet' else rest}"

    if kohya_unet:

        class _Cfg:
            pass

        cfg = _Cfg()
        cfg.layers_per_block = layers_per_block or 2  # type: ignore[attr-defined]
        fake = {f"{name}.lora_down.weight": name for name in kohya_unet}
        try:
            mapped = _maybe_map_sgm_blocks_to_diffusers(dict(fake), cfg)
        except (ValueError, IndexError, KeyError):
            mapped = fake
        for key, original in mapped.items():
            new = _convert_unet_lora_key(key)
            for suffix in (".down.weight",):
                if new.endswith(suffix):
                    new = new[: -len(suffix)]
            out[original] = "unet." + _fix_attnproc(new, "unet")
        for name in kohya_unet:
            out.setdefault(name, None)
    return out


# --------------------------------------------------------------------------- reading files


def _restore_kernels(modules: dict[str, Factored], family: str | None, path: Any) -> None:
    """Give conv modules whose factors came flattened (LyCORIS LoHa/LoKr store a conv's delta as 2-D
    factors) their kernel back, from the family's layer (``layouts.conv_kernel``): written out, they
    then have the 4-D shapes diffusers, kohya and ComfyUI build for that layer."""
    from ..adapters.layouts import conv_kernel

    for key, f in modules.items():
        if f.kernel is not None:
            continue
        k = conv_kernel(family, key)
        if k is None:
            continue
        spatial = k[0] * k[1]
        cols = int(f.A.shape[1])
        if cols % spatial:
            raise AdapterCompatibilityError(
                f"{path}: module '{key}' has {cols} input columns, which does not fit the {k[0]}x{k[1]} "
                f"convolution the {family_name(family)} layer is"
            )
        f.kernel = (cols // spatial, k[0], k[1])


def load_adapter_file(
    path: str | os.PathLike[str],
    *,
    rank: int | None = None,
    report: InspectReport | None = None,
    layers_per_block: int | None = None,
) -> CanonicalLora:
    """Read ``path`` into a :class:`CanonicalLora`.

    ``rank`` is the rank LyCORIS modules are re-factored to (default
    :data:`DEFAULT_CONVERT_RANK`, or their exact rank when smaller); plain
    LoRA modules keep their rank.
    """
    from safetensors import safe_open

    from ..adapters.formats import analyze
    from ..adapters.header import read_header
    from ..adapters.inspect import inspect_header
    from . import lowrank

    header = read_header(path)
    analysis = analyze(header)
    rep = report or inspect_header(header, analysis)
    fmt = analysis.format
    if fmt in REFUSED:
        why, hint = REFUSED[fmt]
        raise AdapterCompatibilityError(f"{path}: {rep.format_name} refused: {why}", hint=hint)
    if any(m.dora for m in analysis.modules.values()):
        why, hint = REFUSED["kohya-dora"]
        raise AdapterCompatibilityError(f"{path}: refused: {why}", hint=hint)
    if analysis.errors:
        raise AdapterCompatibilityError(
            f"{path}: not a loadable adapter: {analysis.errors[0]}"
            + (f" (and {len(analysis.errors) - 1} more)" if len(analysis.errors) > 1 else ""),
            hint="run lorahub validate on it",
        )
    if rep.base_family not in READABLE_FAMILIES:
        raise AdapterCompatibilityError(
            f"{path}: a {family_name(rep.base_family)} adapter: lorahub recognises that family for the registry "
            "but does not convert, blend or preview its adapters"
        )
    mmdit = rep.base_family in MMDIT_FAMILIES

    names = [m.name for m in analysis.modules.values() if m.kind not in ("orphan", "set")]
    keys = {n: n for n in names} if mmdit else canonical_keys(names, layers_per_block=layers_per_block)
    target_rank = rank or DEFAULT_CONVERT_RANK
    modules: dict[str, Factored] = {}
    unmapped: list[str] = []
    warnings: list[str] = []
    converted = 0
    exact_max = 0
    total_sq = 0.0
    dropped_sq = 0.0
    worst = 0.0
    lyco_format: str | None = None

    with safe_open(str(path), framework="pt") as fh:

        def t(mod: Any, part: str) -> Any:
            return fh.get_tensor(mod.parts[part].name).float()

        for mod in analysis.modules.values():
            if mod.kind in ("orphan", "set"):
                continue
            key = keys.get(mod.name)
            if key is None:
                unmapped.append(mod.name)
                continue
            if key in modules:
                warnings.append(f"two modules of the file map to {key}; the second ('{mod.name}') is ignored")
                continue
            scale = mod.scale if mod.scale is not None else 1.0
            p = mod.parts
            if mod.kind == "lora":
                if "mid" in p:
                    f = lowrank.tucker_factors(t(mod, "up"), t(mod, "mid"), t(mod, "down"), scale)
                else:
                    f = lowrank.from_lora(t(mod, "down"), t(mod, "up"), scale)
                if "up_bias" in p:
                    warnings.append(f"'{mod.name}': the LoRA bias is ignored")
                modules[key] = f
                continue
            if mod.kind == "loha":
                if "hada_t1" in p or "hada_t2" in p:
                    raise AdapterCompatibilityError(
                        f"{path}: LoHa with Tucker cores (hada_t1/hada_t2) cannot be converted by lorahub"
                    )
                w1a, w1b, w2a, w2b = (t(mod, n) for n in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
                shape = (mod.out_features, *w1b.shape[1:]) if w1b.ndim == 4 else None
                f = lowrank.loha_factors(w1a, w1b, w2a, w2b, scale, shape)
                lyco_format = "LoHa"
            elif mod.kind == "lokr":
                if "lokr_t2" in p:
                    raise AdapterCompatibilityError(
                        f"{path}: LoKr with a Tucker core (lokr_t2) cannot be converted by lorahub"
                    )
                w1f = (t(mod, "lokr_w1_a"), t(mod, "lokr_w1_b")) if "lokr_w1" not in p else None
                w2f = (t(mod, "lokr_w2_a"), t(mod, "lokr_w2_b")) if "lokr_w2" not in p else None
                w1 = t(mod, "lokr_w1") if "lokr_w1" in p else w1f[0] @ w1f[1]  # type: ignore[index]
                w2 = t(mod, "lokr_w2") if "lokr_w2" in p else None
                if w2 is None and w2f is not None and w2f[1].ndim == 4:
                    w2 = None
                f = lowrank.lokr_factors(w1, w2, scale, w1f, w2f)
                lyco_format = "LoKr"
            elif mod.kind == "full":
                diff = t(mod, "diff")
                kernel = tuple(int(d) for d in diff.shape[1:]) if diff.ndim == 4 else None
                f, err, norm = lowrank.svd_factor(diff.reshape(diff.shape[0], -1), target_rank, kernel)
                lyco_format = "full"
                converted += 1
                exact_max = max(exact_max, min(diff.shape[0], math.prod(diff.shape[1:])))
                total_sq += norm**2
                dropped_sq += (err * norm) ** 2
                worst = max(worst, err)
                modules[key] = f
                continue
            else:
                raise AdapterCompatibilityError(f"{path}: module '{mod.name}' of kind {mod.kind} is not supported")
            exact_max = max(exact_max, f.rank)
            tf, err, norm = lowrank.truncate(f, target_rank)
            converted += 1
            total_sq += norm**2
            dropped_sq += (err * norm) ** 2
            worst = max(worst, err)
            modules[key] = tf

    if mmdit:
        from .fused import to_canonical

        modules, unmapped_dit, more = to_canonical(rep.base_family, modules)
        unmapped.extend(unmapped_dit)
        warnings.extend(more)
    _restore_kernels(modules, rep.base_family, path)
    if unmapped:
        warnings.append(
            f"{len(unmapped)} module(s) of the file have names lorahub cannot place (e.g. '{unmapped[0]}')"
        )
    conversion = None
    if converted:
        conversion = Conversion(
            source_format=lyco_format or fmt,
            rank=min(target_rank, exact_max),
            modules=converted,
            relative_error=math.sqrt(dropped_sq / total_sq) if total_sq > 0 else 0.0,
            max_module_error=worst,
            exact_rank=exact_max,
        )
    return CanonicalLora(
        path=str(path),
        format=fmt,
        family=rep.base_family,
        cross_attention_dim=rep.cross_attention_dim,
        modules=modules,
        title=rep.title,
        trigger_words=list(rep.trigger_words),
        conversion=conversion,
        unmapped=unmapped,
        warnings=warnings,
        report=rep,
    )
