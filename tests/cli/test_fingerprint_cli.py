"""``lorahub fingerprint``: output shapes, exit codes, cache, whole-process behaviour."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli
from lorahub.schemas.adapters import FingerprintReport

PAST = 1_600_000_000


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lorahub.cli", *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )


def test_json_is_a_list_of_reports_on_stdout_only(lokr_file: Path, legacy_files: list[Path]) -> None:
    res = run("fingerprint", str(lokr_file), str(legacy_files[0]), "--json", "--no-cache")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # no progress bar when stderr is not a terminal
    data = json.loads(res.stdout)
    assert isinstance(data, list) and len(data) == 2
    reports = [FingerprintReport.model_validate(d) for d in data]
    assert reports[0].path == str(lokr_file)
    assert reports[0].sha256 == hashlib.sha256(lokr_file.read_bytes()).hexdigest()
    assert reports[0].embedded_hash == "match"
    assert reports[1].embedded_hash == "absent"
    for d in data:
        assert set(d) == set(FingerprintReport.model_fields)
        for key in ("path", "sha256", "autov1", "autov2", "autov3", "tensor_sha256", "crc32", "blake3", "embedded_hash"):
            assert key in d


def test_single_file_json_is_still_a_list(lokr_file: Path) -> None:
    res = CliRunner().invoke(cli, ["fingerprint", str(lokr_file), "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 1


def test_human_output(lokr_file: Path) -> None:
    res = CliRunner().invoke(cli, ["fingerprint", str(lokr_file)])
    assert res.exit_code == 0, res.output
    rec = json.loads(CliRunner().invoke(cli, ["fingerprint", str(lokr_file), "--json"]).stdout)[0]
    for key in ("sha256", "autov2", "autov3", "tensor_sha256", "crc32", "blake3"):
        assert rec[key] in res.stdout
    assert "AutoV1" in res.stdout and "sshs_model_hash" in res.stdout and "match" in res.stdout


def test_folder_is_searched_recursively(sd15_kohya_file: Path, sdxl_kohya_file: Path, tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for f in (sd15_kohya_file, sdxl_kohya_file):
        shutil.copyfile(f, tmp_path / "a" / "b" / f.name)
    (tmp_path / "a" / "readme.txt").write_text("skip me")
    res = CliRunner().invoke(cli, ["fingerprint", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    paths = [d["path"] for d in json.loads(res.stdout)]
    assert len(paths) == 2 and all(p.endswith(".safetensors") for p in paths)


def test_missing_path_exit_1_one_line(tmp_path: Path) -> None:
    res = run("fingerprint", str(tmp_path / "nope.safetensors"))
    assert res.returncode == 1
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "nope.safetensors" in res.stderr


def test_empty_folder_exit_1(tmp_path: Path) -> None:
    res = run("fingerprint", str(tmp_path))
    assert res.returncode == 1
    assert "no *.safetensors" in res.stderr


def test_cache_across_processes_and_no_cache(lokr_file: Path, tmp_path: Path) -> None:
    f = tmp_path / "c.safetensors"
    shutil.copyfile(lokr_file, f)
    os.utime(f, (PAST, PAST))
    first = json.loads(run("fingerprint", str(f), "--json").stdout)[0]
    second = json.loads(run("fingerprint", str(f), "--json").stdout)[0]
    assert (first["cached"], second["cached"]) == (False, True)
    assert {k: v for k, v in first.items() if k != "cached"} == {k: v for k, v in second.items() if k != "cached"}
    third = json.loads(run("fingerprint", str(f), "--json", "--no-cache").stdout)[0]
    assert third["cached"] is False
    # a changed file is re-hashed
    with open(f, "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 0xFF]))
    os.utime(f, (PAST, PAST))
    fourth = json.loads(run("fingerprint", str(f), "--json").stdout)[0]
    assert fourth["cached"] is False
    assert fourth["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest() != first["sha256"]
    assert fourth["embedded_hash"] == "mismatch"


def test_cached_run_imports_no_pydantic(lokr_file: Path, tmp_path: Path) -> None:
    f = tmp_path / "c.safetensors"
    shutil.copyfile(lokr_file, f)
    os.utime(f, (PAST, PAST))
    assert run("fingerprint", str(f)).returncode == 0
    code = (
        "import sys\n"
        "from lorahub.cli.main import main\n"
        f"sys.argv = ['lorahub', 'fingerprint', {str(f)!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('pydantic', 'blake3', 'numpy', 'tqdm', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["cached"] is True


def test_progress_bar_goes_to_stderr_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorahub.cli.commands import fingerprint as cmd

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    monkeypatch.setattr(cmd, "PROGRESS_MIN_BYTES", 1 << 20)
    monkeypatch.setattr(cmd, "_stderr_is_tty", lambda: True)
    res = CliRunner().invoke(cli, ["fingerprint", str(big), "--json", "--no-cache"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["size"] == 3 << 20  # stdout is the JSON alone
    assert "fingerprint" in res.stderr and "3.00M" in res.stderr  # the bar, on stderr
    human = CliRunner().invoke(cli, ["fingerprint", str(big), "--no-cache"])
    assert human.stdout.startswith(str(big))
    monkeypatch.setattr(cmd, "_stderr_is_tty", lambda: False)
    quiet = CliRunner().invoke(cli, ["fingerprint", str(big), "--json", "--no-cache"])
    assert quiet.stderr == ""
