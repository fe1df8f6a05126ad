"""Checkpoints: a run stopped by Ctrl-C and resumed ends bit for bit where the straight run ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_testkit import TRIGGER, demo_data, quiet, read_tensors

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from lorahub.errors import TrainingInterrupted, UsageError  # noqa: E402
from lorahub.schemas.training import TrainConfig  # noqa: E402
from lorahub.training import checkpoint as ckpt  # noqa: E402
from lorahub.training.trainer import train  # noqa: E402


def _config(data: Path, out: Path, **kw) -> TrainConfig:  # noqa: ANN003
    # Every random path at once: caption dropout, tag shuffling, flips, noise offset, min-SNR,
    # a warmup + cosine schedule, batches of 2 with gradient accumulation.
    base = dict(
        data=str(data), out=str(out), trigger=TRIGGER, rank=4, steps=6, lr=5e-3, batch_size=2,
        gradient_accumulation_steps=2, caption_dropout=0.3, shuffle_tags=True, flip=True, noise_offset=0.05,
        snr_gamma=5.0, lr_scheduler="cosine", lr_warmup_steps=2, save_precision="fp32", sample_steps=2,
        checkpoint_every=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _stop_at(step: int):  # noqa: ANN202
    def callback(s: int, _loss: float) -> None:
        if s == step:
            raise KeyboardInterrupt

    return callback


def test_ctrl_c_then_resume_is_bit_for_bit(embedded_home: Path, tmp_path: Path) -> None:
    data = demo_data(tmp_path / "data", count=5)
    straight = train(_config(data, tmp_path / "straight"), log=quiet, progress=False)

    out = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted, match="interrupted at step 4; the checkpoint of step 3 is intact") as exc:
        train(_config(data, out), log=quiet, progress=False, callback=_stop_at(4))
    assert exc.value.exit_code == 130
    assert [c.step for c in ckpt.list_checkpoints(out)] == [3]
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")], "temporary files left"

    resumed = train(_config(data, out), resume=True, log=quiet, progress=False)
    assert resumed.resumed_from == 3 and resumed.steps == 6
    a = read_tensors(Path(straight.weights))
    b = read_tensors(Path(resumed.weights))
    assert a.keys() == b.keys() and len(a) == 256
    assert a == b, "the resumed run's weights differ from the straight run's"
    import json

    ha = json.loads((tmp_path / "straight" / "loss_history.json").read_text())["history"]
    hb = json.loads((out / "loss_history.json").read_text())["history"]
    assert ha == hb
    # and the weights did move away from the initialisation
    assert straight.first_loss != straight.last_loss


def test_resume_refusals(embedded_home: Path, tmp_path: Path) -> None:
    data = demo_data(tmp_path / "data", count=2)
    out = tmp_path / "run"
    train(_config(data, out, steps=2, checkpoint_every=0, batch_size=1, gradient_accumulation_steps=1),
          log=quiet, progress=False)
    from lorahub.errors import TrainingError

    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        train(_config(data, out, steps=4, checkpoint_every=0, batch_size=1, gradient_accumulation_steps=1),
              resume=True, log=quiet, progress=False)
    with pytest.raises(UsageError, match="rank"):
        train(_config(data, out, rank=8), resume=True, log=quiet, progress=False)
    with pytest.raises(UsageError, match="nothing to resume"):
        train(_config(data, tmp_path / "never"), resume=True, log=quiet, progress=False)
    with pytest.raises(UsageError, match="not empty"):
        train(_config(data, out), log=quiet, progress=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not one"):
        train(_config(data, tmp_path / "foreign"), overwrite=True, log=quiet, progress=False)
    assert (tmp_path / "foreign" / "precious.txt").read_text() == "keep me"


def test_interrupted_checkpoint_write_keeps_the_previous_one(embedded_home: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while a checkpoint is being written: the half-written one vanishes, the last one stays."""
    import safetensors.torch

    data = demo_data(tmp_path / "data", count=2)
    out = tmp_path / "run"
    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    def flaky_save(tensors, filename, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if filename.endswith("optimizer.safetensors"):
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint (step 4) dies half-way
                raise KeyboardInterrupt
        return real_save(tensors, filename, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", flaky_save)
    cfg = _config(data, out, steps=6, checkpoint_every=2, batch_size=1, gradient_accumulation_steps=1)
    with pytest.raises(TrainingInterrupted, match="checkpoint of step 2 is intact"):
        train(cfg, log=quiet, progress=False)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-000002"], names
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    result = train(cfg, resume=True, log=quiet, progress=False)
    assert result.resumed_from == 2


def test_v_prediction_bf16_and_gradient_checkpointing_train(embedded_home: Path, tmp_path: Path) -> None:
    from lorahub.adapters.inspect import inspect_file

    data = demo_data(tmp_path / "data", count=2)
    result = train(
        TrainConfig(data=str(data), out=str(tmp_path / "v"), trigger=TRIGGER, steps=3, lr=1e-2,
                    prediction_type="v_prediction", mixed_precision="bf16", gradient_checkpointing=True,
                    cache_latents=False, sample_steps=2, save_precision="bf16"),
        log=quiet, progress=False,
    )
    assert result.mixed_precision == "bf16"
    assert all(h["loss"] == h["loss"] for h in [{"loss": result.first_loss}, {"loss": result.last_loss}])
    report = inspect_file(result.weights)
    assert report.dtype == "bfloat16" and report.metadata["modelspec.prediction_type"] == "v"
    assert report.metadata["ss_v_parameterization"] == "True" and report.metadata["ss_gradient_checkpointing"] == "True"
    with pytest.raises(UsageError, match="fp16 mixed precision needs a GPU"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "f"), steps=1, mixed_precision="fp16", device="cpu"),
              log=quiet, progress=False)


def test_a_zero_terminal_snr_base_trains_v_and_says_so(embedded_home: Path, random_sd1_base: Path,
                                                       tmp_path: Path) -> None:
    """A base whose schedule ends at a zero SNR (the embedded default, the drawing base): v-prediction with
    min-SNR trains (finite losses: the weights at SNR 0 are 0, not 0/0), kohya's ``ss_zero_terminal_snr`` says
    so, epsilon is refused; on an epsilon base (a random build's DDIM schedule) it says False."""
    import json

    from lorahub.adapters.inspect import inspect_file

    base = embedded_home
    cfg = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    assert cfg["rescale_betas_zero_snr"] is True and cfg["prediction_type"] == "v_prediction"
    data = demo_data(tmp_path / "data", count=2)
    result = train(TrainConfig(data=str(data), out=str(tmp_path / "v"), base=str(base), trigger=TRIGGER, steps=4,
                               lr=1e-2, snr_gamma=5.0, sample_steps=2), log=quiet, progress=False)
    assert result.first_loss == result.first_loss and result.last_loss == result.last_loss  # not NaN
    md = inspect_file(result.weights).metadata
    assert md["ss_zero_terminal_snr"] == "True" and md["modelspec.prediction_type"] == "v"
    with pytest.raises(UsageError, match="zero SNR, where epsilon prediction is undefined"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "e"), base=str(base), steps=1,
                          prediction_type="epsilon"), log=quiet, progress=False)
    plain = train(TrainConfig(data=str(data), out=str(tmp_path / "p"), base=str(random_sd1_base), steps=1,
                              sample_steps=2), log=quiet, progress=False)
    assert inspect_file(plain.weights).metadata["ss_zero_terminal_snr"] == "False"
