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
from typing import Any

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
    root = Path(folder)
    _write_pairs(root / f"{repeats}_{trigger}", "demo",
                 ((demo_image(i, size, seed), demo_caption(i, trigger, seed)) for i in range(count)))
    return root


def _write_pairs(sub: Path, stem: str, pairs: Any) -> None:
    """``sub/<stem>-NN.png`` and its ``.txt`` caption for each (uint8 image, caption) of ``pairs``, atomically."""
    import io

    from PIL import Image

    from .._atomic import atomic_write_bytes, atomic_write_text

    sub.mkdir(parents=True, exist_ok=True)
    for i, (image, caption) in enumerate(pairs):
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format="PNG", optimize=False)
        atomic_write_bytes(sub / f"{stem}-{i:02d}.png", buf.getvalue())
        atomic_write_text(sub / f"{stem}-{i:02d}.txt", caption + "\n")


def make_concept_dataset(
    folder: str | os.PathLike[str],
    concept: str = "heart",
    *,
    count: int = 12,
    size: int = 64,
    repeats: int = 1,
    seed: int = 0,
) -> Path:
    """Write ``count`` images of a concept the drawing base never saw (:data:`lorahub.world.CONCEPTS`: ``heart``,
    ``crescent``, ``striped``, ``checkered``, ``sunset``) under ``folder`` and return ``folder``.

    Images go into ``<folder>/<repeats>_<trigger>/concept-NN.png`` with their world caption (which holds the
    trigger word, e.g. "a small red heart on the left, blue background") in ``concept-NN.txt``; the scenes are
    ``world.scenes(seed, count, "concept", concept=concept)``.
    """
    from .. import world
    from ..errors import UsageError

    if concept not in world.CONCEPTS:
        raise UsageError(f"unknown concept {concept!r}; the world's new concepts are {', '.join(world.CONCEPTS)}")
    root = Path(folder)
    samples = world.sample(seed, count, "concept", size=size, concept=concept)
    _write_pairs(root / f"{repeats}_{world.CONCEPTS[concept].trigger}", "concept",
                 ((image, caption) for image, caption, _scene in samples))
    return root
