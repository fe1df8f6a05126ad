"""The CLI's contract: one output layer, one-line errors, exit codes, fast start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from lorahub.cli.main import COMMANDS, cli
from lorahub.schemas import InspectReport


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lorahub.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_help_lists_every_command() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0, res.output
    for name in COMMANDS:
        assert name in res.output
    for name in COMMANDS:
        sub = CliRunner().invoke(cli, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)


def test_version() -> None:
    from lorahub import __version__

    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_inspect_json_is_the_schema_on_stdout_only(lokr_file: Path) -> None:
    res = run("inspect", str(lokr_file), "--json")
    assert res.returncode == 0, res.stderr
    report = InspectReport.model_validate_json(res.stdout)
    assert report.format == "lycoris-lokr"
    assert json.loads(res.stdout)["path"] == str(lokr_file)
    for key in ("path", "format", "base_family", "declared_base_family", "rank", "alpha", "modules", "dtype",
                "trigger_words", "metadata", "warnings"):
        assert key in json.loads(res.stdout)


def test_inspect_many_files_gives_a_list(lokr_file: Path, legacy_files: list[Path]) -> None:
    res = CliRunner().invoke(cli, ["inspect", str(lokr_file), str(legacy_files[0]), "--json"])
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert [d["format"] for d in data] == ["lycoris-lokr", "cloneofsimo"]


def test_human_inspect(lokr_file: Path) -> None:
    res = CliRunner().invoke(cli, ["inspect", str(lokr_file), "--modules"])
    assert res.exit_code == 0
    assert "LyCORIS LoKr" in res.output and "sd1" in res.output and "trigger words" in res.output
    assert "lora_unet_" in res.output  # --modules lists modules


def test_errors_are_one_line_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 64)
    res = run("inspect", str(bad))
    assert res.returncode == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "header length" in lines[0]
    assert "Traceback" not in res.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 64)
    res = run("inspect", str(bad), env={"LORAHUB_DEBUG": "1"})
    assert res.returncode != 0 and "Traceback" in res.stderr and "AdapterFileError" in res.stderr


def test_usage_errors_exit_2() -> None:
    assert CliRunner().invoke(cli, ["inspect"]).exit_code == 2
    assert CliRunner().invoke(cli, ["no-such-command"]).exit_code == 2
    assert CliRunner().invoke(cli, ["demo", "--only", "nope"]).exit_code == 2


def test_fast_commands_import_no_heavy_modules(lokr_file: Path) -> None:
    code = (
        "import sys\n"
        "from lorahub.cli.main import main\n"
        "sys.argv = ['lorahub', 'inspect', sys.argv[1], '--json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'gradio', 'peft', 'numpy', 'sqlalchemy', 'huggingface_hub') if m in sys.modules)\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(lokr_file)], capture_output=True, text=True, timeout=60)
    assert "HEAVY=" in res.stderr
    assert res.stderr.split("HEAVY=")[1].strip() == "", res.stderr
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from lorahub.cli.main import cli\ntry:\n cli(['--help'])\nexcept SystemExit: pass\n"
         "print(sorted(m for m in ('torch','diffusers','gradio','numpy','sqlalchemy') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.stdout.strip().endswith("[]"), res.stdout
