"""Small helpers the benchmark scripts share (``from benchkit import ...``: Python puts a script's
own folder first on ``sys.path``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def lorahub_cmd() -> list[str]:
    """How to run this environment's ``lorahub`` (the venv's script, else PATH, else ``-m``)."""
    script = Path(sys.executable).with_name("lorahub")
    if script.exists():
        return [str(script)]
    found = shutil.which("lorahub")
    return [found] if found else [sys.executable, "-m", "lorahub.cli"]


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no getloadavg on this platform
        return 0.0


def load_note(busy_above: float | None = None) -> str:
    """``load average 1.23 on 2 CPUs``, flagged when other work competes for the CPUs (above
    ``busy_above``; default half the CPUs): rerun such figures on an idle machine."""
    load, cpus = load_average(), os.cpu_count() or 1
    limit = 0.5 * cpus if busy_above is None else busy_above
    busy = "  (BUSY: other processes compete for the CPUs; rerun when idle)" if load > limit else ""
    return f"load average {load:.2f} on {cpus} CPUs{busy}"


def save_pipeline(pipe: Any, folder: str | os.PathLike[str], dtype: str) -> Path:
    """Save ``pipe`` in ``dtype`` as a diffusers folder (safetensors) that ``--base`` accepts, then free it."""
    import torch

    pipe.to(dtype=getattr(torch, dtype))
    out = Path(folder)
    pipe.save_pretrained(out, safe_serialization=True)
    del pipe
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def unet_lora_shapes(unet_config: dict[str, Any], target_modules: list[str],
                     rank: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """module path -> (lora_A shape, lora_B shape) for the UNet of ``unet_config``, built without allocating
    its weights."""
    import diffusers
    from accelerate import init_empty_weights
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    with init_empty_weights():
        unet = diffusers.UNet2DConditionModel(**unet_config)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=target_modules, init_lora_weights="gaussian"))
    out: dict[str, list[Any]] = {}
    for key, t in get_peft_model_state_dict(unet).items():
        module, _, rest = key.rpartition(".lora_")
        pair = out.setdefault(module, [None, None])
        pair[0 if rest.startswith("A") else 1] = tuple(t.shape)
    return {k: (v[0], v[1]) for k, v in out.items()}


# The GPU training benchmarks (bench_train_gpu.py, bench_train_sdxl_gpu.py): the same run around different
# memory measures.

def gpu_run_start(smoke: bool, prefix: str) -> tuple[str, str, Path] | None:
    """(device, the card's name, a fresh work folder) of a GPU training run, ``LORAHUB_HOME`` inside the folder,
    the Hub offline and diffusers and transformers quiet; ``--smoke`` runs on the CPU with one thread. None
    (after saying why) when there is no CUDA GPU and this is no smoke run."""
    import torch

    if not smoke and not torch.cuda.is_available():
        print("no CUDA GPU here: run it on a GPU machine, or use --smoke to check the script on the CPU")
        return None
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    device = "cpu" if smoke else "cuda"
    if smoke:
        torch.set_num_threads(1)  # the tiny model gains nothing from threads; busy 2-core boxes crawl with 2
    card = "CPU (smoke)" if smoke else torch.cuda.get_device_name(0)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["LORAHUB_HOME"] = str(work / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return device, card, work


def train_random_base(work: Path, base: Path, *, device: str, resolution: int, on_step: Callable[[int, float], None],
                      phases: dict[str, float], **config: Any) -> Any:
    """Train on ``base`` with lorahub's trainer (what ``lorahub train`` runs) on 8 generated ``resolution`` images:
    the GPU's peak-memory counter reset first, ``on_step`` called after each step, ``config`` (rank, steps,
    batch size, precision...) on top of lr 1e-4, a 20-step preview and seed 0. The trainer's result; the wall
    time goes to ``phases["train_run_total"]``."""
    import torch

    from lorahub.schemas.training import TrainConfig
    from lorahub.training.demo_data import make_demo_dataset
    from lorahub.training.trainer import Trainer

    data = make_demo_dataset(work / "data", count=8, size=resolution, trigger="lhstripes")
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(data=str(data), out=str(work / "out"), base=str(base), trigger="lhstripes", lr=1e-4,
                      resolution=resolution, device=device, sample_steps=20, seed=0, **config)
    t = time.perf_counter()
    trainer = Trainer(cfg, log=lambda m: print(f"  [{time.perf_counter() - t:6.1f} s] {m}", flush=True),
                      progress=False, callback=on_step)
    result = trainer.run()
    phases["train_run_total"] = time.perf_counter() - t
    return result


def steps_per_second(marks: dict[int, float], steps: int) -> float | None:
    """Steps per second from the times ``marks`` (step -> perf_counter) after a warm-up tenth of ``steps``;
    None when too few steps ran."""
    warm = max(1, steps // 10)
    if len(marks) <= warm + 1:
        return None
    last = max(marks)
    return (last - warm) / (marks[last] - marks[warm])


def training_figures(result: Any, steps_per_s: float | None, phases: dict[str, float]) -> dict[str, Any]:
    """The figures every GPU training benchmark reports after its own memory figures."""
    return {
        "steps_per_s_after_warmup": steps_per_s,
        "steps_per_s_trainer": result.steps_per_second,
        "adapter_bytes": Path(result.weights).stat().st_size,
        "first_loss": result.first_loss,
        "last_loss": result.last_loss,
        "phases_s": phases,
    }


def report_training(figures: dict[str, Any], result: Any, name: str) -> None:
    """Print the speed, adapter and phase lines of :func:`training_figures` and write all of ``figures`` to
    ``benchmarks/out/<name>``."""
    steps_per_s = figures["steps_per_s_after_warmup"]
    if steps_per_s:
        print(f"- steps/s after warm-up: {steps_per_s:.2f} (trainer's own count: {result.steps_per_second:.2f})")
    print(f"- adapter file: {figures['adapter_bytes']:,} bytes; loss {result.first_loss:.4f} -> {result.last_loss:.4f}")
    print("- phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in figures["phases_s"].items()))
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / name).write_text(json.dumps(figures, indent=2) + "\n")


def start_writable_server(data: Path) -> tuple[Any, str, str]:
    """``lorahub serve`` on SQLite in ``data`` (a free loopback port, no web UI): its process, its endpoint and
    a write token of the user ``bench``."""
    from sqlmodel import Session

    from lorahub.cli.serving import start_serve
    from lorahub.registry.hub.auth import create_token
    from lorahub.registry.server.run import prepare

    _, _, registry = prepare(data, None)
    with Session(registry.engine, expire_on_commit=False) as s:
        token, _, _ = create_token(s, "bench", write=True, name="bench")
    registry.close()
    proc, url = start_serve(["--port", "0", "--data", str(data), "--no-ui", "--no-access-log"], log=data / "server.log",
                            timeout=60)
    return proc, url, token
