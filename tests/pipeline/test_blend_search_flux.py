"""Blend-weight search on a Flux.1 base (the embedded tiny one): the objective is Flux's flow-matching loss.

As for SD 1.x (tests/pipeline/test_blend_search.py, whose docstring says why), the targets are made in prediction
space: the known stack's predictions on the search's own noisy latents of real images (``reference``), so the
loss is 0 at the true weights and the search, which does not know them, must find them. Before that, the
objective's loss on the base is checked against the flow-matching loss computed from diffusers' own pieces
(``FluxPipeline.encode_prompt``, ``_pack_latents``, the transformer called as diffusers'
``train_dreambooth_lora_flux.py`` calls it) on the same draws, and its sigmas against the scheduler's own shift.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_thread")]
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

TRUTH = {"a": 0.7, "b": 0.3}
CAPTIONS = ["a red square", "a yellow ball"]
SEQ = 16  # T5 tokens: the captions are short


def _image(i: int, size: int = 64):  # noqa: ANN202
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), [(240, 240, 230), (30, 30, 60)][i % 2])
    draw = ImageDraw.Draw(im)
    s = size / 128
    (draw.ellipse if i % 2 else draw.rectangle)((20 * s, 30 * s, 100 * s, 110 * s),
                                                fill=[(220, 30, 30), (250, 220, 40)][i % 2])
    return im


@pytest.fixture(scope="module")
def live(embedded_flux_base: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The tiny Flux.1 base with two diffusers-layout transformer adapters of distinct random deltas."""
    import mmditkit as K

    from lorahub.pipeline.live import LivePipeline

    d = tmp_path_factory.mktemp("flux-search")
    lp = LivePipeline(str(embedded_flux_base))
    for i, name in enumerate("ab"):
        built = K.write_split(d / f"{name}.safetensors", "flux", "peft", alpha=16.0, seed=40 + i, skip=("text_encoder",))
        lp.add(name, str(built.path))
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def latents(live):  # noqa: ANN001, ANN201
    from lorahub.pipeline.blendsearch import encode_images

    return encode_images(live.pipe, [_image(i) for i in range(2)])


def test_the_sigmas_are_the_schedulers_shift() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from lorahub.training.flow import pipeline_shift, shift_sigmas

    flux = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    shift, mu = pipeline_shift(dict(flux.config), 1024)
    assert shift == 1.0 and mu == pytest.approx(calculate_shift(1024, 256, 4096, 0.5, 1.15))
    u = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(shift_sigmas(u, mu=mu), flux.time_shift(mu, 1.0, u).float())
    sd3 = FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert pipeline_shift(dict(sd3.config), 1024) == (3.0, None)
    torch.testing.assert_close(shift_sigmas(u, shift=3.0), 3 * u / (1 + 2 * u))


def test_the_objective_is_fluxs_flow_matching_loss(live, latents) -> None:  # noqa: ANN001
    """No reference: the target is noise - x0 on noisy = (1 - sigma) x0 + sigma noise, and the loss with every
    weight at 0 is what diffusers' pieces compute on the base for the same draws."""
    from lorahub.pipeline.blendsearch import BlendObjective

    obj = BlendObjective(live, ["a", "b"], latents, CAPTIONS, samples=3, seed=0, max_sequence_length=SEQ)
    assert obj.prediction == "flow"
    sigmas = obj.timesteps.reshape(2, 3)
    assert bool((sigmas > 0).all() and (sigmas <= 1).all())
    assert torch.equal(sigmas, sigmas.sort(dim=1).values)  # stratified: one draw per third of the schedule
    x0 = latents.float().repeat_interleave(3, dim=0)
    s = obj.timesteps.view(-1, 1, 1, 1)
    torch.testing.assert_close(obj.noisy.float(), x0 + s * obj.target, atol=1e-5, rtol=1e-5)  # = (1-s) x0 + s noise

    pipe = live.pipe
    live.set_weights({"a": 0.0, "b": 0.0}, exclusive=True)
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt([c for c in CAPTIONS for _ in range(3)], prompt_2=None,
                                                      max_sequence_length=SEQ)
        b, c, h, w = obj.noisy.shape
        packed = pipe._pack_latents(obj.noisy, b, c, h, w)
        img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, packed.device, packed.dtype)
        pred = pipe.transformer(hidden_states=packed, timestep=obj.timesteps, guidance=torch.ones(b),
                                pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                                img_ids=img_ids, return_dict=False)[0]
        pred = pipe._unpack_latents(pred, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor, pipe.vae_scale_factor)
    want = float(((pred.float() - obj.target) ** 2).mean())
    assert obj.loss([0.0, 0.0]) == pytest.approx(want, rel=1e-4)
    assert obj.loss([1.0, 1.0]) != pytest.approx(want, rel=1e-3)  # the adapters change the prediction


def test_search_recovers_two_known_weights_on_flux(live, latents) -> None:  # noqa: ANN001
    from lorahub.pipeline.blendsearch import BlendObjective, search_weights

    obj = BlendObjective(live, ["a", "b"], latents, CAPTIONS, samples=4, seed=0, reference=TRUTH,
                         max_sequence_length=SEQ)
    assert obj.loss([0.7, 0.3]) == 0.0
    assert obj.loss([0.6, 0.3]) == obj.loss([0.6, 0.3]) > 0.0  # deterministic, and grows away from the truth
    res = search_weights(obj, optimizer="cma", budget=60, l1=0.0, seed=0)
    assert abs(res.weights["a"] - 0.7) < 0.1 and abs(res.weights["b"] - 0.3) < 0.1, res.weights
    assert res.kept == ["a", "b"] and res.loss < 0.1 * res.base_loss, (res.loss, res.base_loss)


def test_cli_searches_on_a_flux_base(embedded_flux_base: Path, tmp_path: Path) -> None:
    """`lorahub blend search --base <a FluxPipeline folder>`: the base's native size, a recipe and a grid."""
    import json

    import mmditkit as K
    from click.testing import CliRunner

    from lorahub.cli.main import cli
    from lorahub.pipeline.recipe import load_recipe

    loras = [K.write_split(tmp_path / f"{n}.safetensors", "flux", "peft", alpha=16.0, seed=40 + i).path
             for i, n in enumerate("ab")]
    targets = tmp_path / "targets"
    targets.mkdir()
    for i in range(2):
        _image(i).save(targets / f"t{i}.png")
        (targets / f"t{i}.txt").write_text(CAPTIONS[i])
    out = tmp_path / "found.yaml"
    res = CliRunner().invoke(cli, ["blend", "search", "--base", str(embedded_flux_base), *[f"--lora={p}" for p in loras],
                                   "--target", str(targets), "-o", str(out), "--budget", "6", "--samples", "2",
                                   "--l1", "0", "--grid-steps", "1", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["size"] == [64, 64] and report["targets"] == 2 and report["kept"]
    recipe = load_recipe(out)
    assert recipe.method == "linear" and recipe.search is not None and recipe.search.size == (64, 64)
    assert [src.name for src in recipe.sources] == report["kept"]
    assert Path(report["grid"]).is_file()


def test_an_odd_latent_size_is_one_line(live) -> None:  # noqa: ANN001
    from lorahub.errors import UsageError
    from lorahub.pipeline.blendsearch import BlendObjective

    with pytest.raises(UsageError, match="multiple of 16 pixels") as err:
        BlendObjective(live, ["a"], torch.zeros(1, 16, 9, 8), ["x"])
    assert "\n" not in str(err.value)


def test_the_result_grid_renders_at_the_bases_own_guidance(live, latents) -> None:  # noqa: ANN001
    """The grid of a search on Flux.1-dev renders at its guidance embedding's 3.5, not SD's classifier-free 7.5."""
    from lorahub.pipeline.blendsearch import BlendObjective, Target, result_grid, search_weights

    obj = BlendObjective(live, ["a", "b"], latents, CAPTIONS, samples=2, seed=0, reference=TRUTH,
                         max_sequence_length=SEQ)
    res = search_weights(obj, optimizer="cma", budget=4, l1=0.0, seed=0)
    targets = [Target(f"t{i}.png", CAPTIONS[i], _image(i)) for i in range(2)]
    seen: list[float | None] = []
    render = live.render

    def spy(prompt: str, **kw):  # noqa: ANN003, ANN202 - the real render, its guidance recorded
        seen.append(kw.get("guidance"))
        out = render(prompt, **kw)
        seen.append(out.guidance)
        return out

    live.render = spy
    try:
        grid = result_grid(live, obj, targets, res, steps=1)
    finally:
        del live.render
    assert live.default_guidance() == 3.5
    assert seen and all(g in (None, 3.5) for g in seen[0::2]) and set(seen[1::2]) == {3.5}, seen
    assert grid.size[0] > 64 * 2 and grid.size[1] > 64 * 3
