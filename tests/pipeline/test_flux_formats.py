"""Flux.1 and SD3 LoRAs in every layout: read exactly, converted back and forth exactly, written so the tools load them.

The files come from ``tests/mmditkit.py`` (random factors in each layout, with the update each diffusers
module receives worked out there from the models' structure). Checks:

- every layout reads to the same per-module update (fused qkv split into q/k/v, alpha applied, the final
  layer's shift/scale halves swapped), and ``inspect`` names its format and family;
- converting to the kohya layout and to the diffusers layout, and back, keeps every update to float
  tolerance; fused modules stay rank r when their q/k/v share one ``down``, and become an exact rank-3r
  block-diagonal LoRA otherwise;
- diffusers loads every written diffusers-layout file fully (``pipe.load_lora_weights`` into test-size
  ``FluxPipeline``/``StableDiffusion3Pipeline`` models) at the intended update; ComfyUI's and kohya's key rules
  (``tool_rules_flux.py``) map every key of every written kohya-layout file to a weight of the right shape
  with the same update, and ``inspect``'s ``loaders`` says so;
- at Flux.1's real widths lorahub's conversion is diffusers' own (``_convert_kohya_flux_lora_to_diffusers``,
  ``_convert_xlabs_flux_lora_to_diffusers``) and its own mapping agrees with it;
- what lorahub says diffusers cannot load, diffusers indeed does not load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import mmditkit as K  # noqa: E402
from interop_kit import WarningCapture, read_tensors  # noqa: E402
from testkit import FIXTURES  # noqa: E402
from tool_rules_flux import comfy_key_map, comfy_load, kohya_modules, kohya_problems, weight_shapes  # noqa: E402

from lorahub.adapters.inspect import inspect_file  # noqa: E402
from lorahub.adapters.validate import validate_file  # noqa: E402
from lorahub.errors import AdapterCompatibilityError, UsageError  # noqa: E402
from lorahub.pipeline.canonical import load_adapter_file  # noqa: E402
from lorahub.pipeline.convert import convert  # noqa: E402

LAYOUTS = [("flux", "kohya"), ("flux", "comfyui"), ("flux", "xlabs"), ("flux", "lokr"), ("flux", "peft"),
           ("flux", "onetrainer"), ("sd3", "kohya"), ("sd3", "comfyui"), ("sd3", "peft")]
FORMATS = {"kohya": "kohya-lora", "comfyui": "comfyui", "xlabs": "xlabs", "lokr": "lycoris-lokr", "peft": "peft",
           "onetrainer": "kohya-lora"}
ENCODERS = {"flux": {"clip_l": K.CLIP_L_WIDTH, "t5xxl": K.T5_WIDTH},
            "sd3": {"clip_l": K.CLIP_L_WIDTH, "clip_g": K.CLIP_G_WIDTH, "t5xxl": K.T5_WIDTH}}
CFG = {"flux": K.FLUX_TINY, "sd3": K.SD3_TINY}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(path: Path, family: str, layout: str, **kw: Any) -> K.Built:
    if layout in ("peft", "onetrainer"):
        return K.write_split(path, family, layout, **kw)
    return K.write_original(path, family, layout, **kw)


def read(path: str | Path) -> dict[str, Any]:
    return K.deltas(load_adapter_file(path))


@pytest.mark.parametrize(("family", "layout"), LAYOUTS)
def test_every_layout_reads_to_the_diffusers_modules(tmp_path: Path, family: str, layout: str) -> None:
    b = build(tmp_path / "src.safetensors", family, layout)
    r = inspect_file(b.path)
    assert (r.base_family, r.format) == (family, FORMATS[layout])
    assert r.hidden_size == K.H or layout == "xlabs"
    K.assert_same(read(b.path), b.expected)


@pytest.mark.parametrize(("family", "layout"), LAYOUTS)
def test_back_and_forth_keeps_every_update(tmp_path: Path, family: str, layout: str) -> None:
    """source -> kohya -> diffusers -> kohya, and source -> diffusers: the same update everywhere."""
    b = build(tmp_path / "src.safetensors", family, layout, t5=False)
    k1 = convert(b.path, tmp_path / "k1.safetensors", format="kohya", dtype="float32")
    d1 = convert(k1.path, tmp_path / "d1.safetensors", format="diffusers", dtype="float32")
    k2 = convert(d1.path, tmp_path / "k2.safetensors", format="kohya", dtype="float32")
    d2 = convert(b.path, tmp_path / "d2.safetensors", format="diffusers", dtype="float32")
    for out in (k1, d1, k2, d2):
        K.assert_same(read(out.path), b.expected)
        r = inspect_file(out.path)
        assert r.base_family == family
        assert r.format == ("kohya-lora" if out.format == "kohya" else "peft")
        assert not validate_file(out.path).errors


def _rank(path: str, name: str) -> int:
    from safetensors import safe_open

    with safe_open(path, "pt") as fh:
        return int(fh.get_slice(f"{name}.lora_down.weight").get_shape()[0])


def test_fused_modules_keep_rank_r_or_become_block_diagonal(tmp_path: Path) -> None:
    """q/k/v read from one fused module share their down and fuse back at rank r; independent q/k/v fuse
    into a rank 3r (linear1: 4r) block-diagonal LoRA, exactly (kohya's own split_qkv merge)."""
    fused = K.write_original(tmp_path / "fused.safetensors", "flux", "kohya", rank=4, t5=False)
    split = K.write_split(tmp_path / "split.safetensors", "flux", "peft", rank=4)
    a = convert(fused.path, tmp_path / "a.safetensors", format="kohya", dtype="float32").path
    b = convert(split.path, tmp_path / "b.safetensors", format="kohya", dtype="float32").path
    assert _rank(a, "lora_unet_double_blocks_0_img_attn_qkv") == 4
    assert _rank(a, "lora_unet_single_blocks_1_linear1") == 4
    assert _rank(b, "lora_unet_double_blocks_0_img_attn_qkv") == 12
    assert _rank(b, "lora_unet_single_blocks_1_linear1") == 16
    assert _rank(b, "lora_unet_double_blocks_0_img_attn_proj") == 4
    from safetensors import safe_open

    with safe_open(b, "pt") as fh:
        up = fh.get_tensor("lora_unet_double_blocks_0_txt_attn_qkv.lora_up.weight")
    h = K.H
    for i in range(3):  # block-diagonal: the rows of one projection use its own 4 columns only
        off = torch.cat([up[i * h:(i + 1) * h, :4 * i], up[i * h:(i + 1) * h, 4 * (i + 1):]], dim=1)
        assert not off.any()


def test_a_missing_projection_fuses_as_zero_rows_and_reads_back_without_it(tmp_path: Path) -> None:
    b = K.write_split(tmp_path / "qk.safetensors", "flux", "peft", skip=("attn.to_v", "attn.add_v_proj"))
    k = convert(b.path, tmp_path / "k.safetensors", format="kohya", dtype="float32").path
    assert _rank(k, "lora_unet_double_blocks_0_img_attn_qkv") == 8
    K.assert_same(read(k), b.expected)
    d = convert(k, tmp_path / "d.safetensors", format="diffusers", dtype="float32").path
    K.assert_same(read(d), b.expected)


def _tiny_pipe(family: str) -> tuple[Any, dict[str, Any]]:
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if family == "flux":
        t, clip = K.tiny_flux(), K.tiny_clip(K.CLIP_L_WIDTH)
        pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=clip, tokenizer=None, text_encoder_2=None,
                            tokenizer_2=None, transformer=t)
        return pipe, {"transformer": t, "text_encoder": clip}
    t, clip_l, clip_g = K.tiny_sd3(), K.tiny_clip(K.CLIP_L_WIDTH, True), K.tiny_clip(K.CLIP_G_WIDTH, True)
    pipe = StableDiffusion3Pipeline(scheduler=None, vae=None, text_encoder=clip_l, tokenizer=None, text_encoder_2=clip_g,
                                    tokenizer_2=None, text_encoder_3=None, tokenizer_3=None, transformer=t)
    return pipe, {"transformer": t, "text_encoder": clip_l, "text_encoder_2": clip_g}


def _loaded_updates(models: dict[str, Any], adapter: str) -> dict[str, Any]:
    """The update each peft LoRA layer applies (B @ A * scaling), by canonical key."""
    out = {}
    for comp, model in models.items():
        for name, m in model.named_modules():
            if hasattr(m, "lora_A") and adapter in m.lora_A:
                path = name if comp == "transformer" or name.startswith("text_model.") else f"text_model.{name}"
                with torch.no_grad():
                    out[f"{comp}.{path}"] = (m.lora_B[adapter].weight @ m.lora_A[adapter].weight) * m.scaling[adapter]
    return out


@pytest.mark.parametrize(("family", "layout"), LAYOUTS)
def test_diffusers_loads_every_written_diffusers_file_fully(tmp_path: Path, family: str, layout: str) -> None:
    b = build(tmp_path / "src.safetensors", family, layout, t5=False)
    out = convert(b.path, tmp_path / "d.safetensors", format="diffusers", dtype="float32").path
    assert "diffusers" in inspect_file(out).loaders
    pipe, models = _tiny_pipe(family)
    catcher = WarningCapture()
    logger = logging.getLogger("diffusers")
    logger.addHandler(catcher)
    try:
        pipe.load_lora_weights(out, adapter_name="x")
    finally:
        logger.removeHandler(catcher)
    comps = {k.split(".", 1)[0] for k in b.expected}
    bad = [m for m in catcher.messages if "unexpected keys" in m.lower()
           or any(f"prefix='{c}'" in m for c in comps if "no lora keys" in m.lower())]
    assert not bad, bad
    K.assert_same(_loaded_updates(models, "x"), b.expected)


def _expected_weights(family: str, expected: dict[str, Any]) -> dict[str, Any]:
    """The update of each ComfyUI model weight, from the per-module updates (the kit's tables, fused)."""
    out = {}
    for name, (inp, rows_total, rows) in K.original_modules(family).items():
        full = torch.zeros(rows_total, inp)
        hit = False
        for key, a, b in rows:
            if key in expected:
                full[a:b] = K.full(expected[key])
                hit = True
        if hit:
            if name in K.SWAPPED:
                shift, scale = full.chunk(2, dim=0)
                full = torch.cat([scale, shift], dim=0)
            out[f"diffusion_model.{name}.weight"] = full
    enc = {"text_encoder": "clip_l", "text_encoder_2": "t5xxl" if family == "flux" else "clip_g",
           "text_encoder_3": "t5xxl"}
    for key, delta in expected.items():
        comp, _, path = key.partition(".")
        if comp in enc:
            out[f"{enc[comp]}.transformer.{path}.weight"] = K.full(delta)
    return out


@pytest.mark.parametrize(("family", "layout"), LAYOUTS)
def test_comfyui_and_kohya_rules_load_the_written_files(tmp_path: Path, family: str, layout: str) -> None:
    """ComfyUI maps every key of the kohya-layout file (and of the diffusers one) to a weight of the right shape
    and computes the same update; kohya loads the kohya file when inspect says so."""
    b = build(tmp_path / "src.safetensors", family, layout)
    encoders = ENCODERS[family]
    key_map = comfy_key_map(family, CFG[family], encoders)
    shapes = weight_shapes(family, CFG[family], encoders)
    want = _expected_weights(family, b.expected)
    k = convert(b.path, tmp_path / "k.safetensors", format="kohya", dtype="float32").path
    tensors = read_tensors(k)
    got, not_loaded = comfy_load(tensors, key_map, shapes)
    assert not not_loaded, not_loaded[:5]
    K.assert_same(got, want)
    report = inspect_file(k)
    assert "comfyui" in report.loaders
    problems = kohya_problems(tensors, kohya_modules(family, CFG[family], encoders))
    assert ("kohya" in report.loaders) == (not problems), problems[:3]
    if layout == "kohya":  # a file with kohya's own modules only: kohya loads it
        only = K.write_original(tmp_path / "blocks.safetensors", family, "kohya", modules=[
            n for n in K.original_modules(family) if n.startswith(("double_blocks", "single_blocks", "joint_blocks"))])
        k2 = convert(only.path, tmp_path / "k2.safetensors", format="kohya", dtype="float32").path
        assert not kohya_problems(read_tensors(k2), kohya_modules(family, CFG[family], encoders))
        assert "kohya" in inspect_file(k2).loaders
    if family == "flux" or layout != "kohya":
        bt = build(tmp_path / "src-not5.safetensors", family, layout, t5=False)
        d = convert(bt.path, tmp_path / "d.safetensors", format="diffusers", dtype="float32").path
        got, not_loaded = comfy_load(read_tensors(d), key_map, shapes)
        assert not not_loaded, not_loaded[:5]
        K.assert_same(got, _expected_weights(family, bt.expected))
        assert "comfyui" in inspect_file(d).loaders


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_blending_a_fused_and_a_split_file_is_exact(tmp_path: Path, fmt: str) -> None:
    """A kohya file (fused qkv) and a diffusers one (split q/k/v) blend in diffusers' module space: ``cat`` is
    the exact weighted sum, written in either layout."""
    from lorahub.pipeline.blend import blend

    a = K.write_original(tmp_path / "a.safetensors", "flux", "kohya", t5=False, seed=3)
    b = K.write_split(tmp_path / "b.safetensors", "flux", "peft", seed=4)
    out = tmp_path / f"ab-{fmt}.safetensors"
    blend([(a.path, (1.0, 0.5)), (b.path, (0.25, 1.0))], method="cat", out=out, format=fmt, dtype="float32")
    want = {}
    for key in sorted(set(a.expected) | set(b.expected)):
        wa, wb = (0.5, 1.0) if key.startswith("transformer.") else (1.0, 0.25)
        want[key] = sum(w * K.full(e[key]) for w, e in ((wa, a.expected), (wb, b.expected)) if key in e)
    K.assert_same(read(out), want)


def test_t5_modules_go_to_kohya_not_diffusers(tmp_path: Path) -> None:
    b = K.write_original(tmp_path / "src.safetensors", "flux", "kohya", t5=True)
    with pytest.raises(UsageError, match="T5-XXL") as info:
        convert(b.path, tmp_path / "d.safetensors", format="diffusers")
    assert "kohya" in (info.value.hint or "")
    assert not (tmp_path / "d.safetensors").exists()
    k = convert(b.path, tmp_path / "k.safetensors", format="kohya", dtype="float32").path
    assert any(n.startswith("lora_te3_encoder_block_") for n in read_tensors(k))  # kohya's and ComfyUI's T5 prefix
    K.assert_same(read(k), b.expected)
    r = inspect_file(k)
    assert r.text_encoders == ["text_encoder", "text_encoder_2"] and not r.diffusers_loadable


# --------------------------------------------------------------------------------------------- Flux.1's widths


def _real_kohya(path: Path, rank: int = 2) -> K.Built:
    return K.write_original(path, "flux", "kohya", rank=rank, hidden=3072, blocks=1, t5=False)


def test_at_flux1_widths_lorahub_uses_diffusers_and_its_own_mapping_agrees(tmp_path: Path, monkeypatch: Any) -> None:
    from lorahub.pipeline import fused

    b = _real_kohya(tmp_path / "real.safetensors")
    calls = []
    real = fused._via_kohya
    monkeypatch.setattr(fused, "_via_kohya", lambda g: calls.append(len(g)) or real(g))
    via_diffusers = read(b.path)
    assert calls, "diffusers' kohya converter was not used at Flux.1's widths"
    K.assert_same(via_diffusers, b.expected)
    monkeypatch.setattr(fused, "_kohya_group", lambda rest: {})
    K.assert_same(read(b.path), via_diffusers, tol=1e-6)
    xl = K.write_original(tmp_path / "xlabs.safetensors", "flux", "xlabs", rank=2, hidden=3072, blocks=1)
    K.assert_same(read(xl.path), xl.expected)


def test_what_lorahub_says_diffusers_cannot_load_it_does_not_load(tmp_path: Path) -> None:
    """ComfyUI-layout lora_A keys: nothing loaded; kohya at test widths: diffusers' converter fails on linear1;
    OneTrainer MLP modules: its converter collapses them; kohya SD3: nothing loaded."""
    cases = [("flux", "comfyui"), ("flux", "kohya"), ("flux", "onetrainer"), ("sd3", "kohya")]
    for family, layout in cases:
        b = build(tmp_path / f"{family}-{layout}.safetensors", family, layout, t5=False)
        assert not inspect_file(b.path).diffusers_loadable
        pipe, models = _tiny_pipe(family)
        try:
            pipe.load_lora_weights(str(b.path), adapter_name="x")
        except (AssertionError, KeyError, ValueError):
            continue
        assert not _loaded_updates(models, "x"), f"{family} {layout}: diffusers loaded modules"


# --------------------------------------------------------------------------------------------- inspect, validate


def test_inspect_reports_rank_and_alpha_per_module(tmp_path: Path) -> None:
    b = K.write_original(tmp_path / "k.safetensors", "flux", "kohya", rank=4, alpha=2.0)
    r = inspect_file(b.path)
    qkv = next(m for m in r.module_details if m.name == "lora_unet_double_blocks_0_img_attn_qkv")
    assert (qkv.component, qkv.rank, qkv.alpha, qkv.scale, qkv.in_features, qkv.out_features) == (
        "transformer", 4, 2.0, 0.5, K.H, 3 * K.H)
    t5 = next(m for m in r.module_details if m.name.startswith("lora_te3_"))
    assert t5.component == "text_encoder_2"  # Flux's T5, as FluxPipeline names it
    assert r.rank == 4 and r.alpha == 2.0 and r.coverage.transformer > 0
    s = inspect_file(K.write_original(tmp_path / "s.safetensors", "sd3", "kohya").path)
    assert s.text_encoders == ["text_encoder", "text_encoder_2", "text_encoder_3"]
    assert any("SD3 joint blocks" in e for e in s.family_evidence)


def _kohya_module(name: str, down: tuple[int, int], up: tuple[int, int], alpha: float = 4.0) -> dict[str, Any]:
    return {f"{name}.lora_down.weight": torch.zeros(down), f"{name}.lora_up.weight": torch.zeros(up),
            f"{name}.alpha": torch.tensor(alpha)}


@pytest.mark.parametrize(("modules", "message"), [
    ([("lora_unet_double_blocks_0_img_attn_qkv", (4, 32), (97, 4))], "do not split into 3 x"),
    ([("lora_unet_single_blocks_0_linear1", (4, 32), (200, 4))], "the model's layer has"),
    ([("lora_unet_double_blocks_0_img_attn_qkv", (4, 32), (96, 4)),
      ("lora_unet_double_blocks_1_img_attn_qkv", (4, 64), (192, 4))], "different hidden widths"),
    ([("lora_unet_single_blocks_0_linear2", (4, 32), (32, 4))], "does not fit"),
])
def test_validate_catches_flux_shapes_that_do_not_fit(tmp_path: Path, modules: list, message: str) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    for name, down, up in modules:
        tensors.update(_kohya_module(name, down, up))
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    r = validate_file(tmp_path / "bad.safetensors")
    assert not r.valid and any(message in e for e in r.errors), r.errors


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -2.0])
def test_validate_refuses_alphas_loaders_cannot_use(tmp_path: Path, alpha: float) -> None:
    from safetensors.torch import save_file

    save_file(_kohya_module("lora_unet_double_blocks_0_img_attn_qkv", (4, 32), (96, 4), alpha),
              str(tmp_path / "a.safetensors"))
    r = validate_file(tmp_path / "a.safetensors")
    assert not r.valid and any("alpha" in e for e in r.errors), r.errors


def test_control_loras_are_recognised_and_refused_for_conversion(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    h = K.H
    save_file({"img_in.lora_A.weight": torch.zeros(4, 16), "img_in.lora_B.weight": torch.zeros(h, 4),
               "img_in.lora_B.bias": torch.zeros(h),
               "double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(4, h),
               "double_blocks.0.img_attn.qkv.lora_B.weight": torch.zeros(3 * h, 4),
               "single_blocks.0.norm.key_norm.scale": torch.ones(16)}, str(tmp_path / "c.safetensors"))
    r = inspect_file(tmp_path / "c.safetensors")
    assert (r.format, r.base_family) == ("flux-control", "flux") and validate_file(tmp_path / "c.safetensors").valid
    with pytest.raises(AdapterCompatibilityError, match="Control LoRA"):
        load_adapter_file(tmp_path / "c.safetensors")


# --------------------------------------------------------------------------------------------- real files


REAL = ["invokeai_flux_lora_kohya_format", "invokeai_flux_lora_diffusers_format", "invokeai_flux_lora_aitoolkit_format",
        "invokeai_flux_lora_xlabs_format"]


@pytest.mark.parametrize("fixture", REAL)
def test_real_flux_files_convert_back_and_forth(tmp_path: Path, fixture: str) -> None:
    """Real files' key names and widths (../shared, rank cut to 2 with random factors): kohya and back."""
    import json
    import re

    manifest = FIXTURES / "shapes" / f"{fixture}.shapes.json"
    if not manifest.is_file():
        pytest.skip(f"{manifest} is absent: the shared fixtures live in ../shared beside the project")
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for key, entry in json.loads(manifest.read_text()).items():
        shape = list(entry["shape"])
        if re.search(r"(lora_A|lora_down|\.down)\.weight$", key):
            shape[0] = 2
        elif re.search(r"(lora_B|lora_up|\.up)\.weight$", key):
            shape[1] = 2
        tensors[key] = torch.randn(*shape, generator=gen) * 0.1 if shape else torch.tensor(1.0)
    src = tmp_path / "src.safetensors"
    save_file(tensors, str(src))
    want = read(src)
    k = convert(src, tmp_path / "k.safetensors", format="kohya", dtype="float32").path
    K.assert_same(read(k), want)
    d = convert(k, tmp_path / "d.safetensors", format="diffusers", dtype="float32").path
    K.assert_same(read(d), want)
    assert inspect_file(k).base_family == "flux"
