"""`lorahub demo` (the README's first command) runs every step on the embedded default base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli


@pytest.mark.slow
def test_demo_runs_every_step(embedded_home: Path, tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from lorahub.cli import demo

    res = CliRunner().invoke(cli, ["demo", "--workdir", str(tmp_path / "demo"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [s["name"] for s in out["steps"]] == [name for name, _, _ in demo.STEPS]
    steps = {s["name"]: s for s in out["steps"]}
    assert steps["validate"]["details"]["reports"][0]["valid"]
    assert steps["fingerprint"]["details"]["autov3"]
    assert steps["train"]["details"]["result"]["last_loss"] < steps["train"]["details"]["result"]["first_loss"]
    assert (tmp_path / "demo" / "blend-grid.png").stat().st_size > 0
    # the blend grid on the default base (it draws): the shipped heart and sunset LoRAs, read back by the judge
    blended = steps["preview"]["details"]["judged"]
    assert blended["heart 1, sunset 0"].startswith("heart ") and not blended["heart 0, sunset 0"].startswith("heart ")
    assert blended["heart 0, sunset 1"].endswith(" on sunset") and not blended["heart 0, sunset 0"].endswith(" on sunset")
    assert steps["preview"]["details"]["max_pixel_difference"] < 1e-3  # the baked cat blend draws the same
    drawn = steps["drawing"]["details"]  # the heart LoRA on the drawing base, read back by the judge
    assert drawn["judged"]["0.0"].count("heart") <= 1 and drawn["judged"]["1.0"].count("heart") >= 3
    assert (tmp_path / "demo" / "drawing-grid.png").stat().st_size > 0
    xl = steps["sdxl"]["details"]  # train, preview and blend on the embedded SDXL base
    assert xl["result"]["base_family"] == "sdxl" and xl["sgm_modules"] > 0
    assert xl["kohya_loaders"] == ["diffusers", "a1111", "comfyui", "kohya"] and xl["stats"]["hotswaps"] == 1
    share = steps["share"]["details"]
    assert share["push"]["changed"] and share["push"]["card_action"] == "generated"
    assert {f["verified"] for f in share["pull"]["files"]} <= {"registry", "hub"}
    assert "unchanged re-push made no commit" in steps["share"]["summary"]
    check = share["check"]  # lorahub registry check over the demo server's data folder
    assert check["ok"] and check["errors"] == 0 and check["blob_files"] >= 2 and check["bytes_verified"] > 0


def test_demo_lists_its_steps() -> None:
    res = CliRunner().invoke(cli, ["demo", "--list"])
    assert res.exit_code == 0
    for name in ("base", "adapter", "inspect", "validate", "fingerprint", "train", "preview", "drawing", "sdxl",
                 "registry", "share"):
        assert name in res.output
