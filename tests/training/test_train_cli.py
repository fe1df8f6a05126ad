"""``lorahub train`` end to end from the command line, and the pieces of the package writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_testkit import TRIGGER, demo_data

from lorahub.cli.main import cli


def _train(*args: str):  # noqa: ANN202
    return CliRunner().invoke(cli, ["train", *args], catch_exceptions=False)


def test_cli_train_end_to_end(embedded_home: Path, tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from lorahub.schemas.training import TrainResult

    data = demo_data(tmp_path / "data", count=4)
    out = tmp_path / "mystyle"
    res = _train(str(data), "--out", str(out), "--steps", "4", "--trigger", TRIGGER, "--rank", "4", "--alpha", "4",
                 "--lr", "1e-3", "--resolution", "64", "--batch-size", "1", "--seed", "7", "--export", "kohya",
                 "--sample-steps", "2", "--checkpoint-every", "2", "--no-progress", "--json")
    assert res.exit_code == 0, res.output
    result = TrainResult.model_validate_json(res.stdout)
    assert result.steps == 4 and result.rank == 4 and result.trigger == TRIGGER and result.base_family == "sd1"
    assert Path(result.weights) == out / "pytorch_lora_weights.safetensors"
    assert Path(result.kohya_weights) == out / "mystyle_kohya.safetensors"
    assert "train_config.toml" in result.files and "README.md" in result.files

    # the package validates as a folder and inspects as sd1 / rank 4 / trigger
    v = CliRunner().invoke(cli, ["validate", str(out), "--json"])
    assert v.exit_code == 0, v.output
    assert all(r["valid"] for r in json.loads(v.stdout)) and len(json.loads(v.stdout)) == 2
    i = CliRunner().invoke(cli, ["inspect", str(out / "pytorch_lora_weights.safetensors"), "--json"])
    assert i.exit_code == 0, i.output
    rep = json.loads(i.stdout)
    rep = rep[0] if isinstance(rep, list) else rep
    assert rep["base_family"] == "sd1" and rep["rank"] == 4 and rep["trigger_words"] == [TRIGGER]

    # an existing package is refused, replaced with --overwrite
    again = _train(str(data), "--out", str(out), "--steps", "1", "--no-progress")
    assert again.exit_code == 2 and "not empty" in again.output
    assert (out / "pytorch_lora_weights.safetensors").exists()

    # --config reads an earlier run's train_config.toml; options override it
    out2 = tmp_path / "again"
    res2 = _train("--config", str(out / "train_config.toml"), "--out", str(out2), "--steps", "2", "--no-progress",
                  "--json")
    assert res2.exit_code == 0, res2.output
    r2 = json.loads(res2.stdout)
    assert r2["steps"] == 2 and r2["trigger"] == TRIGGER and r2["name"] == "again"
    import tomllib

    saved = tomllib.loads((out2 / "train_config.toml").read_text())["train"]
    assert saved["seed"] == 7 and saved["lr"] == 1e-3 and saved["export"] == ["kohya"]

    # --format kohya: the kohya-layout file alone (the default writes both: docs/formats.md)
    over = _train(str(data), "--out", str(out), "--steps", "1", "--overwrite", "--no-progress", "--sample-steps", "1",
                  "--format", "kohya", "--json")
    assert over.exit_code == 0, over.output
    r3 = TrainResult.model_validate_json(over.stdout)
    assert r3.steps == 1 and Path(r3.weights) == Path(r3.kohya_weights) == out / "mystyle_kohya.safetensors"
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    from lorahub.adapters.inspect import inspect_file

    assert inspect_file(out / "mystyle_kohya.safetensors").loaders == ["diffusers", "a1111", "comfyui", "kohya"]
    assert "mystyle_kohya.safetensors" in (out / "README.md").read_text()


def test_cli_errors_are_one_line(embedded_home: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = _train(str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--no-progress")
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0 and "no images" in res.output
    assert not (tmp_path / "o").exists()
    res = _train("--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "missing DATA" in res.output
    res = _train(str(tmp_path / "empty"))
    assert res.exit_code == 2 and "missing --out" in res.output
    res = _train("--resume", "--out", str(tmp_path / "nothing"))
    assert res.exit_code == 2 and "nothing to resume" in res.output
    res = _train(str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--resolution", "100")
    assert res.exit_code == 2 and "multiple of 64" in res.output
    data = demo_data(tmp_path / "data", count=1)
    res = _train(str(data), "--out", str(tmp_path / "o"), "--mixed-precision", "fp16", "--device", "cpu")
    assert res.exit_code == 2 and "needs a GPU" in res.output
    assert not (tmp_path / "o").exists(), "a run that never started left its folder behind"
    import torch

    if not torch.cuda.is_available():
        res = _train(str(data), "--out", str(tmp_path / "o"), "--device", "cuda")
        assert res.exit_code == 2 and "no CUDA GPU" in res.output
        assert not (tmp_path / "o").exists()


def test_cli_resume_continues_a_stopped_run(embedded_home: Path, tmp_path: Path) -> None:
    """A run with checkpoints kept is extended with --resume --steps N (only the steps change)."""
    pytest.importorskip("diffusers")
    data = demo_data(tmp_path / "data", count=2)
    out = tmp_path / "run"
    res = _train(str(data), "--out", str(out), "--steps", "2", "--checkpoint-every", "1", "--keep-checkpoints",
                 "--sample-steps", "1", "--no-progress")
    assert res.exit_code == 0, res.output
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-000001"]
    bad = _train("--resume", "--out", str(out), "--rank", "8")
    assert bad.exit_code == 2 and "rank" in bad.output
    more = _train("--resume", "--out", str(out), "--steps", "3", "--no-progress", "--json")
    assert more.exit_code == 0, more.output
    r = json.loads(more.stdout)
    assert r["resumed_from"] == 1 and r["steps"] == 3
    hist = json.loads((out / "loss_history.json").read_text())["history"]
    assert [h["step"] for h in hist] == [1, 2, 3]


def test_training_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import lorahub.cli.commands.train, lorahub.training.config, lorahub.training.dataset\n"
        "import lorahub.training.export, lorahub.training.checkpoint, lorahub.training.trainer\n"
        "import lorahub.training.demo_data, lorahub.schemas.training\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_kohya_name_mapping_is_fixed() -> None:
    from lorahub.errors import TrainingError
    from lorahub.training.export import kohya_module_name, te_diffusers_path

    assert kohya_module_name("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q") == \
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert kohya_module_name("unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0") == \
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0"
    # transformers 5 (no text_model level) and transformers 4 paths give the same, real-world name
    for path in ("encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.0.self_attn.q_proj"):
        assert kohya_module_name("text_encoder", path) == "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
        assert te_diffusers_path(path) == "text_model.encoder.layers.0.self_attn.q_proj"
    assert kohya_module_name("text_encoder", "encoder.layers.11.mlp.fc2") == "lora_te_text_model_encoder_layers_11_mlp_fc2"
    for comp, path in (("unet", "conv_in"), ("unet", "down_blocks.0.resnets.0.conv1"), ("text_encoder", "embeddings"),
                       ("transformer", "x")):
        with pytest.raises(TrainingError):
            kohya_module_name(comp, path)


def test_loss_curve_card_and_hashes(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    import yaml

    from lorahub.schemas.training import TrainConfig
    from lorahub.training.export import draw_loss_curve, model_card, window_means

    assert window_means([4.0, 3.0, 2.0, 1.0] * 5) == (3.5, 1.5)  # 10% of 20 steps: 2 each
    assert window_means([]) == (None, None)
    p = draw_loss_curve(tmp_path / "c.png", [1, 2, 3, 4], [1.0, float("nan"), 0.5, 0.25])
    from PIL import Image

    with Image.open(p) as im:
        assert im.size == (800, 450)
    draw_loss_curve(tmp_path / "one.png", [1], [0.3])
    card = model_card(name="x", base_name="runwayml/stable-diffusion-v1-5", family="sd1", trigger="t: with colon",
                      config=TrainConfig(), steps=3, images=2, resolution=512,
                      samples=[("a 'quoted' prompt", "samples/s.png")], kohya_file=None)
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["instance_prompt"] == "t: with colon" and front["license"] == "creativeml-openrail-m"
    assert front["widget"] == [{"text": "a 'quoted' prompt", "output": {"url": "samples/s.png"}}]
    assert "template:sd-lora" in front["tags"]


def test_embedded_tensor_hash_matches_the_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.training.export import diffusers_records, tensor_hash, write_weights

    g = torch.Generator().manual_seed(0)
    unet = {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (torch.randn(4, 32, generator=g),
                                                                            torch.randn(32, 4, generator=g))}
    te = {"encoder.layers.0.self_attn.q_proj": (torch.randn(4, 32, generator=g), torch.randn(32, 4, generator=g))}
    records = diffusers_records(unet, te, "bf16")
    path = write_weights(tmp_path / "w.safetensors", records, {"ss_network_dim": "4"})
    fp = fingerprint_file(path)
    assert fp.tensor_sha256 == tensor_hash(records)
    from lorahub.adapters.header import read_header

    h = read_header(path)
    assert h.string_metadata()["sshs_model_hash"] == fp.tensor_sha256
    assert {t.dtype for t in h.tensors.values()} == {"BF16"}
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight" in h.tensors
