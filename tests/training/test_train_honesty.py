"""Training works, not just runs: on the embedded base the loss falls and the saved files reproduce the
trained model in a fresh pipeline, in both layouts; the package validates and inspects.

That the adapter learns what it was shown is proved in pixels, on the shipped drawing base
(tests/pipeline/test_pixel_proofs.py: ``lorahub train`` at its defaults teaches a heart, a texture and a
colour scheme the base never saw, and the judge finds them with the adapter and not without). This file
used to argue it in latent space, because the embedded base's random VAE scrambles pixels; that argument
is gone with the drawing base.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from train_testkit import TRIGGER, demo_data, quiet, training_run

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

STEPS = 60


@pytest.fixture(scope="module")
def trained(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real training run (60 steps, 64x64, rank 4) on the generated stripes dataset."""
    from lorahub.schemas.training import TrainConfig

    root = tmp_path_factory.mktemp("honesty")
    yield from training_run(root, embedded_base, lambda data: TrainConfig(
        data=str(data), out=str(root / "mystyle"), base=str(embedded_base), trigger=TRIGGER, rank=4,
        steps=STEPS, lr=1e-2, save_precision="fp32", export=["kohya"], sample_steps=4, sample_every=30,
    ))


def _latents(pipe: Any, seed: int, steps: int = 8) -> Any:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return pipe(TRIGGER, num_inference_steps=steps, generator=g, height=64, width=64, output_type="latent").images


def test_loss_goes_down(trained: dict[str, Any]) -> None:
    losses = [h["loss"] for h in trained["trainer"].loss_history]
    assert len(losses) == STEPS
    window = STEPS // 4
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert last < 0.9 * first, (first, last)
    print(f"loss: first quarter {first:.3f}, last quarter {last:.3f}")
    hist = json.loads((trained["out"] / "loss_history.json").read_text())
    assert [h["loss"] for h in hist["history"]] == losses
    assert hist["first_loss"] > hist["last_loss"]


def test_saved_weights_reproduce_the_trained_model(trained: dict[str, Any]) -> None:
    from lorahub.base.resolve import load_pipeline

    in_memory = _latents(trained["trainer"].pipe, 5, steps=4)
    for weight_name in ("pytorch_lora_weights.safetensors", "mystyle_kohya.safetensors"):
        fresh = load_pipeline(str(trained["base"]))
        baseline = _latents(fresh, 5, steps=4)
        fresh.load_lora_weights(str(trained["out"]), weight_name=weight_name)
        assert fresh.get_list_adapters() == {"unet": ["default_0"]}, weight_name
        reloaded = _latents(fresh, 5, steps=4)
        assert torch.allclose(reloaded, in_memory, atol=1e-5, rtol=1e-4), weight_name
        assert not torch.allclose(baseline, in_memory, atol=1e-3), "the adapter changes nothing"


def test_package_contents_validate_and_inspect(trained: dict[str, Any]) -> None:
    import yaml

    from lorahub.adapters.inspect import inspect_file
    from lorahub.adapters.validate import validate_file
    from lorahub.training.config import read_config

    out, result = trained["out"], trained["result"]
    assert set(result.files) >= {
        "pytorch_lora_weights.safetensors", "mystyle_kohya.safetensors", "train_config.toml", "loss_history.json",
        "loss_curve.png", "README.md", "samples/step-000030-0.png", "samples/step-000060-0.png",
    }
    assert not (out / "checkpoints").exists()
    for name, fmt in (("pytorch_lora_weights.safetensors", "diffusers"), ("mystyle_kohya.safetensors", "kohya-lora")):
        v = validate_file(out / name, deep=True)
        assert v.valid and not v.warnings, (name, v.errors, v.warnings)
        r = inspect_file(out / name)
        assert r.format == fmt
        assert r.base_family == "sd1" and r.declared_base_family == "sd1"
        assert r.rank == 4 and r.alpha == 4.0
        assert r.trigger_words == [TRIGGER]
        assert r.modules == 16 * 2 * 4  # 16 transformer blocks x (attn1, attn2) x (q, k, v, out)
        assert r.coverage.unet == r.modules and r.coverage.text_encoder == 0
        md = r.metadata
        assert md["ss_network_dim"] == "4" and md["ss_network_alpha"] == "4.0"
        assert md["ss_network_module"] == "networks.lora"
        assert md["ss_base_model_version"] == "sd_v1" and md["ss_v2"] == "False"
        assert md["ss_resolution"] == "(64, 64)" and md["ss_steps"] == str(STEPS)
        assert md["ss_learning_rate"] == "0.01" and md["ss_seed"] == "42"
        assert md["ss_num_train_images"] == "8" and md["ss_cache_latents"] == "True"
        assert md["ss_noise_offset"] == "None" and md["ss_min_snr_gamma"] == "None"
        assert json.loads(md["ss_tag_frequency"])[f"1_{TRIGGER}"][TRIGGER] == 8
        assert json.loads(md["ss_dataset_dirs"]) == {f"1_{TRIGGER}": {"n_repeats": 1, "img_count": 8}}
        assert md["modelspec.architecture"] == "stable-diffusion-v1/lora"
        assert md["modelspec.sai_model_spec"] == "1.0.1" and md["modelspec.resolution"] == "64x64"
        # the embedded base (the drawing base) predicts v on a zero-terminal-SNR schedule
        assert md["modelspec.prediction_type"] == "v" and md["ss_zero_terminal_snr"] == "True"
        assert md["modelspec.trigger_phrase"] == TRIGGER
        assert r.file_size < 300_000  # fp32 here; the default fp16 halves it
    diff_md = inspect_file(out / "pytorch_lora_weights.safetensors").metadata
    peft_md = json.loads(diff_md["lora_adapter_metadata"])
    assert peft_md["unet.r"] == 4 and peft_md["unet.lora_alpha"] == 4.0
    assert sorted(peft_md["unet.target_modules"]) == ["to_k", "to_out.0", "to_q", "to_v"]
    assert read_config(out / "train_config.toml").model_dump(exclude={"out", "data"}) == \
        trained["trainer"].config.model_dump(exclude={"out", "data"})
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == str(trained["base"]) and front["instance_prompt"] == TRIGGER
    assert {"lora", "text-to-image", "diffusers", "template:sd-lora"} <= set(front["tags"])
    assert front["widget"][0]["output"]["url"] == "samples/step-000060-0.png"
    from PIL import Image

    with Image.open(out / "loss_curve.png") as im:
        assert im.size == (800, 450)
        # the curve is drawn: there are blue pixels
        import numpy as np

        px = np.asarray(im.convert("RGB")).reshape(-1, 3)
        assert ((px[:, 2] > 120) & (px[:, 0] < 60)).any()
    with Image.open(out / "samples" / "step-000060-0.png") as im:
        assert im.size == (64, 64)


def test_text_encoder_lora_with_alpha_reloads_exactly(embedded_home: Path, tmp_path: Path) -> None:
    """The text-encoder path (peft.inject_adapter_in_model) and alpha != rank survive saving and reloading."""
    from lorahub.adapters.inspect import inspect_file
    from lorahub.base.resolve import load_pipeline
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.trainer import Trainer

    data = demo_data(tmp_path / "data", count=3)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "te"), trigger=TRIGGER, rank=4, alpha=2, steps=4, lr=5e-2,
                      train_text_encoder=True, text_encoder_lr=1e-2, save_precision="fp32", sample_steps=2,
                      export=["kohya"])
    trainer = Trainer(cfg, log=quiet, progress=False)
    result = trainer.run()
    in_memory = _latents(trainer.pipe, 3, steps=3)
    report = inspect_file(result.weights)
    assert report.coverage.text_encoder == 4 * 4 and report.coverage.unet == 128
    # the diffusers layout has no alpha tensor: alpha/rank = 0.5 is folded into lora.up, the metadata says alpha = r
    assert report.alpha == 4.0 and report.rank == 4
    kohya = inspect_file(result.kohya_weights)
    assert kohya.alpha == 2.0 and kohya.coverage.text_encoder == 16
    assert any(m.name == "lora_te_text_model_encoder_layers_0_self_attn_q_proj" for m in kohya.module_details)
    from kohyakit import sd15_modules  # kohya's SD 1.5 layout, built without ../shared
    from testkit import FIXTURES

    te_names = {m.name for m in kohya.module_details if m.component == "text_encoder"}
    assert len(te_names) == 16 and te_names <= {m.name for m in sd15_modules()}

    manifest = FIXTURES / "shapes" / "shinkai_makoto_offset.shapes.json"
    if manifest.exists():  # every text-encoder name exists in a real SD 1.5 kohya file
        real = _manifest_modules(FIXTURES)
        te_names = {m.name for m in kohya.module_details if m.component == "text_encoder"}
        assert len(te_names) == 16 and te_names <= set(real), sorted(te_names - set(real))[:3]
    for weight_name in ("pytorch_lora_weights.safetensors", "te_kohya.safetensors"):
        fresh = load_pipeline(None)
        fresh.load_lora_weights(result.out, weight_name=weight_name)
        assert fresh.get_list_adapters() == {"unet": ["default_0"], "text_encoder": ["default_0"]}
        assert torch.allclose(_latents(fresh, 3, steps=3), in_memory, atol=1e-5, rtol=1e-4), weight_name
        # the text-encoder half really loaded: every module applies the trained update B @ A * alpha / r
        # (the diffusers file stores B * alpha / r with alpha = r, the kohya file B with alpha 2)
        trained_te, loaded_te = _te_updates(trainer.pipe.text_encoder, "default"), _te_updates(fresh.text_encoder, "default_0")
        assert set(loaded_te) == set(trained_te) and len(loaded_te) == 16
        for n, d in trained_te.items():
            assert torch.allclose(loaded_te[n], d, atol=1e-7, rtol=1e-5), n
        assert any(float(d.abs().max()) > 0 for d in trained_te.values())


def _te_updates(te: Any, adapter: str) -> dict[str, Any]:
    """module name -> lora_B @ lora_A * scaling of every peft LoRA layer of the text encoder."""
    out = {}
    for name, mod in te.named_modules():
        if hasattr(mod, "lora_A") and adapter in getattr(mod, "lora_A", {}):
            b, a = mod.lora_B[adapter].weight.detach(), mod.lora_A[adapter].weight.detach()
            out[name] = (b @ a) * mod.scaling[adapter]
    return out


def _manifest_modules(shared_fixtures: Path) -> dict[str, set[str]]:
    """module name -> tensor suffixes of the real SD 1.5 kohya LoRA manifest (shinkai_makoto_offset)."""
    spec = json.loads((shared_fixtures / "shapes" / "shinkai_makoto_offset.shapes.json").read_text())
    out: dict[str, set[str]] = {}
    for key in spec:
        for suffix in (".lora_down.weight", ".lora_up.weight", ".alpha"):
            if key.endswith(suffix):
                out.setdefault(key[: -len(suffix)], set()).add(suffix)
    return out


def test_kohya_export_uses_the_real_sd15_names(trained: dict[str, Any], shared_fixtures: Path) -> None:
    """The tiny UNet has SD 1.5's block layout: every exported module name exists in a real SD 1.5 LoRA."""
    from lorahub.adapters.header import read_header

    real = _manifest_modules(shared_fixtures)
    header = read_header(trained["out"] / "mystyle_kohya.safetensors")
    ours: dict[str, set[str]] = {}
    for key in header.tensors:
        module, _, suffix = key.partition(".")
        ours.setdefault(module, set()).add("." + suffix)
    assert len(ours) == 128
    missing = sorted(m for m in ours if m not in real)
    assert not missing, f"kohya names not found in the real SD 1.5 file: {missing[:5]}"
    for module, suffixes in ours.items():
        assert suffixes == real[module] == {".lora_down.weight", ".lora_up.weight", ".alpha"}, module
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q" in ours
    assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0" in ours
    assert "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k" in ours
    # the attention modules of the real file that the tiny UNet has are all covered
    attn = {m for m in real if m.startswith("lora_unet_") and "_attn" in m}
    assert attn == set(ours), sorted(attn ^ set(ours))[:5]


def test_kohya_export_uses_the_documented_sd15_names(trained: dict[str, Any]) -> None:
    """The same against kohya's SD 1.5 layout built without ../shared (tests/kohyakit.py): every exported
    module is one of it, and every attention module of it is exported."""
    from kohyakit import read_layout, sd15_modules

    layout = {m.name for m in sd15_modules()}
    ours = read_layout(trained["out"] / "mystyle_kohya.safetensors")
    assert len(ours) == 128 and set(ours) <= layout, sorted(set(ours) - layout)[:5]
    assert all(set(t) == {"lora_down.weight", "lora_up.weight", "alpha"} for t in ours.values())
    attn = {m for m in layout if m.startswith("lora_unet_") and "_attn" in m}
    assert attn == set(ours), sorted(attn ^ set(ours))[:5]
