"""Bake several adapters into one LoRA file, blending full weight deltas.

``blend([(a, 0.6), (b, 0.4)], method=...)`` works module by module on the
deltas ``dW_i = (alpha_i / r_i) * B_i @ A_i`` of the inputs, never by adding
``A`` and ``B`` factors separately (which multiplies the weights, the
"merged LoRA is weaker than stacked LoRAs" complaint, kohya-ss/sd-scripts#868):

=========  ==================================================================  ===========
method     delta of the blend                                                   exact?
=========  ==================================================================  ===========
``cat``    ``sum_i w_i dW_i`` as concatenated factors ``[w_1 B_1 | w_2 B_2]``,  yes; rank
           ``[A_1; A_2]``: the same as stacking the adapters at run time        = sum r_i
           (``set_adapters`` with the same weights)
``linear`` ``sum_i w_i dW_i``, re-factored by SVD at its exact (numerical) rank   yes
           or at ``rank`` when given
``svd``    ``sum_i w_i dW_i`` re-factored at ``rank`` (default: the largest     no: error
           input rank)                                                          reported
``ties``   TIES-merging (Yadav et al. 2023, as peft implements it): keep the    no
           ``density`` largest-magnitude entries of each delta, elect a sign per
           entry from the weighted sum, average the agreeing weighted entries;
           then SVD at ``rank``
``dare``   DARE (Yu et al. 2023, peft's ``dare_linear``): drop entries of each   no
           delta at random with probability ``1 - density``, rescale the kept
           ones by ``1 / density``, weighted sum; then SVD at ``rank``
=========  ==================================================================  ===========

Inputs may have different ranks and alphas (alphas are folded in when the file
is read), different formats (kohya, diffusers, peft, LyCORIS LoHa/LoKr after
conversion) and modules present in only some of them (a missing module
contributes nothing). Weights are one number, or ``(te, unet)`` for separate
text-encoder and UNet weights (``(te, unet, te2)``: SDXL's second text encoder
its own).

The output is a LoRA with ``alpha == rank`` in every module (the deltas are
already scaled), in the kohya layout by default (``lora_unet_<module>``,
``.lora_down``/``.lora_up``/``.alpha``: AUTOMATIC1111/Forge, ComfyUI, kohya and
diffusers load it fully) or, with ``format="diffusers"``, in diffusers' peft
layout (``unet.<module>.lora_A.weight`` / ``.lora_B.weight``; ComfyUI does not
map its UNet attention modules). Conv modules keep their 4-D shapes
(``docs/formats.md``). Its metadata records the method, the weights and the
sources' fingerprints (``lorahub.blend``, JSON), its recipe (``lorahub.recipe``, JSON: the sources
by stable reference, see :mod:`lorahub.pipeline.recipe`), the merged trigger words
(``modelspec.trigger_phrase``), ``modelspec.merged_from`` (the sources' titles, comma separated, as
kohya's ``sai_model_spec.build_merged_from`` writes it), the minimum kohya ``ss_*`` keys and kohya's
``sshs_model_hash``/``sshs_legacy_hash``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterCompatibilityError, UsageError

METHODS = ("linear", "cat", "svd", "ties", "dare")
#: Methods that work on full deltas entry by entry (need ``density``).
DENSITY_METHODS = ("ties", "dare")

FAMILY_ARCH = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sdxl": "stable-diffusion-xl-v1-base",
               "sd3": "stable-diffusion-3", "flux": "flux-1"}


@dataclass
class BlendInput:
    path: str
    te: float
    unet: float
    name: str | None = None
    te2: float | None = None  # SDXL's second text encoder (None: te)
    #: the source's stable reference in the recipe (``hub``+``file``, ``registry`` or ``path``; also
    #: ``license``, ``url``); None: the absolute path (lorahub.pipeline.recipe)
    ref: dict[str, str] | None = None

    def weight_of(self, component: str) -> float:
        if component == "unet":
            return self.unet
        return self.te2 if component == "text_encoder_2" and self.te2 is not None else self.te

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "name": self.name, "te_weight": self.te, "unet_weight": self.unet}
        if self.te2 is not None:
            d["te2_weight"] = self.te2
        return d


@dataclass
class BlendResult:
    """What :func:`blend` made."""

    method: str
    rank: int  # largest module rank of the output
    modules: int
    relative_error: float  # ||blend - exact weighted sum of deltas||_F / ||exact||_F over all modules
    max_module_error: float
    inputs: list[dict[str, Any]]
    trigger_words: list[str]
    path: str | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    lora: Any = None  # the CanonicalLora of the blend
    recipe: Any = None  # the BlendRecipe of a written blend (lorahub.pipeline.recipe)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rank": self.rank,
            "modules": self.modules,
            "relative_error": self.relative_error,
            "max_module_error": self.max_module_error,
            "inputs": self.inputs,
            "trigger_words": self.trigger_words,
            "path": self.path,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
            "recipe": self.recipe.model_dump(mode="json", exclude_none=True) if self.recipe is not None else None,
        }


def blend_inputs(inputs: Sequence[Any]) -> list[BlendInput]:
    """``inputs`` as :func:`blend` takes them (``path``, ``(path, w)``, ``(path, (te, unet[, te2]))``) as :class:`BlendInput`."""
    return _inputs(inputs)


def _inputs(inputs: Sequence[Any]) -> list[BlendInput]:
    out = []
    for item in inputs:
        if isinstance(item, BlendInput):
            out.append(item)
            continue
        if isinstance(item, (str, os.PathLike)):
            out.append(BlendInput(os.fspath(item), 1.0, 1.0))
            continue
        path, weight = item[0], item[1] if len(item) > 1 else 1.0
        te2 = None
        if isinstance(weight, (tuple, list)):
            te, unet = float(weight[0]), float(weight[1])
            te2 = float(weight[2]) if len(weight) > 2 and weight[2] is not None else None
        elif len(item) > 2:
            te, unet = float(item[1]), float(item[2])
        else:
            te = unet = float(weight)
        for v in (te, unet, te2 if te2 is not None else 0.0):
            if not math.isfinite(v):
                raise UsageError(f"{path}: weight {v} is not a finite number")
        out.append(BlendInput(os.fspath(path), te, unet, te2=te2))
    return out


def blend(
    inputs: Sequence[Any],
    method: str = "linear",
    rank: int | None = None,
    density: float | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    dtype: str = "float32",
    title: str | None = None,
    convert_rank: int | None = None,
    format: str = "kohya",  # noqa: A002 - the CLI option's name
    search: Any = None,
) -> BlendResult:
    """Blend ``inputs`` (``[(path, weight)]`` or ``[(path, (te, unet))]``) and write the result to ``out``.

    See the module docstring for the methods. ``rank``: target rank of the
    re-factored modules (``cat`` ignores it; ``linear`` truncates only when
    given). ``density`` in (0, 1] is required by ``ties`` and ``dare``.
    ``seed`` drives ``dare``'s random drops. ``dtype``: ``float32``,
    ``float16`` or ``bfloat16`` for the written tensors. ``format``: the
    layout of the written file, ``kohya`` (default: AUTOMATIC1111/Forge,
    ComfyUI, kohya and diffusers load it fully) or ``diffusers``
    (``docs/formats.md``). ``search``: how the weights were found (a recipe's
    :class:`~lorahub.schemas.recipes.SearchRecord`), kept in the written recipe.
    """
    import torch

    from ..adapters.inspect import inspect_file
    from .canonical import CanonicalLora, family_name, load_adapter_file
    from .lowrank import Factored, concat, svd_factor, truncate

    started = time.perf_counter()
    items = _inputs(inputs)
    if not items:
        raise UsageError("nothing to blend: give at least one adapter")
    if method not in METHODS:
        raise UsageError(f"unknown blend method '{method}'", hint=f"use one of {', '.join(METHODS)}")
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        raise UsageError(f"rank must be a positive integer, not {rank!r}")
    if method in DENSITY_METHODS:
        if density is None:
            raise UsageError(f"--method {method} needs --density (the fraction of each delta to keep, e.g. 0.5)")
        if not 0.0 < float(density) <= 1.0:
            raise UsageError(f"density must be in (0, 1], not {density}")
    elif density is not None:
        raise UsageError(f"--density only applies to {' and '.join(DENSITY_METHODS)}, not {method}")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise UsageError(f"dtype must be float32, float16 or bfloat16, not {dtype!r}")
    from ..adapters.layouts import KOHYA_FAMILIES, WRITE_FORMATS

    if format not in WRITE_FORMATS:
        raise UsageError(f"unknown adapter format '{format}'", hint=f"use one of {', '.join(WRITE_FORMATS)}")
    warnings: list[str] = []
    if method == "cat" and rank is not None:
        warnings.append("cat is exact: its rank is the sum of the input ranks; --rank is ignored")

    # every input must be for the same architecture (checked from the headers, before reading tensors)
    reports = [inspect_file(item.path) for item in items]
    fams = {r.base_family for r in reports if r.base_family and r.base_family != "unknown"}
    if len(fams) > 1:
        listing = ", ".join(f"{Path(r.path).name} ({family_name(r.base_family)})" for r in reports)
        raise AdapterCompatibilityError(f"cannot blend adapters of different base families: {listing}")
    widths = {r.cross_attention_dim for r in reports if r.cross_attention_dim}
    if len(widths) > 1:
        listing = ", ".join(f"{Path(r.path).name} ({r.cross_attention_dim})" for r in reports)
        raise AdapterCompatibilityError(f"cannot blend adapters made for different cross-attention widths: {listing}")

    if format == "kohya" and out is not None and fams - set(KOHYA_FAMILIES):
        fam = next(iter(fams))
        raise UsageError(
            f"lorahub writes the kohya layout for SD 1.x, SD 2.x, SDXL, SD3 and Flux.1 adapters, not for "
            f"{family_name(fam)} ones",
            hint="use --format diffusers",
        )
    loras: list[CanonicalLora] = []
    for item, report in zip(items, reports, strict=True):
        lora = load_adapter_file(item.path, rank=convert_rank or rank, report=report)
        item.name = lora.name
        if lora.conversion:
            warnings.append(f"{Path(item.path).name}: {lora.conversion.summary()}")
        warnings.extend(f"{Path(item.path).name}: {w}" for w in lora.warnings)
        loras.append(lora)

    keys = sorted({k for lo in loras for k in lo.modules})
    default_rank = max(lo.max_rank() for lo in loras)
    target = rank or default_rank
    gen = torch.Generator().manual_seed(int(seed))
    modules: dict[str, Factored] = {}
    total_sq = 0.0
    err_sq = 0.0
    worst = 0.0
    for key in keys:
        comp = key.split(".", 1)[0]
        parts: list[Factored] = []
        for item, lo in zip(items, loras, strict=True):
            f = lo.modules.get(key)
            if f is None:
                continue
            w = item.weight_of("unet" if comp == "transformer" else comp)
            if w == 0.0:
                continue
            parts.append(f.scaled(w))
        if not parts:
            continue
        shapes = {(p.B.shape[0], p.A.shape[1]) for p in parts}
        if len(shapes) > 1:
            raise AdapterCompatibilityError(f"module '{key}' has different shapes in the inputs: {sorted(shapes)}")
        kernels = {p.kernel for p in parts if p.kernel is not None}
        kernel = next(iter(kernels)) if kernels else None
        for p in parts:
            p.kernel = kernel
        exact = concat(parts)
        if method == "cat":
            f, err, norm = exact, 0.0, None
        elif method in ("linear", "svd"):
            limit = (rank or exact.rank) if method == "linear" else target
            f, err, norm = truncate(exact, limit, force=True)
            f, _, _ = _compact(f)
        else:
            deltas = [p.delta() for p in parts]
            exact_delta = exact.delta()
            merged = _ties(deltas, float(density)) if method == "ties" else _dare(deltas, float(density), gen)
            f, _, _ = svd_factor(merged, target, kernel)
            norm = float(torch.linalg.matrix_norm(exact_delta))
            err = float(torch.linalg.matrix_norm(f.delta() - exact_delta)) / norm if norm > 0 else 0.0
        f.kernel = kernel
        if norm is None:
            from .lowrank import factored_norm

            norm = factored_norm(exact.B, exact.A)
        total_sq += norm**2
        err_sq += (err * norm) ** 2
        worst = max(worst, err)
        modules[key] = f

    if not modules:
        raise UsageError("the blend is empty: every weight is 0")
    words: list[str] = []
    for lo in loras:
        for w in lo.trigger_words:
            if w and w.lower() not in {x.lower() for x in words}:
                words.append(w)
    family = next(iter(fams)) if fams else "unknown"
    result_lora = CanonicalLora(
        path=str(out) if out else "<blend>",
        format="kohya-lora" if format == "kohya" else "peft",
        family=family,
        cross_attention_dim=next(iter(widths)) if widths else None,
        modules=modules,
        title=title,
        trigger_words=words,
    )
    result = BlendResult(
        method=method,
        rank=max(f.rank for f in modules.values()),
        modules=len(modules),
        relative_error=math.sqrt(err_sq / total_sq) if total_sq > 0 else 0.0,
        max_module_error=worst,
        inputs=[i.to_dict() for i in items],
        trigger_words=words,
        warnings=warnings,
        lora=result_lora,
    )
    if out is not None:
        result.path = str(write_blend(out, result, items, density=density, seed=seed, dtype=dtype, title=title,
                                      fmt=format, rank=rank, search=search))
    result.seconds = time.perf_counter() - started
    return result


def _compact(f: Any, tol: float = 1e-6) -> tuple[Any, float, float]:
    """Drop the numerically zero directions of an SVD factorisation (balanced factors)."""
    import torch

    from .lowrank import Factored

    norms = torch.linalg.vector_norm(f.B, dim=0) * torch.linalg.vector_norm(f.A, dim=1)
    if norms.numel() == 0:
        return f, 0.0, 0.0
    keep = norms > norms.max() * tol
    if bool(keep.all()) or not bool(keep.any()):
        return f, 0.0, 0.0
    return Factored(f.B[:, keep], f.A[keep], f.kernel), 0.0, 0.0


def _ties(deltas: list[Any], density: float) -> Any:
    """TIES: trim (magnitude), elect sign (weighted sum), disjoint mean. Deltas are already weighted."""
    import torch

    trimmed = []
    for d in deltas:
        k = max(1, int(round(density * d.numel())))
        if k >= d.numel():
            trimmed.append(d)
            continue
        threshold = d.abs().flatten().kthvalue(d.numel() - k + 1).values
        trimmed.append(torch.where(d.abs() >= threshold, d, torch.zeros_like(d)))
    stack = torch.stack(trimmed)
    sign = torch.sign(stack.sum(dim=0))
    agree = (torch.sign(stack) == sign) & (stack != 0)
    summed = (stack * agree).sum(dim=0)
    count = agree.sum(dim=0).clamp(min=1)
    return summed / count


def _dare(deltas: list[Any], density: float, gen: Any) -> Any:
    """DARE (linear): random drop with probability 1 - density, rescale by 1/density, sum. Deltas are weighted."""
    import torch

    out = torch.zeros_like(deltas[0])
    for d in deltas:
        if density >= 1.0:
            out += d
            continue
        mask = torch.rand(d.shape, generator=gen) < density
        out += torch.where(mask, d / density, torch.zeros_like(d))
    return out


def recipe_source(item: BlendInput, fingerprint: Any = None) -> Any:
    """The recipe's entry (:class:`~lorahub.schemas.recipes.RecipeSource`) of one input: its stable reference
    (``item.ref``, else the absolute path), its fingerprints (``fingerprint``: the file's report, computed
    when not given), its weights, and its licence (``modelspec.license`` when the reference names none)."""
    from lorahub.schemas.recipes import ComponentWeights, RecipeSource

    from ..adapters.fingerprint import fingerprint_file
    from ..adapters.header import read_header

    fp = fingerprint if fingerprint is not None else fingerprint_file(item.path)
    ref = dict(item.ref) if item.ref else {"path": str(Path(item.path).resolve())}
    if not ref.get("license"):
        lic = read_header(item.path).string_metadata().get("modelspec.license")
        if lic and lic.strip():
            ref["license"] = lic.strip()[:200]
    if item.te == item.unet and item.te2 is None:
        weight: float | ComponentWeights = item.unet
    else:
        weight = ComponentWeights(te=item.te, unet=item.unet, te2=item.te2)
    return RecipeSource(**ref, name=item.name, sha256=str(fp.sha256).lower(), autov3=str(fp.autov3).upper(),
                        weight=weight)


def write_blend(
    out: str | os.PathLike[str],
    result: BlendResult,
    items: list[BlendInput],
    *,
    density: float | None,
    seed: int,
    dtype: str,
    title: str | None,
    fmt: str = "kohya",
    rank: int | None = None,
    search: Any = None,
) -> Path:
    """Write the blend (atomically) in the layout ``fmt`` with its provenance metadata and its recipe
    (``result.recipe``; ``rank``: the rank asked for, as the recipe records it)."""
    from lorahub import __version__
    from lorahub.schemas.recipes import BlendRecipe, RecipeParams

    from ..adapters.fingerprint import fingerprint_file
    from .recipe import METADATA_KEY, portable, recipe_json

    path = Path(out)
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"{path}: the blend must be written to a .safetensors file")
    sources = []
    recipe_sources = []
    for item in items:
        fp = fingerprint_file(item.path)
        recipe_sources.append(recipe_source(item, fp))
        sources.append(
            {
                "name": item.name,
                "file": Path(item.path).name,
                "sha256": fp.sha256,
                "autov3": fp.autov3,
                "blake3": fp.blake3,
                "te_weight": item.te,
                "unet_weight": item.unet,
                **({"te2_weight": item.te2} if item.te2 is not None else {}),
            }
        )
    provenance = {
        "tool": "lorahub",
        "method": result.method,
        "rank": result.rank,
        "density": density,
        "seed": seed if result.method == "dare" else None,
        "relative_error": round(result.relative_error, 8),
        "sources": sources,
    }
    result.recipe = BlendRecipe(
        lorahub_version=__version__,
        method=result.method,  # type: ignore[arg-type]
        params=RecipeParams(density=density, seed=seed),
        rank=rank,
        format=fmt,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        title=title,
        sources=recipe_sources,
        search=search,
    )
    names = ", ".join(f"{s['name']} ({s['unet_weight']:g})" for s in sources)
    md: dict[str, str] = {}
    if result.lora is not None and result.lora.family in ("flux", "sd3"):
        # the checkpoint every source declares (flux-1-schnell/lora, stable-diffusion-3-5-large/lora...) stays
        # declared: cards and tools tell FLUX.1-dev from schnell, SD 3.5 Large from Medium by it
        from ..adapters.formats import declared_family
        from ..adapters.header import read_header

        archs = {read_header(i.path).string_metadata().get("modelspec.architecture", "").strip()[:200] for i in items}
        arch = archs.pop() if len(archs) == 1 else ""
        if arch and declared_family({"modelspec.architecture": arch}) == result.lora.family:
            md["modelspec.architecture"] = arch
    md |= {
        "lorahub.blend": json.dumps(provenance, sort_keys=True),
        METADATA_KEY: recipe_json(portable(result.recipe)),  # file names only: the metadata gets published
        # kohya's sai_model_spec.build_merged_from: the sources' titles, comma separated
        "modelspec.merged_from": ", ".join(str(s["name"]) for s in sources),
        "modelspec.description": f"{result.method} blend of {names}, made by lorahub",
    }
    return write_lora(path, result.lora, fmt=fmt, dtype=dtype, title=title or path.stem, metadata=md,
                      trigger_words=result.trigger_words)


#: ``ss_v2`` and ``ss_base_model_version`` per family (kohya-ss/sd-scripts ``library/train_util.py``).
_KOHYA_VERSION = {"sd1": ("False", "sd_v1"), "sd2": ("True", "sd_v2"), "sdxl": ("False", "sdxl_base_v1-0")}


def write_lora(
    path: str | os.PathLike[str],
    lora: Any,
    *,
    fmt: str,
    dtype: str,
    title: str,
    metadata: dict[str, str] | None = None,
    trigger_words: Sequence[str] = (),
) -> Path:
    """Write a :class:`~lorahub.pipeline.canonical.CanonicalLora` as a file other tools load.

    ``fmt``: ``kohya`` or ``diffusers`` (``docs/formats.md``; SDXL kohya names are the SGM UNet's,
    ``lora_unet_input_blocks_4_1_...``, with ``lora_te1_``/``lora_te2_``). Every module's
    alpha/rank is folded into its up factor (kohya: one ``.alpha`` for all modules); the
    metadata holds the minimum kohya ``ss_*`` keys (as kohya's merge scripts write
    them: A1111 reads the base version from them), modelspec keys and kohya's
    ``sshs_model_hash``/``sshs_legacy_hash``.
    """
    from ..adapters.layouts import SGM_IMPLEMENTATION, WRITE_FORMATS
    from ..adapters.writer import write_adapter

    if fmt not in WRITE_FORMATS:
        raise UsageError(f"unknown adapter format '{fmt}'", hint=f"use one of {', '.join(WRITE_FORMATS)}")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise UsageError(f"dtype must be float32, float16 or bfloat16, not {dtype!r}")
    tensors = lora.records(fmt, dtype)
    ranks = sorted({f.rank for f in lora.modules.values()})
    conv_ranks = sorted({f.rank for f in lora.modules.values() if f.kernel is not None and f.kernel[1:] != (1, 1)})
    dim = str(ranks[-1]) if len(ranks) == 1 else "Dynamic"
    md: dict[str, str] = {}
    if fmt == "diffusers":
        md["format"] = "pt"
    md["ss_network_module"] = "networks.lora"
    md["ss_network_dim"] = dim
    # one alpha for every module (CanonicalLora.records); the diffusers layout has none (alpha == rank)
    md["ss_network_alpha"] = str(lora.kohya_alpha()) if fmt == "kohya" else dim
    if conv_ranks:
        conv = str(conv_ranks[-1]) if len(conv_ranks) == 1 else "Dynamic"
        md["ss_network_args"] = json.dumps({"conv_dim": conv, "conv_alpha": conv})
    if lora.family in _KOHYA_VERSION:
        md["ss_v2"], md["ss_base_model_version"] = _KOHYA_VERSION[lora.family]
    md["ss_output_name"] = title
    md["modelspec.sai_model_spec"] = "1.0.1"
    md["modelspec.title"] = title
    # kohya-layout SDXL files name the original (SGM) UNet's modules: say so, as kohya does
    md["modelspec.implementation"] = SGM_IMPLEMENTATION if fmt == "kohya" and lora.family == "sdxl" else "diffusers"
    arch = FAMILY_ARCH.get(lora.family)
    if arch:
        md["modelspec.architecture"] = f"{arch}/lora"
    if trigger_words:
        md["modelspec.trigger_phrase"] = ", ".join(trigger_words)
    md.update(metadata or {})
    return write_adapter(path, tensors, md)
