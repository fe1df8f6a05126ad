"""Unit tests of lorahub.space.callbacks (no browser): real registry, real embedded pipeline, real files."""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import pytest

from lorahub import safezip
from lorahub.errors import LorahubError, NotFoundError, PickleRefusedError, UsageError
from lorahub.space import callbacks as cb

pytest.importorskip("diffusers", reason="the Space needs the ml extra (torch, diffusers)")


@pytest.fixture
def state(embedded_home: Path, tmp_path: Path):  # noqa: ANN201
    cb.reset_state()
    st = cb.SpaceState(base=cb.space_base(None), workdir=tmp_path / "work")
    yield st
    cb.reset_state()


@pytest.fixture
def adapters(embedded_home: Path, tmp_path: Path) -> list[Path]:
    from lorahub.base import make_adapter

    # for the Space's default SD 1.x base on a CPU: the drawing base
    a = make_adapter(tmp_path / "alpha_style.safetensors", base="drawing", rank=4, seed=1, fmt="kohya",
                     trigger="alphaword", scale=3.0)
    b = make_adapter(tmp_path / "beta_style.safetensors", base="drawing", rank=4, seed=2, fmt="diffusers",
                     trigger="betaword", scale=3.0)
    return [Path(a), Path(b)]


def _png(image) -> bytes:  # noqa: ANN001
    bio = io.BytesIO()
    image.save(bio, "PNG")
    return bio.getvalue()


def test_space_base_defaults_to_the_drawing_base_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from lorahub.base.drawing import DRAWING_ID as EMBEDDED_ID

    monkeypatch.setenv(cb.ENV_BASE, "some/hub-model")
    monkeypatch.setattr(cb, "_has_gpu", lambda: False)
    assert cb.space_base() == EMBEDDED_ID
    monkeypatch.setattr(cb, "_has_gpu", lambda: True)
    assert cb.space_base() == "some/hub-model"
    assert cb.space_base("explicit") == "explicit"
    monkeypatch.delenv(cb.ENV_BASE)
    assert cb.space_base() == EMBEDDED_ID


def test_space_bases_offer_the_embedded_sdxl_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from lorahub.base.drawing import DRAWING_ID as EMBEDDED_ID
    from lorahub.base.embedded import SDXL_ID

    monkeypatch.setenv(cb.ENV_BASE_SDXL, "stabilityai/stable-diffusion-xl-base-1.0")
    monkeypatch.setattr(cb, "_has_gpu", lambda: False)
    assert {k: v for k, v in cb.space_bases().items() if k in ("sd1", "sdxl")} == {"sd1": EMBEDDED_ID, "sdxl": SDXL_ID}
    monkeypatch.setattr(cb, "_has_gpu", lambda: True)
    assert cb.space_bases("mine")["sdxl"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert cb.space_bases("mine")["sd1"] == "mine"
    st = cb.SpaceState(base="mine", workdir=Path(tempfile.mkdtemp()))
    assert st.base_for(None) == "mine" and st.base_for("sdxl") == "stabilityai/stable-diffusion-xl-base-1.0"
    with pytest.raises(UsageError, match="unknown base family"):
        st.base_for("../etc")


def test_sdxl_family_previews_and_trains_on_the_embedded_sdxl(state: cb.SpaceState, embedded_xl_home: Path,
                                                                adapters: list[Path], tmp_path: Path) -> None:
    """Picking SDXL loads the embedded SDXL base in place of SD 1.x's (one base at a time), previews SDXL adapters
    at its native size, refuses SD 1.x ones in one line, trains on it and bakes SDXL blends."""
    from PIL import Image

    from lorahub.adapters.inspect import inspect_file
    from lorahub.base import make_adapter
    from lorahub.training.demo_data import make_demo_dataset

    xl = [Path(make_adapter(tmp_path / f"xl{i}.safetensors", base=embedded_xl_home, rank=4, seed=20 + i, fmt=fmt,
                            text_encoder=True, scale=3.0)) for i, fmt in enumerate(("kohya", "diffusers"))]
    chosen = cb.add_file(cb.add_file([], xl[0]), xl[1])
    one = cb.generate(state, chosen, [1.0, 1.0], "a photo", steps=1, seed=3, family="sdxl")
    other = cb.generate(state, chosen, [0.0, 1.0], "a photo", steps=1, seed=3, family="sdxl")
    assert one.image.size == (128, 128) and _png(one.image) != _png(other.image)
    live = state.live("sdxl")
    assert live.base.family == "sdxl" and live.stats["base_loads"] == 1 and state.loaded("sdxl")
    with pytest.raises(LorahubError, match="SD 1.x") as err:
        cb.generate(state, cb.add_file([], adapters[0]), [1.0], "a photo", steps=1, family="sdxl")
    assert "SDXL" in str(err.value) and "\n" not in str(err.value)
    sd1 = cb.generate(state, cb.add_file([], adapters[0]), [1.0], "a photo", steps=1, family="sd1")
    assert sd1.image.size == (64, 64) and state.loaded("sd1") and not state.loaded("sdxl")
    baked = cb.bake_blend(state, chosen, [1.0, 0.5])
    assert inspect_file(baked).base_family == "sdxl"
    with pytest.raises(UsageError, match="unknown base family"):
        cb.generate(state, chosen, [1.0, 1.0], "a photo", family="qwen")

    data = make_demo_dataset(tmp_path / "ds", count=2, size=64, trigger="zqx")
    files = sorted(p for p in data.rglob("*") if p.is_file())
    events = list(cb.train(state, files, "zqx", steps=2, rank=4, family="sdxl"))
    done = events[-1]
    assert done.done and done.result["base_family"] == "sdxl" and done.zip_path
    kohya = inspect_file(done.result["kohya_weights"])
    assert kohya.base_family == "sdxl" and kohya.loaders == ["diffusers", "a1111", "comfyui", "kohya"]
    with Image.open(done.samples[-1]) as im:
        assert im.size == (128, 128)


def test_search_finds_indexed_adapter_and_adds_it(state: cb.SpaceState, adapters: list[Path]) -> None:
    from lorahub.registry.catalogue import Registry

    with pytest.raises(UsageError, match="no registry to search"):  # the page opens none itself
        cb.search(state, "alphaword")
    reg = Registry()
    reg.index_paths(adapters)
    state.searcher = reg.search  # what the host (lorahub.cli.spacehost) hands the page
    rows, results = cb.search(state, "alphaword")
    assert [r[0] for r in rows] == ["alpha_style"]
    assert rows[0][1] == "alphaword" and rows[0][2] == "sd1" and rows[0][4] == 4
    assert len(rows[0][5]) == 10 and rows[0][6] == rows[0][6].upper() and len(rows[0][6]) == 12
    rows, _ = cb.search(state, "", fmt="diffusers")
    assert {r[0] for r in rows} <= {"beta_style"}
    chosen = cb.add_result([], results[0])
    assert chosen == [{"name": "alpha_style", "path": str(adapters[0]), "weight": 1.0}]
    with pytest.raises(NotFoundError, match="no local file"):
        cb.add_result(chosen, {"name": "remote", "source": "civitai:123"})
    reg.close()


def test_search_cards_show_each_adapters_sample_image(state: cb.SpaceState, adapters: list[Path],
                                                      random_sd1_base: Path, tmp_path: Path) -> None:
    """The search gallery's cards (issue 17): a sidecar image is shown as it is; an adapter without one gets a
    preview rendered on its first view, cached by its SHA-256 (the next search renders nothing); one that does
    not fit the base keeps a plain tile and is tried once; the card carries the name, trigger words, base and
    hashes beside the image, the image enlarged without smoothing."""
    import numpy as np
    from PIL import Image

    from lorahub.base import make_adapter
    from lorahub.registry.catalogue import Registry

    misfit = Path(make_adapter(tmp_path / "gamma_style.safetensors", base=random_sd1_base, rank=4, seed=3, fmt="kohya",
                               trigger="gammaword"))  # made for the narrower random SD 1.x architecture
    side = adapters[1].with_name("beta_style.preview.png")
    Image.new("RGB", (16, 16), (0, 200, 0)).save(side)
    reg = Registry()
    reg.index_paths([*adapters, misfit])
    state.searcher = reg.search
    try:
        rows, results = cb.search(state, "")
        by_name = {r["name"]: r for r in results}
        assert set(by_name) == {"alpha_style", "beta_style", "gamma_style"}
        pics = [cb.card_sample(state, r) for r in results]
        beta = pics[results.index(by_name["beta_style"])]
        # the sidecar, enlarged by a whole factor without smoothing: every pixel the sidecar's green
        assert beta.size == (cb.CARD_SAMPLE, cb.CARD_SAMPLE)
        assert set(map(tuple, np.asarray(beta).reshape(-1, 3))) == {(0, 200, 0)}
        assert pics[results.index(by_name["alpha_style"])] is None  # nothing yet: rendered on first view
        assert state.card_renders_here()  # the drawing base draws in a fraction of a second
        rendered = dict(cb.fill_card_samples(state, results, pics))
        assert set(rendered) == {results.index(by_name["alpha_style"])}  # gamma does not fit the drawing base
        alpha = rendered[results.index(by_name["alpha_style"])]
        assert alpha.size == (cb.CARD_SAMPLE, cb.CARD_SAMPLE) and np.asarray(alpha).std() > 1
        # cached: the next search finds the preview and renders nothing, gamma's failure is not retried
        again = [cb.card_sample(state, r) for r in results]
        assert np.array_equal(np.asarray(again[results.index(by_name["alpha_style"])]), np.asarray(alpha))
        assert list(cb.fill_card_samples(state, results, again)) == []
        # the card: the sample on top, the words below
        items = cb.gallery_items(results, again)
        card, caption = items[results.index(by_name["beta_style"])]
        assert caption == "beta_style" and card.size == cb.CARD_SIZE
        (x, y), side = cb.CARD_SAMPLE_AT, cb.CARD_SAMPLE
        assert np.array_equal(np.asarray(card)[y:y + side, x:x + side], np.asarray(beta))
        words = np.asarray(card)[side:]
        assert (words > 200).all(axis=2).sum() > 200  # white text drawn
        plain = np.asarray(items[results.index(by_name["gamma_style"])][0])[:side]
        assert len(set(map(tuple, plain.reshape(-1, 3)))) == 1  # a band of one colour: no sample
    finally:
        reg.close()


def test_add_file_dedupes_limits_and_refuses_pickles(adapters: list[Path], tmp_path: Path) -> None:
    chosen = cb.add_file([], adapters[0])
    assert cb.add_file(chosen, adapters[0]) == chosen  # same file twice: once
    copy = tmp_path / "sub" / adapters[0].name
    copy.parent.mkdir()
    copy.write_bytes(adapters[0].read_bytes())
    chosen = cb.add_file(chosen, copy)
    assert [c["name"] for c in chosen] == ["alpha_style", "alpha_style_2"]
    for i in range(cb.MAX_ADAPTERS - 2):
        extra = tmp_path / f"x{i}.safetensors"
        extra.write_bytes(adapters[1].read_bytes())
        chosen = cb.add_file(chosen, extra)
    extra = tmp_path / "one_too_many.safetensors"
    extra.write_bytes(adapters[1].read_bytes())
    with pytest.raises(UsageError, match="at most"):
        cb.add_file(chosen, extra)
    ckpt = tmp_path / "evil.ckpt"
    ckpt.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(PickleRefusedError):
        cb.add_file([], ckpt)
    assert cb.remove_adapter(chosen, "alpha_style_2")[1]["name"] == "x0"


def test_inspect_reports_fingerprints_and_refuses_pickles(adapters: list[Path], tmp_path: Path) -> None:
    from lorahub.adapters.fingerprint import fingerprint_file

    rep = cb.inspect(adapters[0])
    md = cb.inspect_markdown(rep)
    autov3 = fingerprint_file(adapters[0]).autov3
    assert autov3 and autov3 == autov3.upper() and f"`{autov3}`" in md
    assert "**Validation:** valid" in md and "alphaword" in md and "| rank / alpha | 4 / 4" in md
    # a pickle under a .safetensors name is refused by its bytes, before anything is unpickled
    sneaky = tmp_path / "sneaky.safetensors"
    sneaky.write_bytes(pickle.dumps({"x": 1}, protocol=2))
    with pytest.raises(PickleRefusedError):
        cb.inspect(sneaky)
    zipped = tmp_path / "model.pt"  # torch.save's zip layout
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(1))
    with pytest.raises(PickleRefusedError, match="refused"):
        cb.inspect(zipped)
    with pytest.raises(UsageError):
        cb.inspect(None)


def test_generate_changes_with_weight_and_hot_swaps(state: cb.SpaceState, adapters: list[Path]) -> None:
    chosen = cb.add_file(cb.add_file([], adapters[0]), adapters[1])
    one = cb.generate(state, chosen, [1.0, 1.0], "a photo", steps=2, seed=3)
    again = cb.generate(state, chosen, [1.0, 1.0], "a photo", steps=2, seed=3)
    other = cb.generate(state, chosen, [0.0, 1.0], "a photo", steps=2, seed=3)
    assert _png(one.image) == _png(again.image)
    assert _png(one.image) != _png(other.image)
    assert "ms per image" in other.status
    live = state.live()
    assert live.stats["base_loads"] == 1
    # dropping one adapter and adding another reuses the freed slot (hot-swap, no base reload)
    chosen2 = cb.add_file(cb.remove_adapter(chosen, "alpha_style"), adapters[0], name="alpha_again")
    cb.generate(state, chosen2, [1.0, 1.0], "a photo", steps=1)
    assert live.stats["base_loads"] == 1 and live.stats["hotswaps"] >= 1
    assert sorted(a.name for a in live.adapters) == ["alpha_again", "beta_style"]
    grid = cb.generate(state, chosen, [1.0, 1.0], "a photo", steps=1, grid=True, grid_weights="0, 1")
    assert len(grid.seconds) == 4 and grid.image.size[0] > one.image.size[0] * 2
    with pytest.raises(UsageError, match="prompt"):
        cb.generate(state, chosen, [1.0, 1.0], "  ")
    with pytest.raises(UsageError, match="not a number"):
        cb.generate(state, chosen, [1.0, 1.0], "x", grid=True, grid_weights="0, lots")


def test_bake_blend_writes_a_valid_adapter(state: cb.SpaceState, adapters: list[Path]) -> None:
    from lorahub.adapters.validate import validate_file

    chosen = cb.add_file(cb.add_file([], adapters[0]), adapters[1])
    out = cb.bake_blend(state, chosen, [1.0, 0.5])
    assert out.is_file() and out.suffix == ".safetensors"
    assert validate_file(out).valid
    # the recipe in the download names the sources by file name: nothing of the server's folders
    import json

    from lorahub.adapters.header import read_header

    md = read_header(out).string_metadata()
    recipe = json.loads(md["lorahub.recipe"])
    assert [s["path"] for s in recipe["sources"]] == [Path(c["path"]).name for c in chosen]
    assert str(Path(chosen[0]["path"]).parent) not in json.dumps(md)
    with pytest.raises(UsageError):
        cb.bake_blend(state, [], [])


def test_prepare_dataset_from_zip_and_files(state: cb.SpaceState, tmp_path: Path) -> None:
    from lorahub.training.demo_data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "ds", count=2, trigger="zqx")
    files = sorted(p for p in data.rglob("*") if p.is_file())
    z = tmp_path / "ds.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in files:
            zf.write(f, f.relative_to(data))
        zf.writestr("__MACOSX/._junk.png", b"junk")
    root = cb.prepare_dataset(state, [z], "zqx")
    assert len(list(root.rglob("*.png"))) == 2 and len(list(root.rglob("*.txt"))) == 2
    root2 = cb.prepare_dataset(state, files, "zqx")
    assert sorted(p.name for p in (root2 / "1_zqx").iterdir()) == sorted(f.name for f in files)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.png", b"x")
    # members with ".." (or hidden) parts are skipped: nothing is written outside the dataset folder
    with pytest.raises(UsageError, match="no images"):
        cb.prepare_dataset(state, [evil], "zqx")
    assert not list(tmp_path.parent.rglob("escape.png"))
    with pytest.raises(UsageError, match="upload"):
        cb.prepare_dataset(state, [], "zqx")
    bad = tmp_path / "notes.pdf"
    bad.write_bytes(b"%PDF")
    with pytest.raises(UsageError, match="not an image"):
        cb.prepare_dataset(state, [bad], "zqx")
    with pytest.raises(UsageError, match="steps must be"):
        next(cb.train(state, files, "zqx", steps=0))


def test_push_dry_run_shows_card_and_hides_token(adapters: list[Path]) -> None:
    res = cb.push(adapters[0], repo="me/alpha", endpoint="http://127.0.0.1:9", dry_run=True)
    assert res["dry_run"] and res["url"] == "http://127.0.0.1:9/me/alpha"
    assert res["card"].startswith("---") and "lora" in res["card"]
    with pytest.raises(UsageError, match="repo"):
        cb.push(adapters[0], repo=" ", dry_run=True)
    secret = "hf_SECRETSECRETSECRET"
    with pytest.raises(LorahubError) as info:
        cb.push(adapters[0], repo="me/alpha", token=secret, endpoint="http://127.0.0.1:9", dry_run=False)
    assert secret not in str(info.value)


def test_error_text_is_one_readable_line() -> None:
    pytest.importorskip("gradio")
    from lorahub.space.ui import error_text

    assert error_text(UsageError("bad steps", hint="use 10")) == "**Error:** bad steps (use 10)"
    text = error_text(ValueError("boom\nTraceback (most recent call last):"))
    assert text == "**Error:** unexpected error (ValueError): boom" and "Traceback" not in text


def test_blocks_build_and_mount_into_fastapi(embedded_home: Path) -> None:
    pytest.importorskip("gradio")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lorahub.space.ui import mount

    cb.reset_state()
    app = FastAPI()

    @app.get("/api/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    mount(app, "/")
    with TestClient(app) as client:
        assert client.get("/api/ping").json() == {"ok": "yes"}
        page = client.get("/")
        assert page.status_code == 200 and "lorahub" in page.text
        config = client.get("/config").json()
        labels = {c.get("props", {}).get("label") for c in config["components"]}
        assert {"Search", "Prompt", "Trigger word", "Token"} <= labels
    cb.reset_state()


def test_space_command_is_registered() -> None:
    from click.testing import CliRunner

    from lorahub.cli.main import COMMANDS, cli

    assert COMMANDS["space"] == "lorahub.cli.commands.space:space_cmd"
    out = CliRunner().invoke(cli, ["space", "--help"])
    assert out.exit_code == 0, out.output
    for opt in ("--host", "--port", "--base", "127.0.0.1", "7860"):
        assert opt in out.output


# --------------------------------------------------------------------------- hostile inputs (issue 13)


def _zip_of(path: Path, members: dict[str, bytes], *, compress: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_training_zips_are_bounded_before_anything_is_written(state: cb.SpaceState, tmp_path: Path) -> None:
    # a zip bomb: 60 MiB of zeros in a few kilobytes (each member under the old 64 MiB per-file limit)
    bomb = _zip_of(tmp_path / "bomb.zip", {"a.png": b"\0" * (60 << 20)})
    assert bomb.stat().st_size < 200_000
    with pytest.raises(UsageError, match="bomb"):
        cb.prepare_dataset(state, [bomb], "zqx")
    many = _zip_of(tmp_path / "many.zip", {f"{i}.txt": b"x" for i in range(safezip.MAX_FILES + 1)})
    with pytest.raises(UsageError, match="more than"):
        cb.prepare_dataset(state, [many], "zqx")
    assert not [p for p in state.workdir.rglob("*") if p.is_file()], "a refused zip left files behind"
    # the total is bounded too (small limits here; the real ones are safezip.MAX_BYTES and MAX_FILES)
    big = _zip_of(tmp_path / "big.zip", {"a.png": b"\1" * 3000, "b.png": b"\2" * 3000}, compress=zipfile.ZIP_STORED)
    with zipfile.ZipFile(big) as zf, pytest.raises(UsageError, match="unpacks to more"):
        safezip.extract_zip(zf, tmp_path / "out", max_bytes=5000)
    # hidden parts (.git, .GIT), climbing paths and Windows aliases are never written
    odd = _zip_of(tmp_path / "odd.zip", {".git/config": b"x", "sub/.GIT/hooks/post": b"x", "git~1/config": b"x",
                                         "../up.png": b"x", "/abs.png": b"x", "ok/fine.png": b"png"})
    with zipfile.ZipFile(odd) as zf:
        assert safezip.extract_zip(zf, tmp_path / "odd") == 1
    assert [p.relative_to(tmp_path / "odd").as_posix() for p in (tmp_path / "odd").rglob("*") if p.is_file()] == ["ok/fine.png"]


def test_push_zips_are_bounded_and_their_folders_removed(adapters: list[Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    package = _zip_of(tmp_path / "pkg.zip", {"alpha/pytorch_lora_weights.safetensors": adapters[0].read_bytes()})
    res = cb.push(package, repo="me/alpha", endpoint="http://127.0.0.1:9", dry_run=True)
    assert res["dry_run"] and res["card"].startswith("---")
    assert list(temp.iterdir()) == [], "the unpacked package was left behind"
    bomb = _zip_of(tmp_path / "bomb.zip", {"alpha/pytorch_lora_weights.safetensors": b"\0" * (40 << 20)})
    with pytest.raises(UsageError, match="bomb"):
        cb.push(bomb, repo="me/alpha", endpoint="http://127.0.0.1:9", dry_run=True)
    assert list(temp.iterdir()) == []


def test_push_without_a_token_never_uses_the_environments(adapters: list[Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from uikit import AMBIENT_ENV_TOKEN, AMBIENT_FILE_TOKEN, Listener

    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    (hf_home / "token").write_text(AMBIENT_FILE_TOKEN)
    monkeypatch.setenv("HF_TOKEN", AMBIENT_ENV_TOKEN)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(hf_home / "token"))
    listener = Listener()
    try:
        with pytest.raises(UsageError, match="token"):
            cb.push(adapters[0], repo="me/alpha", token="", endpoint=listener.url, dry_run=False)
        res = cb.push(adapters[0], repo="me/alpha", token=None, endpoint=listener.url, dry_run=True)
        assert res["dry_run"]
        assert listener.requests == []
        with pytest.raises(LorahubError, match="401"):
            cb.push(adapters[0], repo="me/alpha", token="lh_typed", endpoint=listener.url, dry_run=False)
        assert {r["headers"].get("authorization") for r in listener.requests} == {"Bearer lh_typed"}
    finally:
        listener.close()


def test_push_transport_failures_read_the_same(adapters: list[Path]) -> None:
    from uikit import Dropper, closed_port_url

    dropper = Dropper()
    try:
        lines = []
        for url in (closed_port_url(), dropper.url):
            with pytest.raises(LorahubError) as info:
                cb.push(adapters[0], repo="me/alpha", token="lh_typed", endpoint=url, dry_run=False)
            lines.append(str(info.value).replace(url, "<endpoint>"))
        assert lines[0] == lines[1] == cb.NETWORK_FAILURE.format(endpoint="<endpoint>")
    finally:
        dropper.close()


def test_training_stops_when_the_page_goes_away(state: cb.SpaceState, tmp_path: Path) -> None:
    import threading
    import time

    from lorahub.training.demo_data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "ds", count=2, trigger="zqx")
    files = sorted(p for p in data.rglob("*") if p.is_file())
    run = cb.train(state, files, "zqx", steps=500, poll=0.05)
    first = next(run)
    while first.step < 1:
        first = next(run)
    run.close()  # what Gradio does when the page is closed or the call cancelled
    deadline = time.monotonic() + 120
    while any(t.name == "lorahub-space-train" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the training went on after its page went away"
        time.sleep(0.1)
    assert not list((state.workdir / "train").iterdir()), "the stopped run's files were kept"


def test_guard_policy_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    pytest.importorskip("gradio")
    from lorahub.space import guard

    assert guard.canonical_endpoint("HTTPS://HuggingFace.co:443/") == "https://huggingface.co"
    for bad in ("ftp://x", "https://u:p@huggingface.co", "https://huggingface.co/?a=1", "huggingface.co", "http://[::1"):
        with pytest.raises(UsageError):
            guard.canonical_endpoint(bad)
    monkeypatch.setenv(guard.ENV_PUSH_ENDPOINTS, "http://127.0.0.1:8000/")
    monkeypatch.setenv(guard.ENV_RATE_LIMITS, "train=1/60")
    pol = guard.make_policy(serving_url="http://hub.example", blocked=[tmp_path / "data"])
    assert pol.push_endpoints == ("http://hub.example", "http://127.0.0.1:8000", "https://huggingface.co")
    assert pol.endpoint("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    for bad in ("https://huggingface.co.evil.example", "http://huggingface.co", "http://127.0.0.1:8001", ""):
        with pytest.raises(UsageError, match="pushes go only to"):
            pol.endpoint(bad)
    # files: only regular files inside the upload folder
    up = pol.upload_dir / "abc" / "x.safetensors"
    up.parent.mkdir(parents=True, exist_ok=True)
    up.write_bytes(b"x")
    assert pol.uploaded(str(up)) == up.resolve()
    link = pol.upload_dir / "abc" / "passwd"
    link.symlink_to("/etc/passwd")
    for bad in (link, pol.upload_dir / "abc", "/etc/passwd", str(up) + "\x00", f"file://{up}", pol.upload_dir / ".." / "work"):
        with pytest.raises(UsageError, match="uploaded through this page"):
            pol.uploaded(bad)
    # rate limits: per client, per window
    pol.limiter.check("train", "a")
    with pytest.raises(guard.RateLimited, match="too many train"):
        pol.limiter.check("train", "a")
    pol.limiter.check("train", "b")
    # the sweeper: old uploads and old jobs go, recent ones stay
    job = pol.work_dir / "train" / "job1"
    job.mkdir(parents=True)
    (job / "pkg.zip").write_bytes(b"z")
    assert pol.sweep() == 0 and up.exists() and job.exists()
    assert pol.sweep(now=time.time() + pol.files_ttl_s + 5) >= 2
    assert not up.exists() and not job.exists()
    # the private folders of UI processes that were killed are removed; those of live ones stay
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name, pid in (("lorahub-ui-dead", dead.stdout.strip()), ("lorahub-ui-live", str(os.getpid()))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pid").write_text(pid)
    guard._remove_orphans(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("lorahub-ui-*")) == ["lorahub-ui-live"]


def test_blend_search_is_bounded_and_names_no_server_path(state: cb.SpaceState, adapters: list[Path],
                                                            tmp_path: Path) -> None:
    """Upload a few images, pick adapters, search, see the grid; every bound is checked before the base is
    loaded, and the recipe names the sources by file name only."""
    from PIL import Image

    from lorahub.pipeline.recipe import parse_recipe

    up = tmp_path / "uploads"
    up.mkdir()
    files = []
    for i, color in enumerate(((200, 30, 30), (30, 30, 200))):
        Image.new("RGB", (80, 80), color).save(up / f"t{i}.png")
        files.append(str(up / f"t{i}.png"))
    (up / "t0.txt").write_text("a red picture\n")
    files.append(str(up / "t0.txt"))
    chosen = cb.add_file(cb.add_file([], adapters[0]), adapters[1])
    with pytest.raises(UsageError, match="add the adapters"):
        cb.blend_search(state, [], files)
    with pytest.raises(UsageError, match="budget"):
        cb.blend_search(state, chosen, files, budget=cb.MAX_SEARCH_BUDGET + 1)
    with pytest.raises(UsageError, match="L1"):
        cb.blend_search(state, chosen, files, l1=float("nan"))
    many = [str(up / "t1.png")] * (cb.MAX_SEARCH_IMAGES + 1)
    with pytest.raises(UsageError, match=f"at most {cb.MAX_SEARCH_IMAGES}"):
        cb.blend_search(state, chosen, many)
    (up / "x.safetensors").write_bytes(b"x")
    with pytest.raises(UsageError, match="not an image"):
        cb.blend_search(state, chosen, [*files, str(up / "x.safetensors")])
    Image.new("1", (4200, 4100)).save(up / "huge.png")  # a few KB on disk, 17 M pixels
    with pytest.raises(UsageError, match="too large"):
        cb.blend_search(state, chosen, [str(up / "huge.png")])
    (up / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(UsageError, match="not a readable image"):
        cb.blend_search(state, chosen, [str(up / "bad.png")])
    assert not state.loaded()  # refused before the base model was loaded

    seen: list[tuple[int, int, float]] = []
    out = cb.blend_search(state, chosen, files, prompt="a blue picture", budget=6, l1=0.0,
                          on_progress=lambda i, n, best: seen.append((i, n, best)))
    assert out.grid.width > 2 * 128 and out.grid.height > 3 * 128
    assert seen and seen[-1][1] == 6
    recipe = parse_recipe(out.recipe_yaml)
    assert recipe.search is not None and recipe.search.targets == 2 and recipe.search.budget == 6
    assert all(s.path and "/" not in s.path for s in recipe.sources), out.recipe_yaml
    assert str(tmp_path) not in out.recipe_yaml and str(state.workdir) not in out.recipe_yaml
    assert out.recipe_path.is_file() and out.recipe_path.is_relative_to(state.workdir)
    assert set(out.weights) == {c["name"] for c in chosen} and "denoising loss" in out.summary


def test_a_search_result_lists_the_blends_made_from_it(state: cb.SpaceState, adapters: list[Path],
                                                        tmp_path: Path) -> None:
    """Picking a result in Search names the blends made from that adapter (the registry's blend sources)."""
    from lorahub.pipeline.blend import blend, blend_inputs
    from lorahub.registry.catalogue import Registry

    out = tmp_path / "blends"
    out.mkdir()
    blend(blend_inputs([(adapters[0], 0.5), (adapters[1], 0.5)]), out=out / "ab_mix.safetensors")
    reg = Registry()
    reg.index_paths([*adapters, out / "ab_mix.safetensors"])
    state.searcher = reg.search  # what the host (lorahub.cli.spacehost) hands the page
    _, results = cb.search(state, "alphaword")
    alpha = next(r for r in results if r["name"] == "alpha_style")
    assert cb.used_in(state, alpha) == []  # a host that gives no ``uses``: the page names none
    state.uses = reg.uses
    assert cb.used_in(state, alpha) == ["ab_mix"]
    _, results = cb.search(state, "ab_mix")
    assert cb.used_in(state, next(r for r in results if r["name"] == "ab_mix")) == []
    assert cb.used_in(state, {"name": "x", "sha256": "../../etc/passwd"}) == []
    reg.close()


def test_sample_images_are_read_within_bounds(tmp_path: Path) -> None:
    """A card's sample: one over MAX_SAMPLE_PIXELS (from its header, before decoding) or not an image at all is
    not shown; a small one is enlarged by a whole factor to the card's side."""
    from PIL import Image

    huge = tmp_path / "huge.png"
    Image.new("1", (5000, 4000)).save(huge)  # 20 M pixels in a few KB
    assert huge.stat().st_size < 100_000 and cb._open_sample(huge) is None
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert cb._open_sample(junk) is None
    small = tmp_path / "small.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(small)
    assert cb._open_sample(small).size == (cb.CARD_SAMPLE, cb.CARD_SAMPLE)
