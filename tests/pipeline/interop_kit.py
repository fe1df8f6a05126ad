"""Helpers of the interop tests (tests/pipeline/test_interop*.py): writing every kind of file lorahub makes
for a family (blends, conversions, a trained package, LyCORIS inputs), loading a file with diffusers while
collecting its warnings, reading a file's tensors, and measuring what fusing it moved."""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any


class quiet_logs:
    def __enter__(self) -> None:
        self.level = logging.root.manager.disable
        logging.disable(logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        logging.disable(self.level)


def read_tensors(path: str | Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def is_kohya_layout(tensors: dict[str, Any]) -> bool:
    return all(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in tensors)


class WarningCapture(logging.Handler):
    """A logging handler that keeps the messages of the warnings (and worse) it sees."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_collecting(pipe: Any, path: Path) -> tuple[list[str], Any]:
    """``load_lora_weights`` with diffusers' and peft's warnings (logged or raised) collected."""
    cap = WarningCapture()
    loggers = [logging.getLogger(n) for n in ("diffusers", "peft")]
    for lg in loggers:
        lg.addHandler(cap)
    stream = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with redirect_stderr(stream):
                pipe.load_lora_weights(str(path), adapter_name="probe")
    finally:
        for lg in loggers:
            lg.removeHandler(cap)
    msgs = cap.messages + [str(w.message) for w in caught if "lora" in str(w.message).lower()
                           or "key" in str(w.message).lower()]
    return msgs, pipe.get_list_adapters()


STRENGTH = 0.7
METHODS = ("linear", "cat", "svd", "ties", "dare")
LAYOUTS = ("kohya", "diffusers")
#: The kinds every family's interop test writes (LyCORIS kinds are added per family).
COMMON_KINDS = (
    ["train-diffusers", "train-kohya", "convert-a-kohya", "convert-b-diffusers"]
    + [f"blend-{m}-{f}" for m in METHODS for f in LAYOUTS]
)
LYCORIS_PRESET = {
    "enable_conv": True, "unet_target_module": ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"],
    "unet_target_name": [], "text_encoder_target_module": ["CLIPAttention", "CLIPMLP"], "text_encoder_target_name": [],
}


def write_lycoris(path: Path, pipe: Any, algo: str, seed: int, metadata: dict[str, str]) -> Path:
    """A LyCORIS ``algo`` file for ``pipe`` (which it hooks), made and saved by the lycoris-lora package itself.

    Targets the transformer blocks, the resnets and the samplers (3x3 convolutions) and the text encoder(s)
    (``text_encoder_2`` too when the pipeline has one). The factors are random (lycoris initialises one side
    to zero, which would make every update 0).
    """
    import pytest
    import torch

    lycoris_config = pytest.importorskip("lycoris.config")
    from lycoris.kohya import create_network

    lycoris_config.PRESET["lorahub-test"] = LYCORIS_PRESET

    class TextModel(torch.nn.Module):  # transformers 5's CLIPTextModel has no text_model level; real files name it
        def __init__(self, te: Any) -> None:
            super().__init__()
            self.text_model = te

    encoders = [TextModel(pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        encoders.append(pipe.text_encoder_2)
    te = encoders if len(encoders) > 1 else encoders[0]  # a list names them lora_te1_/lora_te2_
    torch.manual_seed(seed)
    with quiet_logs():
        net = create_network(1.0, 4, 2, None, te, pipe.unet, algo=algo, preset="lorahub-test", factor=4)
    net.apply_to(te, pipe.unet, apply_text_encoder=True, apply_unet=True)  # registers the modules (and hooks pipe)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    net.save_weights(str(path), torch.float32, dict(metadata))
    return path


def write_kinds(d: Path, adapters: dict[str, Path], train: dict[str, Any], lycoris_seeds: dict[str, int],
                build_pipeline: Any, lycoris_metadata: dict[str, str]) -> dict[str, Path]:
    """kind -> a file lorahub wrote in ``d``: every kind of :data:`COMMON_KINDS` (blends of ``adapters`` a, b and c,
    conversions of a and b, a 2-step training run with ``train`` on top of the common settings) and, with
    lycoris-lora, for each ``algo`` -> seed of ``lycoris_seeds``: the LyCORIS file itself (``algo``, made on a fresh
    ``build_pipeline(0)``: lycoris hooks its pipeline) and its blend with a and conversion, in both layouts."""
    from lorahub.pipeline.blend import DENSITY_METHODS, blend
    from lorahub.pipeline.convert import convert
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.demo_data import make_demo_dataset
    from lorahub.training.trainer import train as run_training

    out: dict[str, Path] = {}
    items = [(adapters["a"], 0.6), (adapters["b"], 0.4), (adapters["c"], 0.7)]
    for method in METHODS:
        for fmt in LAYOUTS:
            kw: dict[str, Any] = {"density": 0.6} if method in DENSITY_METHODS else {}
            res = blend(items, method=method, rank=None if method in ("linear", "cat") else 6, format=fmt,
                        out=d / f"blend-{method}-{fmt}.safetensors", dtype="float32", **kw)
            out[f"blend-{method}-{fmt}"] = Path(res.path)
    out["convert-a-kohya"] = Path(convert(adapters["a"], d / "a-kohya.safetensors", dtype="float32").path)
    out["convert-b-diffusers"] = Path(convert(adapters["b"], d / "b-diffusers.safetensors", format="diffusers",
                                              dtype="float32").path)
    data = make_demo_dataset(d / "data", count=2, size=64)
    res = run_training(TrainConfig(data=str(data), out=str(d / "trained"), rank=4, alpha=2, steps=2, lr=1e-2,
                                   resolution=64, train_text_encoder=True, save_precision="fp32", sample_steps=1,
                                   seed=3, **train), log=lambda _m: None, progress=False)
    out["train-diffusers"], out["train-kohya"] = Path(res.weights), Path(res.kohya_weights)
    try:
        import lycoris  # noqa: F401
    except ImportError:
        return out
    for algo, seed in lycoris_seeds.items():
        src = write_lycoris(d / f"{algo}.safetensors", build_pipeline(0), algo, seed, lycoris_metadata)
        out[algo] = src
        for fmt in LAYOUTS:
            res = blend([(src, 0.8), (adapters["a"], 0.5)], method="linear", format=fmt, dtype="float32",
                        out=d / f"{algo}-blend-{fmt}.safetensors")
            out[f"{algo}-blend-{fmt}"] = Path(res.path)
            out[f"{algo}-convert-{fmt}"] = Path(convert(src, d / f"{algo}-convert-{fmt}.safetensors", format=fmt,
                                                        dtype="float32", rank=64).path)
    return out


def kind_file(written: dict[str, Path], kind: str) -> Path:
    import pytest

    if kind not in written:
        pytest.skip("lycoris-lora is not installed: no LyCORIS file to start from")
    return written[kind]


def module_weights(pipe: Any, components: tuple[str, ...]) -> dict[tuple[str, str], Any]:
    """(component, module path) -> a copy of the weight of every Linear/Conv2d of ``components``."""
    import torch

    out = {}
    for comp in components:
        for name, mod in getattr(pipe, comp).named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                out[(comp, name)] = mod.weight.detach().clone()
    return out


def file_update(tensors: dict[str, Any], rules: Any, base_weights: dict) -> dict[tuple[str, str], Any]:
    """The update the file describes, computed by a loader that reads only tensors: ComfyUI's rule for the
    kohya layout, plain ``up @ down`` (alpha = rank) for the diffusers layout."""
    from tool_rules import comfy_load, plain_load

    if is_kohya_layout(tensors):
        loaded = comfy_load(tensors, rules)
    else:
        loaded = plain_load(tensors, {k: tuple(v.shape) for k, v in base_weights.items()})
    assert not loaded.unloaded and not loaded.shape_errors, (loaded.unloaded[:3], loaded.shape_errors[:3])
    return loaded.deltas


def fused_changes(pipe: Any, base_weights: dict) -> dict[tuple[str, str], Any]:
    """(component, module path) -> how far the weight moved from ``base_weights``, for every module that moved."""
    import torch

    changed = {}
    for (comp, name), w in base_weights.items():
        now = getattr(pipe, comp).get_submodule(name)
        weight = now.base_layer.weight if hasattr(now, "base_layer") else now.weight
        if not torch.equal(weight.detach(), w):
            changed[(comp, name)] = weight.detach() - w
    return changed


def restore(pipe: Any, base_weights: dict) -> None:
    """Unfuse and unload every adapter, then copy the exact base weights back, whatever happened."""
    try:
        pipe.unfuse_lora()
    except Exception:  # noqa: BLE001 - nothing fused
        pass
    pipe.unload_lora_weights()
    for (comp, name), w in base_weights.items():
        getattr(pipe, comp).get_submodule(name).weight.data.copy_(w)
