"""Draw a scene: anti-aliased shapes on a background, in numpy alone.

Each pixel's coverage is the share of its ``supersample**2`` point samples inside the exact geometry
(circle, polygons, the heart's implicit curve); the pixel mixes shape and background colour by it, so
edges are anti-aliased and the picture is byte-identical for the same
scene and size on any machine (float64 arithmetic, no font or drawing library involved).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import UsageError
from .scene import Scene
from .vocab import PALETTE, SCHEMES, TEXTURE_PERIOD, second_tone

#: Image sides :func:`render` accepts.
MIN_SIDE, MAX_SIDE = 16, 512

# The star: 5 points, apex up, inner radius 0.45 of the outer; scaled so its box is 1 wide.
_STAR_R = 0.5 / math.sin(math.radians(72))
_STAR_CY = -0.5 * _STAR_R * (1 + math.cos(math.radians(36))) + _STAR_R  # box centred vertically
_STAR = np.array(
    [
        (
            (_STAR_R if i % 2 == 0 else 0.45 * _STAR_R) * math.sin(math.pi * i / 5),
            _STAR_CY - (_STAR_R if i % 2 == 0 else 0.45 * _STAR_R) * math.cos(math.pi * i / 5),
        )
        for i in range(10)
    ]
)
_CROSS_ARM = 0.34
# The heart (x^2 + y^2 - 1)^3 <= x^2 y^3 spans x in [-1.139, 1.139], y in [-1, 1.2365] (y up).
_HEART_SCALE = 2 * 1.139
_HEART_YC = (1.2365 - 1.0) / 2


def _in_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over the points."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x0, y0 = poly[i]
        x1, y1 = poly[(i + 1) % n]
        crosses = (y0 > v) != (y1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < xs)
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points ``(u, v)`` of the shape's unit box (``[-0.5, 0.5]^2``, ``v`` down) lie inside it."""
    if shape == "circle":
        return u * u + v * v <= 0.25
    if shape == "square":
        return (np.abs(u) <= 0.5) & (np.abs(v) <= 0.5)
    if shape == "triangle":
        return (v <= 0.5) & (np.abs(u) <= (v + 0.5) / 2)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 0.5
    if shape == "cross":
        a = _CROSS_ARM / 2
        box = (np.abs(u) <= 0.5) & (np.abs(v) <= 0.5)
        return box & ((np.abs(u) <= a) | (np.abs(v) <= a))
    if shape == "star":
        return _in_polygon(u, v, _STAR)
    if shape == "heart":
        x = u * _HEART_SCALE
        y = -v * _HEART_SCALE + _HEART_YC
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    if shape == "crescent":
        return (u * u + v * v <= 0.25) & ((u - 0.2) ** 2 + v * v > 0.16)
    raise UsageError(f"unknown shape {shape!r}")


def background_colours(background: str) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom colours of a background (equal for a plain one)."""
    if background in SCHEMES:
        top, bottom = SCHEMES[background]
        return np.asarray(top, dtype=np.float64), np.asarray(bottom, dtype=np.float64)
    rgb = np.asarray(PALETTE[background], dtype=np.float64)
    return rgb, rgb


def render(scene: Scene, size: int = 64, *, supersample: int = 4) -> np.ndarray:
    """Draw ``scene`` as an ``(size, size, 3)`` uint8 sRGB array."""
    if not isinstance(size, int) or not MIN_SIDE <= size <= MAX_SIDE:
        raise UsageError(f"image size must be an integer from {MIN_SIDE} to {MAX_SIDE}")
    if not isinstance(supersample, int) or not 1 <= supersample <= 8:
        raise UsageError("supersample must be an integer from 1 to 8")
    k = supersample
    x, y = _grid(size * k)
    cx, cy, side = scene.box()
    inside = shape_mask(scene.shape, (x - cx) / side, (y - cy) / side)
    fg = np.asarray(PALETTE[scene.colour], dtype=np.float64)
    top, bottom = background_colours(scene.background)
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    bg = top[None, None, :] + (bottom - top)[None, None, :] * centres[:, None, None]  # (size, 1, 3)
    if scene.texture is not None:
        half = TEXTURE_PERIOD / 2
        if scene.texture == "striped":
            band = np.floor((x + y) / math.sqrt(2) / half).astype(np.int64) % 2 == 1
        else:  # checkered
            band = (np.floor(x / half).astype(np.int64) + np.floor(y / half).astype(np.int64)) % 2 == 1
        second = inside & band
        inside = inside & ~band
    a = _coverage(inside, size, k)[:, :, None]
    img = bg * (1 - a) + fg * a
    if scene.texture is not None:
        a2 = _coverage(second, size, k)[:, :, None]
        img += (second_tone(PALETTE[scene.colour], (top + bottom) / 2) - bg) * a2
    return np.rint(np.clip(img, 0, 255)).astype(np.uint8)


def _coverage(samples: np.ndarray, size: int, k: int) -> np.ndarray:
    """Fraction of each pixel's ``k * k`` samples that are True."""
    return samples.reshape(size, k, size, k).sum(axis=(1, 3)) / (k * k)


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample points ``x, y`` (image fractions) of an ``n x n`` grid, read-only."""
    coords = (np.arange(n, dtype=np.float64) + 0.5) / n
    y, x = np.meshgrid(coords, coords, indexing="ij")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y
