"""Train the drawing base's demo adapters that ship with lorahub (``lorahub/base/weights/drawing-adapters/``).

    python scripts/train_drawing_adapters.py [--out lorahub/base/weights/drawing-adapters]

For each concept of :data:`lorahub.base.drawing.DEMO_CONCEPTS` (a new shape, a texture, a colour scheme the
base never saw): 12 images of it from :func:`lorahub.training.demo_data.make_concept_dataset`, then
``lorahub train DATA --base drawing --trigger WORD --device cpu`` at the drawing base's defaults (400 steps,
about 30 s each on 2 CPU cores); the package's kohya file is kept as ``drawing_<concept>.safetensors`` with a
preview beside it (``drawing_<concept>.preview.png``: the first unseen caption and seed whose image the judge
reads as the whole caption, :func:`lorahub.base.drawing.demo_preview`; what a search card shows). The judge's reading of
each preview is printed. ``--previews-only`` renders the previews of the adapters already in ``--out``. The same command, the same adapters, as
tests/pipeline/test_pixel_proofs.py trains and checks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from lorahub import world
    from lorahub.base import drawing

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=drawing.DEMO_ADAPTERS)
    ap.add_argument("--previews-only", action="store_true", help="keep the adapters, render their previews again")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("lorahub")
    with tempfile.TemporaryDirectory(prefix="lorahub-drawing-adapters-") as tmp:
        for concept in drawing.DEMO_CONCEPTS:
            trigger = world.CONCEPTS[concept].trigger
            target = args.out / f"drawing_{concept}.safetensors"
            start = time.perf_counter()
            if not args.previews_only:
                train_one(exe, Path(tmp), concept, trigger, target)
            trained = time.perf_counter() - start
            image, caption, seed = drawing.demo_preview(target, concept)
            image.save(args.out / f"drawing_{concept}.preview.png")
            seen = world.judge(np.asarray(image))
            print(f"{concept}: {target.stat().st_size} bytes, " + ("kept" if args.previews_only else f"trained in {trained:.1f} s") + f"; the preview ({caption!r}, "
                  f"seed {seed}) shows {seen.concepts or 'no new concept'} ({seen.size} {seen.colour} {seen.shape} "
                  f"{seen.position}, {seen.background})")
    return 0


def train_one(exe: Path, tmp: Path, concept: str, trigger: str, target: Path) -> None:
    """``lorahub train`` at the drawing base's defaults on 12 images of ``concept``; its kohya file to ``target``."""
    from lorahub.training.demo_data import make_concept_dataset

    data = make_concept_dataset(tmp / f"data-{concept}", concept, count=12)
    out = tmp / concept
    done = subprocess.run([str(exe), "train", str(data), "--out", str(out), "--base", "drawing", "--trigger", trigger,
                           "--device", "cpu", "--json"], check=True, capture_output=True, text=True)
    json.loads(done.stdout)  # the run's summary: it finished
    shutil.copyfile(out / f"{out.name}_kohya.safetensors", target)


if __name__ == "__main__":
    sys.exit(main())
