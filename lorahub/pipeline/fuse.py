"""Write a base model with adapters fused into its weights (for runtimes without LoRA support).

``fuse(base, [("style.safetensors", 0.8)], "merged/")`` loads the base once
into a :class:`~lorahub.pipeline.live.LivePipeline` (so the adapters get the
same compatibility checks, LyCORIS conversion and no-op verification as
previews), sets the weights, then ``fuse_lora`` + ``unload_lora_weights`` and
``save_pretrained`` (safetensors). The folder is written beside the target and
renamed into place: an interrupted fuse leaves nothing half-written. A
``lorahub_fused.json`` next to ``model_index.json`` records the base and the
adapters (path, SHA-256, weights).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

MANIFEST = "lorahub_fused.json"


@dataclass
class FuseResult:
    path: str
    base: str
    adapters: list[dict[str, Any]]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "base": self.base,
            "adapters": self.adapters,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }


def _specs(loras: Sequence[Any]) -> list[tuple[str, float, float, float | None, str]]:
    """(source, te, unet, te2, name) from ``"spec"`` strings, ``(path, weight)``, ``(path, (te, unet))`` or
    ``(path, (te, unet, te2))`` (``te2``: SDXL's second text encoder, None = ``te``)."""
    from .prompt import parse_spec

    out = []
    for item in loras:
        if isinstance(item, (str, os.PathLike)):
            tag = parse_spec(os.fspath(item), what="--lora")
            out.append((tag.name, tag.te, tag.unet, tag.te2, Path(tag.name).stem))
            continue
        path, weight = os.fspath(item[0]), item[1] if len(item) > 1 else 1.0
        te2 = None
        if isinstance(weight, (tuple, list)):
            te, unet = float(weight[0]), float(weight[1])
            te2 = float(weight[2]) if len(weight) > 2 else None
        else:
            te = unet = float(weight)
        out.append((path, te, unet, te2, Path(path).stem))
    return out


def fuse(
    base: Any,
    loras: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    base_config: Any = None,
    dtype: Any = None,
    overwrite: bool = False,
    lora_dirs: Sequence[Any] = (),
    resolver: Any = None,
    log: Any = None,
) -> FuseResult:
    """Fuse ``loras`` into ``base`` and save the pipeline to ``out_dir`` (diffusers layout).

    ``loras``: ``"path:weight"`` / ``"path:te:unet"`` (``:te2=W``) specs, ``(path, weight)``,
    ``(path, (te, unet))`` or ``(path, (te, unet, te2))``; names resolve as in previews: through
    ``resolver`` (a :class:`~lorahub.pipeline.resolver.Resolver`; the CLI's also knows the registry), else
    paths, ``lora_dirs`` and Hub ids. ``overwrite`` replaces an existing ``out_dir``.
    """
    from ..adapters.fingerprint import fingerprint_file
    from .live import LivePipeline, quiet

    started = time.perf_counter()
    specs = _specs(loras)
    if not specs:
        raise UsageError("nothing to fuse: give at least one --lora")
    target = Path(out_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise UsageError(f"{target} exists and is not empty", hint="choose another folder or pass --overwrite")
    from ..adapters.inspect import inspect_file
    from .resolver import Resolver

    resolver = resolver if resolver is not None else Resolver(lora_dirs=list(lora_dirs))
    ranks = [max(inspect_file(resolver.resolve(s[0]).path).ranks or [1]) for s in specs]
    # slots as wide as the widest adapter: nothing is re-factored, the fuse is exact
    lp = LivePipeline(base, base_config=base_config, dtype=dtype, log=log, resolver=resolver,
                      target_rank=max(32, *ranks))
    names = []
    warnings: list[str] = []
    adapters = []
    for i, (source, te, unet, te2, stem) in enumerate(specs):
        name = f"{stem}#{i}" if stem in names else stem
        names.append(name)
        ad = lp.add(name, source, te=te, unet=unet, te2=te2)
        warnings.extend(f"{name}: {w}" for w in ad.warnings)
        fp = fingerprint_file(ad.path)
        adapters.append({"name": name, "path": ad.path, "sha256": fp.sha256, "te_weight": te, "unet_weight": unet,
                         **({"te2_weight": te2} if te2 is not None else {})})
    pipe = lp.pipe
    slots = [lp.adapter(n).slot for n in names]
    components = [c for c in ("unet", "text_encoder", "text_encoder_2") if c in pipe.get_list_adapters()]
    with quiet():
        pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=slots)
        pipe.unload_lora_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with quiet():
            pipe.save_pretrained(tmp, safe_serialization=True)
        manifest = {
            "tool": "lorahub",
            "base": lp.base.name,
            "family": lp.base.family,
            "adapters": adapters,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rmdir(trash)
            os.rename(target, trash)
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lp.close()
    return FuseResult(
        path=str(target),
        base=lp.base.name,
        adapters=adapters,
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )
