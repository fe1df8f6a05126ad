"""``inspect_file``: everything one adapter file's header says, as an InspectReport."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from lorahub.schemas.adapters import Coverage, InspectReport, ModuleInfo
from lorahub.schemas.construct import builder

from ..errors import RecipeError
from ..pipeline.recipe import recipe_from_metadata
from .families import disagree, resolve
from .formats import FORMAT_NAMES, NOT_LOADABLE_REASON, Analysis, analyze, declared_family
from .header import DTYPE_NAMES, SafetensorsHeader, read_header
from .kohya import json_depth_ok, training_parameters, training_resolution, trigger_words, utf8

#: The components a report counts (the fields of Coverage), read once.
_COMPONENTS = frozenset(Coverage.model_fields)

EMBEDDED_HASH_KEYS = ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256")


def inspect_file(path: str | os.PathLike[str]) -> InspectReport:
    """Read ``path``'s header (and its scalar alphas) and describe the adapter.

    Raises :class:`lorahub.errors.AdapterFileError` when the file is not a
    readable safetensors file (pickle files are refused without being loaded).
    """
    header = read_header(path)
    return inspect_header(header)


def inspect_header(header: SafetensorsHeader, analysis: Analysis | None = None) -> InspectReport:
    an = analysis or analyze(header)
    md = header.string_metadata()
    declared = declared_family(md)
    warnings = list(an.warnings)
    warnings.extend(header.problems)

    family = an.base_family
    evidence = list(an.family_evidence)
    if an.shape_family is None and declared is not None:
        family = declared
        evidence.append(f"shapes are not conclusive; using the family the metadata declares ({declared})")
    elif disagree(an.shape_family, declared):
        warnings.append(
            f"metadata declares {declared} but the tensor shapes say {an.shape_family}"
            f" ({'; '.join(an.family_evidence)})"
        )
    else:
        resolved, note = resolve(an.shape_family, declared)
        if note:
            family = resolved or family
            evidence.append(note)
    if not an.diffusers_loadable:
        reason = NOT_LOADABLE_REASON.get(an.format) or an.diffusers_problem
        if reason is None and any("mid" in m.parts for m in an.modules.values()):
            reason = "LoCon with lora_mid (Tucker) weights: diffusers cannot load them"
        if reason is None and an.shape_mismatches:
            more = f" and {len(an.shape_mismatches) - 1} more" if len(an.shape_mismatches) > 1 else ""
            reason = (f"diffusers refuses the whole file: {an.shape_mismatches[0]}{more} "
                      "(convert it with lorahub convert)")
        if reason:
            warnings.append(reason)
    if an.format == "kohya-dora":
        warnings.append("kohya DoRA: diffusers drops dora_scale (different normalisation axis than peft)")

    modules = sorted(an.modules.values(), key=lambda m: m.name)
    details = [_module_info(m) for m in modules]
    weight_modules = [m for m in modules if m.kind != "orphan"]
    coverage = Coverage(**Counter(d.component for d in details if d.kind != "orphan"))
    ranks = Counter(m.rank for m in weight_modules if m.rank is not None)
    alphas = Counter(m.alpha for m in weight_modules if m.alpha is not None)
    dtypes = Counter(t.dtype for t in header.tensors.values())
    weight_bytes: Counter[str] = Counter()
    params = 0
    for t in header.tensors.values():
        numel = t.numel
        params += numel
        if numel > 1:
            weight_bytes[t.dtype] += t.nbytes
    dominant = (weight_bytes or dtypes).most_common(1)
    card = _card_data(header.path)
    words, source = trigger_words(md, card)
    card_title = (card or {}).get("title")
    title = md.get("ss_output_name") or md.get("modelspec.title") or (utf8(card_title) if isinstance(card_title, str) else None) or None
    resolution, resolution_problems = training_resolution(md)
    recipe = None
    try:
        recipe = recipe_from_metadata(md)
    except RecipeError as exc:
        warnings.append(f"the blend recipe in the metadata cannot be read: {exc}")
    warnings.extend(resolution_problems)
    encoders = [c for c in ("text_encoder", "text_encoder_2", "text_encoder_3") if getattr(coverage, c)]
    return InspectReport(
        path=header.path,
        file_size=header.file_size,
        header_size=header.header_len,
        format=an.format,  # type: ignore[arg-type]
        format_name=FORMAT_NAMES.get(an.format, an.format),
        diffusers_loadable=an.diffusers_loadable,
        loaders=an.full_loaders,
        base_family=family,  # type: ignore[arg-type]
        declared_base_family=declared,  # type: ignore[arg-type]
        family_evidence=evidence,
        cross_attention_dim=an.cross_attention_dim,
        hidden_size=an.hidden_size,
        training_resolution=list(resolution) if resolution else None,
        text_encoders=encoders,  # type: ignore[arg-type]
        rank=_most_common(ranks),
        ranks=sorted(ranks),
        alpha=_most_common(alphas),
        alphas=sorted(alphas),
        modules=len(weight_modules),
        coverage=coverage,
        conv_modules=sum(1 for m in weight_modules if m.conv),
        dora=any(m.dora for m in weight_modules),
        tensors=len(header.tensors),
        parameters=params,
        dtype=DTYPE_NAMES.get(dominant[0][0]) if dominant else None,
        dtypes={DTYPE_NAMES.get(k, k): v for k, v in sorted(dtypes.items())},
        trigger_words=words,
        trigger_source=source,
        title=title,
        training=training_parameters(md),
        modelspec={k: v for k, v in sorted(md.items()) if k.startswith("modelspec.")},
        embedded_hashes={k: md[k] for k in EMBEDDED_HASH_KEYS if md.get(k)},
        # Non-string values break the format; deep ones would also break JSON output.
        metadata={k: v if json_depth_ok(v) else "<value nested too deeply to show>" for k, v in header.metadata.items()},
        recipe=recipe,
        module_details=details,
        warnings=warnings,
    )


_module_model = builder(ModuleInfo)


def _module_info(m) -> ModuleInfo:  # noqa: ANN001 - a formats.Module
    """The module's :class:`ModuleInfo`, not validated field by field (validation was 2.7 us a module, 2.6 ms of
    an SDXL file's 986 modules; :func:`lorahub.schemas.construct.builder`): each value is made here of the type
    validation would give it (numbers as int or float, the component one of Coverage's);
    tests/adapters/test_inspect.py holds it equal to the validated model for every layout the tests know."""
    return _module_model({
        "name": str(m.name),
        "component": m.component if m.component in _COMPONENTS else "unknown",
        "kind": str(m.kind),
        "rank": None if m.rank is None else int(m.rank),
        "alpha": None if m.alpha is None else float(m.alpha),
        "scale": None if (scale := m.scale) is None else float(scale),
        "in_features": None if m.in_features is None else int(m.in_features),
        "out_features": None if m.out_features is None else int(m.out_features),
        "conv": bool(m.conv),
        "dora": bool(m.dora),
        "dtype": _module_dtype(m),
        "tensors": sorted(t.name for t in m.parts.values()),
    })


def _most_common(counter: Counter) -> Any:
    if not counter:
        return None
    best = max(counter.values())
    return max(k for k, v in counter.items() if v == best)


def _module_dtype(m) -> str | None:  # noqa: ANN001
    for part in ("down", "up", "hada_w1_a", "lokr_w1", "lokr_w1_a", "lokr_w2", "lokr_w2_a", "diff"):
        t = m.parts.get(part)
        if t is not None:
            return DTYPE_NAMES.get(t.dtype, t.dtype)
    return None


def _card_data(path: str) -> dict[str, Any] | None:
    """YAML front matter of a README.md beside the file (an adapter package or repo)."""
    readme = Path(path).parent / "README.md"
    try:
        if not readme.is_file() or readme.stat().st_size > 1_000_000:
            return None
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    from lorahub.hub.card import front_matter

    block, _ = front_matter(text)
    if block is None:
        return None
    from lorahub.errors import YamlError
    from lorahub.safeyaml import load

    try:
        data = load(block, first_line=2, what="README.md metadata")
    except YamlError:  # a broken (or hostile) card is not an error of the adapter
        return None
    return data if isinstance(data, dict) else None
