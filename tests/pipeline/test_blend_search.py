"""Blend-weight search (lorahub.pipeline.blendsearch, ``lorahub blend search``) on the embedded bases.

The honest test: the targets are made by a known stack (weights 0.7, 0.0, 0.3 of three clearly different
adapters) and the search, which does not know them, must recover each within 0.1 and drop the unused
adapter. It runs on an embedded SD 1.x build with random weights (``lorahub base build --seed 0``), so
images it renders say nothing a denoising loss can read back (measured in docs/recipes.md: on renders of the
known stack the loss is lower at 0.73/0.87/0.94 than at the true weights). The targets are therefore made in denoising-loss space: the known stack's predictions
on the search's own noisy latents of four real images (``reference``), so the loss is 0 at the true
weights, and what is tested is that the objective, the optimiser and the L1 drop find them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli

pytestmark = pytest.mark.torch
TRUTH = {"a": 0.7, "b": 0.0, "c": 0.3}
CAPTIONS = ["a red square", "a yellow ball", "a blue square", "a white ball"]


def _image(i: int, size: int = 128):  # noqa: ANN202
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), [(240, 240, 230), (30, 30, 60), (200, 220, 255), (90, 140, 90)][i % 4])
    draw = ImageDraw.Draw(im)
    color = [(220, 30, 30), (250, 220, 40), (30, 60, 200), (250, 250, 250)][i % 4]
    s = size / 128
    box = (20 * s, 30 * s, 100 * s, 110 * s)
    (draw.ellipse if i % 2 else draw.rectangle)(box, fill=color)
    return im


@pytest.fixture(scope="module")
def three(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three UNet adapters with distinct random deltas of a decent norm (scale 2)."""
    from lorahub.base import make_adapter

    d = tmp_path_factory.mktemp("search-adapters")
    return [Path(make_adapter(d / f"{n}.safetensors", base=embedded_base, rank=4, seed=30 + i, scale=2.0))
            for i, n in enumerate("abc")]


@pytest.fixture(scope="module")
def three_random(random_sd1_base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The same three on the random-weight SD 1.x build."""
    from lorahub.base import make_adapter

    d = tmp_path_factory.mktemp("search-adapters-random")
    return [Path(make_adapter(d / f"{n}.safetensors", base=random_sd1_base, rank=4, seed=30 + i, scale=2.0))
            for i, n in enumerate("abc")]


@pytest.fixture(scope="module")
def live(random_sd1_base: Path, three_random: list[Path]):  # noqa: ANN201
    from lorahub.pipeline.live import LivePipeline

    lp = LivePipeline(str(random_sd1_base))
    for name, path in zip("abc", three_random, strict=True):
        lp.add(name, str(path))
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def latents(live):  # noqa: ANN001, ANN201
    from lorahub.pipeline.blendsearch import encode_images

    return encode_images(live.pipe, [_image(i) for i in range(4)])


def test_search_recovers_a_known_stack_and_drops_the_unused_adapter(live, latents) -> None:  # noqa: ANN001
    from lorahub.pipeline.blendsearch import BlendObjective, search_weights

    obj = BlendObjective(live, list("abc"), latents[:2], CAPTIONS[:2], samples=4, seed=0, reference=TRUTH)
    assert obj.loss([0.7, 0.0, 0.3]) == 0.0
    # the objective is deterministic (common random numbers) and grows away from the truth
    assert obj.loss([0.6, 0.0, 0.3]) == obj.loss([0.6, 0.0, 0.3]) > 0.01
    res = search_weights(obj, optimizer="cma", budget=60, l1=0.002, seed=0)
    assert abs(res.weights["a"] - 0.7) < 0.1 and abs(res.weights["c"] - 0.3) < 0.1, res.weights
    assert res.weights["b"] == 0.0 and res.dropped == ["b"] and res.kept == ["a", "c"]
    assert res.loss < 0.25 * res.base_loss
    assert res.history == sorted(res.history, reverse=True)  # the best so far never gets worse
    assert res.evaluations <= 60 + 3 + 3  # the budget; the start, the base, the final check; one try at 0 each


def test_gradient_search_descends(live, latents) -> None:  # noqa: ANN001
    """Adam on the weights, autograd through the scaled LoRA deltas: its gradient agrees with finite
    differences, it descends, and the proximal L1 step drops the unused adapter (exactly 0)."""
    from lorahub.pipeline.blendsearch import BlendObjective, search_weights

    obj = BlendObjective(live, list("abc"), latents[:2], CAPTIONS[:2], samples=2, seed=1, reference=TRUTH)
    x = [0.5, 0.2, 0.4]
    value, grad = obj.loss_and_grad(x)
    assert value == pytest.approx(obj.loss(x), rel=1e-4)
    h = 1e-2
    for i in range(3):
        up, down = list(x), list(x)
        up[i] += h
        down[i] -= h
        fd = (obj.loss(up) - obj.loss(down)) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=0.15, abs=1e-3), (i, grad, fd)
    obj = BlendObjective(live, list("abc"), latents[:2], CAPTIONS[:2], samples=4, seed=0, reference=TRUTH)
    res = search_weights(obj, optimizer="gradient", budget=30, l1=0.002, lr=0.05)
    # 30 steps drop the unused adapter and cut the loss, but on this small objective (2 targets) do not always
    # finish the walk along the valley a/c ~ 7/3 (0.75/0.25 in one run, 0.53/0.41 here: docs/recipes.md)
    assert res.weights["b"] == 0.0 and res.dropped == ["b"], res.weights
    assert res.loss < 0.5 * res.start_loss, res.weights
    assert res.history[-1] < res.history[len(res.history) // 2]  # still going down when the budget ends
    # the scalings are the adapters' weights again afterwards (plain fills, no autograd left behind)
    obj.live.set_weights({"a": 0.7, "b": 0.0, "c": 0.3}, exclusive=True)
    assert obj.loss([0.7, 0.0, 0.3]) == 0.0


def _targets(folder: Path, n: int = 4, *, captions: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _image(i, 96).save(folder / f"t{i}.png")
        if captions:
            (folder / f"t{i}.txt").write_text(CAPTIONS[i] + "\n")
    return folder


def test_cli_writes_a_recipe_that_bakes_a_grid_and_json(embedded_home: Path, three: list[Path], tmp_path: Path) -> None:
    """The real objective (noise as the target) through the CLI: JSON alone on stdout, progress on stderr, a
    recipe that validates, records the search and bakes, and the grid of the result against the targets."""
    from PIL import Image

    from lorahub.pipeline.recipe import load_recipe

    targets = _targets(tmp_path / "targets")
    out = tmp_path / "found.yaml"
    res = CliRunner().invoke(cli, ["blend", "search", *[f"--lora={p}" for p in three], "--target", str(targets),
                                   "-o", str(out), "--budget", "8", "--samples", "2", "--grid-steps", "2", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["recipe_file"] == str(out) and report["optimizer"] == "cma" and report["targets"] == 4
    assert report["size"] == [128, 128]
    assert set(report["weights"]) == {"a", "b", "c"}
    assert report["objective"] <= report["start_loss"] + 0.002 * 1.5 + 1e-6 or report["dropped"]
    recipe = load_recipe(out)
    assert recipe.method == "linear" and recipe.search is not None and recipe.search.optimizer == "cma"
    assert recipe.search.targets == 4 and recipe.search.budget == 8
    assert [s.name for s in recipe.sources] == report["kept"]
    by_name = dict(zip("abc", three, strict=True))  # paths relative to the recipe's folder
    assert all((out.parent / s.path).resolve() == by_name[s.name].resolve() for s in recipe.sources)
    grid = Image.open(report["grid"])
    assert grid.width > 4 * 128 and grid.height > 3 * 128  # targets, found, base: one column per target
    assert "searching" in res.stderr or "target image" in res.stderr
    baked = CliRunner().invoke(cli, ["blend", "--recipe", str(out), "-o", str(tmp_path / "found.safetensors"),
                                     "--json"], catch_exceptions=False)
    assert baked.exit_code == 0, baked.output
    baked_recipe = json.loads(baked.stdout)["recipe"]
    assert baked_recipe["search"]["optimizer"] == "cma"  # the baked file's recipe says how its weights were found
    baked_weights = {s["name"]: s["weight"] for s in baked_recipe["sources"]}
    assert baked_weights == {n: pytest.approx(report["weights"][n]) for n in report["kept"]}


def test_cli_plain_blend_still_works_and_bad_input_is_one_line(embedded_home: Path, three: list[Path],
                                                                 tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["blend", f"{three[0]}:0.5", f"{three[1]}:0.5", "-o", str(tmp_path / "ab.safetensors")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(cli, ["blend", "search", "--lora", str(three[0]), "--target", str(empty), "-o",
                              str(tmp_path / "x.yaml")])
    assert res.exit_code == 1 and "no images" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.yaml").exists()
    res = runner.invoke(cli, ["blend", "search", "--lora", str(three[0]), "--target", str(empty), "-o",
                              str(tmp_path / "x.yaml"), "--bounds", "1,0"])
    assert res.exit_code == 2 and "--bounds" in res.output
    help_text = runner.invoke(cli, ["blend", "--help"], prog_name="lorahub").output
    assert "search" in help_text and "Usage: lorahub blend [OPTIONS] [INPUTS]..." in help_text
    assert runner.invoke(cli, ["blend", "search", "--help"], prog_name="lorahub").output.startswith("Usage: lorahub blend search [OPTIONS]")


def test_per_component_search_weighs_text_encoder_and_unet_apart(embedded_base: Path, three: list[Path],
                                                                   tmp_path: Path) -> None:
    """An adapter with text-encoder modules gets two weights (te, unet): the text encoder runs at each candidate,
    the gradient reaches both, and the recipe records them per component."""
    from lorahub.base import make_adapter
    from lorahub.pipeline.blend import BlendInput
    from lorahub.pipeline.blendsearch import BlendObjective, encode_images, search_recipe, search_weights
    from lorahub.pipeline.live import LivePipeline

    te = make_adapter(tmp_path / "te.safetensors", base=embedded_base, rank=4, seed=7, scale=2.0, text_encoder=True)
    with LivePipeline(str(embedded_base)) as lp:
        lp.add("t", str(te))
        lp.add("a", str(three[0]))
        lat = encode_images(lp.pipe, [_image(0)])
        obj = BlendObjective(lp, ["t", "a"], lat, CAPTIONS[:1], samples=2, per_component=True,
                             reference={"t": (0.2, 0.9), "a": 0.5})
        assert obj.dims == [("t", "te"), ("t", "unet"), ("a", "all")]
        assert obj.loss([0.2, 0.9, 0.5]) == 0.0 and obj.loss([0.9, 0.9, 0.5]) > 0.0  # the te weight matters
        _, grad = obj.loss_and_grad([0.5, 0.5, 0.5])
        assert all(g != 0.0 for g in grad)
        res = search_weights(obj, optimizer="gradient", budget=4, l1=0.0)
        assert set(res.weights["t"]) == {"te", "unet"} and isinstance(res.weights["a"], float)
        recipe = search_recipe(res, [BlendInput(str(te), 1, 1, name="t"), BlendInput(str(three[0]), 1, 1, name="a")],
                               budget=4)
        by = {s.name: s.weight for s in recipe.sources}
        assert by["t"].te == res.weights["t"]["te"] and by["t"].unet == res.weights["t"]["unet"]
        assert recipe.search.per_component
