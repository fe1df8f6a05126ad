"""Baked blends and fused bases against what the live adapters make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_testkit import max_diff, render_np

pytestmark = pytest.mark.torch

TOL = 1e-3  # images in [0, 1]; a weight off by 0.01 moves pixels by ~0.08


def _exact_delta(paths_weights, key):
    """sum_i w_i * (alpha_i / r_i) B_i @ A_i for one canonical module, straight from the files."""
    from lorahub.pipeline.canonical import load_adapter_file

    total = None
    for path, w in paths_weights:
        f = load_adapter_file(path).modules.get(key)
        if f is None:
            continue
        d = w * f.delta()
        total = d if total is None else total + d
    return total


def test_cat_blend_gives_the_same_image_as_the_live_set_adapters_blend(adapters, reference, tmp_path: Path) -> None:
    from lorahub.pipeline.blend import blend
    from lorahub.pipeline.live import quiet

    # a: diffusers rank 4 alpha 2 with TE; b: kohya rank 8 alpha 16 with TE; c: kohya rank 2 UNet only
    items = [(adapters["a"], 0.6), (adapters["b"], 0.4), (adapters["c"], 0.7)]
    res = blend(items, method="cat", out=tmp_path / "cat.safetensors", dtype="float32")
    assert res.relative_error == 0.0
    assert res.rank == 4 + 8 + 2
    live_blend = reference(items)  # plain diffusers: load_lora_weights x3 + set_adapters(weights)
    pipe = reference.pipe
    with quiet():
        pipe.unload_lora_weights()
        pipe.load_lora_weights(res.path, adapter_name="baked")  # loadable by diffusers as is
    baked = render_np(pipe)
    assert max_diff(baked, live_blend) < TOL
    # and different from the unblended base (the blend does something)
    with quiet():
        pipe.unload_lora_weights()
    assert max_diff(render_np(pipe), live_blend) > 0.05


def test_svd_blend_error_shrinks_as_the_rank_grows(adapters) -> None:
    from lorahub.pipeline.blend import blend

    items = [(adapters["a"], 0.5), (adapters["d"], 0.5)]  # ranks 4 and 16
    errors = [blend(items, method="svd", rank=r).relative_error for r in (1, 2, 4, 8, 16)]
    assert all(x > y for x, y in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 0.2
    assert blend(items, method="svd", rank=20).relative_error < 1e-5  # rank >= 4 + 16: exact


def test_linear_is_the_exact_delta_sum_not_the_sum_of_factors(adapters) -> None:
    import torch

    from lorahub.pipeline.blend import blend

    items = [(adapters["a"], 0.6), (adapters["b"], 0.4)]
    res = blend(items, method="linear")
    assert res.relative_error < 1e-5
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    want = _exact_delta(items, key)
    got = res.lora.modules[key].delta()
    assert torch.allclose(got, want, atol=1e-5)
    # what naive merging does (adding A and B separately) is not that: it is what users complain about
    from lorahub.pipeline.canonical import load_adapter_file

    fa, fb = (load_adapter_file(p).modules[key].padded(8) for p, _ in items)
    naive = (0.6 * fa.B + 0.4 * fb.B) @ (0.6 * fa.A + 0.4 * fb.A)
    assert float((naive - want).norm() / want.norm()) > 0.3


def test_modules_present_in_only_some_inputs_and_te_weights(adapters, tmp_path: Path) -> None:
    import torch

    from lorahub.pipeline.blend import blend

    # e covers attn1 only; a covers attn1+attn2 and the text encoder
    res = blend([(adapters["e"], (0.0, 1.0)), (adapters["a"], (0.25, 0.5))], method="cat",
                out=tmp_path / "partial.safetensors")
    k1 = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    k2 = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q"
    te = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    assert res.lora.modules[k1].rank == 8 and res.lora.modules[k2].rank == 4
    assert torch.allclose(res.lora.modules[k2].delta(), _exact_delta([(adapters["a"], 0.5)], k2), atol=1e-5)
    assert torch.allclose(res.lora.modules[te].delta(), _exact_delta([(adapters["a"], 0.25)], te), atol=1e-5)


def test_ties_and_dare_need_density_and_blend_deltas(adapters) -> None:
    from lorahub.errors import UsageError
    from lorahub.pipeline.blend import blend

    items = [(adapters["a"], 0.5), (adapters["b"], 0.5)]
    with pytest.raises(UsageError, match="needs --density"):
        blend(items, method="ties")
    with pytest.raises(UsageError, match="only applies"):
        blend(items, method="cat", density=0.5)
    full = blend(items, method="ties", density=1.0, rank=64)
    sparse = blend(items, method="ties", density=0.2, rank=64)
    assert sparse.relative_error > full.relative_error
    d1 = blend(items, method="dare", density=0.5, rank=64, seed=1)
    d1b = blend(items, method="dare", density=0.5, rank=64, seed=1)
    d2 = blend(items, method="dare", density=0.5, rank=64, seed=2)
    assert d1.relative_error == d1b.relative_error != d2.relative_error
    assert blend(items, method="dare", density=1.0, rank=64).relative_error < 1e-5


def test_provenance_metadata_and_trigger_words(adapters, tmp_path: Path) -> None:
    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.adapters.header import read_header
    from lorahub.adapters.inspect import inspect_file
    from lorahub.pipeline.blend import blend

    res = blend([(adapters["a"], 0.6), (adapters["b"], 0.4)], method="svd", rank=6,
                out=tmp_path / "mix.safetensors", dtype="float16")
    md = read_header(res.path).string_metadata()
    prov = json.loads(md["lorahub.blend"])
    assert prov["method"] == "svd" and prov["rank"] == 6
    assert [s["sha256"] for s in prov["sources"]] == [fingerprint_file(adapters[k]).sha256 for k in ("a", "b")]
    assert [s["unet_weight"] for s in prov["sources"]] == [0.6, 0.4]
    assert md["modelspec.trigger_phrase"] == "astyle, bstyle"
    rep = inspect_file(res.path)  # the default layout is kohya's (docs/formats.md)
    assert rep.format == "kohya-lora" and rep.trigger_words == ["astyle", "bstyle"] and rep.dtype == "float16"
    assert rep.ranks == [6] and rep.alphas == [6.0]
    assert md["ss_network_module"] == "networks.lora" and md["ss_base_model_version"] == "sd_v1"
    diff = blend([(adapters["a"], 0.6), (adapters["b"], 0.4)], method="svd", rank=6,
                 out=tmp_path / "mix-diffusers.safetensors", format="diffusers")
    assert inspect_file(diff.path).format == "peft"


def test_blending_different_families_is_refused(adapters, sdxl_kohya_file: Path) -> None:
    from lorahub.errors import AdapterCompatibilityError
    from lorahub.pipeline.blend import blend

    with pytest.raises(AdapterCompatibilityError, match="different"):
        blend([(adapters["a"], 0.5), (sdxl_kohya_file, 0.5)], method="cat")


def test_fuse_writes_a_base_that_matches_the_live_adapters(embedded_base, adapters, reference, tmp_path, one_thread) -> None:
    from lorahub.base.resolve import load_pipeline
    from lorahub.pipeline.fuse import MANIFEST, fuse

    out = tmp_path / "merged"
    res = fuse(embedded_base, [f"{adapters['b']}:0.3:0.8", (adapters["c"], 0.5)], out)
    assert (out / "model_index.json").is_file() and (out / MANIFEST).is_file()
    manifest = json.loads((out / MANIFEST).read_text())
    assert [a["unet_weight"] for a in manifest["adapters"]] == [0.8, 0.5]
    assert res.path == str(out)
    fused = load_pipeline(out)  # from_pretrained, safetensors only
    assert not fused.get_list_adapters()
    want = reference([(adapters["b"], {"unet": 0.8, "text_encoder": 0.3}), (adapters["c"], 0.5)])
    assert max_diff(render_np(fused), want) < TOL
    from lorahub.errors import UsageError

    with pytest.raises(UsageError, match="not empty"):
        fuse(embedded_base, [(adapters["c"], 0.5)], out)
