"""Fixtures of the training tests' folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _torch_on_one_thread(one_thread: None) -> None:
    """The tiny model trains fastest on one thread; two OpenMP threads on a busy 2-core CI box crawl."""
