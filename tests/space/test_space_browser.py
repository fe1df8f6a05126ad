"""End-to-end: ``lorahub space`` in a subprocess, driven in headless Debian Chromium through Playwright.

One walk through the page, in the order a new user takes: search -> preview/blend -> inspect -> train ->
push (to a ``lorahub serve`` started first, which the Space allows with ``--push-endpoint``). Screenshots of
every tab go to ``test-artifacts/space/``.
Chromium missing: skipped with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from uikit import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "space"
LORAHUB = str(Path(sys.executable).with_name("lorahub"))

from browserkit import image_bytes as _image_bytes  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.torch]


@pytest.fixture
def hub(tmp_path: Path):  # noqa: ANN201
    """A ``lorahub serve`` to push to."""
    import hubkit as srv

    server = srv.start_server(tmp_path / "serve", None, "sqlite")
    try:
        yield server
    finally:
        srv.stop_server(server)
        shutil.rmtree(tmp_path / "serve", ignore_errors=True)


@pytest.fixture
def space_url(embedded_home: Path, embedded_xl_home: Path, lorahub_home: Path, tmp_path: Path, hub):  # noqa: ANN001, ANN201
    """``lorahub space`` on a free loopback port, its registry holding two synthetic adapters; it may push
    to ``hub`` (and the Hugging Face Hub)."""
    import httpx

    from lorahub.base import make_adapter
    from lorahub.registry.catalogue import Registry

    lib = tmp_path / "adapters"
    lib.mkdir()
    # for the page's SD 1.x base on a CPU: the drawing base
    make_adapter(lib / "alpha_style.safetensors", base="drawing", rank=4, seed=1, fmt="kohya", trigger="alphaword",
                 scale=3.0)
    make_adapter(lib / "beta_style.safetensors", base="drawing", rank=4, seed=2, fmt="diffusers", trigger="betaword",
                 scale=3.0)
    with Registry() as reg:
        reg.index_paths([lib])
    port = free_port()
    log = tmp_path / "space.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LORAHUB_SPACE", "LORAHUB_UI"))}
    env.update(LORAHUB_HOME=str(lorahub_home), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    fh = open(log, "w")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen([LORAHUB, "space", "--host", "127.0.0.1", "--port", str(port), "--push-endpoint", hub.url],
                            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    fh.close()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"lorahub space exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"lorahub space did not answer in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield {"url": url, "adapters": lib, "log": log, "hub": hub}
    finally:
        from lorahub.cli.serving import stop_serve

        stop_serve(proc)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


def _text(page, sel: str) -> str:  # noqa: ANN001
    return page.locator(sel).inner_text()


def _fill(page, elem_id: str, value: str) -> None:  # noqa: ANN001
    box = page.locator(f"#{elem_id}").locator("textarea, input").first
    box.fill(value)


def _tab(page, name: str) -> None:  # noqa: ANN001
    page.get_by_role("tab", name=name).click()


def test_space_end_to_end(space_url: dict, page, tmp_path: Path) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    from lorahub.adapters.fingerprint import fingerprint_file

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(space_url["url"])
    expect(page.get_by_text("Base model: `lorahub/drawing-sd1-tiny`").or_(page.get_by_text("lorahub/drawing-sd1-tiny"))).to_be_visible()

    # ---- Search: the page opens on the registry's adapters (a gallery and the table), no search typed
    expect(page.locator("#search-status")).to_contain_text("2 results")
    expect(page.locator("#search-gallery img")).to_have_count(2)
    # each result a card: its sample image (here a preview rendered on first view) beside its words
    page.wait_for_function("() => { const e = document.querySelector('#search-gallery img');"
                           " return e !== null && e.complete && e.naturalWidth > 0; }")
    card = page.locator("#search-gallery img").first
    assert card.evaluate("e => e.naturalWidth") == 288 and card.evaluate("e => e.naturalHeight") == 288
    # find both synthetic adapters and click them into the preview list
    for word, name in (("alphaword", "alpha_style"), ("betaword", "beta_style")):
        _fill(page, "search-query", word)
        page.locator("#search-btn").click()
        cell = page.locator("#search-results").get_by_role("gridcell", name=name, exact=True).first
        expect(cell).to_be_visible()
        expect(page.locator("#search-status")).to_contain_text("1 result")
        cell.click()
        expect(page.locator("#search-status")).to_contain_text(f"added `{name}`".replace("`", ""))
    expect(page.locator("#search-results")).to_contain_text("betaword")
    page.screenshot(path=str(ARTIFACTS / "1-search.png"), full_page=True)

    # ---- Preview: two adapters, one image; a different weight gives a different image
    _tab(page, "Preview & blend")
    expect(page.locator("#preview-chosen")).to_contain_text("alpha_style")
    expect(page.locator("#preview-chosen")).to_contain_text("beta_style")
    expect(page.locator("#weight-0")).to_be_visible()
    expect(page.locator("#weight-1")).to_be_visible()
    page.locator("#steps input[type=number]").fill("2")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#generate").click()
    src1, first = _image_bytes(page)
    expect(page.locator("#preview-status")).to_contain_text("ms per image")
    # the drawing base's 64 px render, shown enlarged with square pixels (no smoothing)
    page.wait_for_function("() => { const e = document.querySelector('#preview-image img');"
                           " return e !== null && e.complete && e.naturalWidth > 0; }")
    shown = page.locator("#preview-image img").first
    assert shown.evaluate("e => e.naturalWidth") == 64
    assert shown.evaluate("e => getComputedStyle(e).imageRendering") == "pixelated"
    assert shown.bounding_box()["width"] >= 256
    weight = page.locator("#weight-0 input[type=number]")
    weight.fill("0")
    weight.press("Enter")
    page.locator("#generate").click()
    _, second = _image_bytes(page, previous=src1)
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and second[:8] == b"\x89PNG\r\n\x1a\n"
    assert first != second, "changing a weight did not change the image"
    # the base family: SDXL loads the embedded SDXL base (on this CPU), where these SD 1.x adapters are refused
    # in one line; back on SD 1.x they render again
    page.locator("#base-family").get_by_text("SDXL", exact=True).click()
    page.locator("#generate").click()
    expect(page.locator("#preview-status")).to_contain_text("does not fit the SDXL", timeout=120_000)
    assert "Traceback" not in page.content()
    page.locator("#base-family").get_by_text("SD 1.x", exact=True).click()
    page.locator("#bake").click()
    expect(page.locator("#preview-status")).to_contain_text("baked")
    expect(page.locator("#blend-file")).to_contain_text(".safetensors")
    page.screenshot(path=str(ARTIFACTS / "2-preview.png"), full_page=True)

    # ---- Blend search: two uploaded example images (one captioned), a tiny budget, the grid and the recipe
    from PIL import Image

    examples = []
    for i, color in enumerate(((200, 40, 40), (40, 40, 200))):
        Image.new("RGB", (64, 64), color).save(tmp_path / f"ex{i}.png")
        examples.append(str(tmp_path / f"ex{i}.png"))
    (tmp_path / "ex0.txt").write_text("a red picture")
    page.get_by_text("Blend search: find the weights from example images").click()
    page.locator("#search-files input[type=file]").set_input_files([*examples, str(tmp_path / "ex0.txt")])
    expect(page.locator("#search-files")).to_contain_text("ex0 .txt")
    page.locator("#search-budget input[type=number]").fill("4")
    page.locator("#search-weights").click()
    expect(page.locator("#search-summary")).to_contain_text("denoising loss", timeout=120_000)
    expect(page.locator("#search-recipe")).to_contain_text("lorahub.blend-recipe/1")
    expect(page.locator("#search-grid img")).to_be_visible()
    assert "Traceback" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "2b-blend-search.png"), full_page=True)

    # ---- Inspect: the AutoV3 hash of an uploaded file; a pickle is refused
    target = space_url["adapters"] / "alpha_style.safetensors"
    autov3 = fingerprint_file(target).autov3
    _tab(page, "Inspect")
    page.locator("#inspect-upload input[type=file]").set_input_files(str(target))
    expect(page.locator("#inspect-report")).to_contain_text(autov3)
    expect(page.locator("#inspect-report")).to_contain_text("alphaword")
    page.screenshot(path=str(ARTIFACTS / "3-inspect.png"), full_page=True)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(b"\x80\x02}q\x00.")
    page.locator("#inspect-upload button[aria-label='Clear'], #inspect-upload button[aria-label='Remove']").first.click()
    page.locator("#inspect-upload input[type=file]").set_input_files(str(evil))
    expect(page.locator("#inspect-status")).to_contain_text("refused")
    assert "Traceback" not in page.content()

    # ---- Train: a few steps on the demo images
    from lorahub.training.demo_data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "ds", count=2, trigger="zqxstyle")
    zpath = tmp_path / "ds.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(data.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(data))
    _tab(page, "Train")
    page.locator("#train-files input[type=file]").set_input_files(str(zpath))
    # Gradio's file list shows the name as stem and suffix in two cells ("ds .zip" in the text) once uploaded
    expect(page.locator("#train-files")).to_contain_text(re.compile(r"ds\s*\.zip"))
    _fill(page, "train-trigger", "zqxstyle")
    _fill(page, "train-steps", "3")
    page.locator("#train-btn").click()
    expect(page.locator("#train-progress")).to_contain_text("done", timeout=180_000)
    expect(page.locator("#train-progress")).to_contain_text("loss")
    expect(page.locator("#train-zip")).to_contain_text(".zip")
    expect(page.locator("#train-samples img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "4-train.png"), full_page=True)

    # ---- Push: the trained package to the lorahub serve started first (dry run first, then for real)
    server = space_url["hub"]
    _tab(page, "Push")
    token = server.tokens["alice"]
    _fill(page, "push-token", token)
    _fill(page, "push-repo", "alice/zqx-space")
    # the endpoint list: the allowed hub first (the default), then the Hugging Face Hub
    assert page.locator("#push-endpoint input").first.input_value() == server.url
    page.locator("#push-dry").click()
    expect(page.locator("#push-url")).to_contain_text("Dry run")
    expect(page.locator("#push-card")).to_contain_text("base_model")
    page.locator("#push-btn").click()
    pushed_or_error = page.locator("#push-url").get_by_text("Pushed").or_(page.locator("#push-status").get_by_text("Error"))
    expect(pushed_or_error.first).to_be_visible(timeout=90_000)
    assert "Error" not in _text(page, "#push-status"), _text(page, "#push-status")
    expect(page.locator("#push-url")).to_contain_text("Pushed")
    expect(page.locator("#push-url")).to_contain_text(f"{server.url}/alice/zqx-space")
    page.screenshot(path=str(ARTIFACTS / "5-push.png"), full_page=True)
    files = server.api().list_repo_files("alice/zqx-space")
    assert "pytorch_lora_weights.safetensors" in files and "README.md" in files
    assert token not in space_url["log"].read_text(errors="replace")
