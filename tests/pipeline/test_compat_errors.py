"""Compatibility checks before loading, LyCORIS conversion, and no silent no-op loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_testkit import GUIDANCE, PROMPT, max_diff

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def live(embedded_base: Path, one_thread: None):
    from lorahub.pipeline.live import LivePipeline

    lp = LivePipeline(embedded_base, target_rank=16)
    yield lp
    lp.close()


def _modules(embedded_base: Path):
    from lorahub.base.synthetic import target_modules

    return target_modules(embedded_base, ("to_q", "to_k", "to_v", "to_out.0"))


def _split(n: int) -> tuple[int, int]:
    return (4, n // 4) if n % 4 == 0 else (1, n)


SD1_META = {"ss_base_model_version": "sd_v1", "ss_network_module": "lycoris.kohya"}


@pytest.fixture(scope="module")
def lycoris_files(embedded_base: Path, tmp_path_factory) -> dict[str, Path]:
    """A LoKr (full w1, factored w2, rank 2) and a LoHa (rank 3) for the embedded base, kohya names."""
    import numpy as np

    from lorahub.adapters.writer import write_numpy
    from lorahub.base.synthetic import kohya_name

    rng = np.random.default_rng(7)
    lokr, loha = {}, {}
    for m in _modules(embedded_base):
        out, inn = m.shape[0], m.shape[1]
        o1, o2 = _split(out)
        i1, i2 = _split(inn)
        k = kohya_name(m)
        lokr[f"{k}.lokr_w1"] = rng.standard_normal((o1, i1)).astype("float32")
        lokr[f"{k}.lokr_w2_a"] = (rng.standard_normal((o2, 2)) * 0.3).astype("float32")
        lokr[f"{k}.lokr_w2_b"] = (rng.standard_normal((2, i2)) / np.sqrt(inn)).astype("float32")
        lokr[f"{k}.alpha"] = np.asarray(1.0, dtype="float32")  # scale alpha / r = 0.5
        for part, shape in (("hada_w1_a", (out, 3)), ("hada_w1_b", (3, inn)), ("hada_w2_a", (out, 3)), ("hada_w2_b", (3, inn))):
            loha[f"{k}.{part}"] = (rng.standard_normal(shape) * 0.4).astype("float32")
        loha[f"{k}.alpha"] = np.asarray(3.0, dtype="float32")
    d = tmp_path_factory.mktemp("lycoris")
    return {
        "lokr": write_numpy(d / "tiny_lokr.safetensors", lokr, SD1_META),
        "loha": write_numpy(d / "tiny_loha.safetensors", loha, SD1_META),
    }


def _loaded_delta(live, name: str, module_path: str):
    """scaling * B @ A that the pipeline holds for adapter ``name`` in a UNet module."""
    slot = live.adapter(name).slot
    mod = live.pipe.unet.get_submodule(module_path)
    a = mod.lora_A[slot].weight.detach().float()
    b = mod.lora_B[slot].weight.detach().float()
    return float(mod.scaling[slot]) * (b @ a)


# ---------------------------------------------------------------------------------------------- families


def test_sdxl_adapter_on_the_sd1_base_names_both_families(live, sdxl_kohya_file: Path) -> None:
    from lorahub.errors import AdapterCompatibilityError

    with pytest.raises(AdapterCompatibilityError) as err:
        live.add("xl", sdxl_kohya_file)
    msg = str(err.value)
    assert "SDXL" in msg and "SD 1.x" in msg and sdxl_kohya_file.name in msg
    assert "\n" not in msg
    assert not live.slots and not live.adapters  # nothing was loaded


def test_sd15_adapter_on_the_tiny_base_is_a_width_error(live, sd15_kohya_file: Path) -> None:
    from lorahub.errors import AdapterCompatibilityError

    with pytest.raises(AdapterCompatibilityError, match=r"width 768 \(SD 1\.x\).*has width 64"):
        live.add("sd15", sd15_kohya_file)
    assert not live.slots


def test_lokr_on_the_tiny_base_is_refused_by_width(live, lokr_file: Path) -> None:
    from lorahub.errors import AdapterCompatibilityError

    with pytest.raises(AdapterCompatibilityError, match="768"):
        live.add("falcon", lokr_file)


def test_legacy_cloneofsimo_is_refused_with_the_reason(live, legacy_files: list[Path]) -> None:
    from lorahub.errors import AdapterCompatibilityError

    assert legacy_files
    with pytest.raises(AdapterCompatibilityError) as err:
        live.add("old", legacy_files[0])
    msg = str(err.value)
    assert "cloneofsimo" in msg and "refused" in msg and "by index" in msg


def test_shape_mismatch_in_one_module_is_an_error(live, adapters, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from lorahub.adapters.writer import write_numpy
    from lorahub.errors import AdapterCompatibilityError

    arrays = load_file(str(adapters["e"]))
    key = next(k for k in sorted(arrays) if k.endswith("attn1.to_q.lora_A.weight"))
    arrays[key] = arrays[key][:, :16].copy()  # in-features 16 instead of 32
    bad = write_numpy(tmp_path / "narrow.safetensors", arrays, {"modelspec.architecture": "stable-diffusion-v1/lora"})
    with pytest.raises(AdapterCompatibilityError, match=r"16 in the adapter but 32x32"):
        live.add("narrow", bad)


# ---------------------------------------------------------------------------------------------- LyCORIS


def test_lokr_is_converted_exactly_and_reports_the_error(live, lycoris_files, embedded_base) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    from lorahub.base.synthetic import kohya_name

    ad = live.add("lokr", lycoris_files["lokr"], weight=1.0)
    assert ad.format == "lycoris-lokr"
    conv = ad.conversion
    assert conv["source_format"] == "LoKr" and conv["exact_rank"] == 8 and conv["relative_error"] < 1e-6
    assert any("relative error" in w for w in ad.warnings)
    arrays = load_file(str(lycoris_files["lokr"]))
    for m in _modules(embedded_base)[:6]:
        k = kohya_name(m)
        w2 = arrays[f"{k}.lokr_w2_a"] @ arrays[f"{k}.lokr_w2_b"]
        want = np.kron(arrays[f"{k}.lokr_w1"], w2) * (1.0 / 2)
        got = _loaded_delta(live, "lokr", m.path).numpy()
        assert np.allclose(got, want, atol=1e-5), m.path
    assert np.isfinite(live.render(PROMPT, steps=2, output_type="np").image).all()
    live.remove("lokr", unload=True)


def test_loha_is_converted_and_smaller_ranks_report_larger_errors(live, lycoris_files, embedded_base) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    from lorahub.base.synthetic import kohya_name
    from lorahub.pipeline.canonical import load_adapter_file

    ad = live.add("loha", lycoris_files["loha"])
    assert ad.conversion["source_format"] == "LoHa" and ad.conversion["exact_rank"] == 9
    assert ad.conversion["relative_error"] < 1e-6
    arrays = load_file(str(lycoris_files["loha"]))
    m = _modules(embedded_base)[0]
    k = kohya_name(m)
    want = (arrays[f"{k}.hada_w1_a"] @ arrays[f"{k}.hada_w1_b"]) * (arrays[f"{k}.hada_w2_a"] @ arrays[f"{k}.hada_w2_b"])
    assert np.allclose(_loaded_delta(live, "loha", m.path).numpy(), want * (3.0 / 3), atol=1e-4)
    live.remove("loha", unload=True)

    errors = [load_adapter_file(lycoris_files["loha"], rank=r).conversion.relative_error for r in (1, 3, 6, 9)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[0] > 0.1 and errors[3] < 1e-6


def _lokr_converts_with_a_reported_error(path: Path) -> None:
    """Both Kronecker factors rank 4: the product has rank <= 16, so rank 16 is exact and rank 8 is not."""
    from lorahub.adapters.inspect import inspect_file
    from lorahub.pipeline.canonical import load_adapter_file

    low = load_adapter_file(path, rank=8)
    assert low.conversion.source_format == "LoKr" and low.conversion.modules == inspect_file(path).modules
    assert 0.05 < low.conversion.relative_error < 1
    assert low.max_rank() == 8
    assert any(k.startswith("text_encoder.text_model.encoder.layers.0.") for k in low.modules)
    exact = load_adapter_file(path, rank=16)
    assert exact.conversion.exact_rank == 16 and exact.conversion.relative_error < 1e-5


def test_lokr_converts_with_a_reported_error(lokr_file: Path, one_thread) -> None:
    _lokr_converts_with_a_reported_error(lokr_file)


def test_real_lokr_converts_with_a_reported_error(real_lokr_file: Path, one_thread) -> None:
    from lorahub.adapters.inspect import inspect_file

    assert inspect_file(real_lokr_file).modules == 350
    _lokr_converts_with_a_reported_error(real_lokr_file)


# ---------------------------------------------------------------------------------------------- no-ops


def test_an_all_zero_adapter_is_not_loaded_silently(live, adapters, tmp_path: Path) -> None:
    from lorahub.adapters.header import read_header
    from lorahub.adapters.writer import write_safetensors_zeros
    from lorahub.errors import AdapterLoadError

    header = read_header(adapters["c"])
    zero = write_safetensors_zeros(
        tmp_path / "zero.safetensors",
        {n: (t.dtype, t.shape) for n, t in header.tensors.items() if not n.endswith(".alpha")},
        {"ss_base_model_version": "sd_v1"},
    )
    with pytest.raises(AdapterLoadError, match="every weight of the adapter is zero"):
        live.add("zero", zero)
    assert not live.slots  # the slot that was tried is gone


def test_an_adapter_matching_no_module_is_an_error(live, tmp_path: Path) -> None:
    import numpy as np

    from lorahub.adapters.writer import write_numpy
    from lorahub.errors import AdapterLoadError

    rng = np.random.default_rng(0)
    path = write_numpy(tmp_path / "elsewhere.safetensors", {
        "unet.no_such_block.0.to_q.lora_A.weight": rng.standard_normal((4, 32)).astype("float32"),
        "unet.no_such_block.0.to_q.lora_B.weight": rng.standard_normal((32, 4)).astype("float32"),
    })
    with pytest.raises(AdapterLoadError, match="none of its 1 modules exists"):
        live.add("elsewhere", path)


def test_raw_peft_keys_load_where_diffusers_loads_nothing(live, adapters, tmp_path: Path, reference) -> None:
    from lorahub.adapters.writer import write_numpy
    from lorahub.pipeline.canonical import load_adapter_file
    from lorahub.pipeline.live import quiet

    sd = load_adapter_file(adapters["c"]).state_dict()
    raw = {k.replace("unet.", "base_model.model.", 1): v.numpy() for k, v in sd.items()}
    path = write_numpy(tmp_path / "adapter_model.safetensors", raw)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 2, "peft_type": "LORA"}))
    # the pitfall: plain diffusers loads nothing from these keys
    pipe = reference.pipe
    with quiet():
        pipe.unload_lora_weights()
        try:
            pipe.load_lora_weights(str(path), adapter_name="rawx")
        except (ValueError, KeyError):
            pass
    assert "rawx" not in pipe.get_list_adapters().get("unet", [])
    # lorahub maps base_model.model. to the UNet, and the result is exactly the kohya original
    live.add("raw", tmp_path, weight=0.8)  # the package folder
    assert max_diff(live.render(PROMPT, steps=2, guidance=GUIDANCE, output_type="np").image,
                    reference([(adapters["c"], 0.8)])) < 1e-3
    live.remove("raw", unload=True)


def test_verify_loaded_catches_weights_that_did_not_arrive(live, adapters) -> None:
    import torch

    from lorahub.errors import AdapterLoadError
    from lorahub.pipeline.canonical import load_adapter_file
    from lorahub.pipeline.compat import map_modules, verify_loaded

    live.add("v", adapters["c"])
    slot = live.adapter("v").slot
    lora = load_adapter_file(adapters["c"])
    targets, _ = map_modules(live.pipe, lora, live.base)
    verify_loaded(live.pipe, slot, lora, targets)  # as loaded: fine
    key = sorted(targets)[0]
    module = live.pipe.unet.get_submodule(targets[key].path)
    with torch.no_grad():
        module.lora_B[slot].weight.zero_()
    with pytest.raises(AdapterLoadError, match="other weights than the file"):
        verify_loaded(live.pipe, slot, lora, targets)
    with pytest.raises(AdapterLoadError, match="does not list the adapter"):
        verify_loaded(live.pipe, "lhs9999", lora, targets)
    # the live pipeline's own exact check (bit-for-bit against the tensors it handed to diffusers)
    from lorahub.pipeline.compat import verify_exact

    prep = live._prepare(adapters["c"])
    with pytest.raises(AdapterLoadError, match="holds other weights than the file"):
        verify_exact(live.pipe, slot, str(adapters["c"]), prep.targets, prep.unet_sd, prep.te_sds)
    live.swap("v", adapters["c"])  # a reload through the pipeline repairs it, and passes the check
    verify_exact(live.pipe, slot, str(adapters["c"]), prep.targets, prep.unet_sd, prep.te_sds)
    live.remove("v", unload=True)
