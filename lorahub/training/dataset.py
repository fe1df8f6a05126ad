"""Training datasets as people have them, read without torch.

Two layouts are recognised:

- **kohya folders**: images with same-name caption files (``cat.png`` +
  ``cat.txt``), either directly in the dataset folder or in sub-folders named
  ``<repeats>_<name>`` (``10_mystyle``: every image in it counts 10 times per
  epoch; ``mystyle`` is that folder's class token). Other sub-folders count once.
- **Hugging Face imagefolder**: a ``metadata.jsonl`` (or ``metadata.csv``) beside
  the images (or in a ``train/`` split folder) with a ``file_name`` column and a
  caption column (``text`` by default; ``caption`` and ``prompt`` are also tried).

Images of any size and mode are accepted: EXIF rotation is applied, RGBA, LA and
palette images with transparency are composited on white, grayscale, CMYK and
16-bit images are converted to RGB. Images are then assigned to aspect-ratio
buckets (or a square), resized to cover the bucket and center-cropped. Without
upscaling (``upscale=False``, SDXL's default), an image that would have to be
enlarged for its bucket gets a bucket of its own instead: its sides rounded down
to the bucket step. Each item records its geometry (original size, resized size,
crop offsets, bucket): SDXL's micro-conditioning (:meth:`ImageItem.time_ids`).

A missing caption becomes the trigger word (or the folder's class token). With a
trigger word, every caption starts with it. :func:`scan_dataset` opens every
image once and raises :class:`~lorahub.errors.DatasetError` when nothing usable
is found, so a bad dataset fails before any model is loaded.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_COLUMNS = ("text", "caption", "prompt", "captions")
_REPEAT_DIR = re.compile(r"^(\d+)_(.+)$")
#: Bucket sides are multiples of this (VAE factor 8 x three UNet down-samplings, SD 1.x/2.x; SDXL's
#: UNet down-samples twice: 32).
BUCKET_STEP = 64
#: Images smaller than this on a side are refused (they hold no information).
MIN_SIDE = 8


@dataclass
class ImageItem:
    """One training image."""

    path: Path
    caption: str
    #: Where the caption came from: "file", "metadata", "trigger", "folder", "none".
    caption_source: str
    repeats: int
    #: The folder the image belongs to, relative to the dataset root ("." for the root).
    folder: str
    width: int
    height: int
    mode: str
    #: (width, height) the image is trained at.
    bucket: tuple[int, int] = (0, 0)
    #: (width, height) after resizing to cover the bucket, before the center crop.
    resized: tuple[int, int] = (0, 0)
    #: (top, left) of the center crop in the resized image.
    crop: tuple[int, int] = (0, 0)

    def time_ids(self, flipped: bool = False) -> tuple[int, int, int, int, int, int]:
        """SDXL's micro-conditioning: (original height, width, crop top, crop left, target height, width).

        As Stability's SGM code and kohya compute them: the original size of the
        image file, the top-left corner of the crop in the resized image (mirrored
        when the image is flipped), and the size trained at.
        """
        top, left = self.crop
        if flipped:
            left = (self.resized[0] - self.bucket[0]) - left
        return self.height, self.width, top, left, self.bucket[1], self.bucket[0]


@dataclass
class Dataset:
    root: Path
    layout: str  # "kohya" | "imagefolder"
    items: list[ImageItem]
    trigger: str | None
    resolution: int
    buckets: list[tuple[int, int]]
    warnings: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.items)

    @property
    def num_train_images(self) -> int:
        """Images per epoch, repeats included (kohya ``ss_num_train_images``)."""
        return sum(it.repeats for it in self.items)

    def folder_label(self, item: ImageItem) -> str:
        """The folder's name in metadata: its path below the root, or the root's own name."""
        return item.folder if item.folder != "." else (self.root.resolve().name or ".")

    def folders(self) -> dict[str, dict[str, int]]:
        """``{folder: {"n_repeats": r, "img_count": n}}`` (kohya ``ss_dataset_dirs``)."""
        out: dict[str, dict[str, int]] = {}
        for it in self.items:
            entry = out.setdefault(self.folder_label(it), {"n_repeats": it.repeats, "img_count": 0})
            entry["img_count"] += 1
        return out

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """``{folder: {tag: images}}`` of the base captions (kohya ``ss_tag_frequency``)."""
        out: dict[str, Counter[str]] = {}
        for it in self.items:
            counter = out.setdefault(self.folder_label(it), Counter())
            for tag in dict.fromkeys(t.lower() for t in split_tags(it.caption)):
                counter[tag] += 1
        return {k: dict(v) for k, v in out.items()}

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        counts: Counter[tuple[int, int]] = Counter()
        for it in self.items:
            counts[it.bucket] += it.repeats
        return dict(sorted(counts.items()))

    def bucket_info(self) -> dict[str, Any]:
        """kohya ``ss_bucket_info``: buckets in use with their image counts (repeats included)."""
        errors = [abs(it.width / it.height - it.bucket[0] / it.bucket[1]) for it in self.items]
        return {
            "buckets": {
                str(i): {"resolution": [w, h], "count": n} for i, ((w, h), n) in enumerate(self.bucket_counts().items())
            },
            "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0,
        }


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def _has_tag(caption: str, word: str) -> bool:
    w = word.strip().lower()
    return any(t.lower() == w for t in split_tags(caption)) or bool(
        re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", caption.lower())
    )


def with_trigger(caption: str, trigger: str | None) -> str:
    """``caption`` with ``trigger`` as its first tag (moved there when present elsewhere as a tag)."""
    caption = " ".join(caption.split())
    if not trigger:
        return caption
    trigger = trigger.strip()
    if not caption:
        return trigger
    tags = split_tags(caption)
    low = trigger.lower()
    if tags and tags[0].lower() == low:
        return caption
    if any(t.lower() == low for t in tags):
        rest = [t for t in tags if t.lower() != low]
        return ", ".join([trigger, *rest])
    if _has_tag(caption, trigger):  # already in the prose ("a mystyle painting"): leave it where it is
        return caption
    return f"{trigger}, {caption}"


def training_caption(
    caption: str,
    rng: random.Random,
    *,
    trigger: str | None = None,
    shuffle_tags: bool = False,
    keep_tokens: int = 1,
    caption_dropout: float = 0.0,
) -> str:
    """The caption one training step sees: maybe dropped (""), maybe tag-shuffled.

    When shuffling, the trigger word is moved to the front, the first
    ``keep_tokens`` tags stay in place and the rest are shuffled.
    """
    if caption_dropout > 0 and rng.random() < caption_dropout:
        return ""
    if not shuffle_tags:
        return caption
    tags = split_tags(caption)
    if trigger:
        low = trigger.strip().lower()
        first = [t for t in tags if t.lower() == low]
        tags = first[:1] + [t for t in tags if t.lower() != low]
    keep = max(keep_tokens, 1 if trigger and tags and tags[0].lower() == trigger.strip().lower() else 0)
    head, tail = tags[:keep], tags[keep:]
    rng.shuffle(tail)
    return ", ".join(head + tail)


# ----------------------------------------------------------------------------------------- buckets


def make_buckets(resolution: int, step: int = BUCKET_STEP) -> list[tuple[int, int]]:
    """Bucket sizes (width, height) of about ``resolution**2`` pixels, sides multiples of ``step``.

    Sides range from half to twice the resolution (kohya's defaults for 512:
    256..1024).
    """
    area = resolution * resolution
    lo = max(step, (resolution // 2) // step * step)
    hi = resolution * 2
    out = {(resolution, resolution)}
    w = lo
    while w <= hi:
        h = min(hi, (area // w) // step * step)
        if h >= lo:
            out.add((w, h))
            out.add((h, w))
        w += step
    return sorted(out, key=lambda b: (b[0] / b[1], b[0]))


def pick_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space) to the image's."""
    ar = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ar), -b[0] * b[1]))


def cover_scale(width: int, height: int, size: tuple[int, int]) -> float:
    """The factor that resizes a ``width`` x ``height`` image to cover ``size`` (above 1: enlarging)."""
    return max(size[0] / width, size[1] / height)


def fit_bucket(width: int, height: int, buckets: list[tuple[int, int]], *, step: int = BUCKET_STEP,
               upscale: bool = True) -> tuple[int, int]:
    """The bucket of a ``width`` x ``height`` image.

    The closest aspect ratio among ``buckets``; without ``upscale``, an image
    that bucket would enlarge gets its own: its sides rounded down to ``step``
    (at least one step), as kohya's ``--bucket_no_upscale`` does.
    """
    bucket = pick_bucket(width, height, buckets)
    if upscale or cover_scale(width, height, bucket) <= 1:
        return bucket
    hi = max(max(b) for b in buckets)
    return max(step, min(width, hi) // step * step), max(step, min(height, hi) // step * step)


def crop_geometry(width: int, height: int, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized width, height), (crop top, left)): resize to cover ``size`` keeping the aspect, center-crop."""
    tw, th = size
    scale = cover_scale(width, height, size)
    nw, nh = max(tw, round(width * scale)), max(th, round(height * scale))
    return (nw, nh), ((nh - th) // 2, (nw - tw) // 2)


# ----------------------------------------------------------------------------------------- images


def open_rgb(path: str | os.PathLike[str]):  # noqa: ANN201 - PIL.Image.Image
    """Open an image as 8-bit RGB: EXIF rotation applied, transparency composited on white."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - broken EXIF must not lose the image
            pass
        return to_rgb(im)


def to_rgb(im):  # noqa: ANN001, ANN201
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.convert("RGB")


def resize_crop(im, size: tuple[int, int]):  # noqa: ANN001, ANN201
    """Resize to cover ``size`` (width, height) keeping the aspect ratio, then center-crop (:func:`crop_geometry`)."""
    from PIL import Image

    tw, th = size
    w, h = im.size
    (nw, nh), (top, left) = crop_geometry(w, h, size)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.LANCZOS if cover_scale(w, h, size) < 1 else Image.Resampling.BICUBIC)
    return im.crop((left, top, left + tw, top + th))


def load_pixels(item: ImageItem):  # noqa: ANN201 - numpy uint8 array (H, W, 3)
    """The image of ``item`` as a uint8 array, at its bucket size."""
    import numpy as np

    return np.asarray(resize_crop(open_rgb(item.path), item.bucket), dtype=np.uint8)


# ----------------------------------------------------------------------------------------- scanning


def _probe(path: Path) -> tuple[int, int, str]:
    """(width, height, mode) after a full decode; raises on unreadable files."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001
            pass
        w, h = im.size
    return w, h, mode


def _read_caption(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    text = raw.decode("utf-8-sig", errors="replace")
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def _image_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                files.append(Path(dirpath) / name)
    return files


def _metadata_file(root: Path) -> Path | None:
    for folder in (root, root / "train"):
        for name in METADATA_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _metadata_rows(meta: Path, caption_column: str) -> dict[str, str | None]:
    """file_name (relative to the metadata's folder, posix) -> caption (None when the row has none)."""
    rows: list[dict[str, Any]] = []
    try:
        if meta.suffix == ".jsonl":
            with meta.open(encoding="utf-8-sig") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        raise DatasetError(f"{meta}:{n}: not a JSON object") from None
                    if not isinstance(row, dict):
                        raise DatasetError(f"{meta}:{n}: not a JSON object")
                    rows.append(row)
        else:
            with meta.open(encoding="utf-8-sig", newline="") as fh:
                rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta}: cannot read it ({exc})") from None
    out: dict[str, str | None] = {}
    columns = [caption_column] + [c for c in CAPTION_COLUMNS if c != caption_column]
    for n, row in enumerate(rows, 1):
        name = row.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{meta}: row {n} has no 'file_name'")
        caption = None
        for col in columns:
            value = row.get(col)
            if isinstance(value, list):
                value = next((v for v in value if isinstance(v, str) and v.strip()), None)
            if isinstance(value, str):
                caption = " ".join(value.split())
                break
        out[Path(name.strip()).as_posix()] = caption
    return out


def scan_dataset(
    root: str | os.PathLike[str],
    *,
    trigger: str | None = None,
    resolution: int = 512,
    buckets: bool = True,
    caption_extension: str = ".txt",
    caption_column: str = "text",
    bucket_step: int = BUCKET_STEP,
    upscale: bool = True,
) -> Dataset:
    """Find and check every training image under ``root``; no model, no torch.

    Buckets have about ``resolution**2`` pixels and sides that are multiples of
    ``bucket_step``; ``upscale=False`` keeps small images at their own size
    (:func:`fit_bucket`).

    Raises :class:`DatasetError` when ``root`` is missing, holds no images, or
    none of its images can be decoded. Unreadable images among readable ones
    are skipped with a warning.
    """
    base = Path(root).expanduser()
    if not base.exists():
        raise DatasetError(f"{base}: no such dataset folder")
    if not base.is_dir():
        raise DatasetError(f"{base}: a dataset is a folder of images, not a file")
    trigger = trigger.strip() if trigger and trigger.strip() else None
    warnings: list[str] = []
    meta = _metadata_file(base)
    layout = "imagefolder" if meta else "kohya"
    candidates: list[tuple[Path, str | None, str, int, str]] = []  # path, caption, source, repeats, folder
    if meta is not None:
        rows = _metadata_rows(meta, caption_column)
        if not rows:
            raise DatasetError(f"{meta}: no rows", hint="each line needs a file_name and a caption")
        for name, caption in rows.items():
            path = (meta.parent / name).resolve()
            try:
                path.relative_to(meta.parent.resolve())
            except ValueError:
                raise DatasetError(f"{meta}: file_name '{name}' points outside the dataset folder") from None
            if not path.is_file():
                warnings.append(f"{meta.name}: '{name}' does not exist; skipped")
                continue
            source = "metadata" if caption else "none"
            candidates.append((path, caption, source, 1, "."))
    else:
        for path in _image_files(base):
            rel = path.parent.relative_to(base)
            folder = rel.as_posix() if rel.parts else "."
            repeats = 1
            for part in rel.parts:
                m = _REPEAT_DIR.match(part)
                if m:
                    repeats = max(1, int(m.group(1)))
            cap_path = path.with_suffix(caption_extension)
            caption = _read_caption(cap_path) if cap_path.is_file() else None
            candidates.append((path, caption, "file" if caption else "none", repeats, folder))
    if not candidates:
        what = f"no images listed in {meta.name} exist" if meta else f"no images ({', '.join(IMAGE_EXTENSIONS)})"
        raise DatasetError(f"{base}: {what}", hint="put the training images (and same-name .txt captions) in this folder")

    bucket_list = make_buckets(resolution, bucket_step) if buckets else [(resolution, resolution)]
    own_buckets: set[tuple[int, int]] = set()
    items: list[ImageItem] = []
    unreadable: list[str] = []
    for path, caption, source, repeats, folder in candidates:
        try:
            w, h, mode = _probe(path)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
            unreadable.append(f"{path.name} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})")
            continue
        if min(w, h) < MIN_SIDE:
            unreadable.append(f"{path.name} ({w}x{h} is too small)")
            continue
        if not caption:
            token = None
            for part in reversed(Path(folder).parts):
                m = _REPEAT_DIR.match(part)
                if m:
                    token = m.group(2).strip()
                    break
            if trigger:
                caption, source = trigger, "trigger"
            elif token:
                caption, source = token, "folder"
            else:
                caption, source = "", "none"
        else:
            caption = with_trigger(caption, trigger)
        if buckets:
            bucket = fit_bucket(w, h, bucket_list, step=bucket_step, upscale=upscale)
        else:  # a square: the training size, or without upscaling the image's short side if smaller
            side = resolution if upscale else min(resolution, max(bucket_step, min(w, h) // bucket_step * bucket_step))
            bucket = (side, side)
        if bucket not in bucket_list:
            own_buckets.add(bucket)
        resized, crop = crop_geometry(w, h, bucket)
        items.append(ImageItem(path=path, caption=caption, caption_source=source, repeats=repeats, folder=folder,
                               width=w, height=h, mode=mode, bucket=bucket, resized=resized, crop=crop))
    if not items:
        raise DatasetError(
            f"{base}: none of its {len(candidates)} image(s) can be read: {'; '.join(unreadable[:3])}"
            + (" ..." if len(unreadable) > 3 else "")
        )
    for u in unreadable[:20]:
        warnings.append(f"skipped unreadable image {u}")
    if len(unreadable) > 20:
        warnings.append(f"... and {len(unreadable) - 20} more unreadable image(s)")
    empty = sum(1 for it in items if not it.caption)
    if empty:
        warnings.append(f"{empty} image(s) have no caption and there is no trigger word: they train unconditionally")
    if not upscale:
        thin = sum(1 for it in items if cover_scale(it.width, it.height, it.bucket) > 1)
        if thin:
            warnings.append(f"{thin} image(s) have a side under {bucket_step} px: enlarged to {bucket_step} px")
    return Dataset(root=base, layout=layout, items=items, trigger=trigger, resolution=resolution,
                   buckets=sorted(set(bucket_list) | own_buckets, key=lambda b: (b[0] / b[1], b[0])),
                   warnings=warnings)


# ----------------------------------------------------------------------------------------- batches


def epoch_batches(dataset: Dataset, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
    """The batches (lists of item indices) of one epoch, a pure function of (seed, epoch).

    Each item appears ``repeats`` times; items are shuffled within their
    bucket, cut into batches of one bucket each, and the batches are shuffled.
    A resumed run recomputes exactly the same order.
    """
    rng = random.Random(f"lorahub-epoch:{seed}:{epoch}")
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for idx, it in enumerate(dataset.items):
        by_bucket.setdefault(it.bucket, []).extend([idx] * it.repeats)
    batches: list[list[int]] = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        rng.shuffle(members)
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    rng.shuffle(batches)
    return batches


class BatchStream:
    """The endless, deterministic sequence of batches over epochs: position -> (epoch, batch)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self._cache: dict[int, list[list[int]]] = {}

    def epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            self._cache[epoch] = epoch_batches(self.dataset, epoch, self.batch_size, self.seed)
        return self._cache[epoch]

    @property
    def batches_per_epoch(self) -> int:
        return len(self.epoch(0))

    def at(self, position: int) -> tuple[int, list[int]]:
        per = self.batches_per_epoch
        epoch, index = divmod(position, per)
        return epoch, self.epoch(epoch)[index]
