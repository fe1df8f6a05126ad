"""The registry's step of the adapter-name resolver (:mod:`lorahub.pipeline.resolver`): a name or a
fingerprint that ``lorahub search`` knows leads to the record's file.

The library resolves paths, adapter folders, search folders and Hub ids; it knows no registry. A face
that has one appends :class:`RegistryStep` (``Resolver(steps=resolver_steps())``, or
:func:`registry_resolver`): an exact name (or title) match, or a fingerprint of 8-64 hex digits; the
record's source (a local file or a Hub repo) is then resolved by the library's path and Hub steps.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from lorahub.errors import NotFoundError, UsageError
from lorahub.pipeline.resolver import DEFAULT_STEPS, Resolved, Resolver, Step, step_hub, step_path

_HEX = re.compile(r"^(0x)?[0-9a-fA-F]{8,64}$")


def _default_registry_exists() -> bool:
    """Whether there is a registry to ask without being told one: ``$LORAHUB_DATABASE_URL`` or the
    SQLite file in ``$LORAHUB_HOME`` (a name that resolves nowhere creates no database)."""
    from lorahub.config import home

    from .database import ENV_URL, SQLITE_FILENAME

    return bool(os.environ.get(ENV_URL, "").strip()) or (home() / SQLITE_FILENAME).is_file()


class RegistryStep:
    """A resolver step (``(name, resolver) -> Resolved | None``) that asks a registry.

    ``registry``: a :class:`~lorahub.registry.catalogue.Registry` to ask (not closed here); else one is
    opened on ``url`` for each name that reaches this step, or on the default registry when it exists.
    """

    def __init__(self, registry: Any = None, *, url: str | None = None) -> None:
        self.registry = registry
        self.url = url

    def __call__(self, name: str, resolver: Resolver) -> Resolved | None:
        reg = self.registry
        own = False
        if reg is None:
            if self.url is None and not _default_registry_exists():
                return None
            from .catalogue import Registry

            reg, own = Registry(self.url), True
        try:
            if _HEX.match(name):
                results = reg.by_hash(name)
            else:
                results = [
                    r for r in reg.search(name, limit=20)
                    if r.name.lower() == name.lower() or (r.title or "").lower() == name.lower()
                ]
        finally:
            if own:
                reg.close()
        usable = [r for r in results if r.source_kind in ("local", "hub")]
        if not usable:
            if results:
                raise NotFoundError(
                    f"'{name}': the registry knows it only as a catalogue record ({results[0].source}), not as a file",
                    hint=f"download it first{' from ' + results[0].url if results[0].url else ''}",
                )
            return None
        distinct = {r.sha256 or r.source for r in usable}
        if len(distinct) > 1:
            listing = ", ".join(r.source for r in usable[:4])
            raise UsageError(f"'{name}' names {len(distinct)} different adapters in the registry: {listing}",
                             hint="use a path, a hash or a Hub id")
        chosen = usable[0]
        source = chosen.source
        if chosen.source_kind == "hub":
            repo_rev, _, inside = source.partition(":")
            source = f"{repo_rev}:{inside}" if inside else repo_rev
        for step in (step_path, step_hub):
            hit = step(source, resolver)
            if hit is not None:
                return Resolved(name, hit.path, "registry", chosen.source)
        raise NotFoundError(f"'{name}': the registry points at {chosen.source}, which is not reachable")


def resolver_steps(registry: Any = None, *, url: str | None = None) -> list[Step]:
    """The library's steps, then the registry's."""
    return [*DEFAULT_STEPS, RegistryStep(registry, url=url)]


def registry_resolver(lora_dirs: Sequence[str | os.PathLike[str]] = (), *, registry: Any = None,
                      url: str | None = None) -> Resolver:
    """A :class:`~lorahub.pipeline.resolver.Resolver` that also knows the registry's names and hashes."""
    return Resolver(resolver_steps(registry, url=url), lora_dirs=lora_dirs)


__all__ = ["RegistryStep", "registry_resolver", "resolver_steps"]
