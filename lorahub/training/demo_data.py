"""A small procedurally generated training set: the same distinctive pattern, varied.

:func:`make_demo_dataset` writes ``count`` images (default 8, 64x64 PNG) of
orange and teal diagonal stripes around a magenta disc, each with a different
stripe phase, disc position and size, into a kohya-style folder
``<dir>/<repeats>_<trigger>/`` with a same-name ``.txt`` caption per image that
starts with the trigger word. It needs numpy and Pillow, not torch, and is
deterministic for a given seed (byte-identical files).

The demo (``lorahub demo``), the tests and the benchmarks train on it: the
pattern is far from what a random base model draws, so a few steps of training
show up in the loss and in pixel distances.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_TRIGGER = "lhstripes"
#: The two stripe colours and the disc colour (RGB).
STRIPE_A = (255, 140, 0)
STRIPE_B = (0, 150, 160)
DISC = (220, 0, 200)

_TAGS = ["diagonal stripes", "orange and teal", "magenta disc", "flat colors", "pattern", "bold graphic"]


def demo_image(index: int, size: int = 64, seed: int = 0):  # noqa: ANN201 - numpy uint8 (size, size, 3)
    """The ``index``-th demo image as a uint8 array."""
    import numpy as np

    rng = np.random.default_rng(seed * 1009 + index)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    period = size / rng.uniform(3.0, 4.5)
    phase = rng.uniform(0, period)
    stripes = ((xx + yy + phase) // (period / 2)) % 2 == 0
    img = np.where(stripes[..., None], np.array(STRIPE_A, dtype=np.float64), np.array(STRIPE_B, dtype=np.float64))
    cx, cy = rng.uniform(0.3, 0.7, size=2) * size
    radius = rng.uniform(0.15, 0.25) * size
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    img[disc] = DISC
    return img.astype(np.uint8)


def demo_caption(index: int, trigger: str = DEMO_TRIGGER, seed: int = 0) -> str:
    import numpy as np

    rng = np.random.default_rng(seed * 7919 + index)
    tags = list(rng.permutation(_TAGS)[: 3 + index % 3])
    return ", ".join([trigger, *tags])


def make_demo_dataset(
    folder: str | os.PathLike[str],
    *,
    count: int = 8,
    size: int = 64,
    trigger: str = DEMO_TRIGGER,
    repeats: int = 1,
    seed: int = 0,
) -> Path:
    """Write the demo dataset under ``folder`` and return ``folder``.

    Images go into ``<folder>/<repeats>_<trigger>/demo-NN.png`` with captions in
    ``demo-NN.txt``.
    """
    from PIL import Image

    from .._atomic import atomic_write_bytes, atomic_write_text

    root = Path(folder)
    sub = root / f"{repeats}_{trigger}"
    sub.mkdir(parents=True, exist_ok=True)
    import io

    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(demo_image(i, size, seed), "RGB").save(buf, format="PNG", optimize=False)
        atomic_write_bytes(sub / f"demo-{i:02d}.png", buf.getvalue())
        atomic_write_text(sub / f"demo-{i:02d}.txt", demo_caption(i, trigger, seed) + "\n")
    return root
