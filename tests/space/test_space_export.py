"""``lorahub space export`` and the host of a standalone Space (lorahub.cli.spacehost): the folder it writes,
the input it refuses, and the registry a Space fills when it starts (the embedded base's demo adapters, the
LoRA repos of a real ``lorahub serve`` indexed from their headers, a result's file fetched on its first
preview and checked)."""

from __future__ import annotations

import importlib.metadata as md
import json
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lorahub.cli import spacehost
from lorahub.cli.main import cli
from lorahub.errors import UsageError

pytest.importorskip("gradio", reason="the Space needs the space extra")


def _front(readme: Path) -> dict:
    return yaml.safe_load(readme.read_text(encoding="utf-8").split("---")[1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export") / "space"
    res = CliRunner().invoke(cli, ["space", "export", str(out), "--hardware", "zero-gpu", "--base", "acme/sd-base",
                                   "--index-hub", "endpoint=http://127.0.0.1:9, author=alice, tag=lora", "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_export_writes_a_complete_space_folder(exported: tuple[Path, dict]) -> None:
    import gradio

    out, result = exported
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(result["files"])
    front = _front(out / "README.md")
    assert front["sdk"] == "gradio" and front["sdk_version"] == gradio.__version__ and front["app_file"] == "app.py"
    assert front["suggested_hardware"] == "zero-a10g" and front["license"] == "apache-2.0"
    assert len(front["short_description"]) <= 60 and front["models"] == ["acme/sd-base"]
    assert "hf upload" in (out / "README.md").read_text()
    # requirements: the wheel by its path in the folder, the extras pinned to what is installed here, spaces
    lines = [ln for ln in (out / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "./" + result["wheel"] and (out / result["wheel"]).is_file()
    pins = dict(ln.split("==") for ln in lines[1:] if "==" in ln)
    assert pins["gradio"] == gradio.__version__ and pins["diffusers"] == md.version("diffusers")
    assert pins["torch"] == md.version("torch").split("+")[0]
    assert pins["spaces"] == md.version("spaces")
    # the wheel holds lorahub with its faces, built from this tree
    with zipfile.ZipFile(out / result["wheel"]) as zf:
        names = set(zf.namelist())
    assert {"lorahub/cli/spacehost.py", "lorahub/space/gpu.py", "lorahub/registry/catalogue.py"} <= names
    assert not any(n.startswith("tests/") or "__pycache__" in n for n in names)
    # app.py: the exported defaults, then the CLI's host composes the registry and the page
    app = (out / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert "setdefault('LORAHUB_SPACE_HARDWARE', 'zero-gpu')" in app
    assert "setdefault('LORAHUB_SPACE_BASE', 'acme/sd-base')" in app
    assert "setdefault('LORAHUB_SPACE_INDEX', 'endpoint=http://127.0.0.1:9, author=alice, tag=lora')" in app
    assert "space_blocks(demo_adapters=True)" in app


def test_space_id_names_the_wheel_where_the_hub_build_finds_it(tmp_path: Path) -> None:
    """The Hub builds a Space from requirements.txt alone: the wheel is fetched from the Space's own files."""
    out = tmp_path / "s"
    res = CliRunner().invoke(cli, ["space", "export", str(out), "--space-id", "me/demo", "--endpoint", "http://127.0.0.1:8000"])
    assert res.exit_code == 0, res.output
    req = (out / "requirements.txt").read_text()
    wheel = next((out / "wheels").glob("*.whl")).name
    assert f"lorahub-toolkit @ http://127.0.0.1:8000/spaces/me/demo/resolve/main/wheels/{wheel}" in req
    assert "spaces" not in req.split() and _front(out / "README.md")["suggested_hardware"] == "cpu-basic"
    assert "hf upload me/demo" in (out / "README.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--hardware", "tpu"], "Invalid value for '--hardware'"),
    (["--index-hub", "owner=alice"], "is not KEY=VALUE"),
    (["--index-hub", "limit=0, tag=lora"], "limit must be"),
    (["--index-hub", "repo=../../etc"], "is not a repo id"),
    (["--base", "/home/me/model"], "give a Hub id"),
    (["--space-id", "not-a-repo"], "is not OWNER/NAME"),
    (["--endpoint", "http://x"], "--endpoint goes with --space-id"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "space"
    res = CliRunner().invoke(cli, ["space", "export", str(out), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_kept_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "space"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    res = CliRunner().invoke(cli, ["space", "export", str(out)])
    assert res.exit_code == 2 and "exists and is not empty" in res.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    res = CliRunner().invoke(cli, ["space", "export", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert not (out / "mine.txt").exists() and (out / "app.py").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space"]  # no temporary folder left behind


def test_parse_index() -> None:
    spec = spacehost.parse_index("endpoint=http://127.0.0.1:8000/, author=alice author=bob,tag=lora carol/x limit=5")
    assert spec.endpoint == "http://127.0.0.1:8000" and spec.authors == ["alice", "bob"] and spec.tags == ["lora"]
    assert spec.repos == ["carol/x"] and spec.limit == 5
    assert spacehost.parse_index(spec.text()) == spec
    assert spacehost.parse_index("  ") is None
    with pytest.raises(UsageError, match="name what to index"):
        spacehost.parse_index("endpoint=http://127.0.0.1:8000")
    with pytest.raises(UsageError, match="letters, digits"):
        spacehost.parse_index("author=a;rm")
    with pytest.raises(UsageError, match="not a Hub endpoint"):
        spacehost.parse_index("endpoint=file:///etc, tag=x")


# --------------------------------------------------------------------------- the registry a Space starts with


@pytest.fixture(scope="module")
def hub_repos(sqlite_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: ANN001
    """Two LoRA repos and one without adapters on a real ``lorahub serve``."""
    from lorahub.base import make_adapter

    folder = tmp_path_factory.mktemp("repos")
    api = sqlite_server.api("alice")
    files = {}
    for name, trigger in (("inkhub", "inkhubword"), ("neonhub", "neonhubword")):
        path = make_adapter(folder / f"{name}.safetensors", rank=4, seed=len(name), fmt="kohya", trigger=trigger, scale=3.0)
        api.create_repo(f"alice/{name}")
        api.upload_file(path_or_fileobj=str(path), path_in_repo=f"{name}.safetensors", repo_id=f"alice/{name}")
        files[name] = Path(path)
    # inkhub's card shows a sample (its widget, a file of the repo); neonhub's names an address outside its repo
    from PIL import Image

    Image.new("RGB", (16, 16), (10, 120, 200)).save(folder / "ink.png")
    api.upload_file(path_or_fileobj=str(folder / "ink.png"), path_in_repo="samples/ink.png", repo_id="alice/inkhub")
    for name, url in (("inkhub", "samples/ink.png"), ("neonhub", "http://127.0.0.1:9/evil.png")):
        card = f"---\nwidget:\n- text: {name}word\n  output:\n    url: {url}\n---\n# {name}\n"
        api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=f"alice/{name}")
    api.create_repo("alice/notes")
    api.upload_file(path_or_fileobj=b"# notes", path_in_repo="README.md", repo_id="alice/notes")
    return files


def test_the_host_fills_the_registry_and_previews_hub_results_on_demand(
        embedded_home: Path, sqlite_server, hub_repos: dict[str, Path], tmp_path: Path) -> None:  # noqa: ANN001
    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.errors import LorahubError
    from lorahub.schemas.registry import SearchQuery
    from lorahub.space import callbacks as cb

    spec = spacehost.parse_index(f"endpoint={sqlite_server.url}, author=alice")
    host = spacehost.open_host(f"sqlite:///{tmp_path / 'space.sqlite'}", demo_adapters=True, index=spec)
    try:
        assert host.hub_endpoints == (sqlite_server.url.rstrip("/"),)
        assert str(tmp_path / "space.sqlite") in map(str, host.blocked)
        every = host.registry.search(SearchQuery(limit=100))
        names = {r.name for r in every}
        # on this CPU the page's base is the drawing base: its trained demo adapters, with their sample images
        assert {"drawing_heart", "drawing_checkered", "drawing_sunset"} <= names
        heart = next(r for r in every if r.name == "drawing_heart")
        assert heart.trigger_words == ["heart"] and heart.base_family == "sd1"
        assert Path(heart.source).with_name("drawing_heart.preview.png").is_file()
        assert {"inkhub", "neonhub"} <= names and "notes" not in names
        # nothing of the weights was read: the hub records know the file's SHA-256 from the Hub, no AutoV3
        hub = next(r for r in every if r.name == "inkhub")
        assert hub.source_kind == "hub" and hub.autov3 is None
        assert hub.sha256 == fingerprint_file(hub_repos["inkhub"]).sha256
        # the page previews it: downloaded once, checked, cached in the work folder
        state = cb.SpaceState(base=cb.space_base(None), searcher=host.registry.search, workdir=tmp_path / "work",
                              hub_endpoints=host.hub_endpoints)
        _, results = cb.search(state, "inkhubword")
        chosen = cb.add_result([], results[0], state)
        local = Path(chosen[0]["path"])
        assert local.read_bytes() == hub_repos["inkhub"].read_bytes() and (tmp_path / "work") in local.parents
        assert cb.add_result([], results[0], state)[0]["path"] == str(local)  # from the cache
        # the gallery's cards: inkhub's shows its card's widget image, read from its repo once; neonhub's card
        # names an address outside its repo, which is never fetched: a plain card, and not asked again
        hubs = [r for r in cb.search(state, "")[1] if r["source_kind"] == "hub"]
        assert sorted(r["name"] for r in hubs) == ["inkhub", "neonhub"]
        pics = [cb.card_sample(state, r) for r in hubs]
        assert pics == [None, None]  # nothing fetched yet: the first answer is quick
        got = dict(cb.fill_card_samples(state, hubs, pics))
        ink = next(i for i, r in enumerate(hubs) if r["name"] == "inkhub")
        assert set(got) == {ink} and got[ink].size == (cb.CARD_SAMPLE, cb.CARD_SAMPLE)
        assert got[ink].getpixel((5, 5)) == (10, 120, 200)
        pics = [cb.card_sample(state, r) for r in hubs]
        assert pics[ink] is not None and pics[1 - ink] is None
        assert list(cb.fill_card_samples(state, hubs, pics)) == []
        # the fetch's own bounds: a file over its cap is refused mid-read, a path out of the repo unasked
        from lorahub.hub.pull import fetch_small

        with pytest.raises(LorahubError, match="more than the 1,000"):
            fetch_small("alice/inkhub", "inkhub.safetensors", endpoint=sqlite_server.url, max_size=1000)
        with pytest.raises(LorahubError, match="refused to fetch"):
            fetch_small("alice/inkhub", "../../etc/passwd", endpoint=sqlite_server.url, max_size=1000)
        # a record whose hash is not the file's is refused and nothing is kept
        other = dict(results[0], sha256="0" * 64, source=results[0]["source"].replace("inkhub", "neonhub"),
                     url=results[0]["url"].replace("inkhub", "neonhub"))
        with pytest.raises(LorahubError, match="does not match the catalogue"):
            cb.add_result([], other, state)
        assert not any(p.name == "neonhub.safetensors" and p.is_file() for p in (tmp_path / "work").rglob("*"))
        # a file over the page's cap is refused before a byte of it is read
        state.max_download = 1000
        with pytest.raises(LorahubError, match="more than the 1,000 allowed"):
            cb.add_result([], dict(results[0], source=results[0]["source"].replace("inkhub", "neonhub"),
                                   url=results[0]["url"].replace("inkhub", "neonhub")), state)
        state.max_download = 1 << 30
        # a catalogue record naming a path outside the cache (a hostile index) is refused unread
        with pytest.raises(LorahubError, match="refused to fetch"):
            cb.add_result([], dict(results[0], source="alice/inkhub@abc:../../../etc/passwd"), state)
        assert not any(p.name == "neonhub.safetensors" and p.is_file() for p in (tmp_path / "work").rglob("*"))
        # a result of an endpoint the page was not given is refused before any request
        state.hub_endpoints = ("http://127.0.0.1:9",)
        with pytest.raises(UsageError, match="previews adapters only from http://127.0.0.1:9"):
            cb.add_result([], results[0], state)
        # a second start: the demo adapters and the repos are there already, nothing is indexed twice
        again = spacehost.open_host(f"sqlite:///{tmp_path / 'space.sqlite'}", demo_adapters=True, index=spec)
        try:
            assert again.summaries[0].added == 0 and again.summaries[-1].unchanged == 2
        finally:
            again.close()
    finally:
        host.close()


def test_the_host_blocks_the_files_of_its_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page opens no database and asks nothing of the registry: the host names the files to block."""
    from lorahub.registry.database import database_files

    db = tmp_path / "r.sqlite"
    assert database_files(f"sqlite:///{db}") == [db, *(tmp_path / f"r.sqlite{s}" for s in ("-wal", "-shm", "-journal", "-vectors"))]
    assert database_files("postgresql://u@127.0.0.1:5432/test") == []
    assert database_files("sqlite://") == []
    monkeypatch.setenv("LORAHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    assert database_files(None)[0] == tmp_path / "env.sqlite"


def test_export_needs_the_source_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lorahub installed from a wheel (a Space itself) has no tree to build the wheel from: one line."""
    import lorahub
    from lorahub.cli import spaceexport

    fake = tmp_path / "site-packages" / "lorahub" / "__init__.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("")
    monkeypatch.setattr(lorahub, "__file__", str(fake))
    with pytest.raises(UsageError, match="not installed from one"):
        spaceexport.source_tree()
    res = CliRunner().invoke(cli, ["space", "export", str(tmp_path / "out")])
    assert res.exit_code == 2 and "not installed from one" in res.output and not (tmp_path / "out").exists()


def test_lorahub_space_refuses_a_bad_index_setting_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    res = CliRunner().invoke(cli, ["space", "--index-hub", "owner=alice"])
    assert res.exit_code == 2 and "is not KEY=VALUE" in res.output and "Traceback" not in res.output
    monkeypatch.setenv(spacehost.ENV_INDEX, "repo=a/b/c")
    res = CliRunner().invoke(cli, ["space"])
    assert res.exit_code == 2 and "is not a repo id" in res.output
