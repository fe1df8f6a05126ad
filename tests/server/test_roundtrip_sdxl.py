"""One SDXL adapter's whole life through the command line: train -> inspect -> validate -> push to a real
``lorahub serve`` (huggingface_hub over HTTP) -> pull -> preview -> blend -> fuse, on the embedded SDXL base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli

pytestmark = pytest.mark.torch
pytest.importorskip("diffusers")

TRIGGER = "xlpush"


def _run(*args: str, env: dict[str, str] | None = None):  # noqa: ANN202
    res = CliRunner().invoke(cli, list(args), env=env)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res


def test_sdxl_train_inspect_validate_push_pull_preview_blend_fuse(sqlite_server, embedded_xl_home: Path,  # noqa: ANN001
                                                                  tmp_path: Path) -> None:
    import torch

    from lorahub.base.embedded import SDXL_ID
    from lorahub.training.demo_data import make_demo_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _roundtrip(sqlite_server, tmp_path, SDXL_ID, make_demo_dataset(tmp_path / "data", count=2, size=64,
                                                                         trigger=TRIGGER))
    finally:
        torch.set_num_threads(threads)


def _roundtrip(server, tmp_path: Path, base: str, data: Path) -> None:  # noqa: ANN001
    # train: UNet + both text encoders, both layouts
    pkg = tmp_path / "xlpush"
    trained = _run("train", str(data), "--out", str(pkg), "--base", base, "--trigger", TRIGGER, "--steps", "2",
                   "--resolution", "64", "--train-text-encoder", "--sample-steps", "1", "--no-progress", "--json")
    assert trained["base_family"] == "sdxl" and trained["kohya_weights"]
    diffusers_file, kohya_file = Path(trained["weights"]), Path(trained["kohya_weights"])

    # inspect and validate both files
    for f in (diffusers_file, kohya_file):
        rep = _run("inspect", str(f), "--json")
        assert rep["base_family"] == "sdxl" and rep["training_resolution"] == [64, 64]
        assert rep["coverage"]["text_encoder"] and rep["coverage"]["text_encoder_2"] and rep["coverage"]["unet"]
        assert rep["trigger_words"] == [TRIGGER]
        (val,) = _run("validate", str(f), "--json")
        assert val["valid"] and not val["errors"] and not val["warnings"], val
    assert _run("inspect", str(kohya_file), "--json")["loaders"] == ["diffusers", "a1111", "comfyui", "kohya"]

    # push to the real server
    token = server.tokens["alice"]
    pushed = _run("push", str(pkg), "--repo", "alice/xlpush", "--endpoint", server.url, "--token", token, "--json")
    assert pushed["changed"] and pushed["registered"]
    from huggingface_hub import ModelCard

    api = server.api("alice")
    names = {s.rfilename for s in api.model_info("alice/xlpush").siblings}
    assert {"pytorch_lora_weights.safetensors", kohya_file.name, "README.md", "train_config.toml"} <= names
    card = ModelCard.load(api.hf_hub_download("alice/xlpush", "README.md"))
    meta = card.data.to_dict()
    assert meta["base_model"] == base and meta["license"] == "openrail++"  # the declared checkpoint (a Hub-style id)
    assert "stable-diffusion-xl" in meta["tags"] and meta["instance_prompt"] == TRIGGER
    assert f'StableDiffusionXLPipeline.from_pretrained("{base}"' in card.text
    assert f"Download `{kohya_file.name}` into your LoRA folder" in card.text

    # pull it back: the same bytes
    copy = tmp_path / "pulled"
    pulled = _run("pull", "alice/xlpush", "--endpoint", server.url, "--to", str(copy), "--token", token, "--json")
    assert pulled["registered"]
    for f in (diffusers_file, kohya_file):
        assert (copy / f.name).read_bytes() == f.read_bytes()

    # preview the pulled files on the SDXL base: both layouts, per-component weights, one base load
    out = tmp_path / "preview.png"
    shown = _run("preview", "--base", base, "--lora", f"{copy / diffusers_file.name}:0.5:1:te2=0.8",
                 "--lora", f"{copy / kohya_file.name}:0.3", "--prompt", f"{TRIGGER} a lighthouse", "--steps", "1",
                 "--size", "64x64", "-o", str(out), "--json")
    assert out.is_file() and shown["stats"]["base_loads"] == 1
    assert [a.get("te2_weight") for a in shown["adapters"]] == [0.8, None]

    # blend the two pulled files (cat: exact), in the kohya layout
    blended = tmp_path / "xlblend.safetensors"
    res = _run("blend", f"{copy / diffusers_file.name}:0.6", f"{copy / kohya_file.name}:0.4", "-o", str(blended),
               "--method", "cat", "--dtype", "float32", "--json")
    assert res["relative_error"] == 0.0
    rep = _run("inspect", str(blended), "--json")
    assert rep["base_family"] == "sdxl" and rep["loaders"] == ["diffusers", "a1111", "comfyui", "kohya"]
    assert rep["coverage"]["text_encoder_2"] == rep["coverage"]["text_encoder"] > 0

    # fuse the blend into the SDXL base: a StableDiffusionXLPipeline folder without adapters
    merged = tmp_path / "merged"
    fused = _run("fuse", "--base", base, "--lora", f"{blended}:0.8", "-o", str(merged), "--json")
    assert fused["path"] == str(merged)
    from lorahub.base.resolve import load_pipeline

    pipe = load_pipeline(merged)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and not pipe.get_list_adapters()
    assert json.loads((merged / "lorahub_fused.json").read_text())["family"] == "sdxl"
