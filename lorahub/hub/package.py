"""An adapter package: the folder ``lorahub train`` writes, or a single file.

It holds the weights (``pytorch_lora_weights.safetensors`` or one other
``.safetensors``), usually a kohya-layout copy (``<name>_kohya.safetensors``,
the file the UIs load fully: docs/formats.md), the training config, samples,
the loss curve and a model card. Training checkpoints are not part of what is
shared.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lorahub.errors import NotFoundError, UsageError

from .paths import is_git_alias

DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: Never uploaded: resumable training state, caches, editor droppings; nor any hidden file or
#: folder, nor a ``.git`` folder under another name (``git~1``, see :mod:`.paths`).
EXCLUDED_DIRS = {"checkpoints", "__pycache__", ".cache", ".git", ".ipynb_checkpoints"}
EXCLUDED_SUFFIXES = (".tmp", ".lock", ".pyc")
MAX_SAMPLES = 8
TRAIN_CONFIG_NAMES = ("lorahub_train.toml", "train_config.toml", "training_config.toml", "config.toml")


@dataclass
class AdapterPackage:
    root: Path | None  # None for a single file
    weights: Path
    files: dict[str, Path] = field(default_factory=dict)  # path in repo -> local file
    samples: list[tuple[str, str]] = field(default_factory=list)  # (path in repo, prompt)
    card: str | None = None
    base_model: str | None = None
    training: dict = field(default_factory=dict)

    @property
    def weight_name(self) -> str:
        if self.root is None:
            return self.weights.name
        return self.weights.relative_to(self.root).as_posix()

    @property
    def default_repo_name(self) -> str:
        stem = self.root.name if self.root is not None else self.weights.stem
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "lora"
        return name[:96]


def load_package(path: str | Path) -> AdapterPackage:
    p = Path(path).expanduser()
    if not p.exists():
        raise NotFoundError(f"{path}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() != ".safetensors":
            raise UsageError(f"{path}: not a .safetensors file or an adapter package folder")
        return AdapterPackage(root=None, weights=p, files={p.name: p})
    root = p.resolve()
    files: dict[str, Path] = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if not f.is_file() or any(part in EXCLUDED_DIRS or part.startswith(".") or is_git_alias(part) for part in rel.parts):
            continue
        if f.name.endswith(EXCLUDED_SUFFIXES):
            continue
        files[rel.as_posix()] = f
    weights = root / DEFAULT_WEIGHT_NAME
    if not weights.is_file():
        tops = [root / k for k in files if "/" not in k and k.endswith(".safetensors")]
        if len(tops) == 1:
            weights = tops[0]
        elif not tops:
            raise NotFoundError(f"{path}: no adapter weights ({DEFAULT_WEIGHT_NAME} or one .safetensors) in the folder")
        else:
            names = ", ".join(sorted(t.name for t in tops))
            raise UsageError(f"{path}: several .safetensors files ({names}) and no {DEFAULT_WEIGHT_NAME}",
                             hint="name the one to push: lorahub push FOLDER/FILE.safetensors")
    pkg = AdapterPackage(root=root, weights=weights, files=files)
    readme = root / "README.md"
    if readme.is_file():
        pkg.card = readme.read_text(encoding="utf-8", errors="replace")
    pkg.training = _training_config(root)
    # lorahub's train_config.toml keeps its settings in a [train] table
    table = pkg.training.get("train") if isinstance(pkg.training.get("train"), dict) else pkg.training
    base = table.get("base") or table.get("base_model")
    if isinstance(base, str) and base:
        pkg.base_model = base
    pkg.samples = _samples(root, files, table, pkg.card)
    return pkg


def _training_config(root: Path) -> dict:
    import tomllib

    for name in TRAIN_CONFIG_NAMES:
        f = root / name
        if f.is_file():
            try:
                data = tomllib.loads(f.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def _samples(root: Path, files: dict[str, Path], training: dict, card: str | None) -> list[tuple[str, str]]:
    prompts: dict[str, str] = {}
    if card:  # widget entries of an existing card name each sample's prompt
        from .card import split_card

        widget = split_card(card)[0].get("widget")
        for item in widget if isinstance(widget, list) else []:
            out = item.get("output") if isinstance(item, dict) else None
            url = out.get("url") if isinstance(out, dict) else None
            if isinstance(url, str) and isinstance(item.get("text"), str):
                prompts[url] = item["text"]
    for manifest in ("samples/samples.json", "samples/index.json", "samples.json"):
        f = root / manifest
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                data = None
            items = data.get("samples", data) if isinstance(data, dict) else data
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict) and isinstance(item.get("path") or item.get("file"), str):
                        rel = str(item.get("path") or item.get("file"))
                        rel = rel if rel.startswith("samples/") else f"samples/{rel}"
                        prompts[rel] = str(item.get("prompt") or "")
            break
    found = [k for k in files if k.startswith("samples/") and k.lower().endswith(SAMPLE_SUFFIXES)]
    found = sorted(found)[-MAX_SAMPLES:]
    default = str(training.get("trigger") or "")
    return [(k, prompts.get(k) or default) for k in found]


#: Images saved beside an adapter file by the community's tools, in the order they are looked for: the
#: ``<name>.preview.png`` of AUTOMATIC1111/Forge's extra-networks cards (and Civitai Helper), then ``<name>.png``.
SIDECAR_SUFFIXES = tuple(f".preview{s}" for s in SAMPLE_SUFFIXES) + SAMPLE_SUFFIXES
#: A sample image larger than this is not shown (a card needs a thumbnail, not a poster).
MAX_SAMPLE_BYTES = 16 << 20


def sample_image(adapter_file: str | Path) -> Path | None:
    """The image a gallery shows for an adapter file, or None: a sidecar (:data:`SIDECAR_SUFFIXES`) beside it,
    else, when the file lies in a package ``lorahub train`` wrote (a training config beside it), the last of
    its ``samples/`` (the final step's). Links are not followed and images over :data:`MAX_SAMPLE_BYTES` are
    skipped: the file's folder is the catalogue owner's, but a card never reads past it."""
    p = Path(adapter_file)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name

    def usable(c: Path) -> bool:
        try:
            st = c.lstat()
        except OSError:
            return False
        import stat

        return stat.S_ISREG(st.st_mode) and 0 < st.st_size <= MAX_SAMPLE_BYTES

    for suffix in SIDECAR_SUFFIXES:
        c = p.with_name(stem + suffix)
        if usable(c):
            return c
    root = p.parent
    samples = root / "samples"
    if not any((root / n).is_file() for n in TRAIN_CONFIG_NAMES) or samples.is_symlink() or not samples.is_dir():
        return None
    try:
        found = sorted(c for c in samples.iterdir() if c.suffix.lower() in SAMPLE_SUFFIXES and usable(c))
    except OSError:
        return None
    return found[-1] if found else None
