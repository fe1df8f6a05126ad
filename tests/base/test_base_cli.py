"""``lorahub base build`` and ``lorahub base info``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.base.embedded import EMBEDDED_ID, embedded_path, is_complete
from lorahub.cli.main import cli


def invoke(*args: str):  # noqa: ANN201
    return CliRunner().invoke(cli, list(args))


@pytest.mark.torch
def test_build_json_then_reuse(lorahub_home: Path) -> None:
    pytest.importorskip("diffusers")
    res = invoke("base", "build", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data == {"id": EMBEDDED_ID, "path": str(embedded_path(lorahub_home)), "seed": 0, "weights": "pretrained",
                    "family": "sd1"}
    assert is_complete(data["path"])
    assert "installing" in res.stderr  # progress on stderr, stdout is the JSON alone

    again = invoke("base", "build")
    assert again.exit_code == 0
    assert again.stdout.strip() == data["path"]
    assert "already built" in again.stderr

    other = invoke("base", "build", "--seed", "7", "--json")  # random weights instead, for architecture tests
    assert other.exit_code == 0, other.output
    assert json.loads(other.stdout)["seed"] == 7 and json.loads(other.stdout)["weights"] == "random"
    assert "rebuilding: the existing build has pretrained weights" in other.stderr
    assert json.loads((embedded_path(lorahub_home) / "lorahub_base.json").read_text())["seed"] == 7
    back = invoke("base", "build", "--json")  # and back to the default
    assert back.exit_code == 0 and json.loads(back.stdout)["weights"] == "pretrained"
    assert "rebuilding: the existing build has random weights, seed 7" in back.stderr


def test_info_embedded(embedded_home: Path) -> None:
    res = invoke("base", "info", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["kind"] == "embedded" and data["name"] == EMBEDDED_ID
    assert data["location"] == str(embedded_home)
    assert data["built"] is True and data["seed"] == 0 and data["family"] == "sd1" and data["weights"] == "pretrained"
    assert data["components"]["unet"] == "diffusers.UNet2DConditionModel"
    human = invoke("base", "info", "embedded")
    assert human.exit_code == 0
    assert "kind" in human.stdout and "embedded" in human.stdout and "StableDiffusionPipeline" in human.stdout


def test_info_not_built_and_hub(lorahub_home: Path) -> None:
    res = invoke("base", "info")
    assert res.exit_code == 0
    assert "built" in res.stdout and "no" in res.stdout
    assert "lorahub base build" in res.stderr
    assert not embedded_path(lorahub_home).exists()  # info never builds

    hub = invoke("base", "info", "someone/model", "--json")
    assert hub.exit_code == 0
    data = json.loads(hub.stdout)
    assert data["kind"] == "hub" and data["repo_id"] == "someone/model" and data["exists"] is False


def test_info_single_file(embedded_base: Path, embedded_home: Path, tmp_path: Path) -> None:
    from lorahub.base.checkpoint import export_single_file

    ckpt = export_single_file(embedded_base, tmp_path / "tiny.safetensors")
    data = json.loads(invoke("base", "info", str(ckpt), "--json").stdout)
    assert data["kind"] == "single_file" and data["family"] == "sd1" and data["tensors"] > 900
    assert data["config"] == str(embedded_home)


def test_info_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.ckpt").write_bytes(b"\x80\x04K\x01.")
    for spec, needle in (
        (str(tmp_path / "missing"), "no such file or folder"),
        (str(tmp_path), "no model_index.json"),
        (str(tmp_path / "x.ckpt"), "never unpickles"),
    ):
        res = invoke("base", "info", spec)
        assert res.exit_code == 1, spec
        assert needle in res.stderr
        assert res.stderr.count("\n") == 1
        assert res.stdout == ""


def test_info_starts_without_torch(embedded_home: Path) -> None:
    code = (
        "import sys\n"
        "from lorahub.cli.main import cli\n"
        "try:\n"
        "    cli(['base', 'info', '--json'], prog_name='lorahub')\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "LORAHUB_HOME": str(embedded_home.parents[1])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["built"] is True
