"""The adapter package a training run writes, and the kohya key mapping.

Package layout (``lorahub train ... --out ./mystyle``)::

    mystyle/
      pytorch_lora_weights.safetensors   diffusers layout (what pipe.load_lora_weights(folder) takes)
      mystyle_kohya.safetensors          kohya layout: what AUTOMATIC1111/Forge, ComfyUI, kohya load fully
      train_config.toml                  the configuration (lorahub train --config reads it)
      loss_history.json, loss_curve.png
      samples/                           previews (fixed prompts and seed)
      README.md                          a draft model card

Both weight files carry the same metadata: kohya-compatible ``ss_*`` keys
(values rendered as Python ``str()``, a few as JSON, as kohya-ss/sd-scripts
writes them), a ``modelspec.*`` block, ``sshs_model_hash`` (the tensor hash
A1111 shows) and ``sshs_legacy_hash``, both computed as kohya does
(:func:`lorahub.adapters.writer.kohya_hashes`), and, in the diffusers file,
``lora_adapter_metadata`` (the peft ``LoraConfig`` per component).

Strength (docs/formats.md): the kohya file keeps the trained factors and an
``.alpha`` tensor per module; the diffusers layout has no alpha tensor, so its
up factors carry ``alpha / rank`` and its ``lora_adapter_metadata`` says
``lora_alpha = r``: diffusers, which reads the metadata, and ComfyUI or any
loader that does not (alpha = rank) apply the same update.

kohya names are derived from the diffusers module paths through a fixed
mapping of the SD 1.x/2.x module tree (:func:`kohya_module_name`), never from
whatever path a library version happens to use: transformers 5's CLIPTextModel
has no ``text_model.`` level, but kohya files must say
``lora_te_text_model_encoder_layers_0_...``. SDXL files use the names kohya
gives SDXL modules: the UNet's original (SGM) block paths
(``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``, derived from
the base's UNet config by :func:`lorahub.adapters.layouts.sgm_module_path`),
``lora_te1_``/``lora_te2_`` for the two text encoders, and
``modelspec.implementation`` says the SGM implementation, as kohya writes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lorahub.schemas.training import TrainConfig

from .. import __version__
from .._atomic import atomic_write_bytes, atomic_write_text
from ..errors import TrainingError

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
LOSS_HISTORY_NAME = "loss_history.json"
LOSS_CURVE_NAME = "loss_curve.png"
SAMPLES_DIR = "samples"
CARD_NAME = "README.md"

# ------------------------------------------------------------------------------------ kohya names

_UNET_MODULE = re.compile(
    r"^(?:(?:down_blocks|up_blocks)\.\d+|mid_block)\.attentions\.\d+\."
    r"(?:proj_in|proj_out|transformer_blocks\.\d+\.(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))$"
)
_TE_MODULE = re.compile(r"^(?:text_model\.)?encoder\.layers\.(\d+)\.(self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])$")


def kohya_module_name(component: str, module: str, family: str = "sd1", unet_config: Mapping[str, Any] | None = None) -> str:
    """The kohya name of a diffusers/transformers module path of an SD 1.x/2.x (or SDXL) pipeline.

    ``("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")`` ->
    ``lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q``;
    ``("text_encoder", "encoder.layers.0.self_attn.q_proj")`` (transformers 5) or
    ``"text_model.encoder.layers.0.self_attn.q_proj"`` (transformers 4) ->
    ``lora_te_text_model_encoder_layers_0_self_attn_q_proj``.
    ``family="sdxl"``: ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`` (the SGM path for
    ``unet_config``'s layout, default SDXL base 1.0's), ``lora_te1_...`` and ``lora_te2_...``
    (``text_encoder_2``).
    """
    if family == "sdxl":
        from ..adapters.layouts import kohya_name
        from ..errors import UsageError

        m = _TE_MODULE.match(module) if component != "unet" else None
        if component == "unet" and not _UNET_MODULE.match(module):
            raise TrainingError(f"no kohya name for UNet module '{module}' (not a transformer-block module)")
        if component != "unet" and (component not in ("text_encoder", "text_encoder_2") or not m):
            raise TrainingError(f"no kohya name for {component} module '{module}'")
        try:
            return kohya_name(f"{component}.{te_diffusers_path(module) if m else module}", "sdxl",
                              dict(unet_config) if unet_config else None)
        except UsageError as exc:
            raise TrainingError(str(exc)) from None
    if component == "unet":
        if not _UNET_MODULE.match(module):
            raise TrainingError(f"no kohya name for UNet module '{module}' (not an SD 1.x/2.x transformer-block module)")
        return "lora_unet_" + module.replace(".", "_")
    if component == "text_encoder":
        m = _TE_MODULE.match(module)
        if not m:
            raise TrainingError(f"no kohya name for text-encoder module '{module}'")
        return f"lora_te_text_model_encoder_layers_{m.group(1)}_" + m.group(2).replace(".", "_")
    raise TrainingError(f"no kohya names for the component '{component}'")


def te_diffusers_path(module: str) -> str:
    """The text-encoder module path written to the diffusers file (the transformers 4 spelling).

    Files in the wild (and every diffusers version) use ``text_model.encoder...``;
    diffusers + transformers 5 load them into the flattened module tree.
    """
    return module if module.startswith("text_model.") else "text_model." + module


# ------------------------------------------------------------------------------------ tensors


def split_lora_state(state: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """peft state dict (``<module>.lora_A.weight``/``.lora_B.weight``) -> ``{module: (A, B)}``."""
    out: dict[str, list[Any]] = {}
    for key, value in state.items():
        m = re.match(r"^(.*)\.lora_([AB])\.weight$", key)
        if not m:
            raise TrainingError(f"unexpected LoRA parameter '{key}'")
        pair = out.setdefault(m.group(1), [None, None])
        pair[0 if m.group(2) == "A" else 1] = value
    for module, (a, b) in out.items():
        if a is None or b is None:
            raise TrainingError(f"LoRA module '{module}' lacks lora_A or lora_B")
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def tensor_record(t: Any, precision: str) -> tuple[str, list[int], bytes]:
    """(safetensors dtype code, shape, raw bytes) of a torch tensor cast to ``precision``."""
    import torch

    dtype = getattr(torch, _TORCH_DTYPES[precision])
    t = t.detach().to("cpu", dtype).contiguous()
    if dtype == torch.bfloat16:
        raw = t.view(torch.int16).numpy().tobytes()
        code = "BF16"
    else:
        raw = t.numpy().tobytes()
        code = "F16" if dtype == torch.float16 else "F32"
    return code, list(t.shape), raw


def tensor_hash(records: Mapping[str, tuple[str, list[int], bytes]]) -> str:
    """SHA-256 of the data section as :func:`lorahub.adapters.writer.write_safetensors` lays it out."""
    h = hashlib.sha256()
    for name in sorted(records):
        h.update(records[name][2])
    return h.hexdigest()


def diffusers_records(
    unet: Mapping[str, tuple[Any, Any]], te: Mapping[str, tuple[Any, Any]], precision: str, scale: float = 1.0,
    te2: Mapping[str, tuple[Any, Any]] | None = None,
) -> dict[str, tuple[str, list[int], bytes]]:
    """The tensors of ``pytorch_lora_weights.safetensors`` (keys as diffusers' training scripts write them).

    ``scale`` (``alpha / rank``) is folded into every up (B) factor: the layout has no
    alpha tensor, and loaders that read no metadata use alpha = rank (docs/formats.md).
    ``te2`` is SDXL's second text encoder (``text_encoder_2.`` keys, as
    ``StableDiffusionXLPipeline.save_lora_weights`` writes them).
    """
    out = {}
    for module, (a, b) in unet.items():
        out[f"unet.{module}.lora.down.weight"] = tensor_record(a, precision)
        out[f"unet.{module}.lora.up.weight"] = tensor_record(b * scale if scale != 1.0 else b, precision)
    for prefix, modules in (("text_encoder", te), ("text_encoder_2", te2 or {})):
        for module, (a, b) in modules.items():
            path = te_diffusers_path(module)
            out[f"{prefix}.{path}.lora_linear_layer.down.weight"] = tensor_record(a, precision)
            out[f"{prefix}.{path}.lora_linear_layer.up.weight"] = tensor_record(b * scale if scale != 1.0 else b, precision)
    return out


def folded_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A peft ``LoraConfig`` dict after its alpha was folded into the weights: alpha = rank everywhere."""
    out = dict(config)
    out["lora_alpha"] = out.get("r")
    out["alpha_pattern"] = dict(out.get("rank_pattern") or {})
    out["use_rslora"] = False
    return out


def kohya_records(
    unet: Mapping[str, tuple[Any, Any]], te: Mapping[str, tuple[Any, Any]], alpha: float, precision: str,
    *, te2: Mapping[str, tuple[Any, Any]] | None = None, family: str = "sd1",
    unet_config: Mapping[str, Any] | None = None,
) -> dict[str, tuple[str, list[int], bytes]]:
    """The kohya-layout tensors: trained factors and one ``.alpha`` per module (kohya's own layout).

    ``te2``: SDXL's second text encoder; ``family``/``unet_config`` choose the names
    (:func:`kohya_module_name`).
    """
    import torch

    out = {}
    for component, modules in (("unet", unet), ("text_encoder", te), ("text_encoder_2", te2 or {})):
        for module, (a, b) in modules.items():
            name = kohya_module_name(component, module, family, unet_config)
            out[f"{name}.lora_down.weight"] = tensor_record(a, precision)
            out[f"{name}.lora_up.weight"] = tensor_record(b, precision)
            out[f"{name}.alpha"] = tensor_record(torch.tensor(float(alpha)), precision)
    return out


# ------------------------------------------------------------------------------------ metadata


def _s(value: Any) -> str:
    """kohya's rendering: Python ``str()`` (``True``, ``None``, ``0.0001``, ``(512, 512)``)."""
    return str(value)


BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "flux": "flux1", "sd3": "sd3"}
#: modelspec.implementation of the kohya-layout Flux.1 / SD3 files (the original models' module paths, as kohya writes)
MMDIT_IMPLEMENTATION = {"flux": "https://github.com/black-forest-labs/flux",
                        "sd3": "https://github.com/Stability-AI/SD3.5"}


def mmdit_architecture(family: str, transformer_config: Mapping[str, Any]) -> str:
    """modelspec.architecture (without ``/lora``) of a Flux.1 / SD3 transformer, from its config.

    Flux.1-dev has the guidance embedding, schnell has not (kohya ``sai_model_spec``: ``flux-1-dev``,
    ``flux-1-schnell``). SD3: 3.5 Medium has dual-attention (MMDiT-X) blocks, 3.5 Large a 2432-wide
    transformer (38 blocks) with QK norm, 3 Medium neither QK norm nor attn2.
    """
    if family == "flux":
        return "flux-1-dev" if transformer_config.get("guidance_embeds", True) else "flux-1-schnell"
    if transformer_config.get("dual_attention_layers"):
        return "stable-diffusion-3.5-medium"
    if transformer_config.get("qk_norm"):
        return "stable-diffusion-3.5-large"
    return "stable-diffusion-3-medium"


def modelspec_architecture(family: str, resolution: int, prediction: str) -> str:
    if family == "sdxl":
        return "stable-diffusion-xl-v1-base"
    if family == "sd2":
        return "stable-diffusion-v2-768-v" if prediction == "v_prediction" else "stable-diffusion-v2-512"
    return "stable-diffusion-v1"


def build_metadata(
    *,
    config: TrainConfig,
    name: str,
    family: str,
    prediction_type: str,
    resolution: int,
    dataset: Any,
    steps: int,
    epochs: int,
    batches_per_epoch: int,
    num_processes: int,
    started_at: float,
    finished_at: float,
    base_name: str,
    base_sha256: str | None,
    session_id: int,
    architecture: str | None = None,
    zero_terminal_snr: bool = False,
) -> dict[str, str]:
    """The ``ss_*`` and ``modelspec.*`` metadata shared by both weight files.

    ``zero_terminal_snr``: the base's schedule is rescaled to a zero terminal SNR (its scheduler config's
    ``rescale_betas_zero_snr``, as the drawing base's), which kohya records as ``ss_zero_terminal_snr``."""
    alpha = config.effective_alpha()
    v_param = prediction_type == "v_prediction"
    version = BASE_MODEL_VERSION.get(family, "sd_v1") + ("_v" if v_param and family == "sd2" else "")
    te_lr = config.text_encoder_lr or config.lr
    md: dict[str, str] = {
        "ss_session_id": _s(session_id),
        "ss_training_started_at": _s(started_at),
        "ss_training_finished_at": _s(finished_at),
        "ss_output_name": name,
        "ss_sd_model_name": base_name,
        "ss_sd_scripts_commit_hash": "None",
        "ss_training_comment": f"trained with lorahub {__version__}",
        "ss_v2": _s(family == "sd2"),
        "ss_base_model_version": version,
        "ss_v_parameterization": _s(v_param),
        "ss_network_module": "networks.lora",
        "ss_network_dim": _s(config.rank),
        "ss_network_alpha": _s(alpha),
        "ss_network_args": json.dumps({"target_modules": list(config.target_modules)}),
        "ss_network_train_unet_only": _s(not config.train_text_encoder),
        "ss_network_train_text_encoder_only": "False",
        "ss_learning_rate": _s(config.lr),
        "ss_unet_lr": _s(config.lr),
        "ss_text_encoder_lr": _s(te_lr if config.train_text_encoder else None),
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_lr_warmup_steps": _s(config.lr_warmup_steps),
        "ss_optimizer": ("bitsandbytes.optim.adamw.AdamW8bit" if config.optimizer == "adamw8bit" else "torch.optim.adamw.AdamW")
        + f"(weight_decay={config.adam_weight_decay},betas=({config.adam_beta1}, {config.adam_beta2}),eps={config.adam_epsilon})",
        "ss_max_grad_norm": _s(config.max_grad_norm),
        "ss_seed": _s(config.seed),
        "ss_steps": _s(steps),
        "ss_max_train_steps": _s(config.steps),
        "ss_epoch": _s(epochs),
        "ss_num_epochs": _s(epochs),
        "ss_num_batches_per_epoch": _s(batches_per_epoch),
        "ss_batch_size_per_device": _s(config.batch_size),
        "ss_total_batch_size": _s(config.batch_size * config.gradient_accumulation_steps * num_processes),
        "ss_gradient_accumulation_steps": _s(config.gradient_accumulation_steps),
        "ss_gradient_checkpointing": _s(config.gradient_checkpointing),
        "ss_mixed_precision": config.mixed_precision,
        "ss_full_fp16": "False",
        "ss_save_precision": config.save_precision,
        "ss_cache_latents": _s(config.cache_latents),
        "ss_num_train_images": _s(dataset.num_train_images),
        "ss_num_reg_images": "0",
        "ss_resolution": _s((resolution, resolution)),
        "ss_enable_bucket": _s(config.buckets),
        "ss_min_bucket_reso": _s(min(min(b) for b in dataset.buckets)),
        "ss_max_bucket_reso": _s(max(max(b) for b in dataset.buckets)),
        "ss_bucket_no_upscale": _s(config.upscale is False),
        "ss_bucket_info": json.dumps(dataset.bucket_info()),
        "ss_dataset_dirs": json.dumps(dataset.folders()),
        "ss_reg_dataset_dirs": "{}",
        "ss_tag_frequency": json.dumps(dataset.tag_frequency()),
        "ss_caption_dropout_rate": _s(config.caption_dropout),
        "ss_caption_dropout_every_n_epochs": "0",
        "ss_caption_tag_dropout_rate": "0.0",
        "ss_shuffle_caption": _s(config.shuffle_tags),
        "ss_keep_tokens": _s(config.keep_tokens),
        "ss_flip_aug": _s(config.flip),
        "ss_color_aug": "False",
        "ss_random_crop": "False",
        "ss_face_crop_aug_range": "None",
        "ss_clip_skip": "None",
        "ss_max_token_length": "None",
        "ss_noise_offset": _s(config.noise_offset or None),
        "ss_min_snr_gamma": _s(config.snr_gamma),
        "ss_prior_loss_weight": "1.0",
        "ss_zero_terminal_snr": _s(zero_terminal_snr),
        "ss_loss_type": "l2",
        "ss_vae_name": "None",
        "ss_lowram": "False",
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": (architecture or modelspec_architecture(family, resolution, prediction_type))
        + "/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": datetime.fromtimestamp(finished_at, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.prediction_type": "v" if v_param else "epsilon",
        "modelspec.description": f"LoRA (rank {config.rank}) for {base_name}, trained with lorahub",
    }
    if prediction_type == "flow":  # Flux.1 / SD3: rectified flow, no epsilon/v (kohya writes no prediction type)
        del md["modelspec.prediction_type"]
        md["ss_v_parameterization"] = "False"
        md["ss_min_snr_gamma"] = "None"
        md["ss_network_args"] = json.dumps({"targets": config.targets})
        md.update({
            "ss_timestep_sampling": config.timestep_sampling or "default",
            "ss_logit_mean": _s(config.logit_mean), "ss_logit_std": _s(config.logit_std),
            "ss_mode_scale": _s(config.mode_scale), "ss_discrete_flow_shift": _s(config.timestep_shift),
            "ss_dynamic_shift": _s(config.dynamic_shift), "ss_weighting_scheme": config.loss_weighting,
            "ss_guidance_scale": _s(config.guidance_scale),
        })
    if base_sha256:
        md["ss_new_sd_model_hash"] = base_sha256
    if config.trigger:
        md["modelspec.trigger_phrase"] = config.trigger
        md["modelspec.usage_hint"] = f"put '{config.trigger}' in the prompt"
    return md


def peft_metadata(unet_config: Mapping[str, Any], te_config: Mapping[str, Any] | None,
                  te2_config: Mapping[str, Any] | None = None, *, denoiser: str = "unet") -> str:
    """``lora_adapter_metadata`` as diffusers writes it: each LoraConfig dict with its component prefix
    (``denoiser``: ``unet``, or ``transformer`` for Flux.1 / SD3)."""
    packed: dict[str, Any] = {}
    for prefix, cfg in ((denoiser, unet_config), ("text_encoder", te_config), ("text_encoder_2", te2_config)):
        if not cfg:
            continue
        for key, value in cfg.items():
            packed[f"{prefix}.{key}"] = sorted(value) if isinstance(value, (set, frozenset)) else value
    return json.dumps(packed, indent=2, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------ Flux.1 / SD3


def mmdit_diffusers_records(
    transformer: Mapping[str, tuple[Any, Any]], text_encoders: Mapping[str, Mapping[str, tuple[Any, Any]]],
    precision: str, scale: float,
) -> dict[str, tuple[str, list[int], bytes]]:
    """The tensors of a Flux.1 / SD3 ``pytorch_lora_weights.safetensors``, as ``FluxPipeline.save_lora_weights``
    / ``StableDiffusion3Pipeline.save_lora_weights`` write them (``transformer.<path>.lora_A.weight``,
    ``text_encoder.text_model...lora_B.weight``), ``alpha / rank`` folded into every B."""
    out = {}
    for prefix, modules in (("transformer", transformer), *text_encoders.items()):
        for module, (a, b) in modules.items():
            path = module if prefix == "transformer" else te_diffusers_path(module)
            out[f"{prefix}.{path}.lora_A.weight"] = tensor_record(a, precision)
            out[f"{prefix}.{path}.lora_B.weight"] = tensor_record(b * scale if scale != 1.0 else b, precision)
    return out


def mmdit_kohya_records(
    family: str, transformer: Mapping[str, tuple[Any, Any]], text_encoders: Mapping[str, Mapping[str, tuple[Any, Any]]],
    precision: str, scale: float,
) -> tuple[dict[str, tuple[str, list[int], bytes]], int]:
    """The kohya-layout tensors of a Flux.1 / SD3 LoRA and their one alpha: the original (BFL / SD3) module paths, q/k/v (and Flux's
    single-block q/k/v/MLP) fused exactly by :func:`lorahub.pipeline.fused.kohya_factors`, as ComfyUI loads them."""
    from ..pipeline.canonical import CanonicalLora
    from ..pipeline.lowrank import Factored

    modules = {}
    for prefix, mods in (("transformer", transformer), *text_encoders.items()):
        for module, (a, b) in mods.items():
            path = module if prefix == "transformer" else te_diffusers_path(module)
            modules[f"{prefix}.{path}"] = Factored(b.detach().float().cpu() * scale, a.detach().float().cpu(), None)
    lora = CanonicalLora(path="<training>", format="diffusers", family=family, cross_attention_dim=None, modules=modules)
    dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    return lora.records("kohya", dtype), int(lora.kohya_alpha(lora._mmdit_modules("kohya")))


def write_mmdit_package(
    out: Path, *, family: str, name: str, config: TrainConfig, metadata: Mapping[str, str],
    transformer: Mapping[str, tuple[Any, Any]], text_encoders: Mapping[str, Mapping[str, tuple[Any, Any]]],
    alpha: float, transformer_config: Mapping[str, Any], te_config: Mapping[str, Any] | None,
) -> str | None:
    """Write the weight files of a Flux.1 / SD3 run; the kohya file's name (relative to ``out``) or None."""
    scale = alpha / config.rank
    if config.writes("diffusers"):
        te2 = te_config if "text_encoder_2" in text_encoders else None
        md = {**metadata, "lora_adapter_metadata": peft_metadata(
            transformer_config, te_config if "text_encoder" in text_encoders else None, te2, denoiser="transformer")}
        write_weights(out / WEIGHTS_NAME, mmdit_diffusers_records(transformer, text_encoders, config.save_precision,
                                                                  scale), md)
    if not config.writes("kohya"):
        return None
    rel = f"{name}_kohya.safetensors"
    records, common = mmdit_kohya_records(family, transformer, text_encoders, config.save_precision, scale)
    # alpha/rank folded into the up factors, one alpha for every module (CanonicalLora.records): fused q/k/v
    # with their own down factors are rank 3 x r (exact), the others r
    ranks = sorted({int(shape[0]) for key, (_c, shape, _r) in records.items() if key.endswith(".lora_down.weight")})
    md = {**metadata, "modelspec.implementation": MMDIT_IMPLEMENTATION[family],
          "ss_network_dim": str(ranks[-1]) if len(ranks) == 1 else "Dynamic", "ss_network_alpha": str(float(common))}
    write_weights(out / rel, records, md)
    return rel


# ------------------------------------------------------------------------------------ package files


def write_weights(path: Path, records: Mapping[str, tuple[str, list[int], bytes]], metadata: Mapping[str, str]) -> Path:
    """Write a weights file with kohya's ``sshs_model_hash`` and ``sshs_legacy_hash``, as kohya computes them."""
    from ..adapters.writer import write_adapter

    return write_adapter(path, records, {"format": "pt", **metadata})


def write_loss_history(path: Path, history: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> Path:
    doc = {**extra, "history": list(history)}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def window_means(losses: Sequence[float], fraction: float = 0.1) -> tuple[float | None, float | None]:
    """Mean loss of the first and of the last ``fraction`` of the steps (at least one step each)."""
    if not losses:
        return None, None
    n = max(1, int(math.ceil(len(losses) * fraction)))
    return sum(losses[:n]) / n, sum(losses[-n:]) / n


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    out, last = [], None
    for v in values:
        last = v if last is None else last * weight + v * (1 - weight)
        out.append(last)
    return out


def draw_loss_curve(path: Path, steps: Sequence[int], losses: Sequence[float], *, title: str = "training loss") -> Path:
    """A PNG of the raw and smoothed loss, drawn with PIL (no plotting library needed)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    width, height = 800, 450
    left, right, top, bottom = 70, 20, 40, 50
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.text((left, 12), title, fill="black", font=font)
    pw, ph = width - left - right, height - top - bottom
    d.rectangle([left, top, left + pw, top + ph], outline="black")
    finite = [(s, v) for s, v in zip(steps, losses, strict=False) if math.isfinite(v)]
    if finite:
        xs = [s for s, _ in finite]
        ys = [v for _, v in finite]
        x0, x1 = min(xs), max(xs)
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.05
        lo, hi = lo - pad, hi + pad

        def pt(s: float, v: float) -> tuple[float, float]:
            x = left + (0 if x1 == x0 else (s - x0) / (x1 - x0) * pw)
            return x, top + (hi - v) / (hi - lo) * ph

        for i in range(5):
            v = lo + (hi - lo) * i / 4
            _, y = pt(x0, v)
            d.line([left - 4, y, left, y], fill="black")
            d.line([left, y, left + pw, y], fill=(235, 235, 235))
            d.text((4, y - 6), f"{v:.4g}", fill="black", font=font)
        for i in range(5):
            s = x0 + (x1 - x0) * i / 4
            x, _ = pt(s, lo)
            d.line([x, top + ph, x, top + ph + 4], fill="black")
            d.text((x - 10, top + ph + 8), f"{round(s)}", fill="black", font=font)
        d.text((left + pw // 2 - 15, height - 18), "step", fill="black", font=font)
        if len(finite) > 1:
            d.line([pt(s, v) for s, v in finite], fill=(160, 190, 230), width=1)
            d.line([pt(s, v) for s, v in zip(xs, smooth(ys), strict=False)], fill=(20, 60, 160), width=2)
        else:
            x, y = pt(xs[0], ys[0])
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(20, 60, 160))
    else:
        d.text((left + 20, top + 20), "no finite loss values", fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def model_card(
    *,
    name: str,
    base_name: str,
    family: str,
    trigger: str | None,
    config: TrainConfig,
    steps: int,
    images: int,
    resolution: int,
    samples: Sequence[tuple[str, str]],
    kohya_file: str | None,
    diffusers_file: str | None = WEIGHTS_NAME,
) -> str:
    """A draft README.md: YAML front matter (Hub model-card fields) and a short body."""
    import yaml

    license_ = "creativeml-openrail-m" if family == "sd1" else "openrail++" if family == "sdxl" else "other"
    pipeline_cls = {"sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline",
                    "sd3": "StableDiffusion3Pipeline"}.get(family, "StableDiffusionPipeline")
    front: dict[str, Any] = {
        "base_model": base_name,
        "base_model_relation": "adapter",
        "library_name": "diffusers",
        "license": license_,
        "pipeline_tag": "text-to-image",
        "tags": ["text-to-image", "diffusers", "lora", "template:sd-lora", "stable-diffusion", "lorahub"],
    }
    if trigger:
        front["instance_prompt"] = trigger
    if samples:
        front["widget"] = [{"text": prompt, "output": {"url": url}} for prompt, url in samples]
    body = [
        f"# {name}",
        "",
        f"A LoRA adapter (rank {config.rank}, alpha {config.effective_alpha():g}) for `{base_name}`, "
        f"trained with lorahub on {images} image(s) at {resolution}x{resolution} for {steps} steps.",
        "",
    ]
    if trigger:
        body += [f"Trigger word: `{trigger}`", ""]
    body += [
        "## Use with diffusers",
        "",
        "```python",
        *(
            ["from lorahub.base.resolve import load_pipeline", "", f'pipe = load_pipeline("{base_name}")']
            if base_name.startswith("lorahub/")
            else [f"from diffusers import {pipeline_cls}", "",
                  f'pipe = {pipeline_cls}.from_pretrained("{base_name}")']
        ),
        (f'pipe.load_lora_weights("{name}")  # this folder ({diffusers_file})' if diffusers_file else
         f'pipe.load_lora_weights("{name}", weight_name="{kohya_file}")'),
        f'image = pipe("{trigger or "a picture"}").images[0]',
        "```",
        "",
    ]
    if kohya_file:
        body += [f"`{kohya_file}` holds the same weights in the kohya layout: the file for AUTOMATIC1111/Forge, "
                 "ComfyUI and kohya.", ""]
    body += [
        "## Training",
        "",
        f"- steps: {steps}, batch size: {config.batch_size}, learning rate: {config.lr:g} ({config.lr_scheduler})",
        f"- target modules: {', '.join(config.target_modules)}"
        + (" and the text encoder's attention" if config.train_text_encoder else ""),
        f"- mixed precision: {config.mixed_precision}, seed: {config.seed}",
        "- the full configuration is in `train_config.toml`; the loss curve in `loss_curve.png`.",
        "",
    ]
    from lorahub.hub.card import GENERATED_MARK

    body += [GENERATED_MARK, ""]  # `lorahub push` replaces this draft with the full card
    text = "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)
    return text


def now() -> float:
    return time.time()
