"""Write a base model with adapters fused into its weights (for runtimes without LoRA support).

``fuse(base, [("style.safetensors", 0.8)], "merged/")``:

- SD 1.x/2.x and SDXL bases are loaded once into a :class:`~lorahub.pipeline.live.LivePipeline` (so the
  adapters get the same compatibility checks, LyCORIS conversion and no-op verification as previews), the
  weights set, then ``fuse_lora`` + ``unload_lora_weights``;
- Flux.1 and SD3 bases (``FluxPipeline``, ``StableDiffusion3Pipeline``) are loaded with
  :func:`lorahub.base.resolve.load_pipeline` and each adapted weight becomes ``W + sum_i w_i dW_i`` directly
  (:func:`fuse_deltas`): the deltas are the ones blends use (:func:`lorahub.pipeline.canonical.load_adapter_file`:
  every layout, kohya's fused qkv split into diffusers' q/k/v exactly, alphas applied), so T5 modules fuse
  too, which diffusers' LoRA loader does not take. Every targeted module must exist in the base with the
  delta's shape; an adapter of another family is refused in one line.

Then ``save_pretrained`` (safetensors). The folder is written beside the target and renamed into place: an
interrupted fuse leaves nothing half-written. A ``lorahub_fused.json`` next to ``model_index.json`` records
the base and the adapters (path, SHA-256, weights).
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

from ..errors import AdapterCompatibilityError, UsageError

MANIFEST = "lorahub_fused.json"
#: Families fused by adding the weight deltas (:func:`fuse_deltas`) instead of through the live pipeline.
DELTA_FAMILIES = ("flux", "sd3")


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
    ref = _delta_base(base, base_config)
    if ref is not None:
        return _fuse_mmdit(ref, specs, target, dtype=dtype, resolver=resolver, started=started)
    ranks = [max(inspect_file(resolver.resolve(s[0]).path).ranks or [1]) for s in specs]
    # slots as wide as the widest adapter: nothing is re-factored, the fuse is exact
    lp = LivePipeline(base, base_config=base_config, dtype=dtype, log=log, resolver=resolver,
                      target_rank=max(32, *ranks))
    names = []
    warnings: list[str] = []
    adapters = []
    try:
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
        _save(pipe, target, {"tool": "lorahub", "base": lp.base.name, "family": lp.base.family, "adapters": adapters})
    finally:
        lp.close()
    return FuseResult(
        path=str(target),
        base=lp.base.name,
        adapters=adapters,
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )


def _delta_base(base: Any, base_config: Any) -> Any:
    """The :class:`~lorahub.base.resolve.BaseRef` of ``base`` when it is a Flux.1 or SD3 base (fused by deltas),
    else None. A loaded pipeline object is never one (the live pipeline takes those)."""
    if base is not None and not isinstance(base, (str, os.PathLike)):
        return None
    from ..base.resolve import resolve_base

    ref = resolve_base(base, base_config=base_config)
    return ref if ref.family in DELTA_FAMILIES else None


def _fuse_mmdit(ref: Any, specs: list[tuple[str, float, float, float | None, str]], target: Path, *, dtype: Any,
                resolver: Any, started: float) -> FuseResult:
    from ..adapters.fingerprint import fingerprint_file
    from ..base.resolve import load_pipeline

    pipe = load_pipeline(ref, dtype=dtype)
    items = []
    adapters = []
    names: list[str] = []
    for i, (source, te, unet, te2, stem) in enumerate(specs):
        name = f"{stem}#{i}" if stem in names else stem
        names.append(name)
        path = str(resolver.resolve(source).path)
        items.append((path, te, unet, te2))
        fp = fingerprint_file(path)
        adapters.append({"name": name, "path": path, "sha256": fp.sha256, "te_weight": te, "unet_weight": unet,
                         **({"te2_weight": te2} if te2 is not None else {})})
    warnings = fuse_deltas(pipe, ref.family, items, base_name=ref.name)
    _save(pipe, target, {"tool": "lorahub", "base": ref.name, "family": ref.family, "method": "delta",
                         "adapters": adapters})
    return FuseResult(path=str(target), base=ref.name, adapters=adapters, seconds=time.perf_counter() - started,
                      warnings=warnings)


def _component_weight(component: str, te: float, unet: float, te2: float | None) -> float:
    if component in ("transformer", "unet"):
        return unet
    return te2 if component != "text_encoder" and te2 is not None else te


def fuse_deltas(pipe: Any, family: str, items: Sequence[tuple[str, float, float, float | None]], *,
                base_name: str = "") -> list[str]:
    """Add ``sum_i w_i dW_i`` of the adapters ``items`` (``(path, te, unet, te2)``; ``unet`` weighs the
    transformer, ``te2`` the second and third text encoders when given) to the weights of ``pipe``, in place.

    Every adapter must be of ``family`` (else :class:`AdapterCompatibilityError`, one line, before any weight
    changes) and every module it targets must exist in ``pipe`` with the delta's shape. The sums are formed in
    float32 and added to each weight once. Returns the conversion warnings (LyCORIS re-factored...)."""
    import torch

    from ..adapters.inspect import inspect_file
    from .canonical import family_name, load_adapter_file

    base_name = base_name or "model"
    sums: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    warnings: list[str] = []
    for path, te, unet, te2 in items:
        report = inspect_file(path)
        fam = report.base_family
        if fam != family:
            what = "an adapter of unknown family" if fam == "unknown" else f"a {family_name(fam)} adapter"
            raise AdapterCompatibilityError(
                f"{path}: {what} does not fit the {family_name(family)} base {base_name}",
                hint=f"fuse it into a {family_name(fam)} base model" if fam != "unknown" else
                "lorahub fuses Flux.1 and SD3 adapters it recognises (lorahub inspect names the family)",
            )
        lora = load_adapter_file(path, report=report)
        name = Path(path).name
        if lora.conversion:
            warnings.append(f"{name}: {lora.conversion.summary()}")
        warnings.extend(f"{name}: {w}" for w in lora.warnings)
        for key, f in lora.modules.items():
            comp, _, sub = key.partition(".")
            w = _component_weight(comp, te, unet, te2)
            model = getattr(pipe, comp, None)
            if model is None:
                raise AdapterCompatibilityError(f"{path}: has weights for {comp}, which the base {base_name} lacks")
            try:
                layer = _submodule(model, sub)
            except AttributeError:
                raise AdapterCompatibilityError(
                    f"{path}: module '{key}' is not in the base {base_name}",
                    hint="adapters only fit the architecture they were trained on") from None
            weight = getattr(layer, "weight", None)
            delta = f.delta().float()
            if weight is None or delta.numel() != weight.numel() or (f.kernel is None and delta.shape != weight.shape):
                shape = None if weight is None else list(weight.shape)
                raise AdapterCompatibilityError(
                    f"{path}: module '{key}' is {list(delta.shape)} but the base {base_name} has {shape}",
                    hint="adapters only fit the architecture they were trained on")
            if w == 0.0:
                continue
            delta = delta.reshape(weight.shape) * w
            sums[key] = delta if key not in sums else sums[key] + delta
            targets[key] = weight
    with torch.no_grad():
        for key, delta in sums.items():
            weight = targets[key]
            weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    return warnings


def _submodule(model: Any, path: str) -> Any:
    """``model``'s module at ``path``; CLIP keys name ``text_model.``, which transformers 5's CLIPTextModel no
    longer nests its layers under."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        if path.startswith("text_model."):
            return model.get_submodule(path.removeprefix("text_model."))
        raise


def _save(pipe: Any, target: Path, manifest: dict[str, Any]) -> None:
    """``pipe.save_pretrained`` into ``target`` with :data:`MANIFEST`, written beside it and renamed into place."""
    from .live import quiet

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with quiet():
            pipe.save_pretrained(tmp, safe_serialization=True)
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
