"""``lorahub resolve PATH...``: where adapter files are published (Hub-compatible and Civitai-compatible
servers), with ``--apply`` recording it in the local registry and ``--write-metadata`` into the files.

The lookups are the library's (:mod:`lorahub.hub.resolve`); this command reads the files, records
what was found, and prints.
"""

from __future__ import annotations

import os
from typing import Any

import click

from lorahub.cli.output import emit, info, json_option, warn

#: What ``--write-metadata`` writes (modelspec keys as kohya's sai_model_spec names them, and the page).
SOURCE_URL_KEY = "lorahub.source_url"


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 30m, 24h, 7d, 0)") from None
    if value < 0 or value > 3650 * 86400:
        raise click.BadParameter(f"{text!r} is out of range")
    return value


def _record(pub: Any, result: Any) -> Any:
    """An AdapterRecord of one publication: its file (by SHA-256) under the server's name and id."""
    from urllib.parse import urlsplit

    from lorahub.schemas.registry import AdapterRecord, RecordFile, RecordVersion

    host = urlsplit(pub.endpoint).netloc
    ident = str(pub.version_id) if pub.kind == "civitai" and pub.version_id else (pub.repo_id or pub.name)
    version = RecordVersion(
        id=str(pub.version_id) if pub.version_id else pub.revision, name=pub.version, base_model=pub.base_model,
        base_family=pub.base_family if pub.base_family != "unknown" else None, trigger_words=pub.trigger_words,
        url=pub.url, files=[RecordFile(name=pub.file_name or os.path.basename(result.path), size=result.size,
                                       url=pub.download_url, primary=True, hashes={"sha256": result.sha256})],
    )
    return AdapterRecord(
        source=f"{pub.kind}:{host}"[:64], id=ident[:200], name=pub.name, url=pub.url, author=pub.author,
        license=pub.license, tags=pub.tags, base_model=pub.base_model, versions=[version],
        extra={"resolved_from": pub.endpoint},
    )


def _from_index(endpoint: str, r: Any) -> Any:
    """A Publication of a registry SearchResult of a Hub repo's file (source ``repo@commit:path``)."""
    from lorahub.schemas.hub import Publication

    repo_id, _, rest = r.source.partition("@")
    return Publication(kind="hub", endpoint=endpoint, name=r.title or r.name, repo_id=repo_id or None,
                       version=r.version, revision=rest.split(":", 1)[0] or None, file_name=r.file_name,
                       trigger_words=r.trigger_words, base_model=r.base_model, base_family=r.base_family,
                       license=r.license, author=r.author, tags=r.tags, url=r.url)


def _write_metadata(result: Any) -> str:
    """Write the first publication into the file's metadata (atomically); its new SHA-256."""
    from lorahub.adapters.fingerprint import fingerprint_record
    from lorahub.adapters.metadata import set_metadata

    pub = result.found[0]
    updates = {"modelspec.title": pub.name, SOURCE_URL_KEY: pub.url or pub.endpoint}
    if pub.trigger_words:
        updates["modelspec.trigger_phrase"] = ", ".join(pub.trigger_words)
    if pub.license:
        updates["modelspec.license"] = pub.license
    if pub.author:
        updates["modelspec.author"] = pub.author
    set_metadata(result.path, updates)
    return fingerprint_record(result.path)["sha256"]


def _human(results: list[Any]) -> list[str]:
    lines = []
    for r in results:
        lines.append(f"{r.path}  sha256 {r.sha256[:16]}...{'  (cached)' if r.cached and r.found else ''}")
        for p in r.found:
            where = p.repo_id or (f"model {p.model_id}, version {p.version_id}" if p.model_id else "")
            facts = [f"base {p.base_model or p.base_family}"]
            if p.version:
                facts.append(f"version {p.version!r}")
            if p.license:
                facts.append(f"licence {p.license}")
            if p.trigger_words:
                facts.append("triggers: " + ", ".join(p.trigger_words))
            via = " (local index)" if p.via == "index" else ""
            lines.append(f"  {p.kind:<8} {p.endpoint}{via}  {p.name!r} ({where}); " + "; ".join(facts))
            if p.url:
                lines.append(f"           {p.url}")
        if not r.found:
            lines.append("  not published on " + ("the servers that answered" if r.errors else "any server asked"))
        for e in r.errors:
            lines.append(f"  error: {e}")
        if r.new_sha256:
            lines.append(f"  metadata written: the file's SHA-256 is now {r.new_sha256}")
    return lines


@click.command("resolve")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--endpoint", "hubs", multiple=True, metavar="URL",
              help="A Hub-compatible server with lorahub's by-hash API (a `lorahub serve`); repeatable.")
@click.option("--civitai", "civitai", multiple=True, metavar="URL",
              help="A Civitai-compatible server (https://civitai.com, or a `lorahub serve`); repeatable.")
@click.option("--apply", is_flag=True, help="Record what was found in the local registry (the files and where they are published).")
@click.option("--write-metadata", is_flag=True,
              help="Also write the first find (name, trigger words, licence, page URL) into each file's metadata, "
              "atomically. This changes the file's SHA-256, so Civitai no longer finds that copy by hash.")
@click.option("--database", "database", metavar="URL", default=None,
              help="Registry for --apply (default: $LORAHUB_DATABASE_URL, else SQLite in $LORAHUB_HOME).")
@click.option("--cache-ttl", "cache_ttl", default="24h", show_default=True, metavar="DURATION",
              help="Reuse answers younger than this (30m, 24h, 7d; 0: ask again).")
@json_option
def resolve_cmd(paths: tuple[str, ...], hubs: tuple[str, ...], civitai: tuple[str, ...], apply: bool,
                write_metadata: bool, database: str | None, cache_ttl: str, as_json: bool) -> None:
    """Where adapter files are published: name, version, trigger words, base, licence and page.

    Each .safetensors file in PATH (files or folders) is looked up by SHA-256 on every Hub-compatible
    (--endpoint) and Civitai-compatible (--civitai, 100 hashes per request) server named. A Hub without
    lorahub's by-hash API (the Hugging Face Hub) is looked up in the local registry's index of its repos
    (lorahub index --hub, push, pull) instead. Answers are cached in $LORAHUB_HOME/cache/resolve. Exit code 0 when every server answered (found or not), 1
    when one could not.

    \b
    Examples:
      lorahub resolve ~/loras --civitai https://civitai.com
      lorahub resolve style.safetensors --endpoint http://127.0.0.1:8000 --civitai http://127.0.0.1:8000 --apply
    """
    from lorahub.adapters.fingerprint import fingerprint_record
    from lorahub.config import cache_dir
    from lorahub.hub.resolve import ResolveCache, adapter_files, normalize_endpoint, resolve

    ttl = _duration(cache_ttl)
    for h in hubs:
        normalize_endpoint(h)
    for c in civitai:
        normalize_endpoint(c, civitai=True)
    if not hubs and not civitai:
        raise click.UsageError("name at least one server: --endpoint URL (a lorahub hub) or --civitai URL")
    files = adapter_files(paths)
    if not files:
        info("no .safetensors file found")
    triples = []
    for f in files:
        rec = fingerprint_record(f)
        triples.append((os.fspath(f), rec["sha256"], int(rec["size"])))
    cache = ResolveCache(cache_dir() / "resolve", ttl_s=ttl)
    opened: list[Any] = []

    def index(endpoint: str, sha256: str) -> list[Any] | None:
        """The local registry's records of that Hub's repos (lorahub index --hub, push, pull); None when
        it has none of that Hub."""
        from lorahub.registry.catalogue import Registry

        if not opened:
            opened.append(Registry(database))
        reg = opened[0]
        prefix = f"hub:{endpoint}/"
        with reg.reading() as raw:
            indexed = raw.all("SELECT 1 FROM adapters WHERE source_kind = 'hub' AND substr(source_key, 1, :n) = :p LIMIT 1",
                              {"n": len(prefix), "p": prefix})
        if not indexed:
            return None
        return [_from_index(endpoint, r) for r in reg.by_hash(sha256)
                if r.source_kind == "hub" and r.sha256 == sha256 and (r.url or "").startswith(endpoint + "/")]

    try:
        results = resolve(triples, hubs=hubs, civitai=civitai, cache=cache, progress=info, index=index) if triples else []
    finally:
        for reg in opened:
            reg.close()

    found = [r for r in results if r.found]
    if write_metadata:
        for r in found:
            r.new_sha256 = _write_metadata(r)
            info(f"{r.path}: metadata written; its SHA-256 changed from {r.sha256} to {r.new_sha256} "
                 "(lookups by the old hash no longer find this copy)")
    if apply and found:
        from lorahub.registry.catalogue import Registry

        with Registry(database) as reg:
            reg.index_paths([r.path for r in found])
            reg.import_records([_record(p, r) for r in found for p in r.found])
        for r in found:
            r.applied = True
        info(f"recorded {len(found)} file(s) and {sum(len(r.found) for r in found)} publication(s) in {reg.display_url}")
    emit(results, as_json, _human)
    missing = len(results) - len(found)
    failed = [r for r in results if r.errors]
    info(f"{len(found)} of {len(results)} file(s) found" + (f"; {missing} not published on the servers asked" if missing else ""))
    if failed:
        warn(f"{len(failed)} file(s) could not be looked up everywhere (see errors)")
        raise SystemExit(1)
