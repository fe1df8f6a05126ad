"""Blend recipes from Hub-pulled sources: the real huggingface_hub client (in ``lorahub blend``) against
``lorahub serve`` on loopback; a recipe pins each source to a commit, so a re-bake in another
``LORAHUB_HOME`` and Hugging Face cache gives the same tensors, even after the repo moved on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hubkit import write_kohya_lora

from lorahub.adapters.fingerprint import fingerprint_file


def _lorahub(server, home: Path, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    env = server.env("alice", LORAHUB_HOME=str(home / "lh-home"), HF_HOME=str(home / "hf-home"))
    env.pop("LORAHUB_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "lorahub.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=home)


def test_a_recipe_of_hub_sources_rebakes_from_the_pinned_commits(sqlite_server, tmp_path: Path) -> None:  # noqa: ANN001
    from lorahub.pipeline.recipe import load_recipe

    api = sqlite_server.api("alice")
    files = {}
    for name, seed in (("ra", 1), ("rb", 2)):
        files[name] = write_kohya_lora(tmp_path / f"{name}.safetensors", seed=seed, title=name)
        api.create_repo(f"alice/{name}")
        api.upload_file(path_or_fileobj=str(files[name]), path_in_repo="pytorch_lora_weights.safetensors",
                        repo_id=f"alice/{name}")
    commit = api.model_info("alice/ra").sha

    one = tmp_path / "one"
    one.mkdir()
    res = _lorahub(sqlite_server, one, "blend", "alice/ra:0.7", "alice/rb/pytorch_lora_weights.safetensors:0.3",
                   "-o", "mix.safetensors", "--method", "svd", "--rank", "4", "--dtype", "float32",
                   "--save-recipe", "mix.yaml")
    assert res.returncode == 0, res.stderr
    recipe = load_recipe(one / "mix.yaml")
    assert recipe.sources[0].hub == f"alice/ra@{commit}"
    assert recipe.sources[0].file == "pytorch_lora_weights.safetensors"
    assert recipe.sources[1].hub.startswith("alice/rb@") and len(recipe.sources[1].hub.split("@")[1]) == 40
    assert [s.sha256 for s in recipe.sources] == [fingerprint_file(files[k]).sha256 for k in ("ra", "rb")]
    first = fingerprint_file(one / "mix.safetensors").autov3

    # the repo moves on: the recipe still names the commit it was made from
    write_kohya_lora(tmp_path / "ra2.safetensors", seed=9, title="ra")
    api.upload_file(path_or_fileobj=str(tmp_path / "ra2.safetensors"), path_in_repo="pytorch_lora_weights.safetensors",
                    repo_id="alice/ra")
    two = tmp_path / "two"  # another LORAHUB_HOME, another (empty) Hugging Face cache
    two.mkdir()
    res = _lorahub(sqlite_server, two, "blend", "--recipe", str(one / "mix.yaml"), "-o", "mix.safetensors", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["recipe"]["sources"] == json.loads(
        json.dumps(recipe.model_dump(mode="json", exclude_none=True)["sources"]))
    assert fingerprint_file(two / "mix.safetensors").autov3 == first
    assert any((two / "hf-home").rglob("pytorch_lora_weights.safetensors"))  # fetched into that home's cache

    # the same files blended from local paths: the same tensors
    res = _lorahub(sqlite_server, two, "blend", f"{files['ra']}:0.7", f"{files['rb']}:0.3", "-o", "local.safetensors",
                   "--method", "svd", "--rank", "4", "--dtype", "float32")
    assert res.returncode == 0, res.stderr
    assert fingerprint_file(two / "local.safetensors").autov3 == first

    # a recipe that names the repo's head but the old file's hash: refused before anything is written
    text = (one / "mix.yaml").read_text().replace(f"alice/ra@{commit}", "alice/ra@main")
    (two / "moved.yaml").write_text(text)
    res = _lorahub(sqlite_server, two, "blend", "--recipe", "moved.yaml", "-o", "moved.safetensors")
    assert res.returncode == 1
    assert "not the one the recipe names" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (two / "moved.safetensors").exists()


def test_push_of_a_blend_writes_its_recipe_and_a_card_of_its_sources(sqlite_server, tmp_path: Path) -> None:  # noqa: ANN001
    from huggingface_hub import ModelCard

    from lorahub.pipeline.recipe import parse_recipe

    api = sqlite_server.api("alice")
    shas = {}
    for name, seed, licence in (("nc", 3, "cc-by-nc-4.0"), ("free", 4, "mit")):
        path = write_kohya_lora(tmp_path / f"{name}.safetensors", seed=seed, title=name)
        shas[name] = fingerprint_file(path).sha256
        api.create_repo(f"alice/{name}")
        api.upload_file(path_or_fileobj=str(path), path_in_repo="pytorch_lora_weights.safetensors",
                        repo_id=f"alice/{name}")
        api.upload_file(path_or_fileobj=f"---\nlicense: {licence}\n---\n# {name}\n".encode(), path_in_repo="README.md",
                        repo_id=f"alice/{name}")
    commit = api.model_info("alice/nc").sha
    work = tmp_path / "work"
    work.mkdir()
    res = _lorahub(sqlite_server, work, "blend", "alice/nc:0.5", "alice/free:0.5", "-o", "mix.safetensors")
    assert res.returncode == 0, res.stderr
    res = _lorahub(sqlite_server, work, "push", "mix.safetensors", "--repo", "alice/mix", "--license", "apache-2.0",
                   "--endpoint", sqlite_server.url, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    conflict = [w for w in out["warnings"] if "licence conflict" in w]
    assert len(conflict) == 1 and "nc is cc-by-nc-4.0 (non-commercial)" in conflict[0] and "apache-2.0" in conflict[0]
    assert "licence conflict: source nc" in res.stderr  # said on the terminal too
    assert "recipe.yaml" in {s.rfilename for s in api.model_info("alice/mix").siblings}
    recipe = parse_recipe(Path(api.hf_hub_download("alice/mix", "recipe.yaml")).read_text())
    assert [(s.hub, s.license) for s in recipe.sources] == [
        (f"alice/nc@{commit}", "cc-by-nc-4.0"), (f"alice/free@{api.model_info('alice/free').sha}", "mit")]
    card = ModelCard.load(api.hf_hub_download("alice/mix", "README.md"))
    assert "lorahub-blend" in card.data.to_dict()["tags"]
    link = f"[nc]({sqlite_server.url}/alice/nc/blob/{commit}/pytorch_lora_weights.safetensors)"
    assert "## Blend of" in card.text and f"| {link} | 0.5 | cc-by-nc-4.0 |" in card.text
    assert "lorahub blend --recipe recipe.yaml" in card.text

    # the push recorded the blend in this home's registry: it is found from its sources
    res = _lorahub(sqlite_server, work, "search", "--uses", shas["nc"], "--json")
    assert res.returncode == 0, res.stderr
    assert [r["name"] for r in json.loads(res.stdout)] == ["mix"]
    # and the server's catalogue indexed it from the commit
    res = _lorahub(sqlite_server, work, "search", "--uses", shas["free"][:12], "--json", "--database",
                   sqlite_server.database)
    assert res.returncode == 0, res.stderr
    assert [r["name"] for r in json.loads(res.stdout)] == ["mix"]
