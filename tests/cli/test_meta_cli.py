"""``lorahub meta show|set``: header-only rewrites from the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lorahub.cli", *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )


@pytest.fixture
def lokr_copy(lokr_file: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "lokr.safetensors"
    shutil.copyfile(lokr_file, dst)
    os.chmod(dst, 0o644)
    return dst


def fp(path: Path) -> dict:
    res = CliRunner().invoke(cli, ["fingerprint", str(path), "--json", "--no-cache"])
    return json.loads(res.stdout)[0]


def test_meta_set_and_show(lokr_copy: Path, tmp_path: Path) -> None:
    before = fp(lokr_copy)
    spec = tmp_path / "md.json"
    spec.write_text(json.dumps({"ss_output_name": "from-json", "lorahub.x": "1"}))
    res = run("meta", "set", str(lokr_copy), "--from-json", str(spec), "ss_output_name=cli wins", "--remove", "ss_seed")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    assert "tensor data unchanged" in res.stderr
    after = fp(lokr_copy)
    assert after["tensor_sha256"] == before["tensor_sha256"] and after["sha256"] != before["sha256"]
    shown = json.loads(run("meta", "show", str(lokr_copy), "--json").stdout)
    assert shown["ss_output_name"] == "cli wins"
    assert shown["lorahub.x"] == "1"
    assert "ss_seed" not in shown
    human = run("meta", "show", str(lokr_copy)).stdout
    assert "cli wins" in human and "--full" in human  # long values are shortened
    assert len(run("meta", "show", str(lokr_copy), "--full").stdout) > len(human)


def test_meta_set_output_file(lokr_copy: Path, tmp_path: Path) -> None:
    original = lokr_copy.read_bytes()
    out = tmp_path / "out.safetensors"
    res = CliRunner().invoke(cli, ["meta", "set", str(lokr_copy), "a=b", "-o", str(out), "--replace"])
    assert res.exit_code == 0, res.output
    assert lokr_copy.read_bytes() == original
    assert json.loads(CliRunner().invoke(cli, ["meta", "show", str(out), "--json"]).stdout) == {"a": "b"}


@pytest.mark.parametrize(
    "args, code, text",
    [
        ([], 2, "nothing to change"),
        (["novalue"], 2, "not KEY=VALUE"),
        (["=x"], 2, "not KEY=VALUE"),
        (["--from-json", "{json}"], 1, "is a number"),
        (["--from-json", "{list}"], 1, "JSON object"),
        (["--from-json", "{bad}"], 1, "not valid JSON"),
        (["a=b", "--remove", "a"], 1, "both set and removed"),
    ],
)
def test_meta_set_errors_leave_file_unchanged(lokr_copy: Path, tmp_path: Path, args: list[str], code: int, text: str) -> None:
    (tmp_path / "num.json").write_text('{"a": "x", "lr": 0.0001}')
    (tmp_path / "list.json").write_text('["a"]')
    (tmp_path / "bad.json").write_text("{nope")
    subst = {"{json}": str(tmp_path / "num.json"), "{list}": str(tmp_path / "list.json"), "{bad}": str(tmp_path / "bad.json")}
    original = lokr_copy.read_bytes()
    res = run("meta", "set", str(lokr_copy), *[subst.get(a, a) for a in args])
    assert res.returncode == code, res.stderr
    assert text in res.stderr
    assert lokr_copy.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


def test_meta_refuses_invalid_file(tmp_path: Path) -> None:
    f = tmp_path / "junk.safetensors"
    f.write_bytes(b"\x00" * 64)
    res = run("meta", "set", str(f), "a=b")
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 1
    assert f.read_bytes() == b"\x00" * 64
    assert run("meta", "show", str(tmp_path / "missing.safetensors")).returncode in (1, 2)
