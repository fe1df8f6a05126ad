"""Flux.1 and SD3 LoRA files in every layout in the wild, with random factors and the update each module means.

Each builder writes one file (real key names, test-size widths unless asked otherwise) and returns the
update it describes per diffusers module (``transformer.transformer_blocks.0.attn.to_q`` -> ``[out, in]``),
computed here from the tensors written, with this file's own tables of which rows of a fused module are
which diffusers module. The tables are written from the models, not from lorahub:

- Flux.1: black-forest-labs/flux ``src/flux/modules/layers.py`` (``DoubleStreamBlock``: ``img_attn.qkv`` is
  q, k, v stacked; ``SingleStreamBlock.linear1`` is q, k, v and the 4 x hidden MLP; ``linear2`` reads
  attention and MLP concatenated) and diffusers ``loaders/single_file_utils.py``
  ``convert_flux_transformer_checkpoint_to_diffusers`` (which diffusers module each original one becomes;
  ``final_layer.adaLN_modulation.1`` is ``norm_out.linear`` with shift and scale swapped, ``swap_scale_shift``).
- SD3: diffusers ``convert_sd3_transformer_checkpoint_to_diffusers`` (``joint_blocks.N.x_block.attn.qkv`` ->
  ``attn.to_{q,k,v}``, ``context_block`` -> ``add_{q,k,v}_proj``/``to_add_out``/``ff_context``/
  ``norm1_context``, ``x_block.attn2`` -> ``attn2`` in SD 3.5 Medium's dual-attention blocks; the last
  block's ``context_block.adaLN_modulation.1`` is swapped as the final layer's is).
- Layouts: kohya ``networks/lora_flux.py`` / ``lora_sd3.py`` (``lora_unet_`` + the original path, dots as
  ``_``; ``lora_te1_`` CLIP-L, ``lora_te2_`` CLIP-G, ``lora_te3_`` T5; ``lora_down``/``lora_up``/``alpha``),
  ComfyUI/ai-toolkit (``diffusion_model.`` + the dotted path, ``lora_A``/``lora_B``, no alpha), XLabs-AI/x-flux
  (``double_blocks.N.processor.qkv_lora1``, ``proj_lora1``, ``*_lora2`` for the text stream, ``down``/``up``),
  diffusers/PEFT (``transformer.`` + diffusers path, ``lora_adapter_metadata`` alphas), OneTrainer
  (``lora_transformer_`` + diffusers path as ``_``, ``lora_te2_`` for Flux's T5), LyCORIS LoKr with BFL names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lorahub.base import embedded_mmdit as _bases

Tensor = torch.Tensor

# --------------------------------------------------------------------------------------------- test-size models

#: A FluxTransformer2DModel of Flux.1's structure at test size: hidden 32 (2 heads x 16); the embedded Flux base's
#: (lorahub.base.embedded_mmdit), so these files load onto it.
FLUX_TINY = dict(_bases.FLUX_TRANSFORMER_CONFIG)
#: An SD3Transformer2DModel at test size: hidden 32, 3 joint blocks, the first with SD 3.5 Medium's attn2 (the
#: embedded SD3 base's).
SD3_TINY = dict(_bases.SD3_TRANSFORMER_CONFIG)
H = FLUX_TINY["num_attention_heads"] * FLUX_TINY["attention_head_dim"]
CLIP_L_WIDTH, CLIP_G_WIDTH = _bases.CLIP_L_CONFIG["hidden_size"], _bases.CLIP_G_CONFIG["hidden_size"]
T5_WIDTH = _bases.T5_CONFIG["d_model"]


def tiny_flux() -> Any:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(**FLUX_TINY)


def tiny_sd3() -> Any:
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(**SD3_TINY)


def tiny_clip(width: int, projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=100, max_position_embeddings=16, projection_dim=width, bos_token_id=0,
                         eos_token_id=1, pad_token_id=1)
    torch.manual_seed(1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


# --------------------------------------------------------------------------------------------- the oracle tables

#: Flux.1 original module -> [(diffusers module, first row, last row) in units of hidden, ...], input width.
FLUX_ORIGINAL: dict[str, tuple[list[tuple[str, int, int]], int]] = {
    "double_blocks.{i}.img_attn.qkv": ([("transformer_blocks.{i}.attn.to_q", 0, 1), ("transformer_blocks.{i}.attn.to_k", 1, 2),
                                        ("transformer_blocks.{i}.attn.to_v", 2, 3)], 1),
    "double_blocks.{i}.img_attn.proj": ([("transformer_blocks.{i}.attn.to_out.0", 0, 1)], 1),
    "double_blocks.{i}.img_mlp.0": ([("transformer_blocks.{i}.ff.net.0.proj", 0, 4)], 1),
    "double_blocks.{i}.img_mlp.2": ([("transformer_blocks.{i}.ff.net.2", 0, 1)], 4),
    "double_blocks.{i}.img_mod.lin": ([("transformer_blocks.{i}.norm1.linear", 0, 6)], 1),
    "double_blocks.{i}.txt_attn.qkv": ([("transformer_blocks.{i}.attn.add_q_proj", 0, 1),
                                        ("transformer_blocks.{i}.attn.add_k_proj", 1, 2),
                                        ("transformer_blocks.{i}.attn.add_v_proj", 2, 3)], 1),
    "double_blocks.{i}.txt_attn.proj": ([("transformer_blocks.{i}.attn.to_add_out", 0, 1)], 1),
    "double_blocks.{i}.txt_mlp.0": ([("transformer_blocks.{i}.ff_context.net.0.proj", 0, 4)], 1),
    "double_blocks.{i}.txt_mlp.2": ([("transformer_blocks.{i}.ff_context.net.2", 0, 1)], 4),
    "double_blocks.{i}.txt_mod.lin": ([("transformer_blocks.{i}.norm1_context.linear", 0, 6)], 1),
    "single_blocks.{i}.linear1": ([("single_transformer_blocks.{i}.attn.to_q", 0, 1),
                                   ("single_transformer_blocks.{i}.attn.to_k", 1, 2),
                                   ("single_transformer_blocks.{i}.attn.to_v", 2, 3),
                                   ("single_transformer_blocks.{i}.proj_mlp", 3, 7)], 1),
    "single_blocks.{i}.linear2": ([("single_transformer_blocks.{i}.proj_out", 0, 1)], 5),
    "single_blocks.{i}.modulation.lin": ([("single_transformer_blocks.{i}.norm.linear", 0, 3)], 1),
    "time_in.out_layer": ([("time_text_embed.timestep_embedder.linear_2", 0, 1)], 1),
    "final_layer.adaLN_modulation.1": ([("norm_out.linear", 0, 2)], 1),  # halves swapped
}
#: Top-level Flux.1 modules whose input is not the hidden width: (diffusers module, input width at test size).
FLUX_INPUTS = {"img_in": ("x_embedder", FLUX_TINY["in_channels"]),
               "txt_in": ("context_embedder", FLUX_TINY["joint_attention_dim"]),
               "vector_in.in_layer": ("time_text_embed.text_embedder.linear_1", FLUX_TINY["pooled_projection_dim"]),
               "guidance_in.in_layer": ("time_text_embed.guidance_embedder.linear_1", 256)}
SWAPPED = {"final_layer.adaLN_modulation.1", "joint_blocks.2.context_block.adaLN_modulation.1"}

SD3_ORIGINAL: dict[str, tuple[list[tuple[str, int, int]], int]] = {
    "joint_blocks.{i}.x_block.attn.qkv": ([("transformer_blocks.{i}.attn.to_q", 0, 1), ("transformer_blocks.{i}.attn.to_k", 1, 2),
                                           ("transformer_blocks.{i}.attn.to_v", 2, 3)], 1),
    "joint_blocks.{i}.x_block.attn.proj": ([("transformer_blocks.{i}.attn.to_out.0", 0, 1)], 1),
    "joint_blocks.{i}.x_block.mlp.fc1": ([("transformer_blocks.{i}.ff.net.0.proj", 0, 4)], 1),
    "joint_blocks.{i}.x_block.mlp.fc2": ([("transformer_blocks.{i}.ff.net.2", 0, 1)], 4),
    "joint_blocks.{i}.context_block.attn.qkv": ([("transformer_blocks.{i}.attn.add_q_proj", 0, 1),
                                                 ("transformer_blocks.{i}.attn.add_k_proj", 1, 2),
                                                 ("transformer_blocks.{i}.attn.add_v_proj", 2, 3)], 1),
    "final_layer.adaLN_modulation.1": ([("norm_out.linear", 0, 2)], 1),
}
#: Block-specific SD3 modules at test size (block 0 has attn2, block 2 is the last, context-pre-only one).
SD3_EXTRA: dict[str, tuple[list[tuple[str, int, int]], int]] = {
    "joint_blocks.0.x_block.attn2.qkv": ([("transformer_blocks.0.attn2.to_q", 0, 1), ("transformer_blocks.0.attn2.to_k", 1, 2),
                                          ("transformer_blocks.0.attn2.to_v", 2, 3)], 1),
    "joint_blocks.0.x_block.attn2.proj": ([("transformer_blocks.0.attn2.to_out.0", 0, 1)], 1),
    "joint_blocks.0.x_block.adaLN_modulation.1": ([("transformer_blocks.0.norm1.linear", 0, 9)], 1),
    "joint_blocks.0.context_block.adaLN_modulation.1": ([("transformer_blocks.0.norm1_context.linear", 0, 6)], 1),
    "joint_blocks.1.context_block.attn.proj": ([("transformer_blocks.1.attn.to_add_out", 0, 1)], 1),
    "joint_blocks.2.context_block.adaLN_modulation.1": ([("transformer_blocks.2.norm1_context.linear", 0, 2)], 1),
}

#: Text-encoder modules: (kohya-style path, canonical path, in, out) at test size.
CLIP_PATHS = [("text_model.encoder.layers.0.self_attn.q_proj", 1, 1), ("text_model.encoder.layers.1.mlp.fc1", 1, 2)]
T5_PATHS = [("encoder.block.0.layer.0.SelfAttention.q", 1, 1), ("encoder.block.1.layer.1.DenseReluDense.wi_0", 1, 2)]


def _flat(path: str) -> str:
    return path.replace(".", "_")


def _rand(*shape: int, gen: torch.Generator) -> Tensor:
    return torch.randn(*shape, generator=gen) * 0.1


def _expand(table: dict[str, tuple[list[tuple[str, int, int]], int]], blocks: list[int]) -> dict[str, tuple[list[tuple[str, int, int]], int]]:
    out = {}
    for name, (parts, mult) in table.items():
        for i in blocks if "{i}" in name else [0]:
            out[name.format(i=i)] = ([(p.format(i=i), a, b) for p, a, b in parts], mult)
    return out


def original_modules(family: str, *, hidden: int = H, blocks: int = 2) -> dict[str, tuple[int, int, list[tuple[str, int, int]]]]:
    """{original module: (in, out, [(diffusers module, first row, last row)])} of a test-size (or real) model."""
    out = {}
    if family == "flux":
        for name, (parts, mult) in _expand(FLUX_ORIGINAL, list(range(blocks))).items():
            rows = [(f"transformer.{p}", a * hidden, b * hidden) for p, a, b in parts]
            out[name] = (mult * hidden, rows[-1][2], rows)
        if hidden == H:
            for name, (diff, width) in FLUX_INPUTS.items():
                out[name] = (width, hidden, [(f"transformer.{diff}", 0, hidden)])
    else:
        table = _expand(SD3_ORIGINAL, list(range(3)))
        table.update(SD3_EXTRA)
        for name, (parts, mult) in table.items():
            rows = [(f"transformer.{p}", a * hidden, b * hidden) for p, a, b in parts]
            out[name] = (mult * hidden, rows[-1][2], rows)
    return out


# --------------------------------------------------------------------------------------------- writing files


#: An update: a full ``[out, in]`` matrix, or factors ``(B, A)`` with ``B @ A`` the update (``A`` None: B is
#: the full matrix). Compared through random probes, so Flux.1-wide updates are never built in full.
Update = Any


class Built:
    """A written file and the update each diffusers module receives from it."""

    def __init__(self, path: Path, expected: dict[str, Update], fused_ranks: dict[str, int] | None = None) -> None:
        self.path = path
        self.expected = expected
        self.fused_ranks = fused_ranks or {}


def _te_modules(family: str, layout: str, t5: bool) -> list[tuple[str, str, int, int]]:
    """(file module name, canonical key, in, out) of the text-encoder modules a layout names."""
    out = []
    encoders = [("clip_l", CLIP_L_WIDTH)] + ([("clip_g", CLIP_G_WIDTH)] if family == "sd3" else []) + (
        [("t5", T5_WIDTH)] if t5 else [])
    comp = {"flux": {"clip_l": "text_encoder", "t5": "text_encoder_2"},
            "sd3": {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5": "text_encoder_3"}}[family]
    for enc, width in encoders:
        paths = T5_PATHS if enc == "t5" else CLIP_PATHS
        for path, a, b in paths:
            key = f"{comp[enc]}.{path}"
            if layout in ("kohya", "lokr"):
                name = {"clip_l": "lora_te1_", "clip_g": "lora_te2_", "t5": "lora_te3_"}[enc] + _flat(path)
            elif layout == "onetrainer":
                name = {"clip_l": "lora_te1_", "clip_g": "lora_te2_", "t5": "lora_te2_"}[enc] + _flat(path)
            elif layout == "comfyui":
                name = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
                        "t5": "text_encoders.t5xxl.transformer."}[enc] + path
            else:
                name = key
            out.append((name, key, a * width, b * width))
    return out


def write_original(path: Path, family: str, layout: str, *, rank: int = 4, alpha: float = 2.0, seed: int = 0,
                   t5: bool = True, hidden: int = H, blocks: int = 2, modules: list[str] | None = None) -> Built:
    """A file whose transformer modules are the original model's (fused q/k/v): layout ``kohya``, ``comfyui``
    (``diffusion_model.``, lora_A/B, no alpha), ``xlabs`` (Flux double-block attention and single-block
    qkv/proj only) or ``lokr`` (``diffusion_model.``, lokr_w1/lokr_w2)."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, Tensor] = {}
    expected: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    mods = original_modules(family, hidden=hidden, blocks=blocks)
    if modules is not None:
        mods = {k: v for k, v in mods.items() if k in modules}
    if layout == "xlabs":
        xl = {}
        for i in range(blocks):
            xl[f"double_blocks.{i}.processor.qkv_lora1"] = f"double_blocks.{i}.img_attn.qkv"
            xl[f"double_blocks.{i}.processor.proj_lora1"] = f"double_blocks.{i}.img_attn.proj"
            xl[f"double_blocks.{i}.processor.qkv_lora2"] = f"double_blocks.{i}.txt_attn.qkv"
            xl[f"double_blocks.{i}.processor.proj_lora2"] = f"double_blocks.{i}.txt_attn.proj"
            xl[f"single_blocks.{i}.processor.proj_lora"] = f"single_blocks.{i}.linear2"
    for name, (inp, out, rows) in mods.items():
        if layout == "lokr":
            # kron(w1 [3, 1], w2 [out/3, in]) (or w1 [1, 1]): rank min(out/3, in) <= 32, lorahub's default
            if out % 3 == 0:
                w1, w2 = _rand(3, 1, gen=gen), _rand(out // 3, inp, gen=gen)
            else:
                w1, w2 = _rand(1, 1, gen=gen), _rand(out, inp, gen=gen)
            base = f"diffusion_model.{name}"
            tensors[f"{base}.lokr_w1"], tensors[f"{base}.lokr_w2"] = w1, w2
            tensors[f"{base}.alpha"] = torch.tensor(alpha)
            delta = (torch.kron(w1, w2), None)  # LoKr with two full factors: scale 1 (LyCORIS)
        else:
            down, up = _rand(rank, inp, gen=gen), _rand(out, rank, gen=gen)
            if layout == "kohya":
                base = "lora_unet_" + _flat(name)
                tensors[f"{base}.lora_down.weight"], tensors[f"{base}.lora_up.weight"] = down, up
                tensors[f"{base}.alpha"] = torch.tensor(alpha)
                delta = (up * (alpha / rank), down)
            elif layout == "comfyui":
                base = f"diffusion_model.{name}"
                tensors[f"{base}.lora_A.weight"], tensors[f"{base}.lora_B.weight"] = down, up
                delta = (up, down)
            elif layout == "xlabs":
                if name.endswith("linear1"):  # x-flux's single-block qkv_lora covers linear1's q, k, v rows only
                    up = up[: 3 * hidden]
                    rows = rows[:3]
                    xname = name.replace("linear1", "processor.qkv_lora")
                else:
                    xname = next((x for x, o in xl.items() if o == name), None)
                if xname is None:
                    continue
                tensors[f"{xname}.down.weight"], tensors[f"{xname}.up.weight"] = down, up
                delta = (up, down)
            else:
                raise ValueError(layout)
            ranks[name] = rank
        b_rows, a_cols = delta
        if name in SWAPPED:
            shift, scale = b_rows.chunk(2, dim=0)
            b_rows = torch.cat([scale, shift], dim=0)
        for key, a, b in rows:
            expected[key] = (b_rows[a:b], a_cols)
    if layout != "xlabs" and hidden == H:
        for name, key, inp, out in _te_modules(family, "comfyui" if layout in ("comfyui",) else "kohya", t5):
            down, up = _rand(rank, inp, gen=gen), _rand(out, rank, gen=gen)
            if layout == "comfyui":
                tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = down, up
                expected[key] = (up, down)
            else:
                tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"] = down, up
                tensors[f"{name}.alpha"] = torch.tensor(alpha)
                expected[key] = (up * (alpha / rank), down)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return Built(path, expected, ranks)


def diffusers_modules(family: str, *, hidden: int = H) -> dict[str, tuple[int, int]]:
    """{canonical key: (in, out)} of every transformer module of the test-size model."""
    out = {}
    for _name, (inp, _o, rows) in original_modules(family, hidden=hidden).items():
        for key, a, b in rows:
            out[key] = (inp, b - a)
    return out


def write_split(path: Path, family: str, layout: str, *, rank: int = 4, alpha: float = 8.0, seed: int = 1,
                t5: bool = False, skip: tuple[str, ...] = ()) -> Built:
    """A file in diffusers' module space (q, k, v separate, each its own factors): layout ``peft``
    (``transformer.`` + lora_A/B, alphas in ``lora_adapter_metadata``) or ``onetrainer`` (``lora_transformer_``,
    lora_down/up/alpha). ``skip``: substrings of keys to leave out (e.g. one of q/k/v)."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, Tensor] = {}
    expected: dict[str, Tensor] = {}
    mods = [(k, k, i, o) for k, (i, o) in diffusers_modules(family).items()]
    mods += [(n, k, i, o) for n, k, i, o in _te_modules(family, "peft" if layout == "peft" else "onetrainer", t5)]
    scale = alpha / rank
    for name, key, inp, out in mods:
        if any(s in key for s in skip):
            continue
        down, up = _rand(rank, inp, gen=gen), _rand(out, rank, gen=gen)
        if layout == "peft":
            tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = down, up
        elif layout == "onetrainer":
            base = name if not name.startswith("transformer.") else "lora_transformer_" + _flat(name.removeprefix("transformer."))
            tensors[f"{base}.lora_down.weight"], tensors[f"{base}.lora_up.weight"] = down, up
            tensors[f"{base}.alpha"] = torch.tensor(alpha)
        else:
            raise ValueError(layout)
        expected[key] = (up * scale, down)
    md = None
    if layout == "peft":
        comps = sorted({k.split(".", 1)[0] for k in expected})
        md = {"lora_adapter_metadata": json.dumps({f"{c}.{f}": v for c in comps for f, v in
                                                   (("r", rank), ("lora_alpha", alpha))})}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=md)
    return Built(path, expected)


def deltas(lora: Any) -> dict[str, Update]:
    """The update of each module of a :class:`lorahub.pipeline.canonical.CanonicalLora`, as factors."""
    return {k: (f.B, f.A) for k, f in lora.modules.items()}


def full(u: Update) -> Tensor:
    if isinstance(u, tuple):
        b, a = u
        return b.float() if a is None else b.float() @ a.float()
    return u.float()


_PROBES: dict[int, Tensor] = {}


def _probe(u: Update) -> Tensor:
    """``update @ X`` for a fixed random ``X [in, 6]`` (equal products mean equal updates, almost surely)."""
    if isinstance(u, tuple) and u[1] is not None:
        b, a = u
        width = int(a.shape[1])
    else:
        width = int((u[0] if isinstance(u, tuple) else u).shape[1])
    if width not in _PROBES:
        _PROBES[width] = torch.randn(width, 6, generator=torch.Generator().manual_seed(width))
    x = _PROBES[width]
    if isinstance(u, tuple) and u[1] is not None:
        return u[0].float() @ (u[1].float() @ x)
    return full(u) @ x


def assert_same(got: dict[str, Update], want: dict[str, Update], *, tol: float = 1e-5) -> None:
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))[:6]
    for k in want:
        g, w = _probe(got[k]), _probe(want[k])
        err = float((g - w).abs().max())
        scale = float(w.abs().max()) or 1.0
        assert err <= tol * scale, f"{k}: max error {err:.3g} (max {scale:.3g})"
