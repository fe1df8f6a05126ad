"""``one_thread``: an autouse fixture that runs each test of a module that imports it on one torch thread
(``from threadkit import one_thread  # noqa: F401``; not a test module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny models run fastest on one thread; two OpenMP threads on a busy 2-core CI box crawl."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
