"""The Space's callbacks on Flux.1 and SD 3.5 adapters and bases (no browser): the families a visitor picks
(embedded tiny bases on a CPU, the Space's variables on a GPU), inspect, a baked blend of a kohya fused-qkv file
with a diffusers split one, a mix of families refused in one line, a push's card, and previews on the embedded
Flux.1 and SD 3.5 bases."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub.errors import LorahubError, UsageError
from lorahub.space import callbacks as cb

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_thread")]
pytest.importorskip("diffusers", reason="the Space needs the ml extra (torch, diffusers)")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setattr(cb, "_has_gpu", lambda: False)
    cb.reset_state()
    st = cb.SpaceState(base=cb.space_base(None), workdir=tmp_path / "work")
    yield st
    cb.reset_state()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import mmditkit as K

    d = tmp_path_factory.mktemp("space-flux")
    return {
        "flux_kohya": K.write_original(d / "flux_kohya.safetensors", "flux", "kohya", t5=False, seed=1).path,
        "flux_peft": K.write_split(d / "flux_peft.safetensors", "flux", "peft", seed=2).path,
        "sd3_kohya": K.write_original(d / "sd3_kohya.safetensors", "sd3", "kohya", t5=False, seed=3).path,
    }


def test_flux_and_sd35_are_offered_with_their_bases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lorahub.base.embedded_mmdit import FLUX_ID, SD3_ID

    assert cb.FAMILIES["flux"] == "Flux.1" and cb.FAMILIES["sd3"] == "SD 3.5"
    monkeypatch.setenv(cb.ENV_BASE_FLUX, "black-forest-labs/FLUX.1-dev")
    monkeypatch.setenv(cb.ENV_BASE_SD3, "stabilityai/stable-diffusion-3.5-medium")
    monkeypatch.setattr(cb, "_has_gpu", lambda: False)  # a CPU Space: the embedded tiny bases, whatever is set
    bases = cb.space_bases()
    assert (bases["flux"], bases["sd3"]) == (FLUX_ID, SD3_ID)
    monkeypatch.setattr(cb, "_has_gpu", lambda: True)
    st = cb.SpaceState(base="mine", workdir=tmp_path)
    assert st.base_for("flux") == "black-forest-labs/FLUX.1-dev"
    assert st.base_for("sd3") == "stabilityai/stable-diffusion-3.5-medium"
    with pytest.raises(UsageError, match="unknown base family") as info:
        st.base_for("qwen")  # recognised for the registry, not offered for previews
    assert "Flux.1" in (info.value.hint or "")


def test_inspect_names_the_layout_family_and_the_tools(files: dict[str, Path]) -> None:
    rep = cb.inspect(files["flux_kohya"])
    assert rep["inspect"]["base_family"] == "flux" and rep["validate"]["valid"]
    md = cb.inspect_markdown(rep)
    assert "| base family | flux, hidden width 32 |" in md
    assert "| text encoders | text_encoder |" in md and "comfyui" in md
    sd3 = cb.inspect_markdown(cb.inspect(files["sd3_kohya"]))
    assert "| base family | sd3, hidden width 32 |" in sd3 and "text_encoder, text_encoder_2" in sd3


def test_bake_blend_on_flux_and_a_mix_refused(state: cb.SpaceState, files: dict[str, Path]) -> None:
    import mmditkit as K

    from lorahub.adapters.inspect import inspect_file
    from lorahub.pipeline.blend import blend
    from lorahub.pipeline.canonical import load_adapter_file

    chosen = cb.add_file(cb.add_file([], files["flux_kohya"]), files["flux_peft"])
    out = cb.bake_blend(state, chosen, [1.0, 0.5], method="cat")
    rep = inspect_file(out)
    assert rep.base_family == "flux" and rep.format == "kohya-lora" and "comfyui" in rep.loaders
    want = blend([(files["flux_kohya"], 1.0), (files["flux_peft"], 0.5)], method="cat")
    K.assert_same(K.deltas(load_adapter_file(out)), K.deltas(want.lora), tol=1e-2)  # the Space writes float16
    mixed = cb.add_file(cb.add_file([], files["flux_kohya"]), files["sd3_kohya"])
    with pytest.raises(LorahubError) as info:
        cb.bake_blend(state, mixed, [1.0, 1.0])
    assert "different base families" in str(info.value) and "\n" not in str(info.value)


def test_push_dry_run_card_names_flux_dev_and_its_licence(files: dict[str, Path]) -> None:
    res = cb.push(files["flux_kohya"], repo="me/fluxstyle", endpoint="http://127.0.0.1:9", dry_run=True)
    card = res["card"]
    assert "base_model: black-forest-labs/FLUX.1-dev" in card
    assert "license_name: flux-1-dev-non-commercial-license" in card
    assert "## Use it in ComfyUI" in card and "Download `flux_kohya.safetensors`" in card


def test_flux_previews_hot_swap_and_refuse_an_sd3_adapter(tmp_path: Path, embedded_flux_base: Path,
                                                          files: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Picking Flux.1 loads its base (here the embedded tiny one's folder) once; a kohya fused-qkv file and a
    diffusers split one preview together, weights change the image, a grid renders, an SD3 adapter is refused in
    one line naming both families."""
    import io

    def png(image) -> bytes:  # noqa: ANN001
        bio = io.BytesIO()
        image.save(bio, "PNG")
        return bio.getvalue()

    monkeypatch.setattr(cb, "_has_gpu", lambda: False)
    st = cb.SpaceState(base=cb.space_base(None), workdir=tmp_path / "work", bases={"flux": str(embedded_flux_base)})
    try:
        chosen = cb.add_file(cb.add_file([], files["flux_kohya"]), files["flux_peft"])
        one = cb.generate(st, chosen, [1.0, 1.0], "a photo", steps=1, seed=3, family="flux")
        other = cb.generate(st, chosen, [0.0, 1.0], "a photo", steps=1, seed=3, family="flux")
        assert one.image.size == (64, 64) and png(one.image) != png(other.image)
        live = st.live("flux")
        assert live.base.family == "flux" and live.stats["base_loads"] == 1 and st.loaded("flux")
        grid = cb.generate(st, chosen, [1.0, 1.0], "a photo", steps=1, grid=True, grid_weights="0, 1", family="flux")
        assert len(grid.seconds) == 4
        with pytest.raises(LorahubError) as err:
            cb.generate(st, cb.add_file([], files["sd3_kohya"]), [1.0], "a photo", steps=1, family="flux")
        msg = str(err.value)
        assert "SD3" in msg and "Flux.1" in msg and "\n" not in msg
        assert live.stats["base_loads"] == 1
    finally:
        st.close()


def test_sd35_previews_on_its_base(tmp_path: Path, embedded_sd3_base: Path, files: dict[str, Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cb, "_has_gpu", lambda: False)
    st = cb.SpaceState(base=cb.space_base(None), workdir=tmp_path / "work", bases={"sd3": str(embedded_sd3_base)})
    try:
        chosen = cb.add_file([], files["sd3_kohya"])
        on = cb.generate(st, chosen, [1.0], "a photo", steps=1, seed=1, family="sd3")
        off = cb.generate(st, chosen, [0.0], "a photo", steps=1, seed=1, family="sd3")
        assert on.image.size == off.image.size and on.image.tobytes() != off.image.tobytes()
        assert st.live("sd3").base.family == "sd3"
    finally:
        st.close()


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_trains_in_the_space_and_previews_there(family: str, tmp_path: Path, request: pytest.FixtureRequest,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The Train section on the Flux.1 / SD 3.5 base (the embedded tiny one, the Space's CPU limits): live
    samples, a package whose files inspect as the family with kohya's modelspec architecture, a push card
    naming the checkpoint, and the trained file previews on the Space's own pipeline (the trainer's, whose
    text encoders it freed after caching their outputs, is not reused)."""
    import zipfile

    from PIL import Image
    from safetensors import safe_open

    from lorahub.base.embedded import MODELS
    from lorahub.training.demo_data import make_demo_dataset

    base = request.getfixturevalue(f"embedded_{family}_base")
    monkeypatch.setattr(cb, "_has_gpu", lambda: False)
    st = cb.SpaceState(base=cb.space_base(None), workdir=tmp_path / "work", bases={family: str(base)})
    try:
        data = make_demo_dataset(tmp_path / "ds", count=2, size=64, trigger="zqx")
        files = sorted(p for p in data.rglob("*") if p.is_file())
        events = list(cb.train(st, files, "zqx", steps=2, rank=4, lr=1e-2, sample_every=1, family=family))
        done = events[-1]
        assert done.done and done.result["base_family"] == family and done.result["steps"] == 2
        assert [e.step for e in events[:-1]] and all(e.loss is not None for e in events)
        assert any("step-000001" in s for s in done.samples) and any("step-000002" in s for s in done.samples)
        with Image.open(done.samples[-1]) as im:
            assert im.size == (64, 64)
        arch = {"flux": "flux-1-dev/lora", "sd3": "stable-diffusion-3.5-medium/lora"}[family]
        for path in (done.result["weights"], done.result["kohya_weights"]):
            rep = cb.inspect(path)
            assert rep["inspect"]["base_family"] == family and rep["validate"]["valid"], rep["validate"]
            with safe_open(path, "pt") as f:
                assert f.metadata()["modelspec.architecture"] == arch
        with zipfile.ZipFile(done.zip_path) as zf:
            names = zf.namelist()
        assert "zqx/pytorch_lora_weights.safetensors" in names and "zqx/zqx_kohya.safetensors" in names
        import tomllib

        with zipfile.ZipFile(done.zip_path) as zf:
            saved = tomllib.loads(zf.read("zqx/train_config.toml").decode())["train"]
        assert saved["mixed_precision"] == "no" and saved["gradient_checkpointing"] is False  # a CPU: plain defaults
        gpu = cb.train_settings(True)  # a GPU Space (a 12 B Flux transformer there) trains as --small-gpu does
        assert gpu["gradient_checkpointing"] and gpu["cache_latents"] and gpu["mixed_precision"] in ("bf16", "fp16")
        assert cb.train_settings(False) == {}
        card = cb.push(done.zip_path, repo="me/zqx", endpoint="http://127.0.0.1:9", dry_run=True)["card"]
        assert f"base_model: {MODELS[family].id}" in card  # the base it was trained on, with its pipeline
        assert {"flux": "from diffusers import FluxPipeline", "sd3": "from diffusers import StableDiffusion3Pipeline"}[
            family] in card

        for path in (done.result["weights"], done.result["kohya_weights"]):
            chosen = cb.add_file([], path)
            on = cb.generate(st, chosen, [1.0], "zqx", steps=2, seed=1, family=family)
            off = cb.generate(st, chosen, [0.0], "zqx", steps=2, seed=1, family=family)
            assert on.image.size == (64, 64) and on.image.tobytes() != off.image.tobytes()
        assert st.live(family).stats["base_loads"] == 1
    finally:
        st.close()


def test_blend_search_runs_on_flux(tmp_path: Path, embedded_flux_base: Path, files: dict[str, Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The Space's "Blend search" on the Flux.1 base: the flow-matching objective, the grid, the recipe."""
    from PIL import Image

    monkeypatch.setattr(cb, "_has_gpu", lambda: False)
    st = cb.SpaceState(base=cb.space_base(None), workdir=tmp_path / "work", bases={"flux": str(embedded_flux_base)})
    targets = []
    for i, colour in enumerate(("red", "blue")):
        path = tmp_path / f"t{i}.png"
        Image.new("RGB", (80, 64), colour).save(path)
        targets.append(path)
    try:
        chosen = cb.add_file(cb.add_file([], files["flux_kohya"]), files["flux_peft"])
        out = cb.blend_search(st, chosen, targets, "a photo", budget=6, l1=0.0, family="flux")
        assert set(out.weights) == {"flux_kohya", "flux_peft"} and "sources:" in out.recipe_yaml
        assert out.grid.width > 2 * 64 and out.grid.height > 3 * 64  # targets, found, base
        assert st.live("flux").base.family == "flux"
    finally:
        st.close()
