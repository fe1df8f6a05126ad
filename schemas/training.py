"""Contracts of ``lorahub train``: the training configuration (also the TOML file saved with every
adapter package) and the result the command reports (``--json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MixedPrecision = Literal["no", "fp16", "bf16"]
SavePrecision = Literal["fp32", "fp16", "bf16"]
PredictionType = Literal["epsilon", "v_prediction"]
LrScheduler = Literal["constant", "constant_with_warmup", "linear", "cosine"]
ExportFormat = Literal["kohya"]
#: Which weight files a run writes (docs/formats.md): both (default), or one of them.
WeightsFormat = Literal["both", "diffusers", "kohya"]
Optimizer = Literal["adamw", "adamw8bit"]
#: Flux.1/SD3: which transformer modules take a LoRA (lorahub.training.targets).
TargetPreset = Literal["attention", "attention-mlp"]
#: Flux.1/SD3: how sigma is drawn (diffusers' compute_density_for_timestep_sampling).
TimestepSampling = Literal["uniform", "logit_normal", "mode"]
#: Flux.1/SD3: the per-sample loss weight (diffusers' compute_loss_weighting_for_sd3).
LossWeighting = Literal["none", "sigma_sqrt", "cosmap"]
#: Flux.1/SD3: the frozen transformer's weights quantized (int8: torchao, CPU or GPU; nf4: bitsandbytes, CUDA).
Quantize = Literal["int8", "nf4"]

#: The UNet modules a LoRA adapts by default: every attention projection (self and cross attention).
DEFAULT_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
#: The CLIP text-encoder modules adapted with ``train_text_encoder``.
TEXT_ENCODER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]


class TrainConfig(BaseModel):
    """Everything one training run depends on. Saved as ``train_config.toml`` in the output package.

    Paths are kept as given (relative paths are relative to the working folder of the run).
    ``None`` means "derive it": ``alpha`` = ``rank``, ``resolution`` = the base model's native size,
    ``name`` = the output folder's name, ``sample_seed`` = ``seed``, ``prediction_type`` = the base
    scheduler's, ``upscale`` = the family's habit (SD 1.x/2.x yes, SDXL no).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: str | None = Field(None, description="Dataset folder (kohya folders with .txt captions, or an imagefolder with metadata.jsonl)")
    out: str | None = Field(None, description="Output package folder")
    name: str | None = Field(None, description="Adapter name (ss_output_name, modelspec.title); default: the output folder's name")
    base: str = Field("lorahub/embedded-sd1-tiny", description="Base model: embedded id, diffusers folder, .safetensors checkpoint or Hub id")
    base_config: str | None = Field(None, description="Local diffusers folder describing a single-file base checkpoint")
    trigger: str | None = Field(None, description="Trigger word: put first in every caption, used for missing captions")

    rank: int = Field(4, ge=1, le=1024, description="LoRA rank (kohya network_dim)")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha (kohya network_alpha); default: rank")
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    train_text_encoder: bool = Field(False, description="Also train LoRAs on the text encoder(s) (SDXL: both; "
                                     "Flux.1/SD3: the CLIP ones, never T5)")
    text_encoder_lr: float | None = Field(None, gt=0, description="Learning rate of the text-encoder LoRA; default: lr")
    text_encoder_2_lr: float | None = Field(
        None, gt=0, description="SDXL: learning rate of the second text encoder's LoRA; default: text_encoder_lr, else lr"
    )

    steps: int = Field(1000, ge=1, description="Optimizer steps")
    lr: float = Field(1e-4, gt=0)
    lr_scheduler: LrScheduler = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 turns it off")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_weight_decay: float = Field(1e-2, ge=0)
    adam_epsilon: float = Field(1e-8, gt=0)
    optimizer: Optimizer = Field("adamw", description="adamw (torch), or adamw8bit (bitsandbytes, CUDA only)")
    seed: int = Field(42, ge=0, lt=2**31)

    resolution: int | None = Field(None, ge=64, le=4096, description="Training side length in pixels (multiple of 64)")
    buckets: bool = Field(True, description="Aspect-ratio buckets (else resize + center crop to a square)")
    upscale: bool | None = Field(
        None,
        description="Enlarge images smaller than their bucket (off: they train at their own size, sides rounded "
        "down to the bucket step); default: on for SD 1.x/2.x, off for SDXL",
    )
    flip: bool = Field(False, description="Random horizontal flips")
    caption_extension: str = ".txt"
    caption_column: str = Field("text", description="Caption column of an imagefolder metadata.jsonl/csv")
    caption_dropout: float = Field(0.0, ge=0, le=1, description="Probability of training a step on the empty caption")
    shuffle_tags: bool = Field(False, description="Shuffle comma-separated tags (the first keep_tokens stay in place)")
    keep_tokens: int = Field(1, ge=0, description="Tags kept in front when shuffling (the trigger is always first)")

    mixed_precision: MixedPrecision = "no"
    gradient_checkpointing: bool = False
    cache_latents: bool = Field(True, description="Encode every image with the VAE once, before the first step")
    prediction_type: PredictionType | None = None
    snr_gamma: float | None = Field(None, gt=0, description="Min-SNR loss weighting gamma (5.0 is the usual value)")
    noise_offset: float = Field(0.0, ge=0)

    targets: TargetPreset = Field(
        "attention",
        description="Flux.1/SD3: the transformer modules the LoRA adapts: 'attention' (to_q/k/v, to_out.0, and the "
        "text stream's add_q/k/v_proj, to_add_out) or 'attention-mlp' (also ff.net.*, ff_context.net.*, and Flux's "
        "single-block proj_mlp/proj_out)",
    )
    timestep_sampling: TimestepSampling | None = Field(
        None, description="Flux.1/SD3: how sigma is drawn: uniform, logit_normal (logit_mean, logit_std) or mode "
        "(mode_scale); default: Flux uniform, SD3 logit_normal (diffusers' DreamBooth scripts)",
    )
    logit_mean: float = Field(0.0, description="Flux.1/SD3: mean of logit_normal sampling")
    logit_std: float = Field(1.0, gt=0, description="Flux.1/SD3: standard deviation of logit_normal sampling")
    mode_scale: float = Field(1.29, description="Flux.1/SD3: scale of mode sampling")
    timestep_shift: float | None = Field(
        None, gt=0, description="Flux.1/SD3: shift sigma -> shift*sigma/(1+(shift-1)*sigma); default: the base "
        "scheduler's static shift (SD3: 3.0), 1.0 where it shifts by resolution (Flux)",
    )
    dynamic_shift: bool = Field(
        False, description="Flux.1: shift by resolution as FluxPipeline samples (mu from the image's token count, "
        "the scheduler's base_shift/max_shift; kohya's flux_shift); replaces timestep_shift",
    )
    loss_weighting: LossWeighting = Field("none", description="Flux.1/SD3: loss weight per sigma: none, sigma_sqrt, cosmap")
    guidance_scale: float = Field(1.0, ge=0, description="Flux.1-dev: the guidance embedding's input while training")
    max_sequence_length: int | None = Field(
        None, ge=1, le=512, description="Flux.1/SD3: T5 tokens per caption; default: Flux 512, SD3 77",
    )
    quantize: Quantize | None = Field(
        None, description="Flux.1/SD3: quantize the frozen transformer: int8 (torchao, weight-only) or nf4 "
        "(bitsandbytes, CUDA); the LoRA trains in full precision on top",
    )
    offload_text_encoders: bool = Field(
        True, description="Flux.1/SD3: when the captions never change, encode them and the preview prompts once, "
        "then free the text encoders (T5-XXL alone is 9 GB)",
    )

    sample_every: int = Field(0, ge=0, description="Preview images every N steps (0: only at the end)")
    sample_prompts: list[str] = Field(default_factory=list, description="Preview prompts (default: the trigger word)")
    sample_steps: int = Field(20, ge=1, le=1000)
    sample_seed: int | None = Field(None, ge=0)
    checkpoint_every: int = Field(0, ge=0, description="Resumable checkpoint every N steps (0: none)")
    keep_checkpoints: bool = Field(False, description="Keep checkpoints/ after a finished run")

    save_precision: SavePrecision = "fp16"
    format: WeightsFormat = Field(
        "both",
        description="Weight files of the package: 'both' (pytorch_lora_weights.safetensors for diffusers and "
        "<name>_kohya.safetensors for AUTOMATIC1111/Forge, ComfyUI and kohya), 'diffusers' or 'kohya' alone",
    )
    export: list[ExportFormat] = Field(
        default_factory=list, description="Deprecated: ['kohya'] also writes the kohya file (the default 'both' does)"
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps (multi-GPU: launch with accelerate)")

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        allowed = set(DEFAULT_TARGET_MODULES)
        bad = [m for m in v if m not in allowed]
        if bad or not v:
            raise ValueError(f"target_modules must be a non-empty subset of {DEFAULT_TARGET_MODULES}, not {v}")
        return list(dict.fromkeys(v))

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int | None) -> int | None:
        if v is not None and v % 64:
            raise ValueError(f"resolution must be a multiple of 64, not {v}")
        return v

    @field_validator("caption_extension")
    @classmethod
    def _ext(cls, v: str) -> str:
        v = v.strip()
        return v if v.startswith(".") else "." + v

    def writes(self, layout: str) -> bool:
        """Whether the run writes the ``diffusers`` or the ``kohya`` weights file."""
        if layout == "kohya":
            return self.format in ("both", "kohya") or "kohya" in self.export
        return self.format in ("both", "diffusers")

    def effective_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)


class TrainResult(BaseModel):
    """What a finished training run reports (``lorahub train --json``)."""

    model_config = ConfigDict(extra="forbid")

    out: str = Field(description="The adapter package folder")
    weights: str = Field(description="The main weights file: pytorch_lora_weights.safetensors (diffusers layout), "
                         "or the kohya file with format 'kohya'")
    kohya_weights: str | None = Field(None, description="<name>_kohya.safetensors (kohya layout: AUTOMATIC1111/Forge, "
                                      "ComfyUI, kohya), unless format is 'diffusers'")
    name: str
    base: str = Field(description="The base model as named by the user")
    base_family: str
    trigger: str | None
    rank: int
    alpha: float
    steps: int = Field(description="Optimizer steps done in total")
    resumed_from: int | None = Field(None, description="The checkpoint step this run continued from")
    epochs: int
    images: int = Field(description="Distinct training images")
    train_images: int = Field(description="Images per epoch, repeats included")
    resolution: int
    first_loss: float | None = Field(None, description="Mean loss of the first 10% of steps")
    last_loss: float | None = Field(None, description="Mean loss of the last 10% of steps")
    seconds: float = Field(description="Wall time of this run, model loading included")
    steps_per_second: float = Field(description="Optimizer steps per second of this run's training loop")
    device: str
    mixed_precision: MixedPrecision
    files: list[str] = Field(default_factory=list, description="Files of the package, relative to out")
    warnings: list[str] = Field(default_factory=list)
