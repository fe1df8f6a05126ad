"""What the Space's buttons do, as plain Python functions (no Gradio needed to call or test them).

Every function here returns plain values (strings, lists, dicts, PIL images, file paths) and raises
:class:`lorahub.errors.LorahubError` subclasses for bad input; :mod:`lorahub.space.ui` turns those into
readable messages in the page. The library does the work: this module only adapts arguments.

State that must outlive a click (the loaded base model) lives in one process-wide :class:`SpaceState`,
guarded by a lock, so the base is loaded once and adapters are hot-swapped between clicks.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorahub.adapters.pickles import refuse_pickle_name
from lorahub.errors import LorahubError, NotFoundError, UsageError
from lorahub.safezip import extract_zip_file

#: Environment variable naming the base model of a deployed Space (any ``--base`` spec).
ENV_BASE = "LORAHUB_SPACE_BASE"
#: The same for the Space's SDXL base (on a GPU; on a CPU the embedded tiny SDXL is used).
ENV_BASE_SDXL = "LORAHUB_SPACE_BASE_SDXL"
#: The same for the Flux.1 and SD 3.5 bases (on a GPU; on a CPU the embedded tiny Flux.1 / SD 3.5).
ENV_BASE_FLUX = "LORAHUB_SPACE_BASE_FLUX"
ENV_BASE_SD3 = "LORAHUB_SPACE_BASE_SD3"
#: The base families a visitor picks from: key -> label.
FAMILIES = {"sd1": "SD 1.x", "sdxl": "SDXL", "flux": "Flux.1", "sd3": "SD 3.5"}
#: family -> the variable naming its base on a GPU (SD 1.x: :data:`ENV_BASE`)
FAMILY_ENV = {"sdxl": ENV_BASE_SDXL, "flux": ENV_BASE_FLUX, "sd3": ENV_BASE_SD3}
#: At most this many adapters in the preview list (one weight slider each).
MAX_ADAPTERS = 4
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RESULT_COLUMNS = ["name", "trigger words", "base", "format", "rank", "sha256", "AutoV3", "source"]


# --------------------------------------------------------------------------- base model


def _has_gpu() -> bool:
    """A GPU to render on: CUDA here, or a ZeroGPU Space (which attaches one per call: :mod:`.gpu`)."""
    from .gpu import hardware

    if hardware() == "zero-gpu":
        return True
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def space_base(explicit: str | None = None) -> str:
    """The base model spec: ``explicit`` (``--base``) if given, else ``$LORAHUB_SPACE_BASE`` when a GPU is
    present, else the shipped drawing base (:data:`lorahub.base.drawing.DRAWING_ID`: a tiny SD 1.x model that
    draws the shapes of :mod:`lorahub.world` in a fraction of a second on a CPU, where a real base would take
    minutes per image)."""
    from lorahub.base.drawing import DRAWING_ID

    if explicit:
        return explicit
    env = os.environ.get(ENV_BASE, "").strip()
    if env and _has_gpu():
        return env
    return DRAWING_ID


#: The preview tab's first prompt on the drawing base (a scene of :mod:`lorahub.world`, which is all it draws).
DRAWING_PROMPT = "a large yellow star in the center, blue background"


def page_defaults(spec: str) -> dict[str, Any]:
    """The page's first values for base ``spec``: the preview prompt and the training steps (the drawing
    base's own :data:`~lorahub.base.drawing.TRAIN_DEFAULTS` on it; a photo and 100 steps elsewhere)."""
    from lorahub.base import drawing
    from lorahub.base.resolve import resolve_base

    try:
        ref = resolve_base(spec, download=False, build=False)
    except LorahubError:
        ref = None
    if drawing.is_drawing_ref(ref):
        return {"prompt": DRAWING_PROMPT, "train_steps": int(drawing.TRAIN_DEFAULTS["steps"])}
    return {"prompt": "a photo", "train_steps": 100}


def _cheap_base(spec: str) -> bool:
    """Whether ``spec`` renders in a fraction of a second here: the drawing base or an embedded one, or any
    base on a CUDA GPU (not ZeroGPU's, which this process only holds inside a call)."""
    from lorahub.base.drawing import is_drawing_ref
    from lorahub.base.resolve import resolve_base

    try:
        ref = resolve_base(spec, download=False, build=False)
    except LorahubError:
        return False
    if ref.kind == "embedded" or is_drawing_ref(ref):
        return True
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def space_bases(explicit: str | None = None) -> dict[str, str]:
    """The base of each family (:data:`FAMILIES`): SD 1.x's as :func:`space_base` picks it; SDXL's, Flux.1's
    and SD 3.5's from ``$LORAHUB_SPACE_BASE_SDXL``, ``_FLUX``, ``_SD3`` when a GPU is present, else the
    embedded tiny model of the family (fine on a CPU)."""
    from lorahub.base.embedded import MODELS

    gpu = _has_gpu()
    out = {"sd1": space_base(explicit)}
    for family, var in FAMILY_ENV.items():
        env = os.environ.get(var, "").strip()
        out[family] = env if env and gpu else MODELS[family].id
    return out

#: What the page searches with: a query in, results out (the host's catalogue; the page opens none).
Searcher = Callable[[Any], Sequence[Any]]
#: the host's blends-made-from lookup (``Registry.uses``): a SHA-256 in, the blends' records out
Uses = Callable[[str], Sequence[Any]]


@dataclass
class SpaceState:
    """What the Space keeps between clicks: the base spec, the loaded pipeline, a work folder, the search.

    ``searcher``: the host's search (``Registry.search`` of the catalogue the host opened: ``lorahub serve``
    passes its own, ``lorahub space`` and an exported Space's ``app.py`` the one they opened); the page
    never opens a registry itself (docs/architecture.md). ``hub_endpoints``: the Hub endpoints whose
    search results may be previewed (their adapter file is downloaded on the first preview, checked against
    the SHA-256 the catalogue holds and cached in the work folder); results from other endpoints are
    refused.
    """

    base: str
    searcher: Searcher | None = None
    #: the host's ``Registry.uses`` (the blends made from an adapter); None: the page shows none
    uses: Uses | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lorahub-space-")))
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: family -> base spec (:func:`space_bases`); ``base`` is the SD 1.x one
    bases: dict[str, str] = field(default_factory=dict)
    hub_endpoints: tuple[str, ...] = ()
    #: largest adapter file a preview downloads
    max_download: int = 1 << 30
    _live: Any = None
    _live_family: str | None = None
    _cheap: bool | None = None
    _fetch_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.bases = {**space_bases(), **self.bases, "sd1": self.base}

    def base_for(self, family: str | None) -> str:
        """The base spec of ``family`` (None: SD 1.x); a family the page does not offer is refused."""
        key = family or "sd1"
        if key not in self.bases:
            raise UsageError(f"unknown base family {family!r}", hint=f"choose one of {', '.join(FAMILIES.values())}")
        return self.bases[key]

    def live(self, family: str | None = None) -> Any:
        """The process-wide :class:`~lorahub.pipeline.live.LivePipeline` of ``family``'s base (loaded on first
        use; one base at a time: picking the other family replaces it)."""
        with self.lock:
            key = family or "sd1"
            base = self.base_for(key)
            if self._live is not None and self._live_family != key:
                self._live.close()
                self._live = None
            if self._live is None:
                from lorahub.base.resolve import resolve_device
                from lorahub.pipeline.live import LivePipeline

                self._live = LivePipeline(base, device=resolve_device("auto"))
                self._live_family = key
            return self._live

    def loaded(self, family: str | None = None) -> bool:
        """Whether ``family``'s base is the one loaded."""
        return self._live is not None and self._live_family == (family or "sd1")

    def search(self, query: Any) -> Sequence[Any]:
        if self.searcher is None:
            raise UsageError("this page has no registry to search", hint="run it with `lorahub space` or `lorahub serve --ui`")
        return self.searcher(query)

    def card_renders_here(self) -> bool:
        """Whether the search renders card previews (:func:`fill_card_samples`): when the SD 1.x base draws
        in a fraction of a second (the drawing base or an embedded one on any device, any base on a CUDA GPU)
        and no other family's base is loaded (rendering would swap it out)."""
        if self._cheap is None:
            self._cheap = _cheap_base(self.base)
        return self._cheap and (self._live is None or self._live_family == "sd1")

    def close(self) -> None:
        """Release the loaded base (the searcher belongs to the host)."""
        with self.lock:
            if self._live is not None:
                self._live.close()
                self._live = None

    def new_dir(self, kind: str) -> Path:
        d = self.workdir / kind / uuid.uuid4().hex[:12]
        d.mkdir(parents=True, exist_ok=True)
        return d


_STATE: SpaceState | None = None
_STATE_LOCK = threading.Lock()


def get_state(base: str | None = None, *, searcher: Searcher | None = None, uses: Uses | None = None,
              workdir: Path | None = None,
              hub_endpoints: Sequence[str] = (), max_download: int | None = None) -> SpaceState:
    """The process-wide state (created on the first call)."""
    global _STATE
    with _STATE_LOCK:
        if _STATE is None:
            kw: dict[str, Any] = {"workdir": workdir} if workdir is not None else {}
            if max_download is not None:
                kw["max_download"] = int(max_download)
            _STATE = SpaceState(base=space_base(base), searcher=searcher, uses=uses,
                                 hub_endpoints=tuple(hub_endpoints), **kw)
        return _STATE


def reset_state() -> None:
    """Forget the process-wide state (tests)."""
    global _STATE
    with _STATE_LOCK:
        if _STATE is not None:
            _STATE.close()
        _STATE = None


# --------------------------------------------------------------------------- search


def _short(h: str | None, n: int = 10) -> str:
    return (h or "")[:n]


def split_tags(text: str | None) -> list[str]:
    return [t.strip() for t in re.split(r"[,\n]", text or "") if t.strip()]


def search(state: SpaceState, query: str = "", base: str = "", fmt: str = "", tags: str = "",
           limit: int = 50, mode: str = "auto") -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """Search the registry: ``(table rows, result dicts)``; rows follow :data:`RESULT_COLUMNS`. The registry's
    own search (``Registry.search``): hybrid (words and meaning) where the registry has embeddings."""
    from lorahub.schemas.registry import SearchQuery

    q = SearchQuery(query=(query or "").strip() or None, base=(base or "").strip() or None,
                    format=(fmt or "").strip() or None, tags=split_tags(tags), limit=limit,
                    mode=mode)  # type: ignore[arg-type]
    found = state.search(q)
    results = [r.model_dump(mode="json") for r in found]
    rows = [
        [r["name"], ", ".join(r["trigger_words"]), r["base_model"] or r["base_family"], r["format"] or "",
         r["rank"] if r["rank"] is not None else "", _short(r["sha256"]), r["autov3"] or "", r["source"]]
        for r in results
    ]
    return rows, results


#: Size of a result's card in the search gallery (square, as the gallery's cells): its sample image on top,
#: its words below.
CARD_SIZE = (288, 288)
#: Side of the sample image on a card (a small image is enlarged without smoothing, pixels kept square), and
#: where it lies: centred at the top, on a band of the result's own colour.
CARD_SAMPLE = 192
CARD_SAMPLE_AT = ((CARD_SIZE[0] - CARD_SAMPLE) // 2, 0)
_CARD_COLOURS = ("#3b4cc0", "#7b3294", "#c2185b", "#00796b", "#ef6c00", "#455a64", "#2e7d32", "#5d4037")
#: At most this many card previews are rendered per search (the first results without a sample image);
#: each is cached by the adapter's SHA-256, so the next search showing it costs nothing.
CARD_RENDERS = 8
#: The preview tab's default steps (the drawing base draws in about 0.3 s with two adapters on 2 CPU cores:
#: benchmarks/bench_space_preview.py), and a card preview's.
PREVIEW_STEPS = 8
CARD_STEPS = PREVIEW_STEPS


def thumbnail(image: Any, side: int = CARD_SAMPLE) -> Any:
    """``image`` fitted into a ``side`` square: a smaller one enlarged by a whole factor without smoothing
    (the drawing base's 64 px renders stay crisp), a larger one shrunk with Lanczos."""
    from PIL import Image

    img = image.convert("RGB")
    w, h = img.size
    if max(w, h) <= side:
        k = max(1, side // max(w, h))
        return img.resize((w * k, h * k), Image.Resampling.NEAREST)
    img = img.copy()
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return img


def result_card(result: dict[str, Any], sample: Any = None) -> Any:
    """A search result as a card of the gallery (a PIL image), the way Civitai's and the Hub's LoRA galleries
    show adapters: its sample image on top (``sample``, a PIL image; without one, the band of the result's own
    colour alone), then its name, trigger words, SHA-256 and AutoV3 hashes, base, format and rank."""
    import hashlib

    from PIL import Image, ImageDraw, ImageFont

    key = str(result.get("sha256") or result.get("name") or "")
    colour = _CARD_COLOURS[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(_CARD_COLOURS)]
    img = Image.new("RGB", CARD_SIZE, "#1f2430")
    img.paste(colour, (0, 0, CARD_SIZE[0], CARD_SAMPLE))
    if sample is not None:
        thumb = thumbnail(sample)
        x, y = CARD_SAMPLE_AT
        img.paste(thumb, (x + (CARD_SAMPLE - thumb.width) // 2, y + (CARD_SAMPLE - thumb.height) // 2))
    draw = ImageDraw.Draw(img)
    big, small = ImageFont.load_default(size=17), ImageFont.load_default(size=12)
    base = result.get("base_model") or result.get("base_family") or "?"
    sha, autov3 = str(result.get("sha256") or ""), str(result.get("autov3") or "")
    rank = f" · rank {result.get('rank')}" if result.get("rank") is not None else ""
    words = result.get("trigger_words") or []
    hashes = "  ".join(x for x in (f"SHA256 {sha[:10]}" if sha else "", f"AutoV3 {autov3}" if autov3 else "") if x)
    # the base line last: short, it stays clear of the caption the gallery lays over the card's lower right
    lines = [(str(result.get("name") or "")[:28], big),
             (("trigger: " + ", ".join(words))[:42] if words else "no trigger words", small),
             (hashes, small),
             ((f"{base} · {result.get('format') or '?'}"[:32] + rank)[:42], small)]
    y = CARD_SAMPLE + 8
    for text, font in lines:
        draw.text((10, y), text, fill="white", font=font)
        y += 24 if font is big else 18
    return img


#: A sample image with more pixels than this is not shown (a 4096 x 4096 one decodes to 48 MB).
MAX_SAMPLE_PIXELS = 4096 * 4096


def _open_sample(path: Path | Any) -> Any:
    """A sample image (a file, or a binary file object), decoded within bounds (PIL's own bomb check, raised to
    an error) and fitted to a card; None when unreadable."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_SAMPLE_PIXELS:  # read from the header: nothing decoded yet
                    return None
                return thumbnail(im)
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None


def _card_key(state: SpaceState, result: dict[str, Any]) -> str | None:
    """The cache name of a result's rendered card preview (its SHA-256, the base, the prompt), or None when
    it has no SHA-256 to key it by."""
    import hashlib

    sha = str(result.get("sha256") or "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        return None
    what = f"{sha}|{state.base}|{card_prompt(result)}|{CARD_STEPS}"
    return hashlib.sha256(what.encode()).hexdigest()[:32]


def card_prompt(result: dict[str, Any]) -> str:
    """What a card's preview draws: the adapter's trigger words (its name when it has none)."""
    words = [str(w) for w in result.get("trigger_words") or [] if str(w).strip()]
    return ", ".join(words[:4]) if words else str(result.get("name") or "")[:80]


def card_sample(state: SpaceState, result: dict[str, Any]) -> Any:
    """A result's sample image (PIL, fitted to the card) or None, from what this machine holds: for a local
    file, the image its package or the community's sidecar holds (:func:`lorahub.hub.package.sample_image`),
    else a preview this page rendered for it earlier; for a Hub result, its card's widget image fetched
    earlier (:func:`fill_card_samples` fetches and renders what is missing)."""
    from lorahub.hub.package import sample_image

    if result.get("source_kind") != "hub":
        local = _local_file(result.get("source"))
        found = sample_image(local) if local is not None else None
        if found is not None:
            img = _open_sample(found)
            if img is not None:
                return img
    else:
        key = _widget_key(state, result)
        cached = state.workdir / "card-widgets" / f"{key}.png"
        return _open_sample(cached) if key and cached.is_file() else None
    key = _card_key(state, result)
    cached = state.workdir / "card-previews" / f"{key}.png"
    return _open_sample(cached) if key and cached.is_file() else None


def _renderable(state: SpaceState, result: dict[str, Any]) -> bool:
    """Whether this page renders a card preview for ``result``: a local SD 1.x adapter file, a base cheap to
    render on (the drawing or an embedded base, or any on a CUDA GPU), and no earlier failure recorded."""
    key = _card_key(state, result)
    if key is None or result.get("source_kind") == "hub" or result.get("base_family") not in ("sd1", None):
        return False
    if _local_file(result.get("source")) is None or (state.workdir / "card-previews" / f"{key}.none").exists():
        return False
    return state.card_renders_here()


#: Largest card (README.md) and widget image a gallery card reads from a Hub.
MAX_CARD_BYTES = 256 << 10
MAX_WIDGET_BYTES = 8 << 20


def _widget_key(state: SpaceState, result: dict[str, Any]) -> str | None:
    """The cache name of a Hub result's widget image: its endpoint, repo and the revision the catalogue indexed
    (a new commit asks again; None: not a Hub result of an endpoint this page previews from)."""
    import hashlib

    try:
        endpoint, repo_id, _path = hub_location(result)
    except LorahubError:
        return None
    if endpoint.lower() not in {e.rstrip("/").lower() for e in state.hub_endpoints}:
        return None
    rev = str(result.get("source") or "").partition(":")[0].partition("@")[2]
    return hashlib.sha256(f"{endpoint}|{repo_id}|{rev}".encode()).hexdigest()[:32]


def _fetch_widget(state: SpaceState, result: dict[str, Any], key: str) -> Any:
    """A Hub result's first widget image (its card's gallery, :func:`lorahub.hub.card.widget_images`), read
    from its repo's main branch on an endpoint this page previews from, anonymously, the card at most
    :data:`MAX_CARD_BYTES` and the image :data:`MAX_WIDGET_BYTES`; kept in the work folder as its card's
    thumbnail. A repo without one (or any failure) is remembered too, and not asked again."""
    import io

    from lorahub.hub.card import widget_images
    from lorahub.hub.pull import fetch_small

    folder = state.workdir / "card-widgets"
    folder.mkdir(parents=True, exist_ok=True)
    endpoint, repo_id, _path = hub_location(result)
    image = None
    try:  # the card as it is now (a catalogue keeps a short revision, which resolve does not take)
        card = fetch_small(repo_id, "README.md", endpoint=endpoint, max_size=MAX_CARD_BYTES)
        paths = widget_images(card.decode("utf-8", errors="replace"))
        if paths:
            data = fetch_small(repo_id, paths[0], endpoint=endpoint, max_size=MAX_WIDGET_BYTES)
            image = _open_sample(io.BytesIO(data))
    except LorahubError:
        image = None
    if image is None:
        (folder / f"{key}.none").touch()
        return None
    _keep_png(image, folder / f"{key}.png")
    return image


def _keep_png(image: Any, path: Path) -> None:
    """Cache a card's sample: written whole or not at all (another search may read it meanwhile)."""
    from lorahub._atomic import atomic_writer

    with atomic_writer(path) as fh:
        image.save(fh, format="PNG")


def fill_card_samples(state: SpaceState, results: Sequence[dict[str, Any]], have: Sequence[Any],
                      limit: int = CARD_RENDERS) -> Iterator[tuple[int, Any]]:
    """Find a sample image for the first results without one (``have[i]`` None), at most ``limit`` of each
    kind, yielding ``(index, image)`` as each is ready: a Hub result's card widget image (:func:`_fetch_widget`);
    for a local file this page can render (:func:`_renderable`), a preview: the adapter at weight 1 on the
    SD 1.x base, its trigger words as the prompt, seed 0. Each is cached in the work folder (by the adapter's
    SHA-256 with the base and prompt, or by the repo's revision), and so is a failure: an adapter that does not
    fit the base, a repo without a widget image, is tried once."""
    hub = [i for i, r in enumerate(results) if have[i] is None and r.get("source_kind") == "hub"
           and (k := _widget_key(state, r)) and not (state.workdir / "card-widgets" / f"{k}.none").exists()][:limit]
    for i in hub:  # results of one repo share its card: fetched once
        key = _widget_key(state, results[i])
        kept = state.workdir / "card-widgets" / f"{key}.png"
        image = _open_sample(kept) if kept.is_file() else _fetch_widget(state, results[i], key) if key else None
        if image is not None:
            yield i, image
    todo = [i for i, r in enumerate(results) if have[i] is None and _renderable(state, r)][:limit]
    if not todo:
        return
    folder = state.workdir / "card-previews"
    folder.mkdir(parents=True, exist_ok=True)
    for i in todo:
        r = results[i]
        key = _card_key(state, r)
        with state.lock:
            live = state.live("sd1")
            for ad in list(live.adapters):  # the preview list is re-applied by the next Generate (_sync)
                live.remove(ad.name)
            try:
                live.add("card", str(_local_file(r.get("source"))), weight=1.0)
                width, height = live.native_size()
                image = live.render(card_prompt(r), seed=0, steps=CARD_STEPS, width=width, height=height,
                                    tags=False).image
            except Exception:  # noqa: BLE001 - an adapter that does not fit the base: the card keeps its tile
                (folder / f"{key}.none").touch()
                continue
            finally:
                if any(ad.name == "card" for ad in live.adapters):
                    live.remove("card")
        _keep_png(image, folder / f"{key}.png")
        yield i, thumbnail(image)


def gallery_items(results: Sequence[dict[str, Any]], samples: Sequence[Any] | None = None) -> list[tuple[Any, str]]:
    """The search gallery: one ``(card, caption)`` per result, in the results' order (``samples[i]``: the
    sample image of result ``i``, or None)."""
    samples = samples if samples is not None else [None] * len(results)
    return [(result_card(r, samples[i]), str(r.get("name") or "")) for i, r in enumerate(results)]


def used_in(state: SpaceState, result: dict[str, Any], limit: int = 20) -> list[str]:
    """The names of the blends made from a search result (the host's ``uses``: the registry's blend sources,
    by the adapter's SHA-256, as an anonymous visitor sees them), at most ``limit``; none when the host
    gave no ``uses``."""
    sha = str(result.get("sha256") or "").strip()
    if state.uses is None or not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        return []
    return [str(getattr(r, "name", r)) for r in state.uses(sha)][:limit]


def _local_file(source: str | None) -> Path | None:
    if not source:
        return None
    p = Path(source)
    return p if p.is_file() else None


def add_result(chosen: list[dict[str, Any]], result: dict[str, Any], state: SpaceState | None = None) -> list[dict[str, Any]]:
    """Add a search result to the preview list (a new list). A local file is used as it is; a Hub result
    of an endpoint the page may preview from (``state.hub_endpoints``) is downloaded first (:func:`hub_file`)."""
    if result.get("source_kind") == "hub" and state is not None:
        return add_file(chosen, hub_file(state, result), name=result.get("name"))
    path = _local_file(result.get("source"))
    if path is None:
        raise NotFoundError(f"{result.get('name')}: no local file to preview (source {result.get('source')})",
                            hint="index the file with `lorahub registry index`, or pull it from the Hub first")
    return add_file(chosen, path, name=result.get("name"))


def hub_location(result: dict[str, Any]) -> tuple[str, str, str]:
    """``(endpoint, repo id, file path)`` of a Hub search result (``source`` ``NS/NAME@REV:PATH``, ``url``
    the repo's page on its endpoint)."""
    source, url = str(result.get("source") or ""), str(result.get("url") or "")
    head, _, path = source.partition(":")
    repo_id = head.split("@", 1)[0]
    if repo_id.count("/") != 1 or not path or not url.endswith("/" + repo_id):
        raise NotFoundError(f"{result.get('name')}: not a Hub adapter this page can preview (source {source[:200]})")
    return url[: -len(repo_id) - 1].rstrip("/"), repo_id, path


def hub_file(state: SpaceState, result: dict[str, Any]) -> Path:
    """The adapter file of a Hub search result, downloaded on its first preview into the work folder's
    cache and checked against the SHA-256 the catalogue recorded; only from ``state.hub_endpoints``,
    without credentials, and at most ``state.max_download`` bytes."""
    from lorahub.hub.pull import fetch_file

    endpoint, repo_id, path = hub_location(result)
    if endpoint.lower() not in {e.rstrip("/").lower() for e in state.hub_endpoints}:
        raise UsageError(f"{result.get('name')}: this page previews adapters only from "
                         f"{', '.join(state.hub_endpoints) or 'no Hub endpoint'}")
    with state._fetch_lock:  # one download at a time: the same file clicked twice is fetched once
        return fetch_file(repo_id, path, sha256=str(result.get("sha256") or ""), endpoint=endpoint,
                          cache_dir=state.workdir / "hub-cache", max_size=state.max_download)


def adapter_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(text).stem if text.endswith(".safetensors") else text).strip("_")
    return name or "adapter"


def add_file(chosen: list[dict[str, Any]], path: str | os.PathLike[str], *, name: str | None = None,
             weight: float = 1.0) -> list[dict[str, Any]]:
    """Add an adapter file to the preview list (a new list)."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"{p}: no such file")
    refuse_pickle_name(p, subject=p.name)  # an upload's name only: never the server's folders
    out = list(chosen or [])
    if any(Path(c["path"]).resolve() == p.resolve() for c in out):
        return out
    if len(out) >= MAX_ADAPTERS:
        raise UsageError(f"the preview holds at most {MAX_ADAPTERS} adapters; remove one first")
    from lorahub.pipeline.live import unique_name

    unique = unique_name(adapter_name(name or p.name), (c["name"] for c in out), sep="_")
    out.append({"name": unique, "path": str(p), "weight": float(weight)})
    return out


def remove_adapter(chosen: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [c for c in chosen or [] if c["name"] != name]


# --------------------------------------------------------------------------- preview and blend


def _sync(live: Any, chosen: Sequence[dict[str, Any]], weights: Sequence[float]) -> dict[str, float]:
    """Make the live pipeline hold exactly ``chosen`` with ``weights`` (hot-swapping into free slots)."""
    want = {c["name"]: c for c in chosen}
    for ad in list(live.adapters):
        if ad.name not in want or Path(ad.path).resolve() != Path(want[ad.name]["path"]).resolve():
            live.remove(ad.name)
    loaded = {ad.name for ad in live.adapters}
    w = {c["name"]: float(weights[i]) if i < len(weights) and weights[i] is not None else float(c.get("weight", 1.0))
         for i, c in enumerate(chosen)}
    for c in chosen:
        if c["name"] not in loaded:
            live.add(c["name"], c["path"], weight=w[c["name"]])
    live.set_weights(w, exclusive=True)
    return w


def _check_steps(steps: Any) -> int:
    try:
        n = int(steps)
    except (TypeError, ValueError):
        raise UsageError(f"steps must be a whole number, not {steps!r}") from None
    if not 1 <= n <= 150:
        raise UsageError("steps must be between 1 and 150")
    return n


def parse_weights(text: str) -> list[float]:
    """``"0, 0.5, 1"`` -> ``[0.0, 0.5, 1.0]`` (grid columns; at most 8)."""
    from lorahub.pipeline.grid import parse_weights as parse

    return parse(text, max_count=8)


@dataclass
class Generated:
    image: Any  # PIL image (one render or the grid)
    seconds: list[float]
    infotext: str

    @property
    def status(self) -> str:
        per = sum(self.seconds) / len(self.seconds)
        n = len(self.seconds)
        return (f"{n} image{'s' if n > 1 else ''}, {per * 1000:.0f} ms per image "
                f"(base stays loaded; adapters hot-swapped)")


def generate(state: SpaceState, chosen: Sequence[dict[str, Any]], weights: Sequence[float], prompt: str,
             negative: str = "", seed: int = 0, steps: int = 20, *, grid: bool = False,
             grid_weights: str = "0, 0.5, 1", family: str | None = None) -> Generated:
    """One image with the chosen adapters at ``weights``, or (``grid``) a grid: one row per adapter, one
    column per grid weight (the other adapters keep their slider weights). ``family``: the base family
    (:data:`FAMILIES`; default SD 1.x)."""
    from lorahub.pipeline.grid import Cell, render_grid

    if not (prompt or "").strip():
        raise UsageError("write a prompt first")
    n_steps = _check_steps(steps)
    seed = int(seed or 0)
    columns = parse_weights(grid_weights) if grid else []
    if grid and not chosen:
        raise UsageError("grid mode needs at least one adapter in the preview list")
    with state.lock:
        live = state.live(family)
        width, height = live.native_size()
        base_w = _sync(live, chosen, weights)
        kw = dict(negative=negative or None, seed=seed, steps=n_steps, width=width, height=height, tags=False)
        if not grid:
            r = live.render(prompt, **kw)
            return Generated(r.image, [r.seconds], r.infotext())
        cells = [[Cell({**base_w, c["name"]: col}) for col in columns] for c in chosen]
        done = render_grid(live, prompt, cells, col_labels=[f"{w:g}" for w in columns],
                           row_labels=[c["name"] for c in chosen], title=prompt[:60], exclusive=True, restore=base_w, **kw)
        return Generated(done.image, done.seconds, f"{prompt}\nGrid: {len(chosen)} adapters x weights {grid_weights}, "
                                                   f"Steps: {n_steps}, Seed: {seed}")


def bake_blend(state: SpaceState, chosen: Sequence[dict[str, Any]], weights: Sequence[float],
               method: str = "linear", rank: int | None = None) -> Path:
    """Write the chosen adapters at their weights as one blended adapter file; returns its path."""
    from lorahub.pipeline.blend import blend, blend_inputs

    if not chosen:
        raise UsageError("add at least one adapter to the preview list before baking a blend")
    inputs = blend_inputs([
        (c["path"], float(weights[i]) if i < len(weights) and weights[i] is not None else c.get("weight", 1.0))
        for i, c in enumerate(chosen)])
    name = "blend-" + "-".join(c["name"] for c in chosen)[:80]
    out = state.new_dir("blends") / f"{name}.safetensors"
    blend(inputs, method=method or "linear", rank=int(rank) if rank else None, out=out, title=name)
    if not out.is_file():
        raise LorahubError(f"the blend was not written to {out}")
    return out


# --------------------------------------------------------------------------- blend search

#: Blend search: at most this many target images, each at most this many bytes and pixels.
MAX_SEARCH_IMAGES = 8
MAX_SEARCH_IMAGE_BYTES = 16 << 20
MAX_SEARCH_PIXELS = 4096 * 4096
#: The largest budget (objective evaluations) a visitor may ask for.
MAX_SEARCH_BUDGET = 200


@dataclass
class SearchOutcome:
    grid: Any  # PIL image: targets, the found blend, the base alone
    weights: dict[str, Any]
    dropped: list[str]
    recipe_yaml: str
    recipe_path: Path
    summary: str


def _search_images(files: Sequence[str | os.PathLike[str]] | None) -> tuple[list[Any], list[str | None]]:
    """Uploaded images (and same-stem ``.txt`` captions among the uploads), bounded in number, bytes and pixels.
    Only the files given are opened: the caller's paths are checked by the UI's policy first."""
    from PIL import Image

    from lorahub.training.dataset import to_rgb

    paths = [Path(f) for f in files or []]
    captions = {p.stem: p for p in paths if p.suffix.lower() == ".txt"}
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    other = [p.name for p in paths if p.suffix.lower() not in (*IMAGE_SUFFIXES, ".txt")]
    if other:
        raise UsageError(f"{other[0]}: not an image or a .txt caption")
    if not images:
        raise UsageError("upload a few target images (with .txt captions of the same name, or write a prompt)")
    if len(images) > MAX_SEARCH_IMAGES:
        raise UsageError(f"at most {MAX_SEARCH_IMAGES} target images")
    out, caps = [], []
    for p in images:
        if p.stat().st_size > MAX_SEARCH_IMAGE_BYTES:
            raise UsageError(f"{p.name}: a target image is at most {MAX_SEARCH_IMAGE_BYTES >> 20} MB")
        try:
            with Image.open(p) as im:
                if im.width * im.height > MAX_SEARCH_PIXELS:
                    raise UsageError(f"{p.name}: {im.width}x{im.height} is too large (at most 4096x4096 pixels)")
                im.load()
                out.append(to_rgb(im))
        except UsageError:
            raise
        except Exception:  # noqa: BLE001 - any decoder failure: one line
            raise UsageError(f"{p.name}: not a readable image") from None
        cap = captions.get(p.stem)
        text = None
        if cap is not None:
            if cap.stat().st_size > 4096:
                raise UsageError(f"{cap.name}: a caption is at most 4096 bytes")
            text = " ".join(cap.read_text(encoding="utf-8", errors="replace").split()) or None
        caps.append(text)
    return out, caps


def blend_search(state: SpaceState, chosen: Sequence[dict[str, Any]], files: Sequence[str | os.PathLike[str]] | None,
                 prompt: str = "", budget: int = 60, l1: float = 0.002, seed: int = 0, *,
                 family: str | None = None, on_progress: Callable[[int, int, float], None] | None = None) -> SearchOutcome:
    """Search the weights of the chosen adapters on uploaded target images (bounded: :data:`MAX_SEARCH_IMAGES`
    images of :data:`MAX_SEARCH_IMAGE_BYTES` and :data:`MAX_SEARCH_PIXELS`, a budget up to
    :data:`MAX_SEARCH_BUDGET`); returns the grid, the weights and the recipe (sources by file name only)."""
    import math

    from lorahub.pipeline.blend import BlendInput
    from lorahub.pipeline.blendsearch import run_search, search_size, targets_from_images
    from lorahub.pipeline.recipe import dump_recipe, portable

    if not chosen:
        raise UsageError("add the adapters to weigh to the preview list first")
    try:
        n_budget, lam, n_seed = int(budget), float(l1), int(seed or 0)
    except (TypeError, ValueError):
        raise UsageError("budget and seed must be whole numbers, L1 a number") from None
    if not 4 <= n_budget <= MAX_SEARCH_BUDGET:
        raise UsageError(f"the budget must be between 4 and {MAX_SEARCH_BUDGET}")
    if not (math.isfinite(lam) and 0.0 <= lam <= 1.0):
        raise UsageError("L1 must be between 0 and 1")
    images, caps = _search_images(files)
    prompt = (prompt or "").strip()[:500]
    captions = [c or prompt for c in caps]
    sources = [BlendInput(c["path"], 1.0, 1.0, name=c["name"], ref={"path": Path(c["path"]).name}) for c in chosen]

    def progress(p: Any) -> None:
        if on_progress is not None:
            on_progress(p.evaluation, p.budget, p.best)

    with state.lock:
        live = state.live(family)
        size = search_size(live)
        targets = targets_from_images(images, captions, size=size)
        run = run_search(live, sources, targets, size=size, budget=n_budget, l1=lam, seed=n_seed, grid=True,
                         grid_steps=8, title="blend-search", on_progress=progress)
    res = run.result
    if run.recipe is None:
        raise UsageError("the search kept no adapter: the base alone reproduces the targets best (try a smaller L1)")
    text = dump_recipe(portable(run.recipe))
    out = state.new_dir("search") / "blend-search.yaml"
    out.write_text(text, encoding="utf-8")
    weights = ", ".join(f"`{n}` {res.weights[n]:.3f}" for n in res.kept)
    summary = (f"found {weights}" + (f"; dropped {', '.join(f'`{n}`' for n in res.dropped)}" if res.dropped else "")
               + f" — denoising loss {res.loss:.5f} (base alone {res.base_loss:.5f}), {res.evaluations} evaluations "
               f"in {res.seconds:.1f} s")
    return SearchOutcome(run.grid, res.weights, res.dropped, text, out, summary)


# --------------------------------------------------------------------------- inspect


def inspect(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Inspect, validate and fingerprint one uploaded file: ``{"inspect", "validate", "fingerprint"}``
    (pydantic dumps). Pickles are refused before anything is read."""
    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.adapters.header import read_header
    from lorahub.adapters.inspect import inspect_file
    from lorahub.adapters.validate import validate_file

    if not path:
        raise UsageError("upload a .safetensors file first")
    p = Path(path)
    refuse_pickle_name(p, subject=p.name)
    read_header(p)  # refuses pickles by their bytes, whatever the name, and bad headers in one line
    return {
        "inspect": inspect_file(p).model_dump(mode="json"),
        "validate": validate_file(p).model_dump(mode="json"),
        "fingerprint": fingerprint_file(p).model_dump(mode="json"),
    }


def _md_escape(s: Any) -> str:
    return re.sub(r"([\\`*_{}\[\]<>|])", r"\\\1", str(s))


def inspect_markdown(report: dict[str, Any], display_name: str | None = None) -> str:
    """The report as Markdown (the page's Inspect panel)."""
    i, v, f = report["inspect"], report["validate"], report["fingerprint"]
    name = display_name or Path(i["path"]).name
    ranks = ", ".join(str(r) for r in i["ranks"]) or "-"
    lines = [
        f"### {_md_escape(name)}",
        f"**Validation:** {'valid' if v['valid'] else 'INVALID'}",
        *[f"- error: {_md_escape(e)}" for e in v["errors"]],
        *[f"- warning: {_md_escape(w)}" for w in v["warnings"]],
        "",
        "| field | value |",
        "|---|---|",
        f"| format | {_md_escape(i['format_name'])} (`{i['format']}`) |",
        f"| base family | {i['base_family']}" + (f" (declared {i['declared_base_family']})" if i.get("declared_base_family") else "")
        + (f", hidden width {i['hidden_size']}" if i.get("hidden_size") else "") + " |",
        f"| text encoders | {', '.join(i.get('text_encoders') or []) or '-'} |",
        f"| loads fully in | {', '.join(i.get('loaders') or []) or '-'} |",
        f"| rank / alpha | {i['rank'] if i['rank'] is not None else '-'} / {i['alpha'] if i['alpha'] is not None else '-'} (ranks: {ranks}) |",
        f"| modules | {i['modules']} ({i['tensors']} tensors, {i['parameters']:,} parameters, {i['dtype'] or '-'}) |",
        f"| trigger words | {_md_escape(', '.join(i['trigger_words']) or '-')} |",
        f"| title | {_md_escape(i['title'] or '-')} |",
        f"| diffusers loadable | {'yes' if i['diffusers_loadable'] else 'no'} |",
        f"| size | {i['file_size']:,} bytes |",
        "",
        "**Fingerprints**",
        "",
        "| hash | value |",
        "|---|---|",
        f"| AutoV3 | `{f['autov3'] or '-'}` |",
        f"| AutoV2 | `{f['autov2']}` |",
        f"| AutoV1 | `{f['autov1'] or '-'}` |",
        f"| SHA-256 | `{f['sha256']}` |",
        f"| tensor SHA-256 | `{f.get('tensor_sha256') or '-'}` |",
        f"| CRC32 | `{f.get('crc32') or '-'}` |",
        f"| BLAKE3 | `{f.get('blake3') or '-'}` |",
    ]
    warnings = list(i["warnings"]) + list(f.get("warnings") or [])
    if warnings:
        lines += ["", "**Warnings**", *[f"- {_md_escape(w)}" for w in warnings]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- train


def prepare_dataset(state: SpaceState, files: Sequence[str | os.PathLike[str]] | None, trigger: str | None,
                    into: Path | None = None) -> Path:
    """Uploaded images + ``.txt`` captions (same stem) and/or zips -> a kohya folder ``<dir>/1_<trigger>``
    (``<dir>``: ``into``, else a new work folder)."""
    paths = [Path(f) for f in files or []]
    if not paths:
        raise UsageError("upload some images (with .txt captions of the same name) or a zip of them")
    root = into if into is not None else state.new_dir("datasets")
    folder = root / f"1_{adapter_name(trigger or 'subject')}"
    folder.mkdir(parents=True)
    for p in paths:
        suffix = p.suffix.lower()
        if suffix == ".zip":
            extract_zip_file(p, folder, keep=lambda sfx: sfx in (*IMAGE_SUFFIXES, ".txt"))
        elif suffix in (*IMAGE_SUFFIXES, ".txt"):
            shutil.copyfile(p, folder / p.name)
        else:
            raise UsageError(f"{p.name}: not an image, a .txt caption or a zip")
    images = [f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise UsageError("no images among the uploaded files")
    return root


@dataclass
class TrainEvent:
    """One progress report of :func:`train`."""

    step: int
    steps: int
    loss: float | None
    samples: list[str]
    done: bool = False
    result: dict[str, Any] | None = None
    zip_path: str | None = None
    message: str = ""


def zip_package(folder: Path, dest: Path) -> Path:
    """The adapter package folder as one zip (checkpoints left out)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder)
            if f.is_file() and "checkpoints" not in rel.parts:
                zf.write(f, Path(folder.name) / rel)
    return dest


def train_settings(gpu: bool) -> dict[str, Any]:
    """What the Space's training adds to lorahub's defaults: on a GPU (a Space's, often shared or small, and with
    ``$LORAHUB_SPACE_BASE_FLUX`` a 12 B transformer) the settings of ``lorahub train --small-gpu`` (bf16 where the
    GPU has it, gradient checkpointing, cached latents, 8-bit AdamW with bitsandbytes); nothing on a CPU."""
    if not gpu:
        return {}
    from lorahub.training.config import small_gpu_settings

    return small_gpu_settings()


def train(state: SpaceState, files: Sequence[str | os.PathLike[str]] | None, trigger: str = "", steps: int = 100,
          rank: int = 4, *, lr: float | None = None, sample_every: int = 0, poll: float = 0.25,
          on_progress: Callable[[int, float], None] | None = None, family: str | None = None) -> Iterator[TrainEvent]:
    """Train an adapter on the uploaded files, yielding :class:`TrainEvent` s as steps finish; the last one
    has ``done``, the result and the zipped package. Runs the library's trainer in a worker thread, on
    ``family``'s base (:data:`FAMILIES`; default SD 1.x). ``lr``: None for the base's own default (the drawing
    base's :data:`~lorahub.base.drawing.TRAIN_DEFAULTS`, else TrainConfig's)."""
    from lorahub.schemas.training import TrainConfig
    from lorahub.training.config import make_config
    from lorahub.training.trainer import train as run_training

    trigger = (trigger or "").strip() or None
    base = state.base_for(family)
    try:
        n_steps, n_rank = int(steps), int(rank)
    except (TypeError, ValueError):
        raise UsageError("steps and rank must be whole numbers") from None
    if not 1 <= n_steps <= 5000:
        raise UsageError("steps must be between 1 and 5000")
    if not 1 <= n_rank <= 128:
        raise UsageError("rank must be between 1 and 128")
    job = state.new_dir("train")
    try:
        data = prepare_dataset(state, files, trigger, into=job / "data")
    except BaseException:
        shutil.rmtree(job, ignore_errors=True)
        raise
    out = job / adapter_name(trigger or "adapter")
    values: dict[str, Any] = dict(data=str(data), out=str(out), base=base, trigger=trigger, steps=n_steps,
                                  rank=n_rank, sample_every=int(sample_every or 0), sample_steps=8,
                                  **train_settings(_has_gpu()))
    if lr is not None:
        values["lr"] = float(lr)
    losses: list[tuple[int, float]] = []
    box: dict[str, Any] = {}
    stop = threading.Event()

    def cb(step: int, loss: float) -> None:
        if stop.is_set():  # the page went away: stop at this step, freeing the training slot for real
            raise _Stopped()
        losses.append((step, float(loss)))
        if on_progress:
            on_progress(step, float(loss))

    def work() -> None:
        try:
            box["result"] = run_training(cfg, progress=False, callback=cb)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            if stop.is_set():  # nobody waits for this run any more: nothing of it is kept
                shutil.rmtree(job, ignore_errors=True)

    worker = threading.Thread(target=work, name="lorahub-space-train", daemon=True)
    try:
        cfg: TrainConfig = make_config(values, source="settings")
        worker.start()
        samples_dir = out / "samples"
        seen = -1
        while worker.is_alive():
            worker.join(poll)
            if losses and losses[-1][0] != seen:
                seen, loss = losses[-1]
                yield TrainEvent(seen, n_steps, loss, _samples(samples_dir))
        if "error" in box:
            exc = box["error"]
            if isinstance(exc, LorahubError):
                raise exc
            raise LorahubError(f"training failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        result = box["result"]
        zpath = zip_package(out, out.parent / f"{out.name}.zip")
        last = losses[-1][1] if losses else None
        yield TrainEvent(n_steps, n_steps, last, _samples(samples_dir), done=True, result=result.model_dump(mode="json"),
                         zip_path=str(zpath), message=f"trained {result.steps} steps in {result.seconds:.1f} s")
    finally:
        # Closed early (the page went away) or done: the worker stops at its next step and removes the job
        # itself; a finished run keeps its package (the zip, until swept) but not the copied images.
        stop.set()
        if not worker.is_alive():
            shutil.rmtree(data, ignore_errors=True)
            if "result" not in box:
                shutil.rmtree(job, ignore_errors=True)


class _Stopped(Exception):
    """Raised from the training callback to stop a run whose page went away."""


def _samples(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.rglob("*.png"), key=lambda p: (p.stat().st_mtime, p.name))]


def loss_text(event: TrainEvent) -> str:
    loss = f"{event.loss:.4f}" if event.loss is not None else "-"
    head = "done" if event.done else "training"
    return f"**{head}**: step {event.step}/{event.steps}, loss {loss}" + (f" — {event.message}" if event.message else "")


# --------------------------------------------------------------------------- push


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


#: The one line for a push that failed in transit: whether the endpoint refused the connection, dropped
#: it or never answered is not told apart (an anonymous page must not probe which ports are open).
NETWORK_FAILURE = "the push to {endpoint} failed: the endpoint could not be reached or did not answer"
_TRANSPORT_ERRORS = {"ConnectError", "ConnectTimeout", "TimeoutException", "TransportError", "NetworkError",
                     "ProtocolError", "RemoteProtocolError", "ReadError", "WriteError", "ReadTimeout", "WriteTimeout",
                     "PoolTimeout", "ProxyError", "UnsupportedProtocol"}


def _network_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a transport failure rather than an answer of the endpoint."""
    import socket
    import ssl

    from lorahub.hub.errors import HubError

    try:
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:  # pragma: no cover
        HfHubHTTPError = ()  # noqa: N806
    if isinstance(exc, LorahubError) and not isinstance(exc, HubError):
        return False  # refused by lorahub itself (bad package, bad repo name): not about the network
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None:
            break
        if isinstance(cur, HfHubHTTPError) and getattr(cur, "response", None) is not None:
            return False  # the endpoint answered
        if {c.__name__ for c in type(cur).__mro__} & _TRANSPORT_ERRORS or isinstance(
            cur, (ConnectionError, TimeoutError, socket.gaierror, socket.herror, ssl.SSLError)
        ):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def push(path: str | os.PathLike[str] | None, *, repo: str, token: str | None = None, private: bool = False,
         endpoint: str | None = None, dry_run: bool = True, workdir: Path | None = None) -> dict[str, Any]:
    """Push (or, with ``dry_run``, preview the push of) an adapter file, package folder or zipped package.

    Only ``token`` is ever sent: a push without one is refused before any request, and a dry run without
    one makes no request (never the process's ``HF_TOKEN`` nor its ``hf auth login``). The token is passed
    to the library for this one call, neither stored nor logged; error messages have it blanked out, and
    every transport failure reads the same (:data:`NETWORK_FAILURE`). A zip is unpacked, within
    :func:`lorahub.safezip.extract_zip`'s bounds, into a folder under ``workdir`` that is removed afterwards. The pushed
    adapter is not recorded in any local registry. Returns ``{"card", "url", "repo_id", "dry_run", ...}``.
    """
    from lorahub.hub.push import push as hub_push

    if not path:
        raise UsageError("nothing to push: train an adapter first or upload a .safetensors file")
    repo = (repo or "").strip()
    if not repo:
        raise UsageError("name the repo (user/name, or just a name under your account)")
    token = (token or "").strip()
    if not token and not dry_run:
        raise UsageError("type your token for the endpoint in the Token box: it is used for this push only "
                         "(the server's own credentials are never used)")
    ep = (endpoint or "").strip() or None
    p = Path(path)
    unpacked: Path | None = None
    try:
        if p.suffix.lower() == ".zip":
            unpacked = Path(tempfile.mkdtemp(prefix="lorahub-push-", dir=workdir))
            extract_zip_file(p, unpacked)
            subs = [d for d in unpacked.iterdir() if d.is_dir()]
            p = subs[0] if len(subs) == 1 else unpacked
        try:
            result = hub_push(p, repo=repo, private=bool(private), endpoint=ep, token=token or False,
                              dry_run=bool(dry_run))
        except Exception as exc:  # noqa: BLE001 - one readable line, token blanked
            if _network_failure(exc):
                raise LorahubError(NETWORK_FAILURE.format(endpoint=ep or "the Hub")) from None
            if isinstance(exc, LorahubError):
                raise LorahubError(_scrub(str(exc), token)) from None
            raise LorahubError(_scrub(f"push failed: {type(exc).__name__}: {exc}", token).splitlines()[0]) from None
    finally:
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)
    return {"card": result.card or "", "url": result.url, "repo_id": result.repo_id, "dry_run": result.dry_run,
            "changed": result.changed, "commit": result.commit, "warnings": list(result.warnings)}


def elapsed(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"
