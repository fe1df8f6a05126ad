"""Registry commands: ``lorahub index``, ``lorahub search``, ``lorahub dupes``, ``lorahub registry migrate``,
``lorahub registry check``.

The database is ``--database URL``, else ``$LORAHUB_DATABASE_URL``, else SQLite
at ``$LORAHUB_HOME/registry.sqlite``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from lorahub.cli.commands.serve import data_option as server_data_option
from lorahub.cli.commands.serve import database_option as server_database_option
from lorahub.cli.output import emit, emit_json, info, json_option, table, warn
from lorahub.errors import UsageError

database_option = click.option(
    "--database",
    "database",
    metavar="URL",
    default=None,
    help="Registry database (default: $LORAHUB_DATABASE_URL, else SQLite in $LORAHUB_HOME).",
)


def _registry(database: str | None) -> Any:
    """The registry of one command: reads on a driver connection of its own (no SQLAlchemy: a fast
    start, see lorahub.registry.catalogue)."""
    from lorahub.registry.catalogue import Registry

    return Registry(database, pooled=False)


def _short(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _short_hash(r: Any) -> str:
    if r.autov3:
        return r.autov3
    if r.sha256:
        return r.sha256[:10].upper()
    return "-"


def result_rows(results: list[Any]) -> list[list[str]]:
    return [
        [
            _short(r.name, 40),
            r.base_model if r.base_model and r.base_family == "unknown" else r.base_family,
            r.format or "-",
            str(r.rank) if r.rank else "-",
            _short(", ".join(r.trigger_words), 28) or "-",
            _short_hash(r),
            _short(r.source, 48),
        ]
        for r in results
    ]


HEADERS = ["name", "base", "format", "rank", "trigger words", "hash", "source"]


# --------------------------------------------------------------------------------------------
# lorahub index


@click.command("index")
@click.option("--hub", is_flag=True, help="Index the LoRA repos of a Hub endpoint (headers read with range requests; no weights downloaded).")
@click.option("--endpoint", default=None, metavar="URL", help="With --hub: the Hub or a `lorahub serve` (default $HF_ENDPOINT or https://huggingface.co).")
@click.option("--author", default=None, metavar="NAME", help="With --hub: only this user's or organisation's repos.")
@click.option("--hub-search", default=None, metavar="WORDS", help="With --hub: only repos whose id contains WORDS.")
@click.option("--filter", "hub_filter", multiple=True, metavar="TAG", help="With --hub: only repos with this tag (repeatable), e.g. lora.")
@click.option("--token", default=None, metavar="TOKEN", envvar="HF_TOKEN", help="With --hub: token for private repos (default $HF_TOKEN).")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--records", "records", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE.jsonl",
              help="Import metadata-only records (JSON Lines) instead of / besides scanning folders.")
@click.option("--from", "source_format", type=click.Choice(["lorahub", "civitai"]), default="lorahub", show_default=True,
              help="Format of --records: lorahub AdapterRecord lines, or Civitai API model objects.")
@click.option("--workers", type=click.IntRange(1, 32), default=None, help="Threads that read and hash files.")
@database_option
@json_option
def index_cmd(hub: bool, endpoint: str | None, author: str | None, hub_search: str | None, hub_filter: tuple[str, ...],
              token: str | None, paths: tuple[Path, ...], records: Path | None, source_format: str, workers: int | None,
              database: str | None, as_json: bool) -> None:
    """Index folders of .safetensors adapters and/or import catalogue records.

    Scans PATH... recursively (header plus cached fingerprints), adds new
    adapters, updates changed ones, keeps the id of moved files (same content
    at a new path) and removes deleted ones. Unchanged files are not read.

    \b
    Examples:
      lorahub index ~/sd/models/Lora
      lorahub index --records civitai.jsonl --from civitai
    """
    # Before numpy loads: one OpenBLAS thread per call. The index already runs a thread per file (and the
    # hashers beside it); OpenBLAS's own threads spin-wait against them: a rank-128 ΔW sketch took 6-8x the
    # CPU with them (0.38 s against 0.05 s for a 25 MiB file). A value set by the user is kept.
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if hub:
        if paths or records:
            raise click.UsageError("give either PATHS/--records or --hub, not both")
        _index_hub(endpoint=endpoint, author=author, search=hub_search, filters=list(hub_filter), token=token,
                   database=database, as_json=as_json)
        return
    flags = {"--endpoint": endpoint, "--author": author, "--hub-search": hub_search, "--filter": hub_filter}
    extra = [flag for flag, value in flags.items() if value]  # --token may come from $HF_TOKEN
    if extra:
        raise click.UsageError(f"{', '.join(extra)} only go with --hub")
    if not paths and records is None:
        raise UsageError("give folders or files to index, or --records FILE.jsonl")
    if source_format != "lorahub" and records is None:
        raise UsageError("--from needs --records FILE.jsonl")
    from lorahub.schemas.registry import IndexSummary

    with _registry(database) as reg:
        summary = IndexSummary(database=reg.display_url)
        if records is not None:
            imported = reg.import_file(records, fmt=source_format)
            summary.records = imported.records
            summary.seconds += imported.seconds
        if paths:
            bar = None
            progress = None
            if not as_json and sys.stderr.isatty():
                from tqdm import tqdm

                bar = tqdm(unit="file", desc="indexing", file=sys.stderr, leave=False)
                progress = bar.update
            try:
                scanned = reg.index_paths(list(paths), progress=progress, workers=workers)
            finally:
                if bar is not None:
                    bar.close()
            records_count, seconds = summary.records, summary.seconds
            summary = scanned
            summary.records = records_count
            summary.seconds = round(seconds + scanned.seconds, 3)
    for failure in summary.failed:
        warn(f"{failure.path}: {failure.error}")
    if as_json:
        emit_json(summary)
    else:
        parts = []
        if records is not None:
            parts.append(f"{summary.records} records imported")
        if paths:
            parts.append(
                f"{summary.scanned} files: {summary.added} added, {summary.updated} updated, "
                f"{summary.unchanged} unchanged, {summary.moved} moved, {summary.removed} removed"
                + (f", {len(summary.failed)} failed" if summary.failed else "")
            )
        info(f"{'; '.join(parts)} in {summary.seconds:.2f} s ({summary.database})")
    if summary.failed:
        sys.exit(1)


def _index_hub(*, endpoint: str | None, author: str | None, search: str | None, filters: list[str],
               token: str | None, database: str | None, as_json: bool) -> None:
    """``lorahub index --hub``: :func:`lorahub.registry.sources.hub.index_hub` into the registry."""
    from lorahub.registry.sources.hub import index_hub

    with _registry(database) as registry:
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


# --------------------------------------------------------------------------------------------
# lorahub search


def _read_hash_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line.split()[0])  # "HASH  file" (sha256sum output) works too
    if not out:
        raise UsageError(f"{path}: no hashes in the file")
    return out


@click.command("search")
@click.argument("words", nargs=-1)
@click.option("--base", metavar="FAMILY|LABEL", help="A base family (sd1, sd2, sdxl, sd3, flux, chroma, qwen, wan, hunyuanvideo, hidream, lumina, pixart, kolors, auraflow, ltxv, cosmos, unknown) or a label such as pony.")
@click.option("--format", "fmt", metavar="FORMAT", help="Adapter format, e.g. kohya-lora, diffusers.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Required tag (repeatable: all must match).")
@click.option("--author", metavar="NAME")
@click.option("--min-rank", type=click.IntRange(min=1))
@click.option("--max-rank", type=click.IntRange(min=1))
@click.option("--license", "license_", metavar="ID", help="Licence, e.g. creativeml-openrail-m.")
@click.option("--sort", type=click.Choice(["relevance", "newest", "downloads"]), default="relevance", show_default=True)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--mode", type=click.Choice(["keyword", "semantic", "hybrid"]), default=None,
              help="keyword: the words as written; semantic: by meaning (sentence embeddings); hybrid: both, "
              "fused (exact names, trigger words and hashes first). Default: hybrid where the registry has "
              "embeddings and the [semantic] extra is installed, else keyword.")
@click.option("--hash", "hashes", multiple=True, metavar="HASH",
              help="Look up by any fingerprint or a prefix of >= 8 hex (repeatable).")
@click.option("--hash-file", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Look up every hash in FILE (one per line; sha256sum output works).")
@click.option("--uses", metavar="NAME|HASH",
              help="The blends made from this adapter (a registry name, or its SHA-256, AutoV3 or another "
              "fingerprint): lorahub blends name their sources in their recipe.")
@click.option("--like", "like_file", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="The indexed adapters whose weight change (ΔW) is nearest to FILE's, whatever their dtype, "
              "layout or rank, with how they relate to it.")
@database_option
@json_option
def search_cmd(words: tuple[str, ...], base: str | None, fmt: str | None, tags: tuple[str, ...], author: str | None,
               min_rank: int | None, max_rank: int | None, license_: str | None, sort: str, limit: int, page: int,
               mode: str | None, hashes: tuple[str, ...], hash_file: Path | None, uses: str | None, like_file: Path | None,
               database: str | None, as_json: bool) -> None:
    """Find adapters by words, filters or hash.

    Words are matched in names, trigger words, tags and descriptions (best
    matches first: the whole name, every word in the name, in trigger
    words/tags, anywhere; then by downloads). Where the registry has
    sentence embeddings (the [semantic] extra; lorahub registry embed), the
    default is hybrid: those tiers fused with a search by meaning, so
    "spooky monsters" finds horror and creature LoRAs; exact names and
    hashes still come first (the vectors are mapped from a cache file beside
    the database, rebuilt when the database changed). --mode picks one. With --hash/--hash-file the
    lookup is by AutoV1, AutoV2, AutoV3, CRC32, SHA-256, tensor SHA-256 or
    BLAKE3, exact or by a prefix of at least 8 hex digits, case-insensitive;
    the exit code is 1 when no hash is found. With --uses, the blends made
    from an adapter (lorahub blends name their sources in their recipe).
    With --like FILE, the indexed adapters whose weight change is nearest
    to FILE's (any dtype, layout or rank), with how they relate to it.

    \b
    Examples:
      lorahub search anime --base sd1 --tag style
      lorahub search giant fighting robots --mode semantic
      lorahub search --hash 47AAAF0D29
      lorahub search --hash-file hashes.txt --json
      lorahub search --uses mystyle
      lorahub search --like my_lora.safetensors
    """
    if mode is not None and (uses is not None or like_file is not None or hashes or hash_file):
        raise UsageError("--mode is for word searches, not --uses, --like or --hash")
    if uses is not None:
        if words or hashes or hash_file or like_file:
            raise UsageError("give --uses alone, without words, --hash/--hash-file or --like")
        with _registry(database) as reg:
            results = reg.uses(uses)
        emit(results, as_json, _human_results)
        return
    if like_file is not None:
        if words or hashes or hash_file:
            raise UsageError("give --like FILE alone, not with words or hashes")
        if not like_file.is_file():
            raise UsageError(f"{like_file}: no such file")
        with _registry(database) as reg:
            matches = reg.like(str(like_file), limit=limit)
        emit(matches, as_json, _human_like)
        return
    if hashes or hash_file:
        if words:
            raise UsageError("give words or --hash/--hash-file, not both")
        wanted = list(hashes) + (_read_hash_file(hash_file) if hash_file else [])
        with _registry(database) as reg:
            found = reg.lookup(wanted)
        emit(found, as_json, _human_lookups)
        if not any(f.matches for f in found):
            sys.exit(1)
        return
    from pydantic import ValidationError

    from lorahub.schemas.registry import SearchQuery

    try:
        query = SearchQuery(
            query=" ".join(words) or None, base=base, format=fmt, tags=list(tags), author=author, license=license_,
            min_rank=min_rank, max_rank=max_rank, sort=sort, limit=limit, page=page,  # type: ignore[arg-type]
            mode=mode or "auto",  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        raise UsageError(exc.errors()[0].get("msg", "invalid search")) from None
    with _registry(database) as reg:
        results = reg.search(query)
    emit(results, as_json, _human_results)


def _human_results(results: list[Any]) -> list[str]:
    if not results:
        info("no adapters found")
        return []
    return table(result_rows(results), HEADERS)


def _human_lookups(found: list[Any]) -> list[str]:
    lines: list[str] = []
    for f in found:
        if not f.matches:
            lines.append(f"{f.query}: not found")
            continue
        for r in f.matches:
            lines.append(
                f"{f.query}: {r.name}" + (f" ({r.version})" if r.version else "")
                + f"  [{', '.join(r.matched_hashes)}]  {r.base_model or r.base_family}  {r.file_name or ''}  {r.source}"
            )
    return lines


# --------------------------------------------------------------------------------------------
# lorahub dupes


@click.command("dupes")
@click.option("--near", is_flag=True,
              help="Group adapters whose weight changes (ΔW) agree, not only identical tensors: dtype changes, "
              "kohya/diffusers conversions, rank cuts, rescaled and module-subset copies.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=None, metavar="T",
              help="With --near: the least similarity (energy-weighted cosine of ΔW over common modules) "
              "[default: 0.8].")
@database_option
@json_option
def dupes_cmd(near: bool, threshold: float | None, database: str | None, as_json: bool) -> None:
    """Adapters whose tensor data is identical (same AutoV3) under other names or metadata.

    With --near, adapters that do the same thing: the ΔW sketches stored by
    `lorahub index` are compared, and each group names its reference (most
    modules, highest rank, widest dtype) and how every other member relates
    to it: identical-tensors, dtype-change, layout-conversion,
    rank-reduction, scaled-copy, module-subset (or similar).
    """
    if threshold is not None and not near:
        raise UsageError("--threshold goes with --near")
    if near:
        with _registry(database) as reg:
            near_groups = reg.near_dupes(threshold)
        emit(near_groups, as_json, _human_near)
        return
    with _registry(database) as reg:
        groups = reg.dupes()
    emit(groups, as_json, _human_dupes)


def _near_line(m: Any) -> str:
    rel = ", ".join(m.relations) or "reference"
    scale = f" x{m.scale:.2f}" if "scaled-copy" in m.relations else ""
    return (f"  {_short(m.adapter.name, 40):<40}  {m.similarity:6.3f}  {rel}{scale}  "
            f"[{m.adapter.format or '-'} {m.dtype or '-'} r{m.adapter.rank or '-'}]  {m.adapter.source}")


def _human_near(groups: list[Any]) -> list[str]:
    if not groups:
        info("no near-duplicates (an adapter is compared once `lorahub index` has sketched its weights)")
        return []
    lines: list[str] = []
    for g in groups:
        lines.append(f"{g.reference.adapter.name}: {len(g.members) + 1} adapters do the same thing")
        lines.extend(_near_line(m) for m in [g.reference, *g.members])
    return lines


def _human_like(matches: list[Any]) -> list[str]:
    if not matches:
        info("no indexed adapter does the same thing")
        return []
    return [_near_line(m).strip() for m in matches]


def _human_dupes(groups: list[Any]) -> list[str]:
    if not groups:
        info("no duplicates")
        return []
    lines: list[str] = []
    for g in groups:
        kind = "identical files" if g.identical_files else "same tensors, different files (metadata differs)"
        lines.append(f"AutoV3 {g.autov3}: {len(g.members)} files, {kind}")
        for m in g.members:
            lines.append(f"  {_short(m.name, 40):<40}  {(m.sha256 or '-')[:10].upper():<10}  {m.source}")
    return lines


# --------------------------------------------------------------------------------------------
# lorahub registry ...


@click.group("registry")
def registry_group() -> None:
    """The registry database (schema migrations, embeddings for semantic search) and the storage of `lorahub serve` (check, repair)."""


@registry_group.command("migrate")
@database_option
@json_option
def migrate_cmd(database: str | None, as_json: bool) -> None:
    """Upgrade the registry database schema to the newest revision."""
    with _registry(database) as reg:
        before, after = reg.migrate()
        url = reg.display_url
    if as_json:
        emit_json({"database": url, "before": before, "after": after})
    elif before == after:
        info(f"{url}: already at {after}")
    else:
        info(f"{url}: upgraded from {before or 'an empty database'} to {after}")


@registry_group.command("embed")
@click.option("--all", "everything", is_flag=True, help="Embed every adapter again, not only those without a vector of the installed model.")
@database_option
@json_option
def embed_cmd(everything: bool, database: str | None, as_json: bool) -> None:
    """Compute the sentence embeddings semantic search reads.

    Records are embedded when they are written (index, import, push, pull,
    commits to lorahub serve) if the [semantic] extra is installed; this
    command embeds those written without it and, after the model changed
    (another version of the package), every vector of another model. Exit
    code 1 without the model.

    \b
    Examples:
      lorahub registry embed
      lorahub registry embed --all --database postgresql://hub@db/hub
    """
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.semantic import embed_missing

    with Registry(database) as reg:
        url = reg.display_url
        summary = embed_missing(reg, everything=everything)
    if as_json:
        emit_json({"database": url, **vars(summary)})
        return
    info(f"{url}: {summary.embedded} adapter(s) embedded, {summary.kept} already had a vector "
         f"({summary.model} {summary.model_version}) in {summary.seconds:.2f} s")


def _grace(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from lorahub.registry.hub.check import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@registry_group.command("check")
@server_data_option
@server_database_option
@click.option("--repair", is_flag=True,
              help="Remove orphans and stale uploads, quarantine corrupt blobs (blobs/quarantine/), record missing rows.")
@click.option("--grace", default="24h", show_default=True, callback=_grace, metavar="DURATION",
              help="Orphans younger than this are left alone (an upload may be in progress): 0, 90s, 30m, 24h, 2d.")
@json_option
def check_cmd(data_dir: str | None, database: str | None, repair: bool, grace: float, as_json: bool) -> None:
    """Check that the database and the blob store of `lorahub serve` agree.

    Hashes every blob file (SHA-256 against its name, size against the
    database), checks that every blob a commit, an upload or a hub_blobs row
    names exists, and reports orphans (blobs no commit uses, stale tmp/*.part
    uploads). Read-only unless --repair; safe while the server runs. Never
    removes anything a commit references. Exit code 1 when the database and
    the blobs still disagree (a missing or corrupt referenced blob).

    \b
    Examples:
      lorahub registry check --data /srv/lorahub
      lorahub registry check --data /srv/lorahub --database postgresql://hub@db/hub --repair
    """
    from lorahub.registry.hub.check import check_storage

    report = check_storage(data_dir, database, repair=repair, grace_s=grace)
    emit(report, as_json, _human_check)
    if not as_json:
        info(
            f"{'OK' if report.ok else 'PROBLEMS'}: {report.blob_files} blob files ({report.bytes_verified / 2**20:.1f} MiB verified), "
            f"{report.blob_rows} rows, {report.referenced} committed; {report.errors} error(s), {report.orphans} orphan(s), "
            f"{report.pending} pending, {report.repaired} repaired in {report.seconds:.2f} s ({report.database})"
        )
        if report.xet_xorbs or report.xet_chunks:
            info(
                f"Xet: {report.xet_xorbs} xorbs, {report.xet_files} files ({report.chunked_blobs} blobs stored only as chunks), {report.xet_chunks} chunks "
                f"({report.xet_chunk_bytes / 2**20:.1f} MiB stored); chunk dedupe saved {report.xet_bytes_saved / 2**20:.1f} MiB"
            )
    if not report.ok:
        sys.exit(1)


def _human_check(report: Any) -> list[str]:
    lines = []
    for i in report.issues:
        what = i.sha256 or i.path or "-"
        refs = ""
        if i.references:
            refs = f" [{', '.join(i.references[:3])}{', ...' if len(i.references) > 3 else ''}]"
        done = f" -> {i.action}" if i.action else ""
        lines.append(f"{i.severity:<7} {i.kind:<13} {what}: {i.message}{refs}{done}")
    return lines
