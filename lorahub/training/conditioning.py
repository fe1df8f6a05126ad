"""What a base family feeds its UNet besides the noisy latents and the timestep.

The training loop (:mod:`lorahub.training.trainer`) is the same for every
family; what differs is small and lives here, one class per family, as
diffusers splits its LoRA loaders into a shared base and per-pipeline mixins:

- :class:`SD1Conditioning` (SD 1.x/2.x): one CLIP text encoder; the UNet takes
  its last hidden state as ``encoder_hidden_states``.
- :class:`SDXLConditioning`: two text encoders (CLIP ViT-L, OpenCLIP ViT-bigG).
  The UNet takes both penultimate hidden states side by side
  (``encoder_hidden_states``, 768 + 1280 = 2048 wide on SDXL), and in
  ``added_cond_kwargs`` the second encoder's pooled, projected embedding
  (``text_embeds``) and the micro-conditioning of each image (``time_ids``:
  original height and width, crop top and left, target height and width). That
  is what ``StableDiffusionXLPipeline.encode_prompt`` (``clip_skip=None``) and
  ``_get_add_time_ids`` compute at inference, so training and previews condition
  the UNet the same way.

- :class:`FluxConditioning` (Flux.1 dev/schnell, ``FluxPipeline``): CLIP-L's pooled
  output (``pooled_projections``) and T5-XXL's last hidden state
  (``encoder_hidden_states``, ``max_sequence_length`` tokens, 512 as in diffusers'
  ``train_dreambooth_lora_flux.py``); the latents go in packed 2x2
  (``FluxPipeline._pack_latents``) with their position ids
  (``_prepare_latent_image_ids``), text ids are zeros, the timestep is sigma, and
  Flux.1-dev's guidance embedding takes ``guidance_scale`` (1.0, as the diffusers
  script trains it).
- :class:`SD3Conditioning` (SD 3/3.5, ``StableDiffusion3Pipeline``): CLIP-L's and
  CLIP-G's penultimate hidden states side by side, padded to T5's width and put
  before T5's tokens (77 as in ``train_dreambooth_lora_sd3.py``), the two pooled
  projections concatenated (``pooled_projections``); the timestep is sigma x 1000.
  That is ``StableDiffusion3Pipeline.encode_prompt``.

The flow-matching families (:attr:`Conditioning.flow`) train a transformer
(:meth:`Conditioning.denoiser`) on ``noise - x0``; only their CLIP encoders take a
LoRA (:attr:`Conditioning.trainable_encoder_names`), T5 stays frozen as in every
community trainer.

Text-encoder outputs are :class:`TextEmbeds` (batched) that the trainer caches
per caption when the encoders are frozen. Nothing here imports torch at module
level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..errors import TrainingError


class TextEmbeds(NamedTuple):
    """Text-encoder outputs of a batch of captions."""

    #: (batch, tokens, width): the UNet's ``encoder_hidden_states``.
    hidden: Any
    #: (batch, width) pooled embedding (SDXL's ``text_embeds``), or None.
    pooled: Any = None

    def rows(self) -> list[TextEmbeds]:
        """One :class:`TextEmbeds` per caption (for caching)."""
        n = self.hidden.shape[0]
        return [TextEmbeds(self.hidden[i], None if self.pooled is None else self.pooled[i]) for i in range(n)]

    @staticmethod
    def stack(rows: Sequence[TextEmbeds]) -> TextEmbeds:
        import torch

        pooled = None if rows[0].pooled is None else torch.stack([r.pooled for r in rows])
        return TextEmbeds(torch.stack([r.hidden for r in rows]), pooled)

    def to(self, device: Any = None, dtype: Any = None) -> TextEmbeds:
        return TextEmbeds(self.hidden.to(device=device, dtype=dtype),
                          None if self.pooled is None else self.pooled.to(device=device, dtype=dtype))


def _tokenize(tokenizer: Any, captions: Sequence[str], device: Any) -> Any:
    return tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


class Conditioning:
    """The family-specific part of training: text encoders, their outputs, the UNet's extra inputs."""

    family = "sd1"
    #: Pipeline attributes of the text encoders and of their tokenizers, in order.
    encoder_names: tuple[str, ...] = ("text_encoder",)
    tokenizer_names: tuple[str, ...] = ("tokenizer",)
    #: Whether the UNet takes per-image micro-conditioning (:meth:`time_ids`).
    uses_time_ids = False
    #: Flow matching (a transformer on ``noise - x0``) rather than DDPM (a UNet on epsilon or v).
    flow = False
    #: The pipeline attribute of the model the LoRA trains.
    denoiser_name = "unet"

    @property
    def trainable_encoder_names(self) -> tuple[str, ...]:
        """The text encoders ``train_text_encoder`` puts a LoRA on (the CLIP ones; never T5)."""
        return self.encoder_names

    def denoiser(self) -> Any:
        return getattr(self.pipe, self.denoiser_name)

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def encoders(self) -> list[Any]:
        return [getattr(self.pipe, n) for n in self.encoder_names]

    def tokenizers(self) -> list[Any]:
        return [getattr(self.pipe, n) for n in self.tokenizer_names]

    def encode(self, captions: Sequence[str], encoders: Sequence[Any], device: Any) -> TextEmbeds:
        """Run the text encoders (``encoders``: the pipeline's, or the trainer's wrapped ones) on ``captions``."""
        raise NotImplementedError

    def unet_inputs(self, embeds: TextEmbeds, time_ids: Any = None) -> dict[str, Any]:
        """Keyword arguments of the UNet call besides the latents and the timesteps."""
        return {"encoder_hidden_states": embeds.hidden}

    def time_ids(self, rows: Sequence[tuple[int, ...]], device: Any, dtype: Any) -> Any:
        return None


class SD1Conditioning(Conditioning):
    """SD 1.x/2.x: the last hidden state of one CLIP text encoder."""

    def encode(self, captions: Sequence[str], encoders: Sequence[Any], device: Any) -> TextEmbeds:
        ids = _tokenize(self.pipe.tokenizer, captions, device)
        return TextEmbeds(encoders[0](ids, return_dict=False)[0])


class SDXLConditioning(Conditioning):
    """SDXL: two text encoders' penultimate hidden states, the pooled embedding and micro-conditioning."""

    family = "sdxl"
    encoder_names = ("text_encoder", "text_encoder_2")
    tokenizer_names = ("tokenizer", "tokenizer_2")
    uses_time_ids = True

    def encode(self, captions: Sequence[str], encoders: Sequence[Any], device: Any) -> TextEmbeds:
        import torch

        hidden = []
        pooled = None
        for tokenizer, encoder in zip(self.tokenizers(), encoders, strict=True):
            out = encoder(_tokenize(tokenizer, captions, device), output_hidden_states=True, return_dict=True)
            hidden.append(out.hidden_states[-2])
            # the last encoder's pooled output (CLIPTextModelWithProjection: text_embeds)
            pooled = getattr(out, "text_embeds", None)
            if pooled is None:
                pooled = out.pooler_output
        return TextEmbeds(torch.cat(hidden, dim=-1), pooled)

    def unet_inputs(self, embeds: TextEmbeds, time_ids: Any = None) -> dict[str, Any]:
        if time_ids is None or embeds.pooled is None:
            raise TrainingError("SDXL needs the pooled text embedding and the micro-conditioning time ids")
        return {"encoder_hidden_states": embeds.hidden,
                "added_cond_kwargs": {"text_embeds": embeds.pooled, "time_ids": time_ids}}

    def time_ids(self, rows: Sequence[tuple[int, ...]], device: Any, dtype: Any) -> Any:
        import torch

        return torch.tensor([list(r) for r in rows], device=device, dtype=dtype)


class FlowConditioning(Conditioning):
    """What Flux.1 and SD3 share: a transformer trained by flow matching, T5 frozen."""

    flow = True
    denoiser_name = "transformer"
    #: T5 tokens when the configuration does not say (the diffusers DreamBooth scripts' defaults).
    default_max_sequence_length = 512

    def __init__(self, pipe: Any, max_sequence_length: int | None = None) -> None:
        super().__init__(pipe)
        self.max_sequence_length = int(max_sequence_length or self.default_max_sequence_length)
        #: T5's output per caption, kept when set (the trainer sets it while CLIP trains: T5 never does, and
        #: running T5-XXL every step for the same captions would cost more than the step)
        self.t5_cache: dict[str, Any] | None = None

    @property
    def trainable_encoder_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.encoder_names if n in ("text_encoder", "text_encoder_2")
                     and type(getattr(self.pipe, n)).__name__.startswith("CLIP"))

    def _t5(self, tokenizer: Any, encoder: Any, captions: Sequence[str], device: Any) -> Any:
        import torch

        def run(texts: Sequence[str]) -> Any:
            ids = tokenizer(list(texts), padding="max_length", max_length=self.max_sequence_length, truncation=True,
                            return_tensors="pt").input_ids.to(device)
            with torch.no_grad():  # T5 is always frozen
                return encoder(ids, output_hidden_states=False)[0]

        if self.t5_cache is None:
            return run(captions)
        missing = [c for c in dict.fromkeys(captions) if c not in self.t5_cache]
        if missing:
            if len(self.t5_cache) > 4096:
                self.t5_cache.clear()
            self.t5_cache.update(zip(missing, run(missing), strict=True))
        return torch.stack([self.t5_cache[c] for c in captions])

    def predict(self, model: Any, noisy: Any, sigmas: Any, embeds: TextEmbeds, *, guidance: float,
                dtype: Any) -> Any:
        """The model's prediction (latent-shaped) at noise level ``sigmas`` (one per sample)."""
        raise NotImplementedError


class FluxConditioning(FlowConditioning):
    """Flux.1: CLIP-L's pooled output, T5's last hidden state, packed latents, the guidance embedding."""

    family = "flux"
    encoder_names = ("text_encoder", "text_encoder_2")
    tokenizer_names = ("tokenizer", "tokenizer_2")

    def encode(self, captions: Sequence[str], encoders: Sequence[Any], device: Any) -> TextEmbeds:
        clip, t5 = encoders
        pooled = clip(_tokenize(self.pipe.tokenizer, captions, device), output_hidden_states=False).pooler_output
        return TextEmbeds(self._t5(self.pipe.tokenizer_2, t5, captions, device), pooled)

    def predict(self, model: Any, noisy: Any, sigmas: Any, embeds: TextEmbeds, *, guidance: float,
                dtype: Any) -> Any:
        import torch
        from diffusers import FluxPipeline

        b, c, h, w = noisy.shape
        packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, dtype)
        txt_ids = torch.zeros(embeds.hidden.shape[1], 3, device=noisy.device, dtype=dtype)
        guide = None
        if getattr(model.config, "guidance_embeds", False):
            guide = torch.full((b,), float(guidance), device=noisy.device, dtype=torch.float32)
        pred = model(hidden_states=packed.to(dtype), timestep=sigmas.to(dtype), guidance=guide,
                     pooled_projections=embeds.pooled.to(dtype), encoder_hidden_states=embeds.hidden.to(dtype),
                     txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        # _unpack_latents takes pixel sizes: latent size x the VAE factor, which it divides out again
        factor = int(getattr(self.pipe, "vae_scale_factor", 8))
        return FluxPipeline._unpack_latents(pred, h * factor, w * factor, factor)


class SD3Conditioning(FlowConditioning):
    """SD 3/3.5: CLIP-L + CLIP-G penultimate states padded to T5's width, then T5; both pooled projections."""

    family = "sd3"
    encoder_names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    tokenizer_names = ("tokenizer", "tokenizer_2", "tokenizer_3")
    default_max_sequence_length = 77

    def encoders(self) -> list[Any]:
        return [e for e in super().encoders() if e is not None]

    def encode(self, captions: Sequence[str], encoders: Sequence[Any], device: Any) -> TextEmbeds:
        import torch

        hidden, pooled = [], []
        for tokenizer, encoder in zip(self.tokenizers()[:2], encoders[:2], strict=True):
            out = encoder(_tokenize(tokenizer, captions, device), output_hidden_states=True)
            pooled.append(out[0])
            hidden.append(out.hidden_states[-2])
        clip = torch.cat(hidden, dim=-1)
        if len(encoders) > 2:
            t5 = self._t5(self.pipe.tokenizer_3, encoders[2], captions, device)
        else:  # no T5 (a pipeline loaded without it): zeros, as the pipeline feeds
            width = self.pipe.transformer.config.joint_attention_dim
            t5 = torch.zeros(len(captions), self.max_sequence_length, width, device=clip.device, dtype=clip.dtype)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return TextEmbeds(torch.cat([clip, t5.to(clip.dtype)], dim=-2), torch.cat(pooled, dim=-1))

    def predict(self, model: Any, noisy: Any, sigmas: Any, embeds: TextEmbeds, *, guidance: float,
                dtype: Any) -> Any:
        return model(hidden_states=noisy.to(dtype), timestep=(sigmas * 1000).to(dtype),
                     encoder_hidden_states=embeds.hidden.to(dtype), pooled_projections=embeds.pooled.to(dtype),
                     return_dict=False)[0]


FAMILIES: dict[str, type[Conditioning]] = {"sd1": SD1Conditioning, "sd2": SD1Conditioning, "sdxl": SDXLConditioning,
                                           "flux": FluxConditioning, "sd3": SD3Conditioning}
#: Pipeline class -> family of the flow-matching pipelines.
FLOW_PIPELINES = {"FluxPipeline": "flux", "StableDiffusion3Pipeline": "sd3"}


def conditioning_for(pipe: Any, family: str | None = None, *, max_sequence_length: int | None = None) -> Conditioning:
    """The :class:`Conditioning` of a loaded pipeline (SDXL, Flux and SD3 pipelines by their class, else by
    ``family``); ``max_sequence_length``: T5 tokens (Flux, SD3)."""
    flow = FLOW_PIPELINES.get(type(pipe).__name__)
    if flow is not None:
        return FAMILIES[flow](pipe, max_sequence_length)  # type: ignore[call-arg]
    if type(pipe).__name__ == "StableDiffusionXLPipeline" or family == "sdxl":
        if getattr(pipe, "text_encoder_2", None) is None:
            raise TrainingError("this SDXL pipeline has no second text encoder (a refiner?); lorahub trains SDXL base "
                                "models")
        return SDXLConditioning(pipe)
    if type(pipe).__name__ != "StableDiffusionPipeline":
        raise TrainingError(f"a {type(pipe).__name__}; lorahub train supports SD 1.x/2.x, SDXL, Flux.1 "
                            "and SD3 pipelines")
    return SD1Conditioning(pipe)
