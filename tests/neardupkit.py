"""Generated near-duplicates of SD 1.5 LoRA adapters (for the ΔW sketch tests and benchmark).

An **original** is a full kohya SD 1.5 LoRA (the 264 modules and shapes of :mod:`tests.kohyakit`) whose
modules have a decaying spectrum, as trained adapters have (singular values ``0.7^i``, random directions):
``up = U·diag(σ)``, ``down = Vᵀ`` with ``U``, ``V`` random orthonormal, scaled per module. Each original
gets the **variants** a library fills up with, each written by the tool that would write it:

- ``meta``: the same tensors, other metadata (lorahub's own writer);
- ``fp32``, ``bf16``: the same weights in another dtype (the original is float16);
- ``diffusers``: converted by ``lorahub.pipeline.convert`` (kohya -> diffusers/PEFT keys, alpha folded);
- ``rank4``: each module cut to rank 4 by SVD of its factors (alpha = 4);
- ``alpha``: the alpha halved (the same directions at half strength);
- ``strength``: every ``up`` multiplied by 1.5;
- ``subset``: the UNet modules only (the text encoder dropped).

:data:`EXPECTED` names the relation each variant must be reported with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

RANK = 8
VARIANTS = ("meta", "fp32", "bf16", "diffusers", "rank4", "alpha", "strength", "subset")
EXPECTED = {
    "meta": "identical-tensors",
    "fp32": "dtype-change",
    "bf16": "dtype-change",
    "diffusers": "layout-conversion",
    "rank4": "rank-reduction",
    "alpha": "scaled-copy",
    "strength": "scaled-copy",
    "subset": "module-subset",
}


def _encode(values: Any, dtype: str) -> tuple[str, bytes]:
    a = np.asarray(values, dtype="<f4")
    if dtype == "bfloat16":
        # round to nearest even, as torch does
        u = a.view("<u4").astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
        return "BF16", u.tobytes()
    if dtype == "float16":
        return "F16", a.astype("<f2").tobytes()
    return "F32", a.tobytes()


def factors(seed: int, rank: int = RANK) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """``{kohya module name: (up [out, r], down [r, in], conv)}`` of one original."""
    from kohyakit import sd15_modules

    rng = np.random.default_rng(seed)
    sigma = 0.7 ** np.arange(rank)
    out = {}
    for m in sd15_modules():
        u, _ = np.linalg.qr(rng.standard_normal((m.out, rank)))
        v, _ = np.linalg.qr(rng.standard_normal((m.inp, rank)))
        strength = rng.uniform(0.02, 0.2)  # modules differ in how much they change
        out[m.name] = ((u * sigma) * strength, v.T.copy(), m.conv)
    return out


def write(path: Path, mods: dict[str, tuple[np.ndarray, np.ndarray, bool]], *, alpha: float | None = None,
          dtype: str = "float16", metadata: dict[str, str] | None = None) -> Path:
    """A kohya file of ``mods`` (``alpha`` default: the rank, so ΔW = up·down)."""
    from lorahub.adapters.writer import write_safetensors

    tensors: dict[str, tuple[str, list[int], bytes]] = {}
    for name, (up, down, conv) in mods.items():
        r = down.shape[0]
        ds = [r, down.shape[1], 1, 1] if conv else [r, down.shape[1]]
        us = [up.shape[0], r, 1, 1] if conv else [up.shape[0], r]
        code, raw = _encode(down, dtype)
        tensors[f"{name}.lora_down.weight"] = (code, ds, raw)
        code, raw = _encode(up, dtype)
        tensors[f"{name}.lora_up.weight"] = (code, us, raw)
        code, raw = _encode(float(r if alpha is None else alpha), dtype)
        tensors[f"{name}.alpha"] = (code, [], raw)
    md = {"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora",
          "modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.title": path.stem, **(metadata or {})}
    return write_safetensors(path, tensors, md)


def rank_cut(mods: dict[str, tuple[np.ndarray, np.ndarray, bool]], rank: int) -> dict[str, Any]:
    """Each module's best rank-``rank`` approximation (SVD of the factors, not of ΔW)."""
    out = {}
    for name, (up, down, conv) in mods.items():
        qu, ru = np.linalg.qr(up)
        qd, rd = np.linalg.qr(down.T)
        u, s, vt = np.linalg.svd(ru @ rd.T)
        out[name] = ((qu @ u[:, :rank]) * s[:rank], (vt[:rank] @ qd.T), conv)
    return out


def write_family(folder: Path, index: int, *, variants: tuple[str, ...] = VARIANTS) -> dict[str, Path]:
    """The original ``orig{index}`` and its variants in ``folder``: ``{variant or "original": path}``."""
    mods = factors(1000 + index)
    name = f"orig{index}"
    files = {"original": write(folder / f"{name}.safetensors", mods)}
    for v in variants:
        p = folder / f"{name}-{v}.safetensors"
        if v == "meta":
            files[v] = write(p, mods, metadata={"modelspec.title": f"{name} retitled", "ss_tag_frequency": "{}"})
        elif v in ("fp32", "bf16"):
            files[v] = write(p, mods, dtype={"fp32": "float32", "bf16": "bfloat16"}[v])
        elif v == "diffusers":
            from lorahub.pipeline.convert import convert

            files[v] = Path(convert(files["original"], p, format="diffusers").path)
        elif v == "rank4":
            files[v] = write(p, rank_cut(mods, 4))
        elif v == "alpha":
            files[v] = write(p, mods, alpha=RANK / 2)
        elif v == "strength":
            files[v] = write(p, {k: (up * 1.5, d, c) for k, (up, d, c) in mods.items()})
        elif v == "subset":
            files[v] = write(p, {k: m for k, m in mods.items() if k.startswith("lora_unet_")})
        else:
            raise ValueError(v)
    return files
