"""End-to-end: an exported Space deployed as the Hub deploys one, then driven in headless Chromium.

``lorahub space export --space-id alice/lorahub-demo`` writes the folder; ``hf upload`` (the real CLI) puts it
into a Space repo of a real ``lorahub serve``; a fresh virtual environment runs ``pip install -r
requirements.txt`` in a folder that holds requirements.txt alone (the Hub's build sees nothing else), so
lorahub's wheel comes from the Space's own files; ``python app.py`` runs in a download of the Space repo, as
the Hub starts it. Chromium then sees the page open on a non-empty search gallery (the demo adapters the
Space put in its registry when it started) and renders a preview of one of them.
``test_the_folder_installs_from_its_own_wheel`` installs a folder exported without ``--space-id`` (the wheel
named by its path in the folder) the same way.

The fresh venvs install the pinned third-party packages (torch, diffusers, gradio: gigabytes) without
downloading them again: a venv sees this test environment's packages through a ``.pth`` line naming a
folder of symlinks to them, from which lorahub itself (the editable install of this tree) is left out. pip
finds every pinned requirement satisfied at the pinned version (a pin that did not match would send pip to
the package index) and installs lorahub from the wheel; the Space then runs the wheel's code, not this
tree's (checked).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from uikit import free_port

pytestmark = [pytest.mark.slow]


def _venv_seeing_these_packages(venv: Path, deps: Path) -> Path:
    """A fresh venv (with pip) that also sees this environment's packages, lorahub left out."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    here = Path(sysconfig.get_paths()["purelib"])
    deps.mkdir()
    for entry in here.iterdir():
        name = entry.name.lower()
        if name.startswith(("lorahub", "__editable__", "_lorahub", "pip", "_distutils_hack")) or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "zz_test_deps.pth").write_text(str(deps) + "\n")
    return py


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING", "LORAHUB_SPACE", "LORAHUB_UI", "LORAHUB_DATABASE", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", LORAHUB_HOME=str(home),
               GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def _install(py: Path, folder: Path, env: dict[str, str], tmp_path: Path) -> None:
    """``pip install -r requirements.txt`` in ``folder``; lorahub then imports from the venv, not this tree."""
    pip = subprocess.run([str(py), "-m", "pip", "install", "-r", "requirements.txt"], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    assert "Successfully installed lorahub-toolkit-0.1.0" in pip.stdout, pip.stdout[-3000:]
    where = subprocess.run([str(py), "-c", "import lorahub.cli.spacehost as m; print(m.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(py.parents[1]), where  # the wheel's code, not this tree's


def test_the_folder_installs_from_its_own_wheel(tmp_path: Path) -> None:
    from lorahub.cli.main import cli

    folder = tmp_path / "space"
    res = CliRunner().invoke(cli, ["space", "export", str(folder)])
    assert res.exit_code == 0, res.output
    py = _venv_seeing_these_packages(tmp_path / "venv", tmp_path / "deps")
    _install(py, folder, _env(tmp_path / "home"), tmp_path)


@pytest.fixture
def deployed_space(embedded_home: Path, lorahub_home: Path, sqlite_server, tmp_path: Path):  # noqa: ANN001, ANN201
    from huggingface_hub import snapshot_download

    from lorahub.cli.main import cli

    folder = tmp_path / "space"
    res = CliRunner().invoke(cli, ["space", "export", str(folder), "--space-id", "alice/lorahub-demo",
                                   "--endpoint", sqlite_server.url])
    assert res.exit_code == 0, res.output
    # the deployment: `hf upload`, as README.md says
    hf = str(Path(sys.executable).with_name("hf"))
    up = subprocess.run([hf, "upload", "alice/lorahub-demo", ".", ".", "--repo-type", "space"], cwd=folder,
                        env=sqlite_server.env("alice"), capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    # the build: requirements.txt alone, the wheel fetched from the Space's files (anonymously)
    build = tmp_path / "build"
    build.mkdir()
    shutil.copy(folder / "requirements.txt", build / "requirements.txt")
    env = _env(lorahub_home)
    py = _venv_seeing_these_packages(tmp_path / "venv", tmp_path / "deps")
    _install(py, build, env, tmp_path)
    # the start: app.py in a checkout of the Space repo
    app = Path(snapshot_download("alice/lorahub-demo", repo_type="space", endpoint=sqlite_server.url, token=False,
                                 local_dir=str(tmp_path / "app")))
    port = free_port()
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    log = tmp_path / "app.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(py), "app.py"], cwd=app, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "lorahub space: listening on" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "app.py did not listen in 180 s:\n" + log.read_text()[-3000:]
            time.sleep(0.2)
        yield {"url": f"http://127.0.0.1:{port}/", "log": log}
    finally:
        from lorahub.cli.serving import stop_serve

        stop_serve(proc)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.browser
@pytest.mark.torch
def test_deployed_space_opens_on_a_gallery_and_previews(deployed_space: dict, page, tmp_path: Path) -> None:  # noqa: ANN001
    from browserkit import image_bytes
    from playwright.sync_api import expect

    page.goto(deployed_space["url"])
    # the gallery is filled when the page opens: no search typed
    gallery, results = page.locator("#search-gallery"), page.locator("#search-results")
    # on a CPU the page's base is the drawing base, whose trained demo adapters the Space starts with
    expect(page.locator("#search-status")).to_contain_text("3 results")
    expect(gallery.locator("img")).to_have_count(3)
    for name in ("drawing_heart", "drawing_checkered", "drawing_sunset"):
        expect(results).to_contain_text(name)
    page.screenshot(path=str(tmp_path / "gallery.png"), full_page=True)
    # a card of the gallery goes into the preview (its name is the card's caption)
    gallery.locator("img").first.click()
    expect(page.locator("#search-status")).to_contain_text("added")
    name = page.locator("#search-status").inner_text().split("added", 1)[1].split()[0].strip("`")
    assert name in {"drawing_heart", "drawing_checkered", "drawing_sunset"}
    page.get_by_role("tab", name="Preview & blend").click()
    expect(page.locator("#preview-chosen")).to_contain_text(name)
    page.locator("#steps input[type=number]").fill("2")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#generate").click()
    _, png = image_bytes(page)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    expect(page.locator("#preview-status")).to_contain_text("ms per image")
