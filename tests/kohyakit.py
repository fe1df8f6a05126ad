"""kohya-layout LoRA files for SD 1.5 and SDXL, built at test time with real key names and shapes.

The core suite's stand-ins for real kohya files (../shared has two as shape manifests; the tests
comparing against them are extra checks). Written by lorahub's own code: SD 1.5 names come from
the exporter's kohya mapping (:func:`lorahub.training.export.kohya_module_name`), the tensors from
:func:`lorahub.adapters.writer.write_safetensors`, the embedded tensor hash from
:func:`lorahub.training.export.tensor_hash`.

The layout is kohya's (kohya-ss/sd-scripts ``networks/lora.py``, ``LoRANetwork.__init__`` and its
``create_modules``; ``LoRAModule.__init__`` for the tensors):

- every ``Linear`` and ``Conv2d`` inside a module of class ``Transformer2DModel`` (UNet,
  ``UNET_TARGET_REPLACE_MODULE``) or ``CLIPAttention``/``CLIPMLP`` (text encoders,
  ``TEXT_ENCODER_TARGET_REPLACE_MODULE``) gets ``lora_name = prefix + "." + name + "." + child_name``
  with dots replaced by ``_``; prefixes ``lora_unet``, ``lora_te``, and ``lora_te1``/``lora_te2``
  for SDXL's two text encoders;
- per module ``lora_down.weight`` ``[r, in]`` (a Conv2d: ``[r, in, kh, kw]``), ``lora_up.weight``
  ``[out, r]`` (``[out, r, 1, 1]``) and a scalar ``alpha``.

SD 1.x paths are diffusers' (``down_blocks_1_attentions_0_...``; ``proj_in``/``proj_out`` are 1x1
convolutions); SDXL paths are those of kohya's own UNet (``library/sdxl_original_unet.py``:
``input_blocks_{4,5,7,8}_1_``, ``middle_block_1_``, ``output_blocks_{0..5}_1_``, linear projections),
as the reference notes on LoRA file layouts describe them ("Key formats and detection", "Base model
family"). Widths: SD 1.5 UNet channels 320/640/1280, cross-attention 768, CLIP ViT-L 768 x 12
layers (MLP 3072); SDXL channels 640/1280 with 2/10 transformer blocks, cross-attention 2048,
CLIP ViT-L plus OpenCLIP ViT-bigG 1280 x 32 layers (MLP 5120).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("sd1", "sdxl", "sdxl-tiny")

#: SDXL layouts: transformer blocks (SGM block, channels, depth) of the input, middle and output blocks, the
#: cross-attention width and the two CLIP encoders (layers, width, MLP width). "sdxl" is SDXL base 1.0;
#: "sdxl-tiny" the embedded tiny SDXL base (lorahub/base/embedded.py: channels 64/128, depth 1/2, cross-attention
#: 32 + 64, encoders 4 x 32 and 4 x 64) - the same blocks at other widths.
SDXL_LAYOUTS = {
    "sdxl": {"input": ((4, 640, 2), (5, 640, 2), (7, 1280, 10), (8, 1280, 10)), "middle": (1280, 10),
             "output": tuple((b, 1280, 10) if b < 3 else (b, 640, 2) for b in range(6)), "cross": 2048,
             "te1": (12, 768, 3072), "te2": (32, 1280, 5120)},
    "sdxl-tiny": {"input": ((4, 64, 1), (5, 64, 1), (7, 128, 2), (8, 128, 2)), "middle": (128, 2),
                  "output": tuple((b, 128, 2) if b < 3 else (b, 64, 1) for b in range(6)), "cross": 96,
                  "te1": (4, 32, 128), "te2": (4, 64, 256)},
}


@dataclass(frozen=True)
class KohyaModule:
    """One LoRA module: kohya's name and the width of the layer it adapts."""

    name: str
    component: str  # unet, text_encoder, text_encoder_2
    inp: int
    out: int
    conv: bool = False  # a 1x1 Conv2d (SD 1.x proj_in/proj_out)

    def shapes(self, rank: int) -> tuple[list[int], list[int]]:
        """(lora_down, lora_up) shapes at ``rank``."""
        if self.conv:
            return [rank, self.inp, 1, 1], [self.out, rank, 1, 1]
        return [rank, self.inp], [self.out, rank]


def _transformer(path: str, ch: int, cross: int, depth: int, *, conv_proj: bool) -> list[tuple[str, int, int, bool]]:
    """The Linear/Conv2d children of one Transformer2DModel at ``path``: (path, in, out, conv)."""
    out = [(f"{path}.proj_in", ch, ch, conv_proj)]
    for b in range(depth):
        tb = f"{path}.transformer_blocks.{b}"
        out += [(f"{tb}.attn1.{p}", ch, ch, False) for p in ("to_q", "to_k", "to_v", "to_out.0")]
        out += [(f"{tb}.attn2.to_q", ch, ch, False), (f"{tb}.attn2.to_k", cross, ch, False),
                (f"{tb}.attn2.to_v", cross, ch, False), (f"{tb}.attn2.to_out.0", ch, ch, False)]
        out += [(f"{tb}.ff.net.0.proj", ch, ch * 8, False), (f"{tb}.ff.net.2", ch * 4, ch, False)]  # GEGLU
    out.append((f"{path}.proj_out", ch, ch, conv_proj))
    return out


def _clip(layers: int, width: int, mlp: int) -> list[tuple[str, int, int]]:
    """The CLIPAttention/CLIPMLP Linear children, transformers 4 paths (``text_model.encoder...``)."""
    out = []
    for i in range(layers):
        layer = f"text_model.encoder.layers.{i}"
        out += [(f"{layer}.self_attn.{p}", width, width) for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
        out += [(f"{layer}.mlp.fc1", width, mlp), (f"{layer}.mlp.fc2", mlp, width)]
    return out


def sd15_modules() -> list[KohyaModule]:
    """The 264 modules of a full kohya LoRA for SD 1.5 (192 UNet, 72 text encoder)."""
    from lorahub.training.export import kohya_module_name

    paths = []
    for i, ch in enumerate((320, 640, 1280)):  # CrossAttnDownBlock2D x 3, 2 attentions each
        for j in range(2):
            paths += _transformer(f"down_blocks.{i}.attentions.{j}", ch, 768, 1, conv_proj=True)
    paths += _transformer("mid_block.attentions.0", 1280, 768, 1, conv_proj=True)
    for i, ch in ((1, 1280), (2, 640), (3, 320)):  # CrossAttnUpBlock2D x 3, 3 attentions each
        for j in range(3):
            paths += _transformer(f"up_blocks.{i}.attentions.{j}", ch, 768, 1, conv_proj=True)
    mods = [KohyaModule(kohya_module_name("unet", p), "unet", i, o, c) for p, i, o, c in paths]
    mods += [KohyaModule(kohya_module_name("text_encoder", p), "text_encoder", i, o) for p, i, o in _clip(12, 768, 3072)]
    return mods


def sdxl_modules(layout: str = "sdxl") -> list[KohyaModule]:
    """The modules of a full kohya LoRA for SDXL: 986 for SDXL base 1.0 (722 UNet, 72 + 192 text encoders),
    240 for the embedded tiny SDXL base (``layout="sdxl-tiny"``: 192 UNet, 24 + 24)."""
    spec = SDXL_LAYOUTS[layout]
    cross = spec["cross"]
    paths = []
    for block, ch, depth in spec["input"]:
        paths += _transformer(f"input_blocks.{block}.1", ch, cross, depth, conv_proj=False)
    ch, depth = spec["middle"]
    paths += _transformer("middle_block.1", ch, cross, depth, conv_proj=False)
    for block, ch, depth in spec["output"]:
        paths += _transformer(f"output_blocks.{block}.1", ch, cross, depth, conv_proj=False)
    mods = [KohyaModule("lora_unet_" + p.replace(".", "_"), "unet", i, o) for p, i, o, _ in paths]
    for prefix, component, (layers, width, mlp) in (("lora_te1", "text_encoder", spec["te1"]),
                                                    ("lora_te2", "text_encoder_2", spec["te2"])):
        mods += [KohyaModule(f"{prefix}_" + p.replace(".", "_"), component, i, o) for p, i, o in _clip(layers, width, mlp)]
    return mods


def modules(family: str) -> list[KohyaModule]:
    if family not in FAMILIES:
        raise ValueError(f"no kohya layout for {family!r} here (known: {', '.join(FAMILIES)})")
    return sd15_modules() if family == "sd1" else sdxl_modules(family)


_META = {
    "sd1": {"ss_v2": "False", "ss_base_model_version": "sd_v1", "modelspec.architecture": "stable-diffusion-v1/lora",
            "modelspec.implementation": "diffusers", "modelspec.resolution": "512x512"},
    "sdxl": {"ss_v2": "False", "ss_base_model_version": "sdxl_base_v1-0",
             "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
             "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
             "modelspec.resolution": "1024x1024"},
}
_META["sdxl-tiny"] = {**_META["sdxl"], "modelspec.resolution": "128x128"}


def _encode(values: Any, dtype: str) -> bytes:
    import numpy as np

    if dtype == "bfloat16":  # the top half of a float32
        return (np.asarray(values, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
    return np.asarray(values, dtype="<f2" if dtype == "float16" else "<f4").tobytes()


def write_kohya(path: str | Path, family: str = "sd1", *, rank: int = 8, alpha: float | None = None,
                dtype: str = "float16", seed: int = 0, metadata: dict[str, str] | None = None) -> Path:
    """A full kohya LoRA for ``family`` (sd1, sdxl or sdxl-tiny) at ``rank``, with kohya's minimum ``ss_*``
    metadata, ModelSpec keys and the tensor hash kohya embeds (``sshs_model_hash``).

    Random tensors (``lora_down`` ~ N(0, 1/in), ``lora_up`` ~ N(0, 1e-4)), ``dtype`` float16,
    bfloat16 or float32; same arguments, same bytes.
    """
    import numpy as np

    from lorahub.adapters.writer import write_safetensors
    from lorahub.training.export import tensor_hash

    alpha = float(rank if alpha is None else alpha)
    code = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}[dtype]
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[str, list[int], bytes]] = {}
    for m in modules(family):
        down, up = m.shapes(rank)
        tensors[f"{m.name}.lora_down.weight"] = (code, down, _encode(rng.normal(0, m.inp ** -0.5, down), dtype))
        tensors[f"{m.name}.lora_up.weight"] = (code, up, _encode(rng.normal(0, 1e-2, up), dtype))
        tensors[f"{m.name}.alpha"] = (code, [], _encode(alpha, dtype))
    md = {
        **_META[family],
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_output_name": Path(path).stem,
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.title": Path(path).stem,
        "modelspec.prediction_type": "epsilon",
        "sshs_model_hash": tensor_hash(tensors),  # write_safetensors lays the data out in name order
        **(metadata or {}),
    }
    return write_safetensors(path, tensors, md)


def read_layout(path: str | Path) -> dict[str, dict[str, list[int]]]:
    """module name -> {suffix: shape} of a kohya file (``lora_down.weight``, ``lora_up.weight``, ``alpha``)."""
    from lorahub.adapters.header import read_header

    out: dict[str, dict[str, list[int]]] = {}
    for key, info in read_header(path).tensors.items():
        module, _, suffix = key.partition(".")
        out.setdefault(module, {})[suffix] = list(info.shape)
    return out


def manifest_layout(manifest: str | Path) -> dict[str, dict[str, list[int]]]:
    """The same for a key -> {shape, dtype} manifest (../shared/fixtures/shapes)."""
    out: dict[str, dict[str, list[int]]] = {}
    for key, entry in json.loads(Path(manifest).read_text()).items():
        module, _, suffix = key.partition(".")
        out.setdefault(module, {})[suffix] = [int(d) for d in entry["shape"]]
    return out


__all__ = ["KohyaModule", "manifest_layout", "modules", "read_layout", "sd15_modules", "sdxl_modules", "write_kohya"]
