"""``lorahub inspect`` and ``lorahub convert`` on Flux.1 files and on a family lorahub only names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lorahub.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def test_inspect_and_convert_a_flux_kohya_file(tmp_path: Path) -> None:
    import mmditkit as K

    src = K.write_original(tmp_path / "style.safetensors", "flux", "kohya", t5=False).path
    res = run("inspect", str(src), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["format"], report["base_family"], report["hidden_size"]) == ("kohya-lora", "flux", 32)
    human = run("inspect", str(src))
    assert "flux (Flux.1)" in human.stdout and "hidden width" in human.stdout
    out = tmp_path / "style_diffusers.safetensors"
    res = run("convert", str(src), "-o", str(out), "--format", "diffusers", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["format"] == "diffusers" and out.is_file()
    back = tmp_path / "style_kohya.safetensors"
    assert run("convert", str(out), "-o", str(back)).returncode == 0
    assert json.loads(run("inspect", str(back), "--json").stdout)["loaders"] == ["comfyui"]


def test_errors_are_one_line(tmp_path: Path) -> None:
    import mmditkit as K

    t5 = K.write_original(tmp_path / "t5.safetensors", "flux", "kohya", t5=True).path
    res = run("convert", str(t5), "-o", str(tmp_path / "d.safetensors"), "--format", "diffusers")
    assert res.returncode == 2 and "T5-XXL" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "d.safetensors").exists()
    from lorahub.adapters.writer import write_safetensors_zeros

    qwen = write_safetensors_zeros(tmp_path / "q.safetensors", {
        "transformer.transformer_blocks.0.img_mlp.net.0.proj.lora_A.weight": ("F16", [4, 3072]),
        "transformer.transformer_blocks.0.img_mlp.net.0.proj.lora_B.weight": ("F16", [12288, 4])})
    assert json.loads(run("inspect", str(qwen), "--json").stdout)["base_family"] == "qwen"
    res = run("convert", str(qwen), "-o", str(tmp_path / "q2.safetensors"))
    assert res.returncode == 1 and "Qwen-Image" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2  # the error and, at most, its hint
