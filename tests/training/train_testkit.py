"""Helpers shared by the training tests (imported by name; not a test module; the fixtures are in
tests/training/conftest.py)."""

from __future__ import annotations

from pathlib import Path

TRIGGER = "lhstripes"


def demo_data(folder: Path, count: int = 8) -> Path:
    from lorahub.training.demo_data import make_demo_dataset

    return make_demo_dataset(folder, count=count, size=64, trigger=TRIGGER)


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
