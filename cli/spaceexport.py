"""``lorahub space export DIR``: the page as a Hugging Face Space folder, ready for ``hf upload``.

The folder holds:

* ``app.py``: sets the exported defaults (hardware, base, what to index; the Space's variables win),
  then :func:`lorahub.cli.spacehost.space_blocks` opens and fills the registry and builds the page, and
  :func:`lorahub.cli.spacehost.serve` serves it hardened on ``$GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT``;
* ``README.md``: the Space's front matter (``sdk: gradio`` at the installed Gradio version, the Python
  version, licence, short description, ``suggested_hardware``) and what the Space does;
* ``requirements.txt``: lorahub from the wheel in ``wheels/`` (built here from this source tree, offline),
  and the ``ml``, ``space`` and ``semantic`` extras pinned to the versions installed here (``spaces`` too on ZeroGPU);
* ``wheels/lorahub_toolkit-VERSION-py3-none-any.whl``.

Everything is written into a temporary folder beside ``DIR`` and moved into place at once.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorahub.errors import LorahubError, UsageError

DIST = "lorahub-toolkit"
#: The extras a Space needs: the models, the page and search by meaning (16 MB of static embeddings).
EXTRAS = ("ml", "space", "semantic")
#: ``--hardware`` -> the Hub's ``suggested_hardware``.
SUGGESTED_HARDWARE = {"cpu": "cpu-basic", "zero-gpu": "zero-a10g", "gpu": "a10g-small"}
SHORT_DESCRIPTION = "Search, preview, blend, train and push LoRA adapters"  # the Hub allows 60 characters
#: What of the source tree goes into the wheel (pyproject.toml's package-dir).
TREE = ("pyproject.toml", "README.md", "lorahub", "cli", "registry", "space", "schemas")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def source_tree() -> Path:
    """The source tree this lorahub runs from (an editable install: ``pip install -e .``)."""
    import lorahub

    root = Path(lorahub.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or f'name = "{DIST}"' not in pyproject.read_text(encoding="utf-8"):
        raise UsageError("lorahub space export builds lorahub's wheel from its source tree, and this lorahub was "
                         "not installed from one", hint="clone the repository and pip install -e '.[ml,space,semantic]'")
    return root


def build_wheel(out_dir: Path, *, root: Path | None = None) -> Path:
    """Build lorahub's wheel from the source tree into ``out_dir``, offline (no build isolation: the
    build backend installed here is used); returns its path. The tree is copied first: nothing is
    written into it."""
    root = root or source_tree()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lorahub-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in TREE:
            p = root / name
            if p.is_dir():
                shutil.copytree(p, src / name, ignore=ignore)
            elif p.is_file():
                shutil.copy2(p, src / name)
        if importlib.util.find_spec("build") is not None:
            cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out_dir), str(src)]
        else:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--wheel-dir", str(out_dir), str(src)]
        env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        wheels = sorted(out_dir.glob("lorahub_toolkit-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel was written"]
            raise LorahubError(f"building lorahub's wheel failed: {tail[0][:300]}")
    return wheels[-1]


def pinned_extras(hardware: str) -> list[str]:
    """``name==version`` of every requirement of the ``ml``, ``space`` and ``semantic`` extras, as installed here (and
    ``spaces`` on ZeroGPU)."""
    from packaging.requirements import Requirement

    pins: list[str] = []
    missing: list[str] = []
    for line in md.requires(DIST) or []:
        req = Requirement(line)
        if req.marker is None or not any(req.marker.evaluate({"extra": e}) for e in EXTRAS):
            continue
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            missing.append(req.name)
            continue
        # a local label (torch's ``+cpu``) names a build no package index serves under that name
        pin = f"{req.name}=={version.split('+', 1)[0]}"
        if pin not in pins:
            pins.append(pin)
    if missing:
        raise UsageError(f"the Space's extras are pinned to the installed versions, and {', '.join(missing)} "
                         "is not installed", hint=f"pip install '{DIST}[ml,space,semantic]'")
    if hardware == "zero-gpu":
        try:
            pins.append(f"spaces=={md.version('spaces')}")
        except md.PackageNotFoundError:
            pins.append("spaces")
    return pins


def _check_base(base: str | None) -> str | None:
    if base is None:
        return None
    base = base.strip()
    if not _HUB_ID.match(base):
        raise UsageError(f"--base {base[:100]!r}: a Space loads its base from the Hub: give a Hub id (OWNER/NAME)",
                         hint="a local folder or file does not exist on the Space")
    return base


def app_text(*, hardware: str, base: str | None, index: str | None, version: str) -> str:
    lines = [
        f'"""lorahub on a Hugging Face Space, written by `lorahub space export` (lorahub {version}).',
        "",
        "The defaults below were chosen at export; the Space's variables of the same names win (README.md).",
        '"""',
        "",
        "import os",
        "",
        f"os.environ.setdefault('LORAHUB_SPACE_HARDWARE', {hardware!r})",
    ]
    if base:
        lines.append(f"os.environ.setdefault('LORAHUB_SPACE_BASE', {base!r})")
    if index:
        lines.append(f"os.environ.setdefault('LORAHUB_SPACE_INDEX', {index!r})")
    lines += [
        "",
        "if os.environ['LORAHUB_SPACE_HARDWARE'] == 'zero-gpu':",
        "    try:  # ZeroGPU wants `spaces` imported before torch",
        "        import spaces  # noqa: F401",
        "    except ImportError:",
        "        pass",
        "",
        "from lorahub.cli.spacehost import serve, space_blocks  # noqa: E402",
        "",
        "# the registry: the embedded base's demo adapters, plus what $LORAHUB_SPACE_INDEX names",
        "demo = space_blocks(demo_adapters=True)",
        "",
        'if __name__ == "__main__":',
        "    serve(demo)",
        "",
    ]
    return "\n".join(lines)


def readme_text(*, title: str, hardware: str, base: str | None, index: str | None, sdk_version: str,
                space_id: str | None) -> str:
    import yaml

    front: dict[str, Any] = {
        "title": title, "emoji": "🧩", "colorFrom": "indigo", "colorTo": "pink", "sdk": "gradio",
        "sdk_version": sdk_version, "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "app_file": "app.py", "pinned": False, "license": "apache-2.0", "short_description": SHORT_DESCRIPTION,
        "suggested_hardware": SUGGESTED_HARDWARE[hardware], "tags": ["lora", "stable-diffusion", "lorahub"],
    }
    if base and hardware != "cpu":
        front["models"] = [base]
        front["startup_duration_timeout"] = "1h"  # the base is downloaded at the first start
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip()
    target = space_id or "OWNER/NAME"
    return f"""---
{head}
---

# {title}

Stable Diffusion LoRA adapters in the browser, on [lorahub](https://github.com/lorahub/lorahub):

- **Search** the Space's registry: it opens on its adapters (name, trigger words, base family, format, tags);
  click a result to add it to the preview. The registry starts with the demo adapters of lorahub's embedded
  base{' and the Hub repos named by `LORAHUB_SPACE_INDEX`' if index else ''}; a Hub result's file is
  downloaded on its first preview (checked against the SHA-256 recorded when it was indexed) and cached.
- **Preview & blend**: one base model stays loaded, the chosen adapters are hot-swapped between clicks.
- **Blend search**: a few example images in, the chosen adapters' weights found (denoising loss plus L1).
- **Inspect** an uploaded `.safetensors` adapter (pickles are refused unread).
- **Train** a LoRA from a few captioned images, with live loss and samples.
- **Push** a package to the Hub or a `lorahub serve`, with the visitor's own token (never the Space's).

Hardware: **{hardware}** (`suggested_hardware: {SUGGESTED_HARDWARE[hardware]}`).{
    " Rendering and training run under the `spaces` package's `spaces.GPU` decorator (a GPU slice per call)."
    if hardware == "zero-gpu" else ""}

## Deploy

This folder is the whole Space. With the Hugging Face CLI (`pip install huggingface_hub`):

```
hf upload {target} . . --repo-type space
```

(run inside this folder; `hf repo create {target} --repo-type space --space_sdk gradio` first if the Space does
not exist). The Hub builds the Space from `requirements.txt`: lorahub from the wheel in `wheels/`
({'fetched from this Space' if space_id else 'by its path: export with `--space-id` for the Hub, whose build sees requirements.txt alone'}),
its extras pinned to the versions it was exported with. Locally: `pip install -r requirements.txt && python app.py`
inside this folder.

## Settings (the Space's variables)

| variable | meaning |
|---|---|
| `LORAHUB_SPACE_HARDWARE` | `cpu`, `zero-gpu` or `gpu` (default: `{hardware}`, set in app.py). |
| `LORAHUB_SPACE_BASE` | Base model (a Hub id) on a GPU or ZeroGPU Space; on a CPU the embedded tiny SD 1.x model (built locally, no download).{f' Default: `{base}`.' if base else ''} |
| `LORAHUB_SPACE_BASE_SDXL` | The SDXL family's base, likewise; on a CPU the embedded tiny SDXL model. |
| `LORAHUB_SPACE_BASE_FLUX` | The Flux.1 family's base (e.g. `black-forest-labs/FLUX.1-dev`), likewise; on a CPU the embedded tiny Flux.1 model. |
| `LORAHUB_SPACE_BASE_SD3` | The SD 3.5 family's base (e.g. `stabilityai/stable-diffusion-3.5-medium`), likewise; on a CPU the embedded tiny SD 3.5 model. |
| `LORAHUB_SPACE_INDEX` | Hub repos to index at start (headers only): `endpoint=URL, author=NAME, tag=TAG, repo=NS/NAME, search=WORD, limit=N`.{f' Default: `{index}`.' if index else ''} Public repos only: the Space's token is never sent. |
| `LORAHUB_DATABASE_URL` | The registry's database (default: SQLite under `$LORAHUB_HOME`). |
| `LORAHUB_HOME` | lorahub's state folder (never readable through the page). |
| `LORAHUB_UI_PUSH_ENDPOINTS` | Comma-separated Hub endpoints the Push tab may use besides `https://huggingface.co`. |
| `LORAHUB_UI_MAX_FILE_SIZE` | Largest upload (default `1G`). |
| `LORAHUB_UI_RATE_LIMITS` | Calls per client address, e.g. `train=3/3600,render=20/60`. |
"""


def requirements_text(wheel: Path, pins: list[str], *, space_id: str | None, endpoint: str | None) -> str:
    if space_id:
        from lorahub.hub.endpoint import normalize_endpoint

        where = f"{normalize_endpoint(endpoint)}/spaces/{space_id}/resolve/main/wheels/{wheel.name}"
    else:
        where = f"./wheels/{wheel.name}"
    return "\n".join([
        "# Written by `lorahub space export`: lorahub from its wheel (no package index knows it),",
        "# the ml, space and semantic extras pinned to the versions it was exported with.",
        f"{DIST} @ {where}" if space_id else where,
        *pins,
        "",
    ])


def export_space(dest: str | os.PathLike[str], *, base: str | None = None, index: str | None = None,
                 hardware: str = "cpu", space_id: str | None = None, endpoint: str | None = None,
                 title: str = "lorahub", force: bool = False,
                 say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the Space folder into ``dest`` (see the module docstring); returns what was written."""
    from lorahub.cli.spacehost import parse_index

    say = say or (lambda _m: None)
    if hardware not in SUGGESTED_HARDWARE:
        raise UsageError(f"--hardware must be one of {', '.join(SUGGESTED_HARDWARE)}")
    base = _check_base(base)
    spec = parse_index(index)
    index_text = spec.text() if spec is not None else None
    if space_id is not None and not _HUB_ID.match(space_id):
        raise UsageError(f"--space-id {space_id[:100]!r} is not OWNER/NAME")
    if endpoint is not None and space_id is None:
        raise UsageError("--endpoint goes with --space-id")
    title = " ".join((title or "lorahub").split())[:60] or "lorahub"
    out = Path(dest).expanduser().absolute()
    if out.exists() and not force and not (out.is_dir() and not any(out.iterdir())):
        raise UsageError(f"{out} exists and is not empty", hint="pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is not a folder")
    import gradio

    pins = pinned_extras(hardware)
    version = md.version(DIST)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        say("lorahub space export: building lorahub's wheel from this tree")
        wheel = build_wheel(tmp / "wheels")
        (tmp / "app.py").write_text(app_text(hardware=hardware, base=base, index=index_text, version=version),
                                    encoding="utf-8")
        (tmp / "README.md").write_text(readme_text(title=title, hardware=hardware, base=base, index=index_text,
                                                   sdk_version=gradio.__version__, space_id=space_id), encoding="utf-8")
        (tmp / "requirements.txt").write_text(requirements_text(wheel, pins, space_id=space_id, endpoint=endpoint),
                                              encoding="utf-8")
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = ["app.py", "README.md", "requirements.txt", f"wheels/{wheel.name}"]
    if space_id:
        deploy = f"hf upload {space_id} {out} . --repo-type space"
    else:  # the Hub installs requirements.txt before the folder's files: the wheel must be named by its URL
        deploy = (f"run here with: cd {out} && pip install -r requirements.txt && python app.py; for the Hub, "
                  "export again with --space-id OWNER/NAME, then: hf upload OWNER/NAME DIR . --repo-type space")
    return {"folder": str(out), "files": files, "wheel": f"wheels/{wheel.name}", "hardware": hardware,
            "sdk_version": gradio.__version__, "pins": pins, "index": index_text, "base": base,
            "deploy": deploy}


__all__ = ["build_wheel", "export_space", "pinned_extras", "source_tree"]
