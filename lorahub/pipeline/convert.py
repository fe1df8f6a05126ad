"""Rewrite one adapter file in a layout other tools load fully (``lorahub convert``).

``convert("style_loha.safetensors", "style.safetensors", format="kohya")`` reads
any format lorahub reads (kohya LoRA/LoCon, diffusers, peft, LyCORIS LoHa/LoKr/
full, see :mod:`lorahub.pipeline.canonical`) and writes a plain LoRA in the
``kohya`` or ``diffusers`` layout (``docs/formats.md``): alpha/rank folded into
the up factors, conv modules 4-D, kohya's ``sshs_*`` hashes embedded. LoRA
modules keep their factors (exact); LyCORIS modules become exact LoRA factors
re-factored by SVD at ``rank`` (the error is reported).

The source's training metadata (``ss_*``, ``modelspec.*``) is kept, except
what no longer describes the file: hashes, the network module/dim/alpha (now
``networks.lora`` with alpha = rank), ``modelspec.implementation`` (the
written layout's: SDXL kohya names are the SGM UNet's) and diffusers'
``lora_adapter_metadata`` (its alphas were folded in). ``lorahub.converted_from`` records the source.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

#: Source metadata keys a conversion drops (they describe the source's tensors or layout).
_DROPPED = {
    "format", "lora_adapter_metadata", "sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256",
    "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
    "modelspec.implementation",  # the layout's own (SDXL kohya names are the SGM UNet's)
}


@dataclass
class ConvertResult:
    path: str
    source: str
    source_format: str
    format: str
    modules: int
    rank: int
    conversion: dict[str, Any] | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "source": self.source,
            "source_format": self.source_format,
            "format": self.format,
            "modules": self.modules,
            "rank": self.rank,
            "conversion": self.conversion,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }


def convert(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str = "kohya",  # noqa: A002 - the CLI option's name
    rank: int | None = None,
    dtype: str = "float16",
    title: str | None = None,
) -> ConvertResult:
    """Write ``source`` to ``out`` in the layout ``format`` (``kohya`` or ``diffusers``)."""
    from ..adapters.fingerprint import fingerprint_file
    from ..adapters.header import read_header
    from ..adapters.layouts import KOHYA_FAMILIES, WRITE_FORMATS
    from .blend import write_lora
    from .canonical import family_name, load_adapter_file

    started = time.perf_counter()
    if format not in WRITE_FORMATS:
        raise UsageError(f"unknown adapter format '{format}'", hint=f"use one of {', '.join(WRITE_FORMATS)}")
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        raise UsageError(f"rank must be a positive integer, not {rank!r}")
    target = Path(out)
    if target.suffix.lower() != ".safetensors":
        raise UsageError(f"{target}: the converted adapter must be written to a .safetensors file")
    src = Path(source)
    if target.exists() and target.resolve() == src.resolve():
        raise UsageError(f"{target}: the output would overwrite the source", hint="choose another -o file")
    lora = load_adapter_file(src, rank=rank)
    if format == "kohya" and lora.family not in KOHYA_FAMILIES:
        raise UsageError(
            f"lorahub writes the kohya layout for SD 1.x, SD 2.x, SDXL, SD3 and Flux.1 adapters, not for "
            f"{family_name(lora.family)} ones", hint="use --format diffusers",
        )
    if not lora.modules:
        raise UsageError(f"{src}: no module lorahub can convert")
    md = {k: v for k, v in read_header(src).string_metadata().items() if k not in _DROPPED}
    fp = fingerprint_file(src)
    md["lorahub.converted_from"] = json.dumps(
        {"file": src.name, "sha256": fp.sha256, "autov3": fp.autov3, "format": lora.format,
         "conversion": lora.conversion.to_dict() if lora.conversion else None},
        sort_keys=True,
    )
    name = title or md.get("ss_output_name") or md.get("modelspec.title") or target.stem
    md.pop("modelspec.trigger_phrase", None)
    md["ss_output_name"] = md["modelspec.title"] = name
    path = write_lora(target, lora, fmt=format, dtype=dtype, title=name, metadata=md,
                      trigger_words=lora.trigger_words)
    warnings = list(lora.warnings)
    if lora.conversion:
        warnings.insert(0, lora.conversion.summary())
    return ConvertResult(
        path=str(path),
        source=str(src),
        source_format=lora.format,
        format=format,
        modules=len(lora.modules),
        rank=lora.max_rank(),
        conversion=lora.conversion.to_dict() if lora.conversion else None,
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )
