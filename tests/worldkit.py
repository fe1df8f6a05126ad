"""Degradations for the judge's robustness tests: a Gaussian blur (numpy) and a real JPEG round trip (Pillow)."""

from __future__ import annotations

import hashlib
import io

import numpy as np


def gaussian_blur(img: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Separable Gaussian blur (radius 3 sigma, edges repeated), back to uint8."""
    r = int(3 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    h, w = img.shape[:2]
    a = np.pad(img.astype(np.float64), ((r, r), (0, 0), (0, 0)), mode="edge")
    a = sum(k[i] * a[i : i + h] for i in range(2 * r + 1))
    a = np.pad(a, ((0, 0), (r, r), (0, 0)), mode="edge")
    a = sum(k[i] * a[:, i : i + w] for i in range(2 * r + 1))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int = 85) -> np.ndarray:
    """Encode as JPEG (Pillow's default 4:2:0 chroma subsampling) and decode again."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def pixel_noise(img: np.ndarray, sigma: float = 16.0, seed: int = 0) -> np.ndarray:
    """Independent Gaussian noise on every channel of every pixel (seeded by the image's bytes and ``seed``)."""
    rng = np.random.default_rng([seed, int(hashlib.sha256(img.tobytes()).hexdigest()[:15], 16)])
    return np.clip(np.rint(img + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)
