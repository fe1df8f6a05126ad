"""Labelled image grids, like A1111's X/Y plots (PIL only, default font), and rendering one on a
:class:`~lorahub.pipeline.live.LivePipeline` (``lorahub preview --grid``, the Space's grid, the demo).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError


def parse_weights(text: str, *, max_count: int | None = None) -> list[float]:
    """``"0, 0.5, 1"`` -> ``[0.0, 0.5, 1.0]`` (grid weights; commas or new lines between them). Every value
    must be a finite number; at least one, at most ``max_count``. Raises :class:`UsageError`."""
    out = []
    for part in (p.strip() for p in re.split(r"[,\n]", text or "")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise UsageError(f"grid weights: {part!r} is not a number (write e.g. 0, 0.5, 1)") from None
        if not math.isfinite(value):
            raise UsageError(f"grid weights: {part!r} is not finite")
        out.append(value)
    if not out:
        raise UsageError("grid weights: give at least one number (e.g. 0, 0.5, 1)")
    if max_count is not None and len(out) > max_count:
        raise UsageError(f"grid weights: at most {max_count} values")
    return out


@dataclass(frozen=True)
class Cell:
    """One image of a grid: the adapter weights it is rendered with (and its seed, if not the grid's)."""

    weights: Mapping[str, float]
    seed: int | None = None


@dataclass
class GridRender:
    image: Any  # the labelled grid (PIL)
    seconds: list[float] = field(default_factory=list)  # per image, row by row

    @property
    def seconds_per_image(self) -> float:
        return sum(self.seconds) / len(self.seconds)


def render_grid(
    live: Any,
    prompt: str,
    cells: Sequence[Sequence[Cell]],
    *,
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    title: str | None = None,
    exclusive: bool = False,
    restore: Mapping[str, float] | None = None,
    on_image: Callable[[int, int, Any], None] | None = None,
    **render: Any,
) -> GridRender:
    """Render ``cells[row][col]`` on one loaded pipeline (weights set before each image, never a reload)
    and lay them out with :func:`make_grid`. ``render``: the other arguments of ``live.render`` (``seed``
    is the default of cells without one). ``exclusive``: cells' weights switch every other adapter off.
    ``restore``: weights set once the grid is done. ``on_image(row, col, render)`` after each image."""
    images, seconds = [], []
    for r, row in enumerate(cells):
        line = []
        for c, cell in enumerate(row):
            live.set_weights(dict(cell.weights), exclusive=exclusive)
            kw = dict(render)
            if cell.seed is not None:
                kw["seed"] = cell.seed
            out = live.render(prompt, **kw)
            line.append(out.image)
            seconds.append(out.seconds)
            if on_image is not None:
                on_image(r, c, out)
        images.append(line)
    if restore is not None:
        live.set_weights(dict(restore), exclusive=exclusive)
    image = make_grid(images, col_labels=col_labels, row_labels=row_labels, title=title)
    return GridRender(image, seconds)


def _text_size(draw: Any, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def make_grid(
    cells: Sequence[Sequence[Any]],
    *,
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    title: str | None = None,
    pad: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Any:
    """One image: ``cells[row][col]`` (PIL images of one size) with column labels on top and row labels left."""
    from PIL import Image, ImageDraw, ImageFont

    if not cells or not cells[0]:
        raise ValueError("an empty grid")
    font = ImageFont.load_default()
    w, h = cells[0][0].size
    rows, cols = len(cells), max(len(r) for r in cells)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = max(_text_size(probe, "Ag", font)[1], 8) + 2
    col_h = (line_h + pad) if col_labels else 0
    title_h = (line_h + pad) if title else 0
    row_w = (max((_text_size(probe, s, font)[0] for s in row_labels), default=0) + 2 * pad) if row_labels else 0
    width = row_w + cols * (w + pad) + pad
    height = title_h + col_h + rows * (h + pad) + pad
    col_w = w + pad
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), title, fill=(0, 0, 0), font=font)
    for c, label in enumerate(col_labels):
        tw, _ = _text_size(draw, label, font)
        x = row_w + pad + c * col_w + max(0, (w - tw) // 2)
        draw.text((x, title_h + pad // 2), _fit(draw, label, font, col_w), fill=(0, 0, 0), font=font)
    for r, row in enumerate(cells):
        y = title_h + col_h + pad + r * (h + pad)
        if r < len(row_labels):
            _, th = _text_size(draw, row_labels[r], font)
            draw.text((pad, y + max(0, (h - th) // 2)), row_labels[r], fill=(0, 0, 0), font=font)
        for c, img in enumerate(row):
            if img.size != (w, h):
                img = img.resize((w, h))
            canvas.paste(img.convert("RGB"), (row_w + pad + c * col_w, y))
    return canvas


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    if _text_size(draw, text, font)[0] <= width:
        return text
    while text and _text_size(draw, text + "…", font)[0] > width:
        text = text[:-1]
    return text + "…"
