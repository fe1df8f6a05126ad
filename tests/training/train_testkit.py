"""Helpers shared by the training tests (imported by name; not a test module; the fixtures are in
tests/training/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TRIGGER = "lhstripes"


def demo_data(folder: Path, count: int = 8) -> Path:
    from lorahub.training.demo_data import make_demo_dataset

    return make_demo_dataset(folder, count=count, size=64, trigger=TRIGGER)


def training_run(root: Path, base: Path, config: Callable[[Path], Any]) -> Iterator[dict[str, Any]]:
    """One real training run for a module fixture (``yield from``): on one torch thread, ``LORAHUB_HOME`` in
    ``root``, the generated stripes dataset in ``root / "data"`` and ``config(data)`` (a TrainConfig on ``base``).
    Yields trainer, result, out (the package folder), data and base."""
    import torch

    from lorahub.training.trainer import Trainer

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAHUB_HOME", str(root / "home"))
        data = demo_data(root / "data")
        trainer = Trainer(config(data), log=quiet, progress=False)
        result = trainer.run()
        yield {"trainer": trainer, "result": result, "out": Path(result.out), "data": data, "base": base}
    torch.set_num_threads(before)


def read_tensors(path: Path) -> dict[str, bytes]:
    """name -> raw bytes of every tensor (bit-for-bit comparisons)."""
    from lorahub.adapters.header import read_header

    header = read_header(path)
    out = {}
    with open(path, "rb") as fh:
        for name, t in header.tensors.items():
            fh.seek(header.data_start + t.begin)
            out[name] = fh.read(t.end - t.begin)
    return out


def quiet(_msg: str) -> None:
    pass
