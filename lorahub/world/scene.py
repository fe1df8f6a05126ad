"""A scene of the world, its caption, and the caption parser.

A :class:`Scene` is one shape on a background. Its caption reads
``"a small red circle on the left, blue background"``; with a texture
``"a large striped red circle in the center, white background"``; with the colour scheme
``"..., sunset background"``. :func:`parse_caption` reads such a caption back into a scene
(with no jitter), so any caption of the world can be rendered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import CaptionError
from .vocab import (
    BACKGROUNDS,
    COLOURS,
    JITTER,
    NEW_SHAPES,
    PALETTE,
    POSITION_PHRASES,
    POSITIONS,
    SCALE_RANGE,
    SCHEME_CLASHES,
    SCHEMES,
    SHAPES,
    SIZES,
    TEXTURE_MIN_CONTRAST,
    TEXTURES,
    concepts_in,
    tone_contrast,
)

#: Longest caption :func:`parse_caption` reads (a caption of the world is under 80 characters).
MAX_CAPTION_CHARS = 200

_PHRASE_TO_POSITION = {v: k for k, v in POSITION_PHRASES.items()}


@dataclass(frozen=True)
class Scene:
    """One shape on a background; ``dx``/``dy`` (image fractions) and ``scale`` are the scene's jitter."""

    shape: str
    colour: str
    size: str
    position: str
    background: str
    texture: str | None = None
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check(self.shape in SHAPES or self.shape in NEW_SHAPES, f"unknown shape {self.shape!r}")
        _check(self.colour in COLOURS, f"unknown colour {self.colour!r}")
        _check(self.size in SIZES, f"unknown size {self.size!r}")
        _check(self.position in POSITIONS, f"unknown position {self.position!r}")
        _check(
            self.background in BACKGROUNDS or self.background in SCHEMES,
            f"unknown background {self.background!r}",
        )
        _check(self.texture is None or self.texture in TEXTURES, f"unknown texture {self.texture!r}")
        _check(
            self.colour != self.background,
            f"a {self.colour} shape on a {self.background} background is invisible",
        )
        _check(
            self.colour not in SCHEME_CLASHES.get(self.background, ()),
            f"a {self.colour} shape on a {self.background} background is too hard to see",
        )
        if self.texture is not None:
            _check(
                tone_contrast(PALETTE[self.colour], _mean_background(self.background))
                >= TEXTURE_MIN_CONTRAST,
                f"a {self.texture} {self.colour} shape on a {self.background} background has too little contrast",
            )
        _check(abs(self.dx) <= JITTER and abs(self.dy) <= JITTER, "offset beyond the world's jitter")
        _check(SCALE_RANGE[0] <= self.scale <= SCALE_RANGE[1], "scale beyond the world's jitter")

    @property
    def caption(self) -> str:
        return caption(self)

    @property
    def concepts(self) -> tuple[str, ...]:
        """The new concepts this scene shows (empty for a pretraining scene)."""
        return concepts_in(self.shape, self.texture, self.background)

    def box(self) -> tuple[float, float, float]:
        """Centre ``(x, y)`` and side of the shape's box, in image fractions."""
        ax, ay = POSITIONS[self.position]
        return ax + self.dx, ay + self.dy, SIZES[self.size] * self.scale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_background(background: str) -> tuple[float, float, float]:
    if background in SCHEMES:
        top, bottom = SCHEMES[background]
        return tuple((t + b) / 2 for t, b in zip(top, bottom, strict=True))  # type: ignore[return-value]
    return PALETTE[background]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise CaptionError(message)


def caption(scene: Scene) -> str:
    """The caption of a scene, e.g. ``"a small red circle on the left, blue background"``."""
    words = ["a", scene.size]
    if scene.texture:
        words.append(scene.texture)
    words += [scene.colour, scene.shape, POSITION_PHRASES[scene.position]]
    return " ".join(words) + f", {scene.background} background"


def parse_caption(text: str) -> Scene:
    """Read a caption of the world back into a :class:`Scene` (no jitter).

    Accepts the grammar :func:`caption` writes, case and surrounding spaces aside; anything else
    raises :class:`~lorahub.errors.CaptionError` with one readable line.
    """
    if not isinstance(text, str):
        raise CaptionError("a caption must be text")
    if len(text) > MAX_CAPTION_CHARS:
        raise CaptionError(f"caption longer than {MAX_CAPTION_CHARS} characters")
    norm = " ".join(text.lower().split())
    subject, sep, tail = norm.partition(",")
    if not sep:
        raise CaptionError(f"not a caption of the world (no ', <colour> background'): {text[:80]!r}")
    tail_words = tail.split()
    if len(tail_words) != 2 or tail_words[1] != "background":
        raise CaptionError(f"expected '<colour> background' after the comma: {tail.strip()[:80]!r}")
    background = tail_words[0]
    position = None
    for phrase, name in _PHRASE_TO_POSITION.items():
        if subject.endswith(" " + phrase):
            position = name
            subject = subject[: -len(phrase) - 1]
            break
    if position is None:
        raise CaptionError(f"no position ({', '.join(POSITION_PHRASES.values())}) in {text[:80]!r}")
    words = subject.split()
    if words[:1] in (["a"], ["an"]):
        words = words[1:]
    texture = None
    if len(words) == 4 and words[1] in TEXTURES:
        texture = words.pop(1)
    if len(words) != 3:
        raise CaptionError(f"expected 'a <size> [texture] <colour> <shape>': {subject[:80]!r}")
    size, colour, shape = words
    return Scene(
        shape=shape, colour=colour, size=size, position=position, background=background, texture=texture
    )
