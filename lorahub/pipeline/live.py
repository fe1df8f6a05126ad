"""One loaded base pipeline, many adapters: add, remove, weigh and hot-swap them by name.

:class:`LivePipeline` loads a base once (the embedded default, a diffusers
folder, a single-file checkpoint or a Hub id, through
:func:`lorahub.base.resolve.load_pipeline`; SD 1.x/2.x, SDXL, Flux.1 and SD3
pipeline classes) and then manages adapters by the names users give them. On
Flux.1 and SD3 the transformer plays the UNet's part everywhere below (its
weight is an adapter's "unet" weight); the T5 parts of their adapters, which
diffusers' pipelines do not load, are loaded as diffusers loads CLIP parts
(transformers' ``load_adapter``), Flux's T5 weighed as ``te2``, SD3's as ``te``. Changing
which adapters are active, their weights, or replacing an adapter with another
file never reloads the base and, under ``torch.compile``, never recompiles.

How the known peft/diffusers hot-swap pitfalls (each below with its upstream
issue) are made impossible rather than worked around each time:

- **Substring names corrupt adapters** (peft#3780: swapping ``X`` zeroes every
  adapter whose parameter names contain ``X``). User names never reach peft.
  Every adapter lives in a *slot* with a fixed-width id ``lhs0001``,
  ``lhs0002``, ...: equal length and distinct, so no id is a substring of
  another; the ``lhs`` + four digits pattern occurs in no diffusers or
  transformers module name (checked when a slot is created).
- **A swap resets the adapter's weight to 1.0.** Every operation that loads
  ends by re-applying the weights of every slot (:meth:`_apply`).
- **Rank/alpha changes break scales** (peft#3581, #3738: the layer keeps the old
  ``r``/``lora_alpha``; per-module patterns fall back to global ones). Adapters
  are loaded from :class:`~lorahub.pipeline.canonical.CanonicalLora` with
  ``alpha / r`` already folded into ``lora_B`` and zero-padded to the slot rank
  (the hot-swap target rank), so every module of every slot has
  ``lora_alpha == r``: whatever is swapped in, the scale is the weight.
- **enable_lora_hotswap must precede the first load.** The constructor calls
  it before anything can be loaded, and refuses a pipeline that already holds
  adapters.
- **Text-encoder parts cannot be hot-swapped** (diffusers refuses). A swap
  hot-swaps the UNet part in place (``load_lora_weights(..., hotswap=True)``) and
  copies the text-encoder part into the slot's existing layers when it fits them
  (zero-padded, as the UNet part); otherwise it deletes the slot's text-encoder
  layers and loads the new ones normally. Only the UNet is compiled, so this
  never recompiles.
- **Silent no-op loads.** Every load is checked by
  :func:`lorahub.pipeline.compat.verify_loaded`.

Weights are per adapter and per component: the UNet, the text encoder(s) (A1111's
``<lora:name:te:unet>``) and, on SDXL, the second text encoder apart when asked
(``te2``). They are set directly on the LoRA layers' ``scaling`` (in place when it is a
tensor, as ``prepare_model_for_compiled_hotswap`` makes it), the same values
``set_adapters`` would compute with per-component weights; ``pipe.set_adapters`` itself would replace the
tensors by floats and force a recompilation under ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterCompatibilityError, AdapterLoadError, NotFoundError, UsageError
from .prompt import LoraTag, parse_prompt

SLOT_PREFIX = "lhs"
SLOT_DIGITS = 4
SLOT_RE = re.compile(rf"^{SLOT_PREFIX}\d{{{SLOT_DIGITS}}}$")
DEFAULT_TARGET_RANK = 32
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
#: The pipeline components that denoise: SD 1.x/2.x/SDXL's UNet, Flux.1's and SD3's transformer. An adapter's
#: "unet" weight (A1111's ``<lora:name:te:unet>``) is the denoiser's, whichever it is.
DENOISERS = ("unet", "transformer")


def slot_id(n: int) -> str:
    """The n-th slot id (``lhs0001``...); fixed width, so never a substring of another."""
    if not 1 <= n < 10**SLOT_DIGITS:
        raise UsageError(f"too many adapter slots ({n})")
    return f"{SLOT_PREFIX}{n:0{SLOT_DIGITS}d}"


@dataclass
class Adapter:
    """An adapter as the user sees it."""

    name: str
    slot: str
    path: str
    source: str
    format: str
    rank: int
    components: tuple[str, ...]
    unet_weight: float = 1.0
    te_weight: float = 1.0
    #: SDXL's second text encoder's weight when it differs from ``te_weight`` (None: ``te_weight``).
    te2_weight: float | None = None
    enabled: bool = True
    trigger_words: list[str] = field(default_factory=list)
    conversion: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    swaps: int = 0
    load_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slot": self.slot,
            "path": self.path,
            "source": self.source,
            "format": self.format,
            "rank": self.rank,
            "components": list(self.components),
            "unet_weight": self.unet_weight,
            "te_weight": self.te_weight,
            **({"te2_weight": self.te2_weight} if self.te2_weight is not None else {}),
            "enabled": self.enabled,
            "trigger_words": list(self.trigger_words),
            "conversion": self.conversion,
            "warnings": list(self.warnings),
            "swaps": self.swaps,
            "load_seconds": round(self.load_seconds, 4),
        }

    @property
    def te2(self) -> float:
        """The weight of the second text encoder (SDXL's and SD3's CLIP-G, Flux.1's T5): ``te2_weight``, else
        ``te_weight``."""
        return self.te_weight if self.te2_weight is None else self.te2_weight

    def weight_of(self, component: str) -> float:
        """The weight applied to ``component`` (``unet`` or ``transformer``: the denoiser's; ``text_encoder``,
        ``text_encoder_2``; ``text_encoder_3``, SD3's T5, follows ``te_weight``)."""
        if component in DENOISERS:
            return self.unet_weight
        return self.te2 if component == "text_encoder_2" else self.te_weight

    def label(self) -> str:
        w = f"{self.unet_weight:g}" if self.te_weight == self.unet_weight else f"te {self.te_weight:g}, unet {self.unet_weight:g}"
        if self.te2 != self.te_weight:
            w = f"te {self.te_weight:g}, unet {self.unet_weight:g}, te2 {self.te2:g}"
        return f"{self.name} ({w}{'' if self.enabled else ', disabled'})"


@dataclass
class _Slot:
    id: str
    unet_paths: frozenset[str] = frozenset()
    te: dict[str, bool] = field(default_factory=dict)
    adapter: str | None = None  # user name, None = free


@dataclass
class _Prepared:
    """A checked, canonical adapter and the exact tensors a slot receives (cached per file)."""

    lora: Any
    targets: dict[str, Any]
    notes: list[str]
    unet_sd: dict[str, Any]
    te_sds: dict[str, dict[str, Any]]

    @property
    def unet_paths(self) -> frozenset[str]:
        return frozenset(t.path for t in self.targets.values() if t.component in DENOISERS)


#: How many prepared adapters a LivePipeline keeps (A/B toggling swaps without re-reading files).
PREPARED_CACHE = 16
#: Denoisers up to this many parameters render on one CPU thread (:meth:`LivePipeline._threads`).
SMALL_DENOISER = 50_000_000


@dataclass
class Render:
    """One generated image and how it was made."""

    image: Any  # PIL.Image.Image, or a numpy array with output_type="np"
    prompt: str
    negative: str | None
    seed: int
    steps: int
    width: int
    height: int
    guidance: float
    seconds: float
    adapters: list[dict[str, Any]]
    tags: list[LoraTag] = field(default_factory=list)
    sampler: str = "DDIM"

    def infotext(self) -> str:
        """A1111-style parameters text (saved into PNGs)."""
        from .prompt import LoraTag, format_tags

        loras = format_tags([LoraTag(a["name"], a["te_weight"], a["unet_weight"], te2=a.get("te2_weight"))
                             for a in self.adapters])
        lines = [f"{self.prompt} {loras}".strip()]
        if self.negative:
            lines.append(f"Negative prompt: {self.negative}")
        lines.append(
            f"Steps: {self.steps}, Sampler: {self.sampler}, CFG scale: {self.guidance:g}, Seed: {self.seed}, "
            f"Size: {self.width}x{self.height}, Generator: lorahub"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative": self.negative,
            "seed": self.seed,
            "steps": self.steps,
            "width": self.width,
            "height": self.height,
            "guidance": self.guidance,
            "seconds": round(self.seconds, 4),
            "adapters": self.adapters,
        }


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """diffusers/transformers/peft advisory logging, warnings and progress bars off."""
    from ..base.resolve import _quiet_loading

    with _quiet_loading(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _lora_layers(model: Any) -> Iterator[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and hasattr(module, "scaling"):
            yield module


def unique_name(name: str, taken: Iterable[str], *, sep: str = "#") -> str:
    """``name``, else ``name<sep>2``, ``name<sep>3``... : the first that is not ``taken`` (adapter names in
    one session are unique)."""
    used = set(taken)
    unique, n = name, 2
    while unique in used:
        unique, n = f"{name}{sep}{n}", n + 1
    return unique


class LivePipeline:
    """A base pipeline kept loaded, with adapters managed by name (see the module docstring).

    ``base``: anything :func:`lorahub.base.resolve.resolve_base` takes (default:
    the embedded model). ``pipe``: an already loaded diffusers pipeline instead
    (it must hold no adapters). ``target_rank``: the rank every slot is padded
    to, i.e. the largest adapter rank that can be hot-swapped in; larger
    adapters are re-factored to it by SVD (with a warning giving the error).
    ``compile``: ``None``, ``"eager"`` (cheap, counts recompilations on CPU),
    ``"inductor"`` or another ``torch.compile`` backend; the UNet is compiled in
    place before the first image. ``resolver``: turns names into files
    (:class:`lorahub.pipeline.resolver.Resolver`; ``lora_dirs`` feeds the default one).
    """

    def __init__(
        self,
        base: Any = None,
        *,
        pipe: Any = None,
        device: str = "cpu",
        dtype: Any = None,
        base_config: Any = None,
        target_rank: int = DEFAULT_TARGET_RANK,
        compile: str | None = None,  # noqa: A002 - mirrors torch.compile
        resolver: Any = None,
        lora_dirs: Iterable[Any] = (),
        convert_rank: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from ..errors import require
        from .compat import BaseInfo

        require("torch", "ml")
        require("diffusers", "ml")
        if not isinstance(target_rank, int) or target_rank < 1:
            raise UsageError(f"target rank must be a positive integer, not {target_rank!r}")
        self._lock = threading.RLock()
        self.log = log or (lambda _msg: None)
        self.target_rank = target_rank
        self.convert_rank = convert_rank
        self.compile_backend = compile
        self._compiled = False
        self._size: int | None = None
        self._frames_at_compile: int | None = None
        self.stats: dict[str, int] = {
            "base_loads": 0,
            "adapter_loads": 0,
            "hotswaps": 0,
            "reloads": 0,
            "weight_updates": 0,
            "renders": 0,
        }
        self.timings: dict[str, list[float]] = {"load": [], "hotswap": [], "weights": [], "render": []}
        ref_name, family, ref_path = None, None, None
        if pipe is None:
            from ..base.resolve import load_pipeline, resolve_base

            ref = resolve_base(base, base_config=base_config)
            started = time.perf_counter()
            pipe = load_pipeline(ref, device=device, dtype=dtype)
            self.stats["base_loads"] += 1
            self.base_load_seconds = time.perf_counter() - started
            ref_name, family, ref_path = ref.name, ref.family, ref.path
        else:
            self.stats["base_loads"] += 1
            self.base_load_seconds = 0.0
            if any(getattr(getattr(pipe, c, None), "peft_config", None) for c in (*DENOISERS, *TEXT_ENCODERS)):
                raise AdapterLoadError(
                    "the pipeline already holds LoRA adapters: LivePipeline must make every load itself "
                    "(enable_lora_hotswap has to come before the first one)",
                    hint="pass a freshly loaded pipeline",
                )
        self.pipe = pipe
        #: The component that denoises: "unet" (SD 1.x/2.x, SDXL) or "transformer" (Flux.1, SD3).
        has_unet = getattr(pipe, "unet", None) is not None
        self.denoiser = "transformer" if not has_unet and getattr(pipe, "transformer", None) is not None else "unet"
        self._native = _marked_resolution(ref_path)
        from ..base import drawing

        self._guidance = drawing.GUIDANCE if drawing.is_drawing_base(ref_path) else None
        self._group_offloaded = _group_offloaded(pipe)
        self.device = str(getattr(pipe, "device", device))
        self.base = BaseInfo.from_pipeline(pipe, name=ref_name, family=family)
        if resolver is None:
            from .resolver import Resolver

            resolver = Resolver(lora_dirs=list(lora_dirs))
        self.resolver = resolver
        self._slots: dict[str, _Slot] = {}
        self._adapters: dict[str, Adapter] = {}
        self._active: dict[str, tuple[str, ...] | None] = {}
        self._layers: dict[str, list[Any]] = {}
        self._prepared: dict[tuple[str, int, int], _Prepared] = {}
        # Pitfall: enable_lora_hotswap must come before the first load. Nothing is loaded yet.
        with quiet():
            pipe.enable_lora_hotswap(target_rank=target_rank, check_compiled="ignore")
        self._hotswap_enabled = True

    # ------------------------------------------------------------------ views

    @property
    def adapters(self) -> list[Adapter]:
        return list(self._adapters.values())

    def adapter(self, name: str) -> Adapter:
        try:
            return self._adapters[name]
        except KeyError:
            known = ", ".join(self._adapters) or "none"
            raise NotFoundError(f"no adapter named '{name}' is loaded (loaded: {known})") from None

    @property
    def slots(self) -> dict[str, str | None]:
        """slot id -> the user name it holds (None: free)."""
        return {s.id: s.adapter for s in self._slots.values()}

    @property
    def denoiser_model(self) -> Any:
        """The pipeline's UNet or transformer."""
        return getattr(self.pipe, self.denoiser)

    @property
    def dtype(self) -> Any:
        return self.denoiser_model.dtype

    def default_guidance(self) -> float:
        """The guidance scale the base's own pipeline uses by default: Flux.1-dev's guidance embedding 3.5,
        0 for a Flux model without one (schnell, which ignores it), SD3's 7.0, classifier-free 7.5 for SD 1.x/2.x and
        SDXL (the diffusers pipelines' defaults); the drawing base's own, 3 (:data:`lorahub.base.drawing.GUIDANCE`)."""
        if self._guidance is not None:
            return self._guidance
        kind = type(self.pipe).__name__
        if kind.startswith("Flux"):
            return 3.5 if getattr(self.denoiser_model.config, "guidance_embeds", False) else 0.0
        if kind.startswith("StableDiffusion3"):
            return 7.0
        return 7.5

    def sampler_name(self) -> str:
        """The sampler written into an image's parameters text, from the pipeline's scheduler."""
        name = type(getattr(self.pipe, "scheduler", None)).__name__
        return {"DDIMScheduler": "DDIM", "FlowMatchEulerDiscreteScheduler": "Euler (flow matching)",
                "EulerDiscreteScheduler": "Euler", "EulerAncestralDiscreteScheduler": "Euler a",
                "DPMSolverMultistepScheduler": "DPM++ 2M", "PNDMScheduler": "PLMS",
                "LMSDiscreteScheduler": "LMS"}.get(name, name.removesuffix("Scheduler") or "DDIM")

    def native_size(self) -> tuple[int, int]:
        """``(width, height)`` the base was trained at: the UNet's (SD3 transformer's) sample size times the VAE's
        scale; an embedded Flux/SD3 base's recorded size; FluxPipeline's default otherwise (1024)."""
        if self._native and self.denoiser == "transformer":
            return self._native, self._native
        scale = getattr(self.pipe, "vae_scale_factor", 8) or 8
        default = getattr(self.pipe, "default_sample_size", 64)
        sample = getattr(self.denoiser_model.config, "sample_size", None) or default
        if isinstance(sample, (list, tuple)):
            sample = sample[0]
        side = int(sample) * int(scale)
        return side, side

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base": self.base.name,
            "family": self.base.family,
            "pipeline_class": self.base.pipeline_class,
            "device": self.device,
            "target_rank": self.target_rank,
            "compile": self.compile_backend,
            "adapters": [a.to_dict() for a in self.adapters],
            "slots": self.slots,
            "stats": dict(self.stats),
        }
        recompiles = self.recompilations()
        if recompiles is not None:
            out["stats"]["recompilations"] = recompiles
        return out

    # ------------------------------------------------------------------ adapters

    def add(
        self,
        name: str,
        source: Any = None,
        *,
        weight: float | None = None,
        te: float | None = None,
        unet: float | None = None,
        enabled: bool = True,
        te2: float | None = None,
    ) -> Adapter:
        """Load ``source`` (default: ``name``, resolved by the resolver) as adapter ``name``.

        ``weight`` sets every component; ``te``/``unet`` the text encoders' and the UNet's
        (A1111's ``<lora:name:te:unet>``); ``te2`` the second text encoder's alone (SDXL/SD3: CLIP-G, Flux.1: T5).

        If ``name`` is already loaded, this is :meth:`swap`. A free slot whose
        modules cover the new adapter's is reused by hot-swapping.
        """
        with self._lock:
            if name in self._adapters:
                ad = self.swap(name, source if source is not None else self._adapters[name].source)
                if weight is not None or te is not None or unet is not None or te2 is not None:
                    self.set_weight(name, weight, te=te, unet=unet, te2=te2)
                if enabled != ad.enabled:
                    self.enable(name, enabled)
                return ad
            resolved = self.resolver.resolve(str(source if source is not None else name))
            started = time.perf_counter()
            prep = self._prepare(resolved.path)
            lora, notes = prep.lora, prep.notes
            unet_paths = prep.unet_paths
            slot = next(
                (s for s in self._slots.values() if s.adapter is None and unet_paths and unet_paths <= s.unet_paths),
                None,
            )
            if slot is not None:
                self._load_into(slot, prep, hotswap=True)
                self.stats["hotswaps"] += 1
            else:
                slot = self._new_slot()
                self._load_into(slot, prep, hotswap=False)
            elapsed = time.perf_counter() - started
            self.stats["adapter_loads"] += 1
            self.timings["load"].append(elapsed)
            w_te, w_unet = _weights(weight, te, unet, default=(1.0, 1.0))
            ad = Adapter(
                name=name,
                slot=slot.id,
                path=str(resolved.path),
                source=resolved.source,
                format=lora.format,
                rank=lora.max_rank(),
                components=tuple(sorted(lora.components())),
                unet_weight=w_unet,
                te_weight=w_te,
                te2_weight=_finite(te2),
                enabled=enabled,
                trigger_words=list(lora.trigger_words),
                conversion=lora.conversion.to_dict() if lora.conversion else None,
                warnings=notes,
                load_seconds=elapsed,
            )
            slot.adapter = name
            self._adapters[name] = ad
            self._apply()
            self.log(f"loaded {name} into {slot.id} in {elapsed * 1000:.0f} ms")
            return ad

    def swap(self, name: str, source: Any) -> Adapter:
        """Replace the weights of adapter ``name`` by the file ``source``, in place (hot-swap).

        The base is not reloaded and a compiled UNet is not recompiled. The
        adapter keeps its weights and enabled state. When the new file targets
        UNet modules the slot lacks, the slot is reloaded instead (counted in
        ``stats["reloads"]``, and under ``torch.compile`` that recompiles).
        """
        with self._lock:
            ad = self.adapter(name)
            slot = self._slots[ad.slot]
            resolved = self.resolver.resolve(str(source))
            started = time.perf_counter()
            prep = self._prepare(resolved.path)
            lora, notes = prep.lora, prep.notes
            unet_paths = prep.unet_paths
            if unet_paths <= slot.unet_paths or not unet_paths:
                self._load_into(slot, prep, hotswap=True)
                self.stats["hotswaps"] += 1
                self.timings["hotswap"].append(time.perf_counter() - started)
            else:
                extra = len(unet_paths - slot.unet_paths)
                notes = [*notes, f"{extra} UNet module(s) not in slot {slot.id}: reloaded instead of hot-swapped"]
                self._unload_slot(slot)
                self._load_into(slot, prep, hotswap=False)
                self.stats["reloads"] += 1
            elapsed = time.perf_counter() - started
            ad.path = str(resolved.path)
            ad.source = resolved.source
            ad.format = lora.format
            ad.rank = lora.max_rank()
            ad.components = tuple(sorted(lora.components()))
            ad.trigger_words = list(lora.trigger_words)
            ad.conversion = lora.conversion.to_dict() if lora.conversion else None
            ad.warnings = notes
            ad.swaps += 1
            ad.load_seconds = elapsed
            # Pitfall: a swap resets the adapter's weight to 1.0; re-apply every weight.
            self._apply()
            self.log(f"swapped {name} ({slot.id}) to {resolved.source} in {elapsed * 1000:.0f} ms")
            return ad

    def remove(self, name: str, *, unload: bool = False) -> None:
        """Remove adapter ``name``. Its slot stays loaded (disabled, reused by the next add) unless ``unload``."""
        with self._lock:
            ad = self.adapter(name)
            slot = self._slots[ad.slot]
            del self._adapters[name]
            slot.adapter = None
            if unload:
                self._unload_slot(slot)
                del self._slots[slot.id]
                self._active.clear()
            self._apply()

    def enable(self, name: str, enabled: bool = True) -> None:
        with self._lock:
            self.adapter(name).enabled = enabled
            self._apply()

    def disable(self, name: str) -> None:
        self.enable(name, False)

    def set_weight(self, name: str, weight: float | None = None, *, te: float | None = None, unet: float | None = None,
                   te2: float | None = None) -> None:
        """One weight for every part, or separate text-encoder and UNet weights (A1111 ``<lora:name:te:unet>``);
        ``te2`` gives SDXL's second text encoder its own weight (otherwise it follows ``te``)."""
        with self._lock:
            ad = self.adapter(name)
            ad.te_weight, ad.unet_weight = _weights(weight, te, unet, default=(ad.te_weight, ad.unet_weight))
            if te2 is not None:
                ad.te2_weight = _finite(te2)
            elif weight is not None or te is not None:
                ad.te2_weight = None  # follows te again
            self._apply()

    def set_weights(self, weights: dict[str, Any], *, exclusive: bool = False) -> None:
        """Several weights at once: ``{name: w | (te, unet) | (te, unet, te2)}``; ``exclusive`` disables every
        other adapter."""
        with self._lock:
            for name, w in weights.items():
                ad = self.adapter(name)
                if isinstance(w, (tuple, list)):
                    if len(w) not in (2, 3):
                        raise UsageError(f"weights of '{name}': one number, (te, unet) or (te, unet, te2)")
                    ad.te_weight, ad.unet_weight = _finite(w[0]), _finite(w[1])
                    ad.te2_weight = _finite(w[2]) if len(w) == 3 else None
                else:
                    ad.te_weight = ad.unet_weight = _finite(w)
                    ad.te2_weight = None
                ad.enabled = True
            if exclusive:
                for ad in self._adapters.values():
                    if ad.name not in weights:
                        ad.enabled = False
            self._apply()

    @contextlib.contextmanager
    def scaling_tensors(self, weights: dict[str, dict[str, Any]]) -> Iterator[None]:
        """Within the block, the LoRA layers of each named adapter scale by the given tensors, per component
        (``{name: {"unet": t, "text_encoder": t, "text_encoder_2": t}}``, "unet" meaning the denoiser, UNet or
        transformer): e.g. tensors that require grad, so
        that autograd reaches the weights through the scaled deltas (``lorahub.pipeline.blendsearch``). The
        adapters must be enabled; afterwards every scaling is the adapters' weights again."""
        with self._lock:
            slots = {self.adapter(name).slot: per for name, per in weights.items()}
            saved: list[tuple[Any, str, Any]] = []
            try:
                for comp in (self.denoiser, *TEXT_ENCODERS):
                    part = "unet" if comp == self.denoiser else comp
                    for module in self._lora_layers(comp):
                        for slot, per in slots.items():
                            if slot in module.scaling and part in per:
                                saved.append((module, slot, module.scaling[slot]))
                                module.scaling[slot] = per[part] * (module.lora_alpha[slot] / module.r[slot])
                yield
            finally:
                for module, slot, value in saved:
                    module.scaling[slot] = value
                self._apply()

    def apply_tags(self, tags: list[LoraTag], *, exclusive: bool = True) -> None:
        """Load what the tags name and give them their weights; with ``exclusive``, others are disabled (A1111)."""
        with self._lock:
            for tag in tags:
                if tag.name not in self._adapters:
                    self.add(tag.name, te=tag.te, unet=tag.unet, te2=tag.te2)
            self.set_weights({t.name: t.weights for t in tags}, exclusive=exclusive)

    # ------------------------------------------------------------------ images

    def render(
        self,
        prompt: str,
        *,
        negative: str | None = None,
        seed: int = 0,
        steps: int = 20,
        width: int = 64,
        height: int = 64,
        guidance: float | None = None,
        output_type: str = "pil",
        tags: bool = True,
    ) -> Render:
        """Generate one image. ``<lora:...>`` tags in ``prompt`` are applied first (A1111 semantics).

        ``guidance`` defaults to the base's own (:meth:`default_guidance`)."""
        import torch

        if guidance is None:
            guidance = self.default_guidance()

        with self._lock:
            text, found = parse_prompt(prompt) if tags else (prompt, [])
            if found:
                self.apply_tags(found)
            if width % 8 or height % 8 or width <= 0 or height <= 0:
                raise UsageError(f"image size {width}x{height}: width and height must be positive multiples of 8")
            if steps < 1:
                raise UsageError("steps must be at least 1")
            self._maybe_compile()
            generator = torch.Generator("cpu").manual_seed(int(seed))
            started = time.perf_counter()
            with self._fused(), torch.inference_mode(), quiet(), self._threads():
                out = self.pipe(
                    prompt=text,
                    negative_prompt=negative or None,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    width=width,
                    height=height,
                    generator=generator,
                    output_type=output_type,
                )
            elapsed = time.perf_counter() - started
            if self._compiled and self._frames_at_compile is None:
                from torch._dynamo.utils import counters

                self._frames_at_compile = int(counters["frames"]["total"])
            self.stats["renders"] += 1
            self.timings["render"].append(elapsed)
            active = [
                {"name": a.name, "te_weight": a.te_weight, "unet_weight": a.unet_weight,
                 **({"te2_weight": a.te2_weight} if a.te2_weight is not None else {})}
                for a in self._adapters.values()
                if a.enabled
            ]
            return Render(
                image=out.images[0],
                prompt=text,
                negative=negative,
                seed=int(seed),
                steps=steps,
                width=width,
                height=height,
                guidance=guidance,
                seconds=elapsed,
                adapters=active,
                tags=found,
                sampler=self.sampler_name(),
            )

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """One torch thread while rendering on the CPU with a tiny denoiser (the drawing base's 3.3 M parameters,
        the embedded bases'): its ops are too small for a second thread to speed them up (0.42 s for 8 steps
        with two adapters on 1 or 2 threads, 2 cores), and each of its thousands of ops waits for the second
        thread, so a busy second core made the same render take 16-33 s. Larger models keep torch's threads."""
        import torch

        if not self._small_cpu():
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _small_cpu(self) -> bool:
        """On the CPU with a denoiser of at most :data:`SMALL_DENOISER` parameters (the drawing and embedded bases)."""
        return self.device.startswith("cpu") and self._denoiser_size() <= SMALL_DENOISER

    @contextlib.contextmanager
    def _fused(self) -> Iterator[None]:
        """For one render on the CPU with a tiny denoiser (:meth:`_small_cpu`), not compiled: the active adapters
        merged into the denoiser's weights at their current scalings (peft's ``merge``), and the weights put back
        exactly afterwards, errors included (copied back, not subtracted: nothing drifts over many renders).
        peft's per-layer LoRA calls cost a tiny UNet a third of its step: on the drawing base with two adapters
        47.6 -> 33.5 ms a step, the Space's 8-step preview 0.41 -> 0.31 s on one core; the images agree to 1e-6.
        Anything but plain LoRA layers, or a layer merged already, renders unmerged."""
        if self._compiled or not self._small_cpu():
            yield
            return
        import torch
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self._lora_layers(self.denoiser) if m.active_adapters]
        if not layers or not all(isinstance(m, LoraLayer) and not m.merged for m in layers):
            yield
            return
        saved = []
        with torch.no_grad():
            for m in layers:
                base = m.get_base_layer()
                bias = getattr(base, "bias", None)
                saved.append((m, base, base.weight.detach().clone(), None if bias is None else bias.detach().clone()))
        try:
            with torch.no_grad():
                for m in layers:
                    m.merge(adapter_names=list(m.active_adapters))
            yield
        finally:
            with torch.no_grad():
                for m, base, weight, bias in saved:
                    base.weight.copy_(weight)
                    if bias is not None:
                        base.bias.copy_(bias)
                    m.merged_adapters.clear()

    def _denoiser_size(self) -> int:
        if self._size is None:
            self._size = sum(p.numel() for p in self.denoiser_model.parameters())
        return self._size

    # ------------------------------------------------------------------ compile

    def _maybe_compile(self) -> None:
        if not self.compile_backend or self._compiled:
            return

        # In place (nn.Module.compile): pipe.unet (pipe.transformer) stays the same object, so loads and weights
        # keep working.
        self.denoiser_model.compile(backend=self.compile_backend)
        self._compiled = True
        self._frames_at_compile = None  # set after the first (compiling) call

    def recompilations(self) -> int | None:
        """Frames dynamo compiled after the first compilation (torch's own counter); None when not compiled."""
        if not self._compiled:
            return None
        from torch._dynamo.utils import counters

        if self._frames_at_compile is None:
            return 0
        return max(0, int(counters["frames"]["total"]) - self._frames_at_compile)

    # ------------------------------------------------------------------ internals

    def _prepare(self, path: Path) -> _Prepared:
        """Check and read an adapter file (cached by path, size and mtime); nothing in the pipeline changes here."""
        p = Path(path)
        try:
            st = p.stat()
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if key is not None and key in self._prepared:
            self._prepared[key] = self._prepared.pop(key)  # most recently used last
            return self._prepared[key]
        prep = self._prepare_uncached(p)
        if key is not None:
            self._prepared[key] = prep
            while len(self._prepared) > PREPARED_CACHE:
                self._prepared.pop(next(iter(self._prepared)))
        return prep

    def _prepare_uncached(self, path: Path) -> _Prepared:
        from ..adapters.inspect import inspect_file
        from .canonical import load_adapter_file
        from .compat import check_report, map_modules
        from .lowrank import truncate

        report = inspect_file(path)
        compat = check_report(report, self.base)
        lora = load_adapter_file(
            path,
            rank=self.convert_rank or self.target_rank,
            report=report,
            layers_per_block=self.base.layers_per_block,
        )
        notes = list(compat.warnings) + list(lora.warnings)
        if lora.conversion:
            notes.append(lora.conversion.summary())
        targets, missing = map_modules(self.pipe, lora, self.base)
        if missing:
            notes.append(f"{len(missing)} of {len(lora.modules)} module(s) have no match in the base (e.g. '{missing[0]}')")
            for key in missing:
                del lora.modules[key]
        over = [k for k, f in lora.modules.items() if k.startswith(f"{self.denoiser}.") and f.rank > self.target_rank]
        if over:
            worst = 0.0
            for key in over:
                lora.modules[key], err, _ = truncate(lora.modules[key], self.target_rank)
                worst = max(worst, err)
            notes.append(
                f"{len(over)} module(s) above the hot-swap target rank {self.target_rank} were re-factored by SVD "
                f"(worst relative error {worst:.2%}); create the pipeline with a larger target rank to avoid it"
            )
        if not any(bool((f.B != 0).any()) and bool((f.A != 0).any()) for f in lora.modules.values()):
            raise AdapterLoadError(
                f"{path}: every weight of the adapter is zero: loading it changes nothing",
                hint="an untrained (freshly initialised) LoRA has zero up/B weights",
            )
        unet_sd, te_sds = self._state_dicts(lora, targets)
        return _Prepared(lora, targets, notes, unet_sd, te_sds)

    def _new_slot(self) -> _Slot:
        n = 1
        while slot_id(n) in self._slots:
            n += 1
        sid = slot_id(n)
        # The id must not occur inside any parameter name of the pipeline (peft matches by substring).
        for comp in (self.denoiser, *TEXT_ENCODERS):
            model = getattr(self.pipe, comp, None)
            if model is not None and any(sid in pname for pname, _ in model.named_parameters()):
                raise AdapterLoadError(f"internal: slot id {sid} occurs in a parameter name of the {comp}")
        slot = _Slot(id=sid, te={c: False for c in TEXT_ENCODERS})
        self._slots[sid] = slot
        return slot

    def _state_dicts(self, lora: Any, targets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        dtype = self.denoiser_model.dtype
        device = self.denoiser_model.device
        unet: dict[str, Any] = {}
        te: dict[str, dict[str, Any]] = {c: {} for c in TEXT_ENCODERS}
        # text-encoder parts padded like the UNet's (to the slot rank, or their own when larger): the next
        # adapter's part then fits the slot's layers and is copied in place (_copy_into_layers)
        te_rank = {c: max(self.target_rank, lora.max_rank(c)) for c in TEXT_ENCODERS}
        for key, f in lora.modules.items():
            tgt = targets[key]
            if tgt.component == self.denoiser:
                a, b = f.padded(self.target_rank).weights()
                unet[f"{self.denoiser}.{tgt.path}.lora_A.weight"] = a.to(device=device, dtype=dtype)
                unet[f"{self.denoiser}.{tgt.path}.lora_B.weight"] = b.to(device=device, dtype=dtype)
            else:
                comp = tgt.component
                a, b = f.padded(te_rank[comp]).weights()
                model = getattr(self.pipe, comp)
                te_dtype, te_device = getattr(model, "dtype", dtype), getattr(model, "device", device)
                te[comp][f"{comp}.{tgt.path}.lora_A.weight"] = a.to(device=te_device, dtype=te_dtype)
                te[comp][f"{comp}.{tgt.path}.lora_B.weight"] = b.to(device=te_device, dtype=te_dtype)
        return unet, te

    def _load_into(self, slot: _Slot, prep: _Prepared, *, hotswap: bool) -> None:
        """Load ``prep`` into ``slot``: UNet part hot-swapped (or loaded), text-encoder parts reloaded, then verified.

        The UNet part goes through diffusers' ``unet.load_lora_adapter(..., hotswap=True)`` (what
        ``pipe.load_lora_weights(..., hotswap=True)`` calls for the UNet, without re-parsing the state
        dict for the text encoders); text-encoder parts through ``load_lora_into_text_encoder``
        with ``hotswap=False``.
        """
        from .compat import verify_exact

        if not self._hotswap_enabled:  # pragma: no cover - the constructor guarantees it
            raise AdapterLoadError("internal: enable_lora_hotswap was not called before the first load")
        pipe = self.pipe
        unet_sd, te_sds = prep.unet_sd, dict(prep.te_sds)
        changed = False  # did the module tree change (new LoRA layers, deleted ones)?
        try:
            with quiet():
                if unet_sd:
                    swap = hotswap and bool(slot.unet_paths)
                    # a hot-swap copies the factors into the slot's layers, as peft's hotswap does, without the
                    # two state-dict walks of the whole model it takes (about half of a swap on Flux); diffusers'
                    # path when they do not fit (a module the slot lacks, a rank above the layers')
                    written = self._copy_into_layers(slot, self.denoiser, unet_sd) if swap else None
                    if written is not None:
                        unet_sd = written
                    else:
                        self.denoiser_model.load_lora_adapter(unet_sd, prefix=self.denoiser, adapter_name=slot.id,
                                                              hotswap=swap, _pipeline=self._offload_pipeline())
                    if not swap:
                        slot.unet_paths = prep.unet_paths
                        changed = True
                elif slot.unet_paths:
                    self._zero_unet(slot)
                # diffusers refuses to hot-swap text encoders (the pitfall): the new factors are copied into the
                # slot's layers when they fit them (same modules or fewer, rank <= the layers'), else the layers
                # are deleted and the part loaded anew.
                for comp in TEXT_ENCODERS:
                    model = getattr(pipe, comp, None)
                    if model is None:
                        continue
                    if hotswap and slot.te.get(comp) and te_sds[comp]:
                        written = self._copy_into_layers(slot, comp, te_sds[comp])
                        if written is not None:
                            te_sds[comp] = written
                            continue
                    if slot.te.get(comp):
                        from diffusers.utils.peft_utils import delete_adapter_layers

                        delete_adapter_layers(model, slot.id)
                        slot.te[comp] = False
                        changed = True
                    if te_sds[comp] and comp not in self._diffusers_loadable():
                        _load_t5_part(model, comp, te_sds[comp], slot.id)
                        slot.te[comp] = True
                        changed = True
                    elif te_sds[comp]:
                        type(pipe).load_lora_into_text_encoder(
                            te_sds[comp], network_alphas=None, text_encoder=model, prefix=comp,
                            adapter_name=slot.id, _pipeline=self._offload_pipeline(), hotswap=False,
                        )
                        slot.te[comp] = True
                        changed = True
            if changed:
                self._layers.clear()
            self._tensor_scalings()
            self._active.clear()  # a load changes which adapters the layers consider active
            verify_exact(pipe, slot.id, prep.lora.path, prep.targets, unet_sd, te_sds, modules=self._module_table())
        except Exception:
            # Leave no half-loaded slot behind: drop it entirely.
            holder = slot.adapter
            with contextlib.suppress(Exception):
                self._unload_slot(slot)
            self._slots.pop(slot.id, None)
            self._active.clear()
            if holder is not None:
                self._adapters.pop(holder, None)
            with contextlib.suppress(Exception):
                self._apply()
            raise

    def _diffusers_loadable(self) -> tuple[str, ...]:
        """The components diffusers' pipeline class loads LoRAs into (``_lora_loadable_modules``): FluxPipeline's
        leave out its T5 (``text_encoder_2``), StableDiffusion3Pipeline's its T5 (``text_encoder_3``)."""
        return tuple(getattr(type(self.pipe), "_lora_loadable_modules", None) or (self.denoiser, *TEXT_ENCODERS))

    def _offload_pipeline(self) -> Any:
        """The pipeline when offloading hooks are on it (diffusers then takes them off around a load and puts them
        back), else None: diffusers' own check walks every module of every component on each load (13 ms of a
        30-70 ms hot-swap on the tiny Flux base). Model/sequential CPU offload is seen at each load (hooks on the
        components); group offloading as it was when the pipeline was made."""
        import torch

        pipe = self.pipe
        if self._group_offloaded or getattr(pipe, "hf_device_map", None) is not None:
            return pipe
        hooked = any(hasattr(c, "_hf_hook") for c in pipe.components.values() if isinstance(c, torch.nn.Module))
        return pipe if hooked else None

    def _module_table(self) -> dict[str, dict[str, Any]]:
        """component -> {path: module}, rebuilt after loads that change the module tree."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        table = self._layers.get("__modules__")
        if table is None:
            table = {}
            for comp in (self.denoiser, *TEXT_ENCODERS):
                model = getattr(self.pipe, comp, None)
                if model is not None:
                    table[comp] = {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
            self._layers["__modules__"] = table  # type: ignore[assignment]
        return table  # type: ignore[return-value]

    def _lora_layers(self, comp: str) -> list[Any]:
        layers = self._layers.get(comp)
        if layers is None:
            model = getattr(self.pipe, comp, None)
            layers = self._layers[comp] = list(_lora_layers(model)) if model is not None else []
        return layers

    def _copy_into_layers(self, slot: _Slot, comp: str, sd: dict[str, Any]) -> dict[str, Any] | None:
        """Put one component's part (a text encoder's, or the UNet/transformer's on a hot-swap) into the slot's
        existing LoRA layers of ``comp`` (zero-padded to their rank; layers the new part does not cover are zeroed). Returns the tensors as written, or None (nothing
        touched) when the part does not fit the layers: a module the slot lacks, or a higher rank.

        Exact: every layer of a slot has ``lora_alpha == r`` (the factors carry alpha/rank), so padding with
        zeros changes nothing, as for the UNet part.
        """
        import torch

        table = self._module_table().get(comp, {})
        layers = {path: m for path, m in table.items() if slot.id in getattr(m, "lora_A", {})}
        plan: list[tuple[Any, Any, Any]] = []
        written: dict[str, Any] = {}
        paths = set()
        if any(not key.endswith((".lora_A.weight", ".lora_B.weight")) for key in sd):
            return None  # something besides plain factors (biases, magnitudes): the loader's business
        for key in sd:
            if not key.endswith(".lora_A.weight"):
                continue
            path = key[len(comp) + 1 : -len(".lora_A.weight")]
            module = layers.get(path)
            b_key = key[: -len("lora_A.weight")] + "lora_B.weight"
            if module is None or b_key not in sd:
                return None
            la, lb = module.lora_A[slot.id].weight, module.lora_B[slot.id].weight
            a, b = sd[key], sd[b_key]
            r, k = la.shape[0], a.shape[0]
            if k > r or la.shape[1:] != a.shape[1:] or lb.shape[0] != b.shape[0]:
                return None
            pa = torch.zeros_like(la)
            pa[:k] = a.to(dtype=la.dtype, device=la.device)
            pb = torch.zeros_like(lb)
            pb[:, :k] = b.to(dtype=lb.dtype, device=lb.device)
            plan.append((la, lb, (pa, pb)))
            written[key], written[b_key] = pa, pb
            paths.add(path)
        # new storage, never a write into the old one: a layer loaded by diffusers may hold the very tensors of
        # a cached prepared file (peft assigns them), which an in-place copy would overwrite
        with torch.no_grad():
            for la, lb, (pa, pb) in plan:
                la.data = pa
                lb.data = pb
            for path, module in layers.items():
                if path not in paths:
                    weight = module.lora_B[slot.id].weight
                    weight.data = torch.zeros_like(weight)
        return written

    def _zero_unet(self, slot: _Slot) -> None:
        """Make the slot's UNet part a no-op without changing shapes (the new adapter has none)."""
        import torch

        with torch.no_grad():
            for module in self._lora_layers(self.denoiser):
                if slot.id in getattr(module, "lora_B", {}):
                    module.lora_B[slot.id].weight.zero_()

    def _unload_slot(self, slot: _Slot) -> None:
        from diffusers.utils.peft_utils import delete_adapter_layers

        with quiet():
            if slot.unet_paths and slot.id in getattr(self.denoiser_model, "peft_config", {}):
                self.denoiser_model.delete_adapters(slot.id)
            for comp in TEXT_ENCODERS:
                model = getattr(self.pipe, comp, None)
                if model is not None and slot.te.get(comp):
                    delete_adapter_layers(model, slot.id)
        slot.unet_paths = frozenset()
        slot.te = {c: False for c in TEXT_ENCODERS}
        self._active.clear()
        self._layers.clear()

    def _tensor_scalings(self) -> None:
        """Scalings as tensors (as prepare_model_for_compiled_hotswap makes the first adapter's), so that
        weight changes are in-place fills and never recompile."""
        import torch

        for module in self._lora_layers(self.denoiser):
            for key, value in list(module.scaling.items()):
                if not isinstance(value, torch.Tensor):
                    module.scaling[key] = torch.tensor(float(value), device=module.lora_A[key].weight.device)

    def _apply(self) -> None:
        """Set every slot's active state and scaling from the adapters' weights."""
        import torch

        started = time.perf_counter()
        compiled = bool(self.compile_backend)
        weights: dict[str, dict[str, float]] = {}
        for slot in self._slots.values():
            ad = self._adapters.get(slot.adapter) if slot.adapter else None
            if ad is not None and ad.enabled:
                weights[slot.id] = {c: ad.weight_of(c) for c in (self.denoiser, *TEXT_ENCODERS)}
            elif compiled:
                weights[slot.id] = {}  # keep the set of active adapters fixed (weight 0): no recompilation
        for comp in (self.denoiser, *TEXT_ENCODERS):
            model = getattr(self.pipe, comp, None)
            if model is None:
                continue
            present = set(getattr(model, "peft_config", {}) or {})
            active = tuple(sorted(s for s in weights if s in present))
            change_active = self._active.get(comp) != active
            with torch.no_grad():
                for module in self._lora_layers(comp):
                    if change_active:
                        module.set_adapter([s for s in active if s in module.lora_A], inference_mode=True)
                    for key in module.scaling:
                        w = weights.get(key, {}).get(comp, 0.0)
                        value = w * module.lora_alpha[key] / module.r[key]
                        current = module.scaling[key]
                        if isinstance(current, torch.Tensor):
                            current.fill_(value)
                        else:
                            module.scaling[key] = value
            self._active[comp] = active
        self.stats["weight_updates"] += 1
        self.timings["weights"].append(time.perf_counter() - started)

    def close(self) -> None:
        """Drop the pipeline (frees memory)."""
        with self._lock:
            self._adapters.clear()
            self._slots.clear()
            self.pipe = None

    def __enter__(self) -> LivePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_t5_part(model: Any, comp: str, sd: dict[str, Any], slot: str) -> None:
    """Load a T5 encoder's LoRA part (``<comp>.<module>.lora_A/B.weight``, alpha folded in, one padded rank) as
    adapter ``slot``, the way diffusers loads a CLIP part (transformers' ``load_adapter``, peft layers):
    diffusers' Flux/SD3 pipelines do not load LoRAs into their T5 encoder themselves."""
    from peft import LoraConfig

    local = {k[len(comp) + 1 :]: v for k, v in sd.items()}
    paths = sorted(k[: -len(".lora_A.weight")] for k in local if k.endswith(".lora_A.weight"))
    rank = max(int(local[f"{p}.lora_A.weight"].shape[0]) for p in paths)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=paths, init_lora_weights=False)
    model.load_adapter(adapter_name=slot, adapter_state_dict=local, peft_config=config)


def _group_offloaded(pipe: Any) -> bool:
    """Is diffusers' group offloading on any component of ``pipe``?"""
    import torch
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    comps = getattr(pipe, "components", {}) or {}
    return any(_is_group_offload_enabled(c) for c in comps.values() if isinstance(c, torch.nn.Module))


def _marked_resolution(path: Path | None) -> int | None:
    """The native size recorded in an embedded base's marker (``config.resolution``), or None."""
    from ..base.embedded import read_marker

    marker = read_marker(path) if path is not None and Path(path).is_dir() else None
    size = (marker or {}).get("config", {}).get("resolution") if isinstance((marker or {}).get("config"), dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 8192 else None


def _finite(value: Any) -> float | None:
    """``value`` as a finite float (None stays None); :class:`UsageError` otherwise."""
    import math

    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"weight {value!r} is not a number") from None
    if not math.isfinite(v):
        raise UsageError(f"weight {v} is not a finite number")
    return v


def _weights(weight: float | None, te: float | None, unet: float | None, *, default: tuple[float, float]) -> tuple[float, float]:
    """(te, unet) from one weight and/or explicit parts."""
    import math

    base_te, base_unet = default
    if weight is not None:
        base_te = base_unet = float(weight)
    t = float(te) if te is not None else base_te
    u = float(unet) if unet is not None else base_unet
    for v in (t, u):
        if not math.isfinite(v):
            raise UsageError(f"weight {v} is not a finite number")
    return t, u


def check_slot_names(names: Iterable[str]) -> None:
    """Raise unless no slot id is a substring of another (the invariant that avoids peft#3780)."""
    names = list(names)
    for a in names:
        if not SLOT_RE.match(a):
            raise AdapterCompatibilityError(f"'{a}' is not a slot id")
        for b in names:
            if a != b and a in b:
                raise AdapterCompatibilityError(f"slot id {a} is a substring of {b}")
