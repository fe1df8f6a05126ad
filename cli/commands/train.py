"""``lorahub train DATA --out ./mystyle``: train a LoRA adapter locally (CPU or GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lorahub.cli.output import emit, info, json_option, warn

#: CLI option name -> TrainConfig field (options default to None = "not given").
_FIELDS = {
    "base": "base", "base_config": "base_config", "trigger": "trigger", "name": "name", "rank": "rank",
    "alpha": "alpha", "steps": "steps", "lr": "lr", "text_encoder_lr": "text_encoder_lr",
    "text_encoder_2_lr": "text_encoder_2_lr", "upscale": "upscale", "optimizer": "optimizer",
    "lr_scheduler": "lr_scheduler", "lr_warmup_steps": "lr_warmup_steps", "resolution": "resolution",
    "batch_size": "batch_size", "gradient_accumulation_steps": "gradient_accumulation_steps", "seed": "seed",
    "train_text_encoder": "train_text_encoder", "mixed_precision": "mixed_precision",
    "gradient_checkpointing": "gradient_checkpointing", "cache_latents": "cache_latents",
    "prediction_type": "prediction_type", "snr_gamma": "snr_gamma", "noise_offset": "noise_offset",
    "caption_dropout": "caption_dropout", "shuffle_tags": "shuffle_tags", "keep_tokens": "keep_tokens",
    "buckets": "buckets", "flip": "flip", "sample_every": "sample_every", "sample_steps": "sample_steps",
    "checkpoint_every": "checkpoint_every", "keep_checkpoints": "keep_checkpoints",
    "save_precision": "save_precision", "device": "device",
    "targets": "targets", "timestep_sampling": "timestep_sampling", "logit_mean": "logit_mean",
    "logit_std": "logit_std", "mode_scale": "mode_scale", "timestep_shift": "timestep_shift",
    "dynamic_shift": "dynamic_shift", "loss_weighting": "loss_weighting", "guidance_scale": "guidance_scale",
    "max_sequence_length": "max_sequence_length", "quantize": "quantize",
    "offload_text_encoders": "offload_text_encoders",
}


@click.command("train")
@click.argument("data", required=False, type=click.Path(path_type=str))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Output package folder (refused when it exists and is not empty, unless --resume/--overwrite).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Read settings from a TOML file (train_config.toml of an earlier run works); options override it.")
@click.option("--base", default=None, help="Base model: lorahub/embedded-sd1-tiny (default), "
              "lorahub/embedded-sdxl-tiny, lorahub/embedded-flux-tiny, lorahub/embedded-sd3-tiny, a diffusers folder "
              "(SD 1.x/2.x, SDXL, Flux.1, SD3), a .safetensors checkpoint or a Hub id.")
@click.option("--base-config", default=None, help="Diffusers folder describing a single-file --base checkpoint.")
@click.option("--trigger", default=None, help="Trigger word: first in every caption, used for images without one.")
@click.option("--name", default=None, help="Adapter name (default: the --out folder's name).")
@click.option("--rank", type=int, default=None, help="LoRA rank [4].")
@click.option("--alpha", type=float, default=None, help="LoRA alpha [= rank].")
@click.option("--steps", type=int, default=None, help="Optimizer steps [1000; on the drawing base 400].")
@click.option("--lr", type=float, default=None, help="Learning rate [1e-4; on the drawing base 1e-3].")
@click.option("--text-encoder-lr", type=float, default=None, help="Learning rate of the text-encoder LoRA [= --lr].")
@click.option("--text-encoder-2-lr", type=float, default=None,
              help="SDXL: learning rate of the second text encoder's LoRA [= --text-encoder-lr].")
@click.option("--lr-scheduler", type=click.Choice(["constant", "constant_with_warmup", "linear", "cosine"]), default=None)
@click.option("--lr-warmup-steps", type=int, default=None)
@click.option("--resolution", type=int, default=None,
              help="Training size in pixels, multiple of 64 [the base's: 512 SD 1.5, 1024 SDXL]; buckets keep its area.")
@click.option("--batch-size", type=int, default=None, help="Images per step and device [1].")
@click.option("--gradient-accumulation-steps", type=int, default=None)
@click.option("--seed", type=int, default=None, help="Seed of everything random [42].")
@click.option("--train-text-encoder/--no-train-text-encoder", default=None,
              help="Also train text-encoder LoRAs (SDXL: both encoders).")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default=None,
              help="Mixed precision [no]; fp16 needs a GPU.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None, help="Trade speed for memory.")
@click.option("--optimizer", type=click.Choice(["adamw", "adamw8bit"]), default=None,
              help="adamw [default] or adamw8bit (bitsandbytes, CUDA).")
@click.option("--small-gpu", is_flag=True, help="Settings for a small GPU (8 GB for SDXL): bf16 (else fp16) mixed "
              "precision, gradient checkpointing, cached latents, 8-bit AdamW if bitsandbytes is installed; explicit "
              "options win.")
@click.option("--cache-latents/--no-cache-latents", default=None, help="Encode images once before training [on].")
@click.option("--prediction-type", type=click.Choice(["epsilon", "v_prediction"]), default=None,
              help="Training target [the base scheduler's].")
@click.option("--snr-gamma", type=float, default=None, help="Min-SNR loss weighting (5.0 is usual).")
@click.option("--noise-offset", type=float, default=None, help="Noise offset (0.05-0.1 is usual).")
@click.option("--caption-dropout", type=float, default=None, help="Probability of an empty caption per image.")
@click.option("--shuffle-tags/--no-shuffle-tags", default=None, help="Shuffle comma-separated tags.")
@click.option("--keep-tokens", type=int, default=None, help="Tags kept in front when shuffling [1].")
@click.option("--buckets/--no-buckets", default=None, help="Aspect-ratio buckets [on]; off: center crop.")
@click.option("--upscale/--no-upscale", default=None, help="Enlarge images smaller than their bucket [SD 1.x: on, "
              "SDXL: off, small images train at their own size].")
@click.option("--flip/--no-flip", default=None, help="Random horizontal flips.")
@click.option("--targets", type=click.Choice(["attention", "attention-mlp"]), default=None,
              help="Flux.1/SD3: transformer modules adapted [attention: to_q/k/v, to_out.0, add_q/k/v_proj, "
              "to_add_out]; attention-mlp adds ff.net.*, ff_context.net.* and Flux's proj_mlp/proj_out.")
@click.option("--timestep-sampling", type=click.Choice(["uniform", "logit_normal", "mode"]), default=None,
              help="Flux.1/SD3: how sigma is drawn [Flux uniform, SD3 logit_normal].")
@click.option("--logit-mean", type=float, default=None, help="Flux.1/SD3: logit_normal mean [0.0].")
@click.option("--logit-std", type=float, default=None, help="Flux.1/SD3: logit_normal std [1.0].")
@click.option("--mode-scale", type=float, default=None, help="Flux.1/SD3: mode sampling scale [1.29].")
@click.option("--timestep-shift", type=float, default=None,
              help="Flux.1/SD3: sigma shift [the base scheduler's static shift: SD3 3.0; Flux 1.0].")
@click.option("--dynamic-shift/--no-dynamic-shift", default=None,
              help="Flux.1: shift sigma by the image's size as FluxPipeline samples [off].")
@click.option("--loss-weighting", type=click.Choice(["none", "sigma_sqrt", "cosmap"]), default=None,
              help="Flux.1/SD3: loss weight per sigma [none].")
@click.option("--guidance-scale", type=float, default=None, help="Flux.1-dev: guidance embedding input [1.0].")
@click.option("--max-sequence-length", type=int, default=None, help="Flux.1/SD3: T5 tokens [Flux 512, SD3 77].")
@click.option("--quantize", type=click.Choice(["int8", "nf4"]), default=None,
              help="Flux.1/SD3: quantize the frozen transformer: int8 (torchao) or nf4 (bitsandbytes, CUDA); "
              "pip install 'lorahub-toolkit[quant]'.")
@click.option("--offload-text-encoders/--no-offload-text-encoders", default=None,
              help="Flux.1/SD3: encode the fixed captions and preview prompts once, then free the text encoders [on].")
@click.option("--sample-every", type=int, default=None, help="Preview images every N steps (always at the end).")
@click.option("--sample-prompt", "sample_prompts", multiple=True, help="Preview prompt (repeatable) [the trigger].")
@click.option("--sample-steps", type=int, default=None, help="Denoising steps of previews [20].")
@click.option("--checkpoint-every", type=int, default=None, help="Resumable checkpoint every N steps.")
@click.option("--keep-checkpoints/--no-keep-checkpoints", default=None, help="Keep checkpoints/ after the run.")
@click.option("--save-precision", type=click.Choice(["fp16", "fp32", "bf16"]), default=None,
              help="dtype of the saved weights [fp16].")
@click.option("--format", "weights_format", type=click.Choice(["both", "diffusers", "kohya"]), default=None,
              help="Weight files [both]: pytorch_lora_weights.safetensors (diffusers layout, for diffusers and the "
              "Hub) and <name>_kohya.safetensors (kohya layout, the one AUTOMATIC1111/Forge, ComfyUI and kohya load "
              "fully), or only one of them. See docs/formats.md.")
@click.option("--export", "export", type=click.Choice(["kohya"]), multiple=True, hidden=True,
              help="Deprecated: the kohya file is written by default (--format both).")
@click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing lorahub package in --out.")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar (stderr).")
@json_option
def train_cmd(data: str | None, out: str | None, config_file: str | None, sample_prompts: tuple[str, ...],
              export: tuple[str, ...], weights_format: str | None, resume: bool, overwrite: bool, progress: bool,
              as_json: bool, small_gpu: bool, **options: Any) -> None:
    """Train a LoRA adapter on the images in DATA and write the package to --out.

    DATA is a folder of images with same-name .txt captions (kohya style; sub-folders
    named 10_name repeat their images 10 times per epoch) or a Hugging Face
    imagefolder with metadata.jsonl. The package holds pytorch_lora_weights.safetensors
    (diffusers layout, for diffusers) and <name>_kohya.safetensors (kohya layout, the
    file AUTOMATIC1111/Forge, ComfyUI and kohya load fully), both with kohya ss_* metadata
    and the same strength in every loader (--format picks one of them alone),
    train_config.toml, samples/, the loss history and curve and a draft README.md. With
    --resume, the run continues from the last checkpoint of --out with the settings saved
    there (only --steps, the sample, checkpoint and format options may change).

    SDXL bases (lorahub/embedded-sdxl-tiny, SDXL folders and single files) train the
    same way, with both text encoders, the pooled embedding and each image's
    micro-conditioning (original size, crop, target size); their kohya file uses
    kohya's SDXL names (lora_unet_input_blocks_..., lora_te1_, lora_te2_).

    Flux.1 and SD3 bases train their transformer by flow matching (noisy = (1 - sigma) x0
    + sigma noise, target noise - x0) with diffusers' timestep sampling and loss
    weighting options, Flux-dev's guidance embedding, cached T5/CLIP outputs and
    optionally a quantized frozen transformer (--quantize); their kohya file names the
    original BFL/SD3 modules with q/k/v fused (lora_unet_double_blocks_0_img_attn_qkv),
    as ComfyUI loads it.

    Runs on the CPU against the embedded base model; on several GPUs launch it with
    `accelerate launch -m lorahub.cli train ...`.
    """
    from lorahub.errors import UsageError
    from lorahub.training.config import CONFIG_NAME, load_config_file, make_config, merge_resume, read_config

    given: dict[str, Any] = {_FIELDS[k]: v for k, v in options.items() if v is not None}
    if small_gpu:
        from lorahub.training.config import small_gpu_settings

        given = {**small_gpu_settings(), **given}
    if sample_prompts:
        given["sample_prompts"] = list(sample_prompts)
    if export:
        given["export"] = list(dict.fromkeys(export))
    if weights_format is not None:
        given["format"] = weights_format
    if data is not None:
        given["data"] = data
    if out is not None:
        given["out"] = out
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")

    if resume:
        if not out:
            raise UsageError("--resume needs --out (the folder of the run to continue)")
        saved_path = Path(out) / CONFIG_NAME
        if not saved_path.is_file():
            raise UsageError(f"{out}: nothing to resume (no {CONFIG_NAME})", hint="start the run without --resume")
        overrides = load_config_file(config_file) if config_file else {}
        overrides.update(given)
        config = merge_resume(read_config(saved_path), overrides)
    else:
        values = load_config_file(config_file) if config_file else {}
        # A config file saved by an earlier run names its own output folder: a new run needs --out,
        # and the name derived from the old folder follows the new one.
        old_out = values.pop("out", None)
        if old_out and values.get("name") == Path(str(old_out)).name:
            values.pop("name", None)
        values.update(given)
        config = make_config(values, source="options")
        if not config.data:
            raise UsageError("missing DATA (the dataset folder)", hint="lorahub train DATA --out FOLDER")
        if not config.out:
            raise UsageError("missing --out (the output folder)", hint="lorahub train DATA --out FOLDER")

    from lorahub.training.trainer import train

    result = train(config, resume=resume, overwrite=overwrite, log=info, progress=progress and not as_json)

    def human(r) -> list[str]:  # noqa: ANN001
        lines = [
            f"trained {r.name}: {r.steps} steps on {r.images} image(s) at {r.resolution}px, rank {r.rank}, "
            f"alpha {r.alpha:g} ({r.steps_per_second:.2f} steps/s on {r.device})",
        ]
        if r.first_loss is not None and r.last_loss is not None:
            lines.append(f"loss: {r.first_loss:.4f} (first 10%) -> {r.last_loss:.4f} (last 10%)")
        lines.append(f"weights: {r.weights}")
        if r.kohya_weights and r.kohya_weights != r.weights:
            lines.append(f"kohya:   {r.kohya_weights}  (AUTOMATIC1111/Forge, ComfyUI, kohya)")
        if r.trigger:
            lines.append(f"trigger: {r.trigger}")
        return lines

    for w in result.warnings:
        warn(w)
    emit(result, as_json, human)
