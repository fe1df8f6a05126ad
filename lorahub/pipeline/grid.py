"""Labelled image grids, like A1111's X/Y plots (PIL only, default font)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
