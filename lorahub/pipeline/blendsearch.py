"""Blend-weight search: the weights at which a stack of adapters reproduces example images best.

LoraHub (Huang et al., 2023) composes language adapters by searching their weights on a few examples
with a gradient-free optimiser. This is the same for Stable Diffusion LoRAs: given a few target images
(with captions, or one prompt), find the weight of each adapter (or, ``per_component``, its text-encoder
and UNet weights apart) that minimises

    denoising loss of the base with the adapters stacked at the weights, on the targets  +  l1 * sum |w|

The denoising loss is the training loss of the base (``||eps_theta(x_t, t, caption) - eps||^2``, or the
v-prediction target when the scheduler predicts v), averaged over ``samples`` noise draws and timesteps
per target. On Flux.1 and SD3 bases it is their flow-matching loss, as they train
(:mod:`lorahub.training.flow`): ``noisy = (1 - sigma) * x0 + sigma * noise``, the transformer's prediction
against ``noise - x0``, with the sigmas stratified over (0, 1) and shifted as the base's scheduler samples
(Flux's resolution-dependent shift, SD3's static one); the transformer is called as in training
(:class:`~lorahub.training.conditioning.FluxConditioning` packs the latents, ``SD3Conditioning`` scales
sigma to the timestep). The draws are made once (common random numbers), so the objective is a deterministic
function of the weights and two candidates are compared on the same noise. The L1 term drops adapters
that do not help: a weight below ``drop_below`` after the search is set to 0 and its adapter left out of
the recipe.

The adapters are loaded once into a :class:`~lorahub.pipeline.live.LivePipeline`; a candidate's weights
are set on the LoRA layers' scalings (no reload, no re-fusing), so one evaluation costs one UNet pass
over the targets (plus the text encoder when an adapter has text-encoder modules; on Flux.1 and SD3, the
CLIP encoders: T5's outputs are computed once).

Two optimisers (:data:`OPTIMIZERS`):

- ``cma``: CMA-ES (the ``cma`` package), gradient-free, within ``bounds``;
- ``gradient``: Adam on the weights alone (the scalings are made differentiable tensors, so autograd goes
  through the scaled LoRA deltas; base and adapter factors stay frozen), with the L1 term applied as a
  proximal step (soft threshold), which sets unhelpful weights to exactly 0.

docs/recipes.md compares them. Nothing here imports torch at module level.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import DatasetError, UsageError

OPTIMIZERS = ("cma", "gradient")
#: Most target images a search reads.
MAX_TARGETS = 64
#: Noise draws (timestep + noise) per target image.
DEFAULT_SAMPLES = 8
#: Objective evaluations (gradient: steps).
DEFAULT_BUDGET = 120
DEFAULT_L1 = 0.002
#: Weights within this of 0 after the search are set to 0 (their adapter is dropped).
DROP_BELOW = 0.05
#: After the search, weights up to this are tried at 0 (kept there when the objective is no worse).
PRUNE_BELOW = 0.2
DEFAULT_BOUNDS = (0.0, 1.5)
#: Images per UNet call (bounds the memory of one evaluation).
MAX_BATCH = 16


@dataclass
class Target:
    """One example image and its caption."""

    name: str
    caption: str
    image: Any  # PIL image at the search size


@dataclass
class SearchProgress:
    """Reported after each evaluation."""

    evaluation: int
    budget: int
    loss: float  # this candidate's objective
    best: float  # best objective so far
    best_weights: list[float]


@dataclass
class SearchResult:
    """What :func:`search_weights` found."""

    names: list[str]
    #: adapter -> weight, or {"te": w, "unet": w} (per component); dropped adapters have 0
    weights: dict[str, Any]
    kept: list[str]
    dropped: list[str]
    optimizer: str
    loss: float  # denoising loss at the found weights (dropped ones at 0)
    objective: float  # loss + l1 * sum |w|
    base_loss: float  # every weight 0: the base alone
    start_loss: float  # at the optimiser's starting point
    evaluations: int
    seconds: float
    l1: float
    samples: int
    seed: int
    per_component: bool
    bounds: tuple[float, float]
    targets: int
    history: list[float] = field(default_factory=list)  # best objective after each evaluation
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``blend search --json`` (every field but ``history``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "history"}
        return {**out, "seconds": round(self.seconds, 3), "bounds": list(self.bounds)}


# ------------------------------------------------------------------------------------------ targets


def read_targets(folder: str | os.PathLike[str], *, size: tuple[int, int], prompt: str | None = None,
                 max_images: int = MAX_TARGETS) -> tuple[list[Target], list[str]]:
    """The images of ``folder`` (a kohya folder: captions in same-name ``.txt`` files; or an imagefolder with
    ``metadata.jsonl``), resized and center-cropped to ``size``; an image without a caption takes
    ``prompt``. Returns ``(targets, warnings)``; :class:`~lorahub.errors.DatasetError` when there is
    nothing usable, :class:`~lorahub.errors.UsageError` when there are more than ``max_images``."""
    from ..training.dataset import load_pixels, scan_dataset

    w, h = size
    ds = scan_dataset(folder, resolution=max(w, h), buckets=False)
    if len(ds.items) > max_images:
        raise UsageError(f"{folder}: {len(ds.items)} images; a search takes at most {max_images}")
    warnings = [x for x in ds.warnings if "no caption" not in x]
    prompt = (prompt or "").strip() or None
    out, uncaptioned = [], 0
    from PIL import Image

    for item in ds.items:
        item.bucket = (w, h)
        caption = item.caption if item.caption_source in ("file", "metadata") and item.caption else None
        if caption is None:
            uncaptioned += 1
            caption = prompt or ""
        out.append(Target(item.path.name, caption, Image.fromarray(load_pixels(item))))
    if uncaptioned and not prompt:
        warnings.append(f"{uncaptioned} target image(s) have no caption and no --prompt was given: they are "
                        "compared unconditionally")
    return out, warnings


def targets_from_images(images: Sequence[Any], captions: Sequence[str], *, size: tuple[int, int]) -> list[Target]:
    """Targets from PIL images (already opened: the Space's uploads), resized and center-cropped to ``size``."""
    from ..training.dataset import resize_crop, to_rgb

    if len(images) != len(captions):
        raise UsageError("one caption per image")
    if not images:
        raise DatasetError("no target images")
    return [Target(f"image {i + 1}", c, resize_crop(to_rgb(im), size)) for i, (im, c) in enumerate(zip(images, captions,
                                                                                                         strict=True))]


def encode_images(pipe: Any, images: Sequence[Any]) -> Any:
    """The images as the UNet's latents (the VAE's mode, shifted and scaled as in training)."""
    import numpy as np
    import torch

    vae = pipe.vae
    scaling = float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1) for im in images])
    x = x.float().div(127.5).sub(1.0).to(device=vae.device, dtype=vae.dtype)
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mode()
    return ((latents.float() - shift) * scaling).cpu()


# ------------------------------------------------------------------------------------------ objective


class BlendObjective:
    """The denoising loss of ``live``'s adapters ``names`` at candidate weights, on fixed noise.

    ``latents``: (N, C, h, w) target latents (:func:`encode_images`, or made directly); ``captions``: N
    captions. ``samples`` noise draws per target: timesteps (flow matching: sigmas) stratified over the
    schedule, noise from ``seed``. ``max_sequence_length``: T5 tokens on Flux.1/SD3 (default: the training's).
    A candidate is a vector of :attr:`dims` weights: one per adapter, or (``per_component``) the text-encoder
    and UNet (transformer) weights of each adapter that has text-encoder modules.

    ``reference``: weights (as ``set_weights`` takes them) of a stack whose predictions on the same draws
    replace the noise as the target: the search then finds the blend that best imitates that stack
    (distillation; the loss is 0 at the reference). Without it the target is the noise (or v), as in training.
    """

    def __init__(self, live: Any, names: Sequence[str], latents: Any, captions: Sequence[str], *,
                 samples: int = DEFAULT_SAMPLES, seed: int = 0, per_component: bool = False,
                 reference: dict[str, Any] | None = None, max_sequence_length: int | None = None) -> None:
        import torch

        from ..training import flow
        from ..training.conditioning import conditioning_for

        if not names:
            raise UsageError("give at least one adapter to search the weights of")
        if len(captions) != int(latents.shape[0]):
            raise UsageError("one caption per target")
        if not 1 <= samples <= 256:
            raise UsageError("samples must be between 1 and 256")
        self.live = live
        self.names = list(names)
        pipe = live.pipe
        self.pipe = pipe
        self.cond = conditioning_for(pipe, live.base.family, max_sequence_length=max_sequence_length)
        self.flow = self.cond.flow
        self.model = self.cond.denoiser()
        self.device = self.model.device
        self.dtype = self.model.dtype
        adapters = [live.adapter(n) for n in self.names]
        self.te_names = [a.name for a in adapters if any(c.startswith("text_encoder") for c in a.components)]
        if self.flow:
            t5 = set(self.cond.encoder_names) - set(self.cond.trainable_encoder_names)
            if not any(t5 & set(a.components) for a in adapters):
                self.cond.t5_cache = {}  # no adapter changes T5: its outputs are computed once
        self.dims: list[tuple[str, str]] = []
        for a in adapters:
            if per_component and a.name in self.te_names:
                self.dims += [(a.name, "te"), (a.name, "unet")]
            else:
                self.dims.append((a.name, "all"))
        self.per_component = per_component
        self.samples = samples
        self.seed = seed
        n = int(latents.shape[0])
        h, w = int(latents.shape[-2]), int(latents.shape[-1])
        if self.flow and (h % 2 or w % 2):
            raise UsageError(f"a {self.cond.family} transformer takes 2x2 latent patches: the target size must be a "
                             f"multiple of 16 pixels (latents {w}x{h})")
        gen = torch.Generator().manual_seed(int(seed))
        # stratified: each target's k-th draw falls in the k-th of `samples` equal bins of the schedule
        u = torch.stack([(torch.arange(samples, dtype=torch.float64)
                          + torch.rand(samples, generator=gen, dtype=torch.float64)) / samples
                         for _ in range(n)]).reshape(-1)
        x0 = latents.float().repeat_interleave(samples, dim=0)
        noise = torch.randn(x0.shape, generator=gen)
        if self.flow:
            shift, mu = flow.pipeline_shift(dict(pipe.scheduler.config), (h // 2) * (w // 2))
            sigmas = flow.shift_sigmas(u, shift=shift, mu=mu)
            self.prediction = "flow"
            self.timesteps = sigmas.to(self.device)  # sigma: the conditioning scales it as the transformer takes it
            s = sigmas.view(-1, 1, 1, 1)
            self.noisy = ((1.0 - s) * x0 + s * noise).to(self.device, self.dtype)
            target = noise - x0
        else:
            from diffusers import DDPMScheduler

            self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
            self.prediction = self.scheduler.config.get("prediction_type", "epsilon")
            steps = int(self.scheduler.config.num_train_timesteps)
            timesteps = (u * steps).long().clamp(0, steps - 1)
            self.timesteps = timesteps.to(self.device)
            self.noisy = self.scheduler.add_noise(x0, noise, timesteps).to(self.device, self.dtype)
            target = noise if self.prediction == "epsilon" else self.scheduler.get_velocity(x0, noise, timesteps)
        self.target = target.to(self.device, torch.float32)
        self.captions = [c for c in captions for _ in range(samples)]
        self._distinct = list(dict.fromkeys(captions))
        scale = getattr(pipe, "vae_scale_factor", 8) or 8
        size = (h * scale, w * scale)
        self.time_ids = (self.cond.time_ids([(*size, 0, 0, *size)] * len(self.captions), self.device, self.dtype)
                         if self.cond.uses_time_ids else None)
        self._cached_embeds: Any = None
        self.evaluations = 0
        if reference is not None:
            # distillation: the targets are what the stack at the reference weights predicts on the same draws
            import torch

            from .live import quiet

            live.set_weights(dict(reference), exclusive=True)
            with torch.no_grad(), quiet():
                self.target = self._predict().float()

    # -- weights

    def weights_of(self, x: Sequence[float]) -> dict[str, Any]:
        """A candidate as ``set_weights`` takes it: name -> w, or (te, unet)."""
        out: dict[str, Any] = {}
        for (name, comp), v in zip(self.dims, x, strict=True):
            if comp == "all":
                out[name] = float(v)
            else:
                te, unet = out.get(name, (0.0, 0.0))
                out[name] = (float(v), unet) if comp == "te" else (te, float(v))
        return out

    def recipe_weights(self, x: Sequence[float]) -> dict[str, Any]:
        """name -> w, or {"te": w, "unet": w}."""
        return {k: ({"te": v[0], "unet": v[1]} if isinstance(v, tuple) else v) for k, v in self.weights_of(x).items()}

    # -- evaluation

    def _embeds(self) -> Any:
        from ..training.conditioning import TextEmbeds

        if not self.te_names and self._cached_embeds is not None:
            return self._cached_embeds
        rows = dict(zip(self._distinct, self.cond.encode(self._distinct, self.cond.encoders(), self.device).rows(),
                        strict=True))
        embeds = TextEmbeds.stack([rows[c] for c in self.captions]).to(self.device, self.dtype)
        if not self.te_names:
            self._cached_embeds = embeds
        return embeds

    def _predict(self) -> Any:
        """The denoiser's predictions on every draw at the weights set now."""
        import torch

        embeds = self._embeds()
        out = []
        for i in range(0, self.noisy.shape[0], MAX_BATCH):
            sl = slice(i, i + MAX_BATCH)
            part = type(embeds)(embeds.hidden[sl], None if embeds.pooled is None else embeds.pooled[sl])
            if self.flow:  # Flux.1-dev's guidance embedding takes 1.0, as it trains (TrainConfig.guidance_scale)
                out.append(self.cond.predict(self.model, self.noisy[sl], self.timesteps[sl], part, guidance=1.0,
                                             dtype=self.dtype))
                continue
            tid = None if self.time_ids is None else self.time_ids[sl]
            out.append(self.model(self.noisy[sl], self.timesteps[sl], return_dict=False,
                                  **self.cond.unet_inputs(part, tid))[0])
        return torch.cat(out)

    def _loss(self) -> Any:
        """The mean denoising loss at the weights set now (a tensor; differentiable when the scalings are)."""
        import torch.nn.functional as F  # noqa: N812

        return F.mse_loss(self._predict().float(), self.target)

    def loss(self, x: Sequence[float]) -> float:
        """The denoising loss at candidate ``x`` (no L1)."""
        import torch

        from .live import quiet

        self.live.set_weights(self.weights_of(x), exclusive=True)
        with torch.no_grad(), quiet():
            value = float(self._loss())
        self.evaluations += 1
        return value

    def loss_and_grad(self, x: Sequence[float]) -> tuple[float, list[float]]:
        """The denoising loss at ``x`` and its gradient with respect to the weights (autograd through the
        scaled LoRA deltas; nothing else is trained)."""
        import torch

        from .live import quiet

        self.live.set_weights(self.weights_of(x), exclusive=True)
        w = torch.tensor([float(v) for v in x], dtype=torch.float32, device=self.device, requires_grad=True)
        per: dict[str, dict[str, Any]] = {}
        for i, (name, comp) in enumerate(self.dims):
            d = per.setdefault(name, {})
            if comp in ("all", "unet"):
                d["unet"] = w[i]
            if comp in ("all", "te"):
                d["text_encoder"] = d["text_encoder_2"] = w[i]
        with self.live.scaling_tensors(per), quiet(), torch.enable_grad():
            loss = self._loss()
            (grad,) = torch.autograd.grad(loss, [w])
        self.evaluations += 1
        return float(loss.detach()), [float(g) for g in grad]


# ------------------------------------------------------------------------------------------ search


def search_weights(objective: BlendObjective, *, optimizer: str = "cma", budget: int = DEFAULT_BUDGET,
                   l1: float = DEFAULT_L1, seed: int = 0, bounds: tuple[float, float] = DEFAULT_BOUNDS,
                   start: float | Sequence[float] | None = None, drop_below: float = DROP_BELOW,
                   lr: float = 0.05, on_progress: Callable[[SearchProgress], None] | None = None) -> SearchResult:
    """Minimise ``objective`` + ``l1`` * sum |w| over the weights within ``bounds`` with ``budget``
    evaluations (see the module docstring); the result's weights have those within ``drop_below`` of 0 set
    to 0, and those up to :data:`PRUNE_BELOW` too when the objective is no worse without them; adapters at 0
    are listed in ``dropped``."""
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimiser {optimizer!r}: choose {', '.join(OPTIMIZERS)}")
    if not isinstance(budget, int) or not 4 <= budget <= 100_000:
        raise UsageError("the budget is a whole number of evaluations between 4 and 100000")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise UsageError(f"bounds must be two finite numbers, low < high, not {bounds!r}")
    if not (math.isfinite(l1) and l1 >= 0):
        raise UsageError(f"the L1 weight must be a non-negative number, not {l1!r}")
    d = len(objective.dims)
    if start is None:
        x0 = [min(max(0.5, lo), hi)] * d
    elif isinstance(start, (int, float)):
        x0 = [float(start)] * d
    else:
        x0 = [float(v) for v in start]
    if len(x0) != d or not all(lo <= v <= hi for v in x0):
        raise UsageError(f"the starting point needs {d} weights within the bounds")
    started = time.perf_counter()
    best = {"f": math.inf, "x": list(x0)}
    history: list[float] = []

    def penalised(x: Sequence[float], value: float) -> float:
        f = float(value + l1 * sum(abs(float(v)) for v in x))
        if f < best["f"]:
            best["f"], best["x"] = f, [float(v) for v in x]
        history.append(best["f"])
        if on_progress is not None:
            on_progress(SearchProgress(len(history), budget, f, best["f"], list(best["x"])))
        return f

    start_loss = objective.loss(x0)
    base_loss = objective.loss([0.0] * d)
    if optimizer == "cma":
        _cma(objective, x0, lo, hi, budget, seed, penalised)
    else:
        _gradient(objective, x0, lo, hi, budget, l1, lr, penalised)
    x = [0.0 if abs(v) < drop_below else v for v in best["x"]]
    loss = objective.loss(x)
    # An L1 optimum has exact zeros, which CMA-ES only approaches: try each small weight at 0 (smallest first)
    # and keep the zero when the penalised objective is no worse.
    for i in sorted(range(d), key=lambda j: abs(x[j])):
        if x[i] == 0.0 or abs(x[i]) > PRUNE_BELOW:
            continue
        trial = list(x)
        trial[i] = 0.0
        value = objective.loss(trial)
        if value + l1 * sum(abs(v) for v in trial) <= loss + l1 * sum(abs(v) for v in x):
            x, loss = trial, value
    weights = objective.recipe_weights(x)
    dropped = [n for n in objective.names if not any(v != 0.0 for (nm, _), v in zip(objective.dims, x, strict=True)
                                                    if nm == n)]
    return SearchResult(
        names=list(objective.names), weights=weights, kept=[n for n in objective.names if n not in dropped],
        dropped=dropped, optimizer=optimizer, loss=loss, objective=loss + l1 * sum(abs(v) for v in x),
        base_loss=base_loss, start_loss=start_loss, evaluations=objective.evaluations,
        seconds=time.perf_counter() - started, l1=l1, samples=objective.samples, seed=seed,
        per_component=objective.per_component, bounds=(lo, hi), targets=len(objective.captions) // objective.samples,
        history=history,
    )


def _cma(objective: BlendObjective, x0: list[float], lo: float, hi: float, budget: int, seed: int,
         penalised: Callable[[Sequence[float], float], float]) -> None:
    import warnings

    from ..errors import require

    with warnings.catch_warnings():  # cma warns on import when matplotlib (its plots) is missing
        warnings.simplefilter("ignore")
        cma = require("cma", "ml")
    d = len(x0)
    pad = d == 1  # CMA-ES needs two dimensions: a second, ignored coordinate
    opts = {"bounds": [lo, hi], "seed": int(seed) % (2**31 - 2) + 1, "maxfevals": budget, "verbose": -9,
            "verb_log": 0, "verb_disp": 0, "tolx": 1e-4, "tolfun": 1e-7}
    es = cma.CMAEvolutionStrategy([*x0, 0.5 * (lo + hi)] if pad else x0, 0.25 * (hi - lo), opts)
    used = 0
    while not es.stop() and used < budget:
        xs = es.ask()
        xs = xs[: budget - used]
        fs = [penalised(x[:d], objective.loss(list(x[:d]))) for x in xs]
        used += len(xs)
        if len(xs) < es.popsize:
            break
        es.tell(xs, fs)


def _gradient(objective: BlendObjective, x0: list[float], lo: float, hi: float, budget: int, l1: float, lr: float,
              penalised: Callable[[Sequence[float], float], float]) -> None:
    """Adam with a proximal L1 step (soft threshold towards 0), projected onto the bounds."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    x = list(x0)
    m = [0.0] * len(x)
    v = [0.0] * len(x)
    for step in range(1, budget + 1):
        value, grad = objective.loss_and_grad(x)
        penalised(x, value)
        for i, g in enumerate(grad):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mh, vh = m[i] / (1 - b1**step), v[i] / (1 - b2**step)
            xi = x[i] - lr * mh / (math.sqrt(vh) + eps)
            shrink = min(lr * l1 / (math.sqrt(vh) + eps), lr)  # the L1 term's step, preconditioned as Adam's
            xi = math.copysign(max(abs(xi) - shrink, 0.0), xi)
            x[i] = min(max(xi, lo), hi)


# ------------------------------------------------------------------------------------------ one call


#: Targets are compared at least this large: below it the deepest UNet level of an SD 1.x base is 1x1, where
#: GroupNorm turns the loss into noise (measured on the embedded base: docs/recipes.md).
MIN_SEARCH_SIDE = 128


def search_size(live: Any) -> tuple[int, int]:
    """The size targets are compared at by default: the base's native size, at least :data:`MIN_SEARCH_SIDE` on a
    UNet (a Flux.1/SD3 transformer has no levels to run out of: its native size)."""
    w, h = live.native_size()
    if getattr(live, "denoiser", "unet") == "transformer":
        return w, h
    return max(w, MIN_SEARCH_SIDE), max(h, MIN_SEARCH_SIDE)


@dataclass
class BlendSearchRun:
    """What :func:`run_search` made: the result, its recipe and the grid (None when not asked)."""

    result: SearchResult
    recipe: Any
    grid: Any
    size: tuple[int, int]


def run_search(live: Any, sources: Sequence[Any], targets: Sequence[Target], *, size: tuple[int, int],
               optimizer: str = "cma", budget: int = DEFAULT_BUDGET, l1: float = DEFAULT_L1, seed: int = 0,
               samples: int = DEFAULT_SAMPLES, per_component: bool = False,
               bounds: tuple[float, float] = DEFAULT_BOUNDS, grid: bool = True, grid_steps: int = 20,
               title: str | None = None, on_progress: Callable[[SearchProgress], None] | None = None) -> BlendSearchRun:
    """Load ``sources`` (:class:`~lorahub.pipeline.blend.BlendInput`: path, name, stable reference) into
    ``live`` (an adapter already loaded under its name from the same file stays), search their weights on
    ``targets`` (already at ``size``), and make the recipe and (``grid``) the grid of the result against the
    targets. Used by ``lorahub blend search`` and the Space."""
    if not targets:
        raise DatasetError("no target images")
    names = []
    for src in sources:
        name = src.name
        loaded = {a.name: a for a in live.adapters}
        if name not in loaded or Path(loaded[name].path).resolve() != Path(src.path).resolve():
            live.add(name, str(src.path))
        names.append(name)
    latents = encode_images(live.pipe, [t.image for t in targets])
    objective = BlendObjective(live, names, latents, [t.caption for t in targets], samples=samples, seed=seed,
                               per_component=per_component)
    result = search_weights(objective, optimizer=optimizer, budget=budget, l1=l1, seed=seed, bounds=bounds,
                            on_progress=on_progress)
    recipe = search_recipe(result, sources, budget=budget, size=size, base=live.base.name, title=title) \
        if result.kept else None
    image = result_grid(live, objective, targets, result, steps=grid_steps, seed=seed) if grid else None
    return BlendSearchRun(result, recipe, image, size)


# ------------------------------------------------------------------------------------------ recipe


def search_recipe(result: SearchResult, sources: Sequence[Any], *, budget: int, size: tuple[int, int] | None = None,
                  base: str | None = None, title: str | None = None) -> Any:
    """The :class:`~lorahub.schemas.recipes.BlendRecipe` of a search: the kept adapters at the found weights
    (``linear``: the exact sum), with the search recorded (``search``). ``sources``: one
    :class:`~lorahub.pipeline.blend.BlendInput` per searched adapter, in ``result.names`` order (path, name and
    stable reference; their weights are ignored)."""
    from lorahub import __version__
    from lorahub.schemas.recipes import BlendRecipe, SearchRecord

    from .blend import BlendInput, recipe_source

    if len(sources) != len(result.names):
        raise UsageError("one source per searched adapter")
    entries = []
    for name, src in zip(result.names, sources, strict=True):
        if name not in result.kept:
            continue
        w = result.weights[name]
        te, unet = (w["te"], w["unet"]) if isinstance(w, dict) else (w, w)
        entries.append(recipe_source(BlendInput(src.path, te, unet, name=src.name or name, ref=src.ref)))
    if not entries:
        raise UsageError("the search kept no adapter (every weight is 0): the base alone reproduces the targets "
                         "best; try a smaller --l1")
    record = SearchRecord(optimizer=result.optimizer, budget=budget, evaluations=result.evaluations, l1=result.l1,  # type: ignore[arg-type]
                          seed=result.seed, samples=result.samples, per_component=result.per_component,
                          bounds=result.bounds, size=size, targets=result.targets, base=base,
                          loss=result.loss, base_loss=result.base_loss, dropped=list(result.dropped))
    return BlendRecipe(lorahub_version=__version__, method="linear", title=title, sources=entries, search=record)


# ------------------------------------------------------------------------------------------ grid


def result_grid(live: Any, objective: BlendObjective, targets: Sequence[Target], result: SearchResult, *,
                steps: int = 20, seed: int = 0, guidance: float | None = None, max_columns: int = 8) -> Any:
    """A labelled grid: the targets on top, the found blend below (each target's caption, same seed), and
    the base alone at the bottom. ``guidance`` defaults to the base's own (``live.default_guidance()``: 3.5 on
    Flux.1-dev, 7.0 on SD3, 7.5 on SD 1.x/SDXL)."""
    from .grid import make_grid

    shown = list(targets)[:max_columns]
    w, h = shown[0].image.size
    found = objective.weights_of([_flat(result.weights[n], comp) for n, comp in objective.dims])
    rows: list[list[Any]] = [[t.image for t in shown], [], []]
    for weights, row in ((found, rows[1]), ({n: 0.0 for n in objective.names}, rows[2])):
        live.set_weights(weights, exclusive=True)
        for t in shown:
            row.append(live.render(t.caption, seed=seed, steps=steps, width=w, height=h, guidance=guidance,
                                   tags=False).image)
    live.set_weights(found, exclusive=True)
    label = ", ".join(f"{n} {_fmt(result.weights[n])}" for n in result.kept) or "no adapter"
    return make_grid(rows, col_labels=[Path(t.name).stem[:24] for t in shown],
                     row_labels=["targets", "found", "base"], title=f"blend search ({result.optimizer}): {label}")


def _flat(weight: Any, comp: str) -> float:
    if isinstance(weight, dict):
        return float(weight["te" if comp == "te" else "unet"])
    return float(weight)


def _fmt(weight: Any) -> str:
    if isinstance(weight, dict):
        return f"te {weight['te']:.2f} unet {weight['unet']:.2f}"
    return f"{weight:.2f}"


__all__ = ["BlendObjective", "BlendSearchRun", "MIN_SEARCH_SIDE", "run_search", "search_size", "OPTIMIZERS", "SearchProgress", "SearchResult", "Target", "encode_images",
           "read_targets", "result_grid", "search_recipe", "search_weights", "targets_from_images"]
