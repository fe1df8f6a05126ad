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

from interop_kit import is_kohya_layout, load_collecting, quiet_logs, read_tensors  # noqa: E402
from tool_rules import FAMILIES, comfy_load, kohya_check, plain_load  # noqa: E402

STRENGTH = 0.7
METHODS = ("linear", "cat", "svd", "ties", "dare")
LAYOUTS = ("kohya", "diffusers")
KINDS = (
    ["train-diffusers", "train-kohya", "convert-a-kohya", "convert-b-diffusers"]
    + [f"blend-{m}-{f}" for m in METHODS for f in LAYOUTS]
    + [f"{algo}-{job}-{f}" for algo in ("loha", "lokr") for job in ("blend", "convert") for f in LAYOUTS]
)
LYCO_META = {"ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_network_module": "lycoris.kohya",
             "modelspec.architecture": "stable-diffusion-v1/lora"}


def write_lycoris(path: Path, pipe: Any, algo: str, seed: int) -> Path:
    """A LyCORIS LoHa/LoKr file for ``pipe`` (which it hooks), made and saved by the lycoris-lora package itself.

    Targets the transformer blocks (proj_in/proj_out are 1x1 convolutions in SD 1.x), the resnets and the
    samplers (3x3 convolutions) and the text encoder. The factors are random (lycoris initialises one side
    to zero, which would make every update 0).
    """
    lycoris_config = pytest.importorskip("lycoris.config")
    from lycoris.kohya import create_network

    preset = {"enable_conv": True, "unet_target_module": ["Transformer2DModel", "ResnetBlock2D", "Downsample2D",
                                                          "Upsample2D"],
              "unet_target_name": [], "text_encoder_target_module": ["CLIPAttention", "CLIPMLP"],
              "text_encoder_target_name": []}
    lycoris_config.PRESET["lorahub-test"] = preset

    class TextModel(torch.nn.Module):  # transformers 5 has no text_model level; real files name it
        def __init__(self, te: Any) -> None:
            super().__init__()
            self.text_model = te

    te = TextModel(pipe.text_encoder)
    torch.manual_seed(seed)
    with quiet_logs():
        net = create_network(1.0, 4, 2, None, te, pipe.unet, algo=algo, preset="lorahub-test", factor=4)
    net.apply_to(te, pipe.unet, apply_text_encoder=True, apply_unet=True)  # registers the modules (and hooks pipe)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    net.save_weights(str(path), torch.float32, dict(LYCO_META))
    return path


@pytest.fixture(scope="module")
def pipe(embedded_base: Path, one_thread: None) -> Any:
    from lorahub.base.resolve import load_pipeline

    return load_pipeline(embedded_base)


@pytest.fixture(scope="module")
def written(adapters: dict[str, Path], pipe: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> a file lorahub wrote, for every kind in KINDS (LyCORIS kinds only with lycoris-lora)."""
    from lorahub.pipeline.blend import DENSITY_METHODS, blend
    from lorahub.pipeline.convert import convert
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.demo_data import make_demo_dataset
    from lorahub.training.trainer import train

    d = tmp_path_factory.mktemp("written")
    out: dict[str, Path] = {}
    # a: diffusers rank 4 alpha 2 + TE; b: kohya rank 8 alpha 16 + TE; c: kohya rank 2, UNet only
    items = [(adapters["a"], 0.6), (adapters["b"], 0.4), (adapters["c"], 0.7)]
    for method in METHODS:
        for fmt in LAYOUTS:
            kw: dict[str, Any] = {"density": 0.6} if method in DENSITY_METHODS else {}
            res = blend(items, method=method, rank=None if method in ("linear", "cat") else 6, format=fmt,
                        out=d / f"blend-{method}-{fmt}.safetensors", dtype="float32", **kw)
            out[f"blend-{method}-{fmt}"] = Path(res.path)
    out["convert-a-kohya"] = Path(convert(adapters["a"], d / "a-kohya.safetensors", dtype="float32").path)
    out["convert-b-diffusers"] = Path(convert(adapters["b"], d / "b-diffusers.safetensors", format="diffusers",
                                              dtype="float32").path)
    data = make_demo_dataset(d / "data", count=2, size=64)
    res = train(TrainConfig(data=str(data), out=str(d / "trained"), trigger="tstyle", rank=4, alpha=2, steps=2,
                            lr=1e-2, resolution=64, train_text_encoder=True, save_precision="fp32", sample_steps=1,
                            seed=3), log=lambda _m: None, progress=False)
    out["train-diffusers"], out["train-kohya"] = Path(res.weights), Path(res.kohya_weights)
    try:
        import lycoris  # noqa: F401
    except ImportError:
        return out
    from lorahub.base.embedded import build_pipeline

    for seed, algo in enumerate(("loha", "lokr")):
        src = write_lycoris(d / f"{algo}.safetensors", build_pipeline(0), algo, seed)  # lycoris hooks its pipeline
        out[algo] = src
        for fmt in LAYOUTS:
            res = blend([(src, 0.8), (adapters["a"], 0.5)], method="linear", format=fmt, dtype="float32",
                        out=d / f"{algo}-blend-{fmt}.safetensors")
            out[f"{algo}-blend-{fmt}"] = Path(res.path)
            out[f"{algo}-convert-{fmt}"] = Path(convert(src, d / f"{algo}-convert-{fmt}.safetensors", format=fmt,
                                                        dtype="float32", rank=64).path)
    return out


def _file(written: dict[str, Path], kind: str) -> Path:
    if kind not in written:
        pytest.skip("lycoris-lora is not installed: no LyCORIS file to start from")
    return written[kind]


@pytest.fixture(scope="module")
def rules(pipe: Any) -> Any:
    return FAMILIES["sd1"](pipe)


@pytest.fixture(scope="module")
def base_weights(pipe: Any) -> dict[tuple[str, str], Any]:
    out = {}
    for comp in ("unet", "text_encoder"):
        for name, mod in getattr(pipe, comp).named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                out[(comp, name)] = mod.weight.detach().clone()
    return out


def _targets(base_weights: dict[tuple[str, str], Any]) -> dict[tuple[str, str], tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in base_weights.items()}


def _file_update(tensors: dict[str, Any], rules: Any, base_weights: dict) -> dict[tuple[str, str], Any]:
    """The update the file describes, computed by a loader that reads only tensors: ComfyUI's rule for the
    kohya layout, plain ``up @ down`` (alpha = rank) for the diffusers layout."""
    if is_kohya_layout(tensors):
        loaded = comfy_load(tensors, rules)
    else:
        loaded = plain_load(tensors, _targets(base_weights))
    assert not loaded.unloaded and not loaded.shape_errors, (loaded.unloaded[:3], loaded.shape_errors[:3])
    return loaded.deltas


@pytest.fixture
def clean(pipe: Any, base_weights: dict) -> Iterator[None]:
    yield
    try:
        pipe.unfuse_lora()
    except Exception:  # noqa: BLE001 - nothing fused
        pass
    pipe.unload_lora_weights()
    for (comp, name), w in base_weights.items():  # exact base weights back, whatever happened
        mod = getattr(pipe, comp).get_submodule(name)
        mod.weight.data.copy_(w)


@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_loads_every_module_at_the_intended_strength(kind, written, pipe, rules, base_weights, clean) -> None:
    from lorahub.adapters.inspect import inspect_file

    path = _file(written, kind)
    report = inspect_file(path)
    assert report.diffusers_loadable, report.warnings
    tensors = read_tensors(path)
    expected = _file_update(tensors, rules, base_weights)
    messages, adapters = load_collecting(pipe, path)
    assert not messages, messages[:3]
    components = {comp for comp, _ in expected}
    assert {c for c, names in adapters.items() if "probe" in names} == components
    pipe.fuse_lora(components=sorted(components), lora_scale=STRENGTH, adapter_names=["probe"])
    changed = {}
    for (comp, name), w in base_weights.items():
        now = getattr(pipe, comp).get_submodule(name)
        weight = now.base_layer.weight if hasattr(now, "base_layer") else now.weight
        if not torch.equal(weight.detach(), w):
            changed[(comp, name)] = weight.detach() - w
    assert set(changed) == set(expected), sorted(set(changed) ^ set(expected))[:3]
    for key, delta in expected.items():
        want = STRENGTH * delta
        assert torch.allclose(changed[key], want, atol=1e-5 + 1e-3 * float(want.abs().max())), key


@pytest.mark.parametrize("kind", KINDS)
def test_key_layout_matches_the_tools_that_are_said_to_load_it(kind, written, rules, base_weights) -> None:
    from lorahub.adapters.inspect import inspect_file

    path = _file(written, kind)
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

    path = _file(written, kind)
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
        src = _file(written, algo)
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
