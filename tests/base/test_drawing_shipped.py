"""The shipped drawing base: resolvable by its id, the output of the documented command, and it draws."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.base import drawing
from lorahub.base.pretrain import MARKER, PretrainConfig
from lorahub.base.resolve import resolve_base
from lorahub.cli.main import cli
from lorahub.errors import BaseModelError


def test_drawing_resolves_to_the_shipped_folder() -> None:
    for spec in ("drawing", drawing.DRAWING_ID, f" {drawing.DRAWING_ID} "):
        ref = resolve_base(spec, download=False, build=False)
        assert ref.kind == "folder" and ref.path == drawing.SHIPPED
        assert ref.name == drawing.DRAWING_ID and ref.family == "sd1"
        assert ref.pipeline_class == "StableDiffusionPipeline"
    result = CliRunner().invoke(cli, ["base", "info", "drawing", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["name"] == drawing.DRAWING_ID and info["exists"] and info["size_bytes"] <= 20 * 2**20


def test_a_local_folder_named_drawing_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "drawing").mkdir()
    with pytest.raises(BaseModelError, match="no model_index.json"):  # the local folder was read, not the shipped one
        resolve_base("drawing", download=False, build=False)


def test_missing_weights_say_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drawing, "SHIPPED", tmp_path / "weights" / "drawing-sd1-tiny")
    with pytest.raises(BaseModelError, match="weights are not installed") as caught:
        resolve_base(drawing.DRAWING_ID, download=False, build=False)
    assert "lorahub base pretrain" in str(caught.value.hint)
    result = CliRunner().invoke(cli, ["base", "info", "drawing"])
    assert result.exit_code == 1 and "weights are not installed" in result.stderr
    assert "Traceback" not in result.output


def test_the_shipped_weights_are_the_documented_command_s_output() -> None:
    """The marker records the run's settings: `lorahub base pretrain --out DIR --seed 0` with today's defaults,
    so the shipped weights and the command docs/drawing-base.md names agree."""
    marker = json.loads((drawing.SHIPPED / MARKER).read_text(encoding="utf-8"))
    assert marker["id"] == drawing.DRAWING_ID and marker["kind"] == "drawing"
    defaults = {k: v for k, v in asdict(PretrainConfig(seed=0)).items() if k != "extra"}
    assert marker["pretrain"] == json.loads(json.dumps(defaults))
    sizes = sum(f.stat().st_size for f in drawing.SHIPPED.rglob("*") if f.is_file())
    assert sizes <= 20 * 2**20
    scheduler = json.loads((drawing.SHIPPED / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    assert scheduler["rescale_betas_zero_snr"] is True and scheduler["prediction_type"] == "v_prediction"
    assert scheduler["timestep_spacing"] == "trailing"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "drawing-base.md").read_text(encoding="utf-8")
    assert "lorahub base pretrain --out DIR --seed 0" in docs


def test_the_shipped_base_draws_what_a_held_out_caption_says() -> None:
    """The judge (not the model) reads colour, shape and position back from 50 held-out captions' images."""
    torch = pytest.importorskip("torch")
    import diffusers

    from lorahub.base.pretrain import evaluate

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(drawing.SHIPPED), dtype=torch.float32,
                                                             safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    figures = evaluate(pipe, "heldout", n=50, seed=3, steps=20, guidance=drawing.GUIDANCE, batch=50)
    assert figures["found"] >= 0.95
    assert figures["colour"] >= 0.9 and figures["shape"] >= 0.75 and figures["position"] >= 0.75, figures


def test_training_on_the_drawing_base_defaults_to_its_own_settings(tmp_path: Path) -> None:
    """Settings not given take drawing.TRAIN_DEFAULTS on the drawing base; given ones and other bases are kept."""
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.trainer import base_defaults

    plain = TrainConfig(data=str(tmp_path), out=str(tmp_path / "out"), base="drawing")
    tuned = base_defaults(plain)
    assert (tuned.lr, tuned.steps) == (drawing.TRAIN_DEFAULTS["lr"], drawing.TRAIN_DEFAULTS["steps"])
    assert (plain.lr, plain.steps) == (1e-4, 1000)  # TrainConfig's own, untouched
    given = base_defaults(TrainConfig(data=str(tmp_path), out=str(tmp_path / "out"), base=str(drawing.SHIPPED), lr=5e-4))
    assert (given.lr, given.steps) == (5e-4, drawing.TRAIN_DEFAULTS["steps"])  # a copy of the folder counts too
    default = base_defaults(TrainConfig(data=str(tmp_path), out=str(tmp_path / "out")))  # the embedded default base
    assert (default.lr, default.steps) == (tuned.lr, tuned.steps)  # holds these weights: the same defaults
    other = TrainConfig(data=str(tmp_path), out=str(tmp_path / "out"), base="lorahub/embedded-sdxl-tiny")
    assert base_defaults(other) is other


def test_the_shipped_demo_adapters_draw_their_concepts(one_thread: None) -> None:
    """The demo adapters beside the base (what a CPU Space starts its catalogue with): each names its trigger
    word and base, its preview is what it draws (the judge reads the concept in the shipped PNG), and on unseen
    captions of its concept the judge finds it in >= 70% of images with the adapter, <= 10% without."""
    pytest.importorskip("torch")
    import numpy as np
    from PIL import Image

    from lorahub import world
    from lorahub.adapters.inspect import inspect_file
    from lorahub.pipeline.live import LivePipeline

    paths = drawing.demo_adapters()
    assert [p.name for p in paths] == [f"drawing_{c}.safetensors" for c in drawing.DEMO_CONCEPTS]
    with LivePipeline(str(drawing.shipped_path()), device="cpu") as live:
        for concept, path in zip(drawing.DEMO_CONCEPTS, paths, strict=True):
            info = inspect_file(path)
            assert info.trigger_words == [world.CONCEPTS[concept].trigger] and info.base_family == "sd1"
            preview = np.asarray(Image.open(path.with_name(path.stem + ".preview.png")).convert("RGB"))
            assert concept in world.judge(preview).concepts
            captions = [s.caption for s in world.scenes(drawing.PREVIEW_SEED + 1, 10, "concept", concept=concept)]

            live.add(concept, str(path), weight=1.0)
            shares = []
            for weight in (1.0, 0.0):
                live.set_weights({concept: weight}, exclusive=True)
                shares.append(sum(concept in world.judge(np.asarray(live.render(c, seed=i, steps=12, tags=False).image))
                                  .concepts for i, c in enumerate(captions)) / len(captions))
            with_adapter, without = shares
            assert with_adapter >= 0.7 and without <= 0.1, (concept, with_adapter, without)
            live.remove(concept)
