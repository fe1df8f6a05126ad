"""Flow matching for Flux.1 and SD3: sigma sampling, shifts, loss weights, LoRA targets, the frozen base quantized.

The training target is the one of diffusers' ``train_dreambooth_lora_flux.py`` /
``train_dreambooth_lora_sd3.py``, kohya's ``flux_train_network.py`` and ai-toolkit:
``noisy = (1 - sigma) * x0 + sigma * noise``, the model predicts ``noise - x0``.

sigma is drawn as ``u`` by diffusers' own ``compute_density_for_timestep_sampling``
(``uniform``, ``logit_normal`` with mean/std, ``mode`` with its scale), then shifted:

- a static shift ``s``: ``sigma = s * u / (1 + (s - 1) * u)`` (SD3's scheduler says 3.0);
- Flux's dynamic shift (``dynamic_shift``): ``sigma = e^mu / (e^mu + 1/u - 1)`` with ``mu`` from the image's
  token count, ``FluxPipeline``'s ``calculate_shift`` with the scheduler's ``base_shift``/``max_shift`` (what
  the pipeline samples with at that size; kohya's ``flux_shift``).

Like kohya, sigma is continuous (diffusers' scripts round it to the scheduler's 1000 steps). The loss of
each sample is weighted by ``compute_loss_weighting_for_sd3`` (``none``, ``sigma_sqrt``, ``cosmap``).
Nothing here imports torch at module level.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError

#: Default sigma sampling per family (diffusers' DreamBooth scripts: Flux weighting_scheme "none", SD3 "logit_normal").
DEFAULT_SAMPLING = {"flux": "uniform", "sd3": "logit_normal"}
#: sigma stays inside [SIGMA_MIN, 1] (sigma_sqrt weights by sigma^-2; the schedulers' smallest sigma is 1/1000).
SIGMA_MIN = 1e-3

#: Transformer modules a LoRA adapts, per preset, as regexes over the module paths of
#: FluxTransformer2DModel / SD3Transformer2DModel (diffusers' scripts' --lora_layers).
_ATTENTION = r"(?:attn2?\.(?:to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out))"
_MLP = r"(?:ff\.net\.0\.proj|ff\.net\.2|ff_context\.net\.0\.proj|ff_context\.net\.2)"
_SINGLE_MLP = r"(?:proj_mlp|proj_out)"
PRESETS = {
    "attention": re.compile(rf"^(?:single_)?transformer_blocks\.\d+\.{_ATTENTION}$"),
    "attention-mlp": re.compile(
        rf"^(?:transformer_blocks\.\d+\.(?:{_ATTENTION}|{_MLP})|single_transformer_blocks\.\d+\.(?:{_ATTENTION}|{_SINGLE_MLP}))$"
    ),
}


def target_modules(model: Any, preset: str) -> list[str]:
    """The paths of the Linear modules of ``model`` (a Flux/SD3 transformer) that ``preset`` adapts."""
    import torch

    rx = PRESETS.get(preset)
    if rx is None:
        raise UsageError(f"unknown target preset {preset!r}", hint=f"use one of {', '.join(PRESETS)}")
    # isinstance, not the class name: a quantized base's layers (bitsandbytes' Linear4bit) subclass Linear
    return [name for name, module in model.named_modules()
            if rx.match(name) and isinstance(module, torch.nn.Linear)]


def sampling_of(cfg: Any, family: str) -> str:
    return cfg.timestep_sampling or DEFAULT_SAMPLING.get(family, "uniform")


def static_shift(cfg: Any, scheduler_config: Mapping[str, Any]) -> float:
    """The static shift of a run: ``timestep_shift``, else the scheduler's when it is static, else 1.0."""
    if cfg.timestep_shift is not None:
        return float(cfg.timestep_shift)
    if scheduler_config.get("use_dynamic_shifting"):
        return 1.0
    return float(scheduler_config.get("shift", 1.0) or 1.0)


def dynamic_mu(scheduler_config: Mapping[str, Any], image_tokens: int) -> float:
    """``mu`` of FluxPipeline's ``calculate_shift`` for an image of ``image_tokens`` packed tokens."""
    base_len = float(scheduler_config.get("base_image_seq_len", 256))
    max_len = float(scheduler_config.get("max_image_seq_len", 4096))
    base_shift = float(scheduler_config.get("base_shift", 0.5))
    max_shift = float(scheduler_config.get("max_shift", 1.15))
    m = (max_shift - base_shift) / (max_len - base_len)
    return image_tokens * m + base_shift - m * base_len


def sample_sigmas(sampling: str, batch: int, generator: Any, *, logit_mean: float = 0.0, logit_std: float = 1.0,
                  mode_scale: float = 1.29, shift: float = 1.0, mu: float | None = None) -> Any:
    """``batch`` sigmas in [SIGMA_MIN, 1]: drawn by diffusers' density, then shifted (``mu``: dynamic)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    scheme = "none" if sampling == "uniform" else sampling
    u = compute_density_for_timestep_sampling(scheme, batch, logit_mean=logit_mean, logit_std=logit_std,
                                              mode_scale=mode_scale, generator=generator).float()
    return shift_sigmas(u, shift=shift, mu=mu)


def shift_sigmas(u: Any, *, shift: float = 1.0, mu: float | None = None) -> Any:
    """``u`` (a tensor in (0, 1]) shifted as the module docstring says (``mu``: Flux's dynamic shift, else the
    static ``shift``), within [SIGMA_MIN, 1]. :func:`sample_sigmas` draws ``u``; the blend search stratifies it."""
    import torch

    u = torch.as_tensor(u).float().clamp(SIGMA_MIN, 1.0)
    if mu is not None:
        sigmas = math.exp(mu) / (math.exp(mu) + (1.0 / u - 1.0))
    elif shift != 1.0:
        sigmas = shift * u / (1.0 + (shift - 1.0) * u)
    else:
        sigmas = u
    return torch.as_tensor(sigmas).clamp(SIGMA_MIN, 1.0)


def pipeline_shift(scheduler_config: Mapping[str, Any], image_tokens: int) -> tuple[float, float | None]:
    """``(shift, mu)`` the pipeline samples with at ``image_tokens`` packed tokens: Flux's dynamic ``mu`` when the
    scheduler shifts dynamically (``shift`` 1.0), else the scheduler's static shift (``mu`` None)."""
    if scheduler_config.get("use_dynamic_shifting"):
        return 1.0, dynamic_mu(scheduler_config, image_tokens)
    return float(scheduler_config.get("shift", 1.0) or 1.0), None


def loss_weights(scheme: str, sigmas: Any) -> Any:
    """diffusers' ``compute_loss_weighting_for_sd3``."""
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    return compute_loss_weighting_for_sd3(scheme, sigmas)


# --------------------------------------------------------------------------------------------- quantized base


def check_quantize(kind: str | None, device: Any) -> None:
    """One readable line when ``--quantize kind`` cannot run here (before the base is loaded)."""
    import importlib.util

    if kind is None:
        return
    if kind == "int8":
        if importlib.util.find_spec("torchao") is None:
            raise UsageError("--quantize int8 needs torchao (pip install 'lorahub-toolkit[quant]')")
        return
    if kind == "nf4":
        if getattr(device, "type", str(device)) != "cuda":
            raise UsageError("--quantize nf4 needs a CUDA GPU (bitsandbytes' 4-bit kernels)",
                             hint="use --quantize int8 (torchao) on this device")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UsageError("--quantize nf4 needs bitsandbytes (pip install 'lorahub-toolkit[quant]')")
        return
    raise UsageError(f"unknown quantization {kind!r}", hint="use int8 or nf4")


def quantize_frozen(model: Any, kind: str, device: Any, compute_dtype: Any) -> int:
    """Quantize the Linear layers of the frozen ``model`` in place; the number of layers quantized.

    int8: torchao's weight-only int8 (``Int8WeightOnlyConfig``; peft puts its LoRA layers on top).
    nf4: bitsandbytes ``Linear4bit`` (NF4, ``compute_dtype``) built from each Linear on the GPU, as
    diffusers' ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")`` loads it.
    Layers whose sides are not multiples of 16 stay as they are (the kernels' tiles).
    """
    import torch

    def eligible(name: str, m: Any) -> bool:
        return (isinstance(m, torch.nn.Linear) and m.in_features % 16 == 0 and m.out_features % 16 == 0
                and ("transformer_blocks." in name))

    if kind == "int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        names = {n for n, m in model.named_modules() if eligible(n, m)}
        if names:
            quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn in names)
        return len(names)
    import bitsandbytes as bnb

    count = 0
    for name, module in list(model.named_modules()):
        if not eligible(name, module):
            continue
        q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                              compute_dtype=compute_dtype, quant_type="nf4", device="meta")
        q.weight = bnb.nn.Params4bit(module.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
        if module.bias is not None:
            q.bias = torch.nn.Parameter(module.bias.data, requires_grad=False)
        q = q.to(device)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, q)
        count += 1
    return count


__all__ = ["DEFAULT_SAMPLING", "PRESETS", "target_modules", "sampling_of", "static_shift", "dynamic_mu",
           "sample_sigmas", "shift_sigmas", "pipeline_shift", "loss_weights", "check_quantize", "quantize_frozen"]
