"""Blends of Flux.1 and SD3 adapters: every method works in weight-delta space on diffusers' modules, whatever
layout each input comes in (kohya's fused qkv beside diffusers' split q/k/v), ``cat`` and ``linear`` are exact
(text encoders included), the blend is written in the diffusers and the kohya/ComfyUI layouts, and adapters of
two families (Flux.1 + SD3, Flux.1 + SDXL) are refused in one line.

The inputs come from ``tests/mmditkit.py`` (random factors, with the update each diffusers module receives
worked out there from the models' structure, not from lorahub).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_thread")]
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import mmditkit as K  # noqa: E402

from lorahub.adapters.inspect import inspect_file  # noqa: E402
from lorahub.adapters.validate import validate_file  # noqa: E402
from lorahub.pipeline.canonical import load_adapter_file  # noqa: E402

#: (te, unet) weights of the two inputs: the transformer and the text encoders apart
WA, WB = (1.0, 0.5), (0.25, 1.0)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[K.Built, K.Built]]:
    """Per family: a kohya file (fused qkv, CLIP text encoder(s), alpha != rank) and a diffusers/PEFT one (split
    q/k/v, its own rank and alpha), of different ranks."""
    d = tmp_path_factory.mktemp("flux-blend")
    out = {}
    for family in ("flux", "sd3"):
        a = K.write_original(d / f"{family}-kohya.safetensors", family, "kohya", rank=4, t5=False, seed=3)
        b = K.write_split(d / f"{family}-peft.safetensors", family, "peft", rank=6, seed=4)
        out[family] = (a, b)
    return out


def _want(a: K.Built, b: K.Built) -> dict[str, Any]:
    want = {}
    for key in sorted(set(a.expected) | set(b.expected)):
        wa, wb = (WA[1], WB[1]) if key.startswith("transformer.") else (WA[0], WB[0])
        want[key] = sum(w * K.full(e[key]) for w, e in ((wa, a.expected), (wb, b.expected)) if key in e)
    return want


def _read(path: str | Path) -> dict[str, Any]:
    return K.deltas(load_adapter_file(path))


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_every_method_blends_a_fused_and_a_split_file_in_delta_space(pairs, tmp_path: Path, family: str) -> None:
    """linear and cat: the exact weighted sum; svd at a rank above the sum's, and dare at density 1: exact too;
    ties: sign election and a disjoint mean, reported as an error. Each written in both layouts reads back as
    the blend made."""
    from lorahub.pipeline.blend import DENSITY_METHODS, METHODS, blend

    a, b = pairs[family]
    want = _want(a, b)
    comps = {k.split(".", 1)[0] for k in want}
    assert {"transformer", "text_encoder"} <= comps and (family == "flux" or "text_encoder_2" in comps)
    for method in METHODS:
        kw = {"density": 1.0} if method in DENSITY_METHODS else {}
        rank = None if method in ("linear", "cat") else 32  # 32 >= every module's width at test size
        for fmt in ("diffusers", "kohya"):
            out = tmp_path / f"{method}-{fmt}.safetensors"
            res = blend([(a.path, WA), (b.path, WB)], method=method, rank=rank, out=out, format=fmt,
                        dtype="float32", **kw)
            assert res.lora.family == family
            report = inspect_file(out)
            assert report.base_family == family
            assert report.format == ("peft" if fmt == "diffusers" else "kohya-lora")
            assert not validate_file(out).errors
            K.assert_same(_read(out), K.deltas(res.lora), tol=1e-5)  # the file is the blend, in either layout
            if fmt == "kohya":
                assert "comfyui" in report.loaders
            else:
                assert report.diffusers_loadable
        if method == "ties":
            assert res.relative_error > 0.05, res.relative_error
            continue
        assert res.relative_error < 1e-5, (method, res.relative_error)
        K.assert_same(K.deltas(res.lora), want)


def test_cat_is_exact_with_the_rank_of_its_inputs_and_t5_modules_go_to_kohya(tmp_path: Path) -> None:
    """cat on Flux: q/k/v from a fused module keep their shared down (rank 4 + 6 per module); a kohya file's T5
    modules blend too, written in the kohya layout (diffusers has no T5 LoRA loader: refused, nothing written)."""
    from lorahub.errors import UsageError
    from lorahub.pipeline.blend import blend

    a = K.write_original(tmp_path / "a.safetensors", "flux", "kohya", rank=4, t5=True, seed=5)
    b = K.write_split(tmp_path / "b.safetensors", "flux", "peft", rank=6, seed=6)
    res = blend([(a.path, WA), (b.path, WB)], method="cat", out=tmp_path / "ab.safetensors", dtype="float32")
    K.assert_same(_read(res.path), _want(a, b))
    assert res.lora.modules["transformer.transformer_blocks.0.attn.to_q"].rank == 10
    assert any(k.startswith("text_encoder_2.") for k in res.lora.modules)  # Flux's T5
    assert inspect_file(res.path).text_encoders == ["text_encoder", "text_encoder_2"]
    with pytest.raises(UsageError, match="T5"):
        blend([(a.path, WA), (b.path, WB)], method="cat", out=tmp_path / "d.safetensors", format="diffusers")
    assert not (tmp_path / "d.safetensors").exists()


def test_blending_two_families_is_a_one_line_error(pairs, sdxl_kohya_file: Path, tmp_path: Path) -> None:
    from lorahub.errors import AdapterCompatibilityError
    from lorahub.pipeline.blend import blend

    flux = pairs["flux"][0].path
    for other, name in ((pairs["sd3"][1].path, "SD3"), (sdxl_kohya_file, "SDXL")):
        with pytest.raises(AdapterCompatibilityError) as info:
            blend([flux, other], out=tmp_path / "x.safetensors")
        msg = str(info.value)
        assert "\n" not in msg and "different base families" in msg and "Flux.1" in msg and name in msg, msg
        assert not (tmp_path / "x.safetensors").exists()


def test_blend_cli_on_flux_writes_both_layouts_and_refuses_a_mix(pairs, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lorahub.cli.main import cli

    a, b = pairs["flux"]
    runner = CliRunner()
    for fmt in ("kohya", "diffusers"):
        out = tmp_path / f"cli-{fmt}.safetensors"
        r = runner.invoke(cli, ["blend", f"{a.path}:0.5", str(b.path), "--method", "cat", "--format", fmt,
                                "--dtype", "float32", "-o", str(out)])
        assert r.exit_code == 0, r.output
        assert inspect_file(out).base_family == "flux"
    r = runner.invoke(cli, ["blend", str(a.path), str(pairs["sd3"][0].path), "-o", str(tmp_path / "mix.safetensors")])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "different base families" in lines[0], r.output
    assert not (tmp_path / "mix.safetensors").exists()


# --------------------------------------------------------------------------------------------- fuse


def _render(pipe: Any, family: str) -> Any:
    """Two denoising steps at 64x64 from a fixed seed, as a numpy image (the text encoders run too)."""
    kw: dict[str, Any] = {"max_sequence_length": 16} if family == "flux" else {}
    return pipe("a lighthouse at dusk", num_inference_steps=2, height=64, width=64, guidance_scale=3.5,
                generator=torch.Generator().manual_seed(0), output_type="np", **kw).images[0]


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_fuse_writes_a_base_that_renders_as_the_loaded_adapters(pairs, request: pytest.FixtureRequest,
                                                                 tmp_path: Path, family: str) -> None:
    """fuse = base + sum w dW (a kohya fused-qkv file and a diffusers split one, transformer and CLIP weights
    apart): the saved folder loads as a FluxPipeline / StableDiffusion3Pipeline without adapters and renders
    what the base renders with both adapters loaded by diffusers (load_lora_weights + set_adapters)."""
    import json

    from lorahub.base.resolve import load_pipeline
    from lorahub.pipeline.convert import convert
    from lorahub.pipeline.fuse import MANIFEST, fuse
    from lorahub.pipeline.live import quiet

    base: Path = request.getfixturevalue(f"embedded_{family}_base")
    a, b = pairs[family]
    res = fuse(base, [(a.path, WA), (b.path, WB)], tmp_path / "merged")
    merged = Path(res.path)
    manifest = json.loads((merged / MANIFEST).read_text())
    assert manifest["family"] == family and [x["unet_weight"] for x in manifest["adapters"]] == [WA[1], WB[1]]
    fused = load_pipeline(merged)
    assert type(fused).__name__ == ("FluxPipeline" if family == "flux" else "StableDiffusion3Pipeline")
    assert not fused.get_list_adapters()

    ref = load_pipeline(base)
    plain = _render(ref, family)
    with quiet():
        for name, built in (("a", a), ("b", b)):
            out = convert(built.path, tmp_path / f"{name}-diffusers.safetensors", format="diffusers", dtype="float32")
            ref.load_lora_weights(out.path, adapter_name=name)
        comps = ["transformer", "text_encoder"] + (["text_encoder_2"] if family == "sd3" else [])
        ref.set_adapters(["a", "b"], adapter_weights=[{c: w[c == "transformer"] for c in comps} for w in (WA, WB)])
    loaded = _render(ref, family)
    image = _render(fused, family)
    assert float(abs(image - loaded).max()) < 1e-4  # measured 1.1e-6 (Flux.1), 2.7e-6 (SD3)
    assert float(abs(image - plain).max()) > 1e-2  # the adapters change the picture: the comparison means something


def test_fuse_adds_t5_deltas_exactly_and_refuses_other_families(pairs, embedded_flux_base: Path,
                                                                sdxl_kohya_file: Path, tmp_path: Path) -> None:
    """A kohya file's T5 modules (which diffusers' LoRA loader does not take) fuse into text_encoder_2 as
    W + w dW exactly; SD3 and SDXL adapters on the Flux base are one-line errors that write nothing."""
    from lorahub.base.resolve import load_pipeline
    from lorahub.errors import AdapterCompatibilityError
    from lorahub.pipeline.fuse import fuse

    t5 = K.write_original(tmp_path / "t5.safetensors", "flux", "kohya", rank=4, t5=True, seed=7)
    key = next(k for k in t5.expected if k.startswith("text_encoder_2."))
    res = fuse(embedded_flux_base, [(t5.path, (0.5, 1.0))], tmp_path / "t5-merged")
    path = key.split(".", 1)[1]
    before = load_pipeline(embedded_flux_base).text_encoder_2.get_submodule(path).weight
    after = load_pipeline(res.path).text_encoder_2.get_submodule(path).weight
    assert torch.allclose(after - before, 0.5 * K.full(t5.expected[key]), atol=1e-6)

    for other, name in ((pairs["sd3"][0].path, "SD3"), (sdxl_kohya_file, "SDXL")):
        with pytest.raises(AdapterCompatibilityError) as info:
            fuse(embedded_flux_base, [(pairs["flux"][0].path, 1.0), (other, 1.0)], tmp_path / "mix")
        msg = str(info.value)
        assert "\n" not in msg and f"a {name} adapter does not fit the Flux.1 base" in msg, msg
        assert not (tmp_path / "mix").exists()


def test_a_blend_keeps_the_checkpoint_its_sources_declare(pairs, tmp_path: Path) -> None:
    """Two FLUX.1-schnell adapters blend into one that still says schnell (its card names FLUX.1-schnell);
    sources that disagree, or one that declares nothing, leave the family's generic architecture."""
    import shutil

    from lorahub.adapters.metadata import set_metadata
    from lorahub.hub.card import CHECKPOINTS, reference_checkpoint

    a, b = (shutil.copy(x.path, tmp_path / Path(x.path).name) for x in pairs["flux"])
    for f in (a, b):
        set_metadata(f, {"modelspec.architecture": "flux-1-schnell/lora"})
    from lorahub.pipeline.blend import blend

    out = blend([(a, 1.0), (b, 1.0)], method="cat", out=tmp_path / "s.safetensors").path
    report = inspect_file(out)
    assert report.metadata["modelspec.architecture"] == "flux-1-schnell/lora"
    assert reference_checkpoint(report) == CHECKPOINTS["flux-schnell"]
    set_metadata(b, {"modelspec.architecture": "flux-1-dev/lora"})
    mixed = inspect_file(blend([(a, 1.0), (b, 1.0)], method="cat", out=tmp_path / "m.safetensors").path)
    assert mixed.metadata["modelspec.architecture"] == "flux-1/lora"
    assert reference_checkpoint(mixed) == CHECKPOINTS["flux-dev"]
