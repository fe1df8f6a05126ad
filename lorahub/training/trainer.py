"""The LoRA training loop: diffusers + peft + accelerate.

:func:`train` (or :class:`Trainer`) runs one training run from a
:class:`~lorahub.schemas.training.TrainConfig`:

1. the output folder is checked and the dataset scanned (no model loaded yet, so a
   bad dataset or folder fails in a second);
2. the base pipeline is loaded (:func:`lorahub.base.resolve.load_pipeline`), frozen,
   and LoRA layers are added to the UNet attention projections with peft
   (``unet.add_adapter``); the text encoder(s), optionally, through
   ``peft.inject_adapter_in_model`` (transformers 5's ``add_adapter`` refuses peft
   0.21). What differs between SD 1.x/2.x and SDXL (one or two text encoders, the
   pooled embedding and micro-conditioning SDXL's UNet also takes) is in
   :mod:`lorahub.training.conditioning`; everything else here is shared;
3. latents are cached: one VAE pass per image, keeping the mode (mean) of the
   latent distribution, as kohya-style trainers do. Without caching the VAE runs
   every step and the result is the same. Text-encoder outputs are cached per
   caption while the encoders are frozen; when the captions never change (no
   dropout, no tag shuffling) all of them are encoded before the first step. On a
   GPU, the VAE and the frozen text encoders then leave it until the previews;
4. the loop: epsilon or v-prediction targets, optional min-SNR weighting and noise
   offset, mixed precision and gradient accumulation through ``accelerate``
   (``accelerate launch`` spreads it over several GPUs), gradient checkpointing;
5. previews, checkpoints and the package (:mod:`lorahub.training.export`).

Reproducibility: every random draw of step ``s`` (noise, timesteps, latent
samples, caption dropout and shuffling, flips) comes from generators seeded by
``(seed, s)``, and the data order of epoch ``e`` is a pure function of
``(seed, e)``. A run resumed from the checkpoint of step ``s`` therefore
continues bit for bit as the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorahub.schemas.training import TEXT_ENCODER_TARGET_MODULES, TrainConfig, TrainResult

from ..errors import TrainingError, TrainingInterrupted, UsageError
from . import checkpoint as ckpt_mod
from . import export as ex
from . import flow as flow_mod
from .conditioning import TextEmbeds, conditioning_for
from .config import CONFIG_NAME, merge_resume, read_config, save_config
from .dataset import BUCKET_STEP, BatchStream, Dataset, load_pixels, scan_dataset, training_caption

#: The flow-matching families (a transformer; lorahub.training.flow).
FLOW_FAMILIES = ("flux", "sd3")

#: Files that mark a folder as a lorahub training package (``--overwrite`` only removes those).
PACKAGE_MARKERS = (CONFIG_NAME, ex.WEIGHTS_NAME)

Callback = Callable[[int, float], None]


def _mix(*parts: Any) -> int:
    """A 63-bit seed from the parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def package_name(config: TrainConfig) -> str:
    if config.name:
        return config.name
    return Path(config.out or "lora").resolve().name or "lora"


def base_geometry(base: str, base_config: str | None = None) -> tuple[int, int, str | None]:
    """(native pixel size, bucket step, family) of a base, without loading it or touching the network.

    The native size is the UNet's ``sample_size`` times the VAE's down-sampling
    factor (512 for SD 1.5, 1024 for SDXL, 64/128 for the embedded models). The
    bucket step is the smallest side the UNet takes whole: the VAE factor times
    one factor 2 per UNet down-sampling (64 for SD 1.x/2.x, 32 for SDXL).
    """
    import json

    from ..base import embedded
    from ..base.resolve import resolve_base

    ref = resolve_base(base, base_config=base_config, download=False, build=False)
    folder = ref.path if ref.kind in ("folder", "hub") else (Path(ref.config) if ref.config else None)
    if ref.kind == "embedded":
        model = embedded.model(ref.family or embedded.FAMILY)
        if model.denoiser == "transformer":  # flux/sd3: VAE factor 8 x 2 (Flux's 2x2 packing, SD3's patch 2)
            return model.resolution, 16, ref.family
        if not embedded.is_complete(ref.location, model.family):  # not built yet: its default build's
            downs = len(model.unet_config["down_block_types"]) - 1
            return model.resolution, model.vae_factor * 2**downs, ref.family
        folder = Path(ref.location)  # built: its configs say (a random SD 1.x build's VAE factor is 8)
    if folder is not None and folder.is_dir() and (folder / "transformer" / "config.json").is_file():
        # Flux.1 / SD3: the transformer takes 2 x 2 latent patches; native size: SD3's transformer sample_size x
        # the VAE factor, Flux's VAE sample_size (FLUX.1-dev: 1024; its transformer config has no size)
        try:
            tr = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
            vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
            factor = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
            patch = int(tr.get("patch_size", 1)) if "sample_size" in tr else 2
            native = int(tr["sample_size"]) * factor if "sample_size" in tr else int(vae.get("sample_size") or 1024)
            family = ref.family or ("sd3" if "sample_size" in tr else "flux")
            return native, factor * max(patch, 2), family
        except (OSError, ValueError, KeyError, TypeError):
            return 1024, 16, ref.family
    if folder is not None and folder.is_dir():
        try:
            unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
            vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
            factor = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
            downs = len(unet.get("down_block_types", [0, 0, 0, 0])) - 1
            return int(unet["sample_size"]) * factor, factor * 2**downs, ref.family
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if ref.family == "sdxl":
        return 1024, 32, ref.family
    return 512, BUCKET_STEP, ref.family


def native_resolution(base: str, base_config: str | None = None) -> tuple[int, str | None]:
    """(pixel size the base was trained at, family) without loading it or touching the network."""
    resolution, _step, family = base_geometry(base, base_config)
    return resolution, family


def prepare_output(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless resuming or overwriting a lorahub package."""
    if resume:
        if not (out / CONFIG_NAME).is_file():
            raise UsageError(f"{out}: nothing to resume (no {CONFIG_NAME})", hint="start the run without --resume")
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(
                f"{out}: the output folder exists and is not empty",
                hint="choose another --out, continue it with --resume, or replace it with --overwrite",
            )
        if not any((out / m).exists() for m in PACKAGE_MARKERS):
            raise UsageError(
                f"{out}: --overwrite only replaces a lorahub training package, and this folder is not one",
                hint="remove it yourself or choose another --out",
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def base_defaults(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its base's own training defaults for the settings it was not given (``model_fields_set``):
    the drawing base's :data:`lorahub.base.drawing.TRAIN_DEFAULTS` (on it and on the embedded SD 1.x base, its
    weights); any other base keeps TrainConfig's."""
    from ..base import drawing
    from ..base.resolve import resolve_base

    ref = resolve_base(cfg.base, base_config=cfg.base_config, download=False, build=False)
    if not drawing.is_drawing_ref(ref):
        return cfg
    update = {k: v for k, v in drawing.TRAIN_DEFAULTS.items() if k not in cfg.model_fields_set}
    return cfg.model_copy(update=update) if update else cfg


class Trainer:
    """One training run. ``pipe`` holds the pipeline (with the trained LoRA) after :meth:`run`."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        log: Callable[[str], None] | None = None,
        progress: bool = True,
        callback: Callback | None = None,
    ) -> None:
        self.config = config
        self.log = log or (lambda _m: None)
        self.progress = progress
        self.callback = callback
        self.pipe: Any = None
        #: The family-specific part (lorahub.training.conditioning) of the run, once the base is loaded.
        self.conditioning: Any = None
        self.dataset: Dataset | None = None
        self.loss_history: list[dict[str, Any]] = []
        self._loop_started = False

    # ------------------------------------------------------------------------------ setup

    def _resolve_config(self, resume: bool) -> TrainConfig:
        cfg = self.config
        if not cfg.out:
            raise UsageError("no output folder (--out)")
        out = Path(cfg.out).expanduser()
        if resume:
            if not (out / CONFIG_NAME).is_file():
                raise UsageError(f"{out}: nothing to resume (no {CONFIG_NAME})", hint="start the run without --resume")
            saved = read_config(out / CONFIG_NAME)
            mine, theirs = cfg.model_dump(), saved.model_dump()
            derived = ("resolution", "alpha", "name", "sample_seed", "upscale")
            changed = {k: v for k, v in mine.items() if v != theirs[k] and not (v is None and k in derived)}
            cfg = merge_resume(saved, changed)
        if not cfg.data:
            raise UsageError("no dataset folder given")
        return cfg

    def run(self, *, resume: bool = False, overwrite: bool = False) -> TrainResult:
        t_start = time.perf_counter()
        cfg = self._resolve_config(resume)
        if not resume:
            cfg = base_defaults(cfg)
        out = Path(cfg.out).expanduser()  # type: ignore[arg-type]
        warnings: list[str] = []

        # -- cheap checks first: base spec, output folder and dataset (no torch yet)
        native, bucket_step, family_hint = base_geometry(cfg.base, cfg.base_config)
        resolution = cfg.resolution or native
        upscale = cfg.upscale if cfg.upscale is not None else family_hint not in ("sdxl", *FLOW_FAMILIES)
        if cfg.optimizer == "adamw8bit":
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                raise UsageError("--optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes)",
                                 hint="or use --optimizer adamw")
        dataset = scan_dataset(
            cfg.data,  # type: ignore[arg-type]
            trigger=cfg.trigger,
            resolution=resolution,
            buckets=cfg.buckets,
            caption_extension=cfg.caption_extension,
            caption_column=cfg.caption_column,
            bucket_step=bucket_step,
            upscale=upscale,
        )
        self.dataset = dataset
        for w in dataset.warnings:
            self.log(f"warning: {w}")
        warnings += dataset.warnings
        existed = out.exists()
        if resume:
            prepare_output(out, resume=True, overwrite=False)
        else:
            prepare_output(out, resume=False, overwrite=overwrite)
        name = package_name(cfg)
        cfg = cfg.model_copy(update={
            "resolution": resolution,
            "upscale": upscale,
            "alpha": cfg.effective_alpha(),
            "name": name,
            "sample_seed": cfg.sample_seed if cfg.sample_seed is not None else cfg.seed,
        })
        self.config = cfg
        self.log(
            f"dataset: {dataset.num_images} image(s), {dataset.num_train_images} per epoch with repeats, "
            f"{len(dataset.bucket_counts())} bucket(s) at {resolution}px ({dataset.layout} layout)"
        )
        self._loop_started = False
        try:
            return self._train(cfg, out, dataset, resume=resume, warnings=warnings, t_start=t_start)
        except BaseException:
            # A run that failed before its first step (base not loadable, bad device, Ctrl-C while
            # loading) leaves nothing behind: the folder it created holds only the config.
            if not resume and not self._loop_started:
                if existed:
                    for child in out.iterdir() if out.is_dir() else []:
                        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
                else:
                    shutil.rmtree(out, ignore_errors=True)
            raise

    # ------------------------------------------------------------------------------ the run

    def _train(self, cfg: TrainConfig, out: Path, dataset: Dataset, *, resume: bool, warnings: list[str],
               t_start: float) -> TrainResult:
        from ..errors import require

        torch = require("torch", "ml")
        require("diffusers", "ml")
        peft = require("peft", "ml")
        accelerate = require("accelerate", "ml")
        import torch.nn.functional as F
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import cast_training_params, compute_snr
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict

        from ..base.resolve import load_pipeline, resolve_base

        resolution = int(cfg.resolution or dataset.resolution)
        accelerator = self._accelerator(accelerate, torch, cfg)
        device = accelerator.device
        is_main = accelerator.is_main_process
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

        started_at = ex.now()
        header = "lorahub training configuration (lorahub train --config FILE)"
        if is_main and not resume:  # first thing: a run that is stopped later can be resumed
            save_config(cfg, out / CONFIG_NAME, header=header)

        flow_mod.check_quantize(cfg.quantize, device)  # before a 12 B transformer is loaded for nothing

        # -- the base model
        ref = resolve_base(cfg.base, base_config=cfg.base_config)
        self.log(f"loading base model {ref.name}")
        pipe = load_pipeline(ref, device="cpu")
        cond = conditioning_for(pipe, ref.family, max_sequence_length=cfg.max_sequence_length)
        family = cond.family if cond.flow else (ref.family or cond.family)
        self.pipe = pipe
        self.conditioning = cond
        unet, vae = cond.denoiser(), pipe.vae
        encoders = cond.encoders()
        noise_scheduler: Any = None
        if cond.flow:
            # Flux.1 / SD3: flow matching (lorahub.training.flow); the DDPM options do not apply
            for given, option in ((cfg.prediction_type, "--prediction-type"), (cfg.snr_gamma, "--snr-gamma")):
                if given is not None:
                    raise UsageError(f"{option} is for SD 1.x/2.x and SDXL; {family} bases train by flow matching",
                                     hint="see --timestep-sampling and --loss-weighting")
            prediction_type = "flow"
            sampling = flow_mod.sampling_of(cfg, family)
            sched_cfg = dict(pipe.scheduler.config)
            shift = flow_mod.static_shift(cfg, sched_cfg)
            if cfg.dynamic_shift and family != "flux":
                raise UsageError("--dynamic-shift is Flux.1's resolution-dependent shift", hint="use --timestep-shift")
        else:
            if cfg.quantize:
                raise UsageError("--quantize is for Flux.1 and SD3 bases")
            noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
            if cfg.prediction_type:
                noise_scheduler.register_to_config(prediction_type=cfg.prediction_type)
                pipe.scheduler.register_to_config(prediction_type=cfg.prediction_type)  # previews sample the same way
            prediction_type = noise_scheduler.config.prediction_type
            if prediction_type not in ("epsilon", "v_prediction"):
                raise TrainingError(f"unsupported prediction type '{prediction_type}'")
            if prediction_type == "epsilon" and noise_scheduler.config.get("rescale_betas_zero_snr", False):
                # at the last timestep the latent is pure noise: epsilon is the input itself, and min-SNR divides by 0
                raise UsageError("this base's schedule ends at a zero SNR, where epsilon prediction is undefined",
                                 hint="train it with v_prediction, as its scheduler says")

        # Frozen weights in the mixed-precision dtype, cast before they move (an fp32 SDXL UNet alone is 10 GB).
        # SDXL's VAE overflows in fp16 (its config says force_upcast): it stays fp32 then, as in diffusers.
        vae_dtype = weight_dtype
        if weight_dtype == torch.float16 and cond.family == "sdxl" and getattr(vae.config, "force_upcast", False):
            vae_dtype = torch.float32
        for module, dtype in ((unet, weight_dtype), (vae, vae_dtype), *((e, weight_dtype) for e in encoders)):
            module.requires_grad_(False)
            if module.dtype != dtype:
                with _quiet_diffusers():
                    module.to(dtype=dtype)
        # The VAE and the text encoders go first: what they compute is cached, and on a GPU they leave it
        # again before the UNet arrives, so the two never share its memory.
        for module in (vae, *encoders):
            module.to(device)

        # -- cached latents and text-encoder outputs
        stream = BatchStream(dataset, cfg.batch_size, cfg.seed)
        scaling = float(vae.config.scaling_factor)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latent_cache: dict[tuple[int, bool], Any] = {}

        def encode(idx: int, flipped: bool) -> Any:
            arr = load_pixels(dataset.items[idx])
            x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)
            if flipped:
                x = torch.flip(x, dims=[2])
            with torch.no_grad():
                dist = vae.encode(x.unsqueeze(0).to(device, dtype=vae_dtype)).latent_dist
            return dist.mode()[0].float().cpu()

        if cfg.cache_latents:
            self.log(f"caching latents of {dataset.num_images} image(s)")
            for idx in range(dataset.num_images):
                for flipped in ((False, True) if cfg.flip else (False,)):
                    latent_cache[(idx, flipped)] = encode(idx, flipped)

        def latent_of(idx: int, flipped: bool) -> Any:
            if cfg.cache_latents:
                return latent_cache[(idx, flipped)]
            return encode(idx, flipped)

        # text-encoder outputs per caption while the encoders are frozen
        te_cache: dict[str, Any] = {}

        def cache_embeds(captions: list[str]) -> None:
            with torch.no_grad():
                for i in range(0, len(captions), 32):
                    chunk = captions[i : i + 32]
                    for c, row in zip(chunk, cond.encode(chunk, encoders, device).rows(), strict=True):
                        te_cache[c] = row

        def embed(captions: list[str]) -> Any:
            if cfg.train_text_encoder:
                return cond.encode(captions, run_encoders, device)
            missing = [c for c in dict.fromkeys(captions) if c not in te_cache]
            if missing:
                if len(te_cache) > 4096:
                    te_cache.clear()
                cache_embeds(missing)
            return TextEmbeds.stack([te_cache[c] for c in captions])

        offloaded: list[Any] = []  # modules moved off the accelerator until the previews
        static_captions = not cfg.train_text_encoder and not cfg.caption_dropout and not cfg.shuffle_tags
        prompts = list(cfg.sample_prompts) or [dataset.trigger or (dataset.items[0].caption or "a picture")]
        #: Flux.1/SD3 with the encoders freed: the preview prompts' embeddings (and SD3's empty negative one)
        preview_embeds: dict[str, Any] | None = None
        if static_captions:
            distinct = list(dict.fromkeys(it.caption for it in dataset.items))
            self.log(f"caching text-encoder outputs of {len(distinct)} caption(s)")
            cache_embeds(distinct)
            if cond.flow and cfg.offload_text_encoders:
                with torch.no_grad():
                    preview_embeds = dict(zip([*prompts, ""], cond.encode([*prompts, ""], encoders, device).rows(),
                                              strict=True))
                # T5-XXL alone is 9 GB: what the run needs of the encoders is cached, so they go
                for name in cond.encoder_names:
                    if getattr(pipe, name, None) is not None:
                        setattr(pipe, name, None)
                encoders = []
                self.log("text encoders freed (captions and preview prompts encoded)")
        if device.type != "cpu":
            if static_captions:
                offloaded += encoders
            if cfg.cache_latents:
                offloaded.append(vae)
            for module in offloaded:
                module.to("cpu")
            if offloaded and device.type == "cuda":
                torch.cuda.empty_cache()

        if cond.flow and cfg.quantize:
            n = flow_mod.quantize_frozen(unet, cfg.quantize, device, weight_dtype)
            self.log(f"quantized {n} frozen transformer layer(s) to {cfg.quantize}")
        unet.to(device)

        # -- LoRA layers (seeded init; a resumed run overwrites them from the checkpoint)
        accelerate.utils.set_seed(cfg.seed)
        alpha = cfg.effective_alpha()
        denoiser_targets = flow_mod.target_modules(unet, cfg.targets) if cond.flow else list(cfg.target_modules)
        unet_lora = LoraConfig(r=cfg.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                               target_modules=denoiser_targets)
        unet.add_adapter(unet_lora)
        te_lora = None
        te_names = cond.trainable_encoder_names if cfg.train_text_encoder else ()
        if cond.flow and cfg.train_text_encoder:
            cond.t5_cache = {}  # CLIP trains, T5 does not: its outputs are computed once per caption
        trained_encoders = [getattr(pipe, n) for n in te_names]
        if cfg.train_text_encoder:
            te_lora = LoraConfig(r=cfg.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                 target_modules=list(TEXT_ENCODER_TARGET_MODULES))
            for encoder in trained_encoders:
                peft.inject_adapter_in_model(te_lora, encoder)
                for n, p in encoder.named_parameters():
                    p.requires_grad_("lora_" in n)
        trainable_models = [unet, *trained_encoders]
        if weight_dtype != torch.float32:
            cast_training_params(trainable_models, dtype=torch.float32)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            for encoder in trained_encoders:
                encoder.gradient_checkpointing_enable()

        params: dict[str, Any] = {}
        for prefix, model in (("unet", unet), *zip(te_names, trained_encoders, strict=True)):
            for n, p in model.named_parameters():
                if p.requires_grad:
                    params[f"{prefix}.{n}"] = p
        if not params:
            raise TrainingError("no trainable LoRA parameters were created (do the target modules exist in this base?)")
        groups = [{"params": [p for n, p in params.items() if n.startswith("unet.")], "lr": cfg.lr}]
        if cfg.train_text_encoder:
            te_lrs = {"text_encoder": cfg.text_encoder_lr or cfg.lr,
                      "text_encoder_2": cfg.text_encoder_2_lr or cfg.text_encoder_lr or cfg.lr}
            for name in te_names:
                groups.append({"params": [p for n, p in params.items() if n.startswith(name + ".")],
                               "lr": te_lrs[name]})
        optimizer = _optimizer(torch, groups, cfg, device)
        schedule = cfg.lr_scheduler
        if schedule == "constant" and cfg.lr_warmup_steps:
            schedule = "constant_with_warmup"
        nproc = accelerator.num_processes
        lr_scheduler = get_scheduler(schedule, optimizer=optimizer, num_warmup_steps=cfg.lr_warmup_steps * nproc,
                                     num_training_steps=cfg.steps * nproc)
        unet_t, *prepared = accelerator.prepare(unet, *trained_encoders, optimizer, lr_scheduler)
        *te_ts, optimizer, lr_scheduler = prepared
        # the encoders the loop runs: the prepared (wrapped) ones when they train, else the frozen ones
        if cfg.train_text_encoder:  # the frozen ones (T5) as they are, the trained ones prepared
            wrapped = dict(zip(te_names, te_ts, strict=True))
            run_encoders = [wrapped.get(n, e) for n, e in zip(cond.encoder_names, encoders, strict=False)]
        else:
            run_encoders = encoders
        models_t = [unet_t, *te_ts]

        # -- resume
        start_step = 0
        resumed_from = None
        if resume:
            latest = ckpt_mod.latest_checkpoint(out)
            if latest is None:
                raise TrainingError(
                    f"{out}: no checkpoint to resume from",
                    hint="checkpoints are written with --checkpoint-every N; start again with --overwrite",
                )
            if latest.step > cfg.steps:
                raise UsageError(f"the checkpoint is at step {latest.step}, beyond --steps {cfg.steps}")
            state = ckpt_mod.load_checkpoint(latest, params=params, optimizer=optimizer, scheduler=lr_scheduler)
            start_step = latest.step
            resumed_from = latest.step
            self.loss_history = list(state.get("loss_history", []))
            self.log(f"resuming from the checkpoint of step {start_step}")
            if is_main:  # the settings a resume may change (--steps, ...) are now the run's
                save_config(cfg, out / CONFIG_NAME, header=header)

        def batch_loss(step: int, micro: int, batch: list[int]) -> Any:
            gen = torch.Generator().manual_seed(_mix("noise", cfg.seed, step, micro, accelerator.process_index))
            rng = random.Random(_mix("captions", cfg.seed, step, micro, accelerator.process_index))
            flips = [cfg.flip and rng.random() < 0.5 for _ in batch]
            latents = (torch.stack([latent_of(i, f) for i, f in zip(batch, flips, strict=False)]) - shift) * scaling
            noise = torch.randn(latents.shape, generator=gen)
            if cfg.noise_offset:
                noise = noise + cfg.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=gen)
            bsz = latents.shape[0]
            if cond.flow:
                mu = None
                if cfg.dynamic_shift:
                    mu = flow_mod.dynamic_mu(sched_cfg, (latents.shape[2] // 2) * (latents.shape[3] // 2))
                sigmas = flow_mod.sample_sigmas(sampling, bsz, gen, logit_mean=cfg.logit_mean,
                                                logit_std=cfg.logit_std, mode_scale=cfg.mode_scale, shift=shift, mu=mu)
                captions = [
                    training_caption(dataset.items[i].caption, rng, trigger=dataset.trigger,
                                     shuffle_tags=cfg.shuffle_tags, keep_tokens=cfg.keep_tokens,
                                     caption_dropout=cfg.caption_dropout)
                    for i in batch
                ]
                latents, noise, sigmas = latents.to(device), noise.to(device), sigmas.to(device)
                s = sigmas.view(-1, 1, 1, 1)
                noisy = (1.0 - s) * latents + s * noise
                pred = cond.predict(unet_t, noisy, sigmas, embed(captions), guidance=cfg.guidance_scale,
                                    dtype=weight_dtype)
                per_sample = (pred.float() - (noise - latents).float()).pow(2).mean(dim=list(range(1, noise.ndim)))
                return (per_sample * flow_mod.loss_weights(cfg.loss_weighting, sigmas)).mean()
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=gen).long()
            captions = [
                training_caption(dataset.items[i].caption, rng, trigger=dataset.trigger, shuffle_tags=cfg.shuffle_tags,
                                 keep_tokens=cfg.keep_tokens, caption_dropout=cfg.caption_dropout)
                for i in batch
            ]
            latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            embeds = embed(captions)
            time_ids = None
            if cond.uses_time_ids:
                time_ids = cond.time_ids([dataset.items[i].time_ids(f) for i, f in zip(batch, flips, strict=True)],
                                         device, weight_dtype)
            target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
            pred = unet_t(noisy.to(weight_dtype), timesteps, return_dict=False,
                          **cond.unet_inputs(embeds, time_ids))[0]
            if cfg.snr_gamma is None:
                return F.mse_loss(pred.float(), target.float(), reduction="mean")
            snr = compute_snr(noise_scheduler, timesteps)
            weights = torch.stack([snr, cfg.snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
            weights = weights / snr if prediction_type == "epsilon" else weights / (snr + 1)
            loss = F.mse_loss(pred.float(), target.float(), reduction="none")
            return (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()

        # -- previews
        samples_dir = out / ex.SAMPLES_DIR
        from ..base import drawing

        guided: dict[str, Any] = {"guidance_scale": drawing.GUIDANCE} if drawing.is_drawing_base(ref.path) else {}
        sample_files: list[tuple[str, str]] = []

        def make_samples(step: int) -> list[tuple[str, str]]:
            if not is_main:
                return []
            made = []
            was_training = unet.training
            unet.eval()
            for encoder in encoders:
                encoder.eval()
            for module in offloaded:
                module.to(device)
            if offloaded and hasattr(vae, "enable_tiling"):
                vae.enable_tiling()  # a small GPU: decode previews tile by tile
            pipe.set_progress_bar_config(disable=True)
            try:
                with torch.no_grad(), accelerator.autocast():
                    for i, prompt in enumerate(prompts):
                        gen = torch.Generator().manual_seed(int(cfg.sample_seed or 0) + i)
                        text: dict[str, Any] = {"prompt": prompt}
                        if preview_embeds is not None:  # the encoders were freed: their cached outputs
                            e, neg = preview_embeds[prompt], preview_embeds[""]
                            text = {"prompt_embeds": e.hidden[None].to(device), "pooled_prompt_embeds": e.pooled[None].to(device)}
                            if family == "sd3":
                                text.update(negative_prompt_embeds=neg.hidden[None].to(device),
                                            negative_pooled_prompt_embeds=neg.pooled[None].to(device))
                        image = pipe(**text, **guided, num_inference_steps=cfg.sample_steps, generator=gen,
                                     height=resolution, width=resolution, output_type="pil").images[0]
                        rel = f"{ex.SAMPLES_DIR}/step-{step:06d}-{i}.png"
                        samples_dir.mkdir(parents=True, exist_ok=True)
                        import io

                        buf = io.BytesIO()
                        image.save(buf, format="PNG")
                        from .._atomic import atomic_write_bytes

                        atomic_write_bytes(out / rel, buf.getvalue())
                        made.append((prompt, rel))
            finally:
                for module in offloaded:
                    module.to("cpu")
                if was_training:
                    unet.train()
                    for encoder in trained_encoders:
                        encoder.train()
            return made

        # -- the loop
        for model in models_t:
            model.train()
        batches_per_epoch = stream.batches_per_epoch
        per_step = cfg.gradient_accumulation_steps * nproc
        self.log(f"training {cfg.steps - start_step} step(s) on {device} "
                 f"({nproc} process(es), mixed precision {accelerator.mixed_precision})")
        bar = None
        if is_main and self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=start_step, desc=f"training {cfg.name}", file=sys.stderr,
                       dynamic_ncols=True, leave=True)
        step = start_step
        self._loop_started = True
        loop_started = time.perf_counter()
        trainable = list(params.values())
        last_ckpt = ckpt_mod.latest_checkpoint(out) if resume else None
        try:
            for step in range(start_step + 1, cfg.steps + 1):
                losses = []
                epoch = 0
                for micro in range(cfg.gradient_accumulation_steps):
                    position = ((step - 1) * cfg.gradient_accumulation_steps + micro) * nproc + accelerator.process_index
                    epoch, batch = stream.at(position)
                    with accelerator.accumulate(*models_t):
                        loss = batch_loss(step, micro, batch)
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
                        optimizer.step()
                        lr_scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                    losses.append(loss.detach())
                step_loss = accelerator.gather(torch.stack(losses).mean().reshape(1)).mean().item()
                lr = lr_scheduler.get_last_lr()[0]
                self.loss_history.append({"step": step, "loss": step_loss, "lr": lr, "epoch": epoch + 1})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                if not math.isfinite(step_loss):
                    raise TrainingError(
                        f"the loss became {step_loss} at step {step}",
                        hint="lower --lr, or use --mixed-precision bf16/no instead of fp16",
                    )
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    if is_main:
                        last_ckpt = ckpt_mod.save_checkpoint(
                            out, step, params=params, optimizer=optimizer, scheduler=lr_scheduler,
                            extra={"loss_history": self.loss_history, "epoch": epoch + 1, "seed": cfg.seed},
                        )
                    accelerator.wait_for_everyone()
                if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.steps:
                    sample_files += make_samples(step)
                if self.callback is not None and is_main:
                    self.callback(step, step_loss)
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            where = (
                f"the checkpoint of step {last_ckpt.step} is intact: continue with "
                f"lorahub train --resume --out {out}" if last_ckpt else "no checkpoint was written (use --checkpoint-every N)"
            )
            raise TrainingInterrupted(f"training interrupted at step {step}; {where}") from None
        if bar is not None:
            bar.close()
        loop_seconds = time.perf_counter() - loop_started
        done = cfg.steps - start_step
        accelerator.wait_for_everyone()

        # -- the package
        final_samples = make_samples(cfg.steps)
        files: list[str] = []
        kohya_rel = None
        losses_only = [h["loss"] for h in self.loss_history]
        first, last = ex.window_means(losses_only)
        epochs = max(h["epoch"] for h in self.loss_history) if self.loss_history else 0
        if is_main:
            unet_u = accelerator.unwrap_model(unet_t)
            unet_state = ex.split_lora_state(get_peft_model_state_dict(unet_u))
            te_states: dict[str, dict[str, tuple[Any, Any]]] = {name: {} for name in ("text_encoder", "text_encoder_2")}
            for name, te_t in zip(te_names, te_ts, strict=True):
                te_states[name] = ex.split_lora_state(get_peft_model_state_dict(accelerator.unwrap_model(te_t)))
            te_state, te2_state = te_states["text_encoder"], te_states["text_encoder_2"]
            finished_at = ex.now()
            base_sha = None
            if ref.kind == "single_file":
                from ..adapters.fingerprint import fingerprint_file

                try:
                    base_sha = fingerprint_file(ref.location).sha256
                except Exception:  # noqa: BLE001 - the hash is informational
                    base_sha = None
            md = ex.build_metadata(
                config=cfg, name=cfg.name or out.name, family=family, prediction_type=prediction_type,
                resolution=resolution, dataset=dataset, steps=cfg.steps, epochs=epochs,
                batches_per_epoch=math.ceil(batches_per_epoch / per_step) if per_step else batches_per_epoch,
                num_processes=nproc, started_at=started_at, finished_at=finished_at,
                base_name=ref.name, base_sha256=base_sha, session_id=_mix("session", cfg.seed, started_at) % (2**31),
                architecture=ex.mmdit_architecture(family, dict(unet_u.config)) if cond.flow else None,
                zero_terminal_snr=bool(noise_scheduler is not None
                                       and noise_scheduler.config.get("rescale_betas_zero_snr", False)),
            )
            if cond.flow:
                kohya_rel = ex.write_mmdit_package(
                    out, family=family, name=cfg.name or out.name, config=cfg, metadata=md,
                    transformer=unet_state, text_encoders={n: te_states[n] for n in te_names},
                    alpha=alpha, transformer_config=ex.folded_config(unet_u.peft_config["default"].to_dict()),
                    te_config=ex.folded_config(te_lora.to_dict()) if te_lora is not None else None,
                )
            elif cfg.writes("diffusers"):
                # alpha/rank folded into lora.up; the metadata then says alpha = rank (docs/formats.md)
                te_cfg = ex.folded_config(te_lora.to_dict()) if te_lora is not None else None
                te2_cfg = te_cfg if te2_state else None
                unet_cfg = ex.folded_config(unet_u.peft_config["default"].to_dict())
                diff_md = {**md, "lora_adapter_metadata": ex.peft_metadata(unet_cfg, te_cfg, te2_cfg)}
                records = ex.diffusers_records(unet_state, te_state, cfg.save_precision, scale=alpha / cfg.rank,
                                               te2=te2_state)
                ex.write_weights(out / ex.WEIGHTS_NAME, records, diff_md)
            if cfg.writes("kohya") and not cond.flow:
                # SDXL: kohya's names (SGM UNet paths for this base's layout, lora_te1_/lora_te2_)
                kohya_rel = f"{cfg.name}_kohya.safetensors"
                records = ex.kohya_records(unet_state, te_state, alpha, cfg.save_precision, te2=te2_state,
                                           family=family, unet_config=dict(unet_u.config))
                kohya_md = dict(md)
                if family == "sdxl":
                    from ..adapters.layouts import SGM_IMPLEMENTATION

                    kohya_md["modelspec.implementation"] = SGM_IMPLEMENTATION
                ex.write_weights(out / kohya_rel, records, kohya_md)
            ex.write_loss_history(out / ex.LOSS_HISTORY_NAME, self.loss_history, {
                "steps": cfg.steps, "first_loss": first, "last_loss": last, "seed": cfg.seed,
                "resumed_from": resumed_from,
            })
            ex.draw_loss_curve(out / ex.LOSS_CURVE_NAME, [h["step"] for h in self.loss_history], losses_only,
                               title=f"{cfg.name}: training loss")
            sample_files += final_samples
            card = ex.model_card(
                name=cfg.name or out.name, base_name=ref.name, family=family, trigger=dataset.trigger, config=cfg,
                steps=cfg.steps, images=dataset.num_images, resolution=resolution,
                samples=[s for s in final_samples], kohya_file=kohya_rel,
                diffusers_file=ex.WEIGHTS_NAME if cfg.writes("diffusers") else None,
            )
            from .._atomic import atomic_write_text

            atomic_write_text(out / ex.CARD_NAME, card)
            if not cfg.keep_checkpoints:
                shutil.rmtree(ckpt_mod.checkpoint_dir(out), ignore_errors=True)
            files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
        accelerator.wait_for_everyone()
        return TrainResult(
            out=str(out),
            weights=str(out / (ex.WEIGHTS_NAME if cfg.writes("diffusers") else f"{cfg.name}_kohya.safetensors")),
            kohya_weights=str(out / kohya_rel) if kohya_rel else None,
            name=cfg.name or out.name,
            base=ref.name,
            base_family=family,
            trigger=dataset.trigger,
            rank=cfg.rank,
            alpha=alpha,
            steps=cfg.steps,
            resumed_from=resumed_from,
            epochs=epochs,
            images=dataset.num_images,
            train_images=dataset.num_train_images,
            resolution=resolution,
            first_loss=first,
            last_loss=last,
            seconds=time.perf_counter() - t_start,
            steps_per_second=done / loop_seconds if loop_seconds > 0 and done else 0.0,
            device=str(device),
            mixed_precision=accelerator.mixed_precision,
            files=files,
            warnings=warnings,
        )

    # ------------------------------------------------------------------------------ helpers

    @staticmethod
    def _accelerator(accelerate: Any, torch: Any, cfg: TrainConfig) -> Any:
        from accelerate.state import AcceleratorState, GradientState

        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if not distributed:
            # The state is a process-wide singleton: a second run in one process (tests, notebooks)
            # with another precision would otherwise be refused.
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        device = cfg.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is available here", hint="use --device cpu or auto")
        if device == "mps" and not _mps(torch):
            raise UsageError("--device mps: Apple's Metal backend is not available here")
        if device.startswith("cuda:") and not distributed:
            torch.cuda.set_device(int(device.split(":", 1)[1]))
        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available() and not _mps(torch))
        if cfg.mixed_precision == "fp16" and cpu:
            raise UsageError("fp16 mixed precision needs a GPU", hint="use --mixed-precision bf16 or no on a CPU")
        try:
            return accelerate.Accelerator(
                gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                mixed_precision=cfg.mixed_precision,
                cpu=cpu,
            )
        except (ValueError, RuntimeError) as exc:
            raise TrainingError(f"cannot set up the accelerator: {str(exc).splitlines()[0]}") from None


def _optimizer(torch: Any, groups: list[dict[str, Any]], cfg: TrainConfig, device: Any) -> Any:
    """AdamW, fused (one kernel for all parameters) where torch has it for the device, else foreach.

    A LoRA has hundreds of small tensors: the per-tensor loop of the default
    implementation costs a quarter of a step of a small model on a CPU.
    ``optimizer="adamw8bit"``: bitsandbytes' ``AdamW8bit`` (CUDA only), whose
    8-bit moments take a quarter of AdamW's optimizer memory.
    """
    kwargs = dict(lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay,
                  eps=cfg.adam_epsilon)
    if cfg.optimizer == "adamw8bit":
        if getattr(device, "type", str(device)) != "cuda":
            raise UsageError("--optimizer adamw8bit needs a CUDA GPU", hint="use --optimizer adamw")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UsageError("--optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes)") from None
        return bnb.optim.AdamW8bit(groups, **kwargs)
    if getattr(device, "type", str(device)) in ("cpu", "cuda", "mps"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):
            pass
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


class _quiet_diffusers:
    """Silence diffusers' advisory logging (dtype-cast notices) for a moment."""

    def __enter__(self) -> None:
        from diffusers.utils import logging

        self._logging = logging
        self._level = logging.get_verbosity()
        logging.set_verbosity_error()

    def __exit__(self, *exc: object) -> None:
        self._logging.set_verbosity(self._level)


def _mps(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    callback: Callback | None = None,
) -> TrainResult:
    """Run one training run (see :class:`Trainer`)."""
    return Trainer(config, log=log, progress=progress, callback=callback).run(resume=resume, overwrite=overwrite)


__all__ = ["Trainer", "train", "prepare_output", "base_defaults", "base_geometry", "native_resolution", "package_name"]
