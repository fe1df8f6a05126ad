"""Flux.1 and SD3 LoRA factors between layouts, exactly (needs torch).

Reading (:func:`to_canonical`): every module of a file, whatever its layout
(:mod:`lorahub.adapters.mmdit`), becomes diffusers' modules. A fused module
(``img_attn.qkv``, ``linear1``, SD3's ``attn.qkv``: ``down [r, in]``,
``up [3h, r]``) is three LoRAs that share ``down``, each with its slice of ``up``:
``up[i*h:(i+1)*h] @ down`` is exactly that projection's rows of the update.

diffusers' own converters do this where they work, so lorahub calls them
(``diffusers/loaders/lora_conversion_utils.py``):

- ``_convert_kohya_flux_lora_to_diffusers`` for kohya/ComfyUI/BFL-named Flux.1
  modules (``lora_unet_double_blocks_0_img_attn_qkv``), plus their CLIP-L
  ``lora_te1_`` modules, at Flux.1's widths (it splits ``linear1`` at
  3 x 3072 + 12288 and asserts them);
- ``_convert_xlabs_flux_lora_to_diffusers`` for XLabs' ``processor.qkv_lora1``.

lorahub maps the rest itself, with the same rule: Flux.1 files of other widths
(test-size bases), T5-XXL modules (diffusers drops kohya's ``lora_te3_`` and
fails on OneTrainer's ``lora_te2_``), OneTrainer's ``lora_transformer_`` names
(diffusers' "mixture" converter maps only their attention modules: the
``proj_mlp``/``ff``/``norm`` ones collapse onto the block's name), ComfyUI/ai-toolkit
``diffusion_model.*`` ``lora_A`` files and LoKr ones (diffusers loads nothing of
them), and every SD3 layout but diffusers' own (diffusers 0.42 has no SD3 LoRA
converter).
``tests/pipeline/test_flux_formats.py`` checks that both give the same update.

Writing (:func:`kohya_factors`): diffusers' modules become the kohya layout's.
Split q/k/v that share one ``down`` (a file read from the fused layout) fuse back
at rank r (``up`` stacked); others fuse exactly as a rank r_q + r_k + r_v
block-diagonal LoRA, ``down = [down_q; down_k; down_v]`` and ``up = diag(up_q,
up_k, up_v)`` (as kohya ``networks/lora_flux.py`` merges its ``split_qkv``
modules); a part the adapter lacks is zero rows. ``final_layer.adaLN_modulation.1``
is ``norm_out.linear`` with its shift/scale halves swapped (also SD3's last
``context_block.adaLN_modulation.1``).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..adapters import mmdit
from .lowrank import Factored

Tensor = torch.Tensor


def _swap_halves(b: Tensor) -> Tensor:
    """diffusers ``swap_scale_shift`` on the rows of an up factor (its own inverse)."""
    shift, scale = b.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def _out_in(f: Factored) -> tuple[int, int]:
    return int(f.B.shape[0]), int(f.A.shape[1])


# --------------------------------------------------------------------------------------------- reading


def to_canonical(family: str, source: dict[str, Factored]) -> tuple[dict[str, Factored], list[str], list[str]]:
    """(canonical modules, names lorahub cannot place, warnings) of a Flux.1/SD3 file's modules.

    ``source`` maps each module name of the file to its factors, alpha/rank already folded into ``B``.
    """
    out: dict[str, Factored] = {}
    unmapped: list[str] = []
    warnings: list[str] = []
    rest = dict(source)
    # diffusers modules cut from a fused one: those whose rows are all zero (a projection the adapter never
    # had, as in a q/k-only module fused with a zero v) are left out
    from_fused = set()
    for name, f in source.items():
        o, i = _out_in(f)
        pieces = mmdit.targets(family, name, i if f.kernel is None else f.kernel[0], o) or []
        if len(pieces) > 1:
            from_fused.update(p.key for p in pieces)
    if family == "flux":
        for group, convert in ((_xlabs_group(rest), _via_xlabs), (_kohya_group(rest), _via_kohya)):
            if not group:
                continue
            try:
                converted = convert(group)
            except (ValueError, KeyError, AssertionError, RuntimeError) as exc:  # pragma: no cover - a diffusers change
                warnings.append(f"diffusers' converter failed ({type(exc).__name__}: {exc}); lorahub mapped the "
                                f"{len(group)} module(s) itself")
                continue
            for name in group:
                rest.pop(name)
            _merge(out, converted, warnings)
    for name, f in rest.items():
        o, i = _out_in(f)
        pieces = mmdit.targets(family, name, i if f.kernel is None else f.kernel[0], o)
        if pieces is None:
            unmapped.append(name)
            continue
        converted = {}
        for p in pieces:
            b = f.B[p.start:p.stop]
            if p.swap:
                b = _swap_halves(b)
            converted[p.key] = Factored(b, f.A, f.kernel)
        _merge(out, converted, warnings, name)
    zero = {k for k in from_fused if k in out and not bool(out[k].B.any())}
    if len(zero) < len(out):
        for k in zero:
            del out[k]
    return out, unmapped, warnings


def _merge(out: dict[str, Factored], new: dict[str, Factored], warnings: list[str], source: str | None = None) -> None:
    for key, f in new.items():
        if key in out:
            warnings.append(f"two modules of the file map to {key}; the second"
                            + (f" ('{source}')" if source else "") + " is ignored")
            continue
        out[key] = f


def _flux1_widths(group: dict[str, Factored]) -> bool:
    """Whether diffusers' kohya converter can split the group's fused modules (Flux.1's widths only)."""
    for name, f in group.items():
        o, i = _out_in(f)
        if f.kernel is not None:
            return False
        if name.endswith("linear1") and (i, o) != (3072, 21504):
            return False
        if name.endswith("qkv") and (i, o) != (3072, 9216):
            return False
    return True


def _kohya_group(rest: dict[str, Factored]) -> dict[str, Factored]:
    """BFL-named Flux.1 modules (any prefix) and CLIP-L ones, if diffusers can convert them all; else nothing
    (lorahub maps them)."""
    group: dict[str, Factored] = {}
    for name, f in rest.items():
        if mmdit.original_name("flux", name) is not None and ".processor." not in name:
            group[name] = f
        elif (mmdit.text_encoder_target("flux", name) or "").startswith("text_encoder."):  # CLIP-L, not T5
            group[name] = f
    blocks = [n for n in group if mmdit.original_name("flux", n) is not None]
    if not blocks or not _flux1_widths(group):
        return {}
    return group


def _xlabs_group(rest: dict[str, Factored]) -> dict[str, Factored]:
    return {n: f for n, f in rest.items() if re.search(r"\.processor\.(qkv|proj)_lora[12]?$", n)}


def _kohya_name(name: str) -> str:
    """The kohya spelling of a BFL-named or CLIP module (``diffusion_model.x.y`` -> ``lora_unet_x_y``)."""
    if name.startswith(("lora_unet_", "lora_transformer_", "lora_te1_", "lora_te_")):
        return name
    te = mmdit.text_encoder_target("flux", name)
    if te is not None:
        return "lora_te1_" + te.removeprefix("text_encoder.").replace(".", "_")
    orig = mmdit.original_name("flux", name)
    return "lora_unet_" + str(orig).replace(".", "_")


def _via_kohya(group: dict[str, Factored]) -> dict[str, Factored]:
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    sd: dict[str, Tensor] = {}
    for name, f in group.items():
        k = _kohya_name(name)
        sd[f"{k}.lora_down.weight"] = f.A
        sd[f"{k}.lora_up.weight"] = f.B
        sd[f"{k}.alpha"] = torch.tensor(float(f.rank))  # alpha = rank: the scale is folded into B already
    return _factors_of(_quiet(_convert_kohya_flux_lora_to_diffusers, sd))


def _via_xlabs(group: dict[str, Factored]) -> dict[str, Factored]:
    from diffusers.loaders.lora_conversion_utils import _convert_xlabs_flux_lora_to_diffusers

    sd: dict[str, Tensor] = {}
    for name, f in group.items():
        sd[f"{name}.down.weight"] = f.A
        sd[f"{name}.up.weight"] = f.B
    return _factors_of(_quiet(_convert_xlabs_flux_lora_to_diffusers, sd))


def _quiet(fn: Any, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Run a diffusers converter without its info/warning logs (lorahub reports what matters itself)."""
    from diffusers.utils import logging as dlog

    logger = dlog.get_logger("diffusers.loaders.lora_conversion_utils")
    level = logger.level
    logger.setLevel(dlog.ERROR)
    try:
        return fn(sd)
    finally:
        logger.setLevel(level)


def _factors_of(sd: dict[str, Tensor]) -> dict[str, Factored]:
    """peft/diffusers keys (``<module>.lora_A.weight``/``.lora_B.weight``, ``.lora.down.weight``...) -> factors."""
    from ..adapters.formats import split_key

    parts: dict[str, dict[str, Tensor]] = {}
    for key, t in sd.items():
        split = split_key(key)
        if split is None:
            raise ValueError(f"diffusers' converter returned an unexpected key '{key}'")
        module, part = split
        parts.setdefault(module, {})[part] = t
    from .canonical import _fix_attnproc

    out = {}
    for module, p in parts.items():
        if set(p) != {"down", "up"}:
            raise ValueError(f"diffusers' converter returned '{module}' with {sorted(p)}")
        if module.startswith("text_encoder."):
            # its text-encoder keys keep the old attention-processor spelling (self_attn.to_q_lora)
            key = "text_encoder." + _fix_attnproc(module.removeprefix("text_encoder."), "text_encoder")
        else:
            key = module if module.startswith("transformer.") else f"transformer.{module}"
        out[key] = Factored(p["up"].float(), p["down"].float(), None)
    return out


# --------------------------------------------------------------------------------------------- writing


def fuse(parts: list[Factored | None], sizes: list[int]) -> Factored:
    """One module whose rows stack ``parts`` (None: zero rows of that size), exactly.

    Parts sharing one ``A`` stack their ``B`` at that rank; otherwise ``A`` is the
    parts' ``A`` stacked and ``B`` block-diagonal (rank = the sum of the ranks).
    """
    present = [p for p in parts if p is not None]
    if not present:
        raise ValueError("nothing to fuse")
    a0 = present[0].A
    dtype = present[0].B.dtype
    shared = all(p is not None for p in parts) and all(
        p.A.shape == a0.shape and (p.A is a0 or torch.equal(p.A, a0)) for p in present
    )
    if shared:
        return Factored(torch.cat([p.B for p in present], dim=0), a0, None)  # type: ignore[union-attr]
    rank = sum(p.rank for p in present)
    A = torch.cat([p.A for p in present], dim=0)
    B = torch.zeros(sum(sizes), rank, dtype=dtype)
    row = col = 0
    for p, size in zip(parts, sizes, strict=True):
        if p is not None:
            if p.B.shape[0] != size:
                raise ValueError(f"a part of {p.B.shape[0]} rows where {size} were expected")
            B[row:row + size, col:col + p.rank] = p.B
            col += p.rank
        row += size
    return Factored(B, A, None)


def kohya_factors(family: str, modules: dict[str, Factored]) -> dict[str, Factored]:
    """Canonical (diffusers) modules -> the kohya layout's modules, by kohya name (fused, exact)."""
    outs = {k: int(f.B.shape[0]) for k, f in modules.items()}
    result: dict[str, Factored] = {}
    for fm in mmdit.kohya_modules(family, list(modules), outs):
        parts = [modules.get(k) for k in fm.parts]
        present = [p for p in parts if p is not None]
        if len(fm.parts) == 1:
            f = present[0]
            result[fm.name] = Factored(_swap_halves(f.B) if fm.swap else f.B, f.A, f.kernel)
            continue
        in_features = int(present[0].A.shape[1])
        sizes = mmdit.fused_sizes(family, fm, outs, in_features)
        result[fm.name] = fuse(parts, sizes)
    return result
