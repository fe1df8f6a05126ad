"""Flux.1 and SD 3.5 LoRA training (flow matching) on the embedded tiny bases, honestly.

One run per family (module fixture): the embedded tiny Flux.1-dev / SD 3.5 base, 8 generated stripes
images with the trigger, rank 4, attention + MLP targets on Flux (with the CLIP text encoder trained too)
and the attention preset on SD3. Then:

- the flow-matching loss, computed here from diffusers' own pieces (the pipeline's ``encode_prompt``,
  ``_pack_latents``/``_prepare_latent_image_ids``, the transformer call as the DreamBooth scripts make it;
  not lorahub's code), on the training images with the trigger at fixed noise and sigmas, is lower with the
  saved adapter loaded into a fresh pipeline than on the base and than with a zero adapter (same modules,
  up factors zeroed: what loading an adapter costs without what it learnt);
- the kohya file names the original BFL / SD3 modules with q/k/v fused (as ComfyUI loads them) and holds the
  same update as the diffusers file, module by module (lorahub's converters read it back);
- the metadata says what kohya writes (modelspec architecture, ss_base_model_version);
- the flow options' maths (shift, Flux's dynamic shift, target presets) and the one-line refusals.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from train_testkit import TRIGGER, training_run

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

pytestmark = pytest.mark.slow  # two tiny training runs, ~40 s together on a quiet core

STEPS = 40
SEQ = 48  # T5 tokens: the captions are short; the default (Flux 512, SD3 77) only costs time here
SIGMAS = (0.2, 0.4, 0.6, 0.8)


@pytest.fixture(scope="module", params=["flux", "sd3"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from lorahub.schemas.training import TrainConfig

    family = request.param
    base = request.getfixturevalue(f"embedded_{family}_base")
    root = tmp_path_factory.mktemp(f"train-{family}")
    extra = {"targets": "attention-mlp", "train_text_encoder": True} if family == "flux" else {}
    for run in training_run(root, base, lambda data: TrainConfig(
        data=str(data), out=str(root / "mystyle"), base=str(base), trigger=TRIGGER, rank=4, steps=STEPS, lr=1e-2,
        save_precision="fp32", sample_steps=2, max_sequence_length=SEQ, **extra,
    )):
        yield {**run, "family": family}


# --------------------------------------------------------------------------------------------- the oracle


def _flow_loss(pipe: Any, family: str, data: Path) -> float:
    """Mean flow-matching loss (prediction vs noise - x0) over the training images with their captions, at
    fixed sigmas and noise, the way diffusers' train_dreambooth_lora_flux.py / _sd3.py compute it."""
    import numpy as np
    from PIL import Image

    rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines() if line.strip()] \
        if (data / "metadata.jsonl").is_file() else None
    if rows is None:
        images = sorted(p for p in data.rglob("*.png"))
        captions = [p.with_suffix(".txt").read_text().strip() for p in images]
    else:
        images = [data / r["file_name"] for r in rows]
        captions = [r["text"] for r in rows]
    captions = [c if c.startswith(TRIGGER) else f"{TRIGGER}, {c}" for c in captions]
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images]))
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mode()
        z = (z - (pipe.vae.config.shift_factor or 0.0)) * pipe.vae.config.scaling_factor
        if family == "flux":
            embeds, pooled, text_ids = pipe.encode_prompt(captions, prompt_2=None, max_sequence_length=SEQ)
        else:
            embeds, _, pooled, _ = pipe.encode_prompt(captions, None, None, do_classifier_free_guidance=False,
                                                      max_sequence_length=SEQ)
        g = torch.Generator().manual_seed(1234)
        losses = []
        for sigma in SIGMAS:
            noise = torch.randn(z.shape, generator=g)
            s = torch.full((z.shape[0],), sigma)
            noisy = (1 - sigma) * z + sigma * noise
            if family == "flux":
                b, c, h, w = z.shape
                packed = pipe._pack_latents(noisy, b, c, h, w)
                img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, z.device, z.dtype)
                pred = pipe.transformer(hidden_states=packed, timestep=s, guidance=torch.ones(b),
                                        pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                                        img_ids=img_ids, return_dict=False)[0]
                pred = pipe._unpack_latents(pred, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor,
                                            pipe.vae_scale_factor)
            else:
                pred = pipe.transformer(hidden_states=noisy, timestep=s * 1000, encoder_hidden_states=embeds,
                                        pooled_projections=pooled, return_dict=False)[0]
            losses.append(float(((pred - (noise - z)) ** 2).mean()))
    return sum(losses) / len(losses)


def _zero_copy(src: Path, dst: Path) -> Path:
    """The adapter with every up factor (lora_B) zeroed, its metadata kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        md = f.metadata()
        tensors = {k: (torch.zeros_like(f.get_tensor(k)) if ".lora_B." in k else f.get_tensor(k)) for k in f.keys()}
    save_file(tensors, str(dst), metadata=md)
    return dst


# --------------------------------------------------------------------------------------------- tests


def test_loss_falls_against_the_base_and_a_zero_adapter(trained: dict[str, Any], tmp_path: Path) -> None:
    from lorahub.base.resolve import load_pipeline

    family, out, data = trained["family"], trained["out"], trained["data"]
    losses = [h["loss"] for h in trained["trainer"].loss_history]
    assert len(losses) == STEPS and all(v == v for v in losses)

    torch.manual_seed(0)
    pipe = load_pipeline(str(trained["base"]))
    base = _flow_loss(pipe, family, data)
    zero = _zero_copy(out / "pytorch_lora_weights.safetensors", tmp_path / "zero.safetensors")
    pipe.load_lora_weights(str(tmp_path), weight_name=zero.name, adapter_name="zero")
    with_zero = _flow_loss(pipe, family, data)
    pipe.load_lora_weights(str(out), weight_name="pytorch_lora_weights.safetensors", adapter_name="trained")
    pipe.set_adapters("trained")
    with_trained = _flow_loss(pipe, family, data)
    in_memory = _flow_loss(trained["trainer"].pipe, family, data) if family == "flux" else with_trained
    print(f"{family}: flow loss base {base:.4f}, zero adapter {with_zero:.4f}, trained {with_trained:.4f}")
    assert abs(with_zero - base) < 1e-4 * base, (with_zero, base)
    assert with_trained < 0.85 * base, (with_trained, base)
    assert with_trained < 0.85 * with_zero
    # the saved file is the trained model (Flux trained CLIP too; SD3's in-memory pipeline freed its encoders)
    assert abs(in_memory - with_trained) < 1e-4 * base, (in_memory, with_trained)


def test_kohya_file_is_the_original_layout_with_the_same_update(trained: dict[str, Any]) -> None:
    from safetensors import safe_open

    from lorahub.pipeline.canonical import load_adapter_file

    family, out = trained["family"], trained["out"]
    kohya = out / "mystyle_kohya.safetensors"
    with safe_open(str(kohya), "pt") as f:
        names = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in f.keys()}
    if family == "flux":
        assert {"lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_double_blocks_1_txt_attn_qkv",
                "lora_unet_double_blocks_0_img_attn_proj", "lora_unet_double_blocks_0_txt_attn_proj",
                "lora_unet_double_blocks_0_img_mlp_0", "lora_unet_double_blocks_0_txt_mlp_2",
                "lora_unet_single_blocks_1_linear1", "lora_unet_single_blocks_0_linear2"} <= names
        assert any(n.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj") for n in names)
    else:
        assert {"lora_unet_joint_blocks_0_x_block_attn_qkv", "lora_unet_joint_blocks_0_context_block_attn_qkv",
                "lora_unet_joint_blocks_0_x_block_attn2_qkv", "lora_unet_joint_blocks_2_x_block_attn_proj"} <= names
    assert not any("to_q" in n or "transformer_blocks" in n for n in names)

    diff = load_adapter_file(out / "pytorch_lora_weights.safetensors")
    back = load_adapter_file(kohya)
    assert diff.family == back.family == family
    transformer_keys = [k for k in diff.modules if k.startswith("transformer.")]
    assert transformer_keys and set(back.modules) <= set(diff.modules)
    for key, f in diff.modules.items():
        a, b = f.weights()
        if key not in back.modules:
            # a zero part of a fused module reads back as no module: SD3's last block discards the text stream's
            # output, so its add_q_proj gets no gradient and stays at its zero init
            assert not b.any(), key
            continue
        a2, b2 = back.modules[key].weights()
        torch.testing.assert_close(b2 @ a2, b @ a, atol=1e-6, rtol=1e-5, msg=key)
    # and they are what the trainer holds: lora_B @ lora_A x alpha/rank of the peft layers
    layer = trained["trainer"].pipe.transformer.get_submodule(transformer_keys[0].removeprefix("transformer."))
    trained_dw = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * layer.scaling["default"]
    a, b = diff.modules[transformer_keys[0]].weights()
    torch.testing.assert_close(b @ a, trained_dw.detach(), atol=1e-6, rtol=1e-5)


def test_metadata_says_what_kohya_writes(trained: dict[str, Any]) -> None:
    from safetensors import safe_open

    from lorahub.adapters.validate import validate_file

    family, out = trained["family"], trained["out"]
    arch = "flux-1-dev/lora" if family == "flux" else "stable-diffusion-3.5-medium/lora"
    for name, impl in (("pytorch_lora_weights.safetensors", "diffusers"),
                       ("mystyle_kohya.safetensors", "black-forest-labs/flux" if family == "flux" else "SD3.5")):
        with safe_open(str(out / name), "pt") as f:
            md = f.metadata()
        assert md["modelspec.architecture"] == arch, name
        assert md["ss_base_model_version"] == ("flux1" if family == "flux" else "sd3")
        assert md["modelspec.implementation"].endswith(impl)
        assert "modelspec.prediction_type" not in md
        assert md["modelspec.trigger_phrase"] == TRIGGER
        v = validate_file(out / name, deep=True)
        assert v.valid, (name, v.errors)
    cfg = (out / "train_config.toml").read_text()
    assert "max_sequence_length = 48" in cfg
    card = (out / "README.md").read_text()
    assert ("FluxPipeline" if family == "flux" else "StableDiffusion3Pipeline") in card


# --------------------------------------------------------------------------------------------- the options


def test_shifts_are_the_schedulers() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from lorahub.training.flow import dynamic_mu, sample_sigmas

    cfg = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}
    assert dynamic_mu(cfg, 1024) == pytest.approx(calculate_shift(1024, 256, 4096, 0.5, 1.15))
    # a static shift of 3 is what SD3's scheduler does to its sigmas
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    unshifted = FlowMatchEulerDiscreteScheduler(shift=1.0).sigmas[:-1]
    g = torch.Generator().manual_seed(0)
    u = sample_sigmas("uniform", 6, g)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(sample_sigmas("uniform", 6, g, shift=3.0), 3 * u / (1 + 2 * u))
    torch.testing.assert_close(3 * unshifted / (1 + 2 * unshifted), sched.sigmas[:-1])
    # mu = log(shift) is the same shift, the exponential way
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(sample_sigmas("uniform", 6, g, mu=float(torch.log(torch.tensor(3.0)))),
                               3 * u / (1 + 2 * u))
    g = torch.Generator().manual_seed(0)
    s = sample_sigmas("logit_normal", 2000, g, logit_mean=0.0, logit_std=1.0)
    assert 0.45 < float(s.median()) < 0.55 and float(s.min()) > 0 and float(s.max()) <= 1


def test_target_presets(embedded_flux_base: Path) -> None:
    from diffusers import FluxTransformer2DModel

    from lorahub.training.flow import target_modules

    model = FluxTransformer2DModel.from_pretrained(str(embedded_flux_base / "transformer"))
    attention = target_modules(model, "attention")
    assert "transformer_blocks.0.attn.add_q_proj" in attention and "transformer_blocks.1.attn.to_add_out" in attention
    assert "single_transformer_blocks.0.attn.to_q" in attention
    assert not any("ff" in n or "proj_mlp" in n for n in attention)
    mlp = target_modules(model, "attention-mlp")
    assert set(attention) < set(mlp)
    assert {"transformer_blocks.0.ff.net.0.proj", "transformer_blocks.0.ff_context.net.2",
            "single_transformer_blocks.1.proj_mlp", "single_transformer_blocks.1.proj_out"} <= set(mlp)
    assert "proj_out" not in mlp and not any("norm" in n for n in mlp)


@pytest.mark.parametrize(("options", "message"), [
    ({"prediction_type": "v_prediction"}, "--prediction-type is for SD 1.x/2.x and SDXL"),
    ({"snr_gamma": 5.0}, "--snr-gamma is for SD 1.x/2.x and SDXL"),
    ({"quantize": "nf4"}, "--quantize nf4 needs a CUDA GPU"),
])
def test_sd_options_are_refused_in_one_line(options: dict[str, Any], message: str, embedded_flux_base: Path,
                                            tmp_path: Path) -> None:
    from train_testkit import demo_data, quiet

    from lorahub.errors import UsageError
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.trainer import Trainer

    data = demo_data(tmp_path / "data", count=2)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "out"), base=str(embedded_flux_base), steps=1, **options)
    with pytest.raises(UsageError, match=message.replace(".", r"\.")) as err:
        Trainer(cfg, log=quiet, progress=False).run()
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


_INT8_RUN = """
import json, sys
from pathlib import Path
import torch
from train_testkit import demo_data, quiet
from lorahub.schemas.training import TrainConfig
from lorahub.training.trainer import Trainer

base, tmp, seq = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
data = demo_data(tmp / "data", count=2)
trainer = Trainer(TrainConfig(data=str(data), out=str(tmp / "out"), base=str(base), steps=3, quantize="int8",
                              max_sequence_length=seq, sample_steps=1, format="diffusers"), log=quiet, progress=False)
result = trainer.run()
layer = trainer.pipe.transformer.get_submodule("transformer_blocks.0.attn.to_q")
print(json.dumps({"frozen": type(layer.base_layer.weight).__name__,
                  "lora_dtype": str(layer.lora_A["default"].weight.dtype),
                  "loss_finite": result.last_loss == result.last_loss, "weights": str(result.weights)}))
"""


def _quant_env(module: str) -> dict[str, str] | None:
    """The environment of a process that imports ``module`` (torchao, bitsandbytes): importable here, or from
    ``.venv/quant``, which ``make install`` fills (see the Makefile); None when neither."""
    import importlib.util
    import os
    import sys

    here = Path(__file__).parent
    path = [str(here), str(here.parent)]
    site = Path(sys.prefix) / "quant"
    if importlib.util.find_spec(module) is None:
        if not (site / module).is_dir():
            return None
        path.insert(0, str(site))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def test_int8_quantized_base_trains(embedded_sd3_base: Path, tmp_path: Path) -> None:
    """--quantize int8 through torchao, in a process of its own with torchao on its path (``make install`` puts it
    in ``.venv/quant``, outside the venv: diffusers imports torchao on every model load once it can)."""
    import subprocess
    import sys

    env = _quant_env("torchao")
    if env is None:
        pytest.skip("torchao is not installed: `make install` puts it into .venv/quant")
    proc = subprocess.run([sys.executable, "-c", _INT8_RUN, str(embedded_sd3_base), str(tmp_path), str(SEQ)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["frozen"] == "Int8Tensor"  # the frozen weight is int8 (torchao)
    assert report["lora_dtype"] == "torch.float32"  # the LoRA trains in full precision
    assert report["loss_finite"] and Path(report["weights"]).is_file()


_NF4_RUN = """
import json, sys
import torch
from diffusers import FluxTransformer2DModel
from peft import LoraConfig
from lorahub.training.flow import quantize_frozen, target_modules

model = FluxTransformer2DModel.from_pretrained(sys.argv[1])
before = target_modules(model, "attention")
count = quantize_frozen(model, "nf4", "cpu", torch.float32)  # bitsandbytes' CPU kernels stand in for CUDA's
after = target_modules(model, "attention")
model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=after))
layer = model.get_submodule("transformer_blocks.0.attn.to_q")
print(json.dumps({"count": count, "before": before, "after": after, "base": type(layer.base_layer).__name__,
                  "lora": "default" in layer.lora_A}))
"""


def test_nf4_quantized_layers_stay_lora_targets(embedded_flux_base: Path) -> None:
    """The layers ``--quantize nf4`` turns into bitsandbytes ``Linear4bit`` are still the LoRA's targets (a run on
    an H200 once found none and peft refused to start: the preset matched the class name ``Linear``)."""
    import subprocess
    import sys

    env = _quant_env("bitsandbytes")
    if env is None:
        pytest.skip("bitsandbytes is not installed: `make install` puts it into .venv/quant")
    proc = subprocess.run([sys.executable, "-c", _NF4_RUN, str(embedded_flux_base / "transformer")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["count"] > 0
    assert report["after"] == report["before"] and len(report["before"]) > 0
    assert report["base"] == "Linear4bit" and report["lora"]


def test_ctrl_c_then_resume_is_bit_for_bit_on_flux(embedded_flux_base: Path, tmp_path: Path) -> None:
    """The flow path draws its sigmas from the step's seeded generator: a resumed run ends where the straight one
    does (with caption dropout, so the text encoders run in the loop, the dynamic shift and batches of 2)."""
    from train_testkit import demo_data, quiet, read_tensors

    from lorahub.errors import TrainingInterrupted
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.trainer import train

    data = demo_data(tmp_path / "data", count=4)

    def config(out: Path) -> TrainConfig:
        return TrainConfig(data=str(data), out=str(out), base=str(embedded_flux_base), trigger=TRIGGER, rank=4,
                           steps=4, lr=5e-3, batch_size=2, caption_dropout=0.3, dynamic_shift=True,
                           timestep_sampling="logit_normal", loss_weighting="cosmap", max_sequence_length=SEQ,
                           save_precision="fp32", sample_steps=1, checkpoint_every=2, format="diffusers")

    def stop_at_3(step: int, _loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    straight = train(config(tmp_path / "straight"), log=quiet, progress=False)
    with pytest.raises(TrainingInterrupted, match="checkpoint of step 2 is intact"):
        train(config(tmp_path / "stopped"), log=quiet, progress=False, callback=stop_at_3)
    resumed = train(config(tmp_path / "stopped"), resume=True, log=quiet, progress=False)
    assert resumed.resumed_from == 2
    a, b = read_tensors(Path(straight.weights)), read_tensors(Path(resumed.weights))
    assert a.keys() == b.keys() and a == b
    assert straight.first_loss != straight.last_loss


def test_the_trained_adapter_previews_and_its_blend_search_loss_falls(trained: dict[str, Any]) -> None:
    """The package loads into lorahub's live pipeline (hot-swap slots), and blend search's objective (the
    flow-matching loss on fixed draws) on the training images is lower with the trained adapter at weight 1 than at
    0: the search reads back what training taught."""
    import numpy as np
    from PIL import Image

    from lorahub.pipeline.blendsearch import BlendObjective, encode_images
    from lorahub.pipeline.live import LivePipeline

    lp = LivePipeline(trained["base"], target_rank=8, lora_dirs=[trained["out"]])
    try:
        lp.add("mystyle", str(trained["out"] / "mystyle_kohya.safetensors"))
        image = lp.render(TRIGGER, seed=0, steps=2, output_type="np").image
        assert image.shape[:2] == (64, 64)
        images = sorted(trained["data"].rglob("*.png"))[:4]
        latents = encode_images(lp.pipe, [Image.fromarray(np.asarray(Image.open(p).convert("RGB"))) for p in images])
        captions = [p.with_suffix(".txt").read_text().strip() for p in images]
        captions = [c if c.startswith(TRIGGER) else f"{TRIGGER}, {c}" for c in captions]
        obj = BlendObjective(lp, ["mystyle"], latents, captions, samples=4, seed=0, max_sequence_length=SEQ)
        assert obj.prediction == "flow"
        on, off = obj.loss([1.0]), obj.loss([0.0])
        assert on < 0.9 * off, (on, off)
    finally:
        lp.close()
