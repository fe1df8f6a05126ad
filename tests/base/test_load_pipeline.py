"""load_pipeline: the default spec, dtypes, devices and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub.base.resolve import load_pipeline, resolve_dtype
from lorahub.errors import BaseModelError

pytestmark = pytest.mark.torch


def test_default_spec_is_the_embedded_model(embedded_home: Path) -> None:
    import torch

    pipe = load_pipeline(None, dtype="bfloat16")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.dtype == torch.bfloat16 and pipe.device.type == "cpu"
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == 64  # the drawing base


def test_dtype_names() -> None:
    import torch

    assert resolve_dtype(None) is None
    assert resolve_dtype("fp16") is torch.float16
    assert resolve_dtype("torch.bfloat16") is torch.bfloat16
    assert resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(BaseModelError, match="unknown dtype 'int3'"):
        resolve_dtype("int3")


def test_unavailable_device_is_one_clear_error(embedded_base: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BaseModelError, match="cannot move the pipeline to device 'cuda'"):
        load_pipeline(str(embedded_base), device="cuda")


def test_missing_folder_fails_before_importing_anything_heavy(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="no such file or folder"):
        load_pipeline(str(tmp_path / "nope"))
