"""Synthetic LoRA adapters: small random LoRAs with real key names and real metadata.

For the demo and the tests: :func:`make_adapter` writes a LoRA for a base model
(the embedded tiny SD 1.x model by default) whose shapes come from the base's
own UNet (and text encoder) safetensors headers, so it always fits. It needs
numpy, not torch.

Two layouts:

- ``fmt="diffusers"``: peft keys with the diffusers prefixes, as
  ``StableDiffusionLoraLoaderMixin.save_lora_weights`` writes them:
  ``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight``
  (``[r, in]``) and ``.lora_B.weight`` (``[out, r]``); text encoder modules as
  ``text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight``
  (SDXL: also ``text_encoder_2.text_model...``).
  Metadata: ``format=pt`` and ``lora_adapter_metadata`` (JSON of the peft
  ``LoraConfig`` fields, keys prefixed ``unet.``/``text_encoder.``) so that
  alpha != rank survives loading.
- ``fmt="kohya"``: kohya-ss/A1111 names derived from the module paths:
  ``lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight``,
  ``.lora_up.weight`` and a scalar ``.alpha``; text encoder modules as
  ``lora_te_text_model_encoder_layers_0_self_attn_q_proj`` (the real-world SD 1.x
  spelling). Metadata: the kohya minimum ``ss_*`` keys and a tensor hash.
  On an SDXL base the names are kohya's SDXL ones: the original (SGM) UNet's
  block paths (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``)
  and ``lora_te1_``/``lora_te2_`` for the two text encoders.

Both carry ModelSpec keys (``modelspec.*``) and load with diffusers'
``pipe.load_lora_weights(path)``.

The numbers: ``lora_A``/``lora_down`` ~ N(0, 1/fan_in), ``lora_B``/``lora_up``
~ N(0, scale^2 / r) * r/alpha, so the effective update
``(alpha/r) * B @ A`` has entries of size about ``scale / sqrt(fan_in)``,
the size of the base weights themselves at ``scale=1``, whatever rank and
alpha are. Same arguments, same seed -> byte-identical file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters.header import read_header
from ..errors import BaseModelError, UsageError

FORMATS = ("diffusers", "kohya")
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")

#: Default file names when ``path`` is a folder.
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"

_FAMILY_META = {
    "sd1": {"ss_base_model_version": "sd_v1", "ss_v2": "False", "arch": "stable-diffusion-v1"},
    "sd2": {"ss_base_model_version": "sd_v2", "ss_v2": "True", "arch": "stable-diffusion-v2-512"},
    "sdxl": {"ss_base_model_version": "sdxl_base_v1-0", "ss_v2": "False", "arch": "stable-diffusion-xl-v1-base"},
}
#: modelspec architectures of the transformer families (diffusers layout only; sd-scripts' sai_model_spec names).
_MMDIT_ARCH = {"flux": "flux-1-dev", "sd3": "stable-diffusion-3.5-medium"}


@dataclass(frozen=True)
class Module:
    """A target module of the base model: its path and weight shape ``[out, in, (kh, kw)]``."""

    component: str  # "unet" or "transformer", "text_encoder", "text_encoder_2"
    path: str  # diffusers/transformers module path, e.g. "down_blocks.0.attentions.0...attn1.to_q"
    shape: tuple[int, ...]

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[1:])


def _weight_headers(folder: Path, component: str) -> dict[str, tuple[int, ...]]:
    sub = folder / component
    files = sorted(sub.glob("*.safetensors"))
    plain = [f for f in files if f.name.count(".") == 1 or "-of-" in f.name]  # no variants (.fp16.)
    files = plain or files
    if not files:
        raise BaseModelError(f"{sub}: no .safetensors weights to take the shapes from")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        header = read_header(f)
        for name, info in header.tensors.items():
            shapes[name] = info.shape
    return shapes


def _matches(path: str, targets: Sequence[str]) -> bool:
    return any(path == t or path.endswith("." + t) for t in targets)


def target_modules(
    base_folder: str | os.PathLike[str],
    targets: Sequence[str] = DEFAULT_TARGETS,
    text_encoder_targets: Sequence[str] = (),
) -> list[Module]:
    """The modules of the pipeline in ``base_folder`` whose paths end with one of ``targets``.

    Read from the safetensors headers: linear (2-D) and convolution (4-D)
    weights only. UNet (Flux/SD3: transformer) modules first, then the CLIP
    text encoders' (both of SDXL and SD3; T5 encoders are left out), each sorted.
    """
    folder = Path(base_folder)
    out: list[Module] = []
    denoiser = "transformer" if (folder / "transformer").is_dir() and not (folder / "unet").is_dir() else "unet"
    encoders = [(e, text_encoder_targets) for e in ("text_encoder", "text_encoder_2") if _is_clip(folder / e)]
    for component, wanted in ((denoiser, targets), *encoders):
        if not wanted:
            continue
        shapes = _weight_headers(folder, component)
        found = []
        for name, shape in shapes.items():
            if not name.endswith(".weight") or len(shape) not in (2, 4):
                continue
            path = name[: -len(".weight")]
            if component != denoiser:
                path = path.removeprefix("text_model.")
            if _matches(path, wanted):
                found.append(Module(component, path, tuple(shape)))
        if not found:
            raise UsageError(f"no {component} module of {folder} matches the targets {', '.join(wanted)}")
        out.extend(sorted(found, key=lambda m: m.path))
    return out


def _is_clip(sub: Path) -> bool:
    """Is ``sub`` a CLIP text encoder folder (not T5, not absent)?"""
    if not sub.is_dir():
        return False
    try:
        config = json.loads((sub / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return sub.name == "text_encoder"  # (as before: SD 1.x/SDXL folders without a readable config)
    return isinstance(config, dict) and str(config.get("model_type", "clip_text_model")).startswith("clip")


def _base_folder(base: Any) -> tuple[Path, str | None, str]:
    """(folder, family, display name) of the base the adapter is for."""
    from .resolve import BaseRef, resolve_base

    ref = base if isinstance(base, BaseRef) else resolve_base(base)
    if ref.kind == "single_file":
        if not ref.config:
            raise BaseModelError(f"{ref.location}: synthetic adapters need a diffusers folder (pass base_config)")
        return Path(ref.config), ref.family, ref.name
    if ref.path is None:
        raise BaseModelError(f"{ref.name}: not downloaded")
    return ref.path, ref.family, ref.name


def kohya_name(module: Module, family: str | None = None, unet_config: Mapping[str, Any] | None = None) -> str:
    """``lora_unet_<path with _>`` or ``lora_te_text_model_<path with _>``; on SDXL (``family="sdxl"``)
    the SGM UNet path for ``unet_config`` and ``lora_te1_``/``lora_te2_``
    (:func:`lorahub.adapters.layouts.kohya_name`)."""
    if family == "sdxl":
        from ..adapters.layouts import kohya_name as layout_name

        return layout_name(diffusers_name(module), "sdxl", dict(unet_config) if unet_config else None)
    flat = module.path.replace(".", "_")
    if module.component == "unet":
        return f"lora_unet_{flat}"
    return f"lora_te_text_model_{flat}"


def diffusers_name(module: Module) -> str:
    """``unet.<path>`` (``transformer.<path>``), ``text_encoder.text_model.<path>`` (the real-world SD 1.x
    spelling) or ``text_encoder_2.text_model.<path>``."""
    if module.component in ("unet", "transformer"):
        return f"{module.component}.{module.path}"
    return f"{module.component}.text_model.{module.path}"


def make_adapter(
    path: str | os.PathLike[str],
    *,
    base: Any = None,
    rank: int = 4,
    alpha: float | None = None,
    seed: int = 0,
    fmt: str = "diffusers",
    targets: Sequence[str] = DEFAULT_TARGETS,
    text_encoder: bool | Sequence[str] = False,
    scale: float = 1.0,
    dtype: str = "float32",
    trigger: str | None = None,
    title: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a random LoRA for ``base`` at ``path`` and return the file path.

    ``base``: anything :func:`~lorahub.base.resolve.resolve_base` accepts (default:
    the embedded model, built on demand), or a :class:`BaseRef`. ``rank`` and
    ``alpha`` (default: ``rank``) are written into the file; ``scale`` sets
    the size of the update relative to the base weights (see the module
    docstring). ``targets``: UNet module name endings. ``text_encoder``:
    ``True`` for the q/k/v/out projections of the text encoder (both encoders of
    an SDXL base), or a list of endings. ``trigger`` sets ``modelspec.trigger_phrase`` and (kohya)
    ``ss_tag_frequency``; ``title`` sets ``modelspec.title`` and
    ``ss_output_name`` (default: the file stem). ``metadata`` is merged last.
    If ``path`` is an existing folder the file is written inside it
    (``pytorch_lora_weights.safetensors`` for diffusers, ``<title>.safetensors``
    for kohya).
    """
    import numpy as np

    from ..adapters.writer import write_safetensors

    if fmt not in FORMATS:
        raise UsageError(f"unknown adapter format '{fmt}'", hint=f"use one of {', '.join(FORMATS)}")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise UsageError(f"rank must be a positive integer, not {rank!r}")
    alpha = float(rank if alpha is None else alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise UsageError(f"alpha must be a positive number, not {alpha!r}")
    if not math.isfinite(scale) or scale < 0:
        raise UsageError(f"scale must be a non-negative number, not {scale!r}")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise UsageError(f"dtype must be float32, float16 or bfloat16, not {dtype!r}")
    te_targets: Sequence[str] = (
        TEXT_ENCODER_TARGETS if text_encoder is True else (() if text_encoder is False else tuple(text_encoder))
    )

    folder, family, base_name = _base_folder(base)
    family = family or "sd1"
    if fmt == "kohya" and family not in _FAMILY_META:
        raise UsageError(f"kohya names are implemented for SD 1.x/2.x and SDXL bases, not {family}",
                         hint="write the diffusers layout and convert it (lorahub convert --format kohya)")
    unet_config = _unet_config(folder) if family == "sdxl" else None
    modules = target_modules(folder, targets, te_targets)
    too_small = [m for m in modules if rank > min(m.shape[0], m.fan_in)]
    if too_small:
        raise UsageError(f"rank {rank} exceeds the size of {too_small[0].path} {list(too_small[0].shape)}")

    out = Path(path)
    if out.is_dir():
        out = out / (DIFFUSERS_WEIGHT_NAME if fmt == "diffusers" else f"{title or 'synthetic_lora'}.safetensors")
    title = title or out.stem

    rng = np.random.default_rng(seed)
    arrays: dict[str, Any] = {}
    for m in modules:
        out_dim = m.shape[0]
        down_shape = (rank, *m.shape[1:])
        up_shape = (out_dim, rank) + ((1, 1) if len(m.shape) == 4 else ())
        down = rng.standard_normal(down_shape) / math.sqrt(m.fan_in)
        up = rng.standard_normal(up_shape) * (scale / math.sqrt(rank)) * (rank / alpha)
        if fmt == "kohya":
            name = kohya_name(m, family, unet_config)
            arrays[f"{name}.lora_down.weight"] = down
            arrays[f"{name}.lora_up.weight"] = up
            arrays[f"{name}.alpha"] = np.asarray(alpha)
        else:
            name = diffusers_name(m)
            arrays[f"{name}.lora_A.weight"] = down
            arrays[f"{name}.lora_B.weight"] = up
    tensors = {name: _encode(arr, dtype) for name, arr in arrays.items()}

    md = _metadata(
        fmt=fmt, family=family, rank=rank, alpha=alpha, title=title, trigger=trigger, base_name=base_name,
        seed=seed, targets=targets, te_targets=te_targets, tensors=tensors, resolution=_resolution(folder),
    )
    md.update(metadata or {})
    return write_safetensors(out, tensors, md)


def _encode(arr: Any, dtype: str) -> tuple[str, tuple[int, ...], bytes]:
    """(safetensors dtype, shape, little-endian bytes) of a float64 array in ``dtype``."""
    import numpy as np

    if dtype == "bfloat16":  # numpy has no bfloat16: round float32 bits to nearest even
        bits = np.ascontiguousarray(arr, dtype="<f4").view("<u4")
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
        return "BF16", tuple(arr.shape), rounded.tobytes()
    code = {"float32": ("F32", "<f4"), "float16": ("F16", "<f2")}[dtype]
    return code[0], tuple(arr.shape), np.ascontiguousarray(arr, dtype=code[1]).tobytes()


def _unet_config(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _resolution(folder: Path) -> int:
    from .embedded import read_marker

    marked = ((read_marker(folder) or {}).get("config") or {}).get("resolution")
    if isinstance(marked, int) and not isinstance(marked, bool) and marked > 0:
        return marked
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return 512


def _tensor_hash(tensors: Mapping[str, tuple[str, Any, bytes]]) -> str:
    """SHA-256 of the data region as :func:`write_safetensors` lays it out (sorted names, packed)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(tensors[name][2])
    return h.hexdigest()


def _metadata(
    *,
    fmt: str,
    family: str,
    rank: int,
    alpha: float,
    title: str,
    trigger: str | None,
    base_name: str,
    seed: int,
    targets: Sequence[str],
    te_targets: Sequence[str],
    tensors: Mapping[str, tuple[str, Any, bytes]],
    resolution: int,
) -> dict[str, str]:
    fam = _FAMILY_META.get(family, _FAMILY_META["sd1"])
    md: dict[str, str] = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": f"{_MMDIT_ARCH.get(family, fam['arch'])}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models"
        if fmt == "kohya" and family == "sdxl" else "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        **({} if family in _MMDIT_ARCH else {"modelspec.prediction_type": "epsilon"}),
        "modelspec.description": f"synthetic random LoRA (rank {rank}, seed {seed}) for {base_name}, made by lorahub",
    }
    if trigger:
        md["modelspec.trigger_phrase"] = trigger
    if fmt == "kohya":
        md.update(
            {
                "ss_base_model_version": fam["ss_base_model_version"],
                "ss_v2": fam["ss_v2"],
                "ss_network_module": "networks.lora",
                "ss_network_dim": str(rank),
                "ss_network_alpha": str(float(alpha)),
                "ss_network_args": "{}",
                "ss_output_name": title,
                "ss_sd_model_name": base_name,
                "ss_seed": str(seed),
                "ss_resolution": f"({resolution}, {resolution})",
                "sshs_model_hash": _tensor_hash(tensors),
            }
        )
        if trigger:
            tags = {trigger.lower(): 12, "simple background": 7, "outdoors": 3}
            md["ss_tag_frequency"] = json.dumps({f"10_{trigger}": tags})
            md["ss_num_train_images"] = "120"
    else:
        md["format"] = "pt"
        config: dict[str, Any] = {}
        encoders = ("text_encoder", "text_encoder_2") if family in ("sdxl", "sd3") else ("text_encoder",)
        denoiser = "transformer" if family in _MMDIT_ARCH else "unet"
        for prefix, wanted in ((denoiser, targets), *((e, te_targets) for e in encoders)):
            if not wanted:
                continue
            peft = {
                "r": rank,
                "lora_alpha": alpha if not float(alpha).is_integer() else int(alpha),
                "target_modules": sorted(wanted),
                "rank_pattern": {},
                "alpha_pattern": {},
                "lora_dropout": 0.0,
                "bias": "none",
                "use_rslora": False,
                "use_dora": False,
                "init_lora_weights": True,
            }
            config.update({f"{prefix}.{k}": v for k, v in peft.items()})
        md["lora_adapter_metadata"] = json.dumps(config, indent=2, sort_keys=True)
    return md


#: The adapters an empty catalogue starts with (an exported Space shows them offline, on a CPU):
#: (file stem, format, rank, seed, trigger word, title). Small and random, for the embedded SD 1.x base.
DEMO_ADAPTERS: tuple[tuple[str, str, int, int, str, str], ...] = (
    ("inkwash_style", "kohya", 4, 11, "inkwash", "Ink wash style"),
    ("neon_glow", "kohya", 8, 12, "neonglow", "Neon glow"),
    ("pastel_dream", "diffusers", 4, 13, "pasteldream", "Pastel dream"),
    ("woodcut_print", "kohya", 4, 14, "woodcut", "Woodcut print"),
    ("retro_poster", "diffusers", 8, 15, "retroposter", "Retro poster"),
    ("clay_figure", "kohya", 4, 16, "clayfig", "Clay figure"),
)


def write_demo_adapters(folder: str | os.PathLike[str], *, base: Any = None) -> list[Path]:
    """Write the demo adapters of ``base`` into ``folder``, the same bytes every time; files already there are
    kept. Returns their paths. On the drawing base (:mod:`lorahub.base.drawing`, and the embedded SD 1.x base,
    which holds its weights): its shipped trained adapters (a heart, a checkered texture, a sunset) with their
    preview images; on any other, or none given: :data:`DEMO_ADAPTERS`, random adapters of ``base`` (default
    the embedded model)."""
    from . import drawing
    from .resolve import BaseRef, resolve_base

    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = base if isinstance(base, BaseRef) else resolve_base(base, download=False, build=False) if base else None
    if drawing.is_drawing_ref(ref):
        paths = []
        for src in drawing.demo_adapters():
            for f in (src, src.with_name(src.stem + ".preview.png")):
                if f.is_file() and not (out_dir / f.name).is_file():
                    shutil.copyfile(f, out_dir / f.name)
            paths.append(out_dir / src.name)
        return paths
    paths = []
    for stem, fmt, rank, seed, trigger, title in DEMO_ADAPTERS:
        path = out_dir / f"{stem}.safetensors"
        if not path.is_file():
            make_adapter(path, base=base, rank=rank, seed=seed, fmt=fmt, trigger=trigger, title=title, scale=3.0,
                         metadata={"modelspec.description": f"{title}: a demo adapter of lorahub's embedded base "
                                                            f"(random weights). Trigger word: {trigger}."})
        paths.append(path)
    return paths
