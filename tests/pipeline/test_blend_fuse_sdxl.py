"""Blends and fused bases on SDXL: every method works in weight-delta space on the UNet and both text encoders,
``cat`` is exact (TE2 included), and a fused SDXL base renders what the live adapters render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_testkit import max_diff, render_np

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

TOL = 1e-3
TE2_KEY = "text_encoder_2.text_model.encoder.layers.1.self_attn.v_proj"
TE1_KEY = "text_encoder.text_model.encoder.layers.1.self_attn.v_proj"
UNET_KEY = "unet.down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k"


def _delta(path: Path, key: str) -> torch.Tensor | None:
    from lorahub.pipeline.canonical import load_adapter_file

    f = load_adapter_file(path).modules.get(key)
    return None if f is None else f.delta()


def test_every_method_blends_deltas_of_all_three_components(xl_adapters, tmp_path: Path, one_thread) -> None:
    from lorahub.adapters.inspect import inspect_file
    from lorahub.pipeline.blend import DENSITY_METHODS, METHODS, blend

    a, b, c = xl_adapters["a"], xl_adapters["b"], xl_adapters["c"]
    # per-component weights: (te, unet, te2)
    items = [(a, (0.5, 0.9, 0.25)), (b, (0.4, 0.3, 0.8)), (c, 0.7)]
    want = {
        UNET_KEY: 0.9 * _delta(a, UNET_KEY) + 0.3 * _delta(b, UNET_KEY) + 0.7 * _delta(c, UNET_KEY),
        TE1_KEY: 0.5 * _delta(a, TE1_KEY) + 0.4 * _delta(b, TE1_KEY),
        TE2_KEY: 0.25 * _delta(a, TE2_KEY) + 0.8 * _delta(b, TE2_KEY),
    }
    for method in METHODS:
        kw = {"density": 1.0} if method in DENSITY_METHODS else {}
        res = blend(items, method=method, rank=None if method in ("linear", "cat") else 64,
                    out=tmp_path / f"{method}.safetensors", dtype="float32", **kw)
        assert res.lora.family == "sdxl"
        assert {k.split(".", 1)[0] for k in res.lora.modules} == {"unet", "text_encoder", "text_encoder_2"}
        if method == "ties":  # sign election and a disjoint mean: not the sum even at density 1, and reported
            assert res.relative_error > 0.05
            continue
        assert res.relative_error < 1e-5, (method, res.relative_error)
        for key, delta in want.items():  # dare at density 1 and a full rank: the exact weighted sum
            assert torch.allclose(res.lora.modules[key].delta(), delta, atol=1e-5), (method, key)
        report = inspect_file(res.path)
        assert report.base_family == "sdxl" and report.coverage.text_encoder_2 == report.coverage.text_encoder
    cat = blend(items, method="cat", out=tmp_path / "cat.safetensors", dtype="float32")
    assert cat.rank == 4 + 8 + 2 and cat.lora.modules[TE2_KEY].rank == 4 + 8  # c has no text encoder
    prov = json.loads(inspect_file(cat.path).metadata["lorahub.blend"])
    assert [s.get("te2_weight") for s in prov["sources"]] == [0.25, 0.8, None]


def test_cat_blend_renders_as_the_stacked_adapters(xl_adapters, xl_reference, tmp_path: Path, one_thread) -> None:
    from lorahub.pipeline.blend import blend
    from lorahub.pipeline.live import quiet

    items = [(xl_adapters["a"], 0.6), (xl_adapters["b"], 0.4), (xl_adapters["c"], 0.7)]
    res = blend(items, method="cat", out=tmp_path / "cat.safetensors", dtype="float32")
    stacked = xl_reference(items)
    pipe = xl_reference.pipe
    with quiet():
        pipe.unload_lora_weights()
        pipe.load_lora_weights(res.path, adapter_name="baked")  # the kohya layout, SGM names
    assert max_diff(render_np(pipe), stacked) < TOL
    with quiet():
        pipe.unload_lora_weights()
    assert max_diff(render_np(pipe), stacked) > 0.05


def test_blending_sd1_and_sdxl_is_refused(adapters, xl_adapters) -> None:
    from lorahub.errors import AdapterCompatibilityError
    from lorahub.pipeline.blend import blend

    with pytest.raises(AdapterCompatibilityError, match="different base families") as err:
        blend([(adapters["a"], 0.5), (xl_adapters["b"], 0.5)], method="cat")
    assert "SDXL" in str(err.value) and "SD 1.x" in str(err.value)


def test_fuse_writes_an_sdxl_base_that_matches_the_live_adapters(embedded_xl_base: Path, xl_adapters, xl_reference,
                                                                 tmp_path: Path, one_thread) -> None:
    from lorahub.base.resolve import load_pipeline
    from lorahub.pipeline.fuse import MANIFEST, fuse

    out = tmp_path / "merged-xl"
    fuse(embedded_xl_base, [f"{xl_adapters['b']}:0.3:0.8:te2=0.6", (xl_adapters["c"], 0.5)], out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["family"] == "sdxl" and manifest["adapters"][0]["te2_weight"] == 0.6
    fused = load_pipeline(out)
    assert type(fused).__name__ == "StableDiffusionXLPipeline" and not fused.get_list_adapters()
    base = load_pipeline(embedded_xl_base)
    name = "text_model.encoder.layers.1.self_attn.v_proj"
    moved = fused.text_encoder_2.get_submodule(name).weight - base.text_encoder_2.get_submodule(name).weight
    assert torch.allclose(moved, 0.6 * _delta(xl_adapters["b"], TE2_KEY), atol=1e-5)
    want = xl_reference([(xl_adapters["b"], {"unet": 0.8, "text_encoder": 0.3, "text_encoder_2": 0.6}),
                         (xl_adapters["c"], 0.5)])
    assert max_diff(render_np(fused), want) < TOL
