"""Helpers of the interop tests (tests/pipeline/test_interop*.py): loading a file with diffusers while
collecting its warnings, and reading a file's tensors."""

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


def read_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def is_kohya_layout(tensors: dict[str, Any]) -> bool:
    return all(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in tensors)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_collecting(pipe: Any, path: Path) -> tuple[list[str], Any]:
    """``load_lora_weights`` with diffusers' and peft's warnings (logged or raised) collected."""
    cap = _Capture()
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
