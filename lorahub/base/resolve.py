"""Base-model specs: what ``--base`` may name, and loading it as a diffusers pipeline.

A spec is one of:

- nothing, ``"embedded"`` or ``"lorahub/embedded-sd1-tiny"``: the embedded tiny
  SD 1.x model (:mod:`lorahub.base.embedded`), built on first need;
  ``"lorahub/embedded-sdxl-tiny"`` (or ``"embedded-sdxl"``): the embedded tiny SDXL
  model, likewise;
- ``"lorahub/embedded-flux-tiny"`` / ``"embedded-flux"`` and ``"lorahub/embedded-sd3-tiny"`` /
  ``"embedded-sd3"``: the embedded tiny Flux.1 and SD 3.5 models (families ``flux``, ``sd3``);
- a local diffusers pipeline folder (it has ``model_index.json``): ``StableDiffusionPipeline``,
  ``StableDiffusionXLPipeline``, ``FluxPipeline`` or ``StableDiffusion3Pipeline``;
- a single-file ``.safetensors`` checkpoint in the original SD layout (A1111,
  ComfyUI, Civitai). diffusers needs the configs of the pipeline to load one;
  lorahub never lets it fetch them from the network, so pass a local diffusers
  folder of the same architecture (``base_config=``, ``--base-config``). For a
  single file of an embedded architecture (SD 1.x or SDXL, recognised by its
  layout and cross-attention width) the embedded folder is used;
- a Hub id ``namespace/name`` (optionally ``namespace/name@revision``): downloaded
  with ``huggingface_hub.snapshot_download`` from ``$HF_ENDPOINT`` (default
  huggingface.co) into the Hugging Face cache; only configs, tokenizer files
  and ``.safetensors`` weights are fetched.

Pickle checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ...) are refused by
name and never opened by an unpickler; folders are loaded with
``use_safetensors=True``.

:func:`resolve_base` needs neither torch nor diffusers. :func:`load_pipeline`
imports them when called.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..adapters.header import read_header
from ..adapters.pickles import HINT as PICKLE_HINT
from ..adapters.pickles import PICKLE_SUFFIXES, pickle_refusal
from ..errors import AdapterFileError, BaseModelError, PickleRefusedError
from . import drawing as _drawing
from . import embedded as _embedded
from .checkpoint import checkpoint_family, context_dim

KINDS = ("embedded", "folder", "single_file", "hub")

#: Words that name the embedded SD 1.x model.
EMBEDDED_ALIASES = ("", "embedded", "default", _embedded.EMBEDDED_ID)
#: Words that name the embedded SDXL model.
EMBEDDED_XL_ALIASES = ("embedded-sdxl", _embedded.SDXL_ID)
#: Words naming the other embedded models, with their family (``embedded-flux``, ``lorahub/embedded-flux-tiny``).
EMBEDDED_OTHER_ALIASES: dict[str, str] = {
    word: family for family in ("flux", "sd3")
    for word in (f"embedded-{family}", _embedded.model(family).id)
}

#: Words that name the shipped drawing base (a local path of the same name wins).
DRAWING_ALIASES = ("drawing", _drawing.DRAWING_ID)

#: Pipeline classes lorahub can load, with the family they imply (None: look closer).
PIPELINE_CLASSES: dict[str, str | None] = {
    "StableDiffusionPipeline": None,
    "StableDiffusionXLPipeline": "sdxl",
    "FluxPipeline": "flux",
    "StableDiffusion3Pipeline": "sd3",
}
#: The components a pipeline folder of each class must name in model_index.json.
REQUIRED_COMPONENTS: dict[str, tuple[str, ...]] = {
    "StableDiffusionPipeline": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "StableDiffusionXLPipeline": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "FluxPipeline": ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
    "StableDiffusion3Pipeline": ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer",
                                 "tokenizer_2", "scheduler"),
}

#: What a Hub download fetches (``*`` matches ``/`` too): configs, tokenizer files, safetensors.
HUB_ALLOW = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]
#: ... and what it skips: pickles, other frameworks, variants and the safety checker.
HUB_IGNORE = [
    "*.ckpt", "*.bin", "*.pt", "*.pth", "*.pkl", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.pb",
    "*.fp16.*", "*.bf16.*", "*non_ema*", "*.ema.*",
    "safety_checker/*", "feature_extractor/*",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")


@dataclass(frozen=True)
class BaseRef:
    """A resolved base model.

    ``location`` is a local folder (``embedded``, ``folder``, ``hub`` once
    downloaded), a local file (``single_file``) or the repo id (``hub`` when
    resolved with ``download=False``). ``family`` is a hint: ``"sd1"``,
    ``"sd2"``, ``"sdxl"`` or ``None`` when unknown.
    """

    kind: str
    location: str
    family: str | None = None
    spec: str | None = None
    #: The pipeline class named by model_index.json (folders), else None.
    pipeline_class: str | None = None
    #: single_file: the local diffusers folder whose configs describe the checkpoint.
    config: str | None = None
    #: hub: the repo id and revision asked for.
    repo_id: str | None = None
    revision: str | None = None
    #: embedded: the seed recorded in the marker, when built.
    seed: int | None = None
    #: What to show instead of the location (a shipped folder: its id).
    label: str | None = None

    @property
    def path(self) -> Path | None:
        """The local folder or file, or ``None`` for a Hub ref not downloaded."""
        if self.kind == "hub" and self.location == self.repo_id:
            return None
        return Path(self.location)

    @property
    def name(self) -> str:
        """What to show the user: the embedded id, the Hub id, a shipped folder's id, or the path."""
        if self.label:
            return self.label
        if self.kind == "embedded":
            return _embedded.model(self.family or _embedded.FAMILY).id
        if self.kind == "hub" and self.repo_id:
            return self.repo_id + (f"@{self.revision}" if self.revision else "")
        return self.location

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["name"] = self.name
        return out


def is_embedded_spec(spec: str | os.PathLike[str] | None) -> bool:
    return embedded_family(spec) is not None


def embedded_family(spec: str | os.PathLike[str] | None) -> str | None:
    """``"sd1"``, ``"sdxl"``, ``"flux"`` or ``"sd3"`` when ``spec`` names an embedded model, else ``None``."""
    if spec is None:
        return _embedded.FAMILY
    if not isinstance(spec, str):
        return None
    word = spec.strip()
    if word in EMBEDDED_ALIASES:
        return _embedded.FAMILY
    if word in EMBEDDED_XL_ALIASES:
        return "sdxl"
    return EMBEDDED_OTHER_ALIASES.get(word)


def looks_like_hub_id(spec: str) -> bool:
    """``namespace/name`` or ``namespace/name@revision``, and not a path-like string."""
    if spec.startswith((".", "/", "~")) or "\\" in spec:
        return False
    if spec.lower().endswith((".safetensors", *PICKLE_SUFFIXES)):
        return False
    return bool(_HUB_ID.match(spec))


def resolve_base(
    spec: str | os.PathLike[str] | None = None,
    *,
    base_config: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    download: bool = True,
    build: bool = True,
    seed: int | None = None,
    home: str | os.PathLike[str] | None = None,
) -> BaseRef:
    """Turn a ``--base`` spec into a :class:`BaseRef`; raise :class:`BaseModelError` when it is unusable.

    ``build=False`` does not build the embedded model (the ref points where it
    would be). ``download=False`` does not contact the Hub (the ref holds the
    repo id). ``base_config`` is the local diffusers folder used to interpret
    a single-file checkpoint. ``seed`` and ``home`` go to
    :func:`~lorahub.base.embedded.ensure_embedded`.
    """
    family = embedded_family(spec)
    if family is not None:
        return _resolve_embedded(build=build, seed=seed, home=home, spec=None if spec is None else str(spec),
                                 family=family)
    text = os.fspath(spec).strip()  # type: ignore[arg-type]
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not path.is_dir():
        _refuse_pickle(path)
    if path.is_dir():
        return _resolve_folder(path, spec=text)
    if path.is_file():
        return _resolve_single_file(path, spec=text, base_config=base_config, build=build, home=home)
    if path.exists():
        raise BaseModelError(f"{text}: not a regular file or folder")
    if text in DRAWING_ALIASES:
        return _resolve_folder(_drawing.shipped_path(), spec=text, label=_drawing.DRAWING_ID)
    if looks_like_hub_id(text):
        repo_id, _, rev = text.partition("@")
        return _resolve_hub(repo_id, revision=revision or rev or None, download=download, spec=text)
    raise BaseModelError(
        f"{text}: no such file or folder",
        hint="a base model is a diffusers folder, a .safetensors checkpoint, a Hub id 'namespace/name' "
        f"or a shipped model: {', '.join([*(m.id for m in _embedded.MODELS.values()), _drawing.DRAWING_ID])}",
    )


def _resolve_embedded(*, build: bool, seed: int | None, home: str | os.PathLike[str] | None, spec: str | None,
                      family: str = _embedded.FAMILY) -> BaseRef:
    model = _embedded.model(family)
    if build:
        location = _embedded.ensure_embedded(seed=seed, home=home, family=family)
    else:
        location = _embedded.embedded_path(home, family)
    marker = _embedded.read_marker(location) if _embedded.is_complete(location, family) else None
    return BaseRef(
        kind="embedded",
        location=str(location),
        family=family,
        spec=spec,
        pipeline_class=model.pipeline_class,
        seed=marker.get("seed") if marker else None,
    )


def _refuse_pickle(path: Path) -> None:
    """Refuse a pickle-named file: by content when it exists, else by name."""
    if path.is_file():
        read_header(path)  # raises PickleRefusedError for real pickles
    raise pickle_refusal(path, f"'{path.suffix}' names a pickle checkpoint",
                         hint=f"{PICKLE_HINT}; if it already is safetensors, rename it")


def read_pipeline_index(folder: Path) -> dict[str, Any]:
    """model_index.json of a pipeline folder, checked; raises :class:`BaseModelError`."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        hint = None
        if (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file():
            hint = "this looks like a single model or an adapter folder, not a whole pipeline"
        elif any(folder.glob("*.safetensors")):
            hint = "to load a single-file checkpoint, pass the .safetensors file itself"
        raise BaseModelError(
            f"{folder}: no model_index.json, so not a diffusers pipeline folder",
            hint=hint or "a base folder is what DiffusionPipeline.save_pretrained writes",
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BaseModelError(f"{index_path}: not readable JSON ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise BaseModelError(f"{index_path}: not a pipeline index (no '_class_name')")
    return index


def _folder_family(folder: Path, cls: str) -> str | None:
    marker = _embedded.read_marker(folder)
    if marker and isinstance(marker.get("family"), str):
        return marker["family"]
    implied = PIPELINE_CLASSES.get(cls)
    if implied:
        return implied
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    width = unet.get("cross_attention_dim")
    if width in (768, 1024):
        return "sd1" if width == 768 else "sd2"
    return "sd2" if unet.get("use_linear_projection") else "sd1"


def _resolve_folder(folder: Path, *, spec: str | None, kind: str = "folder", **extra: Any) -> BaseRef:
    index = read_pipeline_index(folder)
    cls = index["_class_name"]
    if cls not in PIPELINE_CLASSES:
        raise BaseModelError(
            f"{folder}: a {cls}, not a Stable Diffusion pipeline",
            hint="lorahub supports StableDiffusionPipeline (SD 1.x/2.x), StableDiffusionXLPipeline, "
            "FluxPipeline and StableDiffusion3Pipeline folders",
        )
    missing = [name for name in REQUIRED_COMPONENTS[cls] if name not in index]
    if missing:
        raise BaseModelError(f"{folder}: model_index.json lacks {', '.join(missing)}: not a complete pipeline")
    _check_weights(folder, index)
    marker = _embedded.read_marker(folder)
    seed = marker.get("seed") if marker and _embedded.model_of_id(str(marker.get("id"))) is not None else None
    return BaseRef(
        kind=kind,
        location=str(folder),
        family=_folder_family(folder, cls),
        spec=spec,
        pipeline_class=cls,
        seed=seed,
        **extra,
    )


_WEIGHTED = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")


def _check_weights(folder: Path, index: dict[str, Any]) -> None:
    """Every weighted component needs .safetensors weights; pickle-only ones are refused up front."""
    for name in _WEIGHTED:
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] is not None):
            continue
        sub = folder / name
        if not sub.is_dir():
            raise BaseModelError(f"{folder}: model_index.json names '{name}' but there is no {name}/ folder")
        if any(sub.glob("*.safetensors")):
            continue
        pickles = sorted(p.name for p in sub.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise pickle_refusal(sub, f"only pickle weights ({', '.join(pickles[:3])})",
                                 hint="convert them to .safetensors with a tool you trust")
        raise BaseModelError(f"{sub}: no .safetensors weights")


_ADAPTER_MARKS = ("lora_unet_", "lora_te", ".lora_A.", ".lora_B.", ".lora.down.", "lora_down", "hada_", "lokr_")


def _resolve_single_file(
    path: Path,
    *,
    spec: str,
    base_config: str | os.PathLike[str] | None,
    build: bool,
    home: str | os.PathLike[str] | None,
) -> BaseRef:
    if path.suffix.lower() != ".safetensors":
        header = read_header(path)  # refuses pickles by content, explains non-safetensors
        raise BaseModelError(
            f"{path}: single-file checkpoints must be named .safetensors",
            hint="rename it" if header.tensors else None,
        )
    try:
        header = read_header(path)
    except PickleRefusedError:
        raise
    except AdapterFileError as exc:  # truncated, not safetensors, ...: say it as a base-model error
        raise BaseModelError(str(exc)) from None
    family = checkpoint_family(header)
    if family is None:
        if any(any(mark in name for mark in _ADAPTER_MARKS) for name in header.tensors):
            raise BaseModelError(
                f"{path}: a LoRA/LyCORIS adapter, not a base model checkpoint",
                hint="pass adapters as adapters; --base wants a full Stable Diffusion model",
            )
        raise BaseModelError(
            f"{path}: not a Stable Diffusion checkpoint (no model.diffusion_model.* tensors)",
        )
    config: str | None = None
    if base_config is not None:
        cfg = Path(base_config).expanduser()
        if not cfg.is_dir():
            raise BaseModelError(f"--base-config {cfg}: no such folder")
        read_pipeline_index(cfg)
        config = str(cfg)
    elif family in _embedded.MODELS and context_dim(header) == _embedded.model(family).unet_config.get("cross_attention_dim"):
        # An embedded architecture: its own folder describes it.
        emb = _embedded.ensure_embedded(home=home, family=family) if build else _embedded.embedded_path(home, family)
        config = str(emb)
    return BaseRef(kind="single_file", location=str(path), family=family, spec=spec, config=config)


def _hub_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _resolve_hub(repo_id: str, *, revision: str | None, download: bool, spec: str) -> BaseRef:
    if not download:
        return BaseRef(kind="hub", location=repo_id, spec=spec, repo_id=repo_id, revision=revision)
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    endpoint = hub_endpoint()
    where = f"{repo_id} on {endpoint}"
    try:
        local = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=HUB_ALLOW,
            ignore_patterns=HUB_IGNORE,
            endpoint=endpoint,
            cache_dir=_hub_cache_dir(),
            local_files_only=_offline(),
            library_name="lorahub",
        )
    except hf_errors.GatedRepoError:
        raise BaseModelError(f"{where}: gated; accept its terms on the Hub and log in (hf auth login)") from None
    except hf_errors.RepositoryNotFoundError:
        raise BaseModelError(
            f"{where}: no such model repository (or it is private)",
            hint="check the id; for a private repo log in with hf auth login or set HF_TOKEN",
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise BaseModelError(f"{where}: no revision '{revision}'") from None
    except hf_errors.LocalEntryNotFoundError as exc:
        cause = exc.__cause__
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if _offline():
            offline = "offline mode is on (HF_HUB_OFFLINE)"
        elif isinstance(cause, hf_errors.HfHubHTTPError) and status:
            offline = f"{endpoint} answered HTTP {status}"
        else:
            offline = f"{endpoint} cannot be reached"
        raise BaseModelError(
            f"{repo_id}: not in the local Hugging Face cache and {offline}",
            hint="connect to the network, set HF_ENDPOINT, or use a local folder or .safetensors file",
        ) from None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise BaseModelError(f"{where}: the Hub answered HTTP {status or '?'}: {str(exc).splitlines()[0]}") from None
    except (OSError, ValueError) as exc:  # connection errors, invalid ids
        raise BaseModelError(f"{where}: download failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    folder = Path(local)
    if not (folder / "model_index.json").is_file():
        raise BaseModelError(
            f"{where}: not a diffusers pipeline repository (no model_index.json)",
            hint="single-file checkpoints on the Hub: download the .safetensors and pass its path",
        )
    return _resolve_folder(folder, spec=spec, kind="hub", repo_id=repo_id, revision=revision)


# ----------------------------------------------------------------------------------------------
# Loading


def resolve_dtype(dtype: Any):  # noqa: ANN201 - torch.dtype or None
    """``None``, a torch dtype, or a name (``float32``/``fp32``, ``float16``/``fp16``/``half``, ``bfloat16``/``bf16``)."""
    if dtype is None:
        return None
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    }
    key = str(dtype).replace("torch.", "").lower()
    if key not in names:
        raise BaseModelError(f"unknown dtype '{dtype}'", hint="use float32, float16 or bfloat16")
    return names[key]


def resolve_device(device: Any) -> str:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed through."""
    if device is None or str(device) == "auto":
        import torch

        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    return str(device)


def load_pipeline(
    spec: str | os.PathLike[str] | BaseRef | None = None,
    *,
    device: str = "cpu",
    dtype: Any = None,
    base_config: str | os.PathLike[str] | None = None,
    progress_bar: bool = False,
):  # noqa: ANN201 - returns a diffusers pipeline
    """Resolve ``spec`` and load it as a diffusers pipeline on ``device``.

    Returns a ``StableDiffusionPipeline`` (or ``StableDiffusionXLPipeline`` for
    SDXL folders) with the safety checker disabled, loaded from safetensors
    only and without network access (Hub repos are downloaded by
    :func:`resolve_base` first). ``dtype`` is ``None`` (as saved), a torch dtype
    or a name such as ``"float16"``; a float16 folder loaded on the CPU as saved comes in float32 (the CPU
    does not run float16 well).
    """
    ref = spec if isinstance(spec, BaseRef) else resolve_base(spec, base_config=base_config)
    if ref.kind == "hub" and ref.path is None:  # resolved with download=False: fetch it now
        ref = resolve_base(ref.repo_id, revision=ref.revision)
    from ..errors import require

    torch = require("torch", "ml")
    diffusers = require("diffusers", "ml")
    torch_dtype = resolve_dtype(dtype)
    target = resolve_device(device)

    cls_name = ref.pipeline_class or "StableDiffusionPipeline"
    if ref.kind == "single_file" and ref.family == "sdxl":
        cls_name = "StableDiffusionXLPipeline"
    extra: dict[str, Any] = {}
    if cls_name == "StableDiffusionPipeline":
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    elif cls_name == "StableDiffusionXLPipeline":
        extra = {"add_watermarker": False}  # (the invisible watermark is a download-time extra of diffusers)
    with _quiet_loading():
        cls = getattr(diffusers, cls_name)
        if ref.kind == "single_file":
            pipe = _load_single_file(cls, ref, torch_dtype, extra)
        else:
            try:
                pipe = cls.from_pretrained(
                    ref.location, dtype=torch_dtype, use_safetensors=True, local_files_only=True, **extra
                )
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise _load_error(ref, exc) from None
        if torch_dtype is None and target == "cpu" and getattr(pipe, "dtype", None) == torch.float16:
            pipe = pipe.to(dtype=torch.float32)  # saved in float16 (the drawing base): the CPU needs float32
    try:
        pipe = pipe.to(target)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise BaseModelError(f"cannot move the pipeline to device '{target}': {str(exc).splitlines()[0]}") from None
    pipe.set_progress_bar_config(disable=not progress_bar)
    return pipe


def _load_single_file(cls: Any, ref: BaseRef, torch_dtype: Any, extra: dict[str, Any]):  # noqa: ANN202
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch_dtype, **extra}
    if ref.config:
        kwargs["config"] = ref.config
    try:
        return cls.from_single_file(ref.location, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        if not ref.config:
            raise BaseModelError(
                f"{ref.location}: diffusers needs the configuration of this {ref.family or 'SD'} checkpoint "
                "and lorahub does not fetch it from the network",
                hint="pass --base-config FOLDER, a local diffusers pipeline folder of the same architecture",
            ) from None
        raise BaseModelError(
            f"{ref.location}: cannot load it with the configs of {ref.config}: {str(exc).splitlines()[0]}",
            hint="--base-config must be a pipeline of the same architecture",
        ) from None


def _load_error(ref: BaseRef, exc: BaseException) -> BaseModelError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "safetensors" in str(exc).lower() and ("could not find" in str(exc).lower() or "not found" in str(exc).lower()):
        return BaseModelError(
            f"{ref.location}: the pipeline has no .safetensors weights",
            hint="lorahub never loads pickle weights (.bin/.ckpt); convert them to safetensors",
        )
    return BaseModelError(f"{ref.location}: cannot load the pipeline: {text}")


class _quiet_loading:
    """Silence diffusers/transformers advisory logging and progress bars while loading."""

    def __enter__(self) -> None:
        import diffusers
        import transformers

        self._d = diffusers.utils.logging
        self._t = transformers.utils.logging
        self._levels = (self._d.get_verbosity(), self._t.get_verbosity())
        self._d.set_verbosity_error()
        self._t.set_verbosity_error()
        self._tbar = self._t.is_progress_bar_enabled()
        self._dbar = self._d.is_progress_bar_enabled()
        if self._tbar:
            self._t.disable_progress_bar()
        if self._dbar:
            self._d.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        self._d.set_verbosity(self._levels[0])
        self._t.set_verbosity(self._levels[1])
        if self._tbar:
            self._t.enable_progress_bar()
        if self._dbar:
            self._d.enable_progress_bar()


#: Public name of the context manager (``with quiet_loading(): ...``) for other modules.
quiet_loading = _quiet_loading
