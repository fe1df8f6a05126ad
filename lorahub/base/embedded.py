"""The embedded base models: tiny Stable Diffusion 1.x and SDXL pipelines available offline (and, registered
here, the Flux.1 and SD 3.5 ones of :mod:`lorahub.base.embedded_mmdit`: families ``"flux"`` and ``"sd3"``).

lorahub needs a base model for training, previews, blending and its tests, and
must work without network access. The default, :data:`EMBEDDED_ID`
(``lorahub/embedded-sd1-tiny``), is the pretrained drawing base shipped with the
package (:mod:`lorahub.base.drawing`, docs/drawing-base.md): a tiny SD 1.x
pipeline that draws the captioned shapes of :mod:`lorahub.world`, so everything
lorahub renders offline shows something. On first need its weights are copied
from the package into ``$LORAHUB_HOME/models/embedded-sd1-tiny-v2/`` (version 2;
version 1 had random weights). Its architecture: :data:`PRETRAINED_UNET_CONFIG`,
a VAE down-sampling by :data:`PRETRAINED_VAE_FACTOR`, 64 px native.

The other models, and SD 1.x on request (``lorahub base build --seed N``,
``ensure_embedded(seed=N)``), are built from a seed with random weights: the
Stable Diffusion 1.x architecture below or the SDXL architecture (:data:`SDXL_ID`,
see "The SDXL model" below) at a tiny width. They draw noise-like pictures, but
every code path (LoRA loading, training, hot-swapping, blending, single-file
checkpoints) behaves as on real SD 1.5 / SDXL, because the module trees and the
module names are the same. A folder's version suffix changes whenever the
architecture or the weights of a given seed change.

Random SD 1.x configuration (SD 1.5 in brackets):

- UNet2DConditionModel: ``block_out_channels=(32, 32, 64, 64)`` [(320, 640, 1280,
  1280)], ``layers_per_block=2`` [2], down blocks ``CrossAttnDownBlock2D`` x3 +
  ``DownBlock2D``, up blocks ``UpBlock2D`` + ``CrossAttnUpBlock2D`` x3, a
  cross-attention mid block (as SD 1.5), ``cross_attention_dim=32`` [768],
  ``attention_head_dim=4`` [8], ``norm_num_groups=32`` [32],
  ``use_linear_projection=False`` (1x1 conv ``proj_in``/``proj_out``, as SD 1.x),
  ``sample_size=8`` [64]. Attention modules are ``to_q``, ``to_k``, ``to_v``,
  ``to_out.0`` in ``attn1`` (self) and ``attn2`` (cross), 16 transformer blocks
  (``down_blocks.{0,1,2}``, ``mid_block``, ``up_blocks.{1,2,3}``), exactly the
  places LoRAs target on SD 1.5. About 2.4 M parameters.
- AutoencoderKL: ``block_out_channels=(32, 32, 64, 64)`` [(128, 256, 512, 512)],
  ``layers_per_block=1`` [2], 4 latent channels, ``scaling_factor=0.18215``:
  down-sampling by 8 as SD 1.x, so a 64x64 image is an 8x8x4 latent. About 1 M
  parameters.
- CLIPTextModel: ``hidden_size=32`` [768], ``intermediate_size=128`` [3072], 4
  heads [12], 4 layers [12], ``quick_gelu``, 77 positions, vocabulary of 514.
- CLIPTokenizer built locally: ``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1
  (also the padding token), the 256 byte-level symbols, then each with ``</w>``;
  no merges (every word is spelled letter by letter); ``model_max_length=77``.
- DDIMScheduler with the SD 1.x schedule (``scaled_linear``, 0.00085..0.012,
  ``steps_offset=1``, ``clip_sample=False``, ``set_alpha_to_one=False``).
- No safety checker, no feature extractor.

Determinism: every component is initialised from its own seed derived from
``seed`` on CPU in float32, so building twice with the same seed gives
byte-identical ``.safetensors`` files. Building takes about half a second
once torch is imported; the folder is 14 MB. After the first call's warm-up
(1-3 s), a 64x64 image with 2 steps takes tens of milliseconds on a CPU (see
``benchmarks/embedded_base.py``).

Building is atomic: the pipeline is saved into a temporary folder beside the
target, checked, and renamed into place; an interrupted build leaves nothing
half-made. Concurrent builders are serialised by a lock file and, where locks
are unavailable, tolerated (the first rename wins).

The SDXL model
--------------

:data:`SDXL_ID` (``lorahub/embedded-sdxl-tiny``), saved under
``$LORAHUB_HOME/models/embedded-sdxl-tiny-v1/`` and built by
``lorahub base build --family sdxl`` or on first need. A
``StableDiffusionXLPipeline`` (SDXL base 1.0 in brackets):

- UNet2DConditionModel: ``DownBlock2D`` + ``CrossAttnDownBlock2D`` x2, a
  cross-attention mid block, ``CrossAttnUpBlock2D`` x2 + ``UpBlock2D`` (as
  SDXL: no attention at the highest resolution); ``block_out_channels=(32, 64,
  128)`` [(320, 640, 1280)], ``layers_per_block=2`` [2],
  ``transformer_layers_per_block=(1, 1, 2)`` [(1, 2, 10)], so the deepest level
  has ``transformer_blocks.1`` as SDXL has ``.1``-``.9``; heads of 16 channels
  ``attention_head_dim=(2, 4, 8)`` [(5, 10, 20) of 64];
  ``use_linear_projection=True`` (linear ``proj_in``/``proj_out``, as SDXL);
  ``cross_attention_dim=96`` = TE1 width 32 + TE2 width 64 [768 + 1280 =
  2048]; the added conditioning ``addition_embed_type="text_time"``,
  ``addition_time_embed_dim=16`` [256] and
  ``projection_class_embeddings_input_dim=160`` = TE2 projection 64 + 6 x 16
  [1280 + 6 x 256 = 2816] (pooled text embedding plus the six micro-conditioning
  numbers: original size, crop top-left, target size); ``sample_size=16`` [128],
  so the native size is 128 px [1024], twice the SD 1.x model's as SDXL's is
  twice SD 1.5's. 17 transformer blocks [70], about 8.2 M parameters.
- AutoencoderKL as the SD 1.x model's, with SDXL's ``scaling_factor=0.13025``
  and ``force_upcast=True``.
- ``text_encoder``: CLIPTextModel as the SD 1.x model's (SDXL's first encoder is
  SD 1.5's CLIP ViT-L). ``text_encoder_2``: CLIPTextModelWithProjection,
  ``hidden_size=64`` [1280], ``intermediate_size=256`` [5120], 4 heads [20], 4
  layers [32], ``gelu`` [gelu], ``projection_dim=64`` [1280].
- ``tokenizer`` as the SD 1.x model's; ``tokenizer_2`` the same vocabulary
  padded with ``!`` as SDXL's second tokenizer is.
- EulerDiscreteScheduler with SDXL's schedule (``scaled_linear``,
  0.00085..0.012, ``leading`` spacing, ``steps_offset=1``, epsilon).
- ``force_zeros_for_empty_prompt=True`` (as SDXL base), no watermarker.

Its components are seeded from ``"sdxl/<component>"``, so the two models never
share weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BaseModelError
from . import embedded_mmdit as _mmdit

#: What the user sees and types (``--base lorahub/embedded-sd1-tiny``).
EMBEDDED_ID = "lorahub/embedded-sd1-tiny"
#: The versioned folder name under ``$LORAHUB_HOME/models`` (v2: the pretrained drawing weights; v1 was random).
EMBEDDED_NAME = "embedded-sd1-tiny-v2"
#: The marker file written into the folder.
MARKER = "lorahub_base.json"
#: The family of the embedded model.
FAMILY = "sd1"
#: Marker format version.
MARKER_FORMAT = 1

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 32,
    "use_linear_projection": False,
}

#: The UNet of the pretrained SD 1.x model (the drawing base, :mod:`lorahub.base.drawing`): SD 1.5's blocks and
#: module names as :data:`UNET_CONFIG`, wider, on a 16x16 latent.
PRETRAINED_UNET_CONFIG: dict[str, Any] = {
    **UNET_CONFIG,
    "sample_size": 16,
    "block_out_channels": (32, 64, 64, 64),
    "cross_attention_dim": 64,
    # diffusers' legacy name: the number of heads. 2 heads of 16-32 channels, not 8 of 4-8: a CPU training step
    # spends most of its time in attention softmaxes, whose count grows with the heads (docs/drawing-base.md)
    "attention_head_dim": 2,
    "norm_num_groups": 16,
}
#: The pretrained model's VAE down-samples by 4 (three levels), so its native size is 16 x 4 = 64 px.
PRETRAINED_VAE_FACTOR = 4

VAE_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (32, 32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}

TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 514,
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

MODEL_MAX_LENGTH = 77

#: The sub-folders a complete build has (besides model_index.json and the marker).
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

# ----------------------------------------------------------------------------------------- SDXL

#: What the user types for the embedded SDXL model (``--base lorahub/embedded-sdxl-tiny``).
SDXL_ID = "lorahub/embedded-sdxl-tiny"
#: Its versioned folder name under ``$LORAHUB_HOME/models``.
SDXL_NAME = "embedded-sdxl-tiny-v1"

SDXL_TEXT_CONFIG: dict[str, Any] = dict(TEXT_CONFIG)

SDXL_TEXT2_CONFIG: dict[str, Any] = {
    "vocab_size": 514,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 64,
    "bos_token_id": 0,
    "eos_token_id": 1,
    # the id of "!" (tokenizer_2 pads with it, as SDXL's does); checked when building
    "pad_token_id": 2,
}

#: Width of the six micro-conditioning numbers' sinusoidal embeddings.
SDXL_TIME_EMBED_DIM = 16

SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64, 128),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 1, 2),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": SDXL_TEXT_CONFIG["hidden_size"] + SDXL_TEXT2_CONFIG["hidden_size"],
    "attention_head_dim": (2, 4, 8),
    "norm_num_groups": 32,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": SDXL_TIME_EMBED_DIM,
    "projection_class_embeddings_input_dim": SDXL_TEXT2_CONFIG["projection_dim"] + 6 * SDXL_TIME_EMBED_DIM,
}

SDXL_VAE_CONFIG: dict[str, Any] = {
    **VAE_CONFIG,
    "sample_size": 128,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

#: EulerDiscreteScheduler with stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json values.
SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}

SDXL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded base model: its family, names and layout."""

    family: str
    id: str
    #: Versioned folder name under ``$LORAHUB_HOME/models``.
    name: str
    pipeline_class: str
    #: Sub-folders of a complete build.
    components: tuple[str, ...]
    #: Sub-folders holding weights.
    weighted: tuple[str, ...]
    #: The denoiser's config: the UNet's (sd1, sdxl) or the transformer's (flux, sd3; see ``denoiser``).
    unet_config: dict[str, Any]
    #: Native image side in pixels (UNet sample size x VAE factor).
    resolution: int
    #: The pipeline component that denoises: ``"unet"`` or ``"transformer"``.
    denoiser: str = "unet"
    #: The VAE's down-sampling factor.
    vae_factor: int = 8
    #: Whether the default build is the pretrained weights shipped with lorahub (sd1: the drawing base), not
    #: random weights from a seed.
    pretrained: bool = False


MODELS: dict[str, EmbeddedModel] = {
    "sd1": EmbeddedModel("sd1", EMBEDDED_ID, EMBEDDED_NAME, "StableDiffusionPipeline", COMPONENTS,
                         ("unet", "vae", "text_encoder"), PRETRAINED_UNET_CONFIG,
                         int(PRETRAINED_UNET_CONFIG["sample_size"]) * PRETRAINED_VAE_FACTOR,
                         vae_factor=PRETRAINED_VAE_FACTOR, pretrained=True),
    "sdxl": EmbeddedModel("sdxl", SDXL_ID, SDXL_NAME, "StableDiffusionXLPipeline", SDXL_COMPONENTS,
                          ("unet", "vae", "text_encoder", "text_encoder_2"), SDXL_UNET_CONFIG,
                          int(SDXL_UNET_CONFIG["sample_size"]) * 8),
    "flux": EmbeddedModel("flux", _mmdit.FLUX_ID, _mmdit.FLUX_NAME, "FluxPipeline", _mmdit.FLUX_COMPONENTS,
                          _mmdit.FLUX_WEIGHTED, _mmdit.FLUX_TRANSFORMER_CONFIG, _mmdit.FLUX_RESOLUTION, "transformer"),
    "sd3": EmbeddedModel("sd3", _mmdit.SD3_ID, _mmdit.SD3_NAME, "StableDiffusion3Pipeline", _mmdit.SD3_COMPONENTS,
                         _mmdit.SD3_WEIGHTED, _mmdit.SD3_TRANSFORMER_CONFIG, _mmdit.SD3_RESOLUTION, "transformer"),
}
#: The families there is an embedded model of.
FAMILIES = tuple(MODELS)


def model(family: str = FAMILY) -> EmbeddedModel:
    """The embedded model of ``family`` (``"sd1"``, ``"sdxl"``, ``"flux"``, ``"sd3"``); :class:`BaseModelError` otherwise."""
    try:
        return MODELS[family]
    except KeyError:
        raise BaseModelError(
            f"there is no embedded {family!r} base model", hint=f"choose one of: {', '.join(FAMILIES)}"
        ) from None


def model_of_id(model_id: str) -> EmbeddedModel | None:
    """The embedded model named ``model_id`` (``lorahub/embedded-sdxl-tiny``), or ``None``."""
    return next((m for m in MODELS.values() if m.id == model_id), None)


def embedded_path(home: str | os.PathLike[str] | None = None, family: str = FAMILY) -> Path:
    """Where an embedded model lives (or will live): ``<home>/models/embedded-sd1-tiny-v2``.

    ``home`` defaults to ``$LORAHUB_HOME`` (:func:`lorahub.config.home`);
    ``family="sdxl"`` gives ``<home>/models/embedded-sdxl-tiny-v1``.
    """
    if home is None:
        from ..config import home as lorahub_home

        home = lorahub_home()
    return Path(home) / "models" / model(family).name


def is_complete(path: str | os.PathLike[str], family: str | None = None) -> bool:
    """True when ``path`` holds a finished embedded build (marker and every component).

    ``family`` names the model expected there; by default the marker's (SD 1.x
    when the marker names none).
    """
    p = Path(path)
    if not (p / MARKER).is_file() or not (p / "model_index.json").is_file():
        return False
    if family is None:
        marker = read_marker(p) or {}
        family = marker.get("family") if marker.get("family") in MODELS else FAMILY
    spec = model(family)  # type: ignore[arg-type]
    if not all((p / c).is_dir() for c in spec.components):
        return False
    return all(any((p / c).glob("*.safetensors")) for c in spec.weighted)


def read_marker(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``lorahub_base.json`` of a folder, or ``None`` when absent or unreadable."""
    try:
        data = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ensure_embedded(
    seed: int | None = None,
    force: bool = False,
    *,
    home: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    family: str = FAMILY,
) -> Path:
    """Return the folder of an embedded model (``family``: sd1, sdxl, flux, sd3), building it first when needed.

    ``path`` (an explicit folder) wins over ``home`` (a lorahub home), which
    wins over ``$LORAHUB_HOME``. An existing complete build is reused as is,
    whatever built it, unless ``force`` is true; ``force`` rebuilds and replaces
    the folder atomically. A build is the model's default weights when ``seed``
    is None (sd1: the pretrained drawing weights; the others: random weights from
    seed 0), else random weights from ``seed`` (see :func:`build_embedded`).
    Several processes may call this at once: one builds, the others wait for it
    and reuse its result.
    """
    model(family)
    target = Path(path) if path is not None else embedded_path(home, family)
    if not force and is_complete(target, family):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        if not force and is_complete(target, family):  # another process built it meanwhile
            return target
        build_embedded(target, seed=seed, progress=progress, family=family)
    return target


def build_embedded(
    path: str | os.PathLike[str],
    seed: int | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    family: str = FAMILY,
) -> Path:
    """Save the tiny pipeline of ``family`` at ``path`` (replacing what is there).

    ``seed=None`` gives the model's default weights: for sd1 the pretrained drawing
    weights shipped with lorahub (copied, float16; the marker says ``"weights":
    "pretrained"``), for the others random weights from seed 0. An int ``seed``
    builds random weights from it (``"weights": "random"``; for sd1 the random
    architecture of :data:`UNET_CONFIG`, for architecture tests).

    The pipeline is written into a temporary sibling folder and renamed into
    place, so ``path`` is either absent, the old build, or the complete new one.
    """
    target = Path(path)
    spec = model(family)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise BaseModelError(f"seed must be a non-negative integer, not {seed!r}")
    say = progress or (lambda _msg: None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        started = time.monotonic()
        if seed is None and spec.pretrained:
            say(f"installing the embedded base model {spec.id} (pretrained weights shipped with lorahub)")
            _install_pretrained(tmp, family)
        else:
            seed = 0 if seed is None else seed
            say(f"building the embedded base model {spec.id} (random weights, seed {seed})")
            pipe = builder(family)(seed)
            say("saving it")
            import transformers

            with _quiet_transformers(transformers):
                pipe.save_pretrained(tmp, safe_serialization=True)
            (tmp / MARKER).write_text(json.dumps(_marker(seed, family), indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")
        if not is_complete(tmp, family):
            raise BaseModelError(f"building the embedded base model left an incomplete folder: {tmp}")
        _fsync_tree(tmp)
        _replace_dir(tmp, target)
        say(f"built {target} in {time.monotonic() - started:.1f} s")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _install_pretrained(folder: Path, family: str) -> None:
    """Copy the shipped pretrained weights of ``family`` into the empty ``folder`` (:func:`_copy_widened`), with
    this model's marker (the drawing base's, renamed: ``id``/``name`` of the embedded model, ``"weights":
    "pretrained"``, ``source``). A shipped file that cannot be read is a one-line :class:`BaseModelError`."""
    from safetensors import SafetensorError

    from ..errors import LorahubError
    from . import drawing

    spec = model(family)
    shipped = drawing.shipped_path()  # a one-line BaseModelError where this installation lacks them
    source = read_marker(shipped) or {}
    for src in sorted(shipped.rglob("*")):
        if src.is_symlink() or not src.is_file() or src.name == MARKER:
            continue
        try:
            _copy_widened(src, folder / src.relative_to(shipped))
        except (LorahubError, SafetensorError, ValueError) as exc:
            raise BaseModelError(f"{drawing.DRAWING_ID}: the shipped {src.relative_to(shipped)} is unreadable "
                                 f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                                 hint="reinstall lorahub") from None
    marker = {**source, "format": MARKER_FORMAT, "id": spec.id, "name": spec.name, "family": spec.family,
              "weights": "pretrained", "source": drawing.DRAWING_ID, "lorahub_version": __version__}
    (folder / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _copy_widened(src: Path, dst: Path) -> None:
    """Copy one file of a pipeline folder, float16 tensors widened to float32 (exactly: every float16 is a
    float32) and a config's float16 ``dtype`` saying float32 (transformers 5 loads a model in its config's
    dtype), so that a plain ``from_pretrained`` of the copy runs on a CPU as every other embedded build does."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from ..adapters.header import read_header

    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".safetensors":
        meta = read_header(src).string_metadata() or None
        save_file({k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in load_file(src).items()},
                  dst, metadata=meta)
    elif src.name == "config.json":
        config = json.loads(src.read_text(encoding="utf-8"))
        for key in ("dtype", "torch_dtype"):
            if config.get(key) == "float16":
                config[key] = "float32"
        dst.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    else:
        shutil.copyfile(src, dst)


def _seeded_components(seed: int, prefix: str, pipeline: str,
                       makers: dict[str, Callable[[Any, Any], Any]]) -> tuple[Any, dict[str, Any]]:
    """(the diffusers class ``pipeline``, name -> module in eval mode): each module made by ``makers[name]``
    (called with diffusers and transformers) right after seeding torch with ``component_seed(seed, prefix +
    name)``, on a forked RNG (the caller's stream is left alone) and with transformers quiet."""
    from ..errors import require

    torch = require("torch", "ml")
    diffusers = require("diffusers", "ml")
    transformers = require("transformers", "ml")

    modules: dict[str, Any] = {}
    with _quiet_transformers(transformers), torch.random.fork_rng(devices=[]):
        pipeline_cls = getattr(diffusers, pipeline)  # (importing it makes transformers chatty)
        for name, make in makers.items():
            torch.manual_seed(component_seed(seed, prefix + name))
            modules[name] = make(diffusers, transformers)
    for module in modules.values():
        module.eval()
    return pipeline_cls, modules


def build_pipeline(seed: int = 0):  # noqa: ANN201 - returns a diffusers pipeline
    """The embedded SD 1.x pipeline in memory (float32, CPU), initialised from ``seed``."""
    pipeline_cls, modules = _seeded_components(seed, "", "StableDiffusionPipeline", {
        "unet": lambda d, _t: d.UNet2DConditionModel(**UNET_CONFIG),
        "vae": lambda d, _t: d.AutoencoderKL(**VAE_CONFIG),
        "text_encoder": lambda _d, t: t.CLIPTextModel(t.CLIPTextConfig(**TEXT_CONFIG)),
    })
    from diffusers import DDIMScheduler  # (there: _seeded_components required it)
    return pipeline_cls(
        **modules,
        tokenizer=build_tokenizer(),
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_xl_pipeline(seed: int = 0):  # noqa: ANN201 - returns a diffusers pipeline
    """The embedded SDXL pipeline in memory (float32, CPU), initialised from ``seed``."""
    pipeline_cls, modules = _seeded_components(seed, "sdxl/", "StableDiffusionXLPipeline", {
        "unet": lambda d, _t: d.UNet2DConditionModel(**SDXL_UNET_CONFIG),
        "vae": lambda d, _t: d.AutoencoderKL(**SDXL_VAE_CONFIG),
        "text_encoder": lambda _d, t: t.CLIPTextModel(t.CLIPTextConfig(**SDXL_TEXT_CONFIG)),
        "text_encoder_2": lambda _d, t: t.CLIPTextModelWithProjection(t.CLIPTextConfig(**SDXL_TEXT2_CONFIG)),
    })
    from diffusers import EulerDiscreteScheduler  # (there: _seeded_components required it)
    tokenizer_2 = build_tokenizer(pad_token="!")
    if tokenizer_2.pad_token_id != SDXL_TEXT2_CONFIG["pad_token_id"]:  # pragma: no cover - guard
        raise BaseModelError(f"the second tokenizer pads with id {tokenizer_2.pad_token_id}, "
                             f"not {SDXL_TEXT2_CONFIG['pad_token_id']}")
    return pipeline_cls(
        **modules,
        tokenizer=build_tokenizer(),
        tokenizer_2=tokenizer_2,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def builder(family: str = FAMILY) -> Callable[[int], Any]:
    """The function building the pipeline of ``family`` in memory from a seed (looked up when called)."""
    return {
        "sd1": build_pipeline,
        "sdxl": build_xl_pipeline,
        "flux": _mmdit.build_flux_pipeline,
        "sd3": _mmdit.build_sd3_pipeline,
    }[model(family).family]


def component_seed(seed: int, component: str) -> int:
    """The torch seed of one component: 63 bits of SHA-256("<seed>:<component>")."""
    digest = hashlib.sha256(f"{seed}:{component}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def tokenizer_vocab() -> dict[str, int]:
    """The byte-level vocabulary of the embedded tokenizer (514 entries)."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for sym in alphabet:
        vocab[sym] = len(vocab)
    for sym in alphabet:
        vocab[sym + "</w>"] = len(vocab)
    return vocab


def build_tokenizer(pad_token: str | None = None):  # noqa: ANN201 - returns a CLIPTokenizer
    """A CLIP tokenizer with :func:`tokenizer_vocab`, no merges and ``model_max_length=77``.

    It pads with ``<|endoftext|>`` (as SD 1.x's), or with ``pad_token`` (SDXL's
    second tokenizer pads with ``"!"``). (Passing ``vocab_file=``/``merges_file=``
    to ``CLIPTokenizer`` is silently ignored by transformers 5; the vocabulary
    must be given as a dict.)
    """
    from transformers import CLIPTokenizer

    vocab = tokenizer_vocab()
    extra = {"pad_token": pad_token} if pad_token is not None else {}
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MODEL_MAX_LENGTH, **extra)
    pad = vocab[pad_token] if pad_token is not None else 1
    if tok.bos_token_id != 0 or tok.eos_token_id != 1 or tok.pad_token_id != pad:  # pragma: no cover - guard
        raise BaseModelError(
            "the locally built CLIP tokenizer has unexpected special ids "
            f"(bos {tok.bos_token_id}, eos {tok.eos_token_id}, pad {tok.pad_token_id})"
        )
    return tok


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def config_summary(family: str = FAMILY) -> dict[str, Any]:
    """A JSON-able summary of the architecture (written to the marker, shown by ``base info``)."""
    if model(family).denoiser == "transformer":
        return _mmdit.config_summary(family)
    if family == "sdxl":
        return {
            "unet": _plain(SDXL_UNET_CONFIG),
            "vae": _plain(SDXL_VAE_CONFIG),
            "text_encoder": dict(SDXL_TEXT_CONFIG),
            "text_encoder_2": dict(SDXL_TEXT2_CONFIG),
            "tokenizer": {"vocab_size": 514, "merges": 0, "model_max_length": MODEL_MAX_LENGTH},
            "tokenizer_2": {"vocab_size": 514, "merges": 0, "model_max_length": MODEL_MAX_LENGTH, "pad_token": "!"},
            "scheduler": {"class": "EulerDiscreteScheduler", **SDXL_SCHEDULER_CONFIG},
            "resolution": MODELS["sdxl"].resolution,
        }
    model(family)
    return {
        "unet": _plain(UNET_CONFIG),
        "vae": _plain(VAE_CONFIG),
        "text_encoder": dict(TEXT_CONFIG),
        "tokenizer": {"vocab_size": 514, "merges": 0, "model_max_length": MODEL_MAX_LENGTH},
        "scheduler": {"class": "DDIMScheduler", **SCHEDULER_CONFIG},
        "resolution": 64,
    }


def _marker(seed: int, family: str = FAMILY) -> dict[str, Any]:
    spec = model(family)
    versions = {}
    for mod in ("torch", "diffusers", "transformers"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = str(getattr(m, "__version__", "?"))
    return {
        "format": MARKER_FORMAT,
        "id": spec.id,
        "name": spec.name,
        "family": spec.family,
        "seed": seed,
        "weights": "random",
        "lorahub_version": __version__,
        "built_with": versions,
        "config": config_summary(family),
    }


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """Silence transformers' advisory logging and progress bars for a moment."""
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    if bars:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


@contextlib.contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """An exclusive lock on ``<target>.lock`` (a no-op where ``fcntl`` is missing)."""
    lock_path = target.parent / f".{target.name}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rely on the atomic rename
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``, replacing an old one."""
    try:
        os.rename(new, target)
        return
    except OSError:
        if not target.exists():
            raise
    # ``target`` exists (old or broken build): move it aside, then swap.
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rmdir(trash)
    os.rename(target, trash)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(trash, target)
        raise
    if trash.is_symlink():
        trash.unlink()
    else:
        shutil.rmtree(trash, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
