"""``lorahub base``: the embedded default base model and what a ``--base`` spec resolves to.

No torch import here: ``base build`` imports it inside the library call,
``base info`` never does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lorahub.base.pretrain import PretrainConfig
from lorahub.cli.output import emit, info, json_option, warn

base_config_option = click.option(
    "--base-config",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local diffusers pipeline folder whose configs describe a single-file checkpoint.",
)


_PRETRAIN = PretrainConfig()


@click.group("base")
def base_group() -> None:
    """Base models: the embedded tiny SD 1.x, SDXL, Flux.1 and SD 3.5 models, the drawing base, local folders,
    single files, Hub ids.

    A base spec is a diffusers folder, a .safetensors checkpoint, a Hub id
    'namespace/name' (downloaded from $HF_ENDPOINT), 'lorahub/embedded-sd1-tiny'
    (the default: the shipped SD 1.x model pretrained to draw the shapes of
    lorahub.world, see docs/drawing-base.md, installed on first use), the same
    weights as 'lorahub/drawing-sd1-tiny' ('drawing' for short), or
    'lorahub/embedded-sdxl-tiny', 'lorahub/embedded-flux-tiny' or
    'lorahub/embedded-sd3-tiny' (built offline on first use, random weights).
    """


@base_group.command("build")
@click.option("--family", type=click.Choice(["sd1", "sdxl", "flux", "sd3"]), default="sd1", show_default=True,
              help="Which embedded model: sd1 (lorahub/embedded-sd1-tiny), sdxl (lorahub/embedded-sdxl-tiny), "
              "flux (lorahub/embedded-flux-tiny, Flux.1-dev) or sd3 (lorahub/embedded-sd3-tiny, SD 3.5).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Build random weights from this seed (architecture tests). Default: the model's default "
              "weights: for sd1 the pretrained drawing weights shipped with lorahub, for the others seed 0.")
@click.option("--force", is_flag=True, help="Rebuild even if it exists.")
@json_option
def build_cmd(family: str, seed: int | None, force: bool, as_json: bool) -> None:
    """Build an embedded base model (once; prints its folder).

    sd1 (the default base) installs the pretrained drawing weights shipped with
    lorahub (see docs/drawing-base.md); --seed builds random weights instead.
    The other families are random weights from a seed.
    """
    from lorahub.base import embedded

    model = embedded.model(family)
    path = embedded.embedded_path(family=family)
    marker = embedded.read_marker(path) if embedded.is_complete(path, family) else None
    if marker is not None and not force and _built_as(marker) != _wanted(model, seed):
        info(f"rebuilding: the existing build has {_built_as(marker)}")
        force = True
    if marker is not None and not force:
        info(f"already built ({_built_as(marker)}); --force rebuilds it")
    path = embedded.ensure_embedded(seed=seed, force=force, progress=info, family=family)
    marker = embedded.read_marker(path) or {}
    payload = {"id": model.id, "path": str(path), "seed": marker.get("seed"),
               "weights": marker.get("weights", "random"), "family": model.family}
    emit(payload, as_json, lambda p: p["path"])


def _built_as(marker: dict[str, Any]) -> str:
    """What an embedded build holds, in words: 'pretrained weights' or 'random weights, seed N'."""
    if marker.get("weights") == "pretrained":
        return "pretrained weights"
    return f"random weights, seed {marker.get('seed')}"


def _wanted(model: Any, seed: int | None) -> str:
    return "pretrained weights" if seed is None and model.pretrained else f"random weights, seed {seed or 0}"


@base_group.command("pretrain")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Folder to write the pretrained pipeline to (created; replaced only if it holds a lorahub base).")
@click.option("--steps", type=click.IntRange(min=1), default=_PRETRAIN.steps, show_default=True,
              help="UNet + text encoder training steps.")
@click.option("--vae-steps", type=click.IntRange(min=1), default=_PRETRAIN.vae_steps, show_default=True,
              help="Autoencoder training steps, at most (it stops once --vae-check images read right).")
@click.option("--vae-check", "vae_check", type=click.IntRange(min=0, max=10_000), default=_PRETRAIN.vae_check_images,
              show_default=True,
              help=f"Unseen images the autoencoder's round trip is judged on every {_PRETRAIN.vae_check_every} steps; "
                   "it stops early once they read right (0: no check).")
@click.option("--images", type=click.IntRange(min=1, max=100_000), default=_PRETRAIN.images, show_default=True,
              help="Distinct training images drawn from the world.")
@click.option("--batch", type=click.IntRange(min=1, max=4096), default=_PRETRAIN.batch, show_default=True,
              help="UNet batch size.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the weights, the training images and every random draw.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to train.")
@json_option
def pretrain_cmd(out: Path, steps: int, vae_steps: int, vae_check: int, images: int, batch: int,
                 seed: int, device: str, as_json: bool) -> None:
    """Pretrain the tiny drawing base from scratch on the shape world (see docs/drawing-base.md).

    Trains a 64 px SD 1.x-architecture pipeline (autoencoder, then UNet and
    text encoder) on captioned images of lorahub.world and writes it as a
    float16 safetensors diffusers folder. Progress goes to stderr; the folder
    appears only once it is complete.

    lorahub ships the output of `lorahub base pretrain --out DIR --seed 0`
    (about 65 minutes on 2 CPU cores) as the drawing base, --base drawing
    (lorahub/drawing-sd1-tiny); docs/drawing-base.md has its figures.
    """
    from lorahub.base.pretrain import pretrain

    cfg = PretrainConfig(seed=seed, device=device, steps=steps, vae_steps=vae_steps, images=images, batch=batch,
                         vae_check_images=max(1, vae_check), vae_check_every=_PRETRAIN.vae_check_every if vae_check else 0)
    path = pretrain(out, cfg, progress=info)
    payload = {"path": str(path), "seed": seed, "steps": cfg.steps, "vae_steps": cfg.vae_steps,
               "images": cfg.images, "device": device}
    emit(payload, as_json, lambda p: p["path"])


@base_group.command("info")
@click.argument("spec", required=False)
@base_config_option
@click.option("--download", is_flag=True, help="For a Hub id: download it now (else only parse the id).")
@json_option
def info_cmd(spec: str | None, base_config: Path | None, download: bool, as_json: bool) -> None:
    """Say what SPEC (default: the embedded model) resolves to, without loading it."""
    from lorahub.base.resolve import hub_endpoint, resolve_base

    ref = resolve_base(spec, base_config=base_config, download=download, build=False)
    data: dict[str, Any] = ref.to_dict()
    data["exists"] = ref.path is not None and ref.path.exists()
    notes: list[str] = []
    if ref.kind == "embedded":
        from lorahub.base import embedded

        data["built"] = embedded.is_complete(ref.location)
        marker = embedded.read_marker(ref.location) if data["built"] else None
        if marker is not None:
            data["weights"] = marker.get("weights", "random")
        elif embedded.model(ref.family or embedded.FAMILY).pretrained:
            data["weights"] = "pretrained"
        if not data["built"]:
            notes.append("not built yet: it is built on first use, or now with 'lorahub base build'")
    if ref.kind == "hub":
        data["endpoint"] = hub_endpoint()
        if ref.path is None:
            notes.append("not downloaded: it is downloaded on first use, or now with --download")
    if ref.path is not None and ref.path.is_dir() and (ref.path / "model_index.json").is_file():
        data["components"] = _components(ref.path)
        data["size_bytes"] = _size(ref.path)
    elif ref.kind == "single_file":
        from lorahub.adapters.header import read_header

        header = read_header(ref.location)
        data["size_bytes"] = header.file_size
        data["tensors"] = len(header.tensors)
        if not ref.config:
            notes.append("no config: loading it needs --base-config FOLDER (lorahub never fetches configs)")
    data["notes"] = notes
    emit(data, as_json, _render)
    if not as_json:
        for note in notes:
            warn(note) if "needs" in note else info(note)


def _components(folder: Path) -> dict[str, str]:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    for key, value in sorted(index.items()):
        if key.startswith("_"):
            continue
        if isinstance(value, list) and len(value) == 2:
            out[key] = "none" if value[1] is None else f"{value[0]}.{value[1]}"
    return out


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _render(d: dict[str, Any]) -> list[str]:
    rows = [("kind", d["kind"]), ("name", d["name"]), ("location", d["location"])]
    rows.append(("family", d.get("family") or "unknown"))
    for key in ("pipeline_class", "config", "revision", "endpoint", "seed", "weights"):
        if d.get(key) is not None:
            rows.append((key.replace("_", " "), str(d[key])))
    if "built" in d:
        rows.append(("built", "yes" if d["built"] else "no"))
    if d.get("components"):
        rows.append(("components", ", ".join(f"{k}={v}" for k, v in d["components"].items() if v != "none")))
    if d.get("tensors") is not None:
        rows.append(("tensors", str(d["tensors"])))
    if d.get("size_bytes") is not None:
        rows.append(("size", f"{d['size_bytes']:,} bytes"))
    width = max(len(k) for k, _ in rows)
    return [f"{k:<{width}}  {v}" for k, v in rows]
