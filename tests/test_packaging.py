"""The wheel holds every module, and nothing generic lands at the top of site-packages."""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from testkit import REPO

FACES = {"lorahub": "lorahub", "cli": "lorahub/cli", "registry": "lorahub/registry",
         "space": "lorahub/space", "schemas": "lorahub/schemas"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A build uses the source tree's build/ folder: two xdist workers building at once race there (pip fails),
    # so the workers take turns (the lock file is in the run's base temp folder, shared by the workers).
    lock = tmp_path_factory.getbasetemp().parent / "wheel-build.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        res = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
            capture_output=True,
            text=True,
        )
    assert res.returncode == 0, res.stderr[-3000:]
    (whl,) = out.glob("lorahub_toolkit-*.whl")
    return whl


def test_wheel_holds_every_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for folder, target in FACES.items():
        for py in (REPO / folder).rglob("*.py"):
            rel = py.relative_to(REPO / folder).as_posix()
            if "__pycache__" in rel:
                continue
            if f"{target}/{rel}" not in names:
                missing.append(f"{folder}/{rel}")
    assert not missing, f"modules missing from the wheel (add their package to pyproject.toml): {missing}"
    for schema in (REPO / "schemas" / "json").glob("*.json"):
        assert f"lorahub/schemas/json/{schema.name}" in names
    if platform.machine() == "x86_64" and shutil.which("cc"):  # setup.py's optional extension, where it builds
        assert [n for n in names if n.startswith("lorahub/_sha256x2.") and n.endswith(".so")], "no SHA-256 kernel in the wheel"
    shipped = REPO / "lorahub" / "base" / "weights"
    files = [f.relative_to(REPO).as_posix() for f in shipped.rglob("*") if f.is_file()]
    assert any(f.endswith("unet/diffusion_pytorch_model.safetensors") for f in files)  # the drawing base's weights
    assert any(f.endswith("drawing_heart.preview.png") for f in files)  # its demo adapters, with their samples
    assert not [f for f in files if f not in names], "files of the shipped drawing base missing from the wheel"


def test_nothing_generic_at_top_level(wheel: Path) -> None:
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    tops = {t for t in tops if not t.endswith(".dist-info")}
    assert tops == {"lorahub"}, tops


def test_installed_wheel_imports_lorahub_cli_but_not_cli(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import importlib.util, sys\n"
        "import lorahub, lorahub.cli.main, lorahub.schemas, lorahub.registry, lorahub.space\n"
        f"assert lorahub.__file__.startswith({str(target)!r}), lorahub.__file__\n"
        "for name in ('cli', 'schemas', 'registry', 'space'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'import {name} worked from the installed wheel')\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + res.stdout
    assert res.stdout.strip() == "ok"


def test_distribution_name_does_not_collide() -> None:
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["name"] != "lorahub"
    assert meta["scripts"]["lorahub"] == "lorahub.cli.main:main"
