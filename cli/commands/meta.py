"""``lorahub meta show|set``: read and rewrite the ``__metadata__`` of a safetensors file."""

from __future__ import annotations

import json
from typing import Any

import click

from lorahub.cli.output import emit, info, json_option, warn

#: Human output shortens longer values (``--json`` never does).
SHOW_MAX = 160


@click.group("meta")
def meta_group() -> None:
    """Show or edit the metadata (the __metadata__ strings) of a safetensors file."""


@meta_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--full", is_flag=True, help="Do not shorten long values.")
@json_option
def show_cmd(file: str, full: bool, as_json: bool) -> None:
    """Print the metadata of FILE (with --json: the raw __metadata__ object)."""
    from lorahub.adapters.metadata import read_metadata

    md = read_metadata(file)

    def human(_: object) -> list[str]:
        if not md:
            return [f"{file}: no metadata"]
        width = min(max(len(k) for k in md), 40)
        lines = []
        for key, value in md.items():
            text = value if isinstance(value, str) else json.dumps(value)
            if not full and len(text) > SHOW_MAX:
                text = text[: SHOW_MAX - 1] + f"… ({len(text):,} chars; --full or --json for all)"
            lines.append(f"{key:<{width}}  {text}")
        return lines

    emit(md, as_json, human)


def _parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"'{pair}' is not KEY=VALUE")
        out[key] = value
    return out


def _load_json(path: str) -> dict[str, Any]:
    from lorahub.errors import MetadataError

    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise MetadataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: cannot read: {exc}") from None
    except ValueError as exc:
        raise MetadataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MetadataError(f"{path}: must be a JSON object of string values, not a JSON {type(obj).__name__}")
    return obj


@meta_group.command("set")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--from-json", "from_json", type=click.Path(dir_okay=False, path_type=str),
              help="Read keys and values from a flat JSON object of strings (KEY=VALUE arguments override it).")
@click.option("--remove", "remove", multiple=True, metavar="KEY", help="Delete KEY (repeatable).")
@click.option("--replace", is_flag=True, help="Drop every existing key first.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=str),
              help="Write a new file instead of rewriting FILE in place.")
def set_cmd(file: str, pairs: tuple[str, ...], from_json: str | None, remove: tuple[str, ...],
            replace: bool, out: str | None) -> None:
    """Set metadata keys of FILE: only the header is rewritten.

    The tensor bytes are copied unchanged, so the tensor hash (AutoV3, kohya
    sshs_model_hash) stays the same while SHA256/AutoV2 change. The file is
    replaced atomically: on any error it is left byte-identical. Values are
    strings; a --from-json value that is a number, boolean, null, array or
    object is refused (quote it, or JSON-encode structures into a string).
    """
    from lorahub.adapters.metadata import check_updates, read_metadata, set_metadata

    updates: dict[str, str] = {}
    if from_json:
        updates.update(check_updates(_load_json(from_json), source=from_json))
    updates.update(_parse_pairs(pairs))
    if not updates and not remove and not replace:
        raise click.UsageError("nothing to change: give KEY=VALUE pairs, --from-json, --remove or --replace")
    current = read_metadata(file)
    for key in remove:
        if key not in current:
            warn(f"'{key}' is not in the metadata of {file}")
    written = set_metadata(file, updates, remove=remove, replace=replace, out=out)
    removed = len(current) if replace else sum(1 for k in set(remove) if k in current)
    info(f"wrote {written}: {len(updates)} key(s) set, {removed} removed; tensor data unchanged")
