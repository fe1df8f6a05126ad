"""The world's splits and its sampler.

- ``train``: what the base model is pretrained on. Uniform over shapes, colours, sizes, positions and
  plain backgrounds, except any scene with a combination of :data:`~.vocab.HELDOUT_SHAPE_COLOUR` or
  :data:`~.vocab.HELDOUT_SHAPE_POSITION`, and never a new concept.
- ``heldout``: every scene has at least one held-out combination (drawn uniformly among them), the rest
  as in ``train``: it measures composition, words seen apart but never together.
- ``concept``: scenes showing one new concept (``concept=`` a name of :data:`~.vocab.CONCEPTS`) on an
  otherwise ``train`` scene (a new shape replaces the shape): what a LoRA is taught with its trigger word.

Scenes are drawn from SHA-256 of ``(split, concept, seed, index)``, not from a library RNG, so the same
seed gives the same scenes (and byte-identical images) on any numpy version.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

import numpy as np

from ..errors import UsageError
from .render import render
from .scene import Scene
from .vocab import (
    BACKGROUNDS,
    COLOURS,
    CONCEPTS,
    HELDOUT_SHAPE_COLOUR,
    HELDOUT_SHAPE_POSITION,
    JITTER,
    PALETTE,
    POSITIONS,
    SCALE_RANGE,
    SCHEME_CLASHES,
    SHAPES,
    SIZES,
    TEXTURE_MIN_CONTRAST,
    tone_contrast,
)

SPLITS = ("train", "heldout", "concept")

#: Most scenes one call of :func:`sample` or :func:`scenes` makes.
MAX_SAMPLES = 100_000

_HELDOUT = sorted(("colour", s, c) for s, c in HELDOUT_SHAPE_COLOUR) + sorted(
    ("position", s, p) for s, p in HELDOUT_SHAPE_POSITION
)


class Sample(NamedTuple):
    image: np.ndarray  # (size, size, 3) uint8 sRGB
    caption: str
    scene: Scene


class _Draw:
    """A stream of uniform numbers from SHA-256 of a key."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self._block = 0
        self._buf = b""

    def _u64(self) -> int:
        if len(self._buf) < 8:
            self._buf += hashlib.sha256(self._key + b"/" + str(self._block).encode()).digest()
            self._block += 1
        (value,), self._buf = struct.unpack(">Q", self._buf[:8]), self._buf[8:]
        return value

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * ((self._u64() >> 11) / float(1 << 53))

    def choice(self, options):  # noqa: ANN001, ANN201
        options = list(options)
        return options[self._u64() % len(options)]


def is_heldout(scene: Scene) -> bool:
    """Whether the scene shows a combination held out of pretraining."""
    return (scene.shape, scene.colour) in HELDOUT_SHAPE_COLOUR or (
        scene.shape,
        scene.position,
    ) in HELDOUT_SHAPE_POSITION


def in_split(scene: Scene, split: str) -> bool:
    """Whether ``scene`` belongs to ``split`` (``concept`` means: shows some new concept)."""
    if split == "train":
        return not scene.concepts and not is_heldout(scene)
    if split == "heldout":
        return not scene.concepts and is_heldout(scene)
    if split == "concept":
        return bool(scene.concepts)
    raise UsageError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")


def _draw_scene(d: _Draw, split: str, concept: str | None) -> Scene | None:
    shape = d.choice(SHAPES)
    colour = d.choice(COLOURS)
    position = d.choice(POSITIONS)
    if split == "heldout":
        kind, shape, value = d.choice(_HELDOUT)
        if kind == "colour":
            colour = value
        else:
            position = value
    fields = {
        "shape": shape,
        "colour": colour,
        "size": d.choice(SIZES),
        "position": position,
        "background": d.choice(BACKGROUNDS),
        "dx": d.uniform(-JITTER, JITTER),
        "dy": d.uniform(-JITTER, JITTER),
        "scale": d.uniform(*SCALE_RANGE),
    }
    if fields["colour"] == fields["background"]:
        return None
    if split != "heldout" and is_heldout(Scene(**fields)):
        return None
    if concept is not None:
        c = CONCEPTS[concept]
        if c.kind == "shape":
            fields["shape"] = c.name
        elif c.kind == "texture":
            if tone_contrast(PALETTE[fields["colour"]], PALETTE[fields["background"]]) < TEXTURE_MIN_CONTRAST:
                return None
            fields["texture"] = c.name
        else:
            if fields["colour"] in SCHEME_CLASHES.get(c.name, ()):
                return None
            fields["background"] = c.name
    return Scene(**fields)


def scenes(seed: int, n: int, split: str = "train", *, concept: str | None = None) -> list[Scene]:
    """``n`` scenes of ``split``, the same ones for the same arguments."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    if (split == "concept") != (concept is not None):
        raise UsageError("a concept is named with split='concept', and only then")
    if concept is not None and concept not in CONCEPTS:
        raise UsageError(f"unknown concept {concept!r} (one of {', '.join(CONCEPTS)})")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UsageError("seed must be a non-negative integer")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_SAMPLES:
        raise UsageError(f"n must be an integer from 0 to {MAX_SAMPLES}")
    out: list[Scene] = []
    index = 0
    while len(out) < n:
        scene = _draw_scene(_Draw(f"lorahub-world/1/{split}/{concept or ''}/{seed}/{index}"), split, concept)
        index += 1
        if scene is not None:
            out.append(scene)
    return out


def sample(
    seed: int, n: int, split: str = "train", *, size: int = 64, concept: str | None = None
) -> list[Sample]:
    """``n`` rendered samples ``(image, caption, scene)`` of ``split``; same arguments, same bytes."""
    return [Sample(render(s, size), s.caption, s) for s in scenes(seed, n, split, concept=concept)]
