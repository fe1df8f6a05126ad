"""One output layer for every command: human text or ``--json``.

``--json`` output goes to stdout alone; messages, warnings and progress go to
stderr, so ``lorahub ... --json | jq`` always works.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):  # a pydantic model (pydantic is not imported here: fast start)
        return obj.model_dump(mode="json")
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(obj: Any, as_json: bool, human: Callable[[Any], Iterable[str] | str | None]) -> None:
    """Print ``obj`` as JSON or through ``human`` (lines or a string, to stdout)."""
    if as_json:
        emit_json(obj)
        return
    out = human(obj)
    if out is None:
        return
    if isinstance(out, str):
        click.echo(out)
    else:
        for line in out:
            click.echo(line)


def info(message: str) -> None:
    """A progress or status message: stderr, never stdout."""
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow") + message, err=True)


def table(rows: list[list[str]], headers: list[str]) -> list[str]:
    """A plain left-aligned text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in rows]
    return lines
