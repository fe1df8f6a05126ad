"""Sizes as people write them: ``"20G"``, ``"500M"``, ``"1048576"`` (binary units). One parser for every
face: ``lorahub serve --max-upload-size``, ``lorahub space --max-file-size``, ``$LORAHUB_UI_MAX_FILE_SIZE``."""

from __future__ import annotations


def parse_bytes(text: str | int) -> int:
    """``"20G"``, ``"500M"``, ``"1048576"`` -> bytes (binary units: K = 1024); :class:`ValueError` for
    anything else or a size that is not positive."""
    if isinstance(text, int):
        return text
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 500M, 20G)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value * mult)


__all__ = ["parse_bytes"]

