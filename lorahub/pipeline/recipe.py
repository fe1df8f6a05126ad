"""Blend recipes: a blend written down so that it can be rebuilt anywhere, and checked.

A recipe (:class:`lorahub.schemas.recipes.BlendRecipe`, YAML on disk) names each source by a stable
reference (a Hub ``namespace/name@revision`` and file, a registry name, or a local path) with its
fingerprints (SHA-256 and AutoV3), the weights, the method and its parameters, the output rank,
format and dtype, and the lorahub version that wrote it.

* :func:`load_recipe` reads one (bounded YAML, :mod:`lorahub.safeyaml`; a malformed recipe is one
  :class:`~lorahub.errors.RecipeError` line);
* :func:`bake` resolves every source (Hub references through the resolver's cache-aware Hub step,
  registry names through whatever registry step the face added to the resolver, paths relative to
  the recipe's folder), checks each file's SHA-256 and AutoV3 **before** blending (a mismatch is a
  :class:`~lorahub.errors.RecipeError`, nothing is written), then blends. Blending is deterministic,
  so the same recipe gives the same tensors (the same AutoV3) wherever it is baked;
* every baked blend carries its recipe in the safetensors metadata (:data:`METADATA_KEY`, JSON);
  :func:`recipe_from_metadata` reads it back (``inspect``, ``push``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RecipeError

if TYPE_CHECKING:  # pragma: no cover
    from lorahub.schemas.recipes import BlendRecipe, RecipeSource

    from .blend import BlendResult
    from .resolver import Resolved, Resolver

#: The safetensors metadata key that holds a blend's recipe (JSON).
METADATA_KEY = "lorahub.recipe"
#: The recipe file ``push`` writes beside a blend.
RECIPE_FILE = "recipe.yaml"
#: A recipe file is small: a few sources and numbers.
MAX_RECIPE_BYTES = 256 * 1024

_SNAPSHOT = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{40})[\\/](.+)$")


def _validate(data: Any, what: str) -> BlendRecipe:
    from pydantic import ValidationError

    from lorahub.schemas.recipes import BlendRecipe

    if not isinstance(data, Mapping):
        raise RecipeError(f"{what} is not a recipe (a mapping with method and sources)")
    try:
        return BlendRecipe.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "recipe"
        raise RecipeError(f"{what}: {where}: {err.get('msg', 'invalid')}") from None


def parse_recipe(text: str, *, what: str = "recipe") -> BlendRecipe:
    """The recipe in ``text`` (YAML or JSON), bounded; :class:`RecipeError` when it is not one."""
    from .. import safeyaml
    from ..errors import YamlError

    try:
        data = safeyaml.load(text, max_bytes=MAX_RECIPE_BYTES, max_nodes=5000, max_depth=8, what=what)
    except YamlError as exc:
        raise RecipeError(str(exc)) from None
    return _validate(data, what)


def load_recipe(path: str | os.PathLike[str]) -> BlendRecipe:
    """Read the recipe file ``path``."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"{p}: cannot read the recipe ({exc.strerror or exc})") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{p}: a recipe is at most {MAX_RECIPE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{p}: the recipe is not UTF-8 text") from None
    return parse_recipe(text, what=str(p))


def dump_recipe(recipe: BlendRecipe) -> str:
    """The recipe as YAML (what ``--save-recipe`` and ``push`` write)."""
    import yaml

    data = recipe.model_dump(mode="json", exclude_none=True)
    head = "# lorahub blend recipe: bake it with `lorahub blend --recipe THIS_FILE -o out.safetensors`\n"
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def portable(recipe: BlendRecipe, folder: str | os.PathLike[str] | None = None) -> BlendRecipe:
    """The recipe with its local ``path`` sources relative to ``folder`` (where the recipe file goes),
    or reduced to their file names (``folder`` None: the copy a blend's metadata carries, which push
    publishes: a user's folders are nobody's business, and the hashes identify the file anyway)."""
    sources = []
    for src in recipe.sources:
        if src.path:
            p = Path(src.path)
            if folder is None:
                rel = p.name
            else:
                try:
                    rel = os.path.relpath(p, Path(folder).resolve()) if p.is_absolute() else str(p)
                except ValueError:  # another drive (Windows): keep it absolute
                    rel = str(p)
            src = src.model_copy(update={"path": rel.replace(os.sep, "/")})
        sources.append(src)
    return recipe.model_copy(update={"sources": sources})


def save_recipe(recipe: BlendRecipe, path: str | os.PathLike[str]) -> Path:
    """Write the recipe atomically, its local sources relative to the recipe's folder."""
    from .._atomic import atomic_write_text

    target = Path(path)
    atomic_write_text(target, dump_recipe(portable(recipe, target.parent)))
    return target


def recipe_json(recipe: BlendRecipe) -> str:
    """The compact JSON the metadata holds."""
    return json.dumps(recipe.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))


def recipe_from_metadata(metadata: Mapping[str, Any]) -> BlendRecipe | None:
    """The recipe a baked blend carries, None when it has none; :class:`RecipeError` when it is malformed."""
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{METADATA_KEY} is not a recipe")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # a hostile file may nest [[[... deeper than the stack
        raise RecipeError(f"{METADATA_KEY} is not JSON") from None
    return _validate(data, METADATA_KEY)


def reference_of(resolved: Resolved) -> dict[str, str]:
    """The stable reference of a resolved adapter: a Hub ``repo@commit`` and file (the cache's snapshot
    names the commit), a registry name, or the absolute path."""
    from .resolver import parse_hub_ref

    ref = parse_hub_ref(resolved.source) if resolved.kind == "hub" else None
    if ref is not None:
        repo, rev, filename = ref
        snap = _SNAPSHOT.search(str(resolved.path))
        commit = snap.group(1) if snap else rev
        return {"hub": f"{repo}@{commit}" if commit else repo,
                "file": filename or (snap.group(2).replace("\\", "/") if snap else resolved.path.name)}
    if resolved.kind == "registry":
        return {"registry": resolved.name}
    return {"path": str(Path(resolved.path).resolve())}


def hub_card_licence(hub: str, endpoint: str | None = None) -> str | None:
    """The ``license`` of the model card of a Hub source (``namespace/name@revision``), read from the
    Hugging Face cache or downloaded into it; None when the repo has no card or it names none."""
    from huggingface_hub import hf_hub_download

    from ..hub.card import parse_card

    repo, _, rev = hub.partition("@")
    ep = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    try:
        path = hf_hub_download(repo, "README.md", revision=rev or None, endpoint=ep, library_name="lorahub")
        with open(path, "rb") as fh:
            text = fh.read(1 << 20).decode("utf-8", errors="replace")
        lic = (parse_card(text) or {}).get("license")
    except Exception:  # noqa: BLE001 - no card, no network, a card that does not parse: the licence is unknown
        return None
    return lic.strip()[:200] if isinstance(lic, str) and lic.strip() else None


def hub_url(source: RecipeSource, endpoint: str | None = None) -> str | None:
    """The page of a Hub source on ``endpoint`` ($HF_ENDPOINT, else huggingface.co)."""
    if not source.hub:
        return source.url
    ep = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    repo, _, rev = source.hub.partition("@")
    return f"{ep}/{repo}/blob/{rev or 'main'}/{source.file}"


_NON_COMMERCIAL = re.compile(r"(^|[-_ ])nc([-_ ]|$)|non[-_ ]?commercial|research[-_ ]only", re.IGNORECASE)
_NO_DERIVATIVES = re.compile(r"(^|[-_ ])nd([-_ ]|$)|no[-_ ]?deriv", re.IGNORECASE)
_SHARE_ALIKE = re.compile(r"^cc-by(-nc)?-sa-", re.IGNORECASE)


def is_non_commercial(license_id: str | None) -> bool:
    """Whether a licence id forbids commercial use (``cc-by-nc-4.0``, ``*-non-commercial-*``...)."""
    return bool(license_id) and bool(_NON_COMMERCIAL.search(str(license_id)))


def licence_conflicts(recipe: BlendRecipe, published: str | None) -> list[str]:
    """Warnings (one line each) when the sources' licences do not allow publishing the blend under
    ``published``: a non-commercial source in a blend published under a licence that allows
    commercial use, a no-derivatives source (a blend is a derivative), a share-alike source under
    another licence. Sources of unknown licence are named too: their terms are not known."""
    out: list[str] = []
    pub = (published or "").strip()
    for s in recipe.sources:
        who = s.name or s.reference()
        lic = (s.license or "").strip()
        if not lic:
            continue
        if is_non_commercial(lic) and pub and not is_non_commercial(pub):
            out.append(f"licence conflict: source {who} is {lic} (non-commercial), the blend is published as {pub}")
        if _NO_DERIVATIVES.search(lic):
            out.append(f"licence conflict: source {who} is {lic} (no derivatives): a blend is a derivative")
        if _SHARE_ALIKE.match(lic) and pub and pub.lower() != lic.lower():
            out.append(f"licence conflict: source {who} is {lic} (share-alike), the blend is published as {pub}")
    unknown = [s.name or s.reference() for s in recipe.sources if not (s.license or "").strip()]
    if unknown and len(unknown) < len(recipe.sources):
        out.append(f"licence unknown for source(s) {', '.join(unknown)}: check their terms before publishing")
    return out


def _weight(source: RecipeSource) -> tuple[float, float, float | None]:
    w = source.weight
    if isinstance(w, (int, float)):
        return float(w), float(w), None
    return w.te, w.unet, w.te2


def bake(
    recipe: BlendRecipe,
    out: str | os.PathLike[str],
    *,
    resolver: Resolver | None = None,
    base_dir: str | os.PathLike[str] = ".",
) -> BlendResult:
    """Resolve, verify and blend the recipe's sources into ``out`` (see the module docstring).

    ``resolver``: how Hub references and registry names become files (default: the library's
    :class:`~lorahub.pipeline.resolver.Resolver`, which knows no registry); ``base_dir``: the
    folder relative ``path`` sources are read from (the recipe file's folder)."""
    from ..adapters.fingerprint import fingerprint_file
    from .blend import BlendInput, blend
    from .resolver import Resolver

    resolver = resolver or Resolver()
    inputs: list[BlendInput] = []
    for i, src in enumerate(recipe.sources, 1):
        if src.path:
            path = Path(src.path).expanduser()
            if not path.is_absolute():
                path = Path(base_dir) / path
            if not path.is_file():
                raise RecipeError(f"source {i}: {src.path}: no such file")
        else:
            name = f"{src.hub}:{src.file}" if src.hub else str(src.registry)
            path = resolver.resolve(name).path
        fp = fingerprint_file(str(path))
        if (fp.sha256 or "").lower() != src.sha256 or (fp.autov3 or "").upper() != src.autov3:
            raise RecipeError(
                f"source {i} ({src.reference()}): the file is not the one the recipe names "
                f"(SHA-256 {str(fp.sha256)[:12]}…, AutoV3 {fp.autov3}; the recipe wants {src.sha256[:12]}…, "
                f"AutoV3 {src.autov3}); nothing was written"
            )
        te, unet, te2 = _weight(src)
        ref = {k: v for k, v in src.model_dump(include={"hub", "file", "registry", "path", "license", "url"}).items()
               if v is not None}
        inputs.append(BlendInput(str(path), te, unet, name=src.name, te2=te2, ref=ref))
    return blend(inputs, method=recipe.method, rank=recipe.rank, density=recipe.params.density, out=out,
                 seed=recipe.params.seed, dtype=recipe.dtype, title=recipe.title, format=recipe.format,
                 search=recipe.search)


__all__ = [
    "METADATA_KEY",
    "RECIPE_FILE",
    "bake",
    "dump_recipe",
    "hub_card_licence",
    "hub_url",
    "is_non_commercial",
    "licence_conflicts",
    "load_recipe",
    "parse_recipe",
    "recipe_from_metadata",
    "portable",
    "recipe_json",
    "reference_of",
    "save_recipe",
]
