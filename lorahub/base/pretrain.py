"""Pretraining the drawing base (:mod:`lorahub.base.drawing`) from scratch on :mod:`lorahub.world`.

``lorahub base pretrain --out DIR`` calls :func:`pretrain`. Two phases, both on
``world.sample(seed, images, "train")`` rendered at 64 px:

1. **the autoencoder**: the ``AutoencoderKL`` alone, trained as a plain autoencoder
   (the mean squared error of the reconstruction of the latent mean, ``vae_steps``
   steps; its log-variance is then set to -20, so its posterior is as good as
   deterministic, as SD's nearly is), then every training
   image is encoded once (the latent mean), and the VAE's ``scaling_factor`` set
   to one over the latents' standard deviation, as SD's 0.18215 was;
2. **the diffusion model**: the UNet and the text encoder together, on those
   cached latents, with the SD 1.x noise schedule and epsilon prediction
   (``steps`` steps); a share of the captions (``uncond``) is replaced by the
   empty prompt so that classifier-free guidance works; the saved UNet is an
   exponential moving average of its weights.

Everything is drawn from generators seeded by ``seed`` (torch on CPU, numpy's
PCG64), so the same seed, settings and torch build give the same weights; on a
GPU, the result is close, not identical. The folder is written in float16
safetensors into a temporary sibling and renamed into place: ``out`` is either
untouched or the finished model, never half-written.

:func:`evaluate` draws captions with a pipeline and reads the images back with
:func:`lorahub.world.judge`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BaseModelError, UsageError
from . import drawing

#: Marker file of a pretrained drawing base.
MARKER = "lorahub_base.json"
DRAWING_ID = "lorahub/drawing-sd1-tiny"


@dataclass
class PretrainConfig:
    """Settings of one pretraining run (the defaults are the shipped model's)."""

    seed: int = 0
    #: UNet + text encoder steps.
    steps: int = 6000
    #: Autoencoder steps.
    vae_steps: int = 3000
    #: Distinct training images (``world.sample(seed, images, "train")``).
    images: int = 20000
    batch: int = 32
    vae_batch: int = 16
    lr: float = 1.5e-3
    vae_lr: float = 3e-3
    #: Share of the steps the learning rate warms up over, before a cosine decay to zero.
    warmup: float = 0.02
    #: Side of the random square crops the autoencoder trains on (64: whole images). 32 px crops
    #: learned faster per step but did not carry over to whole images (docs/drawing-base.md).
    vae_crop: int = 64
    #: Share of captions replaced by the empty prompt.
    uncond: float = 0.1
    #: What the UNet predicts: "v_prediction" (as SD 2.x; weighs the noisy timesteps, which decide the
    #: layout, far more than "epsilon" does) or "epsilon" (as SD 1.x). Written into the scheduler's config.
    prediction: str = "v_prediction"
    #: Min-SNR loss weighting (``min(SNR, gamma) / SNR`` per sample; 0: plain MSE), which weighs the
    #: noisy timesteps that decide the layout more than the nearly clean ones.
    snr_gamma: float = 5.0
    #: Decay of the UNet's and text encoder's exponential moving average (0: none).
    ema: float = 0.999
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("seed", "steps", "vae_steps", "images", "batch", "vae_batch", "vae_crop"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
                raise UsageError(f"{name.replace('_', '-')} must be a positive integer, not {value!r}")
        if self.images > 100_000:
            raise UsageError(f"images must be at most 100000, not {self.images}")
        if self.prediction not in ("epsilon", "v_prediction"):
            raise UsageError(f"prediction must be epsilon or v_prediction, not {self.prediction!r}")
        if self.snr_gamma < 0:
            raise UsageError("snr_gamma must not be negative")
        if not 0.0 <= self.uncond < 1.0 or not 0.0 <= self.ema < 1.0 or not 0.0 <= self.warmup < 1.0:
            raise UsageError("uncond, ema and warmup must lie in [0, 1)")
        if self.device not in ("cpu", "cuda"):
            raise UsageError(f"device must be cpu or cuda, not {self.device!r}")


def _lr_at(step: int, total: int, peak: float, warmup: float) -> float:
    warm = max(1, int(total * warmup))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _images(seed: int, n: int, say: Callable[[str], None]):  # noqa: ANN202 - (uint8 array, captions)
    import numpy as np

    from .. import world

    say(f"rendering {n} training images of the world (seed {seed})")
    samples = world.sample(seed, n, "train")
    return np.stack([s.image for s in samples]), [s.caption for s in samples]


def train_vae(vae: Any, images: Any, cfg: PretrainConfig, say: Callable[[str], None]) -> None:
    """Phase 1: the autoencoder on ``images`` ((N, 64, 64, 3) uint8)."""
    import numpy as np
    import torch

    device = torch.device(cfg.device)
    rng = np.random.default_rng([cfg.seed, 1])
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    started = time.monotonic()
    running = None
    for step in range(cfg.vae_steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.vae_steps, cfg.vae_lr, cfg.warmup)
        idx = rng.integers(0, len(images), cfg.vae_batch)
        crop = min(cfg.vae_crop, images.shape[1])
        if crop < images.shape[1]:
            top, left = rng.integers(0, images.shape[1] - crop + 1, 2) // 4 * 4
            batch = images[idx, top:top + crop, left:left + crop]
        else:
            batch = images[idx]
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
        z = vae.encode(x).latent_dist.mean
        loss = torch.nn.functional.mse_loss(vae.decode(z).sample, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % max(1, cfg.vae_steps // 20) == 0 or step + 1 == cfg.vae_steps:
            say(f"vae {step + 1}/{cfg.vae_steps} loss {running:.5f} ({time.monotonic() - started:.0f} s)")
    with torch.no_grad():  # a deterministic posterior: log-variance -20 whatever the image
        half = vae.quant_conv.out_channels // 2
        vae.quant_conv.weight[half:] = 0.0
        vae.quant_conv.bias[half:] = -20.0
    vae.eval()


def encode_latents(vae: Any, images: Any, device: str, batch: int = 64) -> Any:
    """The latent means of ``images`` (unscaled), float32 on CPU."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            out.append(vae.encode(x.to(device)).latent_dist.mean.float().cpu())
    return torch.cat(out)


def train_diffusion(pipe: Any, latents: Any, captions: Sequence[str], cfg: PretrainConfig,
                    say: Callable[[str], None]) -> None:
    """Phase 2: the UNet and the text encoder on cached (scaled) ``latents`` and their ``captions``."""
    import copy

    import numpy as np
    import torch

    device = torch.device(cfg.device)
    unet, text_encoder, tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
    scheduler = pipe.scheduler
    alphas = scheduler.alphas_cumprod.to(device)
    ids = tokenizer(list(captions) + [""], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    empty = ids[-1:]
    ids = ids[:-1]
    rng = np.random.default_rng([cfg.seed, 2])
    gen = torch.Generator(device="cpu").manual_seed(drawing.component_seed(cfg.seed, "unet/noise"))
    unet.to(device).train()
    text_encoder.to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    ema = [copy.deepcopy(m).eval().requires_grad_(False) for m in (unet, text_encoder)] if cfg.ema else []
    started = time.monotonic()
    running = None
    n_train = int(scheduler.config.num_train_timesteps)
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        idx = rng.integers(0, len(latents), cfg.batch)
        drop = rng.random(cfg.batch) < cfg.uncond
        tok = ids[idx].clone()
        tok[torch.from_numpy(drop)] = empty
        x0 = latents[idx].to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, n_train, (cfg.batch,), generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = text_encoder(tok.to(device))[0]
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        target = noise if cfg.prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        per = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
        if cfg.snr_gamma:
            snr = a.view(-1) / (1 - a.view(-1))
            per = per * torch.clamp(snr, max=cfg.snr_gamma) / (snr if cfg.prediction == "epsilon" else snr + 1)
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema:
            decay = min(cfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for avg, live in zip(ema, (unet, text_encoder), strict=True):
                    for pa, pl in zip(avg.parameters(), live.parameters(), strict=True):
                        pa.lerp_(pl, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % max(1, cfg.steps // 50) == 0 or step + 1 == cfg.steps:
            elapsed = time.monotonic() - started
            say(f"unet {step + 1}/{cfg.steps} loss {running:.4f} ({elapsed:.0f} s, "
                f"about {elapsed / (step + 1) * (cfg.steps - step - 1):.0f} s left)")
    if ema:
        unet.load_state_dict(ema[0].state_dict())
        text_encoder.load_state_dict(ema[1].state_dict())
    unet.eval()
    text_encoder.eval()


def pretrain_pipeline(cfg: PretrainConfig, *, progress: Callable[[str], None] | None = None,
                      vae_from: str | os.PathLike[str] | None = None):  # noqa: ANN201 - a pipeline
    """Train the drawing pipeline in memory (float32) and return it.

    ``vae_from`` (a drawing base folder) reuses its trained autoencoder instead of phase 1
    (for experiments on the diffusion phase alone).
    """
    from ..errors import require

    cfg.check()
    torch = require("torch", "ml")
    require("diffusers", "ml")
    say = progress or (lambda _m: None)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    with torch.random.fork_rng(devices=[]):
        pipe = drawing.build_pipeline(cfg.seed)
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=cfg.prediction)
        images, captions = _images(cfg.seed, cfg.images, say)
        if vae_from is not None:
            from diffusers import AutoencoderKL

            pipe.vae = AutoencoderKL.from_pretrained(Path(vae_from) / "vae", dtype=torch.float32)
            pipe.vae.register_to_config(scaling_factor=1.0)
            pipe.vae.eval()
        else:
            train_vae(pipe.vae, images, cfg, say)
        say("encoding the training images")
        latents = encode_latents(pipe.vae, images, cfg.device)
        scale = float(1.0 / latents.std())
        pipe.vae.register_to_config(scaling_factor=round(scale, 5))
        latents = latents * pipe.vae.config.scaling_factor
        train_diffusion(pipe, latents, captions, cfg, say)
    pipe.to("cpu")
    return pipe


def save_pipeline(pipe: Any, out: str | os.PathLike[str], cfg: PretrainConfig, info: dict[str, Any]) -> Path:
    """Write ``pipe`` in float16 safetensors to ``out``, atomically (temporary sibling, then rename)."""
    import torch
    import transformers

    from .embedded import _fsync_tree, _quiet_transformers, _replace_dir

    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        import diffusers

        level = diffusers.utils.logging.get_verbosity()
        diffusers.utils.logging.set_verbosity_error()  # not its advice on casting with .to()
        try:
            pipe.to(torch.float16)
        finally:
            diffusers.utils.logging.set_verbosity(level)
        with _quiet_transformers(transformers):
            pipe.save_pretrained(tmp, safe_serialization=True)
        marker = {
            "id": DRAWING_ID,
            "family": "sd1",
            "kind": "drawing",
            "seed": cfg.seed,
            "pretrain": {k: v for k, v in asdict(cfg).items() if k != "extra"},
            "config": {"unet": drawing._plain(drawing.UNET_CONFIG), "vae": drawing._plain(drawing.VAE_CONFIG),
                       "resolution": drawing.RESOLUTION},
            "built_with": {m: str(getattr(sys.modules.get(m), "__version__", "?"))
                           for m in ("torch", "diffusers", "transformers")},
            **info,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        if target.exists() and not (target / MARKER).is_file() and any(target.iterdir()):
            raise BaseModelError(f"{target} exists and is not a lorahub base folder; not replacing it")
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def pretrain(out: str | os.PathLike[str], cfg: PretrainConfig | None = None, *,
             progress: Callable[[str], None] | None = None,
             vae_from: str | os.PathLike[str] | None = None) -> Path:
    """Pretrain the drawing base from scratch and save it at ``out`` (see the module's docstring)."""
    cfg = cfg or PretrainConfig()
    cfg.check()
    target = Path(out)
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MARKER).is_file())):
        raise UsageError(f"{target} exists and is not an empty folder or a lorahub base folder")
    started = time.monotonic()
    pipe = pretrain_pipeline(cfg, progress=progress, vae_from=vae_from)
    wall = time.monotonic() - started
    path = save_pipeline(pipe, target, cfg, {"wall_time_s": round(wall, 1)})
    if progress:
        progress(f"saved {path} ({wall:.0f} s)")
    return path


# ------------------------------------------------------------------------------------------ evaluation


def evaluate(pipe: Any, split: str = "heldout", n: int = 100, *, seed: int = 1, steps: int = 20,
             guidance: float = 5.0, batch: int = 25) -> dict[str, Any]:
    """Draw ``n`` captions of ``world.scenes(seed, n, split)`` with ``pipe`` and judge the images.

    Image ``i`` is drawn from a generator seeded with ``seed * 100003 + i``. Returns the
    share of images whose colour, shape, position, size and background the judge reads
    as the caption says (``found``: share where it saw an object at all), and ``per``,
    each image's verdicts.
    """
    import numpy as np
    import torch

    from .. import world

    scenes = world.scenes(seed, n, split)
    captions = [world.caption(s) for s in scenes]
    keys = ("colour", "shape", "position", "size", "background")
    hits = {k: 0 for k in keys}
    found = 0
    per = []
    for start in range(0, n, batch):
        chunk = captions[start:start + batch]
        gens = [torch.Generator("cpu").manual_seed(seed * 100003 + start + i) for i in range(len(chunk))]
        with torch.no_grad():
            images = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                          height=drawing.RESOLUTION, width=drawing.RESOLUTION, output_type="np").images
        for i, image in enumerate(images):
            scene = scenes[start + i]
            verdict = world.judge((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
            agrees = verdict.agrees(scene)
            found += bool(verdict.found)
            for k in keys:
                hits[k] += bool(agrees.get(k))
            per.append({"caption": captions[start + i], **{k: bool(agrees.get(k)) for k in keys}})
    return {"split": split, "n": n, "found": found / n, **{k: hits[k] / n for k in keys}, "per": per}
