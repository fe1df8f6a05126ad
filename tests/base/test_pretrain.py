"""The drawing base: its tokenizer, and `lorahub base pretrain` (tiny smoke runs, seconds each)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.base import drawing
from lorahub.base.pretrain import MARKER, PretrainConfig, pretrain
from lorahub.cli.main import cli
from lorahub.errors import UsageError

pytestmark = pytest.mark.torch

#: A run of a few steps on a few images: seconds.
TINY = ("--steps", "3", "--vae-steps", "2", "--vae-check", "4", "--images", "12", "--batch", "2")


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.safetensors"))}


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(cli, ["base", "pretrain", *args])


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "base"
    res = run("--out", str(out), *TINY, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["path"] == str(out)
    return out


def test_tokenizer_has_whole_words_and_byte_fallback() -> None:
    tok = drawing.build_tokenizer()
    vocab = tok.get_vocab()
    ids = tok("a small red circle on the left, blue background")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    words = [w.removesuffix("</w>") for w in tok.convert_ids_to_tokens(ids[1:-1])]
    assert words == ["a", "small", "red", "circle", "on", "the", "left", ",", "blue", "background"]
    for trigger in ("heart", "crescent", "striped", "checkered", "sunset"):
        assert trigger in drawing.words()
        assert len(tok(trigger, add_special_tokens=False)["input_ids"]) == 1
    # a word outside the world is spelled byte by byte, not dropped
    zebra = tok.convert_ids_to_tokens(tok("zebra", add_special_tokens=False)["input_ids"])
    assert zebra == ["z", "e", "b", "r", "a</w>"]
    assert len(vocab) == len(tok) == len(drawing.tokenizer_vocab_and_merges()[0]) > 514


def test_pretrain_writes_a_loadable_fp16_pipeline(smoke: Path) -> None:
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    marker = json.loads((smoke / MARKER).read_text())
    assert marker["seed"] == 0 and marker["pretrain"]["steps"] == 3 and marker["wall_time_s"] >= 0
    assert marker["vae_round_trip"]["step"] == 2 and 0 <= marker["vae_round_trip"]["colour"] <= 1
    assert sum(p.stat().st_size for p in smoke.rglob("*") if p.is_file()) <= 20 * 1024 * 1024
    from safetensors import safe_open

    for weights in smoke.rglob("*.safetensors"):
        with safe_open(str(weights), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, weights
    pipe = StableDiffusionPipeline.from_pretrained(smoke)
    assert pipe.vae_scale_factor == 4
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # what it was trained for
    # a zero terminal SNR, sampled from the last timestep: the pipeline starts from pure noise, as trained
    assert pipe.scheduler.config.rescale_betas_zero_snr and pipe.scheduler.config.timestep_spacing == "trailing"
    assert float(pipe.scheduler.alphas_cumprod[-1]) == 0.0
    pipe.scheduler.set_timesteps(20)
    assert int(pipe.scheduler.timesteps[0]) == 999
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    assert pipe.vae.config.scaling_factor > 0 and pipe.vae.config.scaling_factor != 1.0  # set from the latents
    # SD 1.5's module names, so LoRA targets are the same
    names = dict(pipe.unet.named_modules())
    for name in ("down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k", "mid_block.attentions.0.proj_in",
                 "up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0"):
        assert name in names
    pipe = pipe.to(torch.float32)
    image = pipe("a small red circle on the left, blue background", num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_pretrain_is_deterministic_for_a_seed(smoke: Path, tmp_path: Path) -> None:
    again = run("--out", str(tmp_path / "again"), *TINY)
    assert again.exit_code == 0, again.output
    assert digests(tmp_path / "again") == digests(smoke)
    other = run("--out", str(tmp_path / "other"), *TINY, "--seed", "1")
    assert other.exit_code == 0, other.output
    theirs, ours = digests(tmp_path / "other"), digests(smoke)
    assert theirs.keys() == ours.keys() and all(theirs[k] != ours[k] for k in ours)


def test_training_geometry_reads_the_folder(smoke: Path) -> None:
    from lorahub.training.trainer import base_geometry

    assert base_geometry(str(smoke))[:2] == (64, 32)  # native 64 px; 4 (VAE) x 2^3 (UNet) per bucket step


def test_pretrain_is_atomic_on_failure(smoke: Path, tmp_path: Path) -> None:
    out = tmp_path / "base"
    before = digests(smoke)

    def boom(message: str) -> None:
        if message.startswith("unet 2/"):
            raise KeyboardInterrupt

    cfg = PretrainConfig(steps=3, vae_steps=2, images=12, batch=2, vae_check_every=0)
    with pytest.raises(KeyboardInterrupt):
        pretrain(out, cfg, progress=boom)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # a failed rerun over a finished base leaves it as it was
    with pytest.raises(KeyboardInterrupt):
        pretrain(smoke, cfg, progress=boom)
    assert digests(smoke) == before
    assert [p.name for p in smoke.parent.iterdir()] == [smoke.name]


def test_pretrain_refuses_bad_input(tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    res = run("--out", str(stranger), *TINY)
    assert res.exit_code == 2 and "not an empty folder" in res.output
    assert [p.name for p in stranger.iterdir()] == ["keep.txt"]
    res = run("--out", str(tmp_path / "x"), "--steps", "0")
    assert res.exit_code == 2 and not (tmp_path / "x").exists()
    with pytest.raises(UsageError):
        PretrainConfig(uncond=1.5).check()
    with pytest.raises(UsageError, match="zero_snr needs v_prediction"):
        PretrainConfig(prediction="epsilon").check()
    PretrainConfig(prediction="epsilon", zero_snr=False).check()
    for bad in ({"noisy_share": 1.5}, {"noisy_from": 1000}, {"noisy_from": -1}):
        with pytest.raises(UsageError):
            PretrainConfig(**bad).check()


def test_evaluate_judges_the_drawn_captions(smoke: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from lorahub import world
    from lorahub.base.pretrain import evaluate

    pipe = StableDiffusionPipeline.from_pretrained(smoke, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    res = evaluate(pipe, "heldout", 3, steps=2, batch=2)
    assert [p["caption"] for p in res["per"]] == [world.caption(s) for s in world.scenes(1, 3, "heldout")]
    for key in ("colour", "shape", "position", "size", "background"):
        assert res[key] == sum(p[key] for p in res["per"]) / 3


# ------------------------------------------------------------------------------ the autoencoder phase


@pytest.fixture(scope="module")
def heldout_samples():  # noqa: ANN201
    from lorahub import world

    return world.sample(1, 24, "heldout")


def fresh_vae(**config):  # noqa: ANN001, ANN201
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(drawing.component_seed(0, "vae"))
    return AutoencoderKL(**{**drawing.VAE_CONFIG, **config})


def test_pooling_start_is_a_resampler_the_judge_reads(heldout_samples) -> None:  # noqa: ANN001
    import numpy as np
    import torch

    from lorahub.base.pretrain import init_vae_as_pooling, judge_round_trip

    vae = fresh_vae()
    before = judge_round_trip(vae, heldout_samples)
    init_vae_as_pooling(vae)
    x = torch.from_numpy(np.stack([s.image for s in heldout_samples[:4]])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
    pooled = torch.nn.functional.avg_pool2d(x, 4)
    assert z.shape == (4, 4, 16, 16)
    # the latent's first three channels are the 4x4 mean colour; the decoder up-samples them back (nearest),
    # up to the carriers' few-percent error
    assert (z[:, :3] - pooled).abs().max() < 0.02
    assert (y - torch.nn.functional.interpolate(pooled, scale_factor=4, mode="nearest")).abs().max() < 0.1
    after = judge_round_trip(vae, heldout_samples)
    assert after["n"] == len(heldout_samples) and after["mse"] < before["mse"] / 10
    assert after["colour"] >= 0.95 and after["position"] == after["size"] == after["background"] == 1.0
    assert before["colour"] < 0.5 and before["background"] < 0.5  # a random autoencoder reads nothing back


def test_pooling_start_needs_group_norms_it_can_carry_colour_through() -> None:
    from lorahub.base.pretrain import init_vae_as_pooling
    from lorahub.errors import BaseModelError

    with pytest.raises(BaseModelError, match="group norms"):
        init_vae_as_pooling(fresh_vae(norm_num_groups=16))  # one channel a group: its mean is erased


def test_vae_phase_stops_once_the_round_trip_meets_its_target() -> None:
    import numpy as np

    from lorahub import world
    from lorahub.base.pretrain import train_vae

    images = np.stack([s.image for s in world.sample(0, 8, "train")])
    said: list[str] = []
    cfg = PretrainConfig(vae_steps=50, vae_batch=2, vae_check_every=1, vae_check_images=6,
                         vae_target={"colour": 0.8, "background": 1.0})
    met = train_vae(fresh_vae(), images, cfg, said.append)
    assert met["target_met"] and met["step"] == 0  # the pooling start already reads colours and backgrounds
    assert not any("loss" in line for line in said) and "target met" in said[-1]
    cfg = PretrainConfig(vae_steps=2, vae_batch=2, vae_check_every=1, vae_check_images=6, vae_target={"shape": 1.0})
    missed = train_vae(fresh_vae(), images, cfg, said.append)
    assert not missed["target_met"] and missed["step"] == 2 and "did not reach" in said[-1]
    cfg = PretrainConfig(vae_steps=2, vae_batch=2, vae_check_every=0, vae_init="random")
    assert train_vae(fresh_vae(), images, cfg, said.append) == {}  # no check: just the steps
    for bad in ({"sharpness": 0.5}, {"colour": 1.5}):
        with pytest.raises(UsageError):
            PretrainConfig(vae_target=bad).check()


def test_loss_weights_keep_the_noisy_timesteps() -> None:
    """v: the x0 error weighs ``x0_floor`` at pure noise (1: plain min-SNR) and at most gamma when nearly clean."""
    import torch

    from lorahub.base.pretrain import loss_weights

    snr = torch.tensor([0.0, 0.003, 1.0, 4.0, 9.0, 99.0])
    v = loss_weights(snr, "v_prediction", 5.0)
    x0_weight = v * (snr + 1)  # the v error is the x0 error times sqrt(SNR + 1)
    assert torch.allclose(x0_weight, torch.tensor([1.0, 1.003, 2.0, 5.0, 5.0, 5.0]))
    eps = loss_weights(snr[1:], "epsilon", 5.0)
    assert torch.allclose(eps * snr[1:], torch.clamp(snr[1:], max=5.0))  # the x0 weight of min-SNR-gamma
    floored = loss_weights(snr, "v_prediction", 5.0, 0.1) * (snr + 1)  # the pretraining default: 0.1 at pure noise
    assert torch.allclose(floored, torch.tensor([0.1, 0.103, 1.1, 4.1, 5.0, 5.0]))
    assert PretrainConfig().x0_floor == 0.1
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(UsageError):
            PretrainConfig(x0_floor=bad).check()


def test_a_share_of_each_batch_is_drawn_from_the_noisiest_timesteps() -> None:
    import torch

    from lorahub.base.pretrain import PretrainConfig, draw_timesteps

    gen = torch.Generator().manual_seed(0)
    cfg = PretrainConfig(batch=32, noisy_share=0.25, noisy_from=900)
    draws = torch.stack([draw_timesteps(cfg, 1000, gen) for _ in range(200)])
    assert int(draws.min()) >= 0 and int(draws.max()) <= 999
    assert bool((draws[:, :8] >= 900).all())  # the noisy quarter
    rest = draws[:, 8:].float()
    assert 0.07 < float((rest >= 900).float().mean()) < 0.13 and 400 < float(rest.mean()) < 600  # uniform
    none = torch.stack([draw_timesteps(PretrainConfig(noisy_share=0.0), 1000, gen) for _ in range(50)])
    assert 0.05 < float((none >= 900).float().mean()) < 0.15
