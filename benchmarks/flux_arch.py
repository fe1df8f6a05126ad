"""FLUX.1-dev's architecture at its real sizes, built offline with random weights.

The configurations are those of ``black-forest-labs/FLUX.1-dev`` (``transformer/config.json``: 19 double-
and 38 single-stream blocks, 24 heads of 128, 11.9 B parameters; ``vae/config.json``: 16 latent channels;
``text_encoder/config.json``: CLIP ViT-L/14; ``text_encoder_2/config.json``: T5 v1.1 XXL encoder, 4.7 B;
``scheduler/scheduler_config.json``), written out here so that nothing is downloaded. Memory use and speed
do not depend on the weights' values, so random weights measure what the real model would. The tokenizers
are lorahub's embedded ones (the real vocabularies are downloads); their ids are valid for the real
embeddings.

The weights are made where they will live (``device``, e.g. straight on the GPU) in ``dtype``: a 12 B
transformer initialised in float32 on a CPU would take minutes and 48 GB. ``tiny=True`` gives the embedded
tiny Flux model's configuration (``lorahub.base.embedded_mmdit``) for ``--smoke`` runs on a CPU.

Used by ``bench_train_flux_gpu.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import benchkit

TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
VAE = {
    "sample_size": 1024, "in_channels": 3, "out_channels": 3, "latent_channels": 16,
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32, "act_fn": "silu", "scaling_factor": 0.3611, "shift_factor": 0.1159,
    "use_quant_conv": False, "use_post_quant_conv": False, "force_upcast": True,
}
CLIP_L = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
    "num_hidden_layers": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
T5_XXL = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6, "tie_word_embeddings": False, "pad_token_id": 0,
    "eos_token_id": 1, "decoder_start_token_id": 0,
}


def build_pipeline(*, tiny: bool = False, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> Any:
    """A FluxPipeline of FLUX.1-dev's sizes (or the embedded tiny one), random weights, made on ``device``."""
    import diffusers
    import torch
    import transformers

    from lorahub.base import embedded_mmdit as mm
    from lorahub.base.embedded import build_tokenizer

    if tiny:
        return mm.build_flux_pipeline(seed)
    torch.manual_seed(seed)
    before = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            transformer = diffusers.FluxTransformer2DModel(**TRANSFORMER)
            vae = diffusers.AutoencoderKL(**VAE)
            te1 = transformers.CLIPTextModel(transformers.CLIPTextConfig(**CLIP_L))
            te2 = transformers.T5EncoderModel(transformers.T5Config(**T5_XXL))
    finally:
        torch.set_default_dtype(before)
    return diffusers.FluxPipeline(
        transformer=transformer, vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=build_tokenizer(),
        tokenizer_2=mm.build_t5_tokenizer(), scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**mm.FLUX_SCHEDULER_CONFIG),
    )


def save_pipeline(folder: str | os.PathLike[str], *, tiny: bool = False, device: str = "cpu",
                  dtype: str = "bfloat16") -> Path:
    """Build and save the pipeline as a diffusers folder (safetensors) that ``--base`` accepts."""
    return benchkit.save_pipeline(build_pipeline(tiny=tiny, device=device, dtype=dtype if not tiny else "float32"),
                                  folder, dtype)


def transformer_parameters() -> int:
    """Parameters of FLUX.1-dev's transformer, counted on the meta device (no memory)."""
    import diffusers
    import torch

    with torch.device("meta"):
        model = diffusers.FluxTransformer2DModel(**TRANSFORMER)
    return sum(p.numel() for p in model.parameters())
