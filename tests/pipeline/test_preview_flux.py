"""``preview`` on the embedded Flux.1 and SD3 bases: every Flux/SD3 LoRA layout loads into one live pipeline,
hot-swaps, takes per-adapter and per-component weights and ``<lora:...>`` prompts; family mismatches are one-line
errors; under ``torch.compile`` swaps never recompile.

The oracle is independent of lorahub's reader: ``tests/mmditkit.py`` writes each file and computes, with its own
tables of which rows of a fused module are which diffusers module, the update ``ΔW`` every module receives. The
live pipeline's image must equal that of a plain ``FluxPipeline`` / ``StableDiffusion3Pipeline`` whose weights are
``W + w·ΔW`` (per component weights ``w``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mmditkit as K
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.torch
pytest.importorskip("diffusers")

TOL = 1e-3  # images in [0, 1]
PROMPT = "a photo of a cat"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("mmdit-loras")
    out: dict[str, Any] = {}
    for fam in ("flux", "sd3"):
        for i, layout in enumerate(["kohya", "comfyui"] + (["xlabs"] if fam == "flux" else [])):
            out[f"{fam}-{layout}"] = K.write_original(d / f"{fam}-{layout}.safetensors", fam, layout, seed=10 + i,
                                                      t5=False)
        out[f"{fam}-peft"] = K.write_split(d / f"{fam}-peft.safetensors", fam, "peft", seed=20)
        out[f"{fam}-t5"] = K.write_original(d / f"{fam}-t5.safetensors", fam, "kohya", seed=30, t5=True)
    return out


def _live(base: Path, files: dict[str, Any]):  # noqa: ANN202
    from lorahub.pipeline.live import LivePipeline

    return LivePipeline(base, target_rank=8, lora_dirs=[Path(files["flux-kohya"].path).parent])


@pytest.fixture(scope="module")
def flux(embedded_flux_base: Path, files, one_thread):  # noqa: ANN001, ANN201
    lp = _live(embedded_flux_base, files)
    assert (lp.base.family, lp.base.pipeline_class, lp.denoiser) == ("flux", "FluxPipeline", "transformer")
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def sd3(embedded_sd3_base: Path, files, one_thread):  # noqa: ANN001, ANN201
    lp = _live(embedded_sd3_base, files)
    assert (lp.base.family, lp.base.pipeline_class) == ("sd3", "StableDiffusion3Pipeline")
    yield lp
    lp.close()


def _oracle_pipe(base: Path) -> Any:
    from diffusers import DiffusionPipeline

    from lorahub.pipeline.live import quiet

    with quiet():
        pipe = DiffusionPipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def reference(embedded_flux_base: Path, embedded_sd3_base: Path):  # noqa: ANN201
    """``reference(family, [(built file, weight | {component: weight})])``: the oracle image."""
    import torch

    pipes = {"flux": _oracle_pipe(embedded_flux_base), "sd3": _oracle_pipe(embedded_sd3_base)}

    def run(family: str, loras: list[tuple[Any, Any]], seed: int = 0) -> Any:
        pipe = pipes[family]
        saved: list[tuple[Any, Any]] = []
        with torch.no_grad():
            for built, weight in loras:
                for key, update in built.expected.items():
                    comp, path = key.split(".", 1)
                    w = weight if not isinstance(weight, dict) else weight.get(
                        "unet" if comp == "transformer" else comp, weight.get("text_encoder", 1.0))
                    model = getattr(pipe, comp)
                    try:
                        mod = model.get_submodule(path)
                    except AttributeError:
                        mod = model.get_submodule(path.removeprefix("text_model."))
                    saved.append((mod.weight, mod.weight.detach().clone()))
                    mod.weight += w * K.full(update).reshape(mod.weight.shape)
            try:
                gen = torch.Generator("cpu").manual_seed(seed)
                return pipe(PROMPT, num_inference_steps=2, guidance_scale=7.5, height=64, width=64, generator=gen,
                            output_type="np").images[0]
            finally:
                for param, value in reversed(saved):
                    param.copy_(value)

    return run


def _img(live: Any, seed: int = 0) -> Any:
    return live.render(PROMPT, seed=seed, steps=2, output_type="np").image


def _reset(live: Any) -> None:
    for name in [a.name for a in live.adapters]:
        live.remove(name, unload=True)


def max_diff(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).max())


def _scalings(live: Any, comp: str, slot: str) -> set[float]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {round(float(m.scaling[slot]), 6) for m in getattr(live.pipe, comp).modules()
            if isinstance(m, BaseTunerLayer) and slot in getattr(m, "scaling", {})}


def test_flux_layouts_render_as_the_oracle_and_hot_swap(flux, files, reference) -> None:
    k, c, x, p = files["flux-kohya"], files["flux-comfyui"], files["flux-xlabs"], files["flux-peft"]
    _reset(flux)
    assert flux.native_size() == (64, 64)
    plain = _img(flux)
    assert max_diff(plain, reference("flux", [])) < TOL
    ad_k = flux.add("k", k.path, weight=0.8)
    ad_c = flux.add("c", c.path, te=0.5, unet=0.7)
    assert ad_k.components == ad_c.components == ("text_encoder", "transformer")
    both = {"unet": 0.7, "text_encoder": 0.5}
    first = _img(flux)
    assert max_diff(first, reference("flux", [(k, 0.8), (c, both)])) < TOL
    assert max_diff(first, plain) > 1e-2
    before = dict(flux.stats)
    flux.swap("k", x.path)  # kohya -> XLabs (transformer attention only): the same slot, no reload
    assert flux.stats["hotswaps"] == before["hotswaps"] + 1 and flux.stats["reloads"] == before["reloads"]
    assert flux.adapter("k").components == ("transformer",) and flux.adapter("k").unet_weight == 0.8
    assert max_diff(_img(flux), reference("flux", [(x, 0.8), (c, both)])) < TOL
    flux.swap("k", p.path)  # diffusers/PEFT, CLIP-L part again
    assert max_diff(_img(flux), reference("flux", [(p, 0.8), (c, both)])) < TOL
    flux.swap("k", k.path)
    assert max_diff(_img(flux), first) < TOL
    assert flux.stats["reloads"] == before["reloads"] and flux.stats["base_loads"] == 1
    flux.remove("k", unload=True)  # unload: the other adapter is untouched
    assert max_diff(_img(flux), reference("flux", [(c, both)])) < TOL


def test_flux_per_component_weights_and_prompt_tags(flux, files, reference) -> None:
    k = files["flux-kohya"]
    _reset(flux)
    ad = flux.add("flux-kohya", k.path)
    flux.set_weight("flux-kohya", te=0.3, unet=0.9)
    assert _scalings(flux, "transformer", ad.slot) == {0.9} and _scalings(flux, "text_encoder", ad.slot) == {0.3}
    img = _img(flux)
    assert max_diff(img, reference("flux", [(k, {"unet": 0.9, "text_encoder": 0.3})])) < TOL
    flux.set_weight("flux-kohya", te=0.0, unet=0.9)
    assert max_diff(_img(flux), img) > 1e-4  # the CLIP-L part matters
    # <lora:name:te:unet> by name (the resolver finds the file in lora_dirs); untagged adapters are off
    _reset(flux)
    r = flux.render(f"<lora:flux-comfyui:0.5:1> {PROMPT} <lora:flux-peft:0.8>", steps=2, output_type="np")
    assert r.prompt == PROMPT
    assert {a["name"]: (a["te_weight"], a["unet_weight"]) for a in r.adapters} == {
        "flux-comfyui": (0.5, 1.0), "flux-peft": (0.8, 0.8)}
    want = reference("flux", [(files["flux-comfyui"], {"unet": 1.0, "text_encoder": 0.5}), (files["flux-peft"], 0.8)])
    assert max_diff(r.image, want) < TOL


def test_t5_parts_load_and_weigh(flux, sd3, files, reference) -> None:
    """T5 parts (kohya lora_te3_), which diffusers' FluxPipeline/StableDiffusion3Pipeline do not load, are loaded
    into the T5 encoder: Flux's weighed as te2 (its text_encoder_2), SD3's as te."""
    for live, fam in ((flux, "flux"), (sd3, "sd3")):
        _reset(live)
        built = files[f"{fam}-t5"]
        ad = live.add("t5", built.path)
        t5 = "text_encoder_2" if fam == "flux" else "text_encoder_3"
        assert t5 in ad.components and not ad.warnings
        assert ad.slot in getattr(live.pipe, t5).peft_config
        with_t5 = _img(live)
        assert max_diff(with_t5, reference(fam, [(built, 1.0)])) < TOL
        if fam == "flux":
            live.set_weight("t5", te=1.0, unet=1.0, te2=0.0)
            assert _scalings(live, t5, ad.slot) == {0.0} and _scalings(live, "text_encoder", ad.slot) == {1.0}
            off = _img(live)
            assert max_diff(off, reference(fam, [(built, {"unet": 1.0, "text_encoder": 1.0, t5: 0.0})])) < TOL
            assert max_diff(off, with_t5) > 1e-4  # the T5 part matters
        live.swap("t5", files[f"{fam}-comfyui"].path)  # no T5 part: the slot's T5 layers go
        assert max_diff(_img(live), reference(fam, [(files[f"{fam}-comfyui"], 1.0)])) < TOL
        live.swap("t5", built.path)
        assert max_diff(_img(live), with_t5 if fam == "sd3" else reference(fam, [(built, {
            "unet": 1.0, "text_encoder": 1.0, t5: 0.0})])) < TOL


def test_sd3_layouts_weights_and_swap(sd3, files, reference) -> None:
    k, c, p = files["sd3-kohya"], files["sd3-comfyui"], files["sd3-peft"]
    _reset(sd3)
    ad = sd3.add("k", k.path, weight=0.8)
    assert ad.components == ("text_encoder", "text_encoder_2", "transformer")
    sd3.add("p", p.path, te=0.5, unet=0.7, te2=0.2)
    want_p = {"unet": 0.7, "text_encoder": 0.5, "text_encoder_2": 0.2}
    first = _img(sd3)
    assert max_diff(first, reference("sd3", [(k, 0.8), (p, want_p)])) < TOL
    assert _scalings(sd3, "text_encoder_2", sd3.adapter("p").slot) == {0.2}
    before = dict(sd3.stats)
    sd3.swap("k", c.path)
    assert sd3.stats["hotswaps"] == before["hotswaps"] + 1 and sd3.stats["reloads"] == before["reloads"]
    assert max_diff(_img(sd3), reference("sd3", [(c, 0.8), (p, want_p)])) < TOL
    sd3.swap("k", k.path)
    assert max_diff(_img(sd3), first) < TOL


def test_families_do_not_mix(flux, sd3, files, adapters, xl_adapters) -> None:
    from lorahub.errors import AdapterCompatibilityError

    cases = [(sd3, files["flux-kohya"].path, "Flux.1", "SD3"), (flux, files["sd3-peft"].path, "SD3", "Flux.1"),
             (sd3, adapters["a"], "SD 1.x", "SD3"), (flux, xl_adapters["a"], "SDXL", "Flux.1")]
    for live, path, made_for, base in cases:
        _reset(live)
        with pytest.raises(AdapterCompatibilityError) as err:
            live.add("x", path)
        msg = str(err.value)
        assert made_for in msg and base in msg and "\n" not in msg, msg
        assert not live.adapters and not any(live.slots.values())


# ------------------------------------------------------------------------------------ the command


def _invoke(*args: str):  # noqa: ANN202
    from lorahub.cli.main import cli

    return CliRunner().invoke(cli, list(args))


def test_cli_preview_grid_and_errors_on_flux(embedded_flux_base: Path, lorahub_home: Path, files, xl_adapters,
                                             tmp_path: Path, one_thread) -> None:
    from PIL import Image

    from lorahub.base.embedded import embedded_path
    from lorahub.base.embedded_mmdit import FLUX_ID

    target = embedded_path(lorahub_home, family="flux")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_flux_base, target_is_directory=True)
    common = ("--base", FLUX_ID, "--steps", "1")
    k, x = str(files["flux-kohya"].path), str(files["flux-xlabs"].path)
    grid = _invoke("preview", *common, "--lora", f"{k}:0.5:1", "--lora", x, "--prompt", "a cat", "--grid",
                   "--grid-weights", "0,1", "-o", str(tmp_path / "grid.png"), "--json")
    assert grid.exit_code == 0, grid.output
    g = json.loads(grid.stdout)
    assert g["images"] == 4 and g["stats"]["base_loads"] == 1 and g["stats"]["reloads"] == 0
    with Image.open(tmp_path / "grid.png") as im:
        assert im.width > 2 * 64 and im.height > 2 * 64  # native size 64 px per cell
    one = _invoke("preview", *common, "--lora", k, "--prompt", "a cat", "-o", str(tmp_path / "one.png"))
    assert one.exit_code == 0, one.output
    with Image.open(tmp_path / "one.png") as im:
        assert im.size == (64, 64)
    for bad_file, fam in ((xl_adapters["a"], "SDXL"), (files["sd3-kohya"].path, "SD3")):
        bad = _invoke("preview", *common, "--lora", str(bad_file), "--prompt", "x", "-o", str(tmp_path / "x.png"))
        err = [line for line in bad.stderr.splitlines() if line.startswith("Error")]
        assert bad.exit_code == 1 and len(err) == 1 and fam in err[0] and "Flux.1" in err[0], bad.output
        assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_flux_swaps_and_weight_changes_do_not_recompile(embedded_flux_base: Path, files, one_thread) -> None:
    """Under torch.compile (eager backend) the Flux transformer is compiled once; swaps between kohya, ComfyUI,
    XLabs and PEFT files and per-component weight changes never recompile it (torch's own counter)."""
    from torch._dynamo.utils import counters

    from lorahub.pipeline.live import LivePipeline

    live = LivePipeline(embedded_flux_base, target_rank=8, compile="eager")
    live.add("a", files["flux-kohya"].path)
    live.add("b", files["flux-peft"].path, weight=0.5)
    first = live.render("a cat", steps=1, output_type="np").image  # compiles
    frames = int(counters["frames"]["total"])
    for i, name in enumerate(["flux-xlabs", "flux-comfyui", "flux-peft", "flux-kohya"]):
        live.swap("a" if i % 2 == 0 else "b", files[name].path)
        live.set_weight("b", te=0.5, unet=0.25 + 0.1 * i)
        live.render("a cat", steps=1, output_type="np")
    live.disable("a")
    last = live.render("a cat", steps=1, output_type="np").image
    assert int(counters["frames"]["total"]) == frames and live.recompilations() == 0
    assert live.stats["hotswaps"] == 4 and live.stats["reloads"] == 0
    assert float(abs(last - first).max()) > 1e-3
    live.close()
