"""A procedural captioned image world, and a judge that reads images of it back.

Numpy only (Pillow just for :func:`to_pil`); importable without torch.

>>> from lorahub import world
>>> image, caption, scene = world.sample(seed=0, n=1)[0]
>>> world.judge(image).shape == scene.shape
True

See docs/world.md for the vocabulary, the splits and the judge's measured accuracy.
"""

from __future__ import annotations

import numpy as np

from .judge import Judgement, judge
from .render import render
from .sample import SPLITS, Sample, in_split, is_heldout, sample, scenes
from .scene import Scene, caption, parse_caption
from .vocab import (
    BACKGROUNDS,
    COLOURS,
    CONCEPTS,
    HELDOUT_SHAPE_COLOUR,
    HELDOUT_SHAPE_POSITION,
    NEW_SHAPES,
    PALETTE,
    POSITIONS,
    SCHEMES,
    SHAPES,
    SIZES,
    TEXTURES,
    Concept,
)


def to_pil(image: np.ndarray):  # noqa: ANN201 - a PIL.Image.Image
    """The image as a ``PIL.Image`` (needs Pillow, from the ``ml`` extra)."""
    from ..errors import require

    return require("PIL.Image", "ml").fromarray(np.ascontiguousarray(image, dtype=np.uint8))


__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "CONCEPTS",
    "HELDOUT_SHAPE_COLOUR",
    "HELDOUT_SHAPE_POSITION",
    "NEW_SHAPES",
    "PALETTE",
    "POSITIONS",
    "SCHEMES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "TEXTURES",
    "Concept",
    "Judgement",
    "Sample",
    "Scene",
    "caption",
    "in_split",
    "is_heldout",
    "judge",
    "parse_caption",
    "render",
    "sample",
    "scenes",
    "to_pil",
]
