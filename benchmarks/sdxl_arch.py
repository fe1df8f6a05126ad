"""Stable Diffusion XL's architecture at its real sizes, built offline with random weights.

The configurations are those of ``stabilityai/stable-diffusion-xl-base-1.0`` (``unet/config.json``,
``vae/config.json``, ``text_encoder/config.json``: CLIP ViT-L/14, ``text_encoder_2/config.json``:
OpenCLIP ViT-bigG/14 with projection, ``scheduler/scheduler_config.json``), written out here so that
nothing is downloaded (the VAE and the first text encoder have SD 1.5's architecture: ``sd15_arch.py``).
Memory use and speed do not depend on the weights' values, so random weights measure what the real model
would. The tokenizers are lorahub's embedded byte-level ones (the real CLIP BPE vocabulary is a download);
they yield ids below 514, valid for the 49408-entry embeddings.

``tiny=True`` gives the embedded tiny SDXL model's configuration instead (``lorahub.base.embedded``),
for ``--smoke`` runs on a CPU. :func:`lora_shapes` builds the real UNet on the meta device (no memory)
to list a LoRA's shapes.

Used by ``bench_train_sdxl_gpu.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import benchkit
import sd15_arch

UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 2048,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

#: SD 1.5's VAE architecture; SDXL's sample size and latent scaling, and fp32 decoding (its VAE overflows in fp16)
VAE = {**sd15_arch.VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

#: lorahub's offline tokenizer: <|startoftext|> = 0, <|endoftext|> = 1; the second pads with "!" (id 2)
TEXT = sd15_arch.TEXT  # CLIP ViT-L/14's text tower, as in SD 1.5

TEXT2 = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}


def configs(tiny: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(unet, vae, text_encoder, text_encoder_2, scheduler) configurations."""
    from lorahub.base import embedded

    if tiny:
        return (embedded.SDXL_UNET_CONFIG, embedded.SDXL_VAE_CONFIG, embedded.SDXL_TEXT_CONFIG,
                embedded.SDXL_TEXT2_CONFIG, embedded.SDXL_SCHEDULER_CONFIG)
    return UNET, VAE, TEXT, TEXT2, embedded.SDXL_SCHEDULER_CONFIG


def build_pipeline(*, tiny: bool = False, device: str = "cpu", seed: int = 0) -> Any:
    """A StableDiffusionXLPipeline of SDXL base 1.0's sizes (or the tiny stand-in), random weights."""
    import diffusers
    import torch
    import transformers

    from lorahub.base.embedded import build_tokenizer

    unet_cfg, vae_cfg, text_cfg, text2_cfg, sched_cfg = configs(tiny)
    torch.manual_seed(seed)
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(**unet_cfg)
        vae = diffusers.AutoencoderKL(**vae_cfg)
        te1 = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_cfg))
        te2 = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**text2_cfg))
    return diffusers.StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=build_tokenizer(),
        tokenizer_2=build_tokenizer(pad_token="!"), unet=unet, scheduler=diffusers.EulerDiscreteScheduler(**sched_cfg),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )


def save_pipeline(folder: str | os.PathLike[str], *, tiny: bool = False, device: str = "cpu",
                  dtype: str = "float16") -> Path:
    """Build and save the pipeline as a diffusers folder (safetensors) that ``--base`` accepts."""
    return benchkit.save_pipeline(build_pipeline(tiny=tiny, device=device), folder, dtype)


def lora_shapes(target_modules: list[str], rank: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """module path -> (lora_A shape, lora_B shape) for SDXL's UNet, without allocating its weights."""
    return benchkit.unet_lora_shapes(UNET, target_modules, rank)
