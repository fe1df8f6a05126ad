"""Blend recipes: ``lorahub blend --save-recipe`` writes one, ``lorahub blend --recipe`` bakes it (sources
checked by hash first) to the same tensors in another ``LORAHUB_HOME``; ``inspect`` shows the recipe a
blend carries. (From Hub-pulled sources: tests/server/test_recipes_hub.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli

pytestmark = pytest.mark.torch


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def autov3(path: Path) -> str:
    from lorahub.adapters.fingerprint import fingerprint_file

    return fingerprint_file(str(path)).autov3


def _home(root: Path, adapters: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LORAHUB_HOME whose registry knows copies of adapters a and b as recipe_a and recipe_b."""
    home = root / "home"
    src = root / "files"
    src.mkdir(parents=True)
    for key in ("a", "b"):
        shutil.copy(adapters[key], src / f"recipe_{key}.safetensors")
    monkeypatch.setenv("LORAHUB_HOME", str(home))
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    res = invoke("index", str(src))
    assert res.exit_code == 0, res.output
    return home


def test_a_recipe_rebakes_to_the_same_tensors_in_another_home(adapters, tmp_path: Path, monkeypatch) -> None:
    from lorahub.adapters.inspect import inspect_file
    from lorahub.pipeline.recipe import load_recipe

    _home(tmp_path / "one", adapters, monkeypatch)
    first = tmp_path / "one" / "mix.safetensors"
    recipe_file = tmp_path / "mix.yaml"
    res = invoke("blend", "recipe_a:0.6", "recipe_b:0.3:0.5", "-o", str(first), "--method", "svd", "--rank", "6",
                 "--save-recipe", str(recipe_file), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["recipe_file"] == str(recipe_file)
    recipe = load_recipe(recipe_file)
    assert [s.registry for s in recipe.sources] == ["recipe_a", "recipe_b"]
    assert [s.autov3 for s in recipe.sources] == [autov3(adapters["a"]), autov3(adapters["b"])]
    assert recipe.sources[0].weight == 0.6
    assert (recipe.sources[1].weight.te, recipe.sources[1].weight.unet) == (0.3, 0.5)
    assert (recipe.method, recipe.rank, recipe.format, recipe.dtype) == ("svd", 6, "kohya", "float16")
    # the blend carries the same recipe in its metadata
    rep = inspect_file(first)
    assert rep.recipe == recipe
    assert rep.metadata["modelspec.merged_from"] == "a, b"  # the sources' titles (kohya's build_merged_from)

    # another home: other files, another registry; the same recipe bakes the same tensors
    _home(tmp_path / "two", adapters, monkeypatch)
    second = tmp_path / "two" / "mix.safetensors"
    res = invoke("blend", "--recipe", str(recipe_file), "-o", str(second))
    assert res.exit_code == 0, res.output
    assert autov3(second) == autov3(first)
    assert inspect_file(second).recipe.sources == recipe.sources

    # not the recipe's: the same blend at other weights
    other = tmp_path / "two" / "other.safetensors"
    assert invoke("blend", "recipe_a:0.5", "recipe_b:0.5", "-o", str(other), "--method", "svd",
                  "--rank", "6").exit_code == 0
    assert autov3(other) != autov3(first)


def test_paths_relative_to_the_recipe_and_the_text_of_inspect(adapters, tmp_path: Path) -> None:
    folder = tmp_path / "kit"
    folder.mkdir()
    shutil.copy(adapters["a"], folder / "a.safetensors")
    shutil.copy(adapters["d"], folder / "d.safetensors")
    manual = tmp_path / "manual.safetensors"
    res = invoke("blend", str(folder / "a.safetensors"), f"{folder / 'd.safetensors'}:0.25", "-o", str(manual),
                 "--method", "ties", "--density", "0.5", "--format", "diffusers", "--dtype", "float32")
    assert res.exit_code == 0, res.output
    from lorahub.adapters.header import read_header
    from lorahub.pipeline.recipe import dump_recipe, parse_recipe, recipe_from_metadata

    recipe = recipe_from_metadata(read_header(manual).string_metadata())
    # the metadata (published by push) names local sources by file name only, never the user's folders
    assert [s.path for s in recipe.sources] == ["a.safetensors", "d.safetensors"]
    assert str(tmp_path) not in read_header(manual).string_metadata()["lorahub.recipe"]
    # --save-recipe writes them relative to the recipe's folder: a recipe kept beside its sources moves with them
    saved = folder / "recipe.yaml"
    res = invoke("blend", str(folder / "a.safetensors"), f"{folder / 'd.safetensors'}:0.25", "-o",
                 str(tmp_path / "again.safetensors"), "--method", "ties", "--density", "0.5", "--format", "diffusers",
                 "--dtype", "float32", "--save-recipe", str(saved))
    assert res.exit_code == 0, res.output
    assert [s.path for s in parse_recipe(saved.read_text()).sources] == ["a.safetensors", "d.safetensors"]
    assert parse_recipe(dump_recipe(recipe)) == recipe
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    baked = tmp_path / "baked.safetensors"
    res = invoke("blend", "--recipe", str(moved / "recipe.yaml"), "-o", str(baked))
    assert res.exit_code == 0, res.output
    assert autov3(baked) == autov3(manual)
    text = invoke("inspect", str(baked)).output
    assert "recipe: ties blend (density 0.5), diffusers layout, float32" in text
    assert f"a.safetensors  weight 1  AutoV3 {autov3(adapters['a'])}" in text
    assert f"d.safetensors  weight 0.25  AutoV3 {autov3(adapters['d'])}" in text


def test_a_source_that_is_not_the_recipes_file_stops_the_bake(adapters, tmp_path: Path) -> None:
    src = tmp_path / "src.safetensors"
    shutil.copy(adapters["a"], src)
    recipe_file = tmp_path / "r.yaml"
    assert invoke("blend", str(src), str(adapters["b"]), "-o", str(tmp_path / "m.safetensors"),
                  "--save-recipe", str(recipe_file)).exit_code == 0
    shutil.copy(adapters["c"], src)  # the same path, another adapter
    out = tmp_path / "again.safetensors"
    res = CliRunner().invoke(cli, ["blend", "--recipe", str(recipe_file), "-o", str(out)])
    assert res.exit_code == 1
    line = res.stderr.strip()
    assert "\n" not in line and "not the one the recipe names" in line and "nothing was written" in line
    assert not out.exists() and list(tmp_path.glob("again*")) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: linear\nsources: []\n", "lorahub_version"),
        ("a: &x [1]\nb: *x\n", "anchors"),
        ("just text\n", "not a recipe"),
        ("lorahub_version: '0'\nmethod: blur\nsources: [{path: a.safetensors, sha256: '" + "0" * 64
         + "', autov3: '000000000000'}]\n", "method"),
        ("lorahub_version: '0'\nmethod: linear\nsources: [{path: a.safetensors, registry: a, sha256: '" + "0" * 64
         + "', autov3: '000000000000'}]\n", "exactly one of hub, registry, path"),
        ("lorahub_version: '0'\nmethod: linear\nsources: [{path: a.safetensors, sha256: '" + "0" * 64
         + "', autov3: '000000000000', weight: .nan}]\n", "weight"),
    ],
)
def test_a_malformed_recipe_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    res = CliRunner().invoke(cli, ["blend", "--recipe", str(bad), "-o", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 1, res.output
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()


def test_recipe_options_are_the_recipes(adapters, tmp_path: Path) -> None:
    recipe_file = tmp_path / "r.yaml"
    assert invoke("blend", str(adapters["a"]), "-o", str(tmp_path / "m.safetensors"),
                  "--save-recipe", str(recipe_file)).exit_code == 0
    res = CliRunner().invoke(cli, ["blend", "--recipe", str(recipe_file), "-o", str(tmp_path / "n.safetensors"),
                                   "--rank", "2"])
    assert res.exit_code == 2 and "drop --rank" in res.stderr
    res = CliRunner().invoke(cli, ["blend", "-o", str(tmp_path / "n.safetensors")])
    assert res.exit_code == 2 and "--recipe" in res.stderr


def test_licence_conflicts() -> None:
    from lorahub.pipeline.recipe import licence_conflicts, parse_recipe

    def recipe(*licences: str | None) -> object:
        srcs = "".join(
            f"- {{path: s{i}.safetensors, name: s{i}, sha256: '{i:064x}', autov3: '{i:012X}'"
            + (f", license: {lic}" if lic else "") + "}\n"
            for i, lic in enumerate(licences)
        )
        return parse_recipe(f"lorahub_version: '0'\nmethod: linear\nsources:\n{srcs}")

    assert licence_conflicts(recipe("mit", "creativeml-openrail-m"), "apache-2.0") == []
    nc = licence_conflicts(recipe("mit", "cc-by-nc-4.0"), "creativeml-openrail-m")
    assert nc == ["licence conflict: source s1 is cc-by-nc-4.0 (non-commercial), the blend is published as "
                  "creativeml-openrail-m"]
    # published non-commercial, under the share-alike source's own licence: no conflict
    assert licence_conflicts(recipe("cc-by-nc-4.0", "cc-by-nc-sa-4.0"), "cc-by-nc-sa-4.0") == []
    assert any("no derivatives" in w for w in licence_conflicts(recipe("cc-by-nd-4.0"), "cc-by-nd-4.0"))
    assert any("share-alike" in w for w in licence_conflicts(recipe("cc-by-sa-4.0"), "mit"))
    assert licence_conflicts(recipe("mit", None), "mit") == [
        "licence unknown for source(s) s1: check their terms before publishing"]


@pytest.mark.parametrize("value", ["[" * 200_000, "{\"method\": 1}", "x" * 300_000, "{" * 100 + "}" * 100])
def test_a_hostile_recipe_in_the_metadata_is_a_warning(adapters, tmp_path: Path, value: str) -> None:
    """inspect reads strangers' files (the server validates every pushed adapter with it): a recipe key that is
    not a recipe, nested deeper than the stack or larger than a recipe is a warning, never a crash."""
    from safetensors.torch import load_file, save_file

    from lorahub.adapters.header import read_header
    from lorahub.adapters.inspect import inspect_file

    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(adapters["a"])), str(bad),
              metadata={**read_header(adapters["a"]).string_metadata(), "lorahub.recipe": value})
    rep = inspect_file(bad)
    assert rep.recipe is None
    assert any("blend recipe in the metadata cannot be read" in w for w in rep.warnings)
    res = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert res.exit_code == 0 and "cannot be read" in res.output


def test_component_weights_and_cat_round_trip(adapters, tmp_path: Path) -> None:
    from lorahub.pipeline.recipe import load_recipe

    first = tmp_path / "cat.safetensors"
    res = invoke("blend", f"{adapters['a']}:0.5:1:te2=0.8", f"{adapters['b']}:-0.25", "-o", str(first),
                 "--method", "cat", "--save-recipe", str(tmp_path / "cat.yaml"))
    assert res.exit_code == 0, res.output
    recipe = load_recipe(tmp_path / "cat.yaml")
    w = recipe.sources[0].weight
    assert (w.te, w.unet, w.te2) == (0.5, 1.0, 0.8) and recipe.sources[1].weight == -0.25
    assert recipe.method == "cat" and recipe.rank is None
    again = tmp_path / "again.safetensors"
    assert invoke("blend", "--recipe", str(tmp_path / "cat.yaml"), "-o", str(again)).exit_code == 0
    assert autov3(again) == autov3(first)
