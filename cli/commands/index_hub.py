"""``lorahub index --hub``: the Hub options of the registry's ``lorahub index`` command.

The registry's command (``cli/commands/registry.py``) stays as it is apart from one decorator
line, ``@hub_index_options``, placed right under ``@click.command("index")``. The decorator adds
``--hub``, ``--endpoint``, ``--author``, ``--hub-search``, ``--filter`` and ``--token``; with
``--hub`` it runs :func:`lorahub.registry.sources.hub.index_hub` instead of the folder indexer
(``--json`` and ``--database`` of the wrapped command are honoured when it has them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

HUB_KWARGS = ("hub", "endpoint", "author", "hub_search", "hub_filter", "token")


def hub_index_options(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hub = {k: kwargs.pop(k, None) for k in HUB_KWARGS}
        if not hub["hub"]:
            flags = {"endpoint": "--endpoint", "author": "--author", "hub_search": "--hub-search", "hub_filter": "--filter"}
            extra = [flag for k, flag in flags.items() if hub[k]]  # --token may come from $HF_TOKEN
            if extra:
                raise click.UsageError(f"{', '.join(extra)} only go with --hub")
            return func(*args, **kwargs)
        if kwargs.get("paths") or kwargs.get("records"):
            raise click.UsageError("give either PATHS/--records or --hub, not both")
        return run_hub_index(
            endpoint=hub["endpoint"],
            author=hub["author"],
            search=hub["hub_search"],
            filters=list(hub["hub_filter"] or ()),
            token=hub["token"],
            database=kwargs.get("database"),
            as_json=bool(kwargs.get("as_json")),
        )

    options = [
        click.option("--hub", is_flag=True, help="Index the LoRA repos of a Hub endpoint (headers read with range requests; no weights downloaded)."),
        click.option("--endpoint", default=None, metavar="URL", help="With --hub: the Hub or a `lorahub serve` (default $HF_ENDPOINT or https://huggingface.co)."),
        click.option("--author", default=None, metavar="NAME", help="With --hub: only this user's or organisation's repos."),
        click.option("--hub-search", default=None, metavar="WORDS", help="With --hub: only repos whose id contains WORDS."),
        click.option("--filter", "hub_filter", multiple=True, metavar="TAG", help="With --hub: only repos with this tag (repeatable), e.g. lora."),
        click.option("--token", default=None, metavar="TOKEN", envvar="HF_TOKEN", help="With --hub: token for private repos (default $HF_TOKEN)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def run_hub_index(
    *,
    endpoint: str | None,
    author: str | None,
    search: str | None,
    filters: list[str],
    token: str | None,
    database: str | None,
    as_json: bool,
) -> None:
    from lorahub.cli.output import emit, info
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.sources.hub import index_hub

    with Registry(database) as registry:
        registry.ensure_schema()
        summary = index_hub(
            registry,
            endpoint=endpoint,
            token=token,
            author=author,
            search=search,
            filters=filters,
            progress=None if as_json else info,
        )

    def human(s: Any) -> list[str]:
        lines = [
            f"{s.scanned} repos: {s.added} added, {s.updated} updated, {s.unchanged} unchanged, "
            f"{s.removed} removed, {len(s.failed)} failed ({s.seconds:.1f} s) -> {s.database}"
        ]
        lines += [f"  failed: {f.path}: {f.error}" for f in s.failed]
        return lines

    emit(summary, as_json, human)
    if summary.failed and not (summary.added or summary.updated or summary.unchanged):
        raise SystemExit(1)
