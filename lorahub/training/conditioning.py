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


FAMILIES: dict[str, type[Conditioning]] = {"sd1": SD1Conditioning, "sd2": SD1Conditioning, "sdxl": SDXLConditioning}


def conditioning_for(pipe: Any, family: str | None = None) -> Conditioning:
    """The :class:`Conditioning` of a loaded pipeline (SDXL pipelines by their class, else by ``family``)."""
    if type(pipe).__name__ == "StableDiffusionXLPipeline" or family == "sdxl":
        if getattr(pipe, "text_encoder_2", None) is None:
            raise TrainingError("this SDXL pipeline has no second text encoder (a refiner?); lorahub trains SDXL base "
                                "models")
        return SDXLConditioning(pipe)
    if type(pipe).__name__ != "StableDiffusionPipeline":
        raise TrainingError(f"a {type(pipe).__name__}; lorahub train supports SD 1.x/2.x and SDXL pipelines")
    return SD1Conditioning(pipe)
