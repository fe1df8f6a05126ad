"""The world's vocabulary: shapes, colours, sizes, positions, backgrounds and the new concepts.

Every word here is a caption word. The pretraining vocabulary (:data:`SHAPES`, :data:`COLOURS`,
:data:`SIZES`, :data:`POSITIONS`, :data:`BACKGROUNDS`) is what the base model sees; the
:data:`CONCEPTS` (a new shape, a texture, a colour scheme) never appear in a pretraining caption,
so a LoRA can teach them later with their trigger word.

Geometry is in image fractions: ``(0, 0)`` is the top-left corner, ``(1, 1)`` the bottom-right one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Shapes of the pretraining world, each drawn upright and filling a square box of the scene's size
#: (the star's box is 0.95 of it high).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")

#: Named colours as sRGB. Foreground colours are any of them; backgrounds are :data:`BACKGROUNDS`.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}

#: Foreground colours (every palette colour except gray).
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "white", "black")

#: Plain backgrounds. A scene's shape colour always differs from its background.
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray", "blue", "green", "yellow")

#: Size word -> side of the shape's box as a fraction of the image side (before the scene's jitter).
SIZES: dict[str, float] = {"small": 0.2, "large": 0.4}

#: Position word -> anchor of the shape's box centre ``(x, y)``.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.28, 0.5),
    "right": (0.72, 0.5),
    "top": (0.5, 0.28),
    "bottom": (0.5, 0.72),
    "center": (0.5, 0.5),
}

#: How the position reads in a caption.
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}

#: Largest random offset of the box centre from its anchor, and the range of the size factor.
JITTER = 0.025
SCALE_RANGE = (0.9, 1.1)

#: Textures (new concepts): the shape is filled with two tones of its colour.
TEXTURES: tuple[str, ...] = ("striped", "checkered")

#: Colour schemes (new concepts): replace the plain background.
SCHEMES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    # a vertical gradient, top colour -> bottom colour
    "sunset": ((250, 150, 60), (110, 40, 130)),
}

#: Colours a scheme's background makes too hard to see; a scene never puts them on it.
SCHEME_CLASHES: dict[str, tuple[str, ...]] = {"sunset": ("orange", "purple")}

#: Least RGB distance of a texture's second tone from both the shape's colour and the background
#: (a white or black shape on gray has none good enough, so it is never textured).
TEXTURE_MIN_CONTRAST = 80.0


def second_tone(colour: tuple[int, int, int], background: tuple[float, float, float]) -> np.ndarray:
    """The other tone of a textured shape: its colour mixed 60% towards black or 60% towards white,
    whichever stands further from both the colour and the background."""
    fg = np.asarray(colour, dtype=np.float64)
    bg = np.asarray(background, dtype=np.float64)
    return max((fg * 0.4, fg + (255 - fg) * 0.6), key=lambda c: _contrast(c, fg, bg))


def tone_contrast(colour: tuple[int, int, int], background: tuple[float, float, float]) -> float:
    """How far :func:`second_tone` stands from the colour and the background (the nearer of the two)."""
    fg = np.asarray(colour, dtype=np.float64)
    bg = np.asarray(background, dtype=np.float64)
    return _contrast(second_tone(colour, background), fg, bg)


def _contrast(c: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> float:
    return float(min(np.linalg.norm(c - fg), np.linalg.norm(c - bg)))


#: Period of the textures, as a fraction of the image side (stripes: one dark + one light band).
TEXTURE_PERIOD = 0.125


@dataclass(frozen=True)
class Concept:
    """Something the pretraining split never shows, taught later by a LoRA with its trigger word."""

    name: str
    kind: str  # "shape", "texture" or "scheme"
    trigger: str  # the caption word that names it; absent from every pretraining caption
    description: str


CONCEPTS: dict[str, Concept] = {
    c.name: c
    for c in (
        Concept("heart", "shape", "heart", "a heart shape, point down"),
        Concept("crescent", "shape", "crescent", "a crescent moon, open to the right"),
        Concept("striped", "texture", "striped", "diagonal stripes of the shape's colour and a second tone"),
        Concept(
            "checkered", "texture", "checkered", "a checkerboard of the shape's colour and a second tone"
        ),
        Concept(
            "sunset",
            "scheme",
            "sunset",
            "an orange-to-purple vertical gradient instead of a plain background",
        ),
    )
}

#: Shapes of the new concepts.
NEW_SHAPES: tuple[str, ...] = tuple(c.name for c in CONCEPTS.values() if c.kind == "shape")


def concepts_in(shape: str | None, texture: str | None, background: str | None) -> tuple[str, ...]:
    """The new concepts (:data:`CONCEPTS`) a scene with these words shows: a new shape, a texture, a scheme."""
    return tuple(c for c, new in ((shape, shape in NEW_SHAPES), (texture, texture is not None),
                                  (background, background in SCHEMES)) if new)

#: Combinations held out of pretraining: the ``heldout`` split is made of them, ``train`` never shows them.
#: Each shape, colour and position still appears in training, in other combinations.
HELDOUT_SHAPE_COLOUR: frozenset[tuple[str, str]] = frozenset(
    {
        ("circle", "green"),
        ("square", "purple"),
        ("triangle", "blue"),
        ("star", "orange"),
        ("diamond", "red"),
        ("cross", "yellow"),
    }
)
HELDOUT_SHAPE_POSITION: frozenset[tuple[str, str]] = frozenset(
    {
        ("circle", "top"),
        ("square", "right"),
        ("triangle", "left"),
        ("star", "bottom"),
    }
)
