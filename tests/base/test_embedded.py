"""The embedded default base model: the shipped pretrained weights, installed atomically as a real SD 1.x
pipeline; random builds from a seed are deterministic."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from lorahub.base import embedded
from lorahub.base.embedded import (
    EMBEDDED_ID,
    EMBEDDED_NAME,
    MARKER,
    build_embedded,
    embedded_path,
    ensure_embedded,
    is_complete,
)

pytestmark = pytest.mark.torch


def digests(folder: Path, pattern: str = "*.safetensors") -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob(pattern))
    }


def test_embedded_path_follows_lorahub_home(lorahub_home: Path, tmp_path: Path) -> None:
    assert embedded_path() == lorahub_home / "models" / EMBEDDED_NAME
    assert embedded_path(tmp_path) == tmp_path / "models" / EMBEDDED_NAME
    assert not embedded_path().exists()  # nothing is built by asking


def test_the_default_build_is_the_shipped_drawing_weights_in_float32(embedded_base: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from lorahub.base import drawing

    shipped = drawing.shipped_path()
    files = sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(embedded_base)) for p in embedded_base.rglob("*") if p.is_file()) == files
    for name in digests(shipped):
        mine, theirs = load_file(embedded_base / name), load_file(shipped / name)
        assert mine.keys() == theirs.keys() and mine
        for key, value in theirs.items():
            assert mine[key].dtype.name == "float32" and (mine[key] == value.astype("float32")).all(), (name, key)
    configs = {name: json.loads((shipped / name).read_text()) for name in digests(shipped, "*/*.json")}
    assert configs["text_encoder/config.json"]["dtype"] == "float16"
    configs["text_encoder/config.json"]["dtype"] = "float32"  # transformers loads it as the config says
    assert {name: json.loads((embedded_base / name).read_text()) for name in configs} == configs
    assert digests(build_embedded(tmp_path / "again")) == digests(embedded_base)  # the same bytes every time


def test_random_builds_are_deterministic(tmp_path: Path) -> None:
    first, second = digests(build_embedded(tmp_path / "first", seed=0)), digests(build_embedded(tmp_path / "again", seed=0))
    assert set(first) == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    assert first == second
    # configs and tokenizer too
    assert digests(tmp_path / "first", "*/*.json") == digests(tmp_path / "again", "*/*.json")
    marker = json.loads((tmp_path / "first" / MARKER).read_text())
    assert marker["weights"] == "random" and marker["seed"] == 0
    assert marker["config"]["unet"]["cross_attention_dim"] == 32  # the random architecture

    other = build_embedded(tmp_path / "other", seed=1)
    differ = digests(other)
    for name in first:
        assert differ[name] != first[name], name


def test_marker_and_layout(embedded_base: Path) -> None:
    assert is_complete(embedded_base)
    marker = json.loads((embedded_base / MARKER).read_text())
    assert marker["id"] == EMBEDDED_ID
    assert marker["family"] == "sd1"
    assert marker["weights"] == "pretrained" and marker["source"] == "lorahub/drawing-sd1-tiny"
    assert marker["kind"] == "drawing"  # renders and training on it take the drawing base's defaults
    assert marker["seed"] == 0 and marker["pretrain"]["seed"] == 0  # the seed it was pretrained from
    assert marker["lorahub_version"]
    assert marker["config"]["unet"]["cross_attention_dim"] == embedded.PRETRAINED_UNET_CONFIG["cross_attention_dim"]
    index = json.loads((embedded_base / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    assert index["requires_safety_checker"] is False
    # No pickles anywhere.
    assert not [p for p in embedded_base.rglob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    unet_cfg = json.loads((embedded_base / "unet" / "config.json").read_text())
    assert unet_cfg["use_linear_projection"] is False
    tok_cfg = json.loads((embedded_base / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok_cfg["model_max_length"] == 77


def test_from_pretrained_generates_a_64px_image(embedded_base: Path) -> None:
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(embedded_base)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.safety_checker is None

    def draw(prompt: str, output_type: str = "np"):  # noqa: ANN202
        gen = torch.Generator("cpu").manual_seed(0)
        return pipe(prompt, num_inference_steps=2, height=64, width=64, generator=gen, output_type=output_type).images

    img = draw("a photo of a cat")
    assert img.shape == (1, 64, 64, 3)
    assert np.isfinite(img).all()
    assert img.std() > 0.02  # a picture, not a flat colour
    assert np.array_equal(img, draw("a photo of a cat"))  # seeded: reproducible
    assert np.abs(img - draw("zzzz qqqq")).mean() > 1e-4  # the prompt conditions the picture
    pil = draw("a photo of a cat", output_type="pil")[0]
    assert pil.size == (64, 64)
    # default size from the configs: sample_size 16 latents x VAE factor 4
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64 == embedded.model().resolution
    assert pipe.vae_scale_factor == embedded.PRETRAINED_VAE_FACTOR


def test_sd1_module_names_and_tokenizer(embedded_base: Path) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(embedded_base, subfolder="unet")
    names = {n for n, _ in unet.named_modules()}
    for block in ("down_blocks.0.attentions.0", "down_blocks.2.attentions.1", "mid_block.attentions.0",
                  "up_blocks.1.attentions.0", "up_blocks.3.attentions.2"):
        for attn in ("attn1", "attn2"):
            for leaf in ("to_q", "to_k", "to_v", "to_out.0"):
                assert f"{block}.transformer_blocks.0.{attn}.{leaf}" in names
    assert "down_blocks.3.attentions.0" not in names  # last down block has no attention (as SD 1.5)
    assert "up_blocks.0.attentions.0" not in names
    assert isinstance(dict(unet.named_modules())["down_blocks.0.attentions.0.proj_in"], torch.nn.Conv2d)

    tok = CLIPTokenizer.from_pretrained(embedded_base, subfolder="tokenizer")
    assert tok.model_max_length == 77
    ids = tok("A photo of mystyle, 42!", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    assert ids[0] == tok.bos_token_id == 0 and tok.eos_token_id == 1 and tok.pad_token_id == 1
    assert max(ids) < len(tok) and len(set(ids)) > 10  # real ids, not one id for everything
    # the world's words are whole tokens (the drawing base's tokenizer), any other word is spelled out
    assert len(tok("a small red circle", add_special_tokens=False).input_ids) == 4
    assert tok("mystyle").input_ids != tok("otherstyle").input_ids


def test_ensure_builds_once_then_reuses(tmp_path: Path) -> None:
    target = tmp_path / "models" / EMBEDDED_NAME
    said: list[str] = []
    assert ensure_embedded(path=target, progress=said.append) == target
    assert is_complete(target) and said
    before = digests(target)
    said.clear()
    assert ensure_embedded(path=target, progress=said.append) == target
    assert said == []  # reused, not rebuilt
    ensure_embedded(path=target, force=True, progress=said.append)
    assert said and digests(target) == before
    # Only the finished folder and the lock file remain beside it.
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([EMBEDDED_NAME, f".{EMBEDDED_NAME}.lock"])
    # ensure_embedded(home=...) puts it under <home>/models
    assert ensure_embedded(home=tmp_path, progress=said.append) == target


def test_incomplete_folder_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / EMBEDDED_NAME
    (target / "unet").mkdir(parents=True)  # a leftover from something else: not complete
    ensure_embedded(path=target)
    assert is_complete(target)


def test_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / EMBEDDED_NAME

    def broken_save(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    real = embedded.build_pipeline

    def half_built(seed: int = 0):  # noqa: ANN202
        pipe = real(seed)
        monkeypatch.setattr(pipe, "save_pretrained", broken_save)
        return pipe

    monkeypatch.setattr(embedded, "build_pipeline", half_built)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded(path=target, seed=0)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_an_interrupted_install_of_the_pretrained_weights_leaves_nothing(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.numpy

    target = tmp_path / EMBEDDED_NAME
    real, calls = safetensors.numpy.save_file, []

    def save_then_stop(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls.append(real(*a, **k))
        if len(calls) == 2:  # two of the three weight files written
            raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded(path=target)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_an_unreadable_shipped_file_is_one_line_and_leaves_nothing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken installation (a truncated shipped UNet): ``lorahub base build`` says so in one line, exit 1,
    and nothing is left where the base would be."""
    import shutil

    from click.testing import CliRunner

    from lorahub.base import drawing
    from lorahub.cli.main import cli

    broken = tmp_path / "shipped"
    shutil.copytree(drawing.shipped_path(), broken)
    unet = broken / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    monkeypatch.setattr(drawing, "SHIPPED", broken)
    monkeypatch.setenv("LORAHUB_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(cli, ["base", "build"])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines  # progress, then the error in one line
    assert "the shipped unet/diffusion_pytorch_model.safetensors is unreadable" in errors[0], lines
    assert "reinstall lorahub" in errors[0] and "Traceback" not in res.stderr
    models = tmp_path / "home" / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    target = tmp_path / EMBEDDED_NAME
    said: list[str] = []
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ensure_embedded(path=target, progress=said.append))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [target] * 3
    assert sum(m.startswith("built ") for m in said) == 1
    assert is_complete(target)


def test_bad_seed_is_refused(tmp_path: Path) -> None:
    from lorahub.errors import BaseModelError

    with pytest.raises(BaseModelError, match="seed"):
        build_embedded(tmp_path / "x", seed=-1)
    assert not (tmp_path / "x").exists()
