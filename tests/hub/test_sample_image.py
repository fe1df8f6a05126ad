"""lorahub.hub.package.sample_image: the picture a gallery card shows for an adapter file (issue 17)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lorahub.hub.package import MAX_SAMPLE_BYTES, sample_image


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_a_sidecar_beside_the_file_is_its_sample(tmp_path: Path) -> None:
    lora = tmp_path / "ink.safetensors"
    lora.write_bytes(b"x")
    assert sample_image(lora) is None
    plain = _png(tmp_path / "ink.png")
    assert sample_image(lora) == plain
    # AUTOMATIC1111/Forge's extra-networks card wins over a plain image of the same name
    preview = _png(tmp_path / "ink.preview.jpg")
    assert sample_image(lora) == preview
    # another file's image is not this one's
    _png(tmp_path / "inkwash.preview.png")
    other = tmp_path / "inkwash.safetensors"
    other.write_bytes(b"x")
    assert sample_image(other) == tmp_path / "inkwash.preview.png"


def test_a_training_package_shows_its_last_sample(tmp_path: Path) -> None:
    pkg = tmp_path / "heart"
    lora = pkg / "heart_kohya.safetensors"
    _png(pkg / "samples" / "step_000100_0.png")
    last = _png(pkg / "samples" / "step_000400_0.png")
    lora.write_bytes(b"x")
    assert sample_image(lora) is None  # samples/ alone is not a package: any folder may hold one
    (pkg / "train_config.toml").write_text("steps = 400\n")
    assert sample_image(lora) == last


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")
def test_links_and_huge_files_are_not_shown(tmp_path: Path) -> None:
    secret = _png(tmp_path / "outside" / "secret.png")
    lib = tmp_path / "lib"
    lib.mkdir()
    lora = lib / "ink.safetensors"
    lora.write_bytes(b"x")
    (lib / "ink.preview.png").symlink_to(secret)  # a link out of the folder is never followed
    assert sample_image(lora) is None
    (lib / "train_config.toml").write_text("")
    (lib / "samples").symlink_to(secret.parent, target_is_directory=True)
    assert sample_image(lora) is None
    big = lib / "ink.png"
    with open(big, "wb") as fh:
        fh.truncate(MAX_SAMPLE_BYTES + 1)
    assert sample_image(lora) is None


def test_a_cards_widget_names_its_images_inside_the_repo_only() -> None:
    from lorahub.hub.card import widget_images

    card = """---
widget:
- text: a heart
  output:
    url: samples/heart.png
- text: elsewhere
  output:
    url: https://example.com/x.png
- output: {url: ../../etc/passwd}
- output: {url: /etc/passwd}
- output: {url: .git/config}
- output: not a mapping
- text: second
  output: {url: images/b.webp}
---
# body
"""
    assert widget_images(card) == ["samples/heart.png", "images/b.webp"]
    assert widget_images("no front matter") == []
    assert widget_images({"widget": "not a list"}) == []
