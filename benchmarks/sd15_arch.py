"""Stable Diffusion 1.5's architecture at its real sizes, built offline with random weights.

The configurations are those of ``runwayml/stable-diffusion-v1-5`` (``unet/config.json``,
``vae/config.json``, ``text_encoder/config.json``: CLIP ViT-L/14 text tower), written out
here so that nothing is downloaded. Memory use and speed do not depend on the weights'
values, so random weights measure what the real model would. The tokenizer is lorahub's
embedded byte-level one (the real CLIP BPE vocabulary is a download); it yields ids below
514, valid for the 49408-entry embedding.

Used by ``bench_train.py`` (adapter size) and ``bench_train_gpu.py`` (memory and speed); ``sdxl_arch.py``
takes its VAE and text encoder configurations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import benchkit

UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}

VAE = {
    "sample_size": 512,
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}

TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    # lorahub's offline tokenizer: <|startoftext|> = 0, <|endoftext|> = 1 (also padding)
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}

SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

#: A tiny stand-in of the same block layout, for --smoke runs on a CPU.
TINY_UNET = {**UNET, "block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32, "attention_head_dim": 4,
             "sample_size": 8}
TINY_VAE = {**VAE, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "sample_size": 64}
TINY_TEXT = {**TEXT, "vocab_size": 514, "hidden_size": 32, "intermediate_size": 128, "num_attention_heads": 4,
             "num_hidden_layers": 4, "projection_dim": 32}


def build_pipeline(*, tiny: bool = False, device: str = "cpu", seed: int = 0) -> Any:
    """A StableDiffusionPipeline of SD 1.5's sizes (or the tiny stand-in), random weights."""
    import diffusers
    import torch
    import transformers

    from lorahub.base.embedded import build_tokenizer

    torch.manual_seed(seed)
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(**(TINY_UNET if tiny else UNET))
        vae = diffusers.AutoencoderKL(**(TINY_VAE if tiny else VAE))
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**(TINY_TEXT if tiny else TEXT)))
    return diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=build_tokenizer(), unet=unet,
        scheduler=diffusers.DDIMScheduler(**SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline(folder: str | os.PathLike[str], *, tiny: bool = False, device: str = "cpu",
                  dtype: str = "float16") -> Path:
    """Build and save the pipeline as a diffusers folder (safetensors) that ``--base`` accepts."""
    return benchkit.save_pipeline(build_pipeline(tiny=tiny, device=device), folder, dtype)


def lora_shapes(target_modules: list[str], rank: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """module path -> (lora_A shape, lora_B shape) for SD 1.5's UNet, without allocating its weights."""
    return benchkit.unet_lora_shapes(UNET, target_modules, rank)
