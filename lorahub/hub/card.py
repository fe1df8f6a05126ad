"""Model cards for LoRA repos, as the Hugging Face Hub and diffusers expect them.

The YAML front matter carries what the Hub indexes (``base_model``,
``base_model_relation: adapter``, ``library_name: diffusers``, ``pipeline_tag:
text-to-image``, ``license``, ``tags``, ``instance_prompt``, ``widget`` entries
that make the Hub show a gallery); the body says how to use the adapter in
diffusers and in A1111/ComfyUI, lists its fingerprints and training parameters
and shows the sample images. A card the user already wrote is kept: only
missing metadata is filled in (see :func:`merge_card`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from lorahub.schemas.adapters import FingerprintReport, InspectReport

#: Values the Hub accepts (checked against huggingface.js tasks in the tests).
PIPELINE_TAG = "text-to-image"
LIBRARY_NAME = "diffusers"

LICENSE_BY_FAMILY = {
    "sd1": "creativeml-openrail-m",
    "sd2": "openrail++",
    "sdxl": "openrail++",
    "sd3": "other",
    "flux": "other",
}
FAMILY_TAGS = {
    "sd1": ["stable-diffusion", "stable-diffusion-diffusers"],
    "sd2": ["stable-diffusion", "stable-diffusion-diffusers"],
    "sdxl": ["stable-diffusion-xl", "stable-diffusion-xl-diffusers"],
    "sd3": ["sd3", "sd3-diffusers"],
    "flux": ["flux", "flux-diffusers"],
}
#: Cards carrying this line were written by lorahub and are regenerated on push;
#: remove it to make the card yours (then lorahub only fills missing metadata).
GENERATED_MARK = "<!-- lorahub:generated-card: remove this line to keep your edits on the next push -->"

#: ``base_model`` of a card when nothing declares a Hub id: the family's reference checkpoint (Flux.1 and SD3:
#: :func:`reference_checkpoint`, by variant). SD 1.x cards keep what the package declares (or none), as before.
DEFAULT_BASE_MODEL = {"sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass(frozen=True)
class Checkpoint:
    """A reference checkpoint of Flux.1 or SD3: its Hub id, its licence as its own card states it (``license``,
    ``license_name``, ``license_link``), and how its card runs it in diffusers (dtype, steps, guidance)."""

    id: str
    license: str
    license_name: str | None
    license_link: str | None
    dtype: str
    steps: int
    guidance: float
    #: more keyword arguments of the pipeline call (schnell: its 256-token T5 limit)
    call_extra: str = ""


_FLUX_DEV_LICENSE = "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"
_SAI_LICENSE = "https://huggingface.co/stabilityai/{}/blob/main/LICENSE.md"

#: Flux.1 and SD3's checkpoints, with the licence fields and the ``FluxPipeline``/``StableDiffusion3Pipeline``
#: call of their own model cards (FLUX.1 [dev]: non-commercial licence, 28 steps, guidance 3.5; [schnell]:
#: Apache-2.0, 4 steps, no guidance, ``max_sequence_length=256``; SD 3.5 Large 28 steps, guidance 3.5;
#: 3.5 Medium 40 steps, 4.5; SD3 Medium 28 steps, 7.0, float16; all SD3 ones under the Stability AI Community
#: License).
CHECKPOINTS = {
    "flux-dev": Checkpoint("black-forest-labs/FLUX.1-dev", "other", "flux-1-dev-non-commercial-license",
                           _FLUX_DEV_LICENSE, "bfloat16", 28, 3.5),
    "flux-schnell": Checkpoint("black-forest-labs/FLUX.1-schnell", "apache-2.0", None, None, "bfloat16", 4, 0.0,
                               "max_sequence_length=256"),
    "sd3.5-large": Checkpoint("stabilityai/stable-diffusion-3.5-large", "other", "stabilityai-ai-community",
                              _SAI_LICENSE.format("stable-diffusion-3.5-large"), "bfloat16", 28, 3.5),
    "sd3.5-medium": Checkpoint("stabilityai/stable-diffusion-3.5-medium", "other", "stabilityai-ai-community",
                               _SAI_LICENSE.format("stable-diffusion-3.5-medium"), "bfloat16", 40, 4.5),
    "sd3-medium": Checkpoint("stabilityai/stable-diffusion-3-medium-diffusers", "other", "stabilityai-ai-community",
                             _SAI_LICENSE.format("stable-diffusion-3-medium-diffusers"), "float16", 28, 7.0),
}

#: SD3 hidden widths (``SD3Transformer2DModel`` heads x 64): 2432 is SD 3.5 Large's; 1536 SD3 / 3.5 Medium's.
_SD3_LARGE_HIDDEN = 2432

#: metadata keys that name the base a Flux.1/SD3 adapter was trained on (modelspec; kohya's version and base
#: file name); titles are the user's words and are not read
_BASE_KEYS = ("modelspec.architecture", "ss_base_model_version", "ss_sd_model_name")


def _compact(text: str) -> str:
    return re.sub(r"[\s._-]+", "", text.lower())


def _variant(family: str, text: str) -> str | None:
    """The checkpoint (a key of :data:`CHECKPOINTS`) a text names, or None: ``FLUX.1-schnell``,
    ``flux-1-schnell/lora`` (kohya's ``modelspec.architecture``), ``flux1-schnell.safetensors``;
    ``stable-diffusion-3.5-large``, kohya's ``stable-diffusion-3-5-large/lora`` and ``stable-diffusion-3-m/lora``,
    ``ss_base_model_version`` ``5-large``/``5-medium``/``medium``..."""
    c = _compact(re.sub(r"/(lora|textual-inversion)$", "", text.strip().lower()))
    if family == "flux":
        if "schnell" in c:
            return "flux-schnell"
        return "flux-dev" if "dev" in c else None
    if "large" in c or c.endswith("35l"):
        return "sd3.5-large"
    if "5medium" in c or c.endswith("35m"):
        return "sd3.5-medium"
    if "3medium" in c or c.endswith("3m") or c == "medium":
        return "sd3-medium"
    return None


def reference_checkpoint(report: InspectReport, declared: str | None = None) -> Checkpoint | None:
    """The checkpoint a Flux.1 or SD3 adapter is for (None for other families).

    Decided from, in order: ``declared`` (the base model the user or the package names: ``--base-model``, a
    training config's base), the file's metadata (``modelspec.architecture`` ``flux-1-schnell/lora`` or
    ``stable-diffusion-3.5-large/lora``, kohya's ``ss_base_model_version``, ``ss_sd_model_name``...), then its
    shapes (SD3: hidden 2432 is 3.5 Large; the dual-attention ``attn2`` modules are 3.5 Medium's); failing all
    these, FLUX.1 [dev] (the base of most Flux.1 LoRAs) and SD 3.5 Medium (1536 wide: 3.5 Medium and SD3
    Medium share the width; 3.5 is what is trained now)."""
    family = report.base_family
    if family not in ("flux", "sd3"):
        return None
    texts = [declared or ""] + [str(report.metadata.get(k) or "") for k in _BASE_KEYS]
    for text in texts:
        if text and (key := _variant(family, text)):
            return CHECKPOINTS[key]
    if family == "flux":
        return CHECKPOINTS["flux-dev"]
    if report.hidden_size == _SD3_LARGE_HIDDEN:
        return CHECKPOINTS["sd3.5-large"]
    return CHECKPOINTS["sd3.5-medium"]


def hub_base_model(declared: str | None, family: str | None, report: InspectReport | None = None) -> str | None:
    """The ``base_model`` a card names: ``declared`` when it is a Hub id (``ns/name[@rev]``, the embedded models'
    ``lorahub/embedded-*`` included; the revision dropped), the embedded model's id when it names an embedded model's folder, else
    the family's reference checkpoint (:data:`DEFAULT_BASE_MODEL`: SDXL adapters name
    ``stabilityai/stable-diffusion-xl-base-1.0`` rather than a local path or a ``.safetensors`` file name;
    Flux.1 and SD3 ones the checkpoint :func:`reference_checkpoint` reads from ``report`` and the declared
    name: ``black-forest-labs/FLUX.1-dev`` or ``-schnell``, ``stabilityai/stable-diffusion-3.5-large`` or
    ``-medium``); without one, ``declared`` as it is.

    Decided from the text alone: ``declared`` may come from an uploaded package (the web UI's push), and a
    path a caller names is never read.
    """
    from lorahub.base.embedded import MODELS

    ref = reference_checkpoint(report, declared) if report is not None and report.base_family == family else None
    default = ref.id if ref is not None else DEFAULT_BASE_MODEL.get(family or "")
    if declared:
        text = declared.split("@", 1)[0]
        if _HUB_ID.match(text) and not text.startswith((".", "~")):
            return text  # a repo id, without the revision (the Hub's base_model field takes ids only)
        folder = re.split(r"[\\/]", text.rstrip("/\\"))[-1]
        for spec in MODELS.values():  # ".../models/embedded-sdxl-tiny-v1": the embedded model's own folder name
            if folder == spec.name:
                return spec.id
        return default or declared
    return default


PIPELINE_CLASS = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}


@dataclass
class Sample:
    path: str  # path inside the repo, e.g. "samples/step_000100_0.png"
    prompt: str


@dataclass
class CardInputs:
    repo_id: str
    weight_name: str
    report: InspectReport
    fingerprint: FingerprintReport | None = None
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    title: str | None = None
    description: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    #: tool (lorahub.adapters.layouts.TOOLS) -> the file of the repo that tool loads fully; default: what the
    #: report says of ``weight_name`` alone (see :func:`tool_files`).
    tool_files: dict[str, str] | None = None
    #: the Hub the repo is on: links to a blend's Hub sources
    endpoint: str | None = None

    def files_for_tools(self) -> dict[str, str]:
        if self.tool_files is not None:
            return self.tool_files
        return {tool: self.weight_name for tool in self.report.loaders}


def tool_files(reports: dict[str, InspectReport], primary: str) -> dict[str, str]:
    """For each tool, the file (a key of ``reports``: path in the repo) it loads fully.

    diffusers: ``primary`` (the weights diffusers picks by name) when it qualifies; else the first other file
    in name order. The UIs and kohya: a kohya-layout file first (their own layout: ComfyUI also maps Flux.1's
    diffusers names, but the kohya file is the one its users expect, and the one that carries T5 modules), in
    the same order. A tool no file suits is left out.
    """
    from lorahub.adapters.layouts import TOOLS

    out: dict[str, str] = {}
    order = [primary] + sorted(k for k in reports if k != primary)
    kohya_first = [n for n in order if reports[n].format.startswith("kohya")]
    kohya_first += [n for n in order if n not in kohya_first]
    for tool in TOOLS:
        for name in order if tool == "diffusers" else kohya_first:
            rep = reports.get(name)
            if rep is not None and tool in rep.loaders:
                out[tool] = name
                break
    return out


def card_metadata(inp: CardInputs) -> dict[str, Any]:
    r = inp.report
    family = r.base_family
    tags = ["lora", "text-to-image", "diffusers", "template:sd-lora"]
    tags += FAMILY_TAGS.get(family, [])
    if family != "unknown":
        tags.append(f"base:{family}")
    if r.format.startswith("lycoris"):
        tags.append("lycoris")
    if r.dora:
        tags.append("dora")
    if r.recipe is not None:
        tags.append("lorahub-blend")
    for t in inp.tags:
        if t and t not in tags:
            tags.append(t)
    meta: dict[str, Any] = {}
    if inp.base_model:
        meta["base_model"] = inp.base_model
        meta["base_model_relation"] = "adapter"
    meta["library_name"] = LIBRARY_NAME
    meta["pipeline_tag"] = PIPELINE_TAG
    ref = reference_checkpoint(r, inp.base_model)
    if inp.license:
        meta["license"] = inp.license
    elif ref is not None:  # the checkpoint's own licence fields (a licence "other" is named and linked)
        meta["license"] = ref.license
        if ref.license_name:
            meta["license_name"] = ref.license_name
            meta["license_link"] = ref.license_link
    else:
        meta["license"] = LICENSE_BY_FAMILY.get(family, "other")
    meta["tags"] = tags
    if r.trigger_words:
        meta["instance_prompt"] = ", ".join(r.trigger_words)
    if inp.samples:
        meta["widget"] = [{"text": s.prompt, "output": {"url": s.path}} for s in inp.samples]
    return meta


def _usage_name(repo_id: str, weight_name: str) -> str:
    stem = weight_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if stem == "pytorch_lora_weights":
        stem = repo_id.rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def card_body(inp: CardInputs) -> str:
    r = inp.report
    name = inp.title or r.title or inp.repo_id.rsplit("/", 1)[-1]
    family = r.base_family
    lines = [f"# {name}", ""]
    what = f"A LoRA adapter ({r.format_name}, rank {r.rank if r.rank is not None else '-'}"
    what += f", alpha {r.alpha:g}" if r.alpha is not None else ""
    what += f") for {inp.base_model or 'a ' + family + ' base model'}"
    lines += [inp.description.strip() if inp.description else what + ".", ""]
    if inp.description:
        lines += [what + ".", ""]
    lines += ["## Trigger words", ""]
    if r.trigger_words:
        lines += ["Use these words in the prompt to trigger the adapter:", ""]
        lines += [f"- `{w}`" for w in r.trigger_words]
    else:
        lines += ["No trigger words: the adapter applies to every prompt."]
    from lorahub.adapters.layouts import TOOL_NAMES, TOOLS

    files = inp.files_for_tools()
    lines += ["", "## Which file to use", "", "| tool | file (loads fully, at the same strength) |", "|---|---|"]
    for tool in TOOLS:
        lines.append(f"| {TOOL_NAMES[tool]} | " + (f"`{files[tool]}` |" if tool in files else
                                                   "none of these files: convert one with `lorahub convert` |"))
    lines.append("")
    lines += ["## Use it with diffusers", ""]
    pipe_cls = PIPELINE_CLASS.get(family, "DiffusionPipeline")
    prompt = (r.trigger_words[0] + ", " if r.trigger_words else "") + "a lighthouse at dusk"
    base = inp.base_model or "<base model id or folder>"
    ref = reference_checkpoint(r, inp.base_model)
    dtype, call = "float16", "num_inference_steps=30"
    if ref is not None:
        dtype = ref.dtype
        call = f"num_inference_steps={ref.steps}, guidance_scale={ref.guidance:g}" + (
            f", {ref.call_extra}" if ref.call_extra else "")
    if "diffusers" in files:
        lines += [
            "```python",
            "import torch",
            f"from diffusers import {pipe_cls}",
            "",
            f'pipe = {pipe_cls}.from_pretrained("{base}", torch_dtype=torch.{dtype}).to("cuda")',
            f'pipe.load_lora_weights("{inp.repo_id}", weight_name="{files["diffusers"]}")',
            f'image = pipe("{prompt}", {call}).images[0]',
            'image.save("out.png")',
            "```",
            "",
        ]
    else:
        how = ("`lorahub convert FILE -o OUT.safetensors --format diffusers` writes diffusers' layout; T5 modules "
               "have no diffusers loader" if family in ("flux", "sd3") else
               "`lorahub convert FILE -o OUT.safetensors` re-factors LyCORIS files into LoRA")
        lines += [f"diffusers cannot load this {r.format_name} file as is; convert it first ({how}).", ""]
    if family in ("flux", "sd3"):
        lines += _comfyui_section(inp, files, family)
    else:
        lines += _ui_section(inp, files, family)
    fp = inp.fingerprint
    if fp is not None:
        lines += [
            "## Fingerprints",
            "",
            "| hash | value |",
            "|---|---|",
            f"| SHA256 | `{fp.sha256}` |",
            f"| AutoV2 | `{fp.autov2}` |",
            f"| AutoV3 (sshs_model_hash) | `{fp.autov3 or '-'}` |",
            f"| BLAKE3 | `{fp.blake3}` |",
            f"| CRC32 | `{fp.crc32}` |",
            "",
        ]
    params = dict(inp.training)
    if not params:
        params = {k: v for k, v in r.training.items() if k in (
            "network_dim", "network_alpha", "learning_rate", "max_train_steps", "resolution", "seed",
            "mixed_precision", "num_train_images", "base_model_version", "network_module")}
    if params:
        lines += ["## Training parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | `{_cell(v)}` |" for k, v in sorted(params.items())]
        lines.append("")
    if r.recipe is not None:
        lines += blend_section(r.recipe, inp.endpoint)
    if inp.samples:
        lines += ["## Samples", ""]
        for s in inp.samples:
            lines += [f"![{_cell(s.prompt)}]({s.path})", f"*{_cell(s.prompt)}*", ""]
    lines += ["---", "", "Card written by [lorahub](https://github.com/lorahub/lorahub).", "", GENERATED_MARK]
    return "\n".join(lines) + "\n"


def blend_section(recipe: Any, endpoint: str | None = None) -> list[str]:
    """The card section of a lorahub blend: its sources with links, weights, licences and AutoV3, and how
    to rebuild it from ``recipe.yaml``."""
    from lorahub.pipeline.recipe import hub_url

    params = ", ".join(f"{k} {v}" for k, v in (("rank", recipe.rank), ("density", recipe.params.density))
                       if v is not None)
    lines = ["## Blend of", "",
             f"A `{recipe.method}` blend{' (' + params + ')' if params else ''} made by lorahub "
             f"{recipe.lorahub_version} from these adapters:", "",
             "| source | weight | licence | AutoV3 |", "|---|---|---|---|"]
    for s in recipe.sources:
        url = hub_url(s, endpoint)
        label = _cell(s.name or s.reference())
        # a local source: its file name only (the card is public, the user's folders are not)
        ref = s.path.replace("\\", "/").rsplit("/", 1)[-1] if s.path else s.reference()
        where = f"[{label}]({url})" if url else f"{label} (`{_cell(ref)}`)"
        w = s.weight
        weight = f"{w:g}" if isinstance(w, float) else f"te {w.te:g}, unet {w.unet:g}" + (
            f", te2 {w.te2:g}" if w.te2 is not None else "")
        lines.append(f"| {where} | {weight} | {_cell(s.license or 'unknown')} | `{s.autov3}` |")
    lines += ["", "Rebuild the same file (same AutoV3) from the recipe beside it, every source checked by hash: "
              "`lorahub blend --recipe recipe.yaml -o blend.safetensors`.", ""]
    return lines


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_card(inp: CardInputs) -> str:
    meta = card_metadata(inp)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{card_body(inp)}"


def front_matter(text: str) -> tuple[str | None, str]:
    """``(yaml, body)`` of a card: the text between the leading ``---`` lines (None without one)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return None, text
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :]).lstrip("\n")
    return None, text


#: README files larger than this are stored but their metadata is not read (see :func:`parse_card`).
MAX_CARD_BYTES = 1 << 20


def _load_metadata(block: str) -> Any:
    """The YAML of a card's front matter, within :mod:`lorahub.safeyaml`'s bounds (no anchors or
    aliases, at most :data:`lorahub.safeyaml.MAX_NODES` values nested at most
    :data:`lorahub.safeyaml.MAX_DEPTH` deep, at most :data:`MAX_CARD_BYTES`): a README is text from
    anyone with a write token, ``/api/validate-yaml`` text from anyone at all. Raises YamlError."""
    from lorahub import safeyaml

    return safeyaml.load(
        block,
        max_bytes=MAX_CARD_BYTES,
        max_nodes=safeyaml.MAX_NODES,
        max_depth=safeyaml.MAX_DEPTH,
        first_line=2,
        what="README.md metadata",
    )


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """Front matter (dict) and body of a card; a card without (valid) YAML has empty metadata."""
    block, body = front_matter(text)
    if block is None:
        return {}, text
    from lorahub.errors import YamlError

    try:
        data = _load_metadata(block) or {}
    except YamlError:
        data = {}
    return (data, body) if isinstance(data, dict) else ({}, body)


def widget_images(card: str | dict[str, Any]) -> list[str]:
    """The repo paths of a card's widget images (``widget: [{text, output: {url}}]``: the gallery the Hub's model
    page shows), in order. Only paths inside the repo: absolute URLs and paths that leave it are skipped (a
    page that shows the image fetches it from the repo, never from an address a card names)."""
    from .paths import local_path_problem

    meta = split_card(card)[0] if isinstance(card, str) else card
    widget = meta.get("widget") if isinstance(meta, dict) else None
    out = []
    for item in widget if isinstance(widget, list) else []:
        output = item.get("output") if isinstance(item, dict) else None
        url = output.get("url") if isinstance(output, dict) else None
        if (isinstance(url, str) and url and "://" not in url and not url.startswith(("/", "\\"))
                and local_path_problem(url) is None):
            out.append(url)
    return out


def parse_card(text: str) -> dict[str, Any] | None:
    """The card's metadata as plain JSON values (the Hub's ``cardData``); ``None`` without front
    matter. Strict, unlike :func:`split_card`: YAML that cannot be read, or is not a mapping, raises
    :class:`~lorahub.errors.YamlError` (the server refuses such a README in a commit)."""
    from lorahub import safeyaml
    from lorahub.errors import YamlError

    block = front_matter(text)[0]
    if block is None:
        return None
    data = _load_metadata(block) if block.strip() else {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlError(f"README.md metadata must be a YAML mapping, not a {type(data).__name__}")
    # Dates and other YAML types become plain JSON values.
    return safeyaml.jsonable(data)


def check_card(text: str) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of a card's metadata against the Hub's rules (what
    ``/api/validate-yaml`` answers, and what a commit that changes ``README.md`` must pass)."""
    from lorahub.errors import YamlError

    try:
        data = parse_card(text)
    except YamlError as exc:
        return [str(exc)], []
    if data is None:
        return [], []
    errors: list[str] = []
    warnings: list[str] = []
    for key in ("license", "license_name", "license_link", "pipeline_tag", "library_name", "base_model_relation",
                "language", "datasets"):
        value = data.get(key)
        if value is None:
            continue
        if key in ("language", "datasets"):
            if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
                errors.append(f'"{key}" must be a string or a list of strings')
        elif not isinstance(value, str):
            errors.append(f'"{key}" must be a string')
    tags = data.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, (str, int, float)) for t in tags)):
        errors.append('"tags" must be a list of strings')
    base = data.get("base_model")
    if base is not None and not (isinstance(base, str) or (isinstance(base, list) and all(isinstance(b, str) for b in base))):
        errors.append('"base_model" must be a string or a list of strings')
    widget = data.get("widget")
    if widget is not None and not isinstance(widget, list):
        errors.append('"widget" must be a list')
    rel = data.get("base_model_relation")
    if isinstance(rel, str) and rel not in ("adapter", "merge", "quantized", "finetune"):
        warnings.append(f'"base_model_relation" {rel!r} is not one of adapter, merge, quantized, finetune')
    return errors, warnings


def is_generated(card: str) -> bool:
    return GENERATED_MARK.split(":", 1)[0] + ":generated-card" in card


def merge_card(existing: str, inp: CardInputs) -> tuple[str, list[str]]:
    """Keep the user's card and body; add only the metadata keys it lacks. Returns (card, keys added)."""
    meta, body = split_card(existing)
    ours = card_metadata(inp)
    added = []
    for key, value in ours.items():
        if key == "tags":
            have = meta.get("tags") if isinstance(meta.get("tags"), list) else []
            missing = [t for t in value if t not in have]
            if missing:
                meta["tags"] = list(have) + missing
                added.append("tags")
        elif key not in meta or meta[key] in (None, "", []):
            meta[key] = value
            added.append(key)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{body}", added


def _ui_section(inp: CardInputs, files: dict[str, str], family: str) -> list[str]:
    """How to use an SD adapter in AUTOMATIC1111/Forge and ComfyUI (a ``<lora:name:w>`` tag)."""
    ui = files.get("a1111") or files.get("comfyui")
    lines = ["## Use it in AUTOMATIC1111 / Forge / ComfyUI", ""]
    if ui:
        usage = _usage_name(inp.repo_id, ui)
        lines += [
            f"Download `{ui}` into your LoRA folder (rename it to `{usage}.safetensors`) and add "
            f"`<lora:{usage}:0.8>` to the prompt (ComfyUI: a *Load LoRA* node, strength 0.8).",
            "",
        ]
        if family == "sdxl":
            lines += ["It is an SDXL LoRA: use it with an SDXL-architecture checkpoint (SDXL 1.0 and its descendants); "
                      "its weights are named as kohya names SDXL modules (`lora_unet_input_blocks_...`, `lora_te1_`, "
                      "`lora_te2_`).", ""]
    else:
        lines += ["No file of this repository loads fully in these UIs (ComfyUI skips the UNet attention modules "
                  "of diffusers-layout files): convert one with `lorahub convert FILE -o OUT.safetensors` "
                  "(kohya layout).", ""]
    return lines


def _comfyui_section(inp: CardInputs, files: dict[str, str], family: str) -> list[str]:
    """How to use a Flux.1 or SD3 adapter in ComfyUI (AUTOMATIC1111 loads neither family)."""
    label = "Flux.1" if family == "flux" else "SD 3.5 / SD3"
    lines = ["## Use it in ComfyUI", ""]
    ui = files.get("comfyui")
    if ui:
        lines += [
            f"Download `{ui}` into `ComfyUI/models/loras/` and load it with a *Load LoRA* node between the "
            f"checkpoint loader and the sampler (strength 1.0; *LoraLoaderModelOnly* applies the transformer's "
            f"modules alone). It is a {label} LoRA: use it with a {label} checkpoint.",
            "",
        ]
    else:
        lines += [f"No file of this repository loads fully in ComfyUI: convert one with `lorahub convert FILE -o "
                  f"OUT.safetensors` (the kohya/ComfyUI layout, `lora_unet_` + the {label} model's own module names).",
                  ""]
    lines += [f"AUTOMATIC1111 does not load {label} LoRAs.", ""]
    return lines
