"""Legacy cloneofsimo ``lora_diffusion`` LoRA files for SD 1.5, written at test time.

The core suite's stand-ins for real cloneofsimo files (the real ones beside the project are extra
checks: tests/adapters/test_inspect.py compares this writer's layout with theirs). The layout is the
one cloneofsimo/lora ``lora_diffusion/lora.py`` ``save_safeloras_with_embeds`` writes (2022-23):

- for each model (``unet``, ``text_encoder``), one pair per injected ``nn.Linear``, numbered ``i`` in
  the order ``model.modules()`` meets them under the target classes: tensors ``<model>:<i>:down``
  ``[r, in]`` and ``<model>:<i>:up`` ``[out, r]``, metadata ``<model>:<i>:rank`` = ``str(r)``;
- metadata ``<model>`` = the JSON list of the target classes (UNet ``CrossAttention``, ``Attention``,
  ``GEGLU``; text encoder ``CLIPAttention``);
- learned token embeddings as plain tensors named by their token (``<s1>``: ``[768]``, float32) with
  metadata ``<s1>`` = ``"<embed>"``.

Keys hold a module's index, not its path (``:`` in every name), so a reader knows a module only by
counting; diffusers and ComfyUI do not load these files.

SD 1.5 order: per transformer block (diffusers' old ``BasicTransformerBlock`` registers ``attn1``,
``ff``, ``attn2``) ``attn1.to_q/k/v/out.0`` (``C -> C``), ``ff.net.0.proj`` (GEGLU, ``C -> 8C``),
``attn2.to_q`` (``C -> C``), ``attn2.to_k/v`` (``768 -> C``), ``attn2.to_out.0``; blocks in module
order: down blocks (2 x 320, 2 x 640, 2 x 1280), up blocks (3 x 1280, 3 x 640, 3 x 320), mid block
(1 x 1280): 144 UNet pairs. Text encoder: ``k_proj``, ``v_proj``, ``q_proj``, ``out_proj`` (768) of
each of CLIP ViT-L's 12 layers: 48 pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

#: transformer-block widths of SD 1.5's UNet in ``modules()`` order (down, up, mid)
SD15_BLOCKS = (320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280)
CROSS = 768
TE_LAYERS, TE_WIDTH = 12, 768


def unet_linears() -> list[tuple[int, int]]:
    """(in, out) of each UNet pair, in cloneofsimo's order."""
    out = []
    for c in SD15_BLOCKS:
        out += [(c, c)] * 4  # attn1 to_q, to_k, to_v, to_out.0
        out.append((c, 8 * c))  # ff.net.0 (GEGLU) proj
        out += [(c, c), (CROSS, c), (CROSS, c), (c, c)]  # attn2
    return out


def text_encoder_linears() -> list[tuple[int, int]]:
    return [(TE_WIDTH, TE_WIDTH)] * (4 * TE_LAYERS)


def write_cloneofsimo(path: Path, *, rank: int = 4, dtype: str = "float16", embeddings: tuple[str, ...] = (),
                      seed: int = 0, text_encoder: bool = True) -> Path:
    """Write a cloneofsimo LoRA for SD 1.5 (random factors) with ``safetensors.numpy``; returns ``path``."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    metadata: dict[str, str] = {}
    models = [("unet", ["CrossAttention", "Attention", "GEGLU"], unet_linears())]
    if text_encoder:
        models.append(("text_encoder", ["CLIPAttention"], text_encoder_linears()))
    for name, classes, linears in models:
        metadata[name] = json.dumps(classes)
        for i, (inp, out) in enumerate(linears):
            tensors[f"{name}:{i}:down"] = (rng.standard_normal((rank, inp)) * 0.05).astype(dtype)
            tensors[f"{name}:{i}:up"] = (rng.standard_normal((out, rank)) * 0.05).astype(dtype)
            metadata[f"{name}:{i}:rank"] = str(rank)
    for token in embeddings:
        tensors[token] = rng.standard_normal(TE_WIDTH).astype(np.float32)
        metadata[token] = "<embed>"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path
