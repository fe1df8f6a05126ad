"""``preview`` on the embedded SDXL base: hot-swap, per-adapter and per-component weights (UNet, TE1, TE2),
``<lora:...>`` prompts, grids, ``--interactive``/``--script``, and the family errors.

Every image is compared with what plain diffusers makes on a separate ``StableDiffusionXLPipeline``
(``load_lora_weights`` + ``set_adapters`` with per-component weights), so a corrupted, rescaled or silently
missing adapter (or text encoder) shows up as a numerical difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pipeline_testkit import PROMPT, max_diff

pytestmark = pytest.mark.torch
pytest.importorskip("diffusers")

TOL = 1e-3  # images in [0, 1]


@pytest.fixture(scope="module")
def live(embedded_xl_base: Path, xl_adapters: dict[str, Path], one_thread: None):
    from lorahub.pipeline.live import LivePipeline

    lp = LivePipeline(embedded_xl_base, target_rank=16, lora_dirs=[xl_adapters["a"].parent])
    assert lp.base.family == "sdxl" and lp.base.pipeline_class == "StableDiffusionXLPipeline"
    yield lp
    lp.close()


def _img(live: Any, seed: int = 0) -> Any:
    return live.render(PROMPT, seed=seed, steps=2, output_type="np").image


def _reset(live: Any) -> None:
    for name in [a.name for a in live.adapters]:
        live.remove(name, unload=True)


def _scalings(live: Any, comp: str, slot: str) -> set[float]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {round(float(m.scaling[slot]), 6) for m in getattr(live.pipe, comp).modules()
            if isinstance(m, BaseTunerLayer) and slot in getattr(m, "scaling", {})}


def test_adapters_render_as_plain_diffusers_and_hot_swap(live, xl_adapters, xl_reference) -> None:
    a, b, c = xl_adapters["a"], xl_adapters["b"], xl_adapters["c"]
    _reset(live)
    ad_a = live.add("a", a, weight=0.8)
    ad_b = live.add("b", b, te=0.5, unet=0.7)
    assert ad_a.components == ad_b.components == ("text_encoder", "text_encoder_2", "unet")
    both = {"unet": 0.7, "text_encoder": 0.5, "text_encoder_2": 0.5}
    first = _img(live)
    assert max_diff(first, xl_reference([(a, 0.8), (b, both)])) < TOL
    # hot-swap a (diffusers, UNet + TE1 + TE2) for c (kohya with SGM names, UNet only): same slot, no reload
    before = dict(live.stats)
    live.swap("a", c)
    assert live.stats["hotswaps"] == before["hotswaps"] + 1 and live.stats["reloads"] == before["reloads"]
    assert live.stats["base_loads"] == 1
    assert max_diff(_img(live), xl_reference([(c, 0.8), (b, both)])) < TOL
    live.swap("a", a)  # and back: the text-encoder parts return with it, the weight is kept
    assert live.adapter("a").unet_weight == 0.8
    assert max_diff(_img(live), first) < TOL
    # between two adapters with text-encoder parts, TE1's and TE2's are put into the slot's existing layers
    # (diffusers refuses to hot-swap text encoders), and the cached first file stays intact for the way back
    slot = live.adapter("a").slot
    layers = {c: [m for m in _layers(live, c) if slot in m.lora_A] for c in ("text_encoder", "text_encoder_2")}
    live.swap("a", b)
    assert {c: [m for m in _layers(live, c) if slot in m.lora_A] for c in layers} == layers
    assert max_diff(_img(live), xl_reference([(b, 0.8), (b, both)])) < TOL
    live.swap("a", a)
    assert max_diff(_img(live), first) < TOL
    assert live.stats["reloads"] == before["reloads"] and live.stats["base_loads"] == 1


def _layers(live: Any, comp: str) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in getattr(live.pipe, comp).modules() if isinstance(m, BaseTunerLayer)]


def test_per_component_weights_unet_te1_te2(live, xl_adapters, xl_reference) -> None:
    a = xl_adapters["a"]
    _reset(live)
    ad = live.add("a", a)
    live.set_weight("a", te=0.3, unet=0.9, te2=0.6)
    # alpha == r in every slot (folded in): the layers' scalings are the weights themselves, per component
    assert _scalings(live, "unet", ad.slot) == {0.9}
    assert _scalings(live, "text_encoder", ad.slot) == {0.3}
    assert _scalings(live, "text_encoder_2", ad.slot) == {0.6}
    img = _img(live)
    assert max_diff(img, xl_reference([(a, {"unet": 0.9, "text_encoder": 0.3, "text_encoder_2": 0.6})])) < TOL
    live.set_weight("a", te=0.3, unet=0.9, te2=0.0)
    no_te2 = _img(live)
    assert max_diff(no_te2, xl_reference([(a, {"unet": 0.9, "text_encoder": 0.3, "text_encoder_2": 0.0})])) < TOL
    assert max_diff(no_te2, img) > 1e-3  # the second encoder's LoRA matters
    assert "te2 0" in live.adapter("a").label()
    live.set_weight("a", 0.5)  # one weight: every component again
    assert live.adapter("a").te2_weight is None and _scalings(live, "text_encoder_2", ad.slot) == {0.5}


def test_prompt_tags_weigh_each_component(live, xl_adapters, xl_reference) -> None:
    a, b = xl_adapters["a"], xl_adapters["b"]
    _reset(live)
    r = live.render(f"<lora:a:0.5:1:te2=0> {PROMPT} <lora:b:0.8>", steps=2, output_type="np")
    assert r.prompt == PROMPT
    assert {x["name"]: (x["te_weight"], x["unet_weight"], x.get("te2_weight")) for x in r.adapters} == \
        {"a": (0.5, 1.0, 0.0), "b": (0.8, 0.8, None)}  # te2_weight only where it is set apart
    want = xl_reference([(a, {"unet": 1.0, "text_encoder": 0.5, "text_encoder_2": 0.0}), (b, 0.8)])
    assert max_diff(r.image, want) < TOL
    assert "<lora:a:te=0.5:unet=1:te2=0> <lora:b:0.8>" in r.infotext()
    # A1111 semantics: adapters without a tag in the next prompt are off
    r2 = live.render(f"<lora:b:0.8> {PROMPT}", steps=2, output_type="np")
    assert [x["name"] for x in r2.adapters] == ["b"]
    assert max_diff(r2.image, xl_reference([(b, 0.8)])) < TOL


def test_kohya_sdxl_file_with_sgm_keys_loads(live, xl_reference, tmp_path: Path) -> None:
    """A kohya SDXL LoRA written as kohya lays it out (tests/kohyakit.py, for the tiny SDXL's widths: SGM UNet
    names, lora_te1_/lora_te2_, every transformer-block module) loads fully in the live pipeline and in diffusers."""
    from kohyakit import write_kohya

    from lorahub.adapters.inspect import inspect_file

    path = write_kohya(tmp_path / "kohya_xl.safetensors", "sdxl-tiny", rank=4, alpha=2, dtype="float32", seed=3)
    report = inspect_file(path)
    assert report.base_family == "sdxl" and report.modules == 240
    assert report.loaders == ["diffusers", "a1111", "comfyui", "kohya"]
    _reset(live)
    ad = live.add("k", path, weight=0.7)
    assert ad.components == ("text_encoder", "text_encoder_2", "unet") and not ad.warnings
    assert max_diff(_img(live), xl_reference([(path, 0.7)])) < TOL


def test_sd1_and_sdxl_adapters_do_not_mix(live, adapters, xl_adapters, embedded_base: Path) -> None:
    from lorahub.errors import AdapterCompatibilityError
    from lorahub.pipeline.live import LivePipeline

    _reset(live)
    with pytest.raises(AdapterCompatibilityError) as err:
        live.add("sd1", adapters["a"])
    msg = str(err.value)
    assert "SD 1.x" in msg and "SDXL" in msg and "\n" not in msg
    assert not live.adapters and not any(live.slots.values())
    sd1 = LivePipeline(embedded_base, target_rank=8)
    try:
        for key in ("a", "c"):  # with text encoders (te1 + te2) and UNet only (SGM names)
            with pytest.raises(AdapterCompatibilityError) as err:
                sd1.add("xl", xl_adapters[key])
            assert "SDXL" in str(err.value) and "SD 1.x" in str(err.value)
    finally:
        sd1.close()


# ------------------------------------------------------------------------------------ the command


def _invoke(*args: str, stdin: str | None = None):  # noqa: ANN202
    from lorahub.cli.main import cli

    return CliRunner().invoke(cli, list(args), input=stdin)


def test_cli_grid_script_interactive_and_errors_on_sdxl(embedded_xl_home: Path, xl_adapters, adapters,
                                                        tmp_path: Path, one_thread) -> None:
    from PIL import Image

    from lorahub.base.embedded import SDXL_ID

    a, b, c = (str(xl_adapters[k]) for k in "abc")
    common = ("--base", SDXL_ID, "--steps", "1", "--size", "64x64")
    grid = _invoke("preview", *common, "--lora", f"{a}:0.5:1:te2=0", "--lora", b, "--prompt", "a cat", "--grid",
                   "--grid-weights", "0,1", "-o", str(tmp_path / "grid.png"), "--json")
    assert grid.exit_code == 0, grid.output
    g = json.loads(grid.stdout)
    assert g["images"] == 4 and g["stats"]["base_loads"] == 1 and g["stats"]["reloads"] == 0
    with Image.open(tmp_path / "grid.png") as im:
        assert im.width > 2 * 64 and im.height > 2 * 64

    script = tmp_path / "steps.json"
    script.write_text(json.dumps([
        {"add": {"a": {"source": a, "weight": [0.5, 1.0, 0.25]}}, "prompt": "a cat", "out": "one.png"},
        {"swap": {"a": c}, "prompt": "a cat"},
        {"weights": {"a": [0.2, 0.6, 0.0]}, "prompt": "<lora:a:te=0.2:unet=0.6:te2=0> a cat"},
    ]))
    run = _invoke("preview", *common, "--script", str(script), "-o", str(tmp_path / "s.png"), "--json")
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    assert summary["images"] == 3 and summary["base_loads"] == 1 and summary["errors"] == 0
    assert summary["stats"]["hotswaps"] == 1 and summary["stats"]["reloads"] == 0
    adds = [e for e in summary["events"] if e["kind"] == "add"]
    assert "te2 0.25" in adds[0]["message"]
    assert (tmp_path / "one.png").exists()

    lines = f":add a {a} 0.7\n:weight a 0.5 1 0\na cat\n:swap a {c}\na cat\n:list\n:quit\n"
    inter = _invoke("preview", *common, "--interactive", "-o", str(tmp_path / "i.png"), stdin=lines)
    assert inter.exit_code == 0, inter.output
    assert "2 image(s)" in inter.output and "1 hot-swap(s), 0 reload(s), 0 error(s)" in inter.output
    assert "te 0.5, unet 1, te2 0" in inter.output

    # an SD 1.x adapter on the SDXL base: one line, both families named, exit 1
    bad = _invoke("preview", *common, "--lora", str(adapters["a"]), "--prompt", "x", "-o", str(tmp_path / "x.png"))
    err = [line for line in bad.stderr.splitlines() if line.startswith("Error")]
    assert bad.exit_code == 1 and len(err) == 1 and "SDXL" in err[0] and "SD 1.x" in err[0], bad.output
    assert not (tmp_path / "x.png").exists()
