"""The Space run on its own, composed: ``lorahub space`` and the ``app.py`` of an exported Space
(``lorahub space export``) open the registry the page searches, fill it, and hand the page its search
function, its blends-made-from lookup (``Registry.uses``) and the files of its database (which the page
keeps from its visitors). The page itself
(:mod:`lorahub.space`) never imports the registry (docs/architecture.md).

What an exported Space's registry holds when it starts:

* the demo adapters of its SD 1.x base (:func:`lorahub.base.synthetic.write_demo_adapters`), so that a
  CPU Space shows something offline: on a CPU the drawing base's trained ones (a heart, a checkered texture,
  a sunset), each with its sample image;
* with ``$LORAHUB_SPACE_INDEX`` (or ``--index-hub``), the LoRA repos of a Hub or of a ``lorahub serve``,
  indexed by :func:`lorahub.registry.sources.hub.index_hub` (``lorahub index --hub``): headers read with
  range requests, no weights; a result's file is downloaded on its first preview, checked against the
  recorded SHA-256 and cached.

The index setting is a list of ``KEY=VALUE`` terms separated by commas or spaces (:func:`parse_index`)::

    endpoint=http://127.0.0.1:8000, author=alice, author=bob, tag=lora, limit=200
    repo=alice/inkwash, repo=bob/neon
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorahub.errors import UsageError

ENV_INDEX = "LORAHUB_SPACE_INDEX"
#: At most this many repos per listing (an author's, a tag's), whatever ``limit`` says.
MAX_LISTED = 5000
_KEYS = ("endpoint", "author", "tag", "repo", "search", "limit")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass
class IndexSpec:
    """Which Hub repos a Space indexes when it starts (see :func:`parse_index`)."""

    endpoint: str | None = None
    authors: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    repos: list[str] = field(default_factory=list)
    search: str | None = None
    limit: int | None = None

    def text(self) -> str:
        """The spec written back as the setting's text (what an exported ``app.py`` carries)."""
        parts = [f"endpoint={self.endpoint}"] if self.endpoint else []
        parts += [f"author={a}" for a in self.authors] + [f"tag={t}" for t in self.tags]
        parts += [f"repo={r}" for r in self.repos]
        parts += [f"search={self.search}"] if self.search else []
        parts += [f"limit={self.limit}"] if self.limit else []
        return ", ".join(parts)


def parse_index(text: str | None) -> IndexSpec | None:
    """``"endpoint=URL, author=NAME, tag=TAG, repo=NS/NAME, search=WORD, limit=N"`` (each key but
    ``endpoint``, ``search`` and ``limit`` repeatable; a bare ``NS/NAME`` is a repo) -> an
    :class:`IndexSpec`; None for an empty text. Repos are indexed as listed; authors are listed one by one;
    tags narrow every listing (a repo must carry all of them); with neither authors nor repos, the listing
    of the tags (or of ``search``) is indexed. Bad terms: one line, :class:`UsageError`."""
    from lorahub.hub.endpoint import normalize_endpoint

    terms = [t for t in re.split(r"[,\s]+", (text or "").strip()) if t]
    if not terms:
        return None
    if len(terms) > 2000:
        raise UsageError(f"{ENV_INDEX}: at most 2000 terms")
    spec = IndexSpec()
    for term in terms:
        key, sep, value = term.partition("=")
        if not sep:
            key, value = "repo", term
        key, value = key.strip().lower(), value.strip()
        if key not in _KEYS or not value:
            raise UsageError(f"{ENV_INDEX}: {term[:80]!r} is not KEY=VALUE with KEY one of {', '.join(_KEYS)}",
                             hint="e.g. endpoint=https://huggingface.co, author=alice, tag=lora")
        if key == "endpoint":
            spec.endpoint = normalize_endpoint(value)
        elif key == "repo":
            if not _REPO.match(value):
                raise UsageError(f"{ENV_INDEX}: {value[:80]!r} is not a repo id (NAMESPACE/NAME)")
            spec.repos.append(value)
        elif key == "limit":
            if not value.isdigit() or not 1 <= int(value) <= MAX_LISTED:
                raise UsageError(f"{ENV_INDEX}: limit must be a whole number from 1 to {MAX_LISTED}")
            spec.limit = int(value)
        elif not re.fullmatch(r"[A-Za-z0-9._:-]{1,96}", value):
            raise UsageError(f"{ENV_INDEX}: {key} {value[:80]!r}: letters, digits, '.', '_', ':' and '-' only")
        elif key == "author":
            spec.authors.append(value)
        elif key == "tag":
            spec.tags.append(value)
        else:
            spec.search = value
    if not (spec.authors or spec.tags or spec.repos or spec.search):
        raise UsageError(f"{ENV_INDEX}: name what to index (author=, tag=, repo= or search=)")
    return spec


def index_spec(repos: Any, spec: IndexSpec, *, progress: Callable[[str], None] | None = None) -> list[Any]:
    """Index what ``spec`` names into ``repos`` (a Registry), public repos only (no token is ever sent);
    returns the :class:`~lorahub.schemas.registry.IndexSummary` of each listing."""
    from lorahub.registry.sources.hub import index_hub

    kw = dict(endpoint=spec.endpoint, token=False, filters=spec.tags, search=spec.search, progress=progress,
              limit=spec.limit or MAX_LISTED)
    summaries = []
    if spec.repos:
        summaries.append(index_hub(repos, **{**kw, "filters": (), "search": None}, repo_ids=spec.repos))
    for author in spec.authors:
        summaries.append(index_hub(repos, **kw, author=author))
    if not spec.authors and not spec.repos:
        summaries.append(index_hub(repos, **kw))
    return summaries


@dataclass
class SpaceHost:
    """What the host opened for the page: the registry (kept open while the page runs) and what it says."""

    registry: Any
    blocked: list[Path]
    hub_endpoints: tuple[str, ...]
    summaries: list[Any] = field(default_factory=list)

    def close(self) -> None:
        self.registry.close()


def open_host(database: str | None = None, *, demo_adapters: bool = False, index: IndexSpec | None = None,
              say: Callable[[str], None] | None = None, base: str | None = None) -> SpaceHost:
    """Open the registry at ``database`` (default ``$LORAHUB_DATABASE_URL``, else SQLite in
    ``$LORAHUB_HOME``) and fill it: the demo adapters of the page's SD 1.x base (``demo_adapters``; ``base``
    as :func:`lorahub.space.callbacks.space_base` picks it: on a CPU the drawing base's trained ones), the
    repos ``index`` names."""
    from lorahub.config import home
    from lorahub.hub.endpoint import normalize_endpoint
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.database import database_files

    say = say or (lambda _m: None)
    reg = Registry(database)
    try:
        reg.ensure_schema()
        summaries = []
        if demo_adapters:
            from lorahub.base.drawing import is_drawing_ref
            from lorahub.base.resolve import resolve_base
            from lorahub.base.synthetic import write_demo_adapters
            from lorahub.space.callbacks import space_base

            ref = resolve_base(space_base(base), download=False, build=False)
            kind = "drawing" if is_drawing_ref(ref) else "embedded"
            folder = home() / "space-adapters" / kind
            summaries.append(reg.index_paths(write_demo_adapters(folder, base=ref if kind == "drawing" else None)))
            say(f"lorahub space: {len(summaries[-1].failed)} of the demo adapters failed" if summaries[-1].failed
                else f"lorahub space: demo adapters in {folder}")
        endpoints: tuple[str, ...] = ()
        if index is not None:
            endpoints = (normalize_endpoint(index.endpoint),)
            for s in index_spec(reg, index):
                summaries.append(s)
                say(f"lorahub space: indexed {endpoints[0]}: {s.scanned} repos, {s.added} added, {s.updated} updated, "
                    f"{s.unchanged} unchanged, {len(s.failed)} failed in {s.seconds:.1f} s")
        from lorahub.registry import semantic

        semantic.keep_loaded()  # the page's process keeps its search index (an HNSW graph above 20k vectors)
    except BaseException:
        reg.close()
        raise
    return SpaceHost(registry=reg, blocked=database_files(database), hub_endpoints=endpoints, summaries=summaries)


def space_blocks(*, base: str | None = None, database: str | None = None, demo_adapters: bool = False,
                 index: str | IndexSpec | None = None, push_endpoints: Sequence[str] = (),
                 max_file_size: int | None = None, say: Callable[[str], None] | None = None) -> Any:
    """The page (a ``gr.Blocks``) over a registry opened and filled by :func:`open_host`; serve it with
    :func:`serve`. ``index``: an :class:`IndexSpec` or its text (default ``$LORAHUB_SPACE_INDEX``)."""
    from lorahub.errors import require

    require("gradio", "space")
    from lorahub.space import guard
    from lorahub.space.ui import create_blocks

    spec = index if isinstance(index, IndexSpec) else parse_index(index if index is not None else os.environ.get(ENV_INDEX))
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    host = open_host(database, demo_adapters=demo_adapters, index=spec, say=say, base=base)
    policy = guard.make_policy(push_endpoints=push_endpoints, max_file_size=max_file_size, blocked=host.blocked)
    blocks = create_blocks(base, search=host.registry.search, uses=host.registry.uses, policy=policy, hub_endpoints=host.hub_endpoints)
    blocks.lorahub_host = host
    return blocks


def serve(blocks: Any, host: str | None = None, port: int | None = None,
          say: Callable[[str], None] | None = None) -> None:
    """Serve ``blocks`` (:func:`space_blocks`) hardened until interrupted, on ``host:port`` (default
    ``$GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT``, what Spaces set, else 127.0.0.1:7860)."""
    from lorahub.space.ui import serve as serve_page

    host = host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = port or int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        serve_page(host, port, blocks=blocks, on_ready=lambda url: say(f"lorahub space: listening on {url}"))
    finally:
        blocks.lorahub_host.close()


__all__ = ["ENV_INDEX", "IndexSpec", "SpaceHost", "index_spec", "open_host", "parse_index", "serve", "space_blocks"]
