"""``torchvision.transforms.functional`` as far as diffusers' ``train_text_to_image_lora_sdxl.py`` uses it."""

from __future__ import annotations

from PIL import Image


def crop(img: Image.Image, top: int, left: int, height: int, width: int) -> Image.Image:
    """The ``height`` x ``width`` region of ``img`` whose top-left corner is (``top``, ``left``)."""
    return img.crop((left, top, left + width, top + height))
