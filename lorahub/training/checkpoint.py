"""Resumable training checkpoints, written atomically and without pickle.

A checkpoint is a folder ``<out>/checkpoints/step-000120/`` holding

- ``adapter.safetensors``: every trainable (LoRA) parameter by name, float32;
- ``optimizer.safetensors``: the optimizer's per-parameter tensors (AdamW moments, step counts);
- ``rng.safetensors``: the torch CPU and CUDA generator states;
- ``state.json``: the step, the optimizer's hyper-parameters, the learning-rate scheduler state,
  Python and numpy RNG states, the loss history and the parameter names.

It is written into a temporary sibling folder, flushed, and renamed into place, so
a checkpoint folder either is complete or does not exist: an interrupted run
(Ctrl-C, a crash, a full disk) always leaves the previous checkpoint usable.
Nothing here unpickles: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TrainingError

CHECKPOINTS_DIR = "checkpoints"
FORMAT = 1
_NAME = re.compile(r"^step-(\d{6,})$")


@dataclass
class Checkpoint:
    path: Path
    step: int


def checkpoint_dir(out: str | os.PathLike[str]) -> Path:
    return Path(out) / CHECKPOINTS_DIR


def list_checkpoints(out: str | os.PathLike[str]) -> list[Checkpoint]:
    """Complete checkpoints under ``out``, oldest first."""
    root = checkpoint_dir(out)
    found = []
    if root.is_dir():
        for entry in root.iterdir():
            m = _NAME.match(entry.name)
            if m and entry.is_dir() and (entry / "state.json").is_file():
                found.append(Checkpoint(entry, int(m.group(1))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(out: str | os.PathLike[str]) -> Checkpoint | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_safe(value: Any) -> Any:
    """Tuples to lists, recursively; refuse what JSON cannot hold."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TrainingError(f"cannot store a {type(value).__name__} in a checkpoint")


def save_checkpoint(
    out: str | os.PathLike[str],
    step: int,
    *,
    params: dict[str, Any],
    optimizer: Any,
    scheduler: Any,
    extra: dict[str, Any],
    keep: int = 2,
) -> Checkpoint:
    """Write the checkpoint of ``step`` atomically; keep only the newest ``keep`` checkpoints."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    root = checkpoint_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in params.items()},
                  str(tmp / "adapter.safetensors"))

        opt_state = optimizer.state_dict()
        tensors: dict[str, Any] = {}
        scalars: dict[str, dict[str, Any]] = {}
        for idx, entry in opt_state["state"].items():
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        save_file(tensors or {"_empty": torch.zeros(0)}, str(tmp / "optimizer.safetensors"))

        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = state
        save_file(rng, str(tmp / "rng.safetensors"))

        np_state = np.random.get_state()
        state = {
            "format": FORMAT,
            "step": step,
            "param_names": list(params),
            "optimizer": {"param_groups": _json_safe(opt_state["param_groups"]), "scalars": _json_safe(scalars)},
            "scheduler": _json_safe(scheduler.state_dict()),
            "python_random": _json_safe(random.getstate()),
            "numpy_random": [np_state[0], np_state[1].tolist(), *[_json_safe(x) for x in np_state[2:]]],
            **_json_safe(extra),
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        if final.exists():  # a checkpoint of the same step from an earlier attempt: replace it
            trash = root / f".{final.name}.old"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old.path, ignore_errors=True)
    return Checkpoint(final, step)


def load_checkpoint(
    ckpt: Checkpoint,
    *,
    params: dict[str, Any],
    optimizer: Any,
    scheduler: Any,
) -> dict[str, Any]:
    """Restore parameters, optimizer, scheduler and RNG states; return ``state.json``."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    try:
        state = json.loads((ckpt.path / "state.json").read_text(encoding="utf-8"))
        weights = load_file(str(ckpt.path / "adapter.safetensors"))
        opt_tensors = load_file(str(ckpt.path / "optimizer.safetensors"))
        rng = load_file(str(ckpt.path / "rng.safetensors"))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{ckpt.path}: unreadable checkpoint ({exc})") from None
    if state.get("format") != FORMAT:
        raise TrainingError(f"{ckpt.path}: checkpoint format {state.get('format')} is not supported")
    names = list(params)
    if state.get("param_names") != names or set(weights) != set(names):
        raise TrainingError(
            f"{ckpt.path}: the checkpoint's LoRA parameters do not match this run's",
            hint="resume with the same rank, target modules and text-encoder setting",
        )
    with torch.no_grad():
        for name, p in params.items():
            src = weights[name]
            if tuple(src.shape) != tuple(p.shape):
                raise TrainingError(f"{ckpt.path}: parameter {name} has shape {tuple(src.shape)}, expected {tuple(p.shape)}")
            p.copy_(src.to(device=p.device, dtype=p.dtype))

    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in opt_tensors.items():
        if key == "_empty":
            continue
        idx, _, name = key.partition(".")
        opt_state.setdefault(int(idx), {})[name] = value
    for idx, entry in state["optimizer"]["scalars"].items():
        opt_state.setdefault(int(idx), {}).update(entry)
    groups = state["optimizer"]["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    scheduler.load_state_dict(state["scheduler"])

    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
        if cuda and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    py = state["python_random"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = state["numpy_random"]
    np.random.set_state((npr[0], np.array(npr[1], dtype=np.uint32), *npr[2:]))
    return state
