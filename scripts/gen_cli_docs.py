#!/usr/bin/env python3
"""Write docs/cli.md, the command reference, from the click commands themselves.

    python scripts/gen_cli_docs.py           # (make docs) rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check   # exit 1 when docs/cli.md differs from what it would write

Every command and subcommand of ``lorahub``, hidden ones left out: the usage line, the help text
(paragraphs as click shows them; ``\\b`` blocks verbatim) and a table of the options with their
defaults. tests/cli/test_cli_docs.py fails when docs/cli.md is stale.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "cli.md"
GENERATOR = "scripts/gen_cli_docs.py"


def _context(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    """The command's context as ``--help`` sees it (its context_settings applied, nothing run)."""
    return cmd.make_context(name, [], parent=parent, resilient_parsing=True, terminal_width=100,
                            max_content_width=100)


def walk(cmd: click.Command, ctx: click.Context) -> list[tuple[click.Command, click.Context]]:
    """The command and its visible subcommands, depth first, in ``--help`` order."""
    out = [(cmd, ctx)]
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            out += walk(sub, _context(sub, name, ctx))
    return out


def _help_blocks(text: str) -> list[str]:
    """Markdown for a help text: paragraphs joined into lines, ``\\b`` paragraphs as text blocks."""
    text = inspect.cleandoc(text).split("\f", 1)[0]
    out = []
    for para in text.split("\n\n"):
        lines = para.splitlines()
        if not lines:
            continue
        if lines[0].strip() == "\b":
            out.append("```text\n" + textwrap.dedent("\n".join(lines[1:])).strip("\n") + "\n```")
        else:
            out.append(_md(" ".join(line.strip() for line in lines)))
    return out


def _md(text: str) -> str:
    """Plain text as Markdown: ``*``, ``_`` and ``<`` escaped outside `code spans` (``__metadata__``
    would turn bold, ``<lora:NAME:W>`` into a link)."""
    parts = str(text).split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = re.sub(r"([*_<])", r"\\\1", parts[i])
    return "`".join(parts)


def _cell(text: str) -> str:
    return _md(" ".join(str(text).split())).replace("|", "\\|")


def _unset(value: object) -> bool:
    """None, empty, or click's "no default" sentinel (``UNSET`` since click 8.2)."""
    return value is None or value == () or value == [] or type(value).__name__ == "Sentinel"


def _default(param: click.Parameter, ctx: click.Context) -> str:
    if not param.expose_value:  # --help, --version
        return ""
    if isinstance(param, click.Option) and isinstance(param.show_default, str):
        return param.show_default
    value = param.get_default(ctx, call=False)
    if callable(value):
        return "(computed)"
    if isinstance(param, click.Option) and param.is_flag and not param.secondary_opts:
        return "on" if value else "off"
    if _unset(value):  # decided elsewhere (a config file, the base model...): the help text says
        return ""
    if isinstance(param, click.Option) and param.is_flag:
        return f"`{param.opts[0] if value else param.secondary_opts[0]}`"
    if value == "":
        return '`""`'
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _option_row(param: click.Option, ctx: click.Context) -> str:
    names = ", ".join(param.opts)
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    if not param.is_flag:
        names += " " + param.make_metavar(ctx)
    help_text = param.help or ""
    extras = []
    if param.multiple and "repeatable" not in help_text:
        extras.append("repeatable")
    if param.required:
        extras.append("required")
    if param.envvar:
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        extras.append("env " + ", ".join(f"`{e}`" for e in envvars))
    if extras:
        help_text += f" ({'; '.join(extras)})"
    return f"| `{names.replace('|', chr(92) + '|')}` | {_cell(help_text)} | {_cell(_default(param, ctx))} |"


def section(cmd: click.Command, ctx: click.Context) -> list[str]:
    path = ctx.command_path
    depth = path.count(" ")
    lines = [f"{'#' * (2 if depth < 2 else 3)} {path}", ""]
    usage = " ".join([path, *cmd.collect_usage_pieces(ctx)])
    lines += ["```text", usage, "```", ""]
    for block in _help_blocks(cmd.help or cmd.short_help or ""):
        lines += [block, ""]
    help_option = cmd.get_help_option(ctx)  # the same -h, --help everywhere: said once, at the top
    params = [p for p in cmd.get_params(ctx) if p is not help_option and not getattr(p, "hidden", False)]
    args = [p for p in params if isinstance(p, click.Argument)]
    if args:
        lines.append("Arguments: " + ", ".join(
            f"`{a.make_metavar(ctx)}`" + ("" if a.required else " (optional)") for a in args) + ".")
        lines.append("")
    options = [p for p in params if isinstance(p, click.Option)]
    if options:
        lines += ["| Option | Description | Default |", "|---|---|---|"]
        lines += [_option_row(p, ctx) for p in options]
        lines.append("")
    if isinstance(cmd, click.Group):
        subs = [(n, cmd.get_command(ctx, n)) for n in cmd.list_commands(ctx)]
        lines += ["| Command | Summary |", "|---|---|"]
        lines += [f"| [{n}](#{_anchor(f'{path} {n}')}) | {_cell(s.get_short_help_str(limit=120))} |"
                  for n, s in subs if s is not None and not s.hidden]
        lines.append("")
    return lines


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, spaces to dashes, punctuation dropped."""
    return "".join(c for c in heading.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def render() -> str:
    from lorahub.cli.main import cli

    root = _context(cli, "lorahub", None)
    lines = [
        "# Command reference",
        "",
        f"<!-- Generated from the click commands by `make docs` ({GENERATOR}); do not edit by hand. -->",
        "",
        "Every `lorahub` command and subcommand with its usage, help text and options, as `--help` shows",
        "them; `lorahub COMMAND -h` (or `--help`) prints the same on the command line. Exit codes: 0 ok,",
        "1 failed, 2 usage; `--json` output goes to stdout alone, progress and messages to stderr.",
        "",
    ]
    for cmd, ctx in walk(cli, root):
        lines += section(cmd, ctx)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md is stale, write nothing")
    args = ap.parse_args(argv)
    text = render()
    current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
    if args.check:
        if current != text:
            print(f"{OUT.relative_to(REPO)} is stale: run `make docs` (python {GENERATOR})", file=sys.stderr)
            return 1
        return 0
    if current != text:
        OUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUT.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
