"""Every adapter file lorahub writes loads fully, at the intended strength, in the tools people load it in.

The files: a trained package (both layouts), every blend method in both layouts, conversions, and blends
and conversions of LyCORIS LoHa/LoKr files written here with the ``lycoris-lora`` package's own code.

- diffusers is run for real: ``load_lora_weights`` into the embedded SD 1.x pipeline must not refuse the
  file or warn about keys, every component of the file must show in ``get_list_adapters()``, and the
  weights ``fuse_lora`` writes must move by exactly the update the file describes (every module, no other
  weight); ``inspect``'s ``diffusers_loadable`` must agree with the outcome.
- ComfyUI and kohya are checked against their documented key mappings and update rule, re-implemented in
  ``tool_rules.py`` (with the citations): every key of a file that lorahub says a tool loads fully
  (``InspectReport.loaders``) must be consumed by that tool's rules with the right shapes, and the update
  ComfyUI computes (``up @ down * alpha / rank * strength``) must equal the one diffusers applied.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from interop_kit import (  # noqa: E402
    COMMON_KINDS,
    LAYOUTS,
    STRENGTH,
    file_update,
    fused_changes,
    is_kohya_layout,
    kind_file,
    load_collecting,
    module_weights,
    quiet_logs,
    read_tensors,
    restore,
    write_kinds,
)
from tool_rules import FAMILIES, comfy_load, kohya_check, plain_load  # noqa: E402

KINDS = COMMON_KINDS + [f"{algo}-{job}-{f}" for algo in ("loha", "lokr") for job in ("blend", "convert") for f in LAYOUTS]
LYCO_META = {"ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_network_module": "lycoris.kohya",
             "modelspec.architecture": "stable-diffusion-v1/lora"}


@pytest.fixture(scope="module")
def pipe(embedded_base: Path, one_thread: None) -> Any:
    from lorahub.base.resolve import load_pipeline

    return load_pipeline(embedded_base)


@pytest.fixture(scope="module")
def written(adapters: dict[str, Path], pipe: Any, embedded_base: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> a file lorahub wrote, for every kind in KINDS (LyCORIS kinds only with lycoris-lora).

    a: diffusers rank 4 alpha 2 + TE; b: kohya rank 8 alpha 16 + TE; c: kohya rank 2, UNet only. The LyCORIS
    files target the transformer blocks (proj_in/proj_out are 1x1 convolutions in SD 1.x), the resnets and
    the samplers (3x3 convolutions) and the text encoder."""
    from lorahub.base.resolve import load_pipeline

    return write_kinds(tmp_path_factory.mktemp("written"), adapters, {"trigger": "tstyle", "base": str(embedded_base)},
                       {"loha": 0, "lokr": 1}, lambda _seed: load_pipeline(embedded_base), LYCO_META)


@pytest.fixture(scope="module")
def rules(pipe: Any) -> Any:
    return FAMILIES["sd1"](pipe)


@pytest.fixture(scope="module")
def base_weights(pipe: Any) -> dict[tuple[str, str], Any]:
    return module_weights(pipe, ("unet", "text_encoder"))


@pytest.fixture
def clean(pipe: Any, base_weights: dict) -> Iterator[None]:
    yield
    restore(pipe, base_weights)


@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_loads_every_module_at_the_intended_strength(kind, written, pipe, rules, base_weights, clean) -> None:
    from lorahub.adapters.inspect import inspect_file

    path = kind_file(written, kind)
    report = inspect_file(path)
    assert report.diffusers_loadable, report.warnings
    tensors = read_tensors(path)
    expected = file_update(tensors, rules, base_weights)
    messages, adapters = load_collecting(pipe, path)
    assert not messages, messages[:3]
    components = {comp for comp, _ in expected}
    assert {c for c, names in adapters.items() if "probe" in names} == components
    pipe.fuse_lora(components=sorted(components), lora_scale=STRENGTH, adapter_names=["probe"])
    changed = fused_changes(pipe, base_weights)
    assert set(changed) == set(expected), sorted(set(changed) ^ set(expected))[:3]
    for key, delta in expected.items():
        want = STRENGTH * delta
        assert torch.allclose(changed[key], want, atol=1e-5 + 1e-3 * float(want.abs().max())), key


@pytest.mark.parametrize("kind", KINDS)
def test_key_layout_matches_the_tools_that_are_said_to_load_it(kind, written, rules, base_weights) -> None:
    from lorahub.adapters.inspect import inspect_file

    path = kind_file(written, kind)
    report = inspect_file(path)
    tensors = read_tensors(path)
    comfy = comfy_load(tensors, rules)
    if is_kohya_layout(tensors):
        assert report.loaders == ["diffusers", "a1111", "comfyui", "kohya"]
        assert not comfy.unloaded and not comfy.shape_errors, (comfy.unloaded[:3], comfy.shape_errors[:3])
        kohya = kohya_check(tensors, rules)
        assert not kohya.unloaded and not kohya.shape_errors, (kohya.unloaded[:3], kohya.shape_errors[:3])
        assert set(kohya.deltas) == set(comfy.deltas)
        for key, d in kohya.deltas.items():
            assert torch.allclose(d, comfy.deltas[key], atol=1e-6), key
    else:
        # the diffusers layout: ComfyUI leaves the UNet attention modules unloaded (so lorahub does not
        # claim it), and a loader that ignores metadata applies what diffusers applies (alpha folded)
        assert report.loaders == ["diffusers"]
        assert any(".attn1.to_q." in k for k in comfy.unloaded)
    # conv modules (SD 1.x: proj_in/proj_out 1x1, resnet and sampler convs 3x3) keep their 4-D shapes
    conv = re.compile(r"(proj_in|proj_out|conv[12]|conv_shortcut|samplers[._]0[._]conv)[._](lora_down|lora_A)")
    convs = [t for k, t in tensors.items() if conv.search(k)]
    assert all(t.ndim == 4 for t in convs)
    assert bool(convs) == any(s in kind for s in ("loha", "lokr"))  # the only inputs with conv modules


@pytest.mark.parametrize("kind", KINDS)
def test_kohya_hashes_are_embedded_as_kohya_computes_them(kind, written) -> None:
    """sshs_model_hash / sshs_legacy_hash: kohya-ss/sd-scripts library/train_util.py
    precalculate_safetensors_hashes (in-memory safetensors.torch.save with the ss_* metadata only, then
    addnet_hash_safetensors and addnet_hash_legacy), recomputed here with safetensors.torch itself."""
    from safetensors.torch import save

    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.adapters.header import read_header

    path = kind_file(written, kind)
    md = read_header(path).string_metadata()
    blob = save(read_tensors(path), {k: v for k, v in md.items() if k.startswith("ss_")})
    n = int.from_bytes(blob[:8], "little")
    assert md["sshs_model_hash"] == hashlib.sha256(blob[8 + n :]).hexdigest()
    legacy = hashlib.sha256()
    stream = io.BytesIO(blob)
    stream.seek(0x100000)
    legacy.update(stream.read(0x10000))
    assert md["sshs_legacy_hash"] == legacy.hexdigest()[0:8]
    fp = fingerprint_file(path)
    assert fp.embedded_hash == "match"


def test_lycoris_inputs_are_refused_by_diffusers_and_inspect_says_so(written, pipe, clean) -> None:
    """Negative controls: what diffusers refuses, inspect reports as not loadable."""
    from lorahub.adapters.inspect import inspect_file

    for algo in ("loha", "lokr"):
        src = kind_file(written, algo)
        assert not inspect_file(src).diffusers_loadable
        with pytest.raises(ValueError), quiet_logs():
            pipe.load_lora_weights(str(src), adapter_name="probe")
        pipe.unload_lora_weights()


def test_2d_factors_on_the_conv_projections_are_refused_and_reported(adapters, pipe, clean, tmp_path) -> None:
    """The old blend bug: [r, 320] factors on SD 1.x's [320, 320, 1, 1] proj_in. diffusers refuses the whole
    file; inspect must say so (and lorahub never writes it)."""
    from lorahub.adapters.inspect import inspect_file
    from lorahub.adapters.writer import write_numpy
    from lorahub.base.synthetic import make_adapter

    good = make_adapter(tmp_path / "proj.safetensors", rank=2, fmt="kohya", targets=("proj_in",))
    tensors = {k: v for k, v in read_tensors(good).items()}
    flat = {k: (v.reshape(v.shape[0], -1) if v.ndim == 4 else v).numpy() for k, v in tensors.items()}
    bad = write_numpy(tmp_path / "proj-2d.safetensors", flat, {"ss_base_model_version": "sd_v1"})
    assert inspect_file(good).diffusers_loadable
    report = inspect_file(bad)
    assert not report.diffusers_loadable and report.loaders == []
    assert any("2-D factors" in w and "convolution" in w for w in report.warnings), report.warnings
    with pytest.raises(Exception), quiet_logs():  # noqa: B017 - diffusers raises RuntimeError/ValueError
        pipe.load_lora_weights(str(bad), adapter_name="probe")


@pytest.mark.parametrize("which", ["lokr_file", "real_lokr_file"])
def test_sd15_lokr_converts_to_layouts_sd15_tools_load(which: str, request: pytest.FixtureRequest,
                                                        tmp_path: Path) -> None:
    """An SD 1.5 LoKr (written by lycoris-lora; the real one from ../shared as an extra check): converted to
    both layouts, checked against the rules on SD 1.5's own module tree (built on the meta device: shapes
    without weights)."""
    fixture = request.getfixturevalue(which)
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lorahub.adapters.inspect import inspect_file
    from lorahub.pipeline.convert import convert

    class SD15:
        with torch.device("meta"):
            unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
            text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072,
                                                        num_attention_heads=12, num_hidden_layers=12))

    rules = FAMILIES["sd1"](SD15)
    targets = {(t.component, t.path): t.shape for t in rules.kohya.values()}
    for fmt in LAYOUTS:
        out = Path(convert(fixture, tmp_path / f"falcon-{fmt}.safetensors", format=fmt, dtype="float32").path)
        report = inspect_file(out)
        assert report.base_family == "sd1" and report.diffusers_loadable
        tensors = read_tensors(out)
        if fmt == "kohya":
            comfy, kohya = comfy_load(tensors, rules), kohya_check(tensors, rules)
            assert not comfy.unloaded and not comfy.shape_errors, comfy.shape_errors[:3]
            assert not kohya.unloaded and not kohya.shape_errors, kohya.shape_errors[:3]
            assert len(kohya.deltas) == report.modules == inspect_file(fixture).modules
        else:
            plain = plain_load(tensors, targets)
            assert not plain.unloaded and not plain.shape_errors, plain.shape_errors[:3]
            assert len(plain.deltas) == inspect_file(fixture).modules
        proj = [v for k, v in tensors.items() if "proj_in" in k and ("lora_down" in k or "lora_A" in k)]
        assert proj and all(t.ndim == 4 and t.shape[2:] == (1, 1) for t in proj)
