"""``lorahub preview``, ``lorahub blend`` and ``lorahub fuse`` through the real CLI (click's CliRunner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli

pytestmark = pytest.mark.torch


def invoke(*args: str, input: str | None = None):  # noqa: A002
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def home(embedded_home: Path, one_thread: None) -> Path:
    return embedded_home


def test_command_modules_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import lorahub.cli.commands.preview, lorahub.pipeline, lorahub.pipeline.prompt, lorahub.pipeline.resolver\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_preview_one_image_with_two_adapters(home, adapters, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "one.png"
    res = invoke("preview", "--lora", f"{adapters['a']}:0.8", "--lora", f"{adapters['c']}:0.2:0.4",
                 "--prompt", "a cat", "--steps", "2", "--seed", "3", "-o", str(out), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["output"] == str(out) and data["seed"] == 3
    assert data["adapters"] == [
        {"name": "a", "te_weight": 0.8, "unet_weight": 0.8},
        {"name": "c", "te_weight": 0.2, "unet_weight": 0.4},
    ]
    assert data["stats"]["base_loads"] == 1
    img = Image.open(out)
    assert img.size == (64, 64)
    assert "<lora:a:0.8>" in img.text["parameters"] and "Seed: 3" in img.text["parameters"]


def test_preview_grid_across_weights_and_seeds(home, adapters, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "grid.png"
    res = invoke("preview", "--lora", str(adapters["a"]), "--lora", str(adapters["c"]), "--prompt", "a cat",
                 "--steps", "1", "--grid", "--grid-weights", "0,1", "--seed", "0", "--seed", "1",
                 "-o", str(out), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["columns"] == ["a 0", "a 1"]
    assert data["rows"] == ["c 0, seed 0", "c 0, seed 1", "c 1, seed 0", "c 1, seed 1"]
    assert data["images"] == 8 and data["stats"]["base_loads"] == 1
    w, h = Image.open(out).size
    assert w > 2 * 64 and h > 4 * 64  # two columns, four rows, plus labels


def test_preview_script_swaps_and_weights_without_reloading(home, adapters, tmp_path: Path) -> None:
    script = tmp_path / "steps.json"
    script.write_text(json.dumps({
        "defaults": {"steps": 1, "size": "64x64"},
        "steps": [
            {"prompt": "a cat"},
            {"weights": {"a": 0.3}, "prompt": "a cat", "seed": 1},
            {"swap": {"a": str(adapters["b"])}, "prompt": "a dog", "out": "dog.png"},
            {"add": {"d": {"source": str(adapters["d"]), "weight": 0.5}}, "prompt": "a dog <lora:d:0.2>"},
        ],
    }))
    out = tmp_path / "s.png"
    res = invoke("preview", "--lora", str(adapters["a"]), "--script", str(script), "-o", str(out), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["images"] == 4 and data["base_loads"] == 1 and data["errors"] == 0
    assert data["stats"]["hotswaps"] >= 1
    renders = [e for e in data["events"] if e["kind"] == "render"]
    assert [r["render"]["seed"] for r in renders] == [0, 1, 1, 1]
    assert renders[1]["render"]["adapters"] == [{"name": "a", "te_weight": 0.3, "unet_weight": 0.3}]
    assert renders[3]["render"]["adapters"] == [{"name": "d", "te_weight": 0.2, "unet_weight": 0.2}]
    assert all(r["seconds"] > 0 for r in renders)
    assert (tmp_path / "s-0001.png").is_file() and (tmp_path / "dog.png").is_file()


def test_preview_interactive_reads_commands_from_stdin(home, adapters, tmp_path: Path) -> None:
    lines = "\n".join([
        ":steps 1",
        "a cat",
        ":weight a 0.5",
        ":weight nosuch 1",
        f":swap a {adapters['c']}",
        "a cat",
        ":stats",
        ":quit",
        "never rendered",
    ]) + "\n"
    res = invoke("preview", "--lora", str(adapters["a"]), "--interactive", "-o", str(tmp_path / "i.png"), input=lines)
    assert res.exit_code == 0, res.output
    assert "image 1:" in res.stdout and "image 2:" in res.stdout and "image 3" not in res.stdout
    assert "no adapter named 'nosuch'" in res.stdout  # an error line, and the session goes on
    assert "base model loaded 1 time(s)" in res.stdout and "1 hot-swap(s)" in res.stdout


def test_preview_errors_are_one_line(home, adapters, sdxl_kohya_file: Path, tmp_path: Path) -> None:
    res = invoke("preview", "--grid", "--prompt", "x")
    assert res.exit_code == 2 and "--grid needs at least one --lora" in res.stderr
    res = invoke("preview", "--lora", str(sdxl_kohya_file), "--prompt", "x", "-o", str(tmp_path / "x.png"))
    assert res.exit_code == 1
    err = [line for line in res.stderr.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and "SDXL" in err[0] and "SD 1.x" in err[0]
    assert not (tmp_path / "x.png").exists()
    res = invoke("preview", "--lora", "no-such-adapter", "--prompt", "x")
    assert res.exit_code == 1 and "adapter 'no-such-adapter' not found" in res.stderr


def test_blend_cli_writes_a_loadable_file(adapters, tmp_path: Path) -> None:
    from lorahub.adapters.inspect import inspect_file

    out = tmp_path / "blend.safetensors"
    res = invoke("blend", f"{adapters['a']}:0.6", f"{adapters['b']}:0.4", "-o", str(out), "--method", "cat", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["method"] == "cat" and data["rank"] == 12 and data["relative_error"] == 0.0
    rep = inspect_file(out)  # kohya layout by default (docs/formats.md)
    assert rep.format == "kohya-lora" and rep.dtype == "float16" and rep.trigger_words == ["astyle", "bstyle"]
    assert rep.loaders == ["diffusers", "a1111", "comfyui", "kohya"]
    res = invoke("blend", f"{adapters['a']}:0.6", "-o", str(tmp_path / "d.safetensors"), "--format", "diffusers")
    assert res.exit_code == 0, res.output
    assert inspect_file(tmp_path / "d.safetensors").format == "peft"
    res = invoke("blend", str(adapters["a"]), "-o", str(tmp_path / "t.safetensors"), "--method", "ties")
    assert res.exit_code == 2 and "needs --density" in res.stderr


def test_convert_cli(adapters, tmp_path: Path) -> None:
    from lorahub.adapters.inspect import inspect_file

    out = tmp_path / "a_kohya.safetensors"
    res = invoke("convert", str(adapters["a"]), "-o", str(out), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["format"] == "kohya" and data["source_format"] == "peft" and data["modules"] == 144
    rep = inspect_file(out)
    assert rep.format == "kohya-lora" and rep.trigger_words == ["astyle"] and rep.title == "a"
    res = invoke("convert", str(adapters["a"]), "-o", str(tmp_path / "x.txt"))
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.txt").exists()


def test_fuse_cli(home, adapters, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    res = invoke("fuse", "--lora", f"{adapters['c']}:0.8", "-o", str(out), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["adapters"][0]["unet_weight"] == 0.8
    assert (out / "unet" / "config.json").is_file() and (out / "lorahub_fused.json").is_file()


def test_demo_step_renders_a_blend_grid(home, tmp_path: Path) -> None:
    from PIL import Image

    from lorahub.cli.demo import run_demo

    results = run_demo(tmp_path / "demo", only=["base", "adapter", "preview"], log=lambda _m: None)
    step = results[-1]
    assert step.name == "preview"
    assert Image.open(step.details["grid"]).size[0] > 2 * 64
    assert step.details["max_pixel_difference"] < 1e-3  # the baked cat blend = the stacked adapters
    assert step.details["stats"]["base_loads"] == 1
