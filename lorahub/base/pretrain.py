"""Pretraining the drawing base (:mod:`lorahub.base.drawing`) from scratch on :mod:`lorahub.world`.

``lorahub base pretrain --out DIR`` calls :func:`pretrain`. Two phases, both on
``world.sample(seed, images, "train")`` rendered at 64 px:

1. **the autoencoder**: the ``AutoencoderKL`` alone, started as a 4x4 average pool
   and nearest up-sampling (:func:`init_vae_as_pooling`), then trained as a plain
   autoencoder (the mean squared error of the reconstruction of the latent mean,
   at most ``vae_steps`` steps: it stops once the judge reads its round trip of
   unseen images right, ``vae_target``; :func:`judge_round_trip`); its log-variance
   is then set to -20, so its posterior is as good as
   deterministic, as SD's nearly is), then every training
   image is encoded once (the latent mean), and the VAE's ``scaling_factor`` set
   to one over the latents' standard deviation, as SD's 0.18215 was;
2. **the diffusion model**: the UNet and the text encoder together, on those
   cached latents, with the SD 1.x noise schedule rescaled to a zero terminal
   SNR and v-prediction (``steps`` steps; :attr:`PretrainConfig.zero_snr`,
   :func:`loss_weights`, :func:`draw_timesteps`); a share of the captions (``uncond``) is replaced by the
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
from .embedded import MARKER  # the marker file of every lorahub base folder, the drawing base's too

#: What the judge must read back after the autoencoder's round trip before phase 2 starts.
VAE_TARGET: dict[str, float] = {"colour": 0.98, "shape": 0.9, "position": 0.98, "size": 0.98, "background": 0.98}
_JUDGED = ("colour", "shape", "position", "size", "background")
#: World seed (plus the run's) of the unseen train-split images the autoencoder's round trip is checked on.
_CHECK_SEED = 1_000_000


@dataclass
class PretrainConfig:
    """Settings of one pretraining run (the defaults are the shipped model's)."""

    seed: int = 0
    #: UNet + text encoder steps.
    steps: int = 6000
    #: Autoencoder steps at most (fewer once ``vae_target`` is met); about 0.65 CPU s each on one thread.
    vae_steps: int = 1000
    #: Distinct training images (``world.sample(seed, images, "train")``).
    images: int = 20000
    batch: int = 32
    vae_batch: int = 16
    lr: float = 1.5e-3
    #: 2e-3 upsets the pooling start for the first hundred steps (colour 99% -> 94%); 1e-3 does not.
    vae_lr: float = 1e-3
    #: Share of the steps the learning rate warms up over, before a cosine decay to zero.
    warmup: float = 0.02
    #: Side of the random square crops the autoencoder trains on (64: whole images). 32 px crops
    #: learned faster per step but did not carry over to whole images (docs/drawing-base.md).
    vae_crop: int = 64
    #: How the autoencoder starts: "pooling" (:func:`init_vae_as_pooling`: a 4x4 average pool into
    #: the latent, nearest up-sampling back; its round trip already reads colours) or "random".
    vae_init: str = "pooling"
    #: The autoencoder phase stops early once its judged round trip (:func:`judge_round_trip`) of
    #: ``vae_check_images`` unseen images reads at least these shares right; checked every
    #: ``vae_check_every`` steps (0: never; the phase then runs its ``vae_steps``).
    vae_target: dict[str, float] = field(default_factory=lambda: dict(VAE_TARGET))
    vae_check_every: int = 100
    vae_check_images: int = 100
    #: Share of captions replaced by the empty prompt.
    uncond: float = 0.1
    #: What the UNet predicts: "v_prediction" (as SD 2.x; weighs the noisy timesteps, which decide the
    #: layout, far more than "epsilon" does) or "epsilon" (as SD 1.x). Written into the scheduler's config.
    prediction: str = "v_prediction"
    #: Min-SNR loss weighting (0: plain MSE): the x0 error's weight is capped at ``gamma``, so the nearly clean
    #: timesteps do not dominate. Epsilon: ``min(SNR, gamma) / SNR`` on its loss; v: ``min(SNR + 1, gamma) /
    #: (SNR + 1)``, the v loss itself (an x0 weight of SNR + 1, so 1 at pure noise) capped: the noisy timesteps,
    #: which decide the layout, keep their full weight (``min(SNR, gamma) / (SNR + 1)`` would give them ~SNR).
    snr_gamma: float = 5.0
    #: v only: the x0 error's weight at pure noise (``min(SNR + x0_floor, gamma) / (SNR + 1)`` on the v loss; 1
    #: is plain min-SNR). The x0 error of a nearly pure-noise latent cannot fall below the spread of the images
    #: a caption allows, so at weight 1 its gradient noise drowns the clean steps' small, shape-deciding errors
    #: (the second run of docs/drawing-base.md: position 93%, shape 30%); at 0.1 colour, size and shape return.
    x0_floor: float = 0.1
    #: SD 1.x's schedule rescaled to a zero terminal SNR, sampled with "trailing" timesteps (Lin et al. 2024,
    #: "Common Diffusion Noise Schedules and Sample Steps are Flawed"; diffusers' ``rescale_betas_zero_snr``):
    #: on the plain schedule the noisiest training latent still holds 7% of the image, whose low frequencies
    #: give the object's place away, so the model never learns to place it from the caption and, sampling from
    #: pure noise, puts it wherever the noise suggests. Needs v-prediction. Written into the scheduler's config.
    zero_snr: bool = True
    #: Share of each batch whose timesteps are drawn from ``[noisy_from, num_train_timesteps)`` instead of the
    #: whole range: the noisiest steps are the only ones where the image gives the object's place away too
    #: faintly to copy, so they are where the caption's position words must be learned (10% of a uniform draw).
    noisy_share: float = 0.1
    noisy_from: int = 900
    #: Decay of the UNet's and text encoder's exponential moving average (0: none).
    ema: float = 0.999
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("seed", "steps", "vae_steps", "images", "batch", "vae_batch", "vae_crop", "vae_check_every",
                     "vae_check_images"):
            value = getattr(self, name)
            least = 0 if name in ("seed", "vae_check_every") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise UsageError(f"{name.replace('_', '-')} must be a positive integer, not {value!r}")
        if self.images > 100_000:
            raise UsageError(f"images must be at most 100000, not {self.images}")
        if self.vae_init not in ("pooling", "random"):
            raise UsageError(f"vae_init must be pooling or random, not {self.vae_init!r}")
        if not isinstance(self.vae_target, dict) or not set(self.vae_target) <= set(_JUDGED) or not all(
                isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in self.vae_target.values()):
            raise UsageError(f"vae_target maps some of {', '.join(_JUDGED)} to shares in [0, 1]")
        if self.prediction not in ("epsilon", "v_prediction"):
            raise UsageError(f"prediction must be epsilon or v_prediction, not {self.prediction!r}")
        if self.snr_gamma < 0:
            raise UsageError("snr_gamma must not be negative")
        if not 0.0 < self.x0_floor <= 1.0:
            raise UsageError("x0_floor must lie in (0, 1]")
        if self.zero_snr and self.prediction != "v_prediction":
            raise UsageError("zero_snr needs v_prediction (epsilon is undefined at a zero terminal SNR)")
        if not 0.0 <= self.noisy_share <= 1.0 or not 0 <= self.noisy_from < 1000:
            raise UsageError("noisy_share must lie in [0, 1] and noisy_from in [0, 1000)")
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


def init_vae_as_pooling(vae: Any, carrier: float = 4.0, free: float = 0.3) -> None:
    """Start ``vae`` (an ``AutoencoderKL`` of :data:`drawing.VAE_CONFIG`'s layout) as a plain resampler.

    The encoder becomes a 4x4 average pool of the image into latent channels 0-2 (red,
    green, blue in [-1, 1]) and channel 3 (a "detail" channel: a small random feature,
    for training to put to use); the decoder becomes nearest up-sampling of channels 0-2
    back. Every resnet's and attention's residual branch starts at zero (its last layer
    zeroed, so it is the identity and learns from there), the down-samplers average 2x2,
    the up-samplers and shortcuts copy their channels. Group norms on the main path (the
    encoder's and decoder's ``conv_norm_out``) would erase each image's mean colour, so
    each carried channel x enters them as ``x, -x, carrier, -carrier`` in one group: the
    group's mean is then 0 and its spread nearly ``carrier`` whatever the image (within
    3% for ``carrier=4``), and ``SiLU(x) - SiLU(-x) = x`` after them gives x back exactly.
    Other channels start as ``free`` times their random initialisation. The round trip
    of this start already reads colour, position, size and background right (measured in
    docs/drawing-base.md); training then sharpens the shapes.
    """
    import math

    import torch

    enc, dec = vae.encoder, vae.decoder
    groups = vae.config.norm_num_groups
    widths = tuple(vae.config.block_out_channels)
    latent = vae.config.latent_channels
    g_enc, g_dec = widths[-1] // groups, widths[0] // groups
    if (len(widths) != 3 or latent < 4 or vae.config.in_channels != 3 or vae.config.out_channels != 3
            or g_enc < 4 or g_dec < 4 or groups < latent or widths[-2] == widths[-1] or widths[0] == widths[1]):
        raise BaseModelError("the pooling start needs three levels of distinct widths and group norms of >= 4 "
                             f"channels in >= {latent} groups, not {widths} in {groups} groups")

    def copy_channels(conv: Any) -> None:  # channel i -> i at the centre tap, nothing else
        conv.weight.zero_()
        c = conv.weight.shape[-1] // 2
        for i in range(min(conv.weight.shape[:2])):
            conv.weight[i, i, c, c] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()

    def pass_through(conv: Any, n: int) -> None:  # channels < n copied, the others kept as `free` x random
        conv.weight.mul_(free)
        conv.bias.mul_(free)
        conv.weight[:n] = 0.0
        conv.bias[:n] = 0.0
        c = conv.weight.shape[-1] // 2
        for i in range(n):
            conv.weight[i, i, c, c] = 1.0

    def into_groups(conv: Any, n: int, size: int) -> list[int]:  # x_k -> (x, -x, carrier, -carrier) of group k
        conv.weight.zero_()
        conv.bias.zero_()
        used = []
        for k in range(n):
            base = k * size
            conv.weight[base, k, 0, 0], conv.weight[base + 1, k, 0, 0] = 1.0, -1.0
            conv.bias[base + 2], conv.bias[base + 3] = carrier, -carrier
            used += range(base, base + 4)
        rest = [c for c in range(conv.weight.shape[0]) if c not in used]
        for c, src in zip(rest, range(n, conv.weight.shape[1]), strict=False):
            conv.weight[c, src, 0, 0] = 1.0 if src < latent else free
        return rest

    with torch.no_grad():
        for name, module in vae.named_modules():
            if name.endswith(".conv2") or name.endswith(".to_out.0"):  # residual branches start at zero
                module.weight.zero_()
                module.bias.zero_()
        # encoder: RGB in channels 0-2 of the stream, pooled 2x2 twice, then into carrier groups
        pass_through(enc.conv_in, 3)
        for block in enc.down_blocks:
            for resnet in block.resnets:
                if resnet.conv_shortcut is not None:
                    copy_channels(resnet.conv_shortcut)
            for down in block.downsamplers or []:  # padded (0, 1, 0, 1), stride 2: taps 0-1 are the 2x2 cell
                down.conv.weight.zero_()
                down.conv.bias.zero_()
                for i in range(down.conv.weight.shape[0]):
                    down.conv.weight[i, i, :2, :2] = 0.25
        into_groups(enc.down_blocks[-1].resnets[0].conv_shortcut, latent, g_enc)
        enc.conv_norm_out.weight.fill_(carrier * math.sqrt(2.0 / g_enc))
        enc.conv_norm_out.bias.zero_()
        enc.conv_out.weight.zero_()
        enc.conv_out.bias.zero_()
        for k in range(latent):  # the latent mean; the log-variance half starts at 0
            enc.conv_out.weight[k, k * g_enc, 1, 1], enc.conv_out.weight[k, k * g_enc + 1, 1, 1] = 1.0, -1.0
        copy_channels(vae.quant_conv)
        # decoder: latent channels into the stream, nearest up-sampling, RGB into carrier groups
        copy_channels(vae.post_quant_conv)
        pass_through(dec.conv_in, latent)
        for block in dec.up_blocks:
            for resnet in block.resnets:
                if resnet.conv_shortcut is not None:
                    copy_channels(resnet.conv_shortcut)
            for up in block.upsamplers or []:
                copy_channels(up.conv)
        rest = into_groups(dec.up_blocks[-1].resnets[0].conv_shortcut, 3, g_dec)
        dec.conv_norm_out.weight.fill_(carrier * math.sqrt(2.0 / g_dec))
        dec.conv_norm_out.weight[rest] = 1.0
        dec.conv_norm_out.bias.zero_()
        out = dec.conv_out.weight
        keep = out[:, rest].clone() * 0.1 * free
        out.zero_()
        out[:, rest] = keep
        dec.conv_out.bias.zero_()
        for k in range(3):
            out[k, k * g_dec, 1, 1], out[k, k * g_dec + 1, 1, 1] = 1.0, -1.0


def judge_round_trip(vae: Any, samples: Sequence[Any], device: str = "cpu", batch: int = 50) -> dict[str, Any]:
    """Encode (latent mean) and decode ``samples`` (``world.Sample``), and judge the images against their scenes.

    Returns the share read right per attribute (colour, shape, position, size,
    background) and ``mse``, the mean squared error in [-1, 1] units.
    """
    import numpy as np
    import torch

    from .. import world

    was_training = vae.training
    vae.eval()
    hits = dict.fromkeys(_JUDGED, 0)
    sq = 0.0
    with torch.no_grad():
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            x = torch.from_numpy(np.stack([s.image for s in chunk])).permute(0, 3, 1, 2).float()
            x = x.div(127.5).sub(1.0).to(device)
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.float()
            sq += float((y - x).pow(2).sum())
            images = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            for image, sample in zip(images, chunk, strict=True):
                agrees = world.judge(image).agrees(sample.scene)
                for key in _JUDGED:
                    hits[key] += bool(agrees[key])
    vae.train(was_training)
    n = max(1, len(samples))
    return {**{k: hits[k] / n for k in _JUDGED}, "mse": sq / (n * 3 * drawing.RESOLUTION ** 2), "n": len(samples)}


def _meets(figures: dict[str, Any], target: dict[str, float]) -> bool:
    return all(figures[k] >= v for k, v in target.items())


def train_vae(vae: Any, images: Any, cfg: PretrainConfig, say: Callable[[str], None]) -> dict[str, Any]:
    """Phase 1: the autoencoder on ``images`` ((N, 64, 64, 3) uint8); returns its last judged round trip.

    Starts as :func:`init_vae_as_pooling` (``cfg.vae_init="pooling"``) and stops at
    ``cfg.vae_steps``, or earlier once the round trip of ``cfg.vae_check_images`` images
    it never trained on meets ``cfg.vae_target`` (checked every ``cfg.vae_check_every`` steps).
    """
    import numpy as np
    import torch

    from .. import world

    device = torch.device(cfg.device)
    if cfg.vae_init == "pooling":
        init_vae_as_pooling(vae)
    rng = np.random.default_rng([cfg.seed, 1])
    vae.to(device).train()
    checks = world.sample(_CHECK_SEED + cfg.seed, cfg.vae_check_images, "train") if cfg.vae_check_every else []
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    started = time.monotonic()
    running = None
    figures: dict[str, Any] = {}

    def check(step: int) -> bool:
        nonlocal figures
        figures = {**judge_round_trip(vae, checks, cfg.device), "step": step}
        met = _meets(figures, cfg.vae_target)
        say(f"vae {step}/{cfg.vae_steps} round trip read right: "
            + ", ".join(f"{k} {figures[k]:.0%}" for k in _JUDGED)
            + (" (target met)" if met else ""))
        return met

    done = bool(checks) and check(0)
    step = 0
    while not done and step < cfg.vae_steps:
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
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % max(1, cfg.vae_steps // 20) == 0 or step == cfg.vae_steps:
            say(f"vae {step}/{cfg.vae_steps} loss {running:.5f} ({time.monotonic() - started:.0f} s)")
        if checks and (step % cfg.vae_check_every == 0 or step == cfg.vae_steps):
            done = check(step)
    if checks and not done:
        say(f"vae: the round trip did not reach the target {cfg.vae_target} in {cfg.vae_steps} steps")
    with torch.no_grad():  # a deterministic posterior: log-variance -20 whatever the image
        half = vae.quant_conv.out_channels // 2
        vae.quant_conv.weight[half:] = 0.0
        vae.quant_conv.bias[half:] = -20.0
    vae.eval()
    return {**figures, "target_met": bool(done)} if figures else {}


def encode_latents(vae: Any, images: Any, device: str, batch: int = 64) -> Any:
    """The latent means of ``images`` (unscaled), float32 on CPU."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            out.append(vae.encode(x.to(device)).latent_dist.mean.float().cpu())
    return torch.cat(out)


def draw_timesteps(cfg: PretrainConfig, n_train: int, gen: Any) -> Any:
    """One batch's training timesteps: uniform, but the first ``noisy_share`` of them from ``[noisy_from, n_train)``."""
    import torch

    t = torch.randint(0, n_train, (cfg.batch,), generator=gen)
    noisy = round(cfg.batch * cfg.noisy_share)
    if noisy:
        t[:noisy] = torch.randint(min(cfg.noisy_from, n_train - 1), n_train, (noisy,), generator=gen)
    return t


def loss_weights(snr: Any, prediction: str, gamma: float, x0_floor: float = 1.0) -> Any:
    """Min-SNR weights of the per-sample loss (see :attr:`PretrainConfig.snr_gamma`): the x0 error's weight capped at
    ``gamma``. Epsilon: ``min(SNR, gamma) / SNR``; v: ``min(SNR + x0_floor, gamma) / (SNR + 1)``, so the x0 error
    weighs ``x0_floor`` at pure noise (:attr:`PretrainConfig.x0_floor`)."""
    import torch

    if prediction == "epsilon":
        return torch.clamp(snr, max=gamma) / snr
    return torch.clamp(snr + x0_floor, max=gamma) / (snr + 1)


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
    ema_params = [p for m in ema for p in m.parameters()]
    live_params = [p for m in (unet, text_encoder) for p in m.parameters()] if ema else []
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
        t = draw_timesteps(cfg, n_train, gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = text_encoder(tok.to(device))[0]
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        target = noise if cfg.prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        per = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
        if cfg.snr_gamma:
            per = per * loss_weights(a.view(-1) / (1 - a.view(-1)), cfg.prediction, cfg.snr_gamma, cfg.x0_floor)
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema:
            decay = min(cfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():  # one fused update per step (a GPU step is launch-bound)
                torch._foreach_lerp_(ema_params, live_params, 1 - decay)
        # the running loss stays on the device: no host sync per step
        running = loss.detach() if running is None else 0.98 * running + 0.02 * loss.detach()
        if (step + 1) % max(1, cfg.steps // 50) == 0 or step + 1 == cfg.steps:
            elapsed = time.monotonic() - started
            say(f"unet {step + 1}/{cfg.steps} loss {running.item():.4f} ({elapsed:.0f} s, "
                f"about {elapsed / (step + 1) * (cfg.steps - step - 1):.0f} s left)")
    if ema:
        unet.load_state_dict(ema[0].state_dict())
        text_encoder.load_state_dict(ema[1].state_dict())
    unet.eval()
    text_encoder.eval()


def pretrain_pipeline(cfg: PretrainConfig, *, progress: Callable[[str], None] | None = None,
                      vae_from: str | os.PathLike[str] | None = None,
                      stats: dict[str, Any] | None = None):  # noqa: ANN201 - a pipeline
    """Train the drawing pipeline in memory (float32) and return it.

    ``vae_from`` (a drawing base folder) reuses its trained autoencoder instead of phase 1
    (for experiments on the diffusion phase alone). ``stats``, when given, receives
    ``vae_round_trip``: phase 1's last judged round trip (:func:`train_vae`).
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
        schedule: dict[str, Any] = {"prediction_type": cfg.prediction}
        if cfg.zero_snr:
            schedule.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **schedule)
        images, captions = _images(cfg.seed, cfg.images, say)
        if vae_from is not None:
            from diffusers import AutoencoderKL

            pipe.vae = AutoencoderKL.from_pretrained(Path(vae_from) / "vae", dtype=torch.float32)
            pipe.vae.register_to_config(scaling_factor=1.0)
            pipe.vae.eval()
        else:
            figures = train_vae(pipe.vae, images, cfg, say)
            if stats is not None:
                stats["vae_round_trip"] = figures
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
            "id": drawing.DRAWING_ID,
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
    stats: dict[str, Any] = {}
    pipe = pretrain_pipeline(cfg, progress=progress, vae_from=vae_from, stats=stats)
    wall = time.monotonic() - started
    path = save_pipeline(pipe, target, cfg, {"wall_time_s": round(wall, 1), **stats})
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
