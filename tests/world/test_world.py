"""The world: deterministic scenes and images, captions that parse back, splits that hold out what they say."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from lorahub import world
from lorahub.errors import CaptionError, UsageError
from lorahub.world import (
    BACKGROUNDS,
    COLOURS,
    CONCEPTS,
    HELDOUT_SHAPE_COLOUR,
    HELDOUT_SHAPE_POSITION,
    POSITIONS,
    SHAPES,
    Scene,
    parse_caption,
    render,
    sample,
    scenes,
)


def _digest(samples: list) -> str:
    h = hashlib.sha256()
    for image, caption, _ in samples:
        h.update(image.tobytes())
        h.update(caption.encode())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_images() -> None:
    a, b = sample(3, 12), sample(3, 12)
    assert _digest(a) == _digest(b)
    assert [s.scene for s in a] == [s.scene for s in b]
    c = sample(4, 12)
    assert _digest(a) != _digest(c)
    # a longer run of the same seed starts with the same samples
    assert _digest(sample(3, 20)[:12]) == _digest(a)
    for split in ("heldout",):
        assert _digest(sample(3, 5, split)) == _digest(sample(3, 5, split))


def test_same_bytes_in_another_process() -> None:
    """Nothing depends on Python's per-process hash seed or on state left by an earlier call."""
    code = (
        "import hashlib\n"
        "from lorahub.world import sample\n"
        "h = hashlib.sha256()\n"
        "for split, kw in (('train', {}), ('heldout', {}), ('concept', {'concept': 'striped'})):\n"
        "    for image, caption, _ in sample(11, 6, split, size=48, **kw):\n"
        "        h.update(image.tobytes()); h.update(caption.encode())\n"
        "print(h.hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 64


def test_images_are_anti_aliased_rgb_at_the_asked_size() -> None:
    scene = Scene("circle", "red", "large", "center", "white")
    for size in (64, 128):
        img = render(scene, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert tuple(img[0, 0]) == world.PALETTE["white"]
        assert tuple(img[size // 2, size // 2]) == world.PALETTE["red"]
        # the edge has colours between the two (4x4 samples a pixel): anti-aliasing, not a hard step
        colours = {tuple(p) for p in img.reshape(-1, 3).tolist()}
        assert len(colours - {world.PALETTE["white"], world.PALETTE["red"]}) >= 5
    # the same scene at 128 is the 64 one, twice as fine: block means agree closely
    small = render(scene, 64).astype(float)
    big = render(scene, 128).astype(float).reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(small - big).mean() < 2.0


def test_scene_follows_its_caption_words() -> None:
    left = render(Scene("square", "blue", "small", "left", "white"), 64)
    right = render(Scene("square", "blue", "small", "right", "white"), 64)
    blue = np.all(left == world.PALETTE["blue"], axis=2)
    assert blue[:, :32].sum() > 100 and blue[:, 32:].sum() == 0
    blue = np.all(right == world.PALETTE["blue"], axis=2)
    assert blue[:, 32:].sum() > 100 and blue[:, :32].sum() == 0
    large = render(Scene("square", "blue", "large", "left", "white"), 64)
    assert (
        np.all(large == world.PALETTE["blue"], axis=2).sum()
        > 3 * np.all(left == world.PALETTE["blue"], axis=2).sum()
    )


def test_caption_parses_back_to_the_scene() -> None:
    for s in (
        scenes(0, 200, "train")
        + scenes(0, 50, "heldout")
        + [x for c in CONCEPTS for x in scenes(0, 10, "concept", concept=c)]
    ):
        parsed = parse_caption(s.caption)
        assert parsed == Scene(s.shape, s.colour, s.size, s.position, s.background, s.texture)
        assert parsed.caption == s.caption
    assert parse_caption("  A Small RED circle on the left,   blue background ").caption == (
        "a small red circle on the left, blue background"
    )
    img = render(parse_caption("a large striped green star in the center, gray background"))
    assert img.shape == (64, 64, 3)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a red circle",
        "a small red circle on the left",
        "a small red circle on the left, blue",
        "a small red blob on the left, blue background",
        "a huge red circle on the left, blue background",
        "a small red circle in the corner, blue background",
        "a small blue circle on the left, blue background",  # invisible
        "a small orange circle on the left, sunset background",  # too close to the gradient
        "a small wavy red circle on the left, blue background",
        "a small striped white circle on the left, gray background",  # stripes too faint
        "a small red circle on the left, blue background, again",
        "x" * 10_000,
    ],
)
def test_bad_captions_raise_one_readable_line(text: str) -> None:
    with pytest.raises(CaptionError) as err:
        parse_caption(text)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200


def test_train_split_holds_out_its_combinations() -> None:
    train = scenes(1, 3000, "train")
    pairs_c = {(s.shape, s.colour) for s in train}
    pairs_p = {(s.shape, s.position) for s in train}
    assert not pairs_c & HELDOUT_SHAPE_COLOUR
    assert not pairs_p & HELDOUT_SHAPE_POSITION
    assert not any(s.concepts for s in train)
    # everything else is seen: each word alone, and every other pair
    assert pairs_c == {(s, c) for s in SHAPES for c in COLOURS} - HELDOUT_SHAPE_COLOUR
    assert pairs_p == {(s, p) for s in SHAPES for p in POSITIONS} - HELDOUT_SHAPE_POSITION
    assert {s.background for s in train} == set(BACKGROUNDS)
    assert all(s.colour != s.background for s in train)
    assert all(world.in_split(s, "train") for s in train)


def test_heldout_split_is_made_of_heldout_combinations() -> None:
    held = scenes(1, 600, "heldout")
    assert all(world.is_heldout(s) and not s.concepts for s in held)
    assert {(s.shape, s.colour) for s in held} >= HELDOUT_SHAPE_COLOUR
    assert {(s.shape, s.position) for s in held} >= HELDOUT_SHAPE_POSITION
    assert not any(world.in_split(s, "train") for s in held)


def test_concepts_never_reach_pretraining_captions() -> None:
    words = Counter(
        w
        for s in scenes(2, 3000, "train") + scenes(2, 500, "heldout")
        for w in s.caption.replace(",", "").split()
    )
    for concept in CONCEPTS.values():
        assert words[concept.trigger] == 0, concept
        shown = scenes(2, 40, "concept", concept=concept.name)
        assert all(concept.name in s.concepts and concept.trigger in s.caption.split() for s in shown)
        assert all(len(s.concepts) == 1 for s in shown)
    # apart from their concept, concept scenes are pretraining scenes: no held-out combination
    for s in scenes(2, 300, "concept", concept="striped") + scenes(2, 300, "concept", concept="sunset"):
        assert not world.is_heldout(s), s.caption


def test_bad_arguments_are_usage_errors() -> None:
    for kwargs in (
        {"seed": -1, "n": 1},
        {"seed": 0, "n": -1},
        {"seed": 0, "n": 10**9},
        {"seed": 0, "n": 1, "split": "test"},
        {"seed": 0, "n": 1, "split": "concept"},
        {"seed": 0, "n": 1, "split": "concept", "concept": "unicorn"},
        {"seed": 0, "n": 1, "split": "train", "concept": "heart"},
    ):
        with pytest.raises(UsageError):
            scenes(**kwargs)
    with pytest.raises(UsageError):
        render(Scene("circle", "red", "small", "left", "white"), 8)
    for jitter in ({"dx": 0.2}, {"dy": float("nan")}, {"scale": 3.0}):
        with pytest.raises(CaptionError):
            Scene("circle", "red", "small", "left", "white", **jitter)


def test_world_imports_without_torch_or_pillow() -> None:
    code = (
        "import sys\n"
        "from lorahub import world\n"
        "image, caption, scene = world.sample(0, 1)[0]\n"
        "world.judge(image)\n"
        "bad = [m for m in ('torch', 'PIL', 'diffusers', 'lorahub.registry', 'lorahub.cli') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
