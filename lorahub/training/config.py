"""Training configuration: :class:`~lorahub.schemas.training.TrainConfig` to and from TOML.

Reading uses the standard library (``tomllib``, Python 3.11+, else ``tomli``);
writing is done here (flat tables of strings, numbers, booleans and lists of
strings are all a config needs), so no extra dependency is required.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lorahub.schemas.training import TrainConfig

from .._atomic import atomic_write_text
from ..errors import UsageError

CONFIG_NAME = "train_config.toml"

#: Settings that may change when a run is resumed; every other one must stay as the checkpoint has it.
RESUMABLE_OVERRIDES = frozenset(
    {"steps", "sample_every", "sample_prompts", "sample_steps", "checkpoint_every", "keep_checkpoints",
     "export", "format", "save_precision", "device", "data", "out", "base", "base_config"}
)


def small_gpu_settings() -> dict[str, Any]:
    """The settings lorahub picks for a small GPU (``lorahub train --small-gpu``), as config values.

    bf16 mixed precision where the GPU has it, else fp16; gradient checkpointing;
    cached latents (the VAE then leaves the GPU until the previews; frozen text
    encoders do too when the captions never change, see the trainer); 8-bit AdamW
    when bitsandbytes is installed. Options given explicitly win over these.
    """
    import importlib.util

    bf16 = False
    try:
        import torch

        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except ImportError:  # pragma: no cover - the ml extra is missing: training fails later with its own error
        pass
    return {
        "mixed_precision": "bf16" if bf16 else "fp16",
        "gradient_checkpointing": True,
        "cache_latents": True,
        "optimizer": "adamw8bit" if importlib.util.find_spec("bitsandbytes") is not None else "adamw",
    }


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(text)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings of a TOML file as a dict (a ``[train]`` table or top-level keys)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: cannot read the config file ({exc})") from None
    try:
        data = _toml_loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise UsageError(f"{p}: not valid TOML: {exc}") from None
    if isinstance(data.get("train"), dict):
        data = data["train"]
    return dict(data)


def make_config(values: Mapping[str, Any], *, source: str = "settings") -> TrainConfig:
    """Build a :class:`TrainConfig`, turning validation errors into one-line usage errors."""
    try:
        return TrainConfig(**dict(values))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ())) or "config"
            msg = err.get("msg", "invalid")
            problems.append(f"{loc}: {msg}" if err.get("type") != "extra_forbidden" else f"{loc}: unknown setting")
        raise UsageError(f"invalid training {source}: " + "; ".join(problems)) from None


def read_config(path: str | os.PathLike[str]) -> TrainConfig:
    return make_config(load_config_file(path), source=f"config {path}")


def _toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps_config(config: TrainConfig, *, header: str | None = None) -> str:
    """The config as TOML (keys in field order; ``None`` values are left out)."""
    lines = []
    if header:
        lines += [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("[train]")
    for key, value in config.model_dump().items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(config: TrainConfig, path: str | os.PathLike[str], *, header: str | None = None) -> Path:
    p = Path(path)
    atomic_write_text(p, dumps_config(config, header=header))
    return p


def merge_resume(saved: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """The saved config of a run with the settings a resume may change applied.

    Any other setting given with a different value is a usage error: the
    continued run would not be the run the checkpoint belongs to.
    """
    current = saved.model_dump()
    conflicts = []
    for key, value in overrides.items():
        if key not in current:
            raise UsageError(f"unknown setting '{key}'")
        if key in RESUMABLE_OVERRIDES:
            current[key] = value
            continue
        normal = make_config({**saved.model_dump(), key: value}).model_dump()[key]
        if normal != current[key]:
            conflicts.append(f"{key} ({value!r}; the checkpoint was trained with {current[key]!r})")
    if conflicts:
        raise UsageError(
            "cannot change these settings when resuming: " + ", ".join(conflicts),
            hint="start a new run in another --out folder, or drop these options",
        )
    return make_config(current)
