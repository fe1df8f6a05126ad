"""The embedded Flux.1 and SD 3.5 base models: tiny MMDiT pipelines built offline.

The flow-matching siblings of :mod:`lorahub.base.embedded` (which registers them
in its ``MODELS``, builds, saves and marks them the same way): random weights
from a seed, the real diffusers/transformers classes and module names, tiny
widths. Public names:

- family ``"flux"``: :data:`FLUX_ID` ``lorahub/embedded-flux-tiny``, folder
  :data:`FLUX_NAME` ``embedded-flux-tiny-v1``, built by :func:`build_flux_pipeline`;
- family ``"sd3"``: :data:`SD3_ID` ``lorahub/embedded-sd3-tiny``, folder
  :data:`SD3_NAME` ``embedded-sd3-tiny-v1``, built by :func:`build_sd3_pipeline`;
- ``lorahub base build --family flux|sd3``, ``ensure_embedded(family="flux"|"sd3")``;
- :func:`build_t5_tokenizer`, the T5 tokenizer both use (built in code, no download).

The Flux model (FLUX.1-dev in brackets), a ``FluxPipeline``:

- FluxTransformer2DModel (:data:`FLUX_TRANSFORMER_CONFIG`): 2 double-stream
  blocks ``transformer_blocks.N`` [19] and 2 single-stream blocks
  ``single_transformer_blocks.N`` [38], 2 heads of 16 [24 of 128], rotary axes
  (4, 6, 6) [(16, 56, 56)], ``in_channels=64`` [64] (16 latent channels packed
  2x2), ``joint_attention_dim=32`` [4096] = the T5 width,
  ``pooled_projection_dim=12`` [768] = the CLIP-L width, ``guidance_embeds=True``
  as FLUX.1-dev (FLUX.1-schnell has none). About 0.2 M parameters.
- AutoencoderKL (:data:`FLUX_VAE_CONFIG`): Flux's 16 latent channels, no
  ``quant_conv``/``post_quant_conv``, ``scaling_factor=0.3611``,
  ``shift_factor=0.1159``; blocks (32, 32, 64, 64) [(128, 256, 512, 512)],
  down-sampling by 8 as Flux's.
- ``text_encoder``: CLIPTextModel (CLIP-L) of width 12 [768], 2 layers [12];
  ``tokenizer``: the embedded CLIP tokenizer
  (:func:`~lorahub.base.embedded.build_tokenizer`).
- ``text_encoder_2``: T5EncoderModel (T5 v1.1, gated GELU) of width 32 [4096],
  2 layers [24], 2 heads of 16 [64 of 64], feed-forward 64 [10240];
  ``tokenizer_2``: :func:`build_t5_tokenizer`, ``model_max_length=512`` [512].
- FlowMatchEulerDiscreteScheduler with FLUX.1-dev's scheduler config
  (:data:`FLUX_SCHEDULER_CONFIG`: ``shift=3.0``, dynamic shifting 0.5..1.15 over
  256..4096 image tokens).
- Native size 64 px (:data:`FLUX_RESOLUTION`; ``FluxPipeline`` itself always
  defaults to 1024 px, so pass ``height``/``width``).

The SD 3.5 model (SD 3.5 Medium in brackets), a ``StableDiffusion3Pipeline``:

- SD3Transformer2DModel (:data:`SD3_TRANSFORMER_CONFIG`): 3 joint blocks
  ``transformer_blocks.N`` [24], the first with SD 3.5 Medium's second
  self-attention ``attn2`` (``dual_attention_layers=(0,)`` [0..12]), RMS
  ``qk_norm`` as SD 3.5, 2 heads of 16 [24 of 64], patch 2, 16 latent channels,
  ``joint_attention_dim=32`` [4096], ``caption_projection_dim=32`` [1536],
  ``pooled_projection_dim=28`` [2048] = CLIP-L 12 + CLIP-G 16, ``sample_size=8``
  [128] so the native size is 64 px, ``pos_embed_max_size=16`` [384].
- AutoencoderKL as the Flux model's with SD 3.5's ``scaling_factor=1.5305`` and
  ``shift_factor=0.0609``.
- ``text_encoder`` CLIP-L and ``text_encoder_2`` CLIP-G, both
  CLIPTextModelWithProjection, widths 12 and 16 [768, 1280];
  ``text_encoder_3`` T5 as the Flux model's; tokenizers: the embedded CLIP
  tokenizer, the same padding with ``!`` (as CLIP-G's), the T5 tokenizer.
- FlowMatchEulerDiscreteScheduler with ``shift=3.0`` (SD 3.5's).

Widths are those of the test-size models in ``tests/mmditkit.py`` (which takes its
configs from here), so test-size Flux/SD3 LoRA files load onto these bases.
Components are seeded from ``"flux/<component>"`` and ``"sd3/<component>"``.
"""

from __future__ import annotations

from typing import Any

#: What the user types for the embedded Flux model (``--base lorahub/embedded-flux-tiny``).
FLUX_ID = "lorahub/embedded-flux-tiny"
#: Its versioned folder name under ``$LORAHUB_HOME/models``.
FLUX_NAME = "embedded-flux-tiny-v1"
#: What the user types for the embedded SD 3.5 model.
SD3_ID = "lorahub/embedded-sd3-tiny"
SD3_NAME = "embedded-sd3-tiny-v1"

#: The native image side (px) of the Flux model, and of the SD 3.5 model.
FLUX_RESOLUTION = 64
SD3_RESOLUTION = 64
#: T5 sequence length (FLUX.1-dev's ``max_sequence_length``; SD 3.5's tokenizer_3 has 512 as well).
T5_MAX_LENGTH = 512

CLIP_L_CONFIG: dict[str, Any] = {
    "vocab_size": 514,
    "hidden_size": 12,
    "intermediate_size": 24,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 12,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}

CLIP_G_CONFIG: dict[str, Any] = {
    **CLIP_L_CONFIG,
    "hidden_size": 16,
    "intermediate_size": 32,
    "hidden_act": "gelu",
    "projection_dim": 16,
    "pad_token_id": 2,  # "!", as CLIP-G's tokenizer pads
}

#: T5 v1.1 (google/t5-v1_1-xxl's structure: gated GELU, untied head, relative attention buckets).
T5_CONFIG: dict[str, Any] = {
    "d_model": 32,
    "d_kv": 16,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 2,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

FLUX_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": T5_CONFIG["d_model"],
    "pooled_projection_dim": CLIP_L_CONFIG["hidden_size"],
    "guidance_embeds": True,
    "axes_dims_rope": (4, 6, 6),
}

FLUX_VAE_CONFIG: dict[str, Any] = {
    "sample_size": FLUX_RESOLUTION,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "force_upcast": True,
}

#: black-forest-labs/FLUX.1-dev's scheduler/scheduler_config.json values.
FLUX_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

SD3_TRANSFORMER_CONFIG: dict[str, Any] = {
    "sample_size": SD3_RESOLUTION // 8,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 3,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": T5_CONFIG["d_model"],
    "caption_projection_dim": 32,
    "pooled_projection_dim": CLIP_L_CONFIG["projection_dim"] + CLIP_G_CONFIG["projection_dim"],
    "pos_embed_max_size": 16,
    "dual_attention_layers": (0,),
    "qk_norm": "rms_norm",
}

SD3_VAE_CONFIG: dict[str, Any] = {**FLUX_VAE_CONFIG, "scaling_factor": 1.5305, "shift_factor": 0.0609}

#: stabilityai/stable-diffusion-3.5-medium's scheduler/scheduler_config.json values.
SD3_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}

FLUX_COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
FLUX_WEIGHTED = ("transformer", "vae", "text_encoder", "text_encoder_2")
SD3_COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer",
                  "tokenizer_2", "tokenizer_3", "scheduler")
SD3_WEIGHTED = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")

#: The characters the T5 tokenizer spells with (each alone and after "▁", the word start).
_T5_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()-_/&+=<>@#%*[]{}|~^$"


def t5_vocab() -> list[tuple[str, float]]:
    """The embedded T5 vocabulary: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2 (as T5's), ``▁``, then each of
    :data:`_T5_CHARS` after ``▁`` and alone (Unigram pieces with log-probability scores)."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -3.0) for c in _T5_CHARS]
    vocab += [(c, -4.0) for c in _T5_CHARS]
    return vocab


def build_t5_tokenizer():  # noqa: ANN201 - returns a T5TokenizerFast
    """A T5 tokenizer (``T5TokenizerFast``: a ``tokenizers`` Unigram model over :func:`t5_vocab`, the
    SentencePiece-style ``▁`` word marker, ``</s>`` appended, pads with ``<pad>``), no extra ids, built
    in code. Case-sensitive as T5's; characters outside :data:`_T5_CHARS` are ``<unk>``."""
    from transformers import T5TokenizerFast

    tok = T5TokenizerFast(vocab=t5_vocab(), extra_ids=0, model_max_length=T5_MAX_LENGTH)
    if (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) != (0, 1, 2):  # pragma: no cover - guard
        from ..errors import BaseModelError

        raise BaseModelError("the locally built T5 tokenizer has unexpected special ids "
                             f"({tok.pad_token_id}, {tok.eos_token_id}, {tok.unk_token_id})")
    return tok


def _t5(transformers: Any) -> Any:
    return transformers.T5EncoderModel(transformers.T5Config(vocab_size=len(t5_vocab()), **T5_CONFIG))


def build_flux_pipeline(seed: int = 0):  # noqa: ANN201 - returns a diffusers FluxPipeline
    """The embedded Flux.1-dev-style pipeline in memory (float32, CPU), initialised from ``seed``."""
    from .embedded import _seeded_components, build_tokenizer

    pipeline_cls, modules = _seeded_components(seed, "flux/", "FluxPipeline", {
        "transformer": lambda d, _t: d.FluxTransformer2DModel(**FLUX_TRANSFORMER_CONFIG),
        "vae": lambda d, _t: d.AutoencoderKL(**FLUX_VAE_CONFIG),
        "text_encoder": lambda _d, t: t.CLIPTextModel(t.CLIPTextConfig(**CLIP_L_CONFIG)),
        "text_encoder_2": lambda _d, t: _t5(t),
    })
    from diffusers import FlowMatchEulerDiscreteScheduler

    return pipeline_cls(
        **modules,
        tokenizer=build_tokenizer(),
        tokenizer_2=build_t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG),
    )


def build_sd3_pipeline(seed: int = 0):  # noqa: ANN201 - returns a diffusers StableDiffusion3Pipeline
    """The embedded SD 3.5 (Medium-style) pipeline in memory (float32, CPU), initialised from ``seed``."""
    from .embedded import _seeded_components, build_tokenizer

    pipeline_cls, modules = _seeded_components(seed, "sd3/", "StableDiffusion3Pipeline", {
        "transformer": lambda d, _t: d.SD3Transformer2DModel(**SD3_TRANSFORMER_CONFIG),
        "vae": lambda d, _t: d.AutoencoderKL(**SD3_VAE_CONFIG),
        "text_encoder": lambda _d, t: t.CLIPTextModelWithProjection(t.CLIPTextConfig(**CLIP_L_CONFIG)),
        "text_encoder_2": lambda _d, t: t.CLIPTextModelWithProjection(t.CLIPTextConfig(**CLIP_G_CONFIG)),
        "text_encoder_3": lambda _d, t: _t5(t),
    })
    from diffusers import FlowMatchEulerDiscreteScheduler

    return pipeline_cls(
        **modules,
        tokenizer=build_tokenizer(),
        tokenizer_2=build_tokenizer(pad_token="!"),
        tokenizer_3=build_t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER_CONFIG),
    )


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def config_summary(family: str) -> dict[str, Any]:
    """The architecture of the ``flux`` or ``sd3`` model, JSON-able (written to the marker)."""
    clip = {"vocab_size": 514, "merges": 0, "model_max_length": 77}
    t5 = {"class": "T5TokenizerFast", "vocab_size": len(t5_vocab()), "model_max_length": T5_MAX_LENGTH}
    if family == "flux":
        return {
            "transformer": _plain(FLUX_TRANSFORMER_CONFIG),
            "vae": _plain(FLUX_VAE_CONFIG),
            "text_encoder": dict(CLIP_L_CONFIG),
            "text_encoder_2": {"class": "T5EncoderModel", **T5_CONFIG},
            "tokenizer": clip,
            "tokenizer_2": t5,
            "scheduler": {"class": "FlowMatchEulerDiscreteScheduler", **FLUX_SCHEDULER_CONFIG},
            "resolution": FLUX_RESOLUTION,
        }
    return {
        "transformer": _plain(SD3_TRANSFORMER_CONFIG),
        "vae": _plain(SD3_VAE_CONFIG),
        "text_encoder": dict(CLIP_L_CONFIG),
        "text_encoder_2": dict(CLIP_G_CONFIG),
        "text_encoder_3": {"class": "T5EncoderModel", **T5_CONFIG},
        "tokenizer": clip,
        "tokenizer_2": {**clip, "pad_token": "!"},
        "tokenizer_3": t5,
        "scheduler": {"class": "FlowMatchEulerDiscreteScheduler", **SD3_SCHEDULER_CONFIG},
        "resolution": SD3_RESOLUTION,
    }
