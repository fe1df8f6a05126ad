"""The drawing base: a tiny SD 1.x pipeline sized to be pretrained on :mod:`lorahub.world` on a CPU.

The same diffusers and transformers classes as the embedded base
(:mod:`lorahub.base.embedded`): ``UNet2DConditionModel`` with SD 1.5's block
layout and module names (so LoRA targets are the same), ``AutoencoderKL``,
``CLIPTextModel`` + ``CLIPTokenizer`` and a ``DDIMScheduler`` with SD 1.x's
schedule, loadable with ``StableDiffusionPipeline.from_pretrained``. What
differs, so that it learns in minutes on two CPU cores (SD 1.5 in brackets):

- AutoencoderKL: three levels ``block_out_channels=(16, 32, 64)`` [(128, 256,
  512, 512)], so it down-samples by 4 [8]: a 64x64 image is a 16x16x4 latent
  (the pipeline's ``vae_scale_factor`` is 4; ``sample_size=16`` of the UNet
  makes 64 px the native size). ``norm_num_groups=4`` [32], so every group
  norm has at least 4 channels (see :func:`lorahub.base.pretrain.init_vae_as_pooling`).
- UNet2DConditionModel: down blocks ``CrossAttnDownBlock2D`` x3 +
  ``DownBlock2D``, up blocks ``UpBlock2D`` + ``CrossAttnUpBlock2D`` x3, a
  cross-attention mid block, ``layers_per_block=2``, 1x1 conv ``proj_in`` /
  ``proj_out`` (all as SD 1.5); ``block_out_channels=(32, 64, 64, 64)``,
  ``cross_attention_dim=64``, 2 attention heads (16 channels wide in the first
  level, 32 below), ``norm_num_groups=16``.
- CLIPTextModel: ``hidden_size=64``, 4 layers, 4 heads, 77 positions.
- CLIPTokenizer: the byte-level fallback of the embedded tokenizer (every
  byte and byte + ``</w>``) plus one token per word of the world's captions
  and per concept trigger word (:func:`words`), made whole by BPE merges, so
  ``"a small red circle"`` is four tokens while any other word is still
  spelled byte by byte.

:func:`build_pipeline` gives the untrained pipeline (random weights from a
seed); :mod:`lorahub.base.pretrain` trains it on the world.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..errors import BaseModelError
from .embedded import MARKER, MODEL_MAX_LENGTH, PRETRAINED_UNET_CONFIG, PRETRAINED_VAE_FACTOR
from .embedded import SCHEDULER_CONFIG as _SD1_SCHEDULER_CONFIG
from .embedded import TEXT_CONFIG as _SD1_TEXT_CONFIG

#: The pretrained drawing base's id (``--base lorahub/drawing-sd1-tiny``, or ``--base drawing``).
DRAWING_ID = "lorahub/drawing-sd1-tiny"
#: Where the shipped weights lie: package data of ``lorahub.base`` (float16 safetensors, about 8 MB; the output
#: of ``lorahub base pretrain``, the command and its figures in docs/drawing-base.md).
SHIPPED = Path(__file__).resolve().parent / "weights" / "drawing-sd1-tiny"

#: The classifier-free guidance scale the drawing base draws best at (docs/drawing-base.md: shapes 81% at 3, 74.5%
#: at 5, 61% at 7.5, SD's usual default); renders and training previews on it use this unless told otherwise.
GUIDANCE = 3.0
#: ``lorahub train`` settings on the drawing base where the user sets none (TrainConfig's own, lr 1e-4 for 1000
#: steps, suit SD-sized models): a LoRA learns a new shape from 12 images in about 30 s on 2 CPU cores, the judge
#: finding it in 95% of unseen captions' images (docs/drawing-base.md, "Proofs in pixels").
TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "steps": 400}

#: The demo adapters shipped beside the base (package data): one LoRA per concept of :data:`DEMO_CONCEPTS`,
#: ``drawing_<concept>.safetensors`` (kohya layout) with its ``.preview.png``, trained at :data:`TRAIN_DEFAULTS`
#: by ``scripts/train_drawing_adapters.py``. An exported Space on a CPU starts its catalogue with them.
DEMO_ADAPTERS = SHIPPED.parent / "drawing-adapters"
#: A new shape, a texture and a colour scheme (:data:`lorahub.world.CONCEPTS`), the ones a LoRA learns at the
#: defaults (docs/drawing-base.md, "Proofs in pixels").
DEMO_CONCEPTS: tuple[str, ...] = ("heart", "checkered", "sunset")
#: World seed of the unseen captions demo previews draw (the training images are seed 0's).
PREVIEW_SEED = 5

#: Image side the base is pretrained at, and the VAE's down-sampling factor.
RESOLUTION = 64
VAE_FACTOR = PRETRAINED_VAE_FACTOR

#: The embedded SD 1.x base's UNet (SD 1.5's blocks and module names, so LoRA targets are the same), wider: the
#: embedded model's own (:data:`lorahub.base.embedded.PRETRAINED_UNET_CONFIG`; these are its weights).
UNET_CONFIG: dict[str, Any] = PRETRAINED_UNET_CONFIG

VAE_CONFIG: dict[str, Any] = {
    "sample_size": RESOLUTION,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    # groups of 4 channels in the 16-channel stage (16 groups there would normalise each channel alone, which
    # erases every channel's mean, the absolute colour, right before the output); see pretrain.init_vae_as_pooling
    "norm_num_groups": 4,
    # replaced after pretraining by 1 / the standard deviation of the training latents
    "scaling_factor": 1.0,
}

#: The embedded SD 1.x base's text encoder, twice as wide; the vocabulary size comes from the tokenizer.
TEXT_CONFIG: dict[str, Any] = {
    **_SD1_TEXT_CONFIG, "vocab_size": 0, "hidden_size": 64, "intermediate_size": 256, "projection_dim": 64,
}

#: SD 1.x's schedule, as the embedded base's.
SCHEDULER_CONFIG: dict[str, Any] = dict(_SD1_SCHEDULER_CONFIG)


def words() -> tuple[str, ...]:
    """Every word of the world's captions and every concept's trigger word, sorted (the whole-word tokens)."""
    from ..world import vocab

    out: set[str] = {"a", "background"}
    out.update(vocab.SHAPES, vocab.PALETTE, vocab.BACKGROUNDS, vocab.SIZES, vocab.TEXTURES, vocab.SCHEMES)
    for phrase in vocab.POSITION_PHRASES.values():
        out.update(phrase.split())
    out.update(c.trigger for c in vocab.CONCEPTS.values())
    return tuple(sorted(out))


def tokenizer_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary (byte fallback first, then whole words) and the BPE merges that build each word.

    Each word is merged left to right from what the merges before it make of it, every
    new merge ranking after all earlier ones, so adding a word never changes how an
    earlier one tokenizes (:func:`build_tokenizer` checks every word is one token).
    """
    from .embedded import tokenizer_vocab

    vocab = dict(tokenizer_vocab())
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words():
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        symbols = _bpe(symbols, ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
                vocab.setdefault(pair[0] + pair[1], len(vocab))
            symbols = [symbols[0] + symbols[1], *symbols[2:]]
    return vocab, merges


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair merging as CLIP does it: the lowest-ranked adjacent pair first, until none applies."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:], strict=False))]
        known = [(r, i) for r, i in pairs if r is not None]
        if not known:
            break
        best = min(known)[0]
        out: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and ranks.get((symbols[i], symbols[i + 1])) == best:
                out.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def build_tokenizer():  # noqa: ANN201 - returns a CLIPTokenizer
    """The drawing base's CLIP tokenizer: whole world words, byte fallback, ``model_max_length=77``."""
    from transformers import CLIPTokenizer

    vocab, merges = tokenizer_vocab_and_merges()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MODEL_MAX_LENGTH)
    if tok.bos_token_id != 0 or tok.eos_token_id != 1 or tok.pad_token_id != 1:  # pragma: no cover - guard
        raise BaseModelError("the drawing tokenizer has unexpected special ids")
    for word in words():
        ids = tok(word, add_special_tokens=False)["input_ids"]
        if ids != [vocab[word + "</w>"]]:  # pragma: no cover - guard
            raise BaseModelError(f"the drawing tokenizer splits {word!r} into {ids}")
    return tok


def component_seed(seed: int, component: str) -> int:
    """The torch seed of one component: 63 bits of SHA-256("drawing/<seed>:<component>")."""
    digest = hashlib.sha256(f"drawing/{seed}:{component}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shipped_path() -> Path:
    """The shipped drawing base's folder; :class:`BaseModelError` when this installation lacks its weights."""
    if not (SHIPPED / "model_index.json").is_file() or not any(SHIPPED.glob("unet/*.safetensors")):
        raise BaseModelError(
            f"{DRAWING_ID}: its weights are not installed (no {SHIPPED / 'model_index.json'})",
            hint="reinstall lorahub from a wheel or a full checkout, or rebuild them with "
            "'lorahub base pretrain --out DIR' and pass --base DIR",
        )
    return SHIPPED


def demo_adapters() -> list[Path]:
    """The shipped demo adapters (:data:`DEMO_ADAPTERS`), one per :data:`DEMO_CONCEPTS`; BaseModelError when
    this installation lacks them."""
    paths = [DEMO_ADAPTERS / f"drawing_{c}.safetensors" for c in DEMO_CONCEPTS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise BaseModelError(f"{DRAWING_ID}: its demo adapters are not installed (no {', '.join(missing)})",
                             hint="reinstall lorahub, or retrain them with scripts/train_drawing_adapters.py")
    return paths


def demo_preview(adapter: Path | str, concept: str, *, steps: int = 20, seeds: int = 4) -> tuple[Any, str, int]:
    """``(PIL image, caption, seed)``: a sample of ``adapter`` (weight 1 on the shipped base, :data:`GUIDANCE`,
    ``steps`` steps) for a card. The unseen captions of ``concept`` (world seed :data:`PREVIEW_SEED`, large
    shapes first) at seeds ``0..seeds-1``: the first image the judge reads as its whole caption (shape, colour,
    size, position, background and the concept), else the first caption's seed 0. Picked as people pick their
    samples, by a reader that is not the model."""
    import numpy as np

    from .. import world
    from ..pipeline.live import LivePipeline

    scenes = sorted(world.scenes(PREVIEW_SEED, 16, "concept", concept=concept), key=lambda s: s.size != "large")
    first = None
    with LivePipeline(str(shipped_path()), device="cpu") as live:
        live.add(concept, str(adapter), weight=1.0)
        for seed in range(seeds):
            for scene in scenes:
                image = live.render(scene.caption, seed=seed, steps=steps, tags=False).image
                first = first or (image, scene.caption, seed)
                seen = world.judge(np.asarray(image))
                if all(seen.agrees(scene).values()) and concept in seen.concepts:
                    return image, scene.caption, seed
    return first


def is_drawing_ref(ref: Any) -> bool:
    """Whether a resolved base (:class:`lorahub.base.resolve.BaseRef`) is a drawing base: a folder holding one
    (:func:`is_drawing_base`), or the embedded SD 1.x model, whose default build is these weights (built:
    what its folder holds; not built yet: what it will hold)."""
    if ref is None or ref.kind not in ("folder", "embedded"):
        return False
    if ref.kind == "embedded":
        from . import embedded

        spec = embedded.model(ref.family or embedded.FAMILY)
        if not embedded.is_complete(ref.location, spec.family):
            return spec.pretrained
    return is_drawing_base(ref.location)


def is_drawing_base(folder: Path | str | None) -> bool:
    """Whether ``folder`` holds a drawing base (its marker says ``kind: drawing``): renders on it default to
    :data:`GUIDANCE`, training on it to :data:`TRAIN_DEFAULTS`."""
    import json

    if folder is None or not Path(folder).is_dir():
        return False
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("kind") == "drawing"


def build_pipeline(seed: int = 0):  # noqa: ANN201 - returns a diffusers StableDiffusionPipeline
    """The untrained drawing pipeline (float32, CPU), every component initialised from ``seed``."""
    from ..errors import require
    from .embedded import _quiet_transformers

    torch = require("torch", "ml")
    diffusers = require("diffusers", "ml")
    transformers = require("transformers", "ml")
    tokenizer = build_tokenizer()
    text_config = dict(TEXT_CONFIG, vocab_size=len(tokenizer))
    with _quiet_transformers(transformers), torch.random.fork_rng(devices=[]):
        pipeline_cls = diffusers.StableDiffusionPipeline
        torch.manual_seed(component_seed(seed, "unet"))
        unet = diffusers.UNet2DConditionModel(**UNET_CONFIG)
        torch.manual_seed(component_seed(seed, "vae"))
        vae = diffusers.AutoencoderKL(**VAE_CONFIG)
        torch.manual_seed(component_seed(seed, "text_encoder"))
        text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_config))
    scheduler = diffusers.DDIMScheduler(**SCHEDULER_CONFIG)
    for module in (unet, vae, text_encoder):
        module.eval()
    return pipeline_cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
