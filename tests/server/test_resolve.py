"""``lorahub resolve`` against two real ``lorahub serve`` instances: one asked as a Hub (lorahub's by-hash
API, ``--endpoint``), one as Civitai (``--civitai``: the batched by-hash of its Civitai-compatible API),
with files published on one, the other, both or neither. The Civitai side runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hubkit import start_server, stop_server, write_kohya_lora

from lorahub.adapters.metadata import read_metadata
from lorahub.cli.main import cli

CARD = "---\nlicense: apache-2.0\nbase_model: Pony\ntags: [style]\ninstance_prompt: zzz style\n---\n# Z\n"


@pytest.fixture(scope="module")
def hub_side(tmp_path_factory):  # noqa: ANN201
    server = start_server(tmp_path_factory.mktemp("resolve-hub"), None, "sqlite")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def world(hub_side, hub_server, tmp_path_factory):  # noqa: ANN001, ANN201
    """Files: on_hub (published on the Hub side), on_civ (Civitai side), on_both, on_none."""
    d = tmp_path_factory.mktemp("resolve-files")
    files = {name: write_kohya_lora(d / f"{name}.safetensors", seed=30 + i, title=name, trigger=f"{name}word")
             for i, name in enumerate(("on_hub", "on_civ", "on_both", "on_none"))}
    for server, names in ((hub_side, ("on_hub", "on_both")), (hub_server, ("on_civ", "on_both"))):
        api = server.api("alice")
        for name in names:
            api.create_repo(f"alice/{name}")
            api.upload_file(path_or_fileobj=str(files[name]), path_in_repo=f"{name}.safetensors", repo_id=f"alice/{name}")
            api.upload_file(path_or_fileobj=CARD.encode(), path_in_repo="README.md", repo_id=f"alice/{name}")
    return hub_side, hub_server, files


def resolve(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["resolve", *args])
    return r.exit_code, r.stdout, r.stderr


def copies(files: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    for f in files.values():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def test_found_on_one_both_or_neither(world, tmp_path) -> None:  # noqa: ANN001
    hub, civ, files = world
    folder = copies(files, tmp_path)
    code, out, err = resolve(str(folder), "--endpoint", hub.url, "--civitai", civ.url, "--json")
    assert code == 0, err
    results = {Path(r["path"]).stem: r for r in json.loads(out)}
    kinds = {name: sorted(p["kind"] for p in r["found"]) for name, r in results.items()}
    assert kinds == {"on_hub": ["hub"], "on_civ": ["civitai"], "on_both": ["civitai", "hub"], "on_none": []}
    assert "3 of 4 file(s) found; 1 not published" in err
    h = next(p for p in results["on_hub"]["found"] if p["kind"] == "hub")
    assert h["repo_id"] == "alice/on_hub" and h["license"] == "apache-2.0" and h["base_model"] == "Pony"
    assert "zzz style" in h["trigger_words"] and h["url"] == f"{hub.url}/alice/on_hub" and h["endpoint"] == hub.url
    c = next(p for p in results["on_civ"]["found"] if p["kind"] == "civitai")
    assert c["name"] == "on_civ" and c["base_model"] == "SD 1.5" and c["base_family"] == "sd1"
    assert c["license"] == "apache-2.0" and "zzz style" in c["trigger_words"]
    assert c["url"] == f"{civ.url}/models/{c['model_id']}?modelVersionId={c['version_id']}"
    assert c["download_url"].endswith(f"/api/download/models/{c['version_id']}")
    assert all(not r["errors"] and not r["cached"] for r in results.values())
    # a second run answers from the cache; --cache-ttl 0 asks again
    code, out, _ = resolve(str(folder), "--endpoint", hub.url, "--civitai", civ.url, "--json")
    again = json.loads(out)
    assert code == 0 and all(r["cached"] for r in again)
    assert {Path(r["path"]).stem: len(r["found"]) for r in again} == {k: len(v["found"]) for k, v in results.items()}
    code, out, _ = resolve(str(folder), "--civitai", civ.url, "--json", "--cache-ttl", "0")
    assert code == 0 and not any(r["cached"] for r in json.loads(out))
    # the human form says it too
    code, out, _ = resolve(str(folder / "on_none.safetensors"), "--civitai", civ.url + "/api/v1")
    assert code == 0 and "not published on any server asked" in out


def test_batches_of_100(world, tmp_path) -> None:  # noqa: ANN001
    _, civ, _ = world
    folder = tmp_path / "many"
    for i in range(130):
        write_kohya_lora(folder / f"x{i}.safetensors", seed=1000 + i, rank=1)
    before = len(re.findall(r"POST /api/v1/model-versions/by-hash", civ.log_text()))
    code, out, err = resolve(str(folder), "--civitai", civ.url, "--json")
    assert code == 0, err
    assert len(json.loads(out)) == 130 and "0 of 130 file(s) found" in err
    assert len(re.findall(r"POST /api/v1/model-versions/by-hash", civ.log_text())) - before == 2


def test_unreachable_server_is_a_failure(world, tmp_path) -> None:  # noqa: ANN001
    hub, _, files = world
    code, out, err = resolve(str(files["on_hub"]), "--endpoint", hub.url, "--civitai", "http://127.0.0.1:9", "--json")
    assert code == 1
    (r,) = json.loads(out)
    assert [p["kind"] for p in r["found"]] == ["hub"] and len(r["errors"]) == 1 and "cannot reach" in r["errors"][0]
    # a Hub without lorahub's by-hash API is an error of that endpoint, not "not published"
    code, out, _ = resolve(str(files["on_hub"]), "--endpoint", hub.url + "/nothing-here", "--json")
    assert code == 1 and "no lorahub by-hash API" in json.loads(out)[0]["errors"][0]


@pytest.mark.parametrize(
    "args",
    [
        ["PATH"],  # no server named
        ["PATH", "--civitai", "ftp://example.com"],
        ["PATH", "--endpoint", "not a url"],
        ["/nonexistent/file.safetensors", "--civitai", "http://127.0.0.1:9"],
        ["PATH", "--civitai", "http://127.0.0.1:9", "--cache-ttl", "soon"],
    ],
)
def test_usage_errors(world, args) -> None:  # noqa: ANN001
    _, _, files = world
    code, out, err = resolve(*[str(files["on_none"]) if a == "PATH" else a for a in args])
    assert code == 2 and out == "" and "Traceback" not in err, err


def test_apply_records_and_leaves_the_file_alone(world, tmp_path) -> None:  # noqa: ANN001
    hub, civ, files = world
    mine = tmp_path / "on_both.safetensors"
    mine.write_bytes(files["on_both"].read_bytes())
    before = mine.read_bytes()
    code, out, err = resolve(str(mine), "--endpoint", hub.url, "--civitai", civ.url, "--apply", "--json")
    assert code == 0, err
    (r,) = json.loads(out)
    assert r["applied"] is True and r["new_sha256"] is None and mine.read_bytes() == before
    search = CliRunner().invoke(cli, ["search", "--hash", r["sha256"], "--json"])
    assert search.exit_code == 0, search.stderr
    kinds = sorted(m["source_kind"] for lookup in json.loads(search.stdout) for m in lookup["matches"])
    assert kinds == ["local", "record", "record"]
    names = CliRunner().invoke(cli, ["search", "zzz", "--json"])
    assert any(x["license"] == "apache-2.0" for x in json.loads(names.stdout))


def test_write_metadata(world, tmp_path) -> None:  # noqa: ANN001
    _, civ, files = world
    mine = tmp_path / "on_civ.safetensors"
    mine.write_bytes(files["on_civ"].read_bytes())
    code, out, err = resolve(str(mine), "--civitai", civ.url, "--write-metadata", "--json")
    assert code == 0, err
    (r,) = json.loads(out)
    assert r["new_sha256"] and r["new_sha256"] != r["sha256"] and "SHA-256 changed" in err
    md = read_metadata(mine)
    assert md["modelspec.title"] == "on_civ" and "zzz style" in md["modelspec.trigger_phrase"]
    assert md["modelspec.license"] == "apache-2.0" and md["lorahub.source_url"].startswith(civ.url + "/models/")
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))  # nothing half-written left
    # the rewritten copy is no longer found by hash: as the help says
    code, out, _ = resolve(str(mine), "--civitai", civ.url, "--json")
    assert code == 0 and json.loads(out)[0]["found"] == []
