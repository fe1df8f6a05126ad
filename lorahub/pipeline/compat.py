"""Does an adapter fit a base pipeline, and did loading it change anything?

Before anything is loaded, :func:`check_report` compares what the
adapter-file layer (:func:`lorahub.adapters.inspect.inspect_file`) says about
the file with the loaded base:

- formats diffusers cannot load: LyCORIS LoHa/LoKr (and full/Tucker LoCon)
  are converted to LoRA by :mod:`lorahub.pipeline.canonical` (exact factors,
  then SVD at a chosen rank, with the approximation error reported); the
  legacy cloneofsimo format, DoRA and the LyCORIS types that are not low-rank
  deltas are refused with a message that says why;
- base family: an SDXL adapter on an SD 1.x base (and every other mismatch) is
  an :class:`~lorahub.errors.AdapterCompatibilityError` naming both families;
- cross-attention width: compared with the base UNet's
  ``config.cross_attention_dim`` too, so nonstandard widths (the embedded tiny
  model has 32) are caught even when both sides say "SD 1.x";
- module shapes: every module the file targets must exist in the base with the
  same in/out features (:func:`map_modules`).

After loading, :func:`verify_loaded` makes a silent no-op impossible: the
adapter must be listed by ``get_list_adapters()`` for every component it
targets, and every targeted module must hold LoRA factors for it whose
product equals the file's (scaled) delta and is non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import AdapterCompatibilityError, AdapterLoadError
from .canonical import FAMILY_NAMES, family_name

if TYPE_CHECKING:  # pragma: no cover
    from lorahub.schemas.adapters import InspectReport

    from .canonical import CanonicalLora

#: The cross-attention width of each family's UNet.
FAMILY_WIDTH = {"sd1": 768, "sd2": 1024, "sdxl": 2048}

#: The families whose adapters the live pipeline loads (each on a base of its own family).
LIVE_FAMILIES = ("sd1", "sd2", "sdxl", "flux", "sd3")

#: Formats the live pipeline converts instead of loading as they are.
CONVERTED_FORMATS = ("lycoris-loha", "lycoris-lokr", "lycoris-full")


@dataclass
class BaseInfo:
    """What the compatibility checks need to know about a loaded base."""

    name: str
    family: str | None
    cross_attention_dim: int | None
    pipeline_class: str
    layers_per_block: int | None = None
    components: tuple[str, ...] = ("unet", "text_encoder")

    @property
    def family_label(self) -> str:
        label = family_name(self.family)
        if self.cross_attention_dim and self.family in FAMILY_WIDTH and FAMILY_WIDTH[self.family] != self.cross_attention_dim:
            label += f", cross-attention width {self.cross_attention_dim}"
        return label

    @classmethod
    def from_pipeline(cls, pipe: Any, *, name: str | None = None, family: str | None = None) -> BaseInfo:
        cfg = getattr(getattr(pipe, "unet", None), "config", None)
        width = getattr(cfg, "cross_attention_dim", None) if cfg is not None else None
        if isinstance(width, (list, tuple)):
            width = width[0] if width else None
        lpb = getattr(cfg, "layers_per_block", None) if cfg is not None else None
        if isinstance(lpb, (list, tuple)):
            lpb = lpb[0] if lpb else None
        cls_name = type(pipe).__name__
        if family is None:
            if cls_name.startswith("Flux"):
                family = "flux"
            elif cls_name.startswith("StableDiffusion3"):
                family = "sd3"
            elif "XL" in cls_name:
                family = "sdxl"
            elif width in (768, 1024):
                family = "sd1" if width == 768 else "sd2"
            elif cfg is not None and getattr(cfg, "use_linear_projection", False):
                family = "sd2"
            else:
                family = "sd1"
        comps = tuple(c for c in ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
                      if getattr(pipe, c, None) is not None)
        return cls(
            name=name or getattr(getattr(pipe, "config", None), "_name_or_path", None) or cls_name,
            family=family,
            cross_attention_dim=int(width) if isinstance(width, int) else None,
            pipeline_class=cls_name,
            layers_per_block=int(lpb) if isinstance(lpb, int) else None,
            components=comps,
        )


@dataclass
class CompatReport:
    """The outcome of :func:`check_report` when the adapter is usable."""

    convert: bool = False
    warnings: list[str] = field(default_factory=list)


def check_report(report: InspectReport, base: BaseInfo) -> CompatReport:
    """Raise :class:`AdapterCompatibilityError` when the adapter cannot work on ``base``."""
    from .canonical import REFUSED

    path = report.path
    if report.format in REFUSED:
        why, hint = REFUSED[report.format]
        raise AdapterCompatibilityError(f"{path}: {report.format_name} refused: {why}", hint=hint)
    out = CompatReport(convert=report.format in CONVERTED_FORMATS)

    fam = report.base_family if report.base_family != "unknown" else None
    evidence = "; ".join(report.family_evidence) or "metadata"
    if fam and fam not in LIVE_FAMILIES:  # the families lorahub only names (Qwen-Image, Wan, ...)
        raise AdapterCompatibilityError(
            f"{path}: a {family_name(fam)} adapter ({evidence}) cannot be used with the {base.family_label} base "
            f"{base.name}",
            hint="lorahub's live pipeline supports SD 1.x, SD 2.x, SDXL, Flux.1 and SD3 bases",
        )
    if fam and base.family and fam != base.family:
        raise AdapterCompatibilityError(
            f"{path}: {_an(family_name(fam))} adapter ({evidence}) does not fit the {base.family_label} base {base.name}",
            hint=f"load it on {_an(family_name(fam))} base model",
        )
    width = report.cross_attention_dim
    if width and base.cross_attention_dim and width != base.cross_attention_dim:
        made_for = next((f for f, w in FAMILY_WIDTH.items() if w == width), None)
        made = f" ({family_name(made_for)})" if made_for else ""
        raise AdapterCompatibilityError(
            f"{path}: made for a base with cross-attention width {width}{made}, but the base {base.name} "
            f"({family_name(base.family)}) has width {base.cross_attention_dim}",
            hint="adapters only fit the architecture they were trained on",
        )
    if not report.modules:
        raise AdapterCompatibilityError(f"{path}: has no adapter weights ({report.format_name})")
    if report.coverage.text_encoder_2 and "text_encoder_2" not in base.components:
        raise AdapterCompatibilityError(
            f"{path}: has weights for a second text encoder (SDXL) but the base {base.name} "
            f"({family_name(base.family)}) has only one",
        )
    return out


@dataclass
class ModuleTarget:
    """Where one canonical module lands in the pipeline."""

    key: str  # canonical key
    component: str
    path: str  # module path inside the component
    shape: tuple[int, ...]  # the base weight's shape


def map_modules(pipe: Any, lora: CanonicalLora, base: BaseInfo) -> tuple[dict[str, ModuleTarget], list[str]]:
    """Find each module of ``lora`` in ``pipe``; check the shapes.

    Returns ``(targets, missing)``: ``missing`` lists canonical keys with no
    module in the base. A module whose shape differs raises
    :class:`AdapterCompatibilityError`; so does an adapter none of whose
    modules exist (loading it would change nothing).
    """
    import torch

    targets: dict[str, ModuleTarget] = {}
    missing: list[str] = []
    index: dict[str, dict[str, str]] = {}
    for key, f in lora.modules.items():
        comp, _, path = key.partition(".")
        model = getattr(pipe, comp, None)
        if model is None:
            missing.append(key)
            continue
        candidates = [path]
        if path.startswith("text_model.") and not hasattr(model, "text_model"):
            candidates.insert(0, path[len("text_model.") :])
        module = None
        for cand in candidates:
            try:
                module = model.get_submodule(cand)
                path = cand
                break
            except AttributeError:
                continue
        if module is None:
            # last resort: compare with the flattened names of the model's modules
            flat = index.get(comp)
            if flat is None:
                flat = index[comp] = {
                    n.replace(".", "_"): n
                    for n, m in model.named_modules()
                    if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
                }
            for cand in candidates:
                hit = flat.get(cand.replace(".", "_"))
                if hit is not None:
                    path, module = hit, model.get_submodule(hit)
                    break
        if module is None:
            missing.append(key)
            continue
        base_layer = getattr(module, "base_layer", module)
        weight = getattr(base_layer, "weight", None)
        if weight is None or not isinstance(base_layer, (torch.nn.Linear, torch.nn.Conv2d)):
            raise AdapterCompatibilityError(
                f"{lora.path}: '{key}' is a {type(base_layer).__name__} in the base {base.name}, not a linear or "
                "convolution layer a LoRA can adapt"
            )
        shape = tuple(int(d) for d in weight.shape)
        out_f, in_f = shape[0], 1
        for d in shape[1:]:
            in_f *= d
        if f.B.shape[0] != out_f or f.A.shape[1] != in_f:
            have = f"{f.B.shape[0]}x{f.A.shape[1]}"
            raise AdapterCompatibilityError(
                f"{lora.path}: module '{key}' is {have} in the adapter but {out_f}x{in_f} in the base {base.name}",
                hint=f"the adapter was made for another architecture than this {base.family_label} base",
            )
        if f.kernel is not None and len(shape) == 4 and tuple(f.kernel) != shape[1:]:
            raise AdapterCompatibilityError(
                f"{lora.path}: module '{key}' has a {f.kernel} kernel in the adapter but {shape[1:]} in the base"
            )
        if f.kernel is None and len(shape) == 4:
            f.kernel = shape[1:]  # flattened conv factors (LoHa without Tucker): give them their shape
        targets[key] = ModuleTarget(key=key, component=comp, path=path, shape=shape)
    if not targets:
        example = f" (e.g. '{missing[0]}')" if missing else ""
        raise AdapterLoadError(
            f"{lora.path}: none of its {len(lora.modules)} modules exists in the base {base.name}{example}: "
            "loading it would change nothing",
            hint="the adapter was made for another architecture or uses module names lorahub does not know",
        )
    return targets, missing


def verify_loaded(
    pipe: Any,
    slot: str,
    lora: CanonicalLora,
    targets: dict[str, ModuleTarget],
    *,
    components: set[str] | None = None,
    atol: float = 1e-4,
) -> None:
    """Raise :class:`AdapterLoadError` unless ``slot`` now holds ``lora`` in every targeted module.

    Checks ``pipe.get_list_adapters()`` and, per module, that the LoRA factors
    stored for ``slot`` multiply to the adapter's delta (padding included) and
    that the delta is not zero. ``components`` limits the check (default: all).
    """
    import torch

    listed = pipe.get_list_adapters()
    wanted = components or {t.component for t in targets.values()}
    for comp in sorted(wanted):
        if slot not in listed.get(comp, []):
            raise AdapterLoadError(
                f"{lora.path}: after loading, the {comp} does not list the adapter (a silent no-op load)",
                hint="the file's keys did not reach the model",
            )
    nonzero = False
    for key, tgt in targets.items():
        if tgt.component not in wanted:
            continue
        model = getattr(pipe, tgt.component)
        module = model.get_submodule(tgt.path)
        lora_A = getattr(module, "lora_A", None)
        lora_B = getattr(module, "lora_B", None)
        if lora_A is None or slot not in lora_A or slot not in lora_B:
            raise AdapterLoadError(
                f"{lora.path}: module '{key}' got no LoRA layer for the adapter (a silent no-op load)"
            )
        f = lora.modules[key]
        with torch.no_grad():
            a = lora_A[slot].weight.detach().float().reshape(lora_A[slot].weight.shape[0], -1)
            b = lora_B[slot].weight.detach().float().reshape(lora_B[slot].weight.shape[0], -1)
            k = f.rank
            if a.shape[0] < k or b.shape[1] < k:
                raise AdapterLoadError(f"{lora.path}: module '{key}' holds rank {a.shape[0]} < {k} after loading")
            got_a, got_b = a[:k], b[:, :k]
            exp_a, exp_b = f.A.to(got_a.device), f.B.to(got_b.device)
            tol_a = atol * (1.0 + float(exp_a.abs().max()))
            tol_b = atol * (1.0 + float(exp_b.abs().max()))
            if not (torch.allclose(got_a, exp_a, atol=tol_a, rtol=1e-3) and torch.allclose(got_b, exp_b, atol=tol_b, rtol=1e-3)):
                raise AdapterLoadError(f"{lora.path}: module '{key}' holds other weights than the file after loading")
            if a.shape[0] > k and (a[k:].abs().max() > 0 and b[:, k:].abs().max() > 0):
                raise AdapterLoadError(f"{lora.path}: module '{key}' kept stale weights of a previous adapter")
            if float(exp_b.abs().max()) > 0 and float(exp_a.abs().max()) > 0:
                nonzero = True
    if not nonzero:
        raise AdapterLoadError(
            f"{lora.path}: every weight of the adapter is zero: loading it changes nothing",
            hint="an untrained (freshly initialised) LoRA has zero up/B weights",
        )


def verify_exact(
    pipe: Any,
    slot: str,
    source: str,
    targets: dict[str, ModuleTarget],
    unet_sd: dict[str, Any],
    te_sds: dict[str, dict[str, Any]],
    modules: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Raise :class:`AdapterLoadError` unless every tensor handed to diffusers for ``slot`` is in the model, bit for bit.

    The live pipeline's own check after each load: the state dicts it passed
    (``<component>.<module>.lora_A.weight`` / ``lora_B``, padded, in the
    model's dtype) must be exactly what the LoRA layers of ``slot`` now hold,
    and the adapter must be listed by ``get_list_adapters()`` for every
    component it targets. ``modules`` (component -> ``dict(model.named_modules())``)
    saves the module lookups.
    """
    import torch

    expected: dict[str, Any] = dict(unet_sd)
    for sd in te_sds.values():
        expected.update(sd)
    listed = pipe.get_list_adapters()
    for comp in sorted({k.split(".", 1)[0] for k in expected}):
        # a component diffusers does not list (Flux's and SD3's T5): its own peft config
        names = listed.get(comp) if comp in listed else list(getattr(getattr(pipe, comp, None), "peft_config", {}) or {})
        if slot not in names:
            raise AdapterLoadError(
                f"{source}: after loading, the {comp} does not list the adapter (a silent no-op load)",
                hint="the file's keys did not reach the model",
            )
    checks: list[tuple[str, Any]] = []
    for key, tensor in expected.items():
        comp, rest = key.split(".", 1)
        for which in ("lora_A", "lora_B"):
            suffix = f".{which}.weight"
            if rest.endswith(suffix):
                path = rest[: -len(suffix)]
                break
        else:  # pragma: no cover - the live pipeline only builds these keys
            raise AdapterLoadError(f"internal: unexpected key {key}")
        table = modules.get(comp) if modules else None
        module = table.get(path) if table is not None else None
        if module is None:
            module = getattr(pipe, comp).get_submodule(path)
        layer = getattr(module, which, None)
        if layer is None or slot not in layer:
            raise AdapterLoadError(f"{source}: module '{comp}.{path}' got no LoRA layer for the adapter (a silent no-op load)")
        stored = layer[slot].weight
        if stored.shape != tensor.shape:
            raise AdapterLoadError(f"{source}: module '{comp}.{path}' holds other weights than the file after loading")
        checks.append((f"{comp}.{path}", torch.ne(stored.detach(), tensor.to(stored.device)).any()))
    if checks:
        # one device synchronisation for all modules (on a GPU each comparison alone would wait)
        bad = torch.stack([c for _, c in checks]).cpu()
        if bool(bad.any()):
            name = checks[int(bad.int().argmax())][0]
            raise AdapterLoadError(f"{source}: module '{name}' holds other weights than the file after loading")


def _an(name: str) -> str:
    """``"an SDXL"``, ``"a Flux.1"``: the article as the name is spoken."""
    return f"{'an' if name[:1] in 'AEIOUS' else 'a'} {name}"


def describe_family(family: str | None) -> str:
    return FAMILY_NAMES.get(family, str(family))
