"""A judge that is not the model: read colour, shape, size, position, background and texture back
from an image of the world, by plain image analysis (numpy; nothing learned).

1. **Background**: the median colours of the top and bottom border rows and the straight line between
   them down the image (plain when they agree, a gradient scheme such as ``sunset`` when they do not),
   named by the nearest pair in CIELAB.
2. **Foreground**: each pixel's RGB distance from the background at its row; the largest 8-connected
   group of pixels clearly above the border's noise is the object, and its mask keeps the pixels more
   than half-way from the background to the object's colour (the 50% line of an anti-aliased edge).
3. **Colour and texture** from the pixels three in from the edge (clear of any blur of it): their
   median, named in CIELAB; or, when a 2-means splits them into two tones that are not just a blurred
   rim around a core, a texture (stripes agree with their neighbours along one diagonal far more than
   along the other; a checkerboard along both alike), coloured by the tone nearer a named colour.
4. **Shape**: the nearest prototype in a space of descriptors of the mask: fill, solidity, the hull's
   circularity, where the mass lies in the box, and the corner count.
5. **Position**: the anchor nearest the bounding box's centre; **size** from the box's longer side.

docs/world.md gives the details and the measured accuracy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from .vocab import BACKGROUNDS, COLOURS, PALETTE, POSITIONS, SCHEMES, SIZES, concepts_in

#: Image sides the judge reads.
MIN_SIDE, MAX_SIDE = 16, 1024


@dataclass(frozen=True)
class Judgement:
    """What the judge saw. ``shape``/``colour``/... are ``None`` when no object was found."""

    found: bool
    shape: str | None
    colour: str | None
    size: str | None
    position: str | None
    background: str
    texture: str | None
    # measurements behind the words
    features: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def concepts(self) -> tuple[str, ...]:
        """The new concepts (a heart, a texture, the sunset, ...) the judge saw, as :attr:`Scene.concepts` names
        a scene's."""
        return concepts_in(self.shape, self.texture, self.background)

    def agrees(self, scene: Any) -> dict[str, bool]:
        """Per attribute, whether the judgement matches a :class:`~lorahub.world.Scene`."""
        return {
            name: getattr(self, name) == getattr(scene, name)
            for name in ("shape", "colour", "size", "position", "background", "texture")
        }


# ----------------------------------------------------------------------------------------- colour


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


_PALETTE_LAB = {name: _srgb_to_lab(np.asarray(rgb, dtype=np.float64)) for name, rgb in PALETTE.items()}
_SCHEMES_LAB = {
    name: (_srgb_to_lab(np.asarray(t, dtype=np.float64)), _srgb_to_lab(np.asarray(b, dtype=np.float64)))
    for name, (t, b) in SCHEMES.items()
}


def name_colour(rgb: Any, names: tuple[str, ...] = COLOURS) -> tuple[str, float]:
    """The named colour nearest ``rgb`` in CIELAB, and its distance (Delta E 1976)."""
    lab = _srgb_to_lab(np.asarray(rgb, dtype=np.float64))
    dists = [float(np.linalg.norm(lab - _PALETTE_LAB[n])) for n in names]
    i = int(np.argmin(dists))
    return names[i], dists[i]


# ------------------------------------------------------------------------------------ mask tools


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected group of True pixels (runs of each row, joined by union-find)."""
    runs: list[tuple[int, int, int]] = []  # (row, first, last)
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    for y, x0, x1 in zip(starts[0].tolist(), starts[1].tolist(), (ends[1] - 1).tolist(), strict=True):
        runs.append((y, x0, x1))
    if not runs:
        return np.zeros_like(mask)
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    prev: list[int] = []  # run indices of the previous row
    cur: list[int] = []
    row = -1
    for i, (y, x0, x1) in enumerate(runs):
        if y != row:
            prev = cur if y == row + 1 else []
            cur, row = [], y
        for j in prev:
            _, p0, p1 = runs[j]
            if p0 <= x1 + 1 and x0 <= p1 + 1:
                parent[find(i)] = find(j)
        cur.append(i)
    sizes: dict[int, int] = {}
    for i, (_, x0, x1) in enumerate(runs):
        r = find(i)
        sizes[r] = sizes.get(r, 0) + x1 - x0 + 1
    best = max(sizes, key=lambda r: sizes[r])
    out = np.zeros_like(mask)
    for i, (y, x0, x1) in enumerate(runs):
        if find(i) == best:
            out[y, x0 : x1 + 1] = True
    return out


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4 neighbours are all in ``mask``."""
    p = np.pad(mask, 1)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (Andrew's monotone chain) of ``(x, y)`` points, counter-clockwise."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return np.array(pts, dtype=np.float64)

    def cross(o, a, b):  # noqa: ANN001, ANN202
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def _polygon_area_perimeter(poly: np.ndarray) -> tuple[float, float]:
    if len(poly) < 3:
        return 0.0, 0.0
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    perim = float(np.sum(np.hypot(np.roll(x, -1) - x, np.roll(y, -1) - y)))
    return area, perim


def _corner_count(mask: np.ndarray, cx: float, cy: float) -> int:
    """Peaks of the boundary's distance from the centroid over angle (36 bins of 10 degrees)."""
    boundary = mask & ~_erode(mask)
    ys, xs = np.nonzero(boundary)
    if len(xs) < 8:
        return 0
    ang = np.arctan2(ys - cy, xs - cx)
    dist = np.hypot(ys - cy, xs - cx)
    bins = ((ang + math.pi) / (2 * math.pi) * 36).astype(int) % 36
    prof = np.zeros(36)
    np.maximum.at(prof, bins, dist)
    for i in np.nonzero(prof == 0)[0]:  # empty bins: take the neighbours' mean
        prof[i] = (prof[(i - 1) % 36] + prof[(i + 1) % 36]) / 2
    prof = (np.roll(prof, 1) + 2 * prof + np.roll(prof, -1)) / 4
    rng = prof.max() - prof.min()
    if rng < 0.12 * prof.max():
        return 0  # round
    peaks = 0
    for i in range(36):
        if not (prof[i] > prof[(i - 1) % 36] and prof[i] >= prof[(i + 1) % 36]):
            continue
        # prominence: how far it stands above the deepest point on the way to a higher peak, on the
        # side where that point is highest (ties go to the lower bin index)
        key = (prof[i], -i)
        bases = []
        for step in (-1, 1):
            low = prof[i]
            for k in range(1, 36):
                j = (i + step * k) % 36
                if (prof[j], -j) > key:
                    break
                low = min(low, prof[j])
            bases.append(low)
        if prof[i] - max(bases) > 0.2 * rng:
            peaks += 1
    return peaks


# --------------------------------------------------------------------------------------- shapes

# Prototype descriptors of each shape: fill, solidity, hull circularity, vertical and horizontal mass
# offset (fractions of the box; the triangle's mass lies low, the heart's high, the crescent's left)
# and corner count. Ideal values, nudged to what the 50% mask of an anti-aliased 64 px drawing reads
# (pixel corners make convex shapes' solidity ~0.92). _SCALES: how far a value may stray per unit.
_FEATURES = ("fill", "solidity", "circularity", "mass_dy", "mass_dx", "corners")
_PROTOTYPES: dict[str, tuple[float, ...]] = {
    "circle": (0.79, 0.94, 0.97, 0.0, 0.0, 0.0),
    "square": (0.98, 0.99, 0.81, 0.0, 0.0, 4.0),
    "triangle": (0.56, 0.92, 0.71, 0.14, 0.0, 3.0),
    "diamond": (0.57, 0.91, 0.88, 0.0, 0.0, 4.0),
    "cross": (0.58, 0.76, 0.94, 0.0, 0.0, 4.0),
    "star": (0.50, 0.68, 0.89, 0.045, 0.0, 5.0),
    "heart": (0.74, 0.93, 0.92, -0.07, 0.0, 3.0),
    "crescent": (0.5, 0.6, 0.87, 0.0, -0.09, 2.0),
}
_SCALES = np.array([0.06, 0.05, 0.03, 0.03, 0.03, 0.3])


def classify_shape(features: dict[str, float]) -> str:
    """The nearest prototype to the shape descriptors (a corner count off by more than 2 counts as 2)."""
    v = np.array([features[k] for k in _FEATURES])
    best, best_d = "", math.inf
    for name, proto in _PROTOTYPES.items():
        z = (v - np.array(proto)) / _SCALES
        z[-1] = min(abs(z[-1]), 4.0)
        d = float(np.sum(z**2))
        if d < best_d:
            best, best_d = name, d
    return best


# --------------------------------------------------------------------------------------- judge


def _as_image(image: Any) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise UsageError(f"the judge reads (height, width, 3) RGB images, not shape {a.shape}")
    if not (MIN_SIDE <= a.shape[0] <= MAX_SIDE and MIN_SIDE <= a.shape[1] <= MAX_SIDE):
        raise UsageError(f"image sides must be from {MIN_SIDE} to {MAX_SIDE} pixels")
    if a.dtype == np.uint8:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.floating):  # floats in [0, 1]
        return np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * 255
    raise UsageError(f"the judge reads uint8 or float images, not {a.dtype}")


def judge(image: Any) -> Judgement:
    """Read one image of the world (uint8 ``(H, W, 3)``, floats in ``[0, 1]``, or a PIL image)."""
    img = _as_image(image)
    h, w, _ = img.shape
    b = max(1, min(h, w) // 32)
    top = np.median(img[:b].reshape(-1, 3), axis=0)
    bottom = np.median(img[-b:].reshape(-1, 3), axis=0)
    y0, y1 = b / 2, h - b / 2
    t = np.clip(((np.arange(h) + 0.5) - y0) / (y1 - y0), 0, 1)
    bg = top[None, :] + (bottom - top)[None, :] * t[:, None]  # (h, 3)
    features: dict[str, float] = {"gradient": float(np.linalg.norm(bottom - top))}
    background = _name_background(top, bottom)

    dist = np.linalg.norm(img - bg[:, None, :], axis=2)
    border = np.concatenate([dist[:b].ravel(), dist[-b:].ravel(), dist[:, :b].ravel(), dist[:, -b:].ravel()])
    noise = float(np.median(border)) + 1.4826 * float(np.median(np.abs(border - np.median(border))))
    cand = _largest_component(dist > max(24.0, 2 * noise))
    nothing = Judgement(False, None, None, None, None, background, None, features)
    if cand.sum() < 4:
        return nothing

    # a first 50% mask from the object's median colour; its inner pixels (3 in from the edge, clear of
    # any blur of the edge) carry the colour and the texture
    colour_rgb = np.median(img[cand], axis=0)
    mask = _largest_component(dist > 0.5 * np.linalg.norm(colour_rgb[None, :] - bg, axis=1)[:, None])
    depth = _depth(mask)
    inner = next((depth >= k for k in (3, 2, 1) if (depth >= k).sum() >= 16), depth >= 1)
    if not inner.any():
        return nothing
    pix = img[inner]
    colour_rgb = np.median(pix, axis=0)
    tones = _two_tones(pix, features)
    # a texture needs room: pixels two in from the edge at least (a thin blurred rim is no texture)
    roomy = (inner & (depth >= 2)).sum() >= 16
    texture = _texture(img, inner, depth, tones, features) if tones is not None and roomy else None
    if texture is not None:
        colour_rgb = min(tones, key=lambda rgb: name_colour(rgb)[1])
        near = min(tones, key=lambda c: float(np.linalg.norm(c - np.median(bg, axis=0))))
        mask = _largest_component(dist > 0.5 * np.linalg.norm(near[None, :] - bg, axis=1)[:, None])
    area = int(mask.sum())
    if area < 4:
        return nothing

    ys, xs = np.nonzero(mask)
    bx0, bx1, by0, by1 = xs.min(), xs.max(), ys.min(), ys.max()
    bw, bh = bx1 - bx0 + 1, by1 - by0 + 1
    cx, cy = float(xs.mean()), float(ys.mean())
    rows = np.unique(ys)
    left = np.array([xs[ys == r].min() for r in rows])
    right = np.array([xs[ys == r].max() for r in rows])
    ends = np.concatenate([np.stack([left - 0.5, rows], 1), np.stack([right + 0.5, rows], 1)])
    corners = np.concatenate([ends + [0, -0.5], ends + [0, 0.5]])
    hull_area, hull_perim = _polygon_area_perimeter(_hull(corners))
    features.update(
        area=area / (h * w),
        fill=area / (bw * bh),
        solidity=area / hull_area if hull_area else 0.0,
        circularity=4 * math.pi * hull_area / hull_perim**2 if hull_perim else 0.0,
        mass_dy=(cy - (by0 + by1) / 2) / bh,
        mass_dx=(cx - (bx0 + bx1) / 2) / bw,
        corners=float(_corner_count(mask, cx, cy)),
        extent=max(bw / w, bh / h),
        x=((bx0 + bx1) / 2 + 0.5) / w,  # the box centre: where the world puts a shape
        y=((by0 + by1) / 2 + 0.5) / h,
        centroid_x=(cx + 0.5) / w,
        centroid_y=(cy + 0.5) / h,
        r=float(colour_rgb[0]),
        g=float(colour_rgb[1]),
        b=float(colour_rgb[2]),
    )
    colour, _ = name_colour(colour_rgb)
    shape = classify_shape(features)
    sizes = sorted(SIZES.items(), key=lambda kv: kv[1])
    size = sizes[0][0] if features["extent"] < math.sqrt(sizes[0][1] * sizes[-1][1]) else sizes[-1][0]
    position = min(
        POSITIONS,
        key=lambda p: (POSITIONS[p][0] - features["x"]) ** 2 + (POSITIONS[p][1] - features["y"]) ** 2,
    )
    features = {k: float(v) for k, v in features.items()}
    return Judgement(True, shape, colour, size, position, background, texture, features)


def _name_background(top: np.ndarray, bottom: np.ndarray) -> str:
    """The plain background or scheme whose top and bottom colours are nearest (CIELAB)."""
    lab_t, lab_b = _srgb_to_lab(top), _srgb_to_lab(bottom)
    options = {name: (_PALETTE_LAB[name], _PALETTE_LAB[name]) for name in BACKGROUNDS} | _SCHEMES_LAB
    return min(
        options,
        key=lambda n: float(np.linalg.norm(lab_t - options[n][0]) + np.linalg.norm(lab_b - options[n][1])),
    )


def _depth(mask: np.ndarray) -> np.ndarray:
    """How many erosions each pixel of ``mask`` survives (1 on the edge, 0 outside)."""
    depth = np.zeros(mask.shape, dtype=np.int64)
    cur = mask
    while cur.any():
        depth += cur
        cur = _erode(cur)
    return depth


def _two_tones(pix: np.ndarray, stats: dict[str, float]) -> tuple[np.ndarray, np.ndarray] | None:
    """The two tones of the object's inner pixels (a 2-means), when they are well apart."""
    if len(pix) < 16:
        return None
    lum = pix @ np.array([0.299, 0.587, 0.114])
    c = [pix[int(np.argmin(lum))], pix[int(np.argmax(lum))]]
    for _ in range(10):
        lab = np.linalg.norm(pix - c[1], axis=1) < np.linalg.norm(pix - c[0], axis=1)
        if lab.all() or (~lab).all():
            return None
        c = [pix[~lab].mean(axis=0), pix[lab].mean(axis=0)]
    share = min(lab.mean(), 1 - lab.mean())
    stats.update(tone_separation=float(np.linalg.norm(c[0] - c[1])), tone_share=float(share))
    if np.linalg.norm(c[0] - c[1]) < 50 or share < 0.15:
        return None
    return np.median(pix[~lab], axis=0), np.median(pix[lab], axis=0)


def _texture(
    img: np.ndarray,
    inner: np.ndarray,
    depth: np.ndarray,
    tones: tuple[np.ndarray, np.ndarray],
    stats: dict[str, float],
) -> str | None:
    """``striped``, ``checkered`` or ``None`` (two tones that are just a blurred edge and its core)."""
    lab = np.linalg.norm(img - tones[1], axis=2) < np.linalg.norm(img - tones[0], axis=2)
    # a blurred plain shape splits into a core and a rim: its tones sit at different depths
    d_a, d_b = depth[inner & lab], depth[inner & ~lab]
    gap = abs(float(d_a.mean()) - float(d_b.mean())) / float(depth[inner].mean())
    agree = {}
    hh, ww = inner.shape
    for name, (dy, dx) in {"h": (0, 1), "v": (1, 0), "d1": (1, 1), "d2": (1, -1)}.items():
        # pairs of pixels p and p + (dy, dx), both inside
        p_sl = (slice(0, hh - dy), slice(max(0, -dx), ww - max(0, dx)))
        q_sl = (slice(dy, hh), slice(max(0, dx), ww - max(0, -dx)))
        both = inner[p_sl] & inner[q_sl]
        agree[name] = float((lab[p_sl] == lab[q_sl])[both].mean()) if both.any() else 1.0
    # stripes: pixels agree along the stripes and disagree across them; a checkerboard disagrees as
    # much along one diagonal as along the other (the world's stripes are diagonal; axis-aligned ones
    # show as one axis far below the other while the diagonals agree)
    diag = _ratio(agree["d1"], agree["d2"])
    axis = _ratio(agree["h"], agree["v"])
    stats.update(
        {f"agree_{k}": v for k, v in agree.items()}, depth_gap=gap, diagonal_ratio=diag, axis_ratio=axis
    )
    if gap > 0.35 or min(agree.values()) > 0.9:
        return None
    return "striped" if diag < 0.4 or (axis < 0.25 and diag > 0.7) else "checkered"


def _ratio(a: float, b: float) -> float:
    """Disagreement along the better-agreeing direction over that along the other (1: isotropic)."""
    lo, hi = sorted((1 - a, 1 - b))
    return lo / hi if hi > 0 else 1.0
